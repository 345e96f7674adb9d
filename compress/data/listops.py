"""ListOps: evaluate nested list operations over single digits (10 classes).

The task of Nangia & Bowman (2018, "ListOps: A Diagnostic Dataset for Latent Tree Learning")
as generated for the Long Range Arena (Tay et al. 2021), following LRA's
`lra_benchmarks/data/listops.py`:

- operators `[MIN`, `[MAX`, `[MED` (median) and `[SM` (sum modulo 10) over digits 0-9, each
  list closed by `]`, written with spaces: `[MAX 2 9 [MIN 4 7 ] 0 ]` -> 9;
- a node below `max_depth` is an operator with probability 0.25 (LRA's VALUE_P), else a
  digit; an operator draws 2..`max_args` arguments; the root is at depth 1 and at `max_depth`
  only digits are drawn;
- MED is LRA's `int(np.median(args))`: for an even count, the mean of the two middle values
  rounded down (`[MED 2 5 ]` -> 3);
- length counts tokens as LRA does (digit 1, operator with its `]` 2); trees are drawn until
  their length lies in [`min_length`, `max_length`] (LRA: strictly between 500 and 2000; our
  defaults are short, for a quick teacher) and duplicates are dropped.

Differences from LRA: its TSV files wrap every node in `( )` and its input pipeline's tfds
tokenizer keeps only alphanumeric runs, dropping every bracket, `]` included; we write no
`( )` and keep `]` as a token, so the text parses unambiguously. Each split is drawn from its
own `random.Random` stream seeded by (seed, split), so splits are fixed per seed on every
platform (LRA draws one pool and cuts it), and an example already in an earlier split is
skipped, so validation and test never repeat a training example.
`evaluate_listops` is an independent stack-based evaluator of the text, used by the tests.
"""

from __future__ import annotations

import random
import statistics
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from compress.data.generated import GeneratedTaskConfig, draw_splits
from compress.data.task import SPLITS, TaskData, make_task_data, register_task

OPERATORS = ("[MIN", "[MAX", "[MED", "[SM")
END = "]"
VALUE_P = 0.25  # chance that a node below max_depth is an operator (LRA)
_DIGITS = [str(d) for d in range(10)]


@register_task("listops")
class ListOpsConfig(GeneratedTaskConfig):
    """ListOps as in the Long Range Arena, with short default lengths."""

    kind: Literal["listops"] = "listops"
    # deepest nesting; the root is depth 1 (LRA: 10)
    max_depth: int = Field(10, ge=2, le=100)
    # most arguments per operator, at least 2 (LRA: 10)
    max_args: int = Field(10, ge=2, le=100)
    # shortest and longest example in tokens, [CLS]/[SEP] not counted (LRA: 500 and 2000)
    min_length: int = Field(10, ge=1)
    max_length: int = Field(100, ge=4)

    @model_validator(mode="after")
    def _check_lengths(self) -> "ListOpsConfig":
        if self.min_length > self.max_length:
            raise ValueError(
                f"min_length ({self.min_length}) > max_length ({self.max_length}); "
                "make min_length <= max_length"
            )
        longest = _longest_tree(self.max_depth, self.max_args)
        if self.min_length > longest:
            raise ValueError(
                f"min_length {self.min_length} is longer than any tree with max_depth={self.max_depth} "
                f"and max_args={self.max_args} (at most {longest} tokens); raise max_depth or max_args "
                "or lower min_length"
            )
        return self

    def load(self, seed: int, base_dir: Path | None) -> TaskData:
        def draw(rng: random.Random) -> tuple[str, int] | None:
            tree = generate_tree(rng, self.max_depth, self.max_args, self.max_length)
            if tree is None or len(tree[0]) < self.min_length:
                return None
            return " ".join(tree[0]), tree[1]

        texts, labels = draw_splits(
            "listops",
            seed,
            self.sizes(),
            draw,
            hint="widen min_length/max_length, raise max_depth/max_args or ask for fewer examples",
        )
        lengths = {}
        for s in SPLITS:
            n_tokens = [t.count(" ") + 1 for t in texts[s]]
            lengths[s] = {
                "min": min(n_tokens), "mean": round(statistics.fmean(n_tokens), 2), "max": max(n_tokens)
            }
        return make_task_data(
            self,
            seed,
            name="listops",
            texts=texts,
            labels=labels,
            label_names=[str(d) for d in range(10)],
            description=(
                f"ListOps (LRA generator): {self.n_train}/{self.n_validation}/{self.n_test} examples, "
                f"{self.min_length}-{self.max_length} tokens, depth<={self.max_depth}, "
                f"args<={self.max_args}, 10 classes, seed {seed}"
            ),
            extra_stats={"lengths": lengths},
        )


def _longest_tree(max_depth: int, max_args: int) -> int:
    longest = 1  # a digit at max_depth
    for _ in range(max_depth - 1):
        longest = 2 + max_args * longest
        if longest > 10**9:
            break
    return longest


def generate_tree(
    rng: random.Random, max_depth: int, max_args: int, max_length: int
) -> tuple[list[str], int] | None:
    """Draw one tree as LRA does; return (tokens, value), or None if over `max_length` tokens.

    Written as a loop over an explicit stack of open lists, drawing each operator when its
    list opens (LRA draws it after the arguments; the operator is independent of them, so the
    distribution is the same). A tree that grows past `max_length` is abandoned early; it
    would be rejected anyway, so accepted examples keep LRA's distribution conditioned on the
    length window. Uses only `rng.random()`, which is the same on every platform.
    """
    draw = rng.random
    tokens: list[str] = []
    stack: list[tuple[str, list[int], list[int]]] = []  # open lists: (op, [args left], args)
    used = 0  # tokens emitted or reserved (a "]" is reserved when its list opens)
    while True:
        if len(stack) + 1 < max_depth and draw() <= VALUE_P:  # this node is an operator
            used += 2
            if used > max_length:
                return None
            op = OPERATORS[int(draw() * len(OPERATORS))]
            n_args = 2 + int(draw() * (max_args - 1))  # uniform in 2..max_args
            tokens.append(op)
            stack.append((op, [n_args], []))
            continue
        used += 1
        if used > max_length:
            return None
        value = int(draw() * 10)
        tokens.append(_DIGITS[value])
        while True:  # hand the value up, closing every list it completes
            if not stack:
                return tokens, value
            op, left, args = stack[-1]
            args.append(value)
            left[0] -= 1
            if left[0] > 0:
                break
            stack.pop()
            tokens.append(END)
            value = apply_op(op, args)


def apply_op(op: str, args: list[int]) -> int:
    if op == "[MIN":
        return min(args)
    if op == "[MAX":
        return max(args)
    if op == "[MED":
        return int(statistics.median(args))  # LRA: int(np.median(args))
    if op == "[SM":
        return sum(args) % 10
    raise ValueError(f"unknown ListOps operator {op!r}")


def evaluate_listops(text: str) -> int:
    """Evaluate a ListOps string with an explicit stack (independent of the generator).

    Raises ValueError on a malformed string.
    """
    stack: list[tuple[str, list[int]]] = []
    result: int | None = None
    for tok in text.split():
        if result is not None:
            raise ValueError(f"tokens after the end of the expression: {text!r}")
        if tok.startswith("["):
            stack.append((tok.upper(), []))
        elif tok == END:
            if not stack:
                raise ValueError(f"unmatched ']' in {text!r}")
            op, args = stack.pop()
            value = _reference_value(op, args)
            if stack:
                stack[-1][1].append(value)
            else:
                result = value
        elif tok.isdigit():
            if not stack:
                if len(text.split()) == 1:
                    return int(tok)
                raise ValueError(f"digit outside a list in {text!r}")
            stack[-1][1].append(int(tok))
        else:
            raise ValueError(f"unknown token {tok!r} in {text!r}")
    if stack or result is None:
        raise ValueError(f"unclosed list in {text!r}")
    return result


def _reference_value(op: str, args: list[int]) -> int:
    if not args:
        raise ValueError(f"{op} without arguments")
    s = sorted(args)
    n = len(s)
    table = {
        "[MIN": s[0],
        "[MAX": s[-1],
        "[MED": (s[(n - 1) // 2] + s[n // 2]) // 2,  # mean of the middle pair, rounded down
        "[SM": sum(s) % 10,
    }
    if op not in table:
        raise ValueError(f"unknown operator {op!r}")
    return table[op]
