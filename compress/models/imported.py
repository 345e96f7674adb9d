"""The imported teacher: the checkpoint folder a recipe's `teacher.from` names, imported before anything is written.

`check_teacher` makes every check of the import without reading a tensor (the folder, config,
safetensors headers and shapes, tokenizer, architecture, and the task's `seq_len` against the
checkpoint's positions): `slimformer validate` and `slimformer run` both call it, through
`compress/run/preflight.py`. `import_teacher` then reads the weights with
`compress/models/import_hf.py` (or, for a folder slimformer saved, `import_slimformer.py`) and
digests every file of the folder: a changed checkpoint changes the run's fingerprint and retrains
the teacher.
"""

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compress.errors import CheckpointError, RecipeError
from compress.models.import_hf import CheckedCheckpoint, check_pretrained, import_pretrained
from compress.models.import_slimformer import CheckedSlimformer, check_slimformer, import_slimformer, is_slimformer_folder


@dataclass(frozen=True)
class ImportedTeacher:
    """A pretrained checkpoint the recipe's `teacher.from` names, imported."""

    model: Any  # SlimformerForSequenceClassification with the checkpoint's weights (and head, or a fresh one)
    tokenizer: Any  # the checkpoint's own tokenizer: every stage of the run uses and saves it
    info: dict  # what was imported (compress.models.import_hf)
    digest: str  # of every file in the folder: a changed checkpoint retrains the teacher
    checked: CheckedCheckpoint | CheckedSlimformer | None = None  # what the checks found (the shape)


def embeds(recipe) -> bool:
    """The recipe's task is an embedding task (compress/data/embedding.py): the teacher is a sentence-embedding model."""
    return bool(getattr(type(recipe.task), "embeds", False))


def teacher_folder(recipe, base_dir: Path) -> Path:
    """The folder `teacher.from` names (relative paths: against the recipe's folder); CheckpointError when it is none."""
    folder = Path(recipe.teacher.from_).expanduser()
    folder = folder if folder.is_absolute() else (base_dir / folder)
    if not folder.is_dir():
        raise CheckpointError(f"teacher.from: {folder} is not a folder; give a local Hugging Face checkpoint folder "
                              "(config.json, *.safetensors, tokenizer files), relative to the recipe file, e.g. the one "
                              "`python -m compress.models.fetch_minilm --out models/all-MiniLM-L6-v2` writes")
    return folder


def check_teacher(recipe, label_names: list[str] | None, base_dir: Path) -> CheckedCheckpoint | CheckedSlimformer:
    """Every check of `import_teacher`, no tensor read; CheckpointError/RecipeError name what is wrong. A folder
    slimformer saved (a stage's `model/`, compress/models/import_slimformer.py) is checked as ours."""
    folder = teacher_folder(recipe, base_dir)
    pooling = recipe.teacher.pooling if "pooling" in recipe.teacher.model_fields_set else None
    embedding = embeds(recipe)
    if is_slimformer_folder(folder):
        checked = check_slimformer(folder, label_names=None if embedding else label_names)
        if embedding != (checked.config.embedding_dim is not None):
            kinds = ("sentence-embedding model", "classifier")
            raise CheckpointError(f"teacher.from: {folder} is a slimformer {kinds[embedding]}; the {recipe.task.kind} task needs "
                                  f"a {kinds[not embedding]}: give a stage of such a run")
    else:
        pairs = getattr(recipe.task, "text_pair_column", None) is not None  # the token-type table is imported whole
        checked = check_pretrained(folder, label_names=label_names, pooling=pooling, embedding=embedding, pairs=pairs)
    max_len = checked.config.max_len
    if recipe.task.seq_len > max_len:
        raise RecipeError(f"task.seq_len {recipe.task.seq_len} exceeds the {max_len} positions of the imported "
                          f"teacher ({folder}); set task.seq_len <= {max_len}")
    return checked


def import_teacher(recipe, data, base_dir: Path, checked: CheckedCheckpoint | CheckedSlimformer | None = None) -> ImportedTeacher:
    """Import `teacher.from` (relative to the recipe's folder) after `check_teacher` (or its answer, `checked`)."""
    checked = checked or check_teacher(recipe, data.label_names, base_dir)
    if isinstance(checked, CheckedSlimformer):
        imported = import_slimformer(checked.folder, label_names=None if embeds(recipe) else data.label_names)
    else:
        imported = import_pretrained(checked.folder, seed=recipe.seed, checked=checked)
    h = hashlib.sha256()
    for path in sorted(p for p in checked.folder.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(checked.folder)).encode())
        h.update(path.read_bytes())
    return ImportedTeacher(imported.model, imported.tokenizer, imported.info, h.hexdigest()[:16], checked)
