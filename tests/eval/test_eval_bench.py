"""eval.bench: the timer's statistics, ONNX Runtime and torch runners, memory probe, sizes."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnx.numpy_helper
import onnxruntime as ort
import pytest
import torch

from compress.errors import SlimformerError
from eval import bench_onnx, bench_torch, count_params, file_size, make_inputs, ort_session, peak_memory, time_callable
from eval.bench import timing_settings

RECORD_KEYS = {"device", "runtime", "precision", "batch", "seq_len", "threads", "p50_ms", "p90_ms", "p99_ms",
               "mean_ms", "std_ms", "throughput_per_s"}


def test_time_callable_measures_known_durations(monkeypatch):
    """A fake clock: call i "takes" (i + 1) ms, so every statistic is known exactly (no wall clock)."""
    clock = [0.0]
    durations = iter([0.001 * (i + 1) for i in range(11)])

    def call():
        clock[0] += next(durations)

    monkeypatch.setattr("eval.bench.time.perf_counter", lambda: clock[0])
    stats = time_callable(call, warmup=1, repeats=10)  # the warm-up call took 1 ms; timed calls 2..11 ms
    assert stats["n"] == 10
    assert stats["min_ms"] == pytest.approx(2.0) and stats["p50_ms"] == pytest.approx(6.5)
    assert stats["min_ms"] <= stats["p50_ms"] <= stats["p90_ms"] <= stats["p99_ms"] <= 11.0 + 1e-9
    assert stats["mean_ms"] == pytest.approx(6.5) and stats["std_ms"] > 0


def test_time_callable_counts_calls_and_syncs_before_each_clock_read():
    calls, syncs = [], []
    time_callable(lambda: calls.append(1), warmup=3, repeats=7, sync=lambda: syncs.append(len(calls)))
    assert len(calls) == 10
    assert syncs == [3, 4, 5, 6, 7, 8, 9, 10]  # after warm-up, then after every timed call


def test_time_callable_min_time_extends_repeats(monkeypatch):
    ticks = iter(range(10**6))
    monkeypatch.setattr("eval.bench.time.perf_counter", lambda: next(ticks) * 0.01)  # every call "takes" 10 ms
    stats = time_callable(lambda: None, warmup=0, repeats=2, min_time_s=0.05)
    assert stats["n"] == 5 and stats["p50_ms"] == pytest.approx(10.0)


def test_time_callable_rejects_zero_repeats():
    with pytest.raises(SlimformerError, match="repeats"):
        time_callable(lambda: None, repeats=0)


def test_make_inputs_are_seeded_int64_in_range(vocab_size: int):
    a, b = make_inputs(4, 16, vocab_size), make_inputs(4, 16, vocab_size)
    np.testing.assert_array_equal(a["input_ids"], b["input_ids"])
    assert a["input_ids"].dtype == np.int64 and a["attention_mask"].dtype == np.int64
    assert a["input_ids"].min() >= 5 and a["input_ids"].max() < vocab_size
    assert (a["attention_mask"] == 1).all()


def test_ort_session_fixes_threads(tiny_onnx: Path):
    session = ort_session(tiny_onnx, threads=1)
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask"]
    assert session.get_session_options().intra_op_num_threads == 1
    assert session.get_session_options().inter_op_num_threads == 1


def test_ort_session_names_missing_file_and_unknown_provider(tiny_onnx: Path, tmp_path: Path):
    with pytest.raises(SlimformerError, match="nope.onnx"):
        ort_session(tmp_path / "nope.onnx", threads=1)
    with pytest.raises(SlimformerError, match="NoSuchExecutionProvider"):
        ort_session(tiny_onnx, threads=1, provider="NoSuchExecutionProvider")


def test_bench_onnx_records_every_setting(tiny_onnx: Path, vocab_size: int):
    records = bench_onnx(tiny_onnx, [1, 4], [8, 16], threads=1, vocab_size=vocab_size, warmup=1, repeats=5,
                         precision="int8")
    assert [(r["batch"], r["seq_len"]) for r in records] == [(1, 8), (1, 16), (4, 8), (4, 16)]
    for r in records:
        assert RECORD_KEYS <= set(r)
        assert (r["device"], r["runtime"], r["precision"], r["threads"]) == ("cpu", "onnxruntime", "int8", 1)
        assert r["p50_ms"] > 0 and r["throughput_per_s"] == pytest.approx(r["batch"] * 1000 / r["p50_ms"])


def test_bench_torch_records_and_restores_threads(tiny_model: torch.nn.Module, vocab_size: int):
    before = torch.get_num_threads()
    records = bench_torch(tiny_model, [2], [8], threads=1, vocab_size=vocab_size, warmup=1, repeats=5)
    assert torch.get_num_threads() == before
    (r,) = records
    assert RECORD_KEYS <= set(r)
    assert (r["device"], r["runtime"], r["precision"], r["batch"], r["seq_len"]) == ("cpu", "torch", "fp32", 2, 8)


def test_bench_torch_other_dtype_leaves_model_unchanged(tiny_model: torch.nn.Module, vocab_size: int):
    (r,) = bench_torch(tiny_model, [1], [4], threads=1, vocab_size=vocab_size, warmup=0, repeats=2,
                       dtype=torch.bfloat16)
    assert r["precision"] == "bf16"
    assert tiny_model.head.weight.dtype == torch.float32


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_bench_torch_cuda(tiny_model: torch.nn.Module, vocab_size: int):
    (r,) = bench_torch(tiny_model, [2], [8], threads=1, vocab_size=vocab_size, warmup=1, repeats=3,
                       device="cuda", dtype=torch.float16)
    assert (r["device"], r["precision"]) == ("cuda", "fp16")


@pytest.mark.cuda
@pytest.mark.skipif("CUDAExecutionProvider" not in ort.get_available_providers(), reason="needs ORT CUDA")
def test_bench_onnx_cuda(tiny_onnx: Path, vocab_size: int):
    (r,) = bench_onnx(tiny_onnx, [2], [8], threads=1, vocab_size=vocab_size, warmup=1, repeats=3,
                      provider="CUDAExecutionProvider")
    assert r["device"] == "cuda"


def test_peak_memory_in_fresh_process(tiny_onnx: Path):
    memory = peak_memory(tiny_onnx, batch=2, seq_len=8, threads=1)
    assert memory["peak_rss_bytes"] > 0 and memory["baseline_rss_bytes"] > 0
    assert memory["model_rss_bytes"] == memory["peak_rss_bytes"] - memory["baseline_rss_bytes"] >= 0
    assert (memory["device"], memory["runtime"], memory["batch"], memory["seq_len"]) == ("cpu", "onnxruntime", 2, 8)


def embedding_onnx(path: Path, vocab_size: int, dim: int) -> Path:
    """An ONNX model that is mostly one (vocab_size, dim) float32 weight: logits = mean of embeddings."""
    weight = onnx.numpy_helper.from_array(np.ones((vocab_size, dim), dtype=np.float32), "weight")
    nodes = [onnx.helper.make_node("Gather", ["weight", "input_ids"], ["embedded"]),
             onnx.helper.make_node("ReduceMean", ["embedded"], ["logits"], axes=[1], keepdims=0)]
    inputs = [onnx.helper.make_tensor_value_info(name, onnx.TensorProto.INT64, ["batch", "seq_len"])
              for name in ("input_ids", "attention_mask")]
    outputs = [onnx.helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["batch", dim])]
    graph = onnx.helper.make_graph(nodes, "embedding", inputs, outputs, initializer=[weight])
    # onnx 1.23 writes IR version 14 by default, which onnxruntime 1.31 refuses
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)], ir_version=10), path)
    return path


def test_peak_memory_counts_the_model_not_the_parent(tmp_path: Path):
    path = embedding_onnx(tmp_path / "model.onnx", vocab_size=16384, dim=256)  # 16 MiB of weights
    ballast = np.ones(300 * 2**20 // 8)  # the parent's peak RSS is now over 300 MiB
    memory = peak_memory(path, batch=2, seq_len=8, threads=1)
    assert memory["model_rss_bytes"] >= 16 * 2**20  # the weights are resident at least once
    assert memory["baseline_rss_bytes"] < ballast.nbytes  # ru_maxrss would have inherited the parent's peak


def test_memprobe_does_not_import_torch(tiny_onnx: Path):
    code = ("import sys; from eval import memprobe; "
            f"memprobe.probe({str(tiny_onnx)!r}, 1, 4, 1, 'CPUExecutionProvider'); assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])


def test_count_params(tiny_model: torch.nn.Module, vocab_size: int):
    assert count_params(tiny_model) == vocab_size * 16 + 16 * 3 + 3  # embedding + head weight + head bias


def test_file_size_single_file_and_folder(tiny_onnx: Path):
    assert file_size(tiny_onnx) == tiny_onnx.stat().st_size
    assert file_size(tiny_onnx.parent) == tiny_onnx.stat().st_size  # a folder means its model.onnx


def test_file_size_counts_external_data(tmp_path: Path, vocab_size: int):
    """The dynamo exporter's default layout: weights in `model.onnx.data` beside `model.onnx`."""
    path = embedding_onnx(tmp_path / "inline.onnx", vocab_size=vocab_size, dim=64)
    external = tmp_path / "model.onnx"
    onnx.save(onnx.load(str(path)), str(external), save_as_external_data=True, location="model.onnx.data",
              size_threshold=0)
    data = tmp_path / "model.onnx.data"
    assert data.stat().st_size >= vocab_size * 64 * 4
    assert file_size(external) == external.stat().st_size + data.stat().st_size
    (record,) = bench_onnx(external, [2], [5], threads=1, vocab_size=vocab_size, warmup=0, repeats=2)
    assert record["p50_ms"] > 0


def test_timed_sessions_spin_only_within_a_call_and_the_protocol_says_so(tiny_onnx):
    """Intra-op workers spin between ops (one session alive at a time); the settings are what results.json records."""
    options = ort_session(tiny_onnx, threads=2).get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "1"
    assert options.get_session_config_entry("session.inter_op.allow_spinning") == "0"
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert options.intra_op_num_threads == 2 and options.inter_op_num_threads == 1
    settings = timing_settings(2)
    assert settings["onnxruntime"] | {"session.intra_op.allow_spinning": "1", "session.inter_op.allow_spinning": "0",
                                      "graph_optimization_level": "ORT_ENABLE_ALL",
                                      "intra_op_num_threads": 2} == settings["onnxruntime"]
    assert settings["torch"]["threads"] == 2 and settings["torch"]["grad"] == "torch.inference_mode()"
    assert "no tokenization" in settings["timed_call"]
