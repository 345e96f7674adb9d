"""YAML files a user writes, read safely and validated with errors that point at the line.

Recipes (`compress/run/config.py`) and thresholds files (`eval/check.py`) are both read here: YAML's
safe loader refusing duplicate keys, pydantic models whose unknown keys are errors listing the
valid keys (nanoGPT, torchtune: a misspelled key is an error, not a silent default), and one
message per error of the form `file:line: field: message`. Nothing in a YAML file can import
code. This module is a leaf: it imports nothing of slimformer's.
"""

import difflib
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from pydantic_core import PydanticCustomError


class ConfigBase(BaseModel):
    """Base of every config: unknown keys are errors that list the valid keys."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    @model_validator(mode="before")
    @classmethod
    def reject_unknown_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            names = {field.alias or name: name for name, field in cls.model_fields.items()}  # `from` for a field `from_`
            valid = list(names)
            for key in data:
                if key not in names and key not in cls.model_fields:
                    close = difflib.get_close_matches(str(key), valid, n=1)
                    hint = f" (did you mean {close[0]!r}?)" if close else ""
                    raise PydanticCustomError(
                        "unknown_key",
                        "unknown key '{key}'{hint}; valid keys: {valid}",
                        {"key": key, "hint": hint, "valid": ", ".join(valid)},
                    )
        return data


class StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader (no tags that build objects), refusing duplicate keys instead of keeping the last."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}: keep one of them",
                                                        key_node.start_mark)
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


def format_location(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def clean_location(loc: tuple, tags: frozenset = frozenset()) -> tuple:
    """Drop the union tags pydantic puts in error locations: ("steps", 0, "train", "epochs") -> ("steps", 0, "epochs").

    `tags` are the discriminator values (task and step kinds) that may appear as a location part."""
    out: list = []
    for part in loc:
        is_tag = isinstance(part, str) and part in tags and (out[-1:] == ["task"] or out[:1] == ["steps"] and len(out) == 2
                                                             or out[:1] == ["variants"] and len(out) == 3)
        if not is_tag and not (isinstance(part, str) and "[" in part):
            out.append(part)
    return tuple(out)


def validation_message(error: ValidationError, source: str, lines: dict[tuple, int], root: str = "recipe",
                       tags: frozenset = frozenset()) -> str:
    """`file:line: field: message` for each error (an unknown key's line is the key's own); `root` names the whole file."""
    parts = []
    for err in error.errors():
        loc = clean_location(tuple(err["loc"]), tags)
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
