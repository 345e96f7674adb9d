"""The run context: what steps share, and one `Stage` record per stage the run has made.

Steps that make a new model (train, distill, prune, ...) produce a *stage*, saved under
`runs/<name>/stages/<stage>/model`; the other steps (export, evaluate, bench) act on the current
stage. Files and metrics go only through `ctx`: `ctx.record(key, value)` adds a field to the
current stage's entry of results.json, `ctx.log(...)` a line to metrics.jsonl.

Each stage is one `Stage`: its name, the step kind that made it, the stage it started from, the
variant (lineage) it belongs to, its own tokenizer when a step gave it one (prune_vocab renumbers
the vocabulary; every other stage inherits its parent's), its folder, and what its steps
recorded. What steps need to know about stages is answered here, once: `ctx.teacher_stage` (the
first stage with a torch model), `ctx.parent()` (the stage a step starts from), `ctx.index` (the
running step's position) and `stage_history` (the same answers for the recipe validator, before
anything runs).
"""

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compress.distributed import wait_for_everyone
from compress.io import append_jsonl, atomic_dir
from compress.run.registry import STEPS, stage_history, teaches


@dataclass
class Stage:
    """One stage of a run: a model (or, for quantize, an ONNX-only artifact, or a reference row) and what was measured."""

    name: str
    kind: str  # the step kind that made it (train, distill, quantize, baseline, ...)
    dir: Path  # runs/<name>/stages/<stage>: model/, onnx/, saved logits
    parent: str | None = None  # the stage it started from (None: the first stage, or a reference row)
    lineage: str | None = None  # the variant it belongs to (None: the trunk)
    tokenizer: Any = None  # its own tokenizer (prune_vocab), saved in its model folder; None: inherits its parent's
    encoded: dict | None = None  # the task's splits encoded with its own tokenizer, made on first use
    recorded: dict[str, Any] = field(default_factory=dict)  # what its steps recorded: its results.json entry

    @property
    def model_dir(self) -> Path:
        return self.dir / "model"

    @property
    def onnx_dir(self) -> Path:
        return self.dir / "onnx"


@dataclass
class RunContext:
    """What steps share: the recipe, data, tokenizer, teacher, run folder and the stages made so far.

    `ctx.tokenizer` and `ctx.encoded` are the current stage's: a stage made by a step that sets
    its own (prune_vocab) has it, every other stage inherits the one of the stage it started from,
    and the first stages use the run's (`base_tokenizer`).
    """

    recipe: Any
    run_dir: Path
    data: Any  # compress.data.TaskData
    base_tokenizer: Any  # the run's transformers.PreTrainedTokenizerFast
    base_encoded: dict[str, dict]  # split -> {"input_ids": (N, T), "attention_mask": (N, T), "labels": (N,)} with it
    device: str
    # compress.models.imported.ImportedTeacher: the checkpoint of `teacher.from`, when the recipe imports one
    imported: Any = None
    base_dir: Path | None = None  # the recipe file's folder: relative paths in steps (distill's `unlabeled:`) start here
    teacher: Any = None  # the model of the lineage's teacher stage (`teacher_stage`), frozen
    stage: str | None = None  # the current stage's name
    stages: dict[str, Stage] = field(default_factory=dict)  # every stage made (or reused) so far, in order
    steps: list = field(default_factory=list)  # the steps of the lineage being run: the trunk, + one variant's
    index: int = 0  # the running step's position in `steps`
    variant: str | None = None  # the variant being run (None: the recipe has none)
    pending: dict[str, Any] = field(default_factory=dict)  # what the running step recorded
    root_key: str = ""  # the run's own fingerprint (code, data, seed, teacher, task, import): what a pretrain step builds on

    # ------------------------------------------------------------------ stages

    def add_stage(self, name: str, kind: str, parent: str | None) -> Stage:
        """Make `name` a stage of the running lineage; a stage made again keeps what it recorded, not its tokenizer."""
        if name not in self.stages:
            self.stages[name] = Stage(name, kind, self.run_dir / "stages" / name)
        stage = self.stages[name]
        stage.kind, stage.parent, stage.lineage, stage.tokenizer, stage.encoded = kind, parent, self.variant, None, None
        return stage

    @property
    def current(self) -> Stage:
        return self.stages[self.stage]

    def tokenizer_stage(self, stage: str | None = None) -> str | None:
        """The stage whose tokenizer `stage` (default: the current one) uses: itself or its nearest
        ancestor with one of its own; None: the run's tokenizer."""
        name, seen = stage or self.stage, set()
        while name in self.stages and name not in seen:
            if self.stages[name].tokenizer is not None:
                return name
            seen.add(name)
            name = self.stages[name].parent
        return None

    def tokenizer_of(self, stage: str | None = None):
        owner = self.tokenizer_stage(stage)
        return self.base_tokenizer if owner is None else self.stages[owner].tokenizer

    @property
    def tokenizer(self):
        """The current stage's tokenizer (transformers.PreTrainedTokenizerFast)."""
        return self.tokenizer_of()

    @property
    def encoded(self) -> dict[str, dict]:
        """The task's splits encoded with the current stage's tokenizer."""
        owner = self.tokenizer_stage()
        if owner is None:
            return self.base_encoded
        stage = self.stages[owner]
        if stage.encoded is None:
            from compress.data import encode_task

            stage.encoded = encode_task(self.data, stage.tokenizer, self.recipe.task.seq_len)
        return stage.encoded

    def set_tokenizer(self, tokenizer, encoded: dict[str, dict] | None = None) -> None:
        """Give the current stage a tokenizer of its own (and the splits encoded with it); its descendants inherit it."""
        self.current.tokenizer, self.current.encoded = tokenizer, encoded

    @property
    def teacher_stage(self) -> str | None:
        """The teacher (what distillation and recovery learn from): the stage of the lineage's latest
        `train`-like step run so far (one that builds a model without needing one: a variant with a
        train step of its own has its own teacher), else the first stage with a torch model of its
        own. Pretrained encoders (`pretrain`) are never the teacher."""
        lineage = [s for s in self.steps[: self.index + 1] if s.name in self.stages and teaches(s.kind)]
        roots = [s.name for s in lineage if STEPS[s.kind].makes_stage and not STEPS[s.kind].needs_model]
        if roots:
            return roots[-1]
        return next((s.name for s in self.stages.values() if teaches(s.kind)), None)

    @property
    def baseline_stage(self) -> str | None:
        """The stage every other is compared with (agreement, the report's deltas): report.baseline, else
        the run's first teacher (the trunk's)."""
        return self.recipe.report.baseline or next((s.name for s in self.stages.values() if teaches(s.kind)), None)

    def parent(self, name: str | None = None) -> str | None:
        """The stage the running step starts from: `name` if given, else the last stage with a torch model."""
        return stage_history(self.steps, self.index, name)[0]

    def stage_dir(self, stage: str | None = None) -> Path:
        return self.run_dir / "stages" / (stage or self.stage)

    def model_dir(self, stage: str | None = None) -> Path:
        return self.stage_dir(stage) / "model"

    def onnx_dir(self, stage: str | None = None) -> Path:
        return self.stage_dir(stage) / "onnx"

    # ------------------------------------------------------------------ results and files

    def record(self, key: str, value: Any) -> None:
        """Record a result field of the current stage (goes to results.json and the report)."""
        self.current.recorded[key] = value
        self.pending[key] = value

    def log(self, **metrics: Any) -> None:
        """Append one line to metrics.jsonl, tagged with the current stage."""
        append_jsonl(self.run_dir / "metrics.jsonl", {"time": round(time.time(), 3), "stage": self.stage, **metrics})

    def save_model(self, model, stage: str) -> None:
        """Save a stage's model and tokenizer atomically (safetensors + config + model code; for a sentence-embedding
        Transformer also sentence-transformers' module files, compress/models/sentence_transformers.py).

        With several processes the main one writes and the others wait, so all can then load it.
        """
        from compress.data.tokenizer import fit_to_length_
        from compress.models.sentence_transformers import write_modules

        with atomic_dir(self.model_dir(stage)) as tmp:
            model.save_pretrained(tmp)
            fit_to_length_(self.tokenizer_of(stage), self.recipe.task.seq_len).save_pretrained(tmp)  # truncates at seq_len
            write_modules(model, tmp, self.recipe.task.seq_len)
        wait_for_everyone()

    def load_model(self, stage: str):
        from transformers import AutoModelForSequenceClassification

        from compress.models import register_auto_classes

        register_auto_classes()
        model = AutoModelForSequenceClassification.from_pretrained(self.model_dir(stage))
        return model.eval()
