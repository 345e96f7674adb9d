"""Fixed, disjoint splits for generated tasks: one seeded random stream per split.

A generated task supplies `draw(rng) -> (text, label) | None` (None = rejected, e.g. outside
a length window). Each split gets its own `random.Random` seeded by the string
"slimformer/<task>/<seed>/<split>": Python seeds a string through SHA-512, so the stream, and
the data, are the same on every platform, and a split does not change when another split's
size does. Examples are drawn until the split is full, skipping any text already drawn for
this or an earlier split (like LRA's ListOps generator, which keeps a set of examples), so
validation and test never repeat a training example.
"""

from __future__ import annotations

import random
from typing import Callable

from pydantic import Field

from compress.data.task import SPLITS, TaskConfigBase
from compress.data.tokenizer import TokenizerConfig
from compress.errors import DataError

MAX_FAILED_DRAWS = 100_000  # draws in a row without a new example before giving up


class GeneratedTaskConfig(TaskConfigBase):
    """Fields every generated task shares: split sizes and a symbol-level tokenizer."""

    # examples per split
    n_train: int = Field(20000, ge=1)
    n_validation: int = Field(2000, ge=1)
    n_test: int = Field(2000, ge=1)
    # one token per symbol; symbols keep their case
    tokenizer: TokenizerConfig = Field(default_factory=lambda: TokenizerConfig(kind="char", lowercase=False))

    def sizes(self) -> dict[str, int]:
        return {"train": self.n_train, "validation": self.n_validation, "test": self.n_test}


def draw_splits(
    task: str,
    seed: int,
    sizes: dict[str, int],
    draw: Callable[[random.Random], tuple[str, int] | None],
    hint: str,
) -> tuple[dict[str, list[str]], dict[str, list[int]]]:
    """Texts and labels per split, `sizes[split]` distinct examples each.

    Raises DataError, ending with `hint` (how to loosen the config), when `MAX_FAILED_DRAWS`
    draws in a row give no new example.
    """
    seen: set[str] = set()
    texts: dict[str, list[str]] = {}
    labels: dict[str, list[int]] = {}
    for split in SPLITS:
        rng = random.Random(f"slimformer/{task}/{seed}/{split}")
        texts[split], labels[split] = [], []
        failed = 0
        while len(texts[split]) < sizes[split]:
            if failed >= MAX_FAILED_DRAWS:
                raise DataError(
                    f"{task}: only {len(texts[split])} of {sizes[split]} distinct {split} examples "
                    f"found in {MAX_FAILED_DRAWS} draws; {hint}"
                )
            example = draw(rng)
            failed += 1
            if example is None or example[0] in seen:
                continue
            failed = 0
            seen.add(example[0])
            texts[split].append(example[0])
            labels[split].append(example[1])
    return texts, labels
