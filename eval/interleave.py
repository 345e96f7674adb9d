"""Re-time every stage of a run in rounds, so ratios between stages survive a noisy machine.

Each `bench` step times its stage when the step runs. On a shared machine the load at that
moment differs from stage to stage, and a ratio of two p50s then measures the load as much as
the models. Here the timed calls of every stage are spread over the same stretch of time: in
each of `rounds` rounds, every stage (in an order rotated round by round) gets a fresh ONNX
Runtime session, its warm-up calls and its share of the timed calls, and the session is
closed before the next stage's opens. A burst of load thus hits all stages alike.

Why not one call per stage in turn: each session keeps its own thread pool whose threads spin
for a while after a call, and a model's weights leave the CPU caches while others run. Calls
alternating between sessions measured 2-3x slower than the same sessions timed alone (teacher
of recipes/flagship.yaml at batch 1: 48 ms against 8.6 ms), so they no longer measured what a
deployed model sees. One session at a time, warmed up, measures what the `bench` step measures.

The records replace each stage's ONNX Runtime CPU records in `results.json` and are marked
`interleaved`. Runs at the end of `slimformer run` (`bench.interleave: true`, the default) and
on a finished run with `slimformer bench runs/<name>`.
"""

import gc
import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from eval.bench import ONNX_FILE, latency_record, latency_stats, make_inputs, ort_runner, ort_session
from eval.errors import SlimformerError

ROUNDS = 5  # rounds the timed calls are spread over (fewer when repeats is smaller)

Cell = tuple[int, int]  # (batch, seq_len)


def time_in_rounds(open_stage: dict[str, Callable[[], dict[Cell, Callable[[], None]]]], warmup: int, repeats: int,
                   rounds: int = ROUNDS) -> dict[str, dict[Cell, dict]]:
    """Latency statistics per stage and cell, the timed calls spread over `rounds` rounds.

    `open_stage[name]()` opens the stage (a fresh session) and returns one no-argument runner
    per cell; it is called once per round and dropped after it. Each round, each stage runs
    `warmup` untimed then `ceil(repeats / rounds)` timed calls per cell.
    """
    names, rounds = list(open_stage), max(1, min(rounds, repeats))
    per_round = math.ceil(repeats / rounds)
    times: dict[str, dict[Cell, list[float]]] = {name: {} for name in names}
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:  # rotated: no stage always runs right after the same one
            runners = open_stage[name]()
            for cell, run in runners.items():
                for _ in range(warmup):
                    run()
                for _ in range(per_round):
                    start = time.perf_counter()
                    run()
                    times[name].setdefault(cell, []).append(time.perf_counter() - start)
            del runners
            gc.collect()  # close the session (and its thread pool) before the next stage opens
    return {name: {cell: latency_stats(np.asarray(t) * 1000.0) for cell, t in cells.items()} for name, cells in times.items()}


def interleaved_latency(
    models: dict[str, tuple[Path, str]],
    batch_sizes: list[int],
    seq_lens: list[int],
    threads: int,
    vocab_size: int,
    warmup: int = 5,
    repeats: int = 30,
) -> dict[str, list[dict]]:
    """ONNX Runtime CPU latency records for `models` (name -> (model.onnx, precision)), timed in rounds."""
    feeds = {(b, t): make_inputs(b, t, vocab_size) for b in batch_sizes for t in seq_lens}

    def opener(path: Path) -> Callable[[], dict[Cell, Callable[[], None]]]:
        def open_() -> dict[Cell, Callable[[], None]]:
            session = ort_session(path, threads)
            return {cell: ort_runner(session, feed, "cpu") for cell, feed in feeds.items()}

        return open_

    timed = time_in_rounds({name: opener(path) for name, (path, _) in models.items()}, warmup, repeats)
    return {name: [{**latency_record("cpu", "onnxruntime", models[name][1], b, t, threads, stats), "interleaved": True}
                   for (b, t), stats in cells.items()]
            for name, cells in timed.items()}


def retime_stages(stages: dict[str, dict], run_dir: Path, protocol: dict, vocab_size: int) -> list[str]:
    """Replace the ONNX Runtime CPU latency of every benchmarked stage with interleaved timings.

    `stages` maps a stage name to its recorded fields (results.json's stage entries), `protocol`
    gives `batch_sizes`, `seq_lens`, `threads`, `warmup` and `repeats`. Stages without a `latency`
    record (never benchmarked) or without an ONNX artifact, and reference rows (`reference: true`,
    the classical baseline, timed by its own step in its own runtime) are left alone. Returns the
    stages re-timed.
    """
    models = {}
    for name, fields in stages.items():
        if fields.get("reference"):
            continue
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
    """`slimformer bench runs/<name>`: re-time a finished run's stages in interleaved rounds and rewrite its results.json."""
    from eval.io import atomic_write_json

    path = Path(run_dir) / "results.json"
    if not path.is_file():
        raise SlimformerError(f"{path} not found: give a run folder that `slimformer run` finished")
    results = json.loads(path.read_text(encoding="utf-8"))
    protocol = dict(results["protocol"])
    if repeats is not None:
        protocol["repeats"] = repeats
    stages = {s["name"]: s for s in results["stages"]}
    # the smallest vocabulary: ids every stage can read (prune_vocab shrinks a stage's)
    vocab_size = min((json.loads((run_dir / s["onnx_dir"] / "config.json").read_text())["vocab_size"]
                      for s in stages.values() if s.get("onnx_dir") and (run_dir / s["onnx_dir"] / "config.json").is_file()), default=None)
    if vocab_size is None:
        raise SlimformerError(f"{run_dir}: no stage has an ONNX folder with a config.json; nothing to time")
    timed = retime_stages(stages, run_dir, protocol, vocab_size)
    results["protocol"]["repeats"] = protocol["repeats"]
    results["protocol"]["interleaved"] = bool(timed)
    atomic_write_json(path, results)
    return timed
