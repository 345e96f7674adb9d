"""The one selector vocabulary: which modules a compression method may touch (STYLE.md rule 8).

`include` and `exclude` are `fnmatch` globs over module names as `model.named_modules()` gives
them (`layers.0.attn`, `layers.1.mlp.up_proj`, `classifier`); `*` also crosses dots. A module
is selected when its name, or the name of a module containing it, matches an `include` glob
and none matches an `exclude` glob: `layers.1` selects `layers.1.attn` and everything below it.
The classifier head and the embeddings are `protect`ed by default: nothing under them is
selected whatever `include` says, unless a recipe empties `protect`. torchao's `filter_fn`
idea, written as globs so a recipe can say it.
"""

import fnmatch
from collections.abc import Iterable

from pydantic import Field, field_validator

from compress.run.config_base import ConfigBase

PROTECTED = ("classifier*", "embeddings*")


class SelectConfig(ConfigBase):
    """The `include`/`exclude` fields every method's step config shares."""

    include: list[str] = Field(["*"], min_length=1)  # globs over module names; a parent's name counts (layers.1 -> layers.1.attn)
    exclude: list[str] = []  # globs over module names never touched, even when included
    protect: list[str] = list(PROTECTED)  # globs excluded by default: the classifier head and the embeddings

    @field_validator("include", "exclude", "protect")
    @classmethod
    def non_empty_globs(cls, globs: list[str]) -> list[str]:
        if any(not isinstance(g, str) or not g.strip() for g in globs):
            raise ValueError("globs must be non-empty strings such as 'layers.*' or 'layers.0.attn'")
        return globs


def name_and_parents(name: str) -> list[str]:
    """'layers.0.attn' -> ['layers', 'layers.0', 'layers.0.attn']."""
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def matches(name: str, globs: Iterable[str]) -> bool:
    """Whether `name` or a parent of it matches any glob."""
    return any(fnmatch.fnmatchcase(n, g) for n in name_and_parents(name) for g in globs)


def is_selected(name: str, include: Iterable[str] = ("*",), exclude: Iterable[str] = (),
                protect: Iterable[str] = PROTECTED) -> bool:
    """The selection rule for one module name."""
    return matches(name, include) and not matches(name, exclude) and not matches(name, protect)


def select_names(names: Iterable[str], cfg: SelectConfig | None = None, **globs) -> list[str]:
    """The names (in order) a `SelectConfig` (or include=/exclude=/protect= keywords) selects."""
    rule = cfg.model_dump(include={"include", "exclude", "protect"}) if cfg is not None else {}
    rule.update(globs)
    return [n for n in names if is_selected(n, **rule)]


def select_modules(model, cfg: SelectConfig | None = None, types: type | tuple[type, ...] | None = None,
                   **globs) -> list[tuple[str, object]]:
    """(name, module) pairs of `model` that are selected and, when `types` is given, of those types."""
    modules = dict(model.named_modules())
    names = [n for n, m in modules.items() if n and (types is None or isinstance(m, types))]
    return [(n, modules[n]) for n in select_names(names, cfg, **globs)]
