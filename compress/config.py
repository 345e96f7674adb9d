"""The recipe schema: pydantic models, YAML loading with line numbers, `key=value` overrides.

A recipe is YAML with top-level `name`, `seed`, `device`, `task`, `teacher`, `steps`, `bench`,
`report`. Each step is `kind:` plus that kind's fields; its config class is registered with the
step (see `compress/pipeline.py`), so the `steps:` union is built from the registry. A misspelled
key is an error that lists the valid keys (nanoGPT, torchtune); YAML is read with the safe
loader and nothing in a recipe can import code.
"""

import difflib
import json
import re
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator
from pydantic_core import PydanticCustomError

from compress.errors import RecipeError
from compress.models import ATTENTION, SIZES

RECIPES_DIR = Path(__file__).resolve().parent.parent / "recipes"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"


class ConfigBase(BaseModel):
    """Base of every config: unknown keys are errors that list the valid keys."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    @model_validator(mode="before")
    @classmethod
    def reject_unknown_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            valid = list(cls.model_fields)
            for key in data:
                if key not in cls.model_fields:
                    close = difflib.get_close_matches(str(key), valid, n=1)
                    hint = f" (did you mean {close[0]!r}?)" if close else ""
                    raise PydanticCustomError(
                        "unknown_key",
                        "unknown key '{key}'{hint}; valid keys: {valid}",
                        {"key": key, "hint": hint, "valid": ", ".join(valid)},
                    )
        return data


class StepConfig(ConfigBase):
    """Fields every step has. Each step kind subclasses it with `kind: Literal[...]`."""

    kind: str
    # the stage name a model-producing step saves under; other steps act on the current stage
    name: str | None = Field(None, pattern=NAME_PATTERN)

    @model_validator(mode="after")
    def default_name(self):
        if self.name is None:
            self.name = self.kind
        return self


class ModelConfig(ConfigBase):
    """A Transformer's shape: a named `size` and/or explicit fields that override it."""

    size: Literal[tuple(SIZES)] | None = "mini"  # named size from compress/models/sizes.py
    dim: int | None = Field(None, ge=8, le=8192)  # overrides the size's width
    n_layers: int | None = Field(None, ge=1, le=64)
    n_heads: int | None = Field(None, ge=1, le=128)
    head_dim: int | None = Field(None, ge=4, le=512)  # default dim // n_heads
    ffn_dim: int | None = Field(None, ge=1, le=65536)
    attention: str = "full"  # attention kind for every layer (see `slimformer ls`)
    norm: Literal["pre", "post"] = "pre"
    pooling: Literal["mean", "cls"] = "mean"
    activation: Literal["gelu", "relu"] = "gelu"
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    attention_dropout: float = Field(0.0, ge=0.0, lt=1.0)

    def shape(self) -> dict:
        """The size's fields with the explicit ones laid over them."""
        base = dict(SIZES[self.size]) if self.size else {}
        for key in ("dim", "n_layers", "n_heads", "head_dim", "ffn_dim"):
            if getattr(self, key) is not None:
                base[key] = getattr(self, key)
        return base

    @model_validator(mode="after")
    def check_shape(self):
        shape = self.shape()
        missing = [k for k in ("dim", "n_layers", "n_heads", "ffn_dim") if k not in shape]
        if missing:
            raise ValueError(f"give a `size` ({', '.join(SIZES)}) or all of {missing}")
        if "head_dim" not in shape and shape["dim"] % shape["n_heads"]:
            raise ValueError(f"dim {shape['dim']} is not divisible by n_heads {shape['n_heads']}; set head_dim")
        if self.attention not in ATTENTION:
            raise ValueError(f"unknown attention kind {self.attention!r}; choose one of {sorted(ATTENTION)}")
        return self

    def build_config(self, vocab_size: int, max_len: int, label_names: list[str]):
        from compress.models import SlimformerConfig

        return SlimformerConfig(
            vocab_size=vocab_size,
            max_len=max_len,
            attention=self.attention,
            norm=self.norm,
            pooling=self.pooling,
            activation=self.activation,
            dropout=self.dropout,
            attention_dropout=self.attention_dropout,
            id2label=dict(enumerate(label_names)),
            label2id={n: i for i, n in enumerate(label_names)},
            **self.shape(),
        )


class BenchConfig(ConfigBase):
    """The measurement protocol: every `bench` step in a run uses it, so ratios compare like with like."""

    batch_sizes: list[Annotated[int, Field(ge=1, le=4096)]] = [1, 8]
    seq_lens: list[Annotated[int, Field(ge=1)]] | None = None  # default: the task's seq_len
    threads: int = Field(2, ge=1, le=256)  # intra-op threads for torch and ONNX Runtime
    warmup: int = Field(5, ge=0)  # untimed calls before timing
    repeats: int = Field(30, ge=3)  # timed calls per setting
    torch: bool = True  # also time eager torch (CPU, and CUDA when present)
    memory: bool = True  # peak memory of a fresh process that loads the ONNX artifact
    # after the last step, time every stage's ONNX artifact again in interleaved rounds (eval/interleave.py),
    # so a load change on a shared machine hits all stages alike and their ratios stay honest
    interleave: bool = True


class ReportConfig(ConfigBase):
    baseline: str | None = None  # stage every row is compared against; default: the first stage


@cache
def recipe_model() -> type[BaseModel]:
    """The Recipe model, with `steps:` a union of every registered step config."""
    import compress.steps  # noqa: F401  (fills the step registry)
    from compress.data import TaskConfig
    from compress.pipeline import STEPS

    step_union = Annotated[Union[tuple(s.config for s in STEPS.values())], Field(discriminator="kind")]
    return create_model(
        "Recipe",
        __base__=RecipeBase,
        task=(TaskConfig, ...),
        steps=(list[step_union], Field(..., min_length=1)),
        # branches that each continue from the end of `steps` (same cached teacher), side by side in one report
        variants=(dict[Annotated[str, Field(pattern=NAME_PATTERN)], Annotated[list[step_union], Field(min_length=1)]] | None, None),
    )


class RecipeBase(ConfigBase):
    """Fields of a recipe other than `task` and `steps` (added by `recipe_model`)."""

    name: str = Field(..., pattern=NAME_PATTERN)  # the run folder: runs/<name>/
    seed: int = 0  # seeds data generation, initialisation, shuffling
    device: Literal["auto", "cpu", "cuda"] = "auto"  # where training runs; auto = cuda when present
    teacher: ModelConfig = Field(default_factory=ModelConfig)
    bench: BenchConfig = Field(default_factory=BenchConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)

    @model_validator(mode="after")
    def check_steps(self):
        stages = set(check_lineage(list(self.steps), [], None))
        for variant, steps in lineages(self) if self.variants else []:
            stages |= set(check_lineage(steps, self.steps, variant))
        seq_len = self.task.seq_len
        too_long = [t for t in self.bench.seq_lens or [] if t > seq_len]
        if too_long:
            raise ValueError(f"bench.seq_lens {too_long} exceed task.seq_len {seq_len} (the model's positions)")
        if self.report.baseline is not None and self.report.baseline not in stages:
            raise ValueError(f"report.baseline {self.report.baseline!r} is not a stage; stages: {sorted(stages)}")
        return self


def lineages(recipe) -> list[tuple[str | None, list]]:
    """The step lists the runner walks: `[(None, steps)]`, or one `(variant, steps + its steps)` per variant.

    A variant's steps are copies whose stage names carry the variant's prefix (`int8` in variant
    `kd` becomes `kd.int8`), and a `parent:` naming one of the variant's own stages is prefixed
    the same way, so every stage of every variant has its own folder and report row. The trunk's
    stages keep their names and are made once.
    """
    if not recipe.variants:
        return [(None, list(recipe.steps))]
    out = []
    for variant, steps in recipe.variants.items():
        own = {step.name for step in steps}
        renamed = []
        for step in steps:
            update = {"name": f"{variant}.{step.name}"}
            if getattr(step, "parent", None) in own:
                update["parent"] = f"{variant}.{step.parent}"
            renamed.append(step.model_copy(update=update))
        out.append((variant, list(recipe.steps) + renamed))
    return out


def check_lineage(steps: list, trunk: list, variant: str | None) -> list[str]:
    """Check one lineage's step order and stage names; return its stages. Locations name the YAML list.

    `trunk` is the recipe's `steps:` when `steps` is a variant's lineage: their cross-step rules
    were checked with the trunk, and errors past it are placed in the variant's list."""
    from compress.pipeline import STEPS

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
        if spec.makes_stage:
            if step.name in stages:
                raise ValueError(where(f"steps[{i}]: stage name {step.name!r} is used twice; give each stage its own `name`"))
            stages.append(step.name)
            has_model = True
    for i, step in enumerate(steps):
        if hasattr(step, "check_recipe") and (variant is None or i >= len(trunk)):  # cross-step rules a kind owns
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


class StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader (no tags that build objects), refusing duplicate keys instead of keeping the last."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}: keep one of them", key_node.start_mark)
            if isinstance(key, (str, int, float, bool)):
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def yaml_lines(text: str) -> dict[tuple, int]:
    """Map each key path, e.g. ("steps", 0, "epochs"), to its 1-based line in the YAML text."""
    lines: dict[tuple, int] = {}

    def walk(node, path):
        lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                lines[path + (key.value,)] = key.start_mark.line + 1
                walk(value, path + (key.value,))
                lines[path + (key.value,)] = key.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, path + (i,))

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return lines
    if root is not None:
        walk(root, ())
    return lines


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


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply `a.b.c=value` overrides; list items by index or, under `steps`, by step name or kind."""
    for item in overrides:
        if "=" not in item:
            raise RecipeError(f"override {item!r} is not key=value (e.g. steps.teacher.epochs=1)")
        dotted, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError:
            value = raw
        keys = dotted.split(".")
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
    import compress.steps  # noqa: F401
    from compress.pipeline import STEPS

    if kind not in STEPS:
        return kind
    return STEPS[kind].config.model_fields["name"].default or kind


def format_location(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def clean_location(loc: tuple) -> tuple:
    """Drop the union tags pydantic puts in error locations: ("steps", 0, "train", "epochs") -> ("steps", 0, "epochs")."""
    out: list = []
    for part in loc:
        is_tag = isinstance(part, str) and part in tag_names() and (out[-1:] == ["task"] or out[:1] == ["steps"] and len(out) == 2 or out[:1] == ["variants"] and len(out) == 3)
        if not is_tag and not (isinstance(part, str) and "[" in part):
            out.append(part)
    return tuple(out)


@cache
def tag_names() -> frozenset:
    """Task and step kinds (cached: the registry must be full first, hence the import)."""
    import compress.steps  # noqa: F401  (fills the step registry)
    from compress.data import TASKS
    from compress.pipeline import STEPS

    return frozenset(TASKS) | frozenset(STEPS)


def validation_message(error: ValidationError, source: str, lines: dict[tuple, int], root: str = "recipe") -> str:
    """`file:line: field: message` for each error (an unknown key's line is the key's own); `root` names the whole file."""
    parts = []
    for err in error.errors():
        loc = clean_location(tuple(err["loc"]))
        if err["type"] == "unknown_key":
            loc_of_line = loc + (err["ctx"]["key"],)
        else:
            loc_of_line = loc
        line = next((lines[loc_of_line[:n]] for n in range(len(loc_of_line), -1, -1) if loc_of_line[:n] in lines), None)
        where = f"{source}" + (f":{line}" if line else "")
        field = format_location(loc) or root
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "missing":
            msg = "required field is missing"
        parts.append(f"{where}: {field}: {msg}")
    return "\n".join(parts)


def validate_recipe(data: dict, source: str = "<recipe>", text: str | None = None) -> BaseModel:
    """Validate a recipe mapping; raise RecipeError naming each field, its line and the fix."""
    lines = yaml_lines(text) if text else {}
    try:
        return recipe_model().model_validate(data)
    except ValidationError as e:
        raise RecipeError(validation_message(e, source, lines)) from None


def load_recipe(recipe: str | Path, overrides: list[str] = ()) -> tuple[BaseModel, Path]:
    """Read, override and validate a recipe. Returns (recipe, path of the YAML file)."""
    path = resolve_recipe_path(recipe)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise RecipeError(f"{path}: cannot read the recipe: {e}") from None
    data = apply_overrides(parse_yaml(text, str(path)), list(overrides))
    return validate_recipe(data, str(path), text), path


def recipe_schema() -> dict:
    """JSON Schema of recipes, for editors (`slimformer schema > recipe.schema.json`)."""
    schema = recipe_model().model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "slimformer recipe"
    return schema


def dump_recipe(recipe: BaseModel) -> str:
    """The resolved recipe as YAML, re-runnable as is."""
    return yaml.safe_dump(json.loads(recipe.model_dump_json()), sort_keys=False)
