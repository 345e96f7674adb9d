"""Recipes: every shipped recipe validates; bad recipes give one clear message naming the field."""

import json
from pathlib import Path

import pytest
import yaml

from compress.errors import RecipeError
from compress.run.config import RECIPES_DIR, apply_overrides, load_recipe, recipe_schema

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
    recipe, _ = load_recipe(write(tmp_path, GOOD),
                            ["steps.teacher.epochs=3", "task.n_train=70", "steps.1.opset=17", "name=other"])
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


def test_unknown_recipe_lists_shipped(tmp_path):
    with pytest.raises(RecipeError, match="shipped: .*quickstart"):
        load_recipe("no-such-recipe")


def test_schema_is_json_schema_of_every_step_kind():
    schema = recipe_schema()
    text = json.dumps(schema)
    for kind in ("train", "export", "evaluate", "bench", "listops", "wordnet", "files"):
        assert f'"{kind}"' in text
    assert schema["additionalProperties"] is False


VARIANTS = GOOD + """\
variants:
  int8:
    - {kind: quantize}
  pruned:
    - {kind: prune_heads, name: heads, amount: 0.5}
    - {kind: export}
    - {kind: quantize, parent: heads}
"""


def test_variants_continue_from_the_trunk_with_prefixed_stage_names(tmp_path):
    from compress.run.registry import lineages

    recipe, _ = load_recipe(write(tmp_path, VARIANTS))
    runs = {variant: [s.name for s in steps] for variant, steps in lineages(recipe)}
    # a stage named like its variant keeps the one name (`int8`, not `int8.int8`)
    assert runs == {"int8": ["teacher", "export", "int8"],
                    "pruned": ["teacher", "export", "pruned.heads", "pruned.export", "pruned.int8"]}
    pruned_int8 = lineages(recipe)[1][1][-1]
    assert pruned_int8.parent == "pruned.heads", "a parent naming the variant's own stage is prefixed too"
    assert recipe.variants["pruned"][2].parent == "heads", "the recipe as written is unchanged (dumps re-validate)"
    assert (load_recipe(write(tmp_path, VARIANTS + "report: {baseline: pruned.heads}\n", "b.yaml"))[0].report.baseline
            == "pruned.heads")


@pytest.mark.parametrize(
    "variants, expected",
    [
        ("  a:\n    - {kind: export}\n    - {kind: quantize, parent: nope}\n",
         "variants.a[1] (quantize 'a.int8'): parent 'nope'"),
        ("  a:\n    - {kind: prune_heads, name: heads, amount: 0.5}\n    - {kind: quantize}\n",
         "variants.a[1] (quantize 'a.int8'): stage 'a.heads' has no ONNX artifact"),
        ("  a:\n    - {kind: quantize}\n    - {kind: quantize}\n", "variants.a[1]: stage name 'a.int8' is used twice"),
        ("  a:\n    - {kind: quantize, epocs: 1}\n", "variants.a[0]: unknown key 'epocs'"),
        ("  a: []\n", "variants.a"),
        ("  a/b:\n    - {kind: quantize}\n", "variants"),
    ],
)
def test_bad_variants_name_their_place(tmp_path, variants, expected):
    with pytest.raises(RecipeError) as e:
        load_recipe(write(tmp_path, GOOD + "variants:\n" + variants))
    assert expected in str(e.value)


def test_overrides_reach_variant_steps(tmp_path):
    recipe, _ = load_recipe(write(tmp_path, VARIANTS), ["variants.pruned.heads.amount=0.25"])
    assert recipe.variants["pruned"][0].amount == 0.25
