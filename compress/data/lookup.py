"""Key-value lookup: find the value paired with the queried key anywhere earlier in the text.

An example lists `n_pairs` distinct keys (letters), each followed by its value (a digit),
then `?` and a query key; the label is the query key's value:

    `c 4 x 7 q 1 m 7 ? x`  ->  7

This is the associative-retrieval task of Ba et al. (2016, "Using Fast Weights to Attend to
the Recent Past"), also called associative recall (Fu et al. 2023, "Hungry Hungry Hippos")
and solved in Transformers by induction heads (Olsson et al. 2022). The answer sits next to
the matching key at a uniformly random position, so the classifier must compare the query
with every key across the whole sequence and read the token after the match. A bag of words
cannot: it sees which values occur but not which key each belongs to, so it is stuck near
picking one of the values present (about 1/`n_values` to 1/`n_pairs`), while a two-layer
Transformer (one layer to attach each value to its key, one to match the query) solves it.

Keys are the first `n_keys` lowercase letters, drawn without replacement per example; values
are digits drawn uniformly from 0..`n_values`-1, so classes are balanced in expectation. Text
length is 2 * `n_pairs` + 2 tokens; `n_pairs` is drawn uniformly from
[`min_pairs`, `max_pairs`]. Splits are drawn by `generated.draw_splits`: one stream per
(seed, split), no example repeated across splits.
"""

from __future__ import annotations

import random
import string
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from compress.data.generated import GeneratedTaskConfig, draw_splits
from compress.data.task import TaskData, make_task_data, register_task

QUERY = "?"


@register_task("lookup")
class LookupConfig(GeneratedTaskConfig):
    """Key-value lookup (associative recall) over letters and digits."""

    kind: Literal["lookup"] = "lookup"
    # how many distinct keys exist (the first n_keys letters a..z)
    n_keys: int = Field(26, ge=2, le=26)
    # how many values exist (digits 0..n_values-1) = number of classes
    n_values: int = Field(10, ge=2, le=10)
    # key-value pairs per example, drawn uniformly in [min_pairs, max_pairs]
    min_pairs: int = Field(8, ge=2)
    max_pairs: int = Field(24, ge=2)

    @model_validator(mode="after")
    def _check_pairs(self) -> "LookupConfig":
        if self.min_pairs > self.max_pairs:
            raise ValueError(
                f"min_pairs ({self.min_pairs}) > max_pairs ({self.max_pairs}); make min_pairs <= max_pairs"
            )
        if self.max_pairs > self.n_keys:
            raise ValueError(
                f"max_pairs ({self.max_pairs}) > n_keys ({self.n_keys}): keys in one example are "
                "distinct; lower max_pairs or raise n_keys (at most 26)"
            )
        return self

    def load(self, seed: int, base_dir: Path | None) -> TaskData:
        keys = string.ascii_lowercase[: self.n_keys]
        texts, labels = draw_splits(
            "lookup",
            seed,
            self.sizes(),
            lambda rng: generate_example(rng, keys, self.n_values, self.min_pairs, self.max_pairs),
            hint="raise n_keys, n_values or max_pairs, or ask for fewer examples",
        )
        return make_task_data(
            self,
            seed,
            name="lookup",
            texts=texts,
            labels=labels,
            label_names=[str(v) for v in range(self.n_values)],
            description=(
                f"key-value lookup: {self.n_train}/{self.n_validation}/{self.n_test} examples, "
                f"{self.min_pairs}-{self.max_pairs} pairs of {self.n_keys} keys, "
                f"{self.n_values} classes, seed {seed}"
            ),
        )


def generate_example(
    rng: random.Random, keys: str, n_values: int, min_pairs: int, max_pairs: int
) -> tuple[str, int]:
    """Draw one example: (text, value of the queried key)."""
    n_pairs = rng.randint(min_pairs, max_pairs)
    chosen = rng.sample(keys, n_pairs)
    values = [rng.randrange(n_values) for _ in range(n_pairs)]
    q = rng.randrange(n_pairs)
    tokens: list[str] = []
    for k, v in zip(chosen, values):
        tokens += [k, str(v)]
    tokens += [QUERY, chosen[q]]
    return " ".join(tokens), values[q]


def answer_lookup(text: str) -> int:
    """Reference answer from the text alone: the value after the queried key."""
    tokens = text.split()
    if len(tokens) < 4 or tokens[-2] != QUERY:
        raise ValueError(f"not a lookup example: {text!r}")
    pairs = dict(zip(tokens[0:-2:2], tokens[1:-2:2]))
    return int(pairs[tokens[-1]])
