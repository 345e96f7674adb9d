"""The recipe schema: pydantic models, YAML loading with line numbers, `key=value` overrides.

A recipe is YAML with top-level `name`, `seed`, `device`, `task`, `teacher`, `steps`, `bench`,
`report`. Each step is `kind:` plus that kind's fields; its config class is registered with the
step (see `compress/run/runner.py`), so the `steps:` union is built from the registry. A misspelled
key is an error that lists the valid keys (nanoGPT, torchtune); YAML is read with the safe
loader and nothing in a recipe can import code.
"""

import re
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, Field, ValidationError, create_model, model_validator

import compress.steps  # noqa: F401  (fills the step registry: the recipe's `steps:` union is built from it)
from compress.data import TASKS, TaskConfig
from compress.errors import RecipeError
from compress.run.config_base import NAME_PATTERN, BenchConfig, ConfigBase, ReportConfig, TeacherConfig
from compress.run.registry import STEPS, lineages
from compress.run.resolved import PATH_FIELDS, dump_recipe  # noqa: F401  (dump_recipe: the CLI's)
from compress.training.curriculum import check_curricula
from eval.schema import StrictLoader, validation_message, yaml_lines

RECIPES_DIR = Path(__file__).resolve().parents[2] / "recipes"


@cache
def recipe_model() -> type[BaseModel]:
    """The Recipe model, with `steps:` a union of every registered step config."""
    configs = tuple(s.config for s in STEPS.values())
    step_union = Annotated[Union[configs], Field(discriminator="kind")]  # noqa: UP007 (a run-time tuple has no X | Y form)
    return create_model(
        "Recipe",
        __base__=RecipeBase,
        task=(TaskConfig, ...),
        steps=(list[step_union], Field(..., min_length=1)),
        # branches that each continue from the end of `steps` (same cached teacher), side by side in one report
        variants=(dict[Annotated[str, Field(pattern=NAME_PATTERN)], Annotated[list[step_union], Field(min_length=1)]] | None,
                  None),
    )


class RecipeBase(ConfigBase):
    """Fields of a recipe other than `task` and `steps` (added by `recipe_model`)."""

    name: str = Field(..., pattern=NAME_PATTERN)  # the run folder: runs/<name>/
    seed: int = 0  # seeds data generation, initialisation, shuffling
    device: Literal["auto", "cpu", "cuda"] = "auto"  # where training runs; auto = cuda when present
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    bench: BenchConfig = Field(default_factory=BenchConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)

    @model_validator(mode="after")
    def check_steps(self):
        stages = set(check_lineage(list(self.steps), [], None))
        for variant, steps in lineages(self) if self.variants else []:
            stages |= set(check_lineage(steps, self.steps, variant))
        placed = [(f"steps[{i}]", step) for i, step in enumerate(self.steps)]
        placed += [(f"variants.{v}[{i}]", step) for v, steps in (self.variants or {}).items() for i, step in enumerate(steps)]
        for where, step in placed:  # a length curriculum must redraw this task (compress/training/curriculum.py)
            check_curricula(step, self.task, where)
        seq_len = self.task.seq_len
        too_long = [t for t in self.bench.seq_lens or [] if t > seq_len]
        if too_long:
            raise ValueError(f"bench.seq_lens {too_long} exceed task.seq_len {seq_len} (the model's positions)")
        if self.teacher.imports() and "tokenizer" in self.task.model_fields_set:
            raise ValueError(f"task.tokenizer: the imported teacher ({self.teacher.from_}) brings its own tokenizer, which every "
                             "stage uses; remove task.tokenizer")
        if self.report.baseline is not None and self.report.baseline not in stages:
            raise ValueError(f"report.baseline {self.report.baseline!r} is not a stage; stages: {sorted(stages)}")
        return self


def check_lineage(steps: list, trunk: list, variant: str | None) -> list[str]:
    """Check one lineage's step order and stage names; return its stages. Locations name the YAML list.

    `trunk` is the recipe's `steps:` when `steps` is a variant's lineage: the trunk's own rules were
    checked with the trunk (so what fails here involves the variant's steps, e.g. a trunk prune_vocab
    followed by a variant's distill), and errors past it are placed in the variant's list."""
    def where(message: str) -> str:  # "steps[7]" of a lineage is "variants.kd[2]" in the YAML
        def place(m):
            i = int(m.group(1))
            return f"steps[{i}]" if variant is None or i < len(trunk) else f"variants.{variant}[{i - len(trunk)}]"

        return re.sub(r"steps\[(\d+)\]", place, message)

    has_model, stages = False, []
    for i, step in enumerate(steps):
        spec = STEPS[step.kind]
        if spec.needs_model and not has_model:
            raise ValueError(where(f"steps[{i}] ({step.kind}) needs a model: put a `train` step before it"))
        if spec.makes_stage or spec.reference:  # a reference row (baseline) has a stage name of its own too
            if step.name in stages:
                raise ValueError(where(f"steps[{i}]: stage name {step.name!r} is used twice; give each stage its own `name`"))
            stages.append(step.name)
            has_model = has_model or spec.makes_stage
    for i, step in enumerate(steps):
        if hasattr(step, "check_recipe"):  # cross-step rules a kind owns
            try:
                step.check_recipe(steps, i)
            except ValueError as e:
                raise ValueError(where(str(e))) from None
    return stages


# --------------------------------------------------------------------------- loading


def resolve_recipe_path(recipe: str | Path) -> Path:
    """A path, or the short name of a shipped recipe (`quickstart` -> recipes/quickstart.yaml)."""
    path = Path(recipe)
    if path.is_file():
        return path
    shipped = RECIPES_DIR / f"{recipe}.yaml"
    if shipped.is_file():
        return shipped
    names = ", ".join(sorted(p.stem for p in RECIPES_DIR.glob("*.yaml")))
    raise RecipeError(f"recipe {str(recipe)!r} is neither a file nor a shipped recipe; shipped: {names}")


def parse_yaml(text: str, source: str) -> dict:
    try:
        data = yaml.load(text, Loader=StrictLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise RecipeError(f"{source}:{where}: YAML syntax error: {problem}") from None
    except RecursionError:
        raise RecipeError(f"{source}: YAML nested too deeply") from None
    if not isinstance(data, dict):
        raise RecipeError(f"{source}: a recipe is a YAML mapping with keys name, task, steps, ...; got {type(data).__name__}")
    return data


def apply_overrides(data: dict, overrides: list[str], cwd: Path | None = None) -> dict:
    """Apply `a.b.c=value` overrides; list items by index or, under `steps`, by step name or kind.

    With `cwd` (the shell's folder), a relative path an override gives (`task.train=data/x.csv`,
    `teacher.from=...`, `steps.distill.unlabeled=[...]`) is made absolute against it, as a shell user
    expects; paths written in the YAML file stay relative to the file's folder."""
    for item in overrides:
        if "=" not in item:
            raise RecipeError(f"override {item!r} is not key=value (e.g. steps.teacher.epochs=1)")
        dotted, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError:
            value = raw
        keys = dotted.split(".")
        if cwd is not None:
            value = absolute_paths(keys, value, cwd)
        node: Any = data
        for depth, key in enumerate(keys):
            last = depth == len(keys) - 1
            where = ".".join(keys[: depth + 1])
            if isinstance(node, list):
                index = find_list_item(node, key)
                if index is None:
                    raise RecipeError(f"override {item!r}: {where!r} matches no list item (use an index or a step name)")
                if last:
                    node[index] = value
                else:
                    node = node[index]
            elif isinstance(node, dict):
                if last:
                    node[key] = value
                else:
                    node = node.setdefault(key, {})
            else:
                raise RecipeError(f"override {item!r}: {'.'.join(keys[:depth])!r} is a value, not a mapping or list")
    return data


def is_path_field(keys: list[str]) -> bool:
    """Whether the value at `keys` names a file: task.train/validation/test, teacher.from, a step's (or its
    recovery's) unlabeled/extra_texts/corpus list or an item of it."""
    keys = [str(k) for k in keys]
    if keys and re.fullmatch(r"-?\d+", keys[-1]) and len(keys) > 1 and keys[-2] in PATH_FIELDS:
        keys = keys[:-1]  # an item of a file list
    if keys in (["task", "train"], ["task", "validation"], ["task", "test"], ["teacher", "from"]):
        return True
    return len(keys) > 1 and keys[0] in ("steps", "variants") and keys[-1] in PATH_FIELDS


def absolute_paths(keys: list[str], value: Any, cwd: Path) -> Any:
    """`value` (an override's, at `keys`) with every relative file path in it made absolute against `cwd`."""
    if isinstance(value, dict):
        return {k: absolute_paths([*keys, str(k)], v, cwd) for k, v in value.items()}
    if isinstance(value, list):
        return [absolute_paths([*keys, str(i)], v, cwd) for i, v in enumerate(value)]
    if isinstance(value, str) and value and is_path_field(keys) and not value.startswith("~") and not Path(value).is_absolute():
        return str((cwd / value).resolve())
    return value


def find_list_item(items: list, key: str) -> int | None:
    if re.fullmatch(r"-?\d+", key):
        index = int(key)
        return index if -len(items) <= index < len(items) else None
    for i, entry in enumerate(items):
        if isinstance(entry, dict) and key in (entry.get("name") or default_step_name(entry.get("kind")), entry.get("kind")):
            return i
    return None


def default_step_name(kind: Any) -> Any:
    """The name a step gets when the recipe gives none: its kind, or its config's default (train: teacher)."""
    if kind not in STEPS:
        return kind
    return STEPS[kind].config.model_fields["name"].default or kind


@cache
def tag_names() -> frozenset:
    """Task and step kinds: the tags pydantic puts in error locations of the `task:` and `steps:` unions."""
    return frozenset(TASKS) | frozenset(STEPS)


def recipe_error(error: ValidationError, source: str, lines: dict[tuple, int]) -> str:
    """`file:line: field: message` for each error of a recipe (`eval.schema.validation_message`)."""
    return validation_message(error, source, lines, root="recipe", tags=tag_names())


def validate_recipe(data: dict, source: str = "<recipe>", text: str | None = None) -> BaseModel:
    """Validate a recipe mapping; raise RecipeError naming each field, its line and the fix."""
    lines = yaml_lines(text) if text else {}
    try:
        return recipe_model().model_validate(data)
    except ValidationError as e:
        raise RecipeError(recipe_error(e, source, lines)) from None


def load_recipe(recipe: str | Path, overrides: list[str] = ()) -> tuple[BaseModel, Path]:
    """Read, override and validate a recipe. Returns (recipe, path of the YAML file)."""
    path = resolve_recipe_path(recipe)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise RecipeError(f"{path}: cannot read the recipe: {e}") from None
    data = apply_overrides(parse_yaml(text, str(path)), list(overrides), cwd=Path.cwd())
    return validate_recipe(data, str(path), text), path


def recipe_schema() -> dict:
    """JSON Schema of recipes, for editors (`slimformer schema > recipe.schema.json`)."""
    schema = recipe_model().model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "slimformer recipe"
    return schema
