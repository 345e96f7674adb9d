"""Length curriculum: train on the task redrawn at short inputs first, then on the task itself.

Why: at initialisation attention spreads evenly over the input, so on a long needle task (key-value
lookup at 1K tokens) the gradient that would pull attention onto the one matching pair is about
1/T of the whole, and a 2-layer teacher sits at chance for hundreds of steps. On the same task at
12-20 tokens the same model finds the match in about 1,000 steps, and since the match is by
content, the learned circuit carries over to 1K tokens, where a few hundred steps adapt it
(probe, 2 CPU cores: 95% at 12-20 tokens after 1,000 steps, then 89% at 768-1,022 tokens after 100
steps at 64-128). This is curriculum learning (Bengio et al. 2009) by input length, as in
Shortformer's short-then-long training (Press et al. 2021) and sequence-length warm-up (Li et al.
2022); here whole examples are redrawn short, not cut, because cutting could drop the needle.

A `train` step's `curriculum:` lists phases (and `swap_attention`'s `recover.curriculum:`, for a
swapped model that must learn the task's match again). Each phase is the recipe's task with the phase's
`min_length`/`max_length` (and optionally its own `n_train`) put in its place. It is generated with
the recipe's seed, encoded with the run's tokenizer, and trained for the phase's `epochs` with the
step's optimiser settings and a schedule of its own. It keeps its best model on its own validation
split. Then the next phase starts from that model, and the task itself comes last. Only generated
tasks that draw examples in a length window (`lookup` long form, `listops`) can be redrawn. A phase
training example that is also in the task's validation or test split is dropped, so nothing is
learned from the held-out splits.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, ValidationError, model_validator

from compress.data import encode_task, load_task
from compress.run.config_base import ConfigBase

LENGTH_FIELDS = ("min_length", "max_length")


class CurriculumPhase(ConfigBase):
    """One phase: the task redrawn with inputs of `min_length`-`max_length` tokens, trained `epochs` times."""

    min_length: int = Field(..., ge=1)
    max_length: int = Field(..., ge=1)
    epochs: int = Field(1, ge=1, le=10000)
    n_train: int | None = Field(None, ge=1)  # training examples of the phase; None = the task's n_train

    @model_validator(mode="after")
    def check_window(self) -> CurriculumPhase:
        if self.min_length > self.max_length:
            raise ValueError(f"min_length ({self.min_length}) > max_length ({self.max_length}); make min_length <= max_length")
        return self


def phase_task(task, phase: CurriculumPhase, where: str):
    """The task config of one phase: `task` with the phase's length window (and n_train), validated.

    Raises ValueError naming `where` (e.g. "steps[1].curriculum[0]") when the task has no length
    window to redraw, or when the phase's window does not fit the task (a lookup window shorter than its pairs)."""
    if not all(f in type(task).model_fields and getattr(task, f) is not None for f in LENGTH_FIELDS):
        raise ValueError(
            f"{where}: a length curriculum redraws the task at shorter inputs, but task kind {task.kind!r} has no "
            "length window (min_length/max_length set); use it with a generated long task (lookup with "
            "min_length/max_length, listops) or remove curriculum"
        )
    if phase.max_length > task.seq_len - 2:
        raise ValueError(f"{where}: max_length {phase.max_length} does not fit task.seq_len {task.seq_len} "
                         f"([CLS] and [SEP] included); lower max_length to at most {task.seq_len - 2}")
    update = {"min_length": phase.min_length, "max_length": phase.max_length}
    if phase.n_train is not None:
        update["n_train"] = phase.n_train
    try:
        return type(task).model_validate({**task.model_dump(), **update})
    except ValidationError as e:
        reasons = "; ".join(err["msg"].removeprefix("Value error, ") for err in e.errors())
        raise ValueError(f"{where}: the task at min_length {phase.min_length}, max_length {phase.max_length} is not valid: "
                         f"{reasons}") from None


def phase_splits(task, phase: CurriculumPhase, seed: int, base_dir: Path | None, tokenizer,
                 held_out: set[str]) -> dict[str, dict]:
    """The phase's train and validation splits, encoded with `tokenizer` at the task's seq_len.

    Returns {"train": {...}, "validation": {...}} as `encode_task` does; training texts in `held_out`
    (the task's own validation and test texts) are dropped."""
    # the phase never uses a test split: draw one example (test is drawn last, so train and validation stay the same)
    data = load_task(phase_task(task, phase, "curriculum").model_copy(update={"n_test": 1}), seed=seed, base_dir=base_dir)
    keep = [i for i, t in enumerate(data.texts["train"]) if t not in held_out]
    data.texts["train"] = [data.texts["train"][i] for i in keep]
    data.labels["train"] = [data.labels["train"][i] for i in keep]
    encoded = encode_task(data, tokenizer, task.seq_len)
    return {split: encoded[split] for split in ("train", "validation")}


def phase_summary(phase: CurriculumPhase, splits: dict[str, dict], curve: list[dict]) -> dict:
    """What a phase did, for the stage's record: window, examples, steps and its best validation accuracy."""
    return {
        "min_length": phase.min_length,
        "max_length": phase.max_length,
        "n_train": int(splits["train"]["labels"].shape[0]),
        "epochs": len(curve),
        "steps": curve[-1]["step"] if curve else 0,
        "val_accuracy": max(p["val_accuracy"] for p in curve) if curve else None,
    }


def check_curricula(step, task, where: str) -> None:
    """Every phase of a step's curricula (`curriculum:`, `recover.curriculum:`) must redraw `task`;
    raises ValueError naming the phase's place, e.g. "steps[1].recover.curriculum[0]"."""
    for field, owner in (("curriculum", step), ("recover.curriculum", getattr(step, "recover", None))):
        for i, phase in enumerate(getattr(owner, "curriculum", None) or []):
            phase_task(task, phase, f"{where}.{field}[{i}]")


def held_out_texts(data) -> set[str]:
    """The task's validation and test texts: a phase never trains on them."""
    return set(data.texts["validation"]) | set(data.texts["test"])
