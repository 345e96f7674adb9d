"""Re-time every stage of a run round-robin, so ratios between stages survive a noisy machine.

Each `bench` step times its stage when the step runs. On a shared machine the load at that
moment differs from stage to stage, and a ratio of two p50s then measures the load as much as
the models. Here every stage's ONNX artifact gets a session, all are warmed up, and then each
timed round calls every stage once, in an order rotated round by round: a burst of load hits
all stages alike, and every stage's spread is the same population of moments. The records
replace each stage's ONNX Runtime CPU records in `results.json` and are marked `interleaved`.

Runs at the end of `slimformer run` (`bench.interleave: true`, the default) and on a finished
run with `slimformer bench runs/<name>`.
"""

import json
import time
from pathlib import Path

import numpy as np

from compress.errors import SlimformerError
from eval.bench import latency_record, latency_stats, make_inputs, ort_runner, ort_session

ONNX_FILE = "model.onnx"


def time_round_robin(runners: dict[str, callable], warmup: int, repeats: int) -> dict[str, dict]:
    """Latency statistics per name: `warmup` untimed calls each, then `repeats` rounds of one timed call each."""
    names = list(runners)
    for name in names:
        for _ in range(warmup):
            runners[name]()
    times = {name: [] for name in names}
    for r in range(repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:  # rotated: no stage always runs right after the same one
            start = time.perf_counter()
            runners[name]()
            times[name].append(time.perf_counter() - start)
    return {name: latency_stats(np.asarray(t) * 1000.0) for name, t in times.items()}


def interleaved_latency(
    models: dict[str, tuple[Path, str]],
    batch_sizes: list[int],
    seq_lens: list[int],
    threads: int,
    vocab_size: int,
    warmup: int = 5,
    repeats: int = 30,
) -> dict[str, list[dict]]:
    """ONNX Runtime CPU latency records for `models` (name -> (model.onnx, precision)), timed round-robin per cell."""
    sessions = {name: ort_session(path, threads) for name, (path, _) in models.items()}
    records: dict[str, list[dict]] = {name: [] for name in models}
    for batch in batch_sizes:
        for seq_len in seq_lens:
            feeds = make_inputs(batch, seq_len, vocab_size)
            runners = {name: ort_runner(session, feeds, "cpu") for name, session in sessions.items()}
            for name, stats in time_round_robin(runners, warmup, repeats).items():
                record = latency_record("cpu", "onnxruntime", models[name][1], batch, seq_len, threads, stats)
                records[name].append({**record, "interleaved": True})
    return records


def retime_stages(stages: dict[str, dict], run_dir: Path, protocol: dict, vocab_size: int) -> list[str]:
    """Replace the ONNX Runtime CPU latency of every benchmarked stage with interleaved timings.

    `stages` maps a stage name to its recorded fields (results.json's stage entries), `protocol`
    gives `batch_sizes`, `seq_lens`, `threads`, `warmup` and `repeats`. Stages without a `latency`
    record (never benchmarked) or without an ONNX artifact are left alone. Returns the stages re-timed.
    """
    models = {}
    for name, fields in stages.items():
        onnx_dir = fields.get("onnx_dir")
        if fields.get("latency") is not None and onnx_dir and (run_dir / onnx_dir / ONNX_FILE).is_file():
            models[name] = (run_dir / onnx_dir / ONNX_FILE, fields.get("precision", "fp32"))
    if len(models) < 2:  # one stage has nothing to be compared with
        return []
    keys = ("batch_sizes", "seq_lens", "threads", "warmup", "repeats")
    fresh = interleaved_latency(models, vocab_size=vocab_size, **{k: protocol[k] for k in keys})
    for name, records in fresh.items():
        kept = [r for r in stages[name]["latency"] if not (r["runtime"] == "onnxruntime" and r["device"] == "cpu")]
        stages[name]["latency"] = records + kept
    return list(models)


def retime_run(run_dir: Path, repeats: int | None = None) -> list[str]:
    """`slimformer bench runs/<name>`: re-time a finished run's stages round-robin and rewrite its results.json."""
    from compress.io import atomic_write_json

    path = Path(run_dir) / "results.json"
    if not path.is_file():
        raise SlimformerError(f"{path} not found: give a run folder that `slimformer run` finished")
    results = json.loads(path.read_text(encoding="utf-8"))
    protocol = dict(results["protocol"])
    if repeats is not None:
        protocol["repeats"] = repeats
    stages = {s["name"]: s for s in results["stages"]}
    vocab_size = next((json.loads((run_dir / s["onnx_dir"] / "config.json").read_text())["vocab_size"]
                       for s in stages.values() if s.get("onnx_dir") and (run_dir / s["onnx_dir"] / "config.json").is_file()), None)
    if vocab_size is None:
        raise SlimformerError(f"{run_dir}: no stage has an ONNX folder with a config.json; nothing to time")
    timed = retime_stages(stages, run_dir, protocol, vocab_size)
    results["protocol"]["repeats"] = protocol["repeats"]
    results["protocol"]["interleaved"] = bool(timed)
    atomic_write_json(path, results)
    return timed
