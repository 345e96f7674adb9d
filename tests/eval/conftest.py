"""Fixtures for the eval tests: a tiny classifier, its ONNX export, and hand-made results.json folders.

Test modules use these only as fixtures, never `from conftest import`, which breaks when
several test folders have a conftest.py or pytest runs with --import-mode=importlib.
"""

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

VOCAB_SIZE = 50
N_CLASSES = 3


class TinyClassifier(torch.nn.Module):
    """Embedding -> masked mean pool -> linear: the smallest model with the slimformer call signature."""

    def __init__(self, vocab_size: int = VOCAB_SIZE, dim: int = 16, n_classes: int = N_CLASSES):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab_size, dim)
        self.head = torch.nn.Linear(dim, n_classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        x = self.embed(input_ids)  # (B, T, dim)
        mask = attention_mask.unsqueeze(-1).to(x.dtype)  # (B, T, 1)
        pooled = (x * mask).sum(1) / mask.sum(1).clamp(min=1.0)  # (B, dim)
        return self.head(pooled)  # (B, C)


def export_onnx(model: torch.nn.Module, path: Path) -> Path:
    """Export with dynamic batch and seq_len axes, inputs `input_ids`/`attention_mask`, output `logits`.

    The TorchScript exporter (`dynamo=False`, deprecated in torch 2.13) takes well under a
    second; the torch.export-based one (`dynamo=True`, `dynamic_shapes=` with
    `torch.export.Dim`s) works as well but costs ~10 s on first use, and compress/steps/export.py
    and tests/test_export.py already cover it.
    """
    ids = torch.randint(5, VOCAB_SIZE, (2, 8))  # sizes > 1, so neither looks like a constant to the tracer
    axes = {"input_ids": {0: "batch", 1: "seq_len"}, "attention_mask": {0: "batch", 1: "seq_len"}, "logits": {0: "batch"}}
    torch.onnx.export(model, (ids, torch.ones_like(ids)), str(path), dynamo=False, dynamic_axes=axes,
                      input_names=["input_ids", "attention_mask"], output_names=["logits"])
    return path


@pytest.fixture(scope="session")
def vocab_size() -> int:
    return VOCAB_SIZE


@pytest.fixture(scope="session")
def tiny_model() -> TinyClassifier:
    torch.manual_seed(0)
    return TinyClassifier().eval()


@pytest.fixture(scope="session")
def tiny_onnx(tiny_model: TinyClassifier, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_onnx(tiny_model, tmp_path_factory.mktemp("onnx") / "model.onnx")


def latency(batch: int, p50: float, std: float = 0.1, seq_len: int = 64, runtime: str = "onnxruntime") -> dict:
    return {"device": "cpu", "runtime": runtime, "precision": "fp32", "batch": batch, "seq_len": seq_len, "threads": 2,
            "p50_ms": p50, "p90_ms": p50 * 1.1, "p99_ms": p50 * 1.3, "mean_ms": p50, "std_ms": std,
            "min_ms": p50 * 0.9, "n": 30, "throughput_per_s": batch * 1000 / p50}


def results_fixture(run: str = "quickstart") -> dict:
    """A results.json with a trained teacher and a smaller distilled student."""
    protocol = {"task": "wordnet", "task_description": "hypernym <b>classes</b>", "split": "test", "n_test": 2000,
                "seq_len": 64, "batch_sizes": [1, 8], "seq_lens": [64], "threads": 2, "warmup": 5, "repeats": 30,
                "devices": ["cpu"], "cpu": "Intel(R) Xeon(R) Processor",
                "versions": {"torch": "2.13.0", "onnxruntime": "1.31.1", "transformers": "5.23.0"}}
    teacher = {"name": "teacher", "kind": "train", "parent": None, "accuracy": 0.71, "accuracy_torch": 0.7105,
               "macro_f1": 0.6, "agreement": 1.0, "params": 1234567, "onnx_bytes": 4939212,
               "onnx_dir": "stages/teacher/onnx", "precision": "fp32",
               "latency": [latency(1, 2.0), latency(8, 10.0), latency(8, 30.0, runtime="torch")],
               "peak_memory": [{"device": "cpu", "runtime": "onnxruntime", "batch": 8, "seq_len": 64,
                                "peak_rss_bytes": 120_000_000, "model_rss_bytes": 20_000_000}],
               "parity": {"max_abs_diff": 1.2e-6, "atol": 1e-4, "n": 64},
               "train_curve": [{"epoch": 1, "step": 100, "train_loss": 1.2, "val_accuracy": 0.5},
                               {"epoch": 2, "step": 200, "train_loss": 0.8, "val_accuracy": 0.65}]}
    student = {"name": "student", "kind": "distill", "parent": "teacher", "accuracy": 0.6925, "accuracy_torch": None,
               "accuracy_delta": {"baseline": "teacher", "delta": -0.0175, "ci": [-0.03, -0.005], "contains_zero": False,
                                  "mcnemar_p": 0.004, "n": 2000, "method": "paired bootstrap"},
               "macro_f1": 0.58, "agreement": 0.9, "params": 300000, "onnx_bytes": 1200000,
               "latency": [latency(1, 0.5), latency(8, 2.5, std=1.0)]}
    return {"schema_version": 1, "run": run, "command": f"slimformer run {run}", "protocol": protocol,
            "baseline": "teacher", "stages": [teacher, student]}


@pytest.fixture
def make_run(tmp_path: Path) -> Callable[..., Path]:
    """Write `runs/<run>/results.json` under tmp_path and return the run folder."""

    def make(run: str = "quickstart", results: dict | None = None) -> Path:
        run_dir = tmp_path / "runs" / run
        run_dir.mkdir(parents=True)
        (run_dir / "results.json").write_text(json.dumps(results or results_fixture(run)))
        return run_dir

    return make


@pytest.fixture
def make_results() -> Callable[..., dict]:
    """The results.json builder, for tests that edit it before writing."""
    return results_fixture


@pytest.fixture
def make_latency() -> Callable[..., dict]:
    """The latency record builder: make_latency(batch, p50, std=0.1, seq_len=64, runtime="onnxruntime")."""
    return latency


@pytest.fixture
def fast_figures(monkeypatch: pytest.MonkeyPatch) -> None:
    """Skip rasterising figures (the slow part) in tests about tables; figures are still built."""
    from eval import plots

    monkeypatch.setattr(plots, "figure_png", lambda fig: b"\x89PNG stub")
