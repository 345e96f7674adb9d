"""Retrieval and fidelity measures (eval/embedding.py) on a hand-made five-document corpus, where every rank is known."""

import numpy as np
import pytest

from eval.embedding import fidelity, neighbours, ranks, retrieval_deltas, retrieval_metrics, tfidf_ranks

# five documents on the axes of a 5-d space (document i is e_i); four queries, each nearest a known document
CORPUS = np.eye(5, dtype=np.float32)
QUERIES = np.array([
    [1.0, 0.1, 0.0, 0.0, 0.0],   # right answer 0, ranked 1st
    [0.9, 0.5, 0.0, 0.0, 0.0],   # right answer 1, ranked 2nd (document 0 scores higher)
    [0.3, 0.2, 0.1, 0.0, 0.0],   # right answer 2, ranked 3rd
    [0.0, 0.0, 0.0, 0.5, 0.5],   # right answer 4, tied with document 3: the tie counts against it, rank 2
], dtype=np.float32)
ANSWERS = np.array([0, 1, 2, 4])


def test_ranks_recall_and_mrr_on_five_documents():
    rank = ranks(QUERIES, CORPUS, ANSWERS)
    assert rank.tolist() == [1, 2, 3, 2]
    metrics = retrieval_metrics(rank, ks=(1, 2))
    assert metrics["n_queries"] == 4
    assert metrics["recall@1"]["mean"] == 0.25 and metrics["recall@2"]["mean"] == 0.75
    assert metrics["mrr"]["mean"] == pytest.approx((1 + 1 / 2 + 1 / 3 + 1 / 2) / 4)
    low, high = metrics["recall@2"]["ci"]
    assert low < 0.75 < high  # Wilson's interval around 3 of 4


def test_paired_deltas_against_a_perfect_ranking():
    deltas = retrieval_deltas(np.array([1, 2, 3, 2]), np.array([1, 1, 1, 1]), "teacher", ks=(1,))
    assert deltas["recall@1"]["delta"] == -0.75 and deltas["recall@1"]["baseline"] == "teacher"
    assert deltas["mrr"]["delta"] == pytest.approx((1 + 1 / 2 + 1 / 3 + 1 / 2) / 4 - 1)
    assert deltas["mrr"]["ci"][1] <= 0


def test_tfidf_ranks_the_document_sharing_the_rare_word_first():
    corpus = ["a large dog that barks", "a small cat", "a feline that purrs", "a tall tree", "a body of water"]
    rank, fitted = tfidf_ranks(["dog", "tree", "lake"], corpus, np.array([0, 3, 4]))
    assert rank.tolist()[:2] == [1, 1]
    assert rank[2] == 5  # shares no word with its document: scored 0 like every other, not found
    assert fitted["vocab_size"] > 10


def test_fidelity_of_a_copy_and_of_a_perturbed_copy():
    rng = np.random.default_rng(0)
    teacher = rng.normal(size=(12, 6)).astype(np.float32)
    same = fidelity(teacher, teacher, neighbours(teacher, 3), neighbours(teacher, 3))
    assert same["cosine"]["mean"] == pytest.approx(1.0) and same["knn_overlap"]["mean"] == 1.0
    noisy = teacher + rng.normal(scale=0.5, size=teacher.shape).astype(np.float32)
    moved = fidelity(noisy, teacher, neighbours(noisy, 3), neighbours(teacher, 3))
    assert 0 < moved["cosine"]["mean"] < 1 and moved["cosine_p5"] <= moved["cosine"]["mean"]
    assert moved["cosine"]["ci"][0] <= moved["cosine"]["mean"] <= moved["cosine"]["ci"][1]
    assert 0 <= moved["knn_overlap"]["mean"] < 1
