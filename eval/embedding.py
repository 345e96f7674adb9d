"""Measuring sentence embeddings: fidelity to the teacher, and retrieval, each with a 95% interval.

- Fidelity (how far a student's vectors can replace the teacher's in an index): the cosine between
  the student's and the teacher's embedding of each held-out text (mean, and the 5th percentile:
  the texts it gets most wrong), and the overlap of each text's 10 nearest neighbours under the
  student and under the teacher among the held-out texts (the share of the teacher's 10 found by
  the student; 1 when the two rank alike).
- Retrieval: each query's right document is one of the corpus; its rank is 1 + the number of
  documents scored above it or tied with it (ties count against it: a TF-IDF query that shares
  no word with its document scores it 0, like thousands of others, and is not found). Recall@k is
  the share of queries ranked within k; MRR the mean of 1 / rank (Voorhees 1999, the TREC-8
  question-answering track's measure).

Intervals: Wilson's for a recall (a proportion, eval/intervals.py); a bootstrap percentile
interval (Efron & Tibshirani 1993) for a mean (cosine, overlap, MRR); against the teacher, a paired
bootstrap over the same texts or queries: McNemar-style `paired_bootstrap` for recall, the mean
difference's bootstrap for MRR and overlap. Embeddings are computed on length-sorted batches
trimmed to their longest text (`embed_onnx`), what real traffic costs. numpy (and ONNX Runtime)
only: eval/ never imports compress/.
"""

from pathlib import Path

import numpy as np

from eval.intervals import paired_bootstrap, wilson_interval

BOOTSTRAP = 2000  # resamples of a mean's bootstrap
SEED = 0
CHUNK = 256  # query rows scored at once: (CHUNK, n_docs) float32 scores (116k glosses: 120 MB)


def embed_onnx(onnx_path: str | Path, input_ids: np.ndarray, attention_mask: np.ndarray, batch_size: int = 64,
               threads: int = 2) -> np.ndarray:
    """The artifact's first output (N, D) for every row, computed on batches of similar length trimmed to their longest."""
    from eval.bench import ort_session, output_name

    session = ort_session(onnx_path, threads, "CPUExecutionProvider")
    name = output_name(session)
    ids, mask = np.asarray(input_ids, dtype=np.int64), np.asarray(attention_mask, dtype=np.int64)
    lengths = mask.sum(axis=1)
    order = np.argsort(-lengths, kind="stable")
    out = None
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        width = max(int(lengths[rows].max()), 1)
        got = session.run([name], {"input_ids": ids[rows, :width], "attention_mask": mask[rows, :width]})[0]
        if out is None:
            out = np.empty((len(order), got.shape[-1]), dtype=np.float32)
        out[rows] = got
    return out if out is not None else np.zeros((0, 0), dtype=np.float32)


def unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def bootstrap_mean(values: np.ndarray, resamples: int = BOOTSTRAP, seed: int = SEED) -> tuple[float, float]:
    """95% percentile bootstrap interval of mean(values)."""
    values = np.asarray(values, dtype=np.float64)
    n = len(values)
    if n == 0:
        return 0.0, 0.0
    rng = np.random.default_rng(seed)
    means = np.concatenate([values[rng.integers(0, n, size=(min(100, resamples - done), n))].mean(axis=1)
                            for done in range(0, resamples, 100)])
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def mean_with_ci(values: np.ndarray) -> dict:
    return {"mean": float(np.mean(values)), "ci": list(bootstrap_mean(values))}


def paired_mean_delta(a: np.ndarray, b: np.ndarray, baseline: str) -> dict:
    """mean(a) - mean(b) over the same items, with the bootstrap interval of the mean difference."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    low, high = bootstrap_mean(d)
    return {"baseline": baseline, "delta": float(d.mean()), "ci": [low, high], "contains_zero": bool(low <= 0 <= high),
            "n": int(len(d)), "method": "paired bootstrap of the mean difference"}


def cosines(student: np.ndarray, teacher: np.ndarray) -> np.ndarray:
    """(N,) cosine between matching rows of two (N, D) arrays (the student's width must equal the teacher's)."""
    if student.shape != teacher.shape:
        raise ValueError(f"student embeddings {student.shape} and teacher embeddings {teacher.shape} differ in shape")
    return np.sum(unit_rows(student) * unit_rows(teacher), axis=1)


def neighbours(x: np.ndarray, k: int = 10) -> np.ndarray:
    """(N, k) indices of each row's k nearest other rows by cosine, nearest first."""
    x = unit_rows(x)
    k = min(k, len(x) - 1)
    out = np.empty((len(x), k), dtype=np.int64)
    for start in range(0, len(x), CHUNK):
        scores = x[start : start + CHUNK] @ x.T  # (c, N)
        scores[np.arange(len(scores)), np.arange(start, start + len(scores))] = -np.inf  # not itself
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
        out[start : start + len(scores)] = np.take_along_axis(top, order, axis=1)
    return out


def overlap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N,) share of row i's neighbours in `b` that are also among its neighbours in `a`."""
    return np.array([len(set(x) & set(y)) / max(len(y), 1) for x, y in zip(a.tolist(), b.tolist(), strict=True)])


def ranks(queries: np.ndarray, corpus: np.ndarray, answers: np.ndarray, similarity: str = "cosine") -> np.ndarray:
    """(N,) 1-based rank of each query's right document: 1 + documents scored above it or tied with it."""
    if similarity == "cosine":
        queries, corpus = unit_rows(queries), unit_rows(corpus)
    out = np.empty(queries.shape[0], dtype=np.int64)
    for start in range(0, queries.shape[0], CHUNK):
        scores = queries[start : start + CHUNK] @ corpus.T  # (c, n_docs); a sparse product for TF-IDF
        scores = scores.toarray() if hasattr(scores, "toarray") else scores
        right = scores[np.arange(len(scores)), answers[start : start + len(scores)]][:, None]  # (c, 1)
        out[start : start + len(scores)] = (scores >= right).sum(axis=1)  # itself counted once: the 1 of the rank
    return out


def retrieval_metrics(rank: np.ndarray, ks: tuple[int, ...] = (1, 10)) -> dict:
    """recall@k (Wilson interval) and MRR (bootstrap interval) from the right documents' ranks."""
    n = len(rank)
    out = {"n_queries": int(n)}
    for k in ks:
        hits = int(np.sum(rank <= k))
        out[f"recall@{k}"] = {"mean": hits / n if n else 0.0, "ci": list(wilson_interval(hits, n))}
    out["mrr"] = mean_with_ci(1.0 / rank)
    return out


def retrieval_deltas(rank: np.ndarray, base: np.ndarray, baseline: str, ks: tuple[int, ...] = (1, 10)) -> dict:
    """Each retrieval metric minus the baseline's on the same queries, with paired intervals."""
    out = {}
    for k in ks:
        a, b = rank <= k, base <= k
        low, high = paired_bootstrap(a, b)
        out[f"recall@{k}"] = {"baseline": baseline, "delta": float(a.mean() - b.mean()), "ci": [low, high],
                              "contains_zero": bool(low <= 0 <= high), "n": int(len(a)), "method": "paired bootstrap"}
    out["mrr"] = paired_mean_delta(1.0 / rank, 1.0 / base, baseline)
    return out


def tfidf_ranks(queries: list[str], corpus: list[str], answers: np.ndarray, ngram_max: int = 2, min_df: int = 1,
                sublinear_tf: bool = True) -> tuple[np.ndarray, dict]:
    """The classical reference: TF-IDF word n-grams (eval/baseline.py's vectorizer) fitted on the corpus, each query
    ranking the documents by cosine (Salton & Buckley 1988). Returns (ranks, what was fitted)."""
    from eval.baseline import vectorizer

    tfidf = vectorizer(ngram_max, min_df, sublinear_tf)
    docs = tfidf.fit_transform(corpus)  # rows L2-normalised: dot products are cosines
    found = ranks(tfidf.transform(queries), docs, answers, similarity="dot")
    return found, {"vocab_size": len(tfidf.vocabulary_), "ngram_max": ngram_max, "min_df": min_df, "sublinear_tf": sublinear_tf}


def fidelity(student: np.ndarray, teacher: np.ndarray, student_nbrs: np.ndarray | None = None,
             teacher_nbrs: np.ndarray | None = None) -> dict:
    """Cosine with the teacher (mean with interval, 5th percentile) and, given both neighbour lists, their overlap."""
    cos = np.clip(cosines(student, teacher), -1.0, 1.0)
    out = {"n": int(len(cos)), "cosine": mean_with_ci(cos), "cosine_p5": float(np.percentile(cos, 5))}
    if student_nbrs is not None and teacher_nbrs is not None:
        out["knn_overlap"] = {**mean_with_ci(overlap(student_nbrs, teacher_nbrs)), "k": int(teacher_nbrs.shape[1]),
                              "n": int(len(teacher_nbrs))}
    return out


__all__ = ["cosines", "embed_onnx", "fidelity", "neighbours", "overlap", "ranks", "retrieval_deltas", "retrieval_metrics",
           "tfidf_ranks"]
