"""Latency, throughput, memory, parameter and size measurements: one timer for every runtime.

Eager torch, ONNX Runtime fp32 and ONNX Runtime int8 are all timed by `time_callable`, so
their numbers differ only by what runs, never by how it is measured: warm-up calls first,
then `repeats` timed calls (CUDA synchronised before the clock is read), reported as
percentiles. Threads are fixed and recorded in every record. Inputs are the same random
token ids (seed 0) for both runtimes, with an all-ones attention mask, placed on the device
before timing (ONNX Runtime through IOBinding), so neither runtime is timed copying inputs or
tokenizing: the timed call is the forward pass alone.

Settings that decide a torch-vs-ONNX-Runtime ratio, fixed here and recorded in results.json's
protocol (`timing`, from `timing_settings`): ONNX Runtime with all graph optimisations, inter-op
1 thread, sequential, intra-op workers that spin between the ops of a call (as torch's OpenMP
workers do by default), and never an idle session beside the timed one: every timer here and
in `eval.interleave` opens one session, times it and closes it before the next runtime runs.
Spinning in *idle* sessions is what distorts: an independent timing with idle sessions alive
had the int8/fp32 ratio at 1.74x where it was 2.2-2.4x without them (issue 16). In the timed
session it is what a deployed model gets: on the quickstart teacher (length 48, 2 threads, in
interleaved rounds) it cut ONNX Runtime's p50 from 0.80 to 0.55 ms at batch 1 and 3.60 to 3.47
ms at batch 8, and changed nothing at the MatMul-bound batch 32. Eager torch runs in eval mode
under `torch.inference_mode()` (no autograd bookkeeping), with `torch.set_num_threads` equal to
ONNX Runtime's intra-op threads.

Peak memory is measured in a fresh process (`python -m eval.memprobe`), because a process's
peak resident set size only ever grows and would otherwise include everything run before.
"""

import copy
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch

from eval.errors import SlimformerError

ONNX_FILE = "model.onnx"  # the artifact's file in each stage's onnx/ folder
INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAME = "logits"
EMBEDDING_OUTPUT = "sentence_embedding"  # a sentence-embedding model's one output (B, embedding_dim), in its place
FIRST_TOKEN_ID = 5  # ids below are reserved for special tokens (pad, unk, cls, sep, mask)
REPO_ROOT = Path(__file__).resolve().parents[1]


def output_name(session) -> str:
    """The artifact's output: `logits` for a classifier, `sentence_embedding` for an embedding model (the first)."""
    return session.get_outputs()[0].name

# Which device an execution provider runs on; the name is also the IOBinding device type.
# Providers not listed (OpenVINO, CoreML, ...) take their inputs from host memory: "cpu".
PROVIDER_DEVICE = {
    "CPUExecutionProvider": "cpu",
    "CUDAExecutionProvider": "cuda",
    "TensorrtExecutionProvider": "cuda",
}
TORCH_PRECISION = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
# session config entries of every timed ONNX Runtime session: intra-op workers spin between ops (the
# session is the only one alive while it is timed); the inter-op pool, unused when sequential, sleeps
ORT_CONFIG = {"session.intra_op.allow_spinning": "1", "session.inter_op.allow_spinning": "0"}


def timing_settings(threads: int) -> dict:
    """What every timed call runs under, for results.json's protocol (`timing`) and the report."""
    return {
        "onnxruntime": {"intra_op_num_threads": threads, "inter_op_num_threads": 1, "execution_mode": "sequential",
                        "graph_optimization_level": "ORT_ENABLE_ALL", **ORT_CONFIG,
                        "inputs": "IOBinding: inputs bound once before timing, output left on the device"},
        "torch": {"threads": threads, "grad": "torch.inference_mode()", "mode": "eval",
                  "inputs": "tensors made once before timing"},
        "timed_call": "one forward pass on ready token ids (no tokenization, no input copies)",
    }


def time_callable(
    fn: Callable[[], Any],
    warmup: int = 5,
    repeats: int = 30,
    sync: Callable[[], None] | None = None,
    min_time_s: float | None = None,
) -> dict:
    """Time `fn()` and return `p50_ms, p90_ms, p99_ms, mean_ms, std_ms, min_ms, n`.

    `fn` is called `warmup` times untimed, then at least `repeats` times timed; with
    `min_time_s`, timing goes on until the timed calls also add up to that many seconds.
    `sync` (e.g. `torch.cuda.synchronize`) is called before each clock read, so
    asynchronous work is counted in the call that launched it.
    """
    if repeats < 1 or warmup < 0:
        raise SlimformerError(f"time_callable needs repeats >= 1 and warmup >= 0, got {repeats=}, {warmup=}")
    sync = sync or (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times_s: list[float] = []
    while len(times_s) < repeats or (min_time_s is not None and sum(times_s) < min_time_s):
        start = time.perf_counter()
        fn()
        sync()
        times_s.append(time.perf_counter() - start)
    return latency_stats(np.asarray(times_s) * 1000.0)


def latency_stats(times_ms: np.ndarray) -> dict:
    """Summary statistics of per-call times in milliseconds."""
    p50, p90, p99 = np.percentile(times_ms, [50, 90, 99])
    return {
        "p50_ms": float(p50),
        "p90_ms": float(p90),
        "p99_ms": float(p99),
        "mean_ms": float(times_ms.mean()),
        "std_ms": float(times_ms.std(ddof=1)) if len(times_ms) > 1 else 0.0,
        "min_ms": float(times_ms.min()),
        "n": int(len(times_ms)),
    }


def make_inputs(batch: int, seq_len: int, vocab_size: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random int64 token ids in [5, vocab_size) and an all-ones attention mask, both (B, T)."""
    if vocab_size <= FIRST_TOKEN_ID:
        raise SlimformerError(f"vocab_size must be > {FIRST_TOKEN_ID} to draw benchmark tokens, got {vocab_size}")
    rng = np.random.default_rng(seed)
    input_ids = rng.integers(FIRST_TOKEN_ID, vocab_size, size=(batch, seq_len), dtype=np.int64)
    return {"input_ids": input_ids, "attention_mask": np.ones((batch, seq_len), dtype=np.int64)}


def ort_session(onnx_path: str | Path, threads: int, provider: str = "CPUExecutionProvider") -> ort.InferenceSession:
    """An ONNX Runtime session with fixed threads: intra-op `threads` (spinning), inter-op 1, sequential, all optimisations."""
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise SlimformerError(f"ONNX model {onnx_path} not found: export the stage first")
    available = ort.get_available_providers()
    if provider not in available:
        raise SlimformerError(f"ONNX Runtime provider {provider!r} is not available here; available: {available}")
    providers = list(dict.fromkeys([provider, "CPUExecutionProvider"]))  # CPU runs the ops others lack
    return ort.InferenceSession(str(onnx_path), sess_options=session_options(threads), providers=providers)


def session_options(threads: int) -> ort.SessionOptions:
    """What every timed session runs under: intra-op `threads` (spinning), inter-op 1, sequential, all optimisations."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only
    for key, value in ORT_CONFIG.items():
        options.add_session_config_entry(key, value)
    return options


def ort_runner(session: ort.InferenceSession, feeds: dict[str, np.ndarray], device: str) -> Callable[[], None]:
    """A no-argument call running `session` on inputs already placed on `device` (IOBinding).

    Inputs are copied to the device once, outside the timed call, as torch inputs are, so
    both runtimes are timed on compute alone; the output stays on the device.
    """
    binding = session.io_binding()
    for name, array in feeds.items():
        binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(array, device, 0))
    binding.bind_output(output_name(session), device)

    def run() -> None:
        session.run_with_iobinding(binding)  # returns once the device is done (ORT synchronises providers)

    return run


def bench_onnx(
    onnx_path: str | Path,
    batch_sizes: list[int],
    seq_lens: list[int],
    threads: int,
    vocab_size: int,
    warmup: int = 5,
    repeats: int = 30,
    provider: str = "CPUExecutionProvider",
    precision: str = "fp32",
) -> list[dict]:
    """Latency records of an ONNX model in ONNX Runtime, one per (batch, seq_len).

    `precision` is recorded as given ("fp32", "fp16", "int8"): the caller knows the artifact.
    """
    session = ort_session(onnx_path, threads, provider)
    device = PROVIDER_DEVICE.get(provider, "cpu")
    records = []
    for batch in batch_sizes:
        for seq_len in seq_lens:
            run = ort_runner(session, make_inputs(batch, seq_len, vocab_size), device)
            stats = time_callable(run, warmup=warmup, repeats=repeats)
            records.append(latency_record(device, "onnxruntime", precision, batch, seq_len, threads, stats))
    return records


def bench_torch(
    model: torch.nn.Module,
    batch_sizes: list[int],
    seq_lens: list[int],
    threads: int,
    vocab_size: int,
    warmup: int = 5,
    repeats: int = 30,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    precision: str | None = None,
) -> list[dict]:
    """Latency records of an eager torch model, one per (batch, seq_len).

    The model is called as `model(input_ids=..., attention_mask=...)` under
    `torch.inference_mode()` with `torch.set_num_threads(threads)` (restored afterwards).
    A model not already on `device` in `dtype` is copied there; the caller's model keeps its
    device, dtype and train/eval mode. `precision` defaults to the name of `dtype` ("fp32", "fp16", "bf16").
    """
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SlimformerError(f"device {device!r} asked for but CUDA is not available; use device='cpu'")
    model = placed(model, torch.device(device), dtype)
    sync = torch.cuda.synchronize if device.startswith("cuda") else None
    precision = precision or TORCH_PRECISION.get(dtype, str(dtype).removeprefix("torch."))
    previous_threads, was_training = torch.get_num_threads(), model.training
    torch.set_num_threads(threads)
    model.eval()
    records = []
    try:
        for batch in batch_sizes:
            for seq_len in seq_lens:
                feeds = {k: torch.from_numpy(v).to(device) for k, v in make_inputs(batch, seq_len, vocab_size).items()}
                with torch.inference_mode():
                    stats = time_callable(lambda feeds=feeds: model(**feeds), warmup=warmup, repeats=repeats, sync=sync)
                device_kind = torch.device(device).type
                records.append(latency_record(device_kind, "torch", precision, batch, seq_len, threads, stats))
    finally:
        torch.set_num_threads(previous_threads)
        model.train(was_training)
    return records


def placed(model: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """`model` itself if its floating-point weights are already on `device` in `dtype`, else a moved copy."""
    floats = [p for p in model.parameters() if p.is_floating_point()]
    if all(p.device.type == device.type and p.dtype == dtype for p in floats):
        return model
    return copy.deepcopy(model).to(device=device, dtype=dtype)


def latency_record(
    device: str, runtime: str, precision: str, batch: int, seq_len: int, threads: int, stats: dict
) -> dict:
    """One row of `results.json` `latency`: the setting, the statistics and throughput at p50."""
    return {
        "device": device,
        "runtime": runtime,
        "precision": precision,
        "batch": batch,
        "seq_len": seq_len,
        "threads": threads,
        **{k: stats[k] for k in ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "min_ms", "n")},
        "throughput_per_s": batch * 1000.0 / stats["p50_ms"],
    }


def peak_memory(
    onnx_path: str | Path,
    batch: int,
    seq_len: int,
    threads: int,
    provider: str = "CPUExecutionProvider",
    timeout_s: float = 600.0,
) -> dict:
    """Peak resident memory of loading `onnx_path` in ONNX Runtime and running one batch, in a fresh process.

    Returns `device, runtime, batch, seq_len, threads, peak_rss_bytes, baseline_rss_bytes`
    (after importing onnxruntime, before loading the model) and `model_rss_bytes`
    (their difference: what the model and one batch add). Host memory only: with a GPU
    provider, device memory is not counted. On Linux the peak is `VmHWM` (see eval.memprobe).
    """
    onnx_path = Path(onnx_path).resolve()
    if not onnx_path.is_file():
        raise SlimformerError(f"ONNX model {onnx_path} not found: export the stage first")
    command = [sys.executable, "-m", "eval.memprobe", str(onnx_path), "--batch", str(batch),
               "--seq-len", str(seq_len), "--threads", str(threads), "--provider", provider]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT, env=env, timeout=timeout_s)
    if done.returncode != 0:
        raise RuntimeError(f"memory probe of {onnx_path} failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    probe = json.loads(done.stdout.strip().splitlines()[-1])
    device = PROVIDER_DEVICE.get(provider, "cpu")
    return {"device": device, "runtime": "onnxruntime", "batch": batch, "seq_len": seq_len, "threads": threads, **probe}


def count_params(model: torch.nn.Module) -> int:
    """Number of parameters (shared tensors counted once)."""
    return sum(p.numel() for p in model.parameters())


def file_size(path: str | Path) -> int:
    """Bytes on disk of an ONNX model: `model.onnx` plus its external data files.

    `path` is the .onnx file or the folder holding `model.onnx`. External data is every
    file the graph's initializers point to, and `<name>.onnx.data` beside it if present.
    """
    path = Path(path)
    path = path / "model.onnx" if path.is_dir() else path
    if not path.is_file():
        raise SlimformerError(f"ONNX model {path} not found: export the stage first")
    proto = onnx.load(str(path), load_external_data=False)
    locations = {
        entry.value
        for tensor in proto.graph.initializer
        for entry in tensor.external_data
        if entry.key == "location"
    }
    files = {path, path.with_name(path.name + ".data")} | {path.parent / loc for loc in locations}
    return sum(f.stat().st_size for f in files if f.is_file())
