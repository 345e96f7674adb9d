"""The transfer set: what a student learns the teacher from, beyond the labelled training split.

A small student matches a strong teacher only when it sees more of the teacher's behaviour than
the labelled examples show (DistilBERT, Sanh et al. 2019; TinyBERT, Jiao et al. 2020; Tang et al.
2019). The transfer set is the training split plus

- augmented copies of its texts (`augment:`): tokens replaced by the mask token and adjacent tokens
  swapped, the ids to keep and the mask id taken from the run's tokenizer, so an imported
  teacher's vocabulary ([CLS] = 101, <mask> = 50264, ...) is augmented correctly too;
- unlabelled texts (`unlabeled:` files, read by `compress/data/unlabeled.py`), encoded with the
  run's tokenizer at the task's seq_len;

every added example labelled by the teacher: soft targets (its logits) and, as hard label, its
argmax. The teacher's logits are computed once and cached beside the teacher (keyed by its
weights, the augmentation, the seed and the files' digests), reused across epochs and students.

`distill` trains on it (its fields sit at the top of the step), and so does the recovery after a
cut or a swap (the same fields inside `recover:`), where a narrowed model that sees only the
labelled split recovers less than one that keeps learning from the teacher on everything.
"""

import io
from pathlib import Path

import numpy as np
import torch
from pydantic import Field, model_validator

from compress.io import atomic_write_bytes
from compress.run.config_base import ConfigBase
from compress.run.registry import file_digest, fingerprint
from compress.training.batches import predict


class AugmentConfig(ConfigBase):
    copies: int = Field(0, ge=0, le=20)  # augmented copies of each training text (0 = off)
    mask: float = Field(0.1, ge=0, le=1)  # share of tokens replaced by [MASK] in a copy
    swap: float = Field(0.1, ge=0, le=1)  # share of tokens swapped with their right neighbour


class TransferConfig(ConfigBase):
    """What is added to the labelled training split, all of it labelled by the teacher."""

    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    # unlabelled texts the teacher labels: .txt one text a line, or .csv .tsv .jsonl .json .parquet;
    # relative paths against the recipe's folder
    unlabeled: list[str] = Field(default_factory=list)
    unlabeled_column: str = "text"  # the column holding the texts in a .csv/.tsv/.jsonl/.json/.parquet file

    @model_validator(mode="after")
    def check_unlabeled(self):
        from compress.data.unlabeled import check_suffixes

        check_suffixes(self.unlabeled, "unlabeled")
        return self

    def check_files(self, base_dir: Path | None) -> None:
        """Read every unlabelled file (the runner calls this before anything trains): a clear DataError if one is missing
        or empty."""
        from compress.data.unlabeled import read_unlabeled

        for path in self.unlabeled:
            read_unlabeled(path, self.unlabeled_column, base_dir)

    def adds(self) -> bool:
        """Whether anything beyond the labelled split is asked for."""
        return bool(self.augment.copies or self.unlabeled)


def special_token_ids(tokenizer) -> tuple[list[int], int | None, str | None]:
    """(ids augmentation never edits, the id masked tokens become, a note when that is not a mask token).

    From the run's tokenizer, so an imported teacher's ([CLS] = 101, <mask> = 50264, ...) work too.
    Without a mask token masking writes the unknown token; without either, masking is off."""
    special = sorted(set(tokenizer.all_special_ids))
    if tokenizer.mask_token_id is not None:
        return special, tokenizer.mask_token_id, None
    if tokenizer.unk_token_id is not None:
        return special, tokenizer.unk_token_id, f"the tokenizer has no mask token: masked tokens become {tokenizer.unk_token!r}"
    return special, None, "the tokenizer has neither a mask nor an unknown token: masking augmentation is off"


def augment(split: dict, cfg: AugmentConfig, seed: int, special_ids: list[int], mask_id: int | None) -> dict:
    """Training split plus `copies` masked/swapped copies of every example (token ids, padding kept).

    `special_ids` are never edited; masked tokens become `mask_id` (None: no masking)."""
    if not cfg.copies:
        return dict(split)
    g = torch.Generator().manual_seed(seed)
    ids, mask = split["input_ids"], split["attention_mask"]
    editable = mask.bool() & ~torch.isin(ids, torch.tensor(special_ids, dtype=ids.dtype))  # (N, T): real, non-special tokens
    copies = []
    for _ in range(cfg.copies):
        new = ids.clone()
        masked = editable & (torch.rand(ids.shape, generator=g) < cfg.mask)  # drawn even without masking: same swaps
        if mask_id is not None:
            new[masked] = mask_id
        swap = editable[:, :-1] & editable[:, 1:] & (torch.rand(ids[:, :-1].shape, generator=g) < cfg.swap)  # (N, T-1)
        left, right = new[:, :-1].clone(), new[:, 1:].clone()
        new[:, :-1] = torch.where(swap, right, left)
        new[:, 1:] = torch.where(swap, left, new[:, 1:])
        copies.append(new)
    n = len(copies)
    return {
        "input_ids": torch.cat([ids, *copies]),
        "attention_mask": mask.repeat(n + 1, 1),
        "labels": torch.cat([split["labels"], torch.full((n * len(ids),), -1)]),  # -1: labelled by the teacher below
    }


def unlabeled_inputs(cfg: TransferConfig, ctx) -> dict | None:
    """The unlabelled files' content digests: part of a step's fingerprint and of the logits cache key."""
    from compress.data.unlabeled import unlabeled_path

    if not cfg.unlabeled:
        return None
    return {"unlabeled": [file_digest(unlabeled_path(path, ctx.base_dir)) for path in cfg.unlabeled],
            "column": cfg.unlabeled_column}


def unlabeled_split(cfg: TransferConfig, ctx) -> dict | None:
    """The unlabelled texts encoded with the run's tokenizer at the task's seq_len, labels -1 (the teacher labels them)."""
    from compress.data import encode
    from compress.data.unlabeled import read_unlabeled

    if not cfg.unlabeled:
        return None
    from compress.data.limits import max_text_chars

    seq_len, counts = ctx.recipe.task.seq_len, {}
    limit = max_text_chars(seq_len)
    texts = [t for path in cfg.unlabeled
             for t in read_unlabeled(path, cfg.unlabeled_column, ctx.base_dir, max_chars=limit, counts=counts)[0]]
    encoded = encode(ctx.tokenizer, texts, seq_len)
    return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"],
            "labels": torch.full((len(texts),), -1, dtype=torch.long), "n_truncated": encoded["n_truncated"],
            "n_dropped": counts["dropped"], "n_cut": counts["cut"]}


def teacher_logits(ctx, teacher: torch.nn.Module, split: dict, cfg: TransferConfig) -> torch.Tensor:
    """The teacher's logits on `split` (the transfer set), computed once and cached beside the teacher."""
    teacher_stage = ctx.teacher_stage
    weights = ctx.model_dir(teacher_stage) / "model.safetensors"
    stat = weights.stat() if weights.is_file() else None
    key = fingerprint(stat.st_size if stat else None, stat.st_mtime_ns if stat else None, cfg.augment.model_dump(),
                      ctx.recipe.seed, len(split["input_ids"]), unlabeled_inputs(cfg, ctx))
    path = ctx.stage_dir(teacher_stage) / "cache" / f"train_logits-{key}.npy"
    if path.is_file():
        return torch.from_numpy(np.load(path, allow_pickle=False))
    logits = predict(teacher, split, batch_size=256)
    buffer = io.BytesIO()
    np.save(buffer, logits.numpy(), allow_pickle=False)
    atomic_write_bytes(path, buffer.getvalue())
    return logits


def transfer_set(ctx, teacher: torch.nn.Module, cfg: TransferConfig, name: str) -> tuple[dict, dict]:
    """(split, details): the training split + augmented copies + unlabelled texts, with `teacher_logits`
    on every example and the teacher's argmax as the label of every added one.

    `details` counts what was added, for the step's record; `name` prefixes the note said when the
    tokenizer has no mask token."""
    from compress.distributed import main_process_first

    special_ids, mask_id, note = special_token_ids(ctx.tokenizer)
    note = note if cfg.augment.copies and cfg.augment.mask else None  # only said when masking is asked for
    if note:
        ctx.log(event="note", note=f"{name}: {note}")
        print(f"{name}: {note}")
    split = augment(ctx.encoded["train"], cfg.augment, ctx.recipe.seed, special_ids, mask_id)
    extra = unlabeled_split(cfg, ctx)  # used as it is, not augmented
    if extra is not None:
        split = {k: torch.cat([split[k], extra[k]]) for k in ("input_ids", "attention_mask", "labels")}
    with main_process_first():  # several processes: the main one computes and caches the logits, the others read them
        split["teacher_logits"] = teacher_logits(ctx, teacher, split, cfg)
    added = split["labels"] < 0
    split["labels"] = torch.where(added, split["teacher_logits"].argmax(-1), split["labels"])
    details = {"n_train": len(split["labels"]), "n_unlabeled": 0 if extra is None else len(extra["labels"])}
    if extra is not None:
        details["n_unlabeled_truncated"] = extra["n_truncated"]
        # rows of the files that held no text (empty, null, a number), and texts cut when read (compress/data/limits.py)
        details["n_unlabeled_dropped"], details["n_unlabeled_cut"] = extra["n_dropped"], extra["n_cut"]
    if note:
        details["mask_note"] = note
    return split, details
