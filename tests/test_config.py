"""Recipes: every shipped recipe validates; bad recipes give one clear message naming the field."""

import json
from pathlib import Path

import pytest
import yaml

from compress.config import RECIPES_DIR, apply_overrides, load_recipe, recipe_schema
from compress.errors import RecipeError

SHIPPED = sorted(RECIPES_DIR.glob("*.yaml"))

GOOD = """\
name: good
task:
  kind: listops
  n_train: 50
  n_validation: 10
  n_test: 10
steps:
  - kind: train
    epochs: 1
  - kind: export
"""


def write(tmp_path: Path, text: str, name="recipe.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_recipes_validate(path):
    recipe, _ = load_recipe(path)
    assert recipe.name == path.stem
    first_line = path.read_text().splitlines()[0]
    assert first_line.startswith("# "), "each shipped recipe starts with a comment giving its purpose"
    assert "slimformer run" in path.read_text(), "each shipped recipe gives its command"


def test_short_name_resolves_to_shipped_recipe():
    recipe, path = load_recipe("quickstart")
    assert path == RECIPES_DIR / "quickstart.yaml"


def test_defaults_are_filled(tmp_path):
    recipe, _ = load_recipe(write(tmp_path, GOOD))
    assert recipe.steps[0].name == "teacher" and recipe.steps[1].name == "export"
    assert recipe.teacher.size == "mini" and recipe.bench.threads == 2


def test_overrides(tmp_path):
    recipe, _ = load_recipe(write(tmp_path, GOOD), ["steps.teacher.epochs=3", "task.n_train=70", "steps.1.opset=17", "name=other"])
    assert recipe.steps[0].epochs == 3 and recipe.task.n_train == 70 and recipe.steps[1].opset == 17
    assert recipe.name == "other"


@pytest.mark.parametrize(
    "override, expected",
    [
        ("steps.nope.epochs=1", "matches no list item"),
        ("epochs", "not key=value"),
        ("name.x=1", "is a value"),
    ],
)
def test_bad_overrides(override, expected):
    with pytest.raises(RecipeError, match=expected):
        apply_overrides(yaml.safe_load(GOOD), [override])


BAD = {
    "unknown top-level key": ("GOOD\nseeed: 3\n", r"unknown key 'seeed' \(did you mean 'seed'\?\); valid keys: name, seed"),
    "unknown step key": (GOOD.replace("epochs: 1", "epocs: 1"), r"recipe.yaml:9: steps\[0\]: unknown key 'epocs' \(did you mean 'epochs'\?\)"),
    "unknown task key": (GOOD.replace("n_test: 10", "n_tests: 10"), r"task: unknown key 'n_tests'"),
    "wrong type": (GOOD.replace("epochs: 1", "epochs: many"), r"recipe.yaml:9: steps\[0\].epochs: Input should be a valid integer"),
    "out of range": (GOOD.replace("epochs: 1", "epochs: 0"), r"steps\[0\].epochs: Input should be greater than or equal to 1"),
    "unknown step kind": (GOOD.replace("kind: export", "kind: exportt"), r"steps\[1\]: Input tag 'exportt' found using 'kind' does not match any of the expected tags: .*'export'"),
    "unknown task kind": (GOOD.replace("kind: listops", "kind: listopz"), r"task: Input tag 'listopz'"),
    "unknown attention": (GOOD + "teacher: {attention: sparse}\n", r"unknown attention kind 'sparse'; choose one of \['full'"),
    "bad size": (GOOD + "teacher: {size: huge}\n", r"teacher.size: Input should be 'tiny', 'mini'"),
    "step before train": (GOOD.replace("  - kind: train\n    epochs: 1\n", ""), r"steps\[0\] \(export\) needs a model: put a `train` step before it"),
    "duplicate stage": (GOOD.replace("  - kind: export\n", "  - kind: train\n"), r"stage name 'teacher' is used twice"),
    "bench beyond positions": (GOOD + "bench: {seq_lens: [4096]}\n", r"bench.seq_lens \[4096\] exceed task.seq_len 128"),
    "missing name": ("\n".join(GOOD.splitlines()[1:]) + "\n", r"name: required field is missing"),
    "empty steps": ("name: x\ntask: {kind: listops}\nsteps: []\n", r"steps: List should have at least 1 item"),
    "path escape in name": (GOOD.replace("name: good", "name: ../evil"), r"name: String should match pattern"),
    "yaml syntax": ("name: x\ntask: {kind: listops\nsteps: []\n", r"YAML syntax error"),
    "not a mapping": ("- a\n- b\n", r"a recipe is a YAML mapping"),
    "bad baseline": (GOOD + "report: {baseline: student}\n", r"report.baseline 'student' is not a stage"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_recipes_are_clear_errors(tmp_path, case):
    text, expected = BAD[case]
    path = write(tmp_path, text.replace("GOOD\n", GOOD))
    with pytest.raises(RecipeError, match=expected):
        load_recipe(path)


def test_unknown_recipe_lists_shipped(tmp_path):
    with pytest.raises(RecipeError, match="shipped: .*quickstart"):
        load_recipe("no-such-recipe")


def test_schema_is_json_schema_of_every_step_kind():
    schema = recipe_schema()
    text = json.dumps(schema)
    for kind in ("train", "export", "evaluate", "bench", "listops", "wordnet", "files"):
        assert f'"{kind}"' in text
    assert schema["additionalProperties"] is False
