"""The baseline's `tokens: symbols`: single-character tokens (lookup) become features, and a saved model reloads exactly."""

import numpy as np
import pytest

from compress.data import LookupConfig, load_task
from eval.baseline import fit_tfidf_logreg, load, save
from eval.errors import SlimformerError


@pytest.fixture(scope="module")
def lookup():
    return load_task(LookupConfig(n_train=300, n_validation=50, n_test=50, min_pairs=4, max_pairs=8), seed=0)


def test_symbols_count_single_characters_and_reload(lookup, tmp_path):
    d = lookup
    model, tried = fit_tfidf_logreg(d.texts["train"], d.labels["train"], d.texts["validation"], d.labels["validation"],
                                    d.n_classes, [1.0], seed=0, tokens="symbols")
    vocab = model.vectorizer.vocabulary_
    assert {"?", "a", "7", "a 7"} <= set(vocab)  # unigrams and bigrams of one-character symbols
    save(model, tmp_path / "m")
    again = load(tmp_path / "m")
    np.testing.assert_allclose(again.scores(d.texts["test"]), model.scores(d.texts["test"]), rtol=0, atol=1e-12)
    assert again.settings["token_pattern"] == r"\S+"


def test_words_find_nothing_in_single_character_tokens(lookup):
    d = lookup
    with pytest.raises(SlimformerError, match="no words"):
        fit_tfidf_logreg(d.texts["train"], d.labels["train"], d.texts["validation"], d.labels["validation"], d.n_classes,
                         [1.0], seed=0)
