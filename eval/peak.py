"""The machine's measured MatMul peak in ONNX Runtime: the denominator of the roofline column.

Square (size x size) @ (size x size) products, timed in ONNX Runtime on CPU at the run's
thread count with `eval.bench.time_callable` (the timer every stage goes through):
  - fp32: a `MatMul` node, the op an fp32 artifact's Linears and attention products run as;
  - int8: a `MatMulInteger` node, uint8 activations x int8 weights with zero points (the
    product dynamic quantization emits; ONNX Runtime fuses it with the quantize step into
    `DynamicQuantizeMatMul`; static QDQ graphs reach MLAS's int8 GEMM as well).
The weight is a constant initializer and the activation a graph input, as in an artifact.
Rate = 2 size^3 / p50 (FLOP/s, integer operations for int8), the p50 because stages are
quoted at their p50 too, so the fraction of peak compares like with like. The peak is the best
rate over a few sizes: which size a CPU's caches favour varies (on our shared 2-core VM, 256
and 384 ran 1.5-3x faster than 512 and 1024, whose operands spill out of L2), and a roofline's
ceiling is the best the kernel reaches, not one arbitrary shape.
"""

import json
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from eval.bench import session_options, time_callable
from eval.errors import SlimformerError

PRECISIONS = ("fp32", "int8")
SIZES = (256, 384, 512)  # M = N = K tried; the best rate is the peak (34-270 MFLOP a call: well under a second in all)


def matmul_graph(precision: str, size: int, seed: int = 0) -> tuple[bytes, dict[str, np.ndarray]]:
    """A serialized one-node ONNX model computing (size, size) @ (size, size), and its input."""
    rng = np.random.default_rng(seed)
    if precision == "fp32":
        weight = numpy_helper.from_array(rng.standard_normal((size, size), dtype=np.float32), "w")
        node = helper.make_node("MatMul", ["a", "w"], ["y"])
        inputs = [helper.make_tensor_value_info("a", TensorProto.FLOAT, [size, size])]
        output = helper.make_tensor_value_info("y", TensorProto.FLOAT, [size, size])
        initializers = [weight]
        feed = {"a": rng.standard_normal((size, size), dtype=np.float32)}
    elif precision == "int8":
        weight = numpy_helper.from_array(rng.integers(-127, 128, (size, size), dtype=np.int8), "w")
        a_zero = numpy_helper.from_array(np.array(128, dtype=np.uint8), "a_zero")
        w_zero = numpy_helper.from_array(np.array(0, dtype=np.int8), "w_zero")
        node = helper.make_node("MatMulInteger", ["a", "w", "a_zero", "w_zero"], ["y"])
        inputs = [helper.make_tensor_value_info("a", TensorProto.UINT8, [size, size])]
        output = helper.make_tensor_value_info("y", TensorProto.INT32, [size, size])
        initializers = [weight, a_zero, w_zero]
        feed = {"a": rng.integers(0, 256, (size, size), dtype=np.uint8)}
    else:
        raise SlimformerError(f"no MatMul peak for precision {precision!r}; measured precisions: {PRECISIONS}")
    graph = helper.make_graph([node], f"matmul_{precision}", inputs, [output], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9  # readable by every ONNX Runtime we support
    onnx.checker.check_model(model)
    return model.SerializeToString(), feed


def measure_peak(precision: str, threads: int, sizes: tuple[int, ...] = SIZES, warmup: int = 3, repeats: int = 10) -> dict:
    """`{precision, flops_per_s, size, threads, p50_ms, op, rates}`: the best MatMul rate over `sizes`."""
    rates = [matmul_rate(precision, threads, size, warmup, repeats) for size in sizes]
    best = max(rates, key=lambda r: r["flops_per_s"])
    return {**best, "rates": {str(r["size"]): r["flops_per_s"] for r in rates}}


def matmul_rate(precision: str, threads: int, size: int, warmup: int = 3, repeats: int = 10) -> dict:
    """The rate of one square product: `{precision, flops_per_s, size, threads, p50_ms, op}`."""
    if size < 1 or threads < 1:
        raise SlimformerError(f"measure_peak needs size >= 1 and threads >= 1, got {size=}, {threads=}")
    model, feed = matmul_graph(precision, size)
    # the bench's own settings (no spinning included), so the ceiling is measured as the stages are
    session = ort.InferenceSession(model, sess_options=session_options(threads), providers=["CPUExecutionProvider"])
    stats = time_callable(lambda: session.run(None, feed), warmup=warmup, repeats=repeats)
    return {
        "precision": precision,
        "op": "MatMul" if precision == "fp32" else "MatMulInteger",
        "flops_per_s": 2.0 * size**3 / (stats["p50_ms"] / 1000.0),
        "size": size,
        "threads": threads,
        "p50_ms": stats["p50_ms"],
    }


def measure_peaks(threads: int, sizes: tuple[int, ...] = SIZES, repeats: int = 10) -> dict:
    """`{"fp32": {...}, "int8": {...}, "measured_at": unix time}`: protocol.peak of results.json."""
    peaks = {p: measure_peak(p, threads, sizes=sizes, repeats=repeats) for p in PRECISIONS}
    return {**peaks, "measured_at": round(time.time())}


def record_peak(run_dir: Path) -> dict:
    """`slimformer bench runs/<name>`: measure the peak at the run's threads into results.json `protocol.peak`,
    and give each benchmarked stage without `flops` its count over the bench grid, from its ONNX folder's
    config.json (a run made before the roofline column). Returns the peak."""
    from eval.flops import flops_grid
    from eval.io import atomic_write_json

    path = Path(run_dir) / "results.json"
    results = json.loads(path.read_text(encoding="utf-8"))
    protocol = results.setdefault("protocol", {}) or {}
    peak = measure_peaks(int(protocol.get("threads") or 1))
    protocol["peak"] = peak
    grid = protocol.get("batch_sizes") or [], protocol.get("seq_lens") or [protocol.get("seq_len")]
    for stage in results.get("stages", []):
        config = Path(run_dir) / str(stage.get("onnx_dir")) / "config.json"
        if stage.get("latency") and not stage.get("flops") and stage.get("onnx_dir") and config.is_file():
            stage["flops"] = flops_grid(json.loads(config.read_text(encoding="utf-8")), *grid)
    results["protocol"] = protocol
    atomic_write_json(path, results)
    return peak
