"""Accuracy, macro-F1 and agreement, measured the same way for torch and ONNX Runtime.

Both predictors run the inputs exactly as given, in fixed-size batches, with no trimming
of padding columns, so an ONNX artifact and its torch source see identical tensors and
their logits can be compared element by element. Metrics are plain numpy.
"""

from pathlib import Path

import numpy as np
import torch

from eval.bench import ort_session, output_name

ArrayLike = np.ndarray | torch.Tensor


def as_int64(x: ArrayLike) -> np.ndarray:
    """A (N, T) int64 numpy array from a numpy array or a tensor on any device."""
    array = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    return array.astype(np.int64, copy=False)


def batch_slices(n: int, batch_size: int) -> list[slice]:
    """Consecutive slices covering range(n), each at most `batch_size` long."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return [slice(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]


def predict_onnx(
    onnx_path: str | Path,
    input_ids: ArrayLike,
    attention_mask: ArrayLike,
    batch_size: int = 64,
    threads: int = 2,
    provider: str = "CPUExecutionProvider",
) -> np.ndarray:
    """Logits (N, C) float32 of an ONNX model with inputs `input_ids`, `attention_mask` and output `logits` (or, for an
    embedding model, its sentence embeddings (N, D): `sentence_embedding`)."""
    session = ort_session(onnx_path, threads, provider)
    ids, mask = as_int64(input_ids), as_int64(attention_mask)
    outputs = [
        session.run([output_name(session)], {"input_ids": ids[s], "attention_mask": mask[s]})[0]
        for s in batch_slices(len(ids), batch_size)
    ]
    return np.concatenate(outputs).astype(np.float32, copy=False)


def logits_of(output: object) -> torch.Tensor:
    """The logits tensor of a model output: the tensor itself, `.logits`, or `["logits"]`."""
    if isinstance(output, torch.Tensor):
        return output
    return output["logits"] if isinstance(output, dict) else output.logits


def predict_torch(
    model: torch.nn.Module,
    input_ids: ArrayLike,
    attention_mask: ArrayLike,
    batch_size: int = 64,
) -> np.ndarray:
    """Logits (N, C) float32 of `model(input_ids=..., attention_mask=...)` in eval mode, on the model's device."""
    device = next(model.parameters()).device
    ids = torch.from_numpy(as_int64(input_ids))
    mask = torch.from_numpy(as_int64(attention_mask))
    was_training = model.training
    model.eval()
    outputs = []
    try:
        with torch.inference_mode():
            for s in batch_slices(len(ids), batch_size):
                output = model(input_ids=ids[s].to(device), attention_mask=mask[s].to(device))
                outputs.append(logits_of(output).float().cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(outputs)


def macro_f1(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Unweighted mean of per-class F1 over the classes present in labels or predictions."""
    classes = np.union1d(labels, predictions)
    scores = []
    for c in classes:
        tp = np.sum((predictions == c) & (labels == c))
        fp = np.sum((predictions == c) & (labels != c))
        fn = np.sum((predictions != c) & (labels == c))
        scores.append(2 * tp / (2 * tp + fp + fn))  # > 0: c occurs in labels or predictions
    return float(np.mean(scores))


def classification_metrics(
    logits: np.ndarray,
    labels: ArrayLike,
    reference_logits: np.ndarray | None = None,
) -> dict:
    """`accuracy`, `macro_f1`, `n` and `agreement` (argmax agreement with `reference_logits`, else None)."""
    logits = np.asarray(logits)
    labels = as_int64(labels).reshape(-1)
    if logits.ndim != 2 or len(logits) != len(labels):
        raise ValueError(f"logits must be (N, C) with N = len(labels) = {len(labels)}, got {logits.shape}")
    if len(labels) == 0:
        raise ValueError("no examples to score: labels is empty")
    predictions = logits.argmax(axis=1)
    agreement = None
    if reference_logits is not None:
        agreement = float(np.mean(predictions == np.asarray(reference_logits).argmax(axis=1)))
    return {
        "accuracy": float(np.mean(predictions == labels)),
        "macro_f1": macro_f1(predictions, labels),
        "n": int(len(labels)),
        "agreement": agreement,
    }
