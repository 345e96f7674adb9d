"""What a task is: its config base class, the loaded data, the registry and `load_task`.

A task kind is a pydantic config class with a `kind: Literal[...]` field and a
`load(seed, base_dir) -> TaskData` method, registered under the short name users write in a
recipe's `task:` block. `compress.data` builds the discriminated union `TaskConfig` from the
registry, so a new task is one new file with one `@register_task("...")` class.

Every task returns the same `TaskData`: texts and integer labels for exactly the splits
"train", "validation" and "test", the label names (index = label id, used as `id2label`), a
one-line description for report headers, statistics, and a fingerprint for stage caching.
Like the Long Range Arena rules (Tay et al. 2021, "Long Range Arena: A Benchmark for
Efficient Transformers"), the data of a run is fixed by the task config and the seed alone.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TypeVar

from pydantic import Field

from compress.run.config_base import ConfigBase
from compress.data.tokenizer import TokenizerConfig, encode

SPLITS = ("train", "validation", "test")


class TaskConfigBase(ConfigBase):
    """Fields every task shares. Subclasses add `kind` and their own fields."""

    # max tokens per example, [CLS] and [SEP] included; longer texts are truncated
    seq_len: int = Field(128, ge=3, le=65536)
    # how texts become ids; wordpiece/8000 unless a task sets a default that suits it better
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig)
    # data seed; None = use the recipe's seed
    seed: int | None = None

    def load(self, seed: int, base_dir: Path | None) -> "TaskData":  # pragma: no cover
        raise NotImplementedError


@dataclass
class TaskData:
    """A task's texts and labels for the splits "train", "validation" and "test"."""

    name: str
    texts: dict[str, list[str]]
    labels: dict[str, list[int]]
    label_names: list[str]
    description: str
    stats: dict[str, Any] = field(default_factory=dict)
    fingerprint: str = ""

    @property
    def n_classes(self) -> int:
        return len(self.label_names)


ConfigT = TypeVar("ConfigT", bound=type[TaskConfigBase])

# kind -> config class; the class's `load` method is the loader
TASKS: dict[str, type[TaskConfigBase]] = {}


def register_task(kind: str) -> Callable[[ConfigT], ConfigT]:
    """Register a task config class under `kind`; returns the class unchanged."""

    def decorator(cls: ConfigT) -> ConfigT:
        if kind in TASKS:
            raise ValueError(f"task kind {kind!r} is registered twice ({TASKS[kind].__name__}, {cls.__name__})")
        field_info = cls.model_fields.get("kind")
        if field_info is None or field_info.default != kind:
            raise ValueError(f"{cls.__name__} needs a field `kind: Literal[{kind!r}] = {kind!r}`")
        TASKS[kind] = cls
        return cls

    return decorator


def load_task(cfg: TaskConfigBase, seed: int, base_dir: str | Path | None = None) -> TaskData:
    """Load (or generate) the data of a task.

    `seed` is the recipe seed, used when `cfg.seed` is None. `base_dir` is the folder that
    relative paths in the config are resolved against (the recipe file's folder); None means
    the current directory.
    """
    kind = getattr(cfg, "kind", None)
    if kind not in TASKS or not isinstance(cfg, TASKS[kind]):
        raise TypeError(f"load_task needs a registered task config, got {type(cfg).__name__}")
    data_seed = cfg.seed if cfg.seed is not None else seed
    data = cfg.load(int(data_seed), Path(base_dir) if base_dir is not None else None)
    _check(data)
    return data


def make_task_data(
    cfg: TaskConfigBase,
    seed: int,
    *,
    name: str,
    texts: dict[str, list[str]],
    labels: dict[str, list[int]],
    label_names: list[str],
    description: str,
    extra_stats: dict[str, Any] | None = None,
    file_hashes: dict[str, str] | None = None,
) -> TaskData:
    """Assemble a `TaskData`: fill the common stats and the fingerprint.

    The fingerprint hashes the config (tokenizer and seq_len included, since they decide the
    encoded tensors), the data seed, the sha256 of every file read, and the resulting texts
    and labels themselves, so a change to the generator code also changes it.
    """
    stats: dict[str, Any] = {
        "seed": seed,
        "sizes": {s: len(texts[s]) for s in SPLITS},
        "class_counts": {
            s: {label_names[i]: c for i, c in sorted(Counter(labels[s]).items())} for s in SPLITS
        },
    }
    stats.update(extra_stats or {})
    h = hashlib.sha256()
    header = {"config": cfg.model_dump(mode="json"), "seed": seed, "files": file_hashes or {}}
    h.update(json.dumps(header, sort_keys=True).encode())
    h.update(json.dumps(label_names).encode())
    for s in SPLITS:
        h.update(s.encode())
        for text, label in zip(texts[s], labels[s]):
            h.update(f"{label}\t{text}\n".encode())
    return TaskData(
        name=name,
        texts=texts,
        labels=labels,
        label_names=label_names,
        description=description,
        stats=stats,
        fingerprint=h.hexdigest(),
    )


def encode_task(data: TaskData, tokenizer: Any, seq_len: int) -> dict[str, dict]:
    """`encode` every split; record each split's truncation count in `data.stats["n_truncated"]`.

    Returns {split: {"input_ids": (N, seq_len), "attention_mask": (N, seq_len), "labels": (N,)}}.
    """
    import torch

    out: dict[str, dict] = {}
    truncated = data.stats.setdefault("n_truncated", {})
    for split in SPLITS:
        enc = encode(tokenizer, data.texts[split], seq_len)
        truncated[split] = enc.pop("n_truncated")
        enc["labels"] = torch.tensor(data.labels[split], dtype=torch.long)  # (N,)
        out[split] = enc
    return out


def _check(data: TaskData) -> None:
    # internal invariants: a failure here is a bug in a task, not a user mistake
    assert set(data.texts) == set(SPLITS) == set(data.labels), sorted(data.texts)
    for s in SPLITS:
        assert len(data.texts[s]) == len(data.labels[s]), s
        assert all(0 <= y < len(data.label_names) for y in data.labels[s]), s


def data_changes(stats: dict[str, Any]) -> dict[str, Any] | None:
    """What reading the files changed, for results.json's protocol `data`: rows dropped per split and why, texts cut
    to `max_text_chars` per split; None when nothing was."""
    dropped, cut = stats.get("dropped") or {}, stats.get("cut") or {}
    if not dropped and not cut:
        return None
    return {"dropped": dropped, "cut": cut, "max_text_chars": stats.get("max_text_chars")}


def data_notes(stats: dict[str, Any]) -> list[str]:
    """`data_changes` in words, one line each: what `slimformer validate` and the run's log say."""
    changes = data_changes(stats) or {}
    lines = []
    for split, reasons in (changes.get("dropped") or {}).items():
        why = ", ".join(f"{n} {REASONS.get(r, r)}" for r, n in reasons.items())
        lines.append(f"{split}: {sum(reasons.values())} row(s) dropped ({why})")
    for split, n in (changes.get("cut") or {}).items():
        lines.append(f"{split}: {n} text(s) cut to {changes['max_text_chars']:,} characters (compress/data/limits.py)")
    return lines


REASONS = {"empty": "with empty text", "null": "with no text (null)", "not_text": "whose text is not a string"}
