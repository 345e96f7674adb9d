"""The step registry and what it tells about a recipe's steps before anything runs.

A step is a function `(model, cfg, ctx) -> model` registered under the `kind` users write in
YAML, with its config class and flags (`StepSpec`): whether it makes a stage, saves a torch
model, only measures, is a reference row, sets a tokenizer or pretrains. Step modules import
this module, never the runner (`compress/run/runner.py`), and the recipe schema
(`compress/run/config.py`) builds its step union from `STEPS`.

Also here, because the validator needs them before the runner exists: `stage_history` (which
stage a step starts from, which stages have a torch model or an ONNX artifact), `lineages` (the
trunk and each variant's steps, with their stages renamed), and the hashes every cached step is
keyed by (`code_version`, `file_digest`, `fingerprint`).
"""

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

import compress

StepFn = Callable[[Any, Any, Any], Any]  # (model, cfg, ctx: compress.run.context.RunContext) -> model


@dataclass(frozen=True)
class StepSpec:
    kind: str
    config: type[BaseModel]
    fn: StepFn
    makes_stage: bool  # returns a new model saved as a stage
    needs_model: bool  # needs a model from an earlier step
    uses: tuple[str, ...]  # top-level recipe sections the step reads (part of its fingerprint)
    saves_model: bool = True  # its stage has a torch model; False (quantize): ONNX only, the parent's model stays current
    # a measuring step (evaluate, bench): its results feed no later step, so its fingerprint is its own and
    # later steps chain from the step before it (re-measuring never retrains a later stage)
    measures: bool = False
    code: tuple[str, ...] = ()  # modules outside compress/ whose source is part of the fingerprint (eval's measuring code)
    inputs: Callable[[Any, Any], Any] | None = None  # (cfg, ctx) -> files/choices read at run time, fingerprinted too
    # a reference row (the classical baseline): recorded under its own stage name, never the current stage,
    # a parent or the teacher; no torch model, no ONNX artifact; its fingerprint feeds no later step
    reference: bool = False
    sets_tokenizer: bool = False  # its stage has a tokenizer of its own (prune_vocab), saved in its model folder
    # its stage is an encoder for a later `train` step to fine-tune (pretrain): never the teacher or the baseline
    pretrains: bool = False


STEPS: dict[str, StepSpec] = {}


def register_step(kind: str, config: type[BaseModel], makes_stage: bool = False, needs_model: bool = True, uses=(),
                  saves_model: bool = True, measures: bool = False, code=(), inputs=None, reference: bool = False,
                  sets_tokenizer: bool = False, pretrains: bool = False):
    """Register `fn` as the step `kind`; returns `fn` unchanged.

    A `reference` step needs no model, makes no stage of the chain and saves no torch model
    (those flags are set for it)."""

    def decorator(fn: StepFn) -> StepFn:
        if kind in STEPS:
            raise ValueError(f"step kind {kind!r} is registered twice")
        flags = {"makes_stage": False, "needs_model": False, "saves_model": False} if reference else \
            {"makes_stage": makes_stage, "needs_model": needs_model, "saves_model": saves_model}
        STEPS[kind] = StepSpec(kind, config, fn, uses=tuple(uses), measures=measures, code=tuple(code), inputs=inputs,
                               reference=reference, sets_tokenizer=sets_tokenizer, pretrains=pretrains, **flags)
        return fn

    return decorator


def teaches(kind: str) -> bool:
    """A stage of this kind can be a teacher: it has a torch model of its own, is no reference row and no pretrained encoder."""
    spec = STEPS[kind]
    return spec.saves_model and not spec.reference and not spec.pretrains


def code_version(modules: tuple[str, ...] = ()) -> str:
    """Hash of the library's source (every file of compress/) and of `modules` (e.g. "eval.bench"):
    a code change invalidates the cached steps that ran it."""
    import importlib.util

    h = hashlib.sha256(compress.__version__.encode())
    paths = sorted(Path(compress.__file__).parent.rglob("*.py"))
    paths += [Path(importlib.util.find_spec(name).origin) for name in modules]
    for path in paths:
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def file_digest(path: Path) -> str | None:
    """sha256 of a file's bytes (None when it is missing): inputs a step reads become part of its fingerprint."""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else None


def fingerprint(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def stage_history(steps: list, index: int, parent: str | None = None) -> tuple[str | None, list[str], set[str]]:
    """(parent, stages with a torch model, stages exported) as of `steps[index]`.

    The default parent is the stage whose torch model is current: the last model-saving stage
    (an earlier quantize stage is skipped, so two quantize steps in a row share their parent).
    """
    current, model_stages, exported = None, [], set()
    for step in steps[:index]:
        spec = STEPS[step.kind]
        if spec.makes_stage:
            current = step.name
            if spec.saves_model:
                model_stages.append(step.name)
        if step.kind == "export":
            exported.add(current)
    return parent or (model_stages[-1] if model_stages else None), model_stages, exported



def variant_stage(variant: str, name: str) -> str:
    """A variant's stage name: `<variant>.<name>`, or just the variant's name when the two are equal (no `int8.int8`)."""
    return variant if name == variant else f"{variant}.{name}"


def lineages(recipe) -> list[tuple[str | None, list]]:
    """The step lists the runner walks: `[(None, steps)]`, or one `(variant, steps + its steps)` per variant.

    A variant's steps are copies whose stage names carry the variant's prefix (`int8` in variant
    `kd` becomes `kd.int8`; a stage named like its variant keeps that one name), and a `parent:`
    naming one of the variant's own stages is renamed the same way, so every stage of every
    variant has its own folder and report row. The trunk's stages keep their names and are made once.
    """
    if not recipe.variants:
        return [(None, list(recipe.steps))]
    out = []
    for variant, steps in recipe.variants.items():
        own = {step.name for step in steps}
        renamed = []
        for step in steps:
            update = {"name": variant_stage(variant, step.name)}
            if getattr(step, "parent", None) in own:
                update["parent"] = variant_stage(variant, step.parent)
            renamed.append(step.model_copy(update=update))
        out.append((variant, list(recipe.steps) + renamed))
    return out
