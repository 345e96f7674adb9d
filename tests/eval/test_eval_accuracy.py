"""eval.accuracy: ONNX Runtime and torch predictions agree; metrics match hand-computed values."""

from pathlib import Path

import numpy as np
import pytest
import torch

from eval import classification_metrics, predict_onnx, predict_torch


def test_predict_onnx_matches_torch(tiny_model: torch.nn.Module, tiny_onnx: Path, vocab_size: int):
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(5, vocab_size, (37, 12), generator=generator)
    mask = torch.ones_like(ids)
    mask[::3, 7:] = 0  # padded rows: both runtimes see the same padding columns
    ort_logits = predict_onnx(tiny_onnx, ids.numpy(), mask, batch_size=8, threads=1)  # numpy and tensor inputs
    torch_logits = predict_torch(tiny_model, ids, mask.numpy(), batch_size=5)
    assert ort_logits.shape == torch_logits.shape == (37, 3)
    assert ort_logits.dtype == torch_logits.dtype == np.float32
    np.testing.assert_allclose(ort_logits, torch_logits, atol=1e-5, rtol=0)


def test_predict_torch_restores_training_mode(tiny_model: torch.nn.Module):
    tiny_model.train()
    try:
        predict_torch(tiny_model, np.full((2, 4), 5), np.ones((2, 4)))
        assert tiny_model.training
    finally:
        tiny_model.eval()


def test_predict_torch_reads_logits_attribute_and_key():
    class Wrapped(torch.nn.Module):
        def __init__(self, as_dict: bool):
            super().__init__()
            self.linear, self.as_dict = torch.nn.Linear(4, 2), as_dict

        def forward(self, input_ids, attention_mask):
            logits = self.linear(input_ids.float())
            return {"logits": logits} if self.as_dict else type("Out", (), {"logits": logits})()

    ids = np.arange(12).reshape(3, 4)
    as_dict, as_attribute = Wrapped(True), Wrapped(False)
    as_attribute.load_state_dict(as_dict.state_dict())
    expected = as_dict.linear(torch.from_numpy(ids).float()).detach().numpy()
    np.testing.assert_allclose(predict_torch(as_dict, ids, ids), expected, rtol=1e-6)
    np.testing.assert_allclose(predict_torch(as_attribute, ids, ids), expected, rtol=1e-6)


def test_classification_metrics_hand_computed():
    labels = np.array([0, 0, 1, 1, 2, 2])
    predictions = np.array([0, 1, 1, 1, 2, 0])
    logits = np.eye(3)[predictions]
    # class 0: tp 1, fp 1, fn 1 -> F1 1/2; class 1: tp 2, fp 1, fn 0 -> 4/5; class 2: tp 1, fp 0, fn 1 -> 2/3
    reference = np.eye(3)[np.array([0, 1, 1, 1, 2, 2])]
    metrics = classification_metrics(logits, torch.tensor(labels), reference_logits=reference)
    assert metrics["accuracy"] == pytest.approx(4 / 6)
    assert metrics["macro_f1"] == pytest.approx((1 / 2 + 4 / 5 + 2 / 3) / 3)
    assert metrics["n"] == 6
    assert metrics["agreement"] == pytest.approx(5 / 6)


def test_classification_metrics_class_only_predicted_counts_and_no_reference():
    metrics = classification_metrics(np.eye(3)[[0, 2]], np.array([0, 0]))
    # class 0: tp 1, fn 1 -> 2/3; class 2 (predicted, never true): F1 0 -> macro 1/3
    assert metrics["macro_f1"] == pytest.approx(1 / 3)
    assert metrics["agreement"] is None


def test_classification_metrics_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="logits"):
        classification_metrics(np.zeros((3, 2)), np.zeros(4))
