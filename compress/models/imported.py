"""The imported teacher: the checkpoint folder a recipe's `teacher.from` names, imported before anything is written.

`import_teacher` reads the folder with `compress/models/import_hf.py` (config, safetensors weights,
tokenizer, architecture), checks the task's `seq_len` against the checkpoint's positions, and
digests every file of the folder: a changed checkpoint changes the run's fingerprint and
retrains the teacher.
"""

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compress.errors import CheckpointError, RecipeError
from compress.models.import_hf import import_pretrained


@dataclass(frozen=True)
class ImportedTeacher:
    """A pretrained checkpoint the recipe's `teacher.from` names, imported."""

    model: Any  # SlimformerForSequenceClassification with the checkpoint's weights (and head, or a fresh one)
    tokenizer: Any  # the checkpoint's own tokenizer: every stage of the run uses and saves it
    info: dict  # what was imported (compress.models.import_hf)
    digest: str  # of every file in the folder: a changed checkpoint retrains the teacher


def import_teacher(recipe, data, base_dir: Path) -> ImportedTeacher:
    """Import `teacher.from` (relative to the recipe's folder); CheckpointError/RecipeError name what is wrong."""
    folder = Path(recipe.teacher.from_)
    folder = folder if folder.is_absolute() else (base_dir / folder)
    if not folder.is_dir():
        raise CheckpointError(f"teacher.from: {folder} is not a folder; give a local Hugging Face checkpoint folder (config.json, "
                              "*.safetensors, tokenizer files), relative to the recipe file, e.g. the one "
                              "`python -m compress.models.fetch_minilm --out models/all-MiniLM-L6-v2` writes")
    pooling = recipe.teacher.pooling if "pooling" in recipe.teacher.model_fields_set else None
    imported = import_pretrained(folder, label_names=data.label_names, pooling=pooling, seed=recipe.seed)
    if recipe.task.seq_len > imported.info["max_len"]:
        raise RecipeError(f"task.seq_len {recipe.task.seq_len} exceeds the {imported.info['max_len']} positions of the imported "
                          f"teacher ({folder}); set task.seq_len <= {imported.info['max_len']}")
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(folder)).encode())
        h.update(path.read_bytes())
    return ImportedTeacher(imported.model, imported.tokenizer, imported.info, h.hexdigest()[:16])
