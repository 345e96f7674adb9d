"""Key-value lookup: labels are the queried key's value; seeded, balanced, not solvable by counts."""

import hashlib
import json
from collections import Counter

import pytest
from pydantic import ValidationError

from compress.data import SPLITS, LookupConfig, load_task
from compress.data.lookup import answer_lookup


@pytest.fixture(scope="module")
def lookup():
    cfg = LookupConfig(n_train=2000, n_validation=200, n_test=200)
    return cfg, load_task(cfg, seed=0)


def test_labels_match_reference_answer(lookup):
    _, data = lookup
    for split in SPLITS:
        for text, label in zip(data.texts[split], data.labels[split]):
            assert answer_lookup(text) == label


def test_format_and_lengths(lookup):
    cfg, data = lookup
    for text in data.texts["train"]:
        tokens = text.split()
        keys, values = tokens[0:-2:2], tokens[1:-2:2]
        assert tokens[-2] == "?" and tokens[-1] in keys
        assert len(set(keys)) == len(keys)  # keys are distinct within an example
        assert cfg.min_pairs <= len(keys) <= cfg.max_pairs
        assert all(v.isdigit() and int(v) < cfg.n_values for v in values)
        assert all(len(t) == 1 for t in tokens)  # one symbol per token


def test_classes_are_balanced(lookup):
    cfg, data = lookup
    counts = Counter(data.labels["train"])
    share = 1 / cfg.n_values
    assert len(counts) == cfg.n_values
    assert all(0.7 * share < c / len(data.labels["train"]) < 1.3 * share for c in counts.values())


def test_query_position_is_spread_over_the_sequence(lookup):
    _, data = lookup
    # where the answer sits, as a fraction of the pairs: early, middle and late all occur
    where = []
    for text in data.texts["train"]:
        tokens = text.split()
        keys = tokens[0:-2:2]
        where.append(keys.index(tokens[-1]) / len(keys))
    assert min(where) < 0.1 and max(where) > 0.9
    assert 0.35 < sum(where) / len(where) < 0.65


def test_bag_of_words_cannot_tell_the_label(lookup):
    # swapping the values of the queried key and another key with a different value keeps the
    # multiset of tokens but changes the answer: no function of token counts solves the task
    _, data = lookup
    n_checked = 0
    for text in data.texts["train"][:200]:
        tokens = text.split()
        q = tokens.index(tokens[-1])  # position of the queried key
        for j in range(0, len(tokens) - 2, 2):
            if tokens[j + 1] != tokens[q + 1]:
                swapped = list(tokens)
                swapped[q + 1], swapped[j + 1] = tokens[j + 1], tokens[q + 1]
                assert Counter(swapped) == Counter(tokens)
                assert answer_lookup(" ".join(swapped)) != answer_lookup(text)
                n_checked += 1
                break
    assert n_checked > 150


def test_deterministic_and_disjoint(lookup):
    cfg, data = lookup
    again = load_task(cfg, seed=0)
    assert again.texts == data.texts and again.fingerprint == data.fingerprint
    other = load_task(cfg, seed=7)
    assert other.texts["train"] != data.texts["train"]
    all_texts = [t for s in SPLITS for t in data.texts[s]]
    assert len(set(all_texts)) == len(all_texts)
    assert data.texts["validation"][:20] != data.texts["train"][:20]


def test_generated_data_is_pinned():
    # a change here changes every cached lookup data set: make it deliberate
    data = load_task(LookupConfig(n_train=20, n_validation=5, n_test=5), seed=0)
    digest = hashlib.sha256(json.dumps([data.texts, data.labels], sort_keys=True).encode()).hexdigest()
    assert digest == "fea0397a6f8340b02abd2613124bc0adcfb2fe495ec2e0f213158640bfa105d6"


@pytest.mark.parametrize(
    "fields,needle",
    [
        ({"min_pairs": 10, "max_pairs": 5}, "min_pairs"),
        ({"n_keys": 8, "max_pairs": 12}, "n_keys"),
        ({"n_values": 11}, "n_values"),
        ({"extra": True}, "extra"),
    ],
)
def test_invalid_config_is_rejected(fields, needle):
    with pytest.raises(ValidationError, match=needle):
        LookupConfig(**fields)
