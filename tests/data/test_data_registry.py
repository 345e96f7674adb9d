"""The task registry, the `TaskConfig` union a recipe embeds, and `load_task`'s contract."""

from typing import Literal

import pytest
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from compress.data import (
    SPLITS,
    TASKS,
    ListOpsConfig,
    TaskConfig,
    TaskConfigBase,
    TaskData,
    TokenizerConfig,
    load_task,
    register_task,
)
from compress.data.split import stratified_split

ADAPTER = TypeAdapter(TaskConfig)
TINY = {
    "listops": {"n_train": 30, "n_validation": 5, "n_test": 5},
    "lookup": {"n_train": 30, "n_validation": 5, "n_test": 5},
    "wordnet": {"max_examples": 200},
}


def test_registry_holds_every_task():
    assert set(TASKS) == {"listops", "lookup", "wordnet", "files", "embedding"}
    for kind, cls in TASKS.items():
        assert issubclass(cls, TaskConfigBase)
        assert cls.model_config.get("extra") == "forbid"
        assert {"seq_len", "tokenizer", "seed", "kind"} <= set(cls.model_fields)


def test_union_dispatches_on_kind_and_forbids_unknown_keys():
    cfg = ADAPTER.validate_python({"kind": "listops", "n_train": 10, "seq_len": 64})
    assert isinstance(cfg, ListOpsConfig) and cfg.seq_len == 64 and cfg.tokenizer.kind == "char"
    with pytest.raises(ValidationError, match="listops"):  # the message lists the valid kinds
        ADAPTER.validate_python({"kind": "imdb"})
    for kind in TINY:
        with pytest.raises(ValidationError, match="not_a_field"):
            ADAPTER.validate_python({"kind": kind, "not_a_field": 1})
    with pytest.raises(ValidationError, match="vocab_sise"):
        ADAPTER.validate_python({"kind": "wordnet", "tokenizer": {"kind": "bpe", "vocab_sise": 100}})


def test_default_tokenizers_suit_the_task():
    assert ADAPTER.validate_python({"kind": "listops"}).tokenizer == TokenizerConfig(kind="char", lowercase=False)
    assert ADAPTER.validate_python({"kind": "wordnet"}).tokenizer.kind == "wordpiece"
    assert ADAPTER.validate_python({"kind": "wordnet"}).seq_len == 64
    assert ADAPTER.validate_python({"kind": "files", "train": "x.csv"}).tokenizer.vocab_size == 8000


def test_embeds_in_a_recipe_model_and_round_trips():
    class Recipe(BaseModel):
        model_config = ConfigDict(extra="forbid")
        seed: int = 0
        task: TaskConfig

    recipe = Recipe.model_validate({"task": {"kind": "lookup", "min_pairs": 3, "max_pairs": 5}})
    dumped = recipe.model_dump(mode="json")
    assert Recipe.model_validate(dumped) == recipe
    assert dumped["task"]["tokenizer"] == {"kind": "char", "vocab_size": 8000, "lowercase": False}


@pytest.mark.parametrize("kind", sorted(TINY))
def test_every_generated_task_obeys_the_taskdata_contract(kind):
    cfg = ADAPTER.validate_python({"kind": kind, **TINY[kind]})
    data = load_task(cfg, seed=3)
    assert isinstance(data, TaskData) and data.name == kind and data.description
    assert "\n" not in data.description
    assert set(data.texts) == set(data.labels) == set(SPLITS)
    for split in SPLITS:
        assert data.texts[split] and len(data.texts[split]) == len(data.labels[split])
        assert all(isinstance(t, str) for t in data.texts[split])
        assert all(0 <= y < data.n_classes for y in data.labels[split])
        assert data.stats["sizes"][split] == len(data.texts[split])
        assert sum(data.stats["class_counts"][split].values()) == len(data.texts[split])
    assert len(data.fingerprint) == 64 and int(data.fingerprint, 16) >= 0
    assert data.stats["seed"] == 3
    # the tokenizer config is part of the fingerprint: it changes the encoded tensors
    other = cfg.model_copy(update={"tokenizer": TokenizerConfig(kind="bpe")})
    assert load_task(other, seed=3).fingerprint != data.fingerprint


def test_register_task_checks_kind_and_duplicates():
    with pytest.raises(ValueError, match="twice"):

        @register_task("listops")
        class Again(TaskConfigBase):
            kind: Literal["listops"] = "listops"

    with pytest.raises(ValueError, match="kind"):

        @register_task("mismatch")
        class Wrong(TaskConfigBase):
            kind: Literal["other"] = "other"

    assert "mismatch" not in TASKS


def test_load_task_needs_a_registered_config():
    with pytest.raises(TypeError):
        load_task(TokenizerConfig(), seed=0)  # type: ignore[arg-type]


def test_stratified_split_partitions_and_keeps_each_class_in_train():
    labels = [0] * 50 + [1] * 30 + [2] * 3 + [3]
    parts = stratified_split(labels, {"validation": 0.1, "test": 0.1}, seed=0)
    assert sorted(i for p in parts.values() for i in p) == list(range(len(labels)))
    assert {len(parts["validation"]), len(parts["test"])} == {8}
    assert set(labels[i] for i in parts["train"]) == {0, 1, 2, 3}
    assert parts == stratified_split(labels, {"validation": 0.1, "test": 0.1}, seed=0)
    assert parts != stratified_split(labels, {"validation": 0.1, "test": 0.1}, seed=1)
