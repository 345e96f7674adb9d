"""Import a model folder slimformer saved itself (a stage's `model/`) as a teacher: `teacher.from` on our own output.

`slimformer compress runs/<run>/stages/teacher/model ...` starts from a teacher a recipe already
fine-tuned: the folder holds `config.json` (model_type `slimformer`), `model.safetensors` and the
stage's tokenizer. It loads with `from_pretrained` (safetensors only; the model code is ours, so
nothing of the folder's is executed) and keeps its head when it classifies into as many labels as
the task has; label names are taken from the task, index for index, as for Hugging Face heads.
Only Transformers can be teachers: an RNN student's folder (`slimformer_rnn`) is refused.
"""

import json
from dataclasses import dataclass
from pathlib import Path

from compress.errors import CheckpointError

from . import register_auto_classes
from .import_hf import ImportedModel, check_tokenizer_files, load_tokenizer, read_header, read_json
from .modeling_slimformer import SlimformerConfig, SlimformerForSequenceClassification

MODEL_TYPE = "slimformer"


def is_slimformer_folder(folder: Path) -> bool:
    """The folder's config.json names a slimformer model (ours, not a Hugging Face family)."""
    try:
        return json.loads((Path(folder) / "config.json").read_text(encoding="utf-8")).get("model_type", "").startswith("slimformer")
    except (OSError, ValueError, AttributeError):
        return False


@dataclass(frozen=True)
class CheckedSlimformer:
    """A slimformer model folder that passed `check_slimformer`, its tensors not yet read."""

    folder: Path
    config: SlimformerConfig


def check_slimformer(folder: str | Path, *, label_names: list[str] | None = None) -> CheckedSlimformer:
    """Every check of `import_slimformer` without reading a tensor: config.json, model.safetensors' header (a
    truncated or corrupt file is found there), the tokenizer files, the head against the task's labels."""
    folder = Path(folder)
    raw = read_json(folder / "config.json")
    if not isinstance(raw, dict) or raw.get("model_type") != MODEL_TYPE:
        kind = raw.get("model_type") if isinstance(raw, dict) else None
        raise CheckpointError(f"{folder / 'config.json'}: model_type {kind!r} cannot be a teacher; only Transformers "
                              f"({MODEL_TYPE}) can: give the folder of a Transformer stage (e.g. stages/teacher/model)")
    if not (folder / "model.safetensors").is_file():
        raise CheckpointError(f"{folder} has no model.safetensors; give a stage's model folder as slimformer saved it")
    read_header(folder / "model.safetensors")
    check_tokenizer_files(folder)
    try:
        config = SlimformerConfig.from_pretrained(folder)
    except Exception as e:  # transformers raises many kinds; the user needs the file and the cause
        raise CheckpointError(f"{folder / 'config.json'} does not load: {type(e).__name__}: {str(e)[:500]}") from e
    if label_names is not None and len(label_names) != config.num_labels:
        own = [config.id2label[i] for i in range(config.num_labels)]
        raise CheckpointError(f"{folder}: the model classifies into {len(own)} labels {own}; the task has {len(label_names)} "
                              f"{list(label_names)}: give a model fine-tuned on this task's labels")
    return CheckedSlimformer(folder, config)


def import_slimformer(folder: str | Path, *, label_names: list[str] | None = None) -> ImportedModel:
    """Load a slimformer model folder as a teacher: model + tokenizer + what was imported. Raises CheckpointError."""
    folder = check_slimformer(folder, label_names=label_names).folder
    register_auto_classes()
    try:
        model = SlimformerForSequenceClassification.from_pretrained(folder)
    except Exception as e:  # transformers raises many kinds; the user needs the folder and the cause
        raise CheckpointError(f"{folder}: the model does not load: {type(e).__name__}: {str(e)[:500]}") from e
    tokenizer = load_tokenizer(folder, model.config.vocab_size)
    own = [model.config.id2label[i] for i in range(model.config.num_labels)]  # as many as label_names (check_slimformer)
    labels = list(label_names) if label_names is not None else own
    reason = f"slimformer head with {len(own)} labels"
    if labels != own:
        reason += f"; its names {own} are replaced by label_names {labels}, index for index"
        model.config.id2label = dict(enumerate(labels))
        model.config.label2id = {n: i for i, n in enumerate(labels)}
    info = {
        "family": MODEL_TYPE, "architecture": "SlimformerForSequenceClassification", "folder": str(folder),
        "head": "imported" if model.config.embedding_dim is None else "embedding", "head_reason": reason,
        "pooling": model.config.pooling, "pooling_from": "checkpoint",
        "labels": labels, "activation": model.config.activation, "max_len": model.config.max_len,
        "n_params": sum(p.numel() for p in model.parameters()), "weights": ["model.safetensors"],
        "source_dtype": ["F32"], "tokenizer_pad_token_id": tokenizer.pad_token_id, "pad_token_id": model.config.pad_token_id,
        "notes": [],
    }
    if model.config.embedding_dim is not None:  # a sentence-embedding stage: its output is the embedding
        config = model.config
        info["embedding"] = {"dim": config.embedding_dim, "pooling": config.pooling, "normalize": config.normalize,
                             "max_seq_length": None}
    return ImportedModel(model=model.eval(), tokenizer=tokenizer, info=info)
