"""The classical reference: TF-IDF word n-grams + logistic regression (scikit-learn), fitted, saved, scored and timed.

Every report should say whether a Transformer is worth it on its data; a bag of n-grams with a
linear model is the standard answer to compare with (Wang & Manning 2012, "Baselines and
Bigrams"; Joulin et al. 2017, "Bag of Tricks for Efficient Text Classification"). The model:
`TfidfVectorizer` over word 1..`ngram_max`-grams with sublinear tf (1 + log tf), then an
L2-regularised `LogisticRegression` (lbfgs, multinomial for more than two classes) whose `C` is
the one of a small grid with the best validation accuracy (ties: the smaller C).

Saved as plain files, never pickled: `model.json` (settings, the vocabulary in column order, the
classes) and `weights.npz` (idf, coefficients, intercepts; read back with allow_pickle=False).
`load` rebuilds a predictor from them that gives the fitted model's predictions exactly.
Scores are log-probabilities (N, n_classes) in label-id order: the same argmax as sklearn's
`predict`, so they stand where a Transformer stage's logits stand (accuracy, agreement).

Latency is timed by `eval.bench.time_callable` on raw texts, vectorising included (what a
deployment runs), with BLAS threads limited to the protocol's (scipy's sparse products are
single-threaded anyway). This module is a leaf of `eval`: it knows nothing of pipelines.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.special import log_expit, log_softmax

from eval.bench import latency_record, time_callable
from eval.errors import SlimformerError
from eval.io import atomic_dir

MODEL_FILE = "model.json"  # settings, vocabulary (column order), classes
WEIGHTS_FILE = "weights.npz"  # idf (V,), coef (K', V), intercept (K',): K' = 1 for two classes
RUNTIME = "sklearn"  # the latency records' runtime
TOKEN_PATTERN = r"(?u)\b\w\w+\b"  # scikit-learn's default word pattern, written down so a saved model never drifts
# what the n-grams are made of: words (of two or more word characters, scikit-learn's default) or whitespace-separated
# symbols, for generated tasks whose tokens are single characters (lookup's keys and values, ListOps' digits and `]`)
TOKEN_PATTERNS = {"words": TOKEN_PATTERN, "symbols": r"\S+"}


@dataclass
class TfidfLogReg:
    """A fitted vectoriser and the linear model's arrays; `scores` and `predict` take raw texts."""

    vectorizer: object  # sklearn.feature_extraction.text.TfidfVectorizer, fitted
    coef: np.ndarray  # (K', V) float64; K' = 1 when there are two classes
    intercept: np.ndarray  # (K',)
    classes: np.ndarray  # (K,) label ids the model saw in training, ascending
    n_classes: int  # label ids are 0..n_classes-1 (a class missing from training scores -inf)
    settings: dict  # ngram_range, sublinear_tf, min_df, C, ...

    def scores(self, texts: list[str]) -> np.ndarray:
        """Log-probabilities (N, n_classes) float64, label-id order."""
        x = self.vectorizer.transform(texts)  # (N, V) sparse
        decision = np.asarray(x @ self.coef.T) + self.intercept  # (N, K')
        if len(self.classes) == 2:  # one logit: P(classes[1]) = sigmoid(decision)
            logp = np.concatenate([log_expit(-decision), log_expit(decision)], axis=1)  # (N, 2)
        else:
            logp = log_softmax(decision, axis=1)  # (N, K)
        out = np.full((len(texts), self.n_classes), -np.inf)
        out[:, self.classes] = logp
        return out

    def predict(self, texts: list[str]) -> np.ndarray:
        return self.scores(texts).argmax(axis=1)

    def counts(self) -> dict:
        """What `params` counts: nonzero coefficients + intercepts + one idf weight per vocabulary term."""
        vocab_size = self.coef.shape[1]
        nonzero = int(np.count_nonzero(self.coef))
        return {"params": nonzero + int(self.intercept.size) + vocab_size, "vocab_size": vocab_size, "nonzero_coef": nonzero}


def vectorizer(ngram_max: int, min_df: int, sublinear_tf: bool, vocabulary: dict | None = None,
               token_pattern: str = TOKEN_PATTERN):
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(ngram_range=(1, ngram_max), min_df=1 if vocabulary else min_df, sublinear_tf=sublinear_tf,
                           lowercase=True, token_pattern=token_pattern, vocabulary=vocabulary, dtype=np.float64)


def fit_tfidf_logreg(
    train_texts: list[str],
    train_labels: list[int],
    val_texts: list[str],
    val_labels: list[int],
    n_classes: int,
    C_grid: list[float],
    seed: int,
    ngram_max: int = 2,
    min_df: int = 1,
    sublinear_tf: bool = True,
    max_iter: int = 1000,
    threads: int = 1,
    tokens: str = "words",
) -> tuple[TfidfLogReg, dict[str, float]]:
    """Fit the vectoriser on the training texts and one logistic regression per C; keep the best on validation.

    Returns the model and the validation accuracy of every C tried (keys: the C as text)."""
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    if len(set(train_labels)) < 2:
        raise SlimformerError("the baseline needs at least two classes in the training split")
    vec = vectorizer(ngram_max, min_df, sublinear_tf, token_pattern=TOKEN_PATTERNS[tokens])
    try:
        x_train = vec.fit_transform(train_texts)  # (N, V) sparse
    except ValueError as e:  # "empty vocabulary": no text has a word of two letters, or min_df is too high
        raise SlimformerError(f"baseline: {e}; lower min_df, or the texts have no words for TF-IDF to count") from None
    x_val, y_val = vec.transform(val_texts), np.asarray(val_labels)
    tried, best = {}, None
    with threadpool_limits(limits=threads):
        for C in sorted(C_grid):
            model = LogisticRegression(C=C, max_iter=max_iter, random_state=seed).fit(x_train, train_labels)
            accuracy = float(np.mean(model.predict(x_val) == y_val))
            tried[f"{C:g}"] = accuracy
            if best is None or accuracy > best[0]:
                best = (accuracy, C, model)
    _, C, model = best
    settings = {"ngram_range": [1, ngram_max], "sublinear_tf": sublinear_tf, "min_df": min_df, "lowercase": True,
                "token_pattern": TOKEN_PATTERNS[tokens], "C": C, "max_iter": max_iter, "seed": seed}
    fitted = TfidfLogReg(vec, model.coef_.astype(np.float64), model.intercept_.astype(np.float64),
                         model.classes_.astype(np.int64), n_classes, settings)
    return fitted, tried


def save(model: TfidfLogReg, folder: Path) -> None:
    """Write `model.json` and `weights.npz` into `folder` atomically (no pickle anywhere)."""
    vocabulary = model.vectorizer.vocabulary_
    terms = [""] * len(vocabulary)
    for term, column in vocabulary.items():
        terms[column] = term
    meta = {"kind": "tfidf_logreg", **model.settings, "classes": model.classes.tolist(), "n_classes": model.n_classes,
            "vocabulary": terms}
    with atomic_dir(folder) as tmp:
        (tmp / MODEL_FILE).write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
        np.savez(tmp / WEIGHTS_FILE, idf=model.vectorizer.idf_, coef=model.coef, intercept=model.intercept)


def load(folder: Path) -> TfidfLogReg:
    """The model saved by `save`, from JSON and an .npz read with allow_pickle=False."""
    folder = Path(folder)
    if not (folder / MODEL_FILE).is_file() or not (folder / WEIGHTS_FILE).is_file():
        raise SlimformerError(f"{folder} holds no baseline model ({MODEL_FILE} + {WEIGHTS_FILE}); run the baseline step")
    meta = json.loads((folder / MODEL_FILE).read_text(encoding="utf-8"))
    with np.load(folder / WEIGHTS_FILE, allow_pickle=False) as arrays:
        idf, coef, intercept = arrays["idf"], arrays["coef"], arrays["intercept"]
    vocabulary = {term: column for column, term in enumerate(meta["vocabulary"])}
    vec = vectorizer(meta["ngram_range"][1], meta["min_df"], meta["sublinear_tf"], vocabulary, meta["token_pattern"])
    vec.idf_ = idf  # sets the fitted state: vocabulary + idf are all a TF-IDF transform needs
    settings = {k: v for k, v in meta.items() if k not in ("kind", "classes", "n_classes", "vocabulary")}
    return TfidfLogReg(vec, coef, intercept, np.asarray(meta["classes"], dtype=np.int64), meta["n_classes"], settings)


def size_bytes(folder: Path) -> int:
    """Bytes on disk of the saved model: model.json + weights.npz."""
    return sum((Path(folder) / name).stat().st_size for name in (MODEL_FILE, WEIGHTS_FILE))


def bench_texts(
    model: TfidfLogReg,
    texts: list[str],
    batch_sizes: list[int],
    seq_len: int,
    threads: int,
    warmup: int = 5,
    repeats: int = 30,
    seed: int = 0,
) -> list[dict]:
    """Latency records of `model.predict` on raw texts (vectorise + score + argmax), one per batch size.

    Batch b is the first b texts of a seeded permutation of `texts` (repeated when there are fewer):
    real texts at their own length, not random ids at `seq_len`. `seq_len` is recorded so the row sits
    at the report's headline setting; `input: "raw text"` in each record says what was timed.
    """
    from threadpoolctl import threadpool_limits

    if not texts:
        raise SlimformerError("the baseline's latency needs at least one text to time")
    order = np.random.default_rng(seed).permutation(len(texts))
    records = []
    with threadpool_limits(limits=threads):
        for batch in batch_sizes:
            sample = [texts[order[i % len(texts)]] for i in range(batch)]
            stats = time_callable(lambda sample=sample: model.predict(sample), warmup=warmup, repeats=repeats)
            record = latency_record("cpu", RUNTIME, "fp64", batch, seq_len, threads, stats)
            records.append({**record, "input": "raw text"})
    return records
