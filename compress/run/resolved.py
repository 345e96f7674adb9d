"""The resolved recipe: every default filled in, written to `runs/<name>/recipe.yaml`, re-runnable as is.

Relative file paths are made absolute (against the folder they were relative to, see
`compress/run/config.py`), so the file runs the same from any folder; an imported teacher keeps
only `from` (and `pooling` when set), since the checkpoint fixes its shape.
"""

import json
from pathlib import Path

import yaml
from pydantic import BaseModel

PATH_FIELDS = ("unlabeled", "extra_texts", "corpus")  # step fields that name files, relative to the recipe's folder


def dump_recipe(recipe: BaseModel, base_dir: Path | None = None) -> str:
    """The resolved recipe as YAML, re-runnable as is from anywhere: relative file paths are made
    absolute against `base_dir` (the recipe's folder), and an imported teacher keeps only `from`
    (and `pooling` when set), since the checkpoint fixes its shape."""
    data = json.loads(recipe.model_dump_json(by_alias=True))

    def absolute(path):
        if base_dir is None or not isinstance(path, str) or path.startswith("~") or Path(path).is_absolute():
            return path
        return str((base_dir / path).resolve())

    if recipe.teacher.imports():
        data["teacher"] = {"from": absolute(data["teacher"]["from"]),
                           **({"pooling": data["teacher"]["pooling"]} if "pooling" in recipe.teacher.model_fields_set else {})}
        data["task"].pop("tokenizer", None)  # the checkpoint brings its own
    if data["task"].get("kind") == "files":
        data["task"].update({k: absolute(data["task"][k]) for k in ("train", "validation", "test") if data["task"].get(k)})
    for steps in [data["steps"], *(data.get("variants") or {}).values()]:
        for step in steps:
            for part in (step, step.get("recover") or {}):  # recovery names its transfer set's files too
                part.update({k: [absolute(p) for p in part[k]] for k in PATH_FIELDS if isinstance(part.get(k), list)})
    return yaml.safe_dump(data, sort_keys=False)
