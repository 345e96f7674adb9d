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

Eager torch is timed in the same rounds when the caller gives a loader for a stage's torch
model (`torch_models`): a torch p50 taken during the stage's own `bench` step and an ONNX
Runtime p50 taken here, minutes apart, would compare two machine loads, not two runtimes. Torch
runs as in `eval.bench.bench_torch` (eval mode, `torch.inference_mode()`, `torch.set_num_threads`
= the protocol's threads). No session outlives its turn, so the spinning workers of the timed
session (`eval.bench.ORT_CONFIG`) never take cores from torch or from another stage.

The records replace each stage's ONNX Runtime CPU records (and, with a loader, its eager torch
CPU records) in `results.json` and are marked `interleaved`. Runs at the end of `slimformer run`
(`bench.interleave: true`, the default) and on a finished run with `slimformer bench runs/<name>`,
which also serves the run's real test texts again with every stage timed on them
(`eval/traffic.py`, in rounds of its own).
"""

import gc
import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from eval.bench import ONNX_FILE, latency_record, latency_stats, make_inputs, ort_runner, ort_session, timing_settings
from eval.errors import SlimformerError

ROUNDS = 5  # rounds the timed calls are spread over (fewer when repeats is smaller)

Cell = tuple[int, int]  # (batch, seq_len)
TORCH = "\ttorch"  # suffix of a stage's eager-torch entry in time_in_rounds (a tab: no stage name has one)


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
            runners = run = None  # the last references: the session (and its thread pool) closes before the next stage opens
            gc.collect(1)  # young generations only, in case a runner sits in a cycle; a full pass costs ~0.3 s in a big process
    return {name: {cell: latency_stats(np.asarray(t) * 1000.0) for cell, t in cells.items()} for name, cells in times.items()}


def torch_runner(model: torch.nn.Module, feed: dict[str, np.ndarray]) -> Callable[[], None]:
    """A no-argument eager forward pass of `model` (eval mode) on `feed`, made into tensors once."""
    tensors = {k: torch.from_numpy(v) for k, v in feed.items()}

    def run() -> None:
        with torch.inference_mode():
            model(**tensors)

    return run


def interleaved_latency(
    models: dict[str, tuple[Path, str]],
    batch_sizes: list[int],
    seq_lens: list[int],
    threads: int,
    vocab_size: int,
    warmup: int = 5,
    repeats: int = 30,
    torch_models: dict[str, Callable[[], torch.nn.Module]] | None = None,
) -> dict[str, list[dict]]:
    """CPU latency records for `models` (name -> (model.onnx, precision)) in ONNX Runtime, and in eager
    torch for the stages `torch_models` can load (name -> loader), all timed in the same rounds."""
    feeds = {(b, t): make_inputs(b, t, vocab_size) for b in batch_sizes for t in seq_lens}
    loaded = {name: load().eval() for name, load in (torch_models or {}).items()}

    def opener(path: Path) -> Callable[[], dict[Cell, Callable[[], None]]]:
        def open_() -> dict[Cell, Callable[[], None]]:
            session = ort_session(path, threads)
            return {cell: ort_runner(session, feed, "cpu") for cell, feed in feeds.items()}

        return open_

    def torch_opener(model: torch.nn.Module) -> Callable[[], dict[Cell, Callable[[], None]]]:
        return lambda: {cell: torch_runner(model, feed) for cell, feed in feeds.items()}

    entries = {name: opener(path) for name, (path, _) in models.items()}
    entries |= {name + TORCH: torch_opener(model) for name, model in loaded.items()}
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)  # the same cores for torch as ONNX Runtime's intra-op pool
    try:
        timed = time_in_rounds(entries, warmup, repeats)
    finally:
        torch.set_num_threads(previous)
    out: dict[str, list[dict]] = {}
    for entry, cells in timed.items():
        name, runtime = (entry.removesuffix(TORCH), "torch") if entry.endswith(TORCH) else (entry, "onnxruntime")
        precision = "fp32" if runtime == "torch" else models[name][1]
        out.setdefault(name, []).extend({**latency_record("cpu", runtime, precision, b, t, threads, stats), "interleaved": True}
                                        for (b, t), stats in cells.items())
    return out


def retime_stages(stages: dict[str, dict], run_dir: Path, protocol: dict, vocab_size: int,
                  torch_models: dict[str, Callable[[], torch.nn.Module]] | None = None) -> list[str]:
    """Replace the ONNX Runtime CPU latency of every benchmarked stage with interleaved timings.

    With `torch_models` (stage name -> loader of its eager model), those stages that have
    eager-torch CPU fp32 records are re-timed in torch in the same rounds, and those records replaced too.

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
    torched = [name for name in models if name in (torch_models or {}) and any(map(is_torch_cpu, stages[name]["latency"]))]
    if len(models) + len(torched) < 2:  # one artifact and no eager model: nothing to be compared with
        return []
    keys = ("batch_sizes", "seq_lens", "threads", "warmup", "repeats")
    fresh = interleaved_latency(models, vocab_size=vocab_size, torch_models={n: torch_models[n] for n in torched},
                                **{k: protocol[k] for k in keys})
    for name, records in fresh.items():
        kept = [r for r in stages[name]["latency"] if not (r["runtime"] == "onnxruntime" and r["device"] == "cpu")
                and not (name in torched and is_torch_cpu(r))]
        stages[name]["latency"] = records + kept
    return list(models)


def is_torch_cpu(record: dict) -> bool:
    return record["runtime"] == "torch" and record["device"] == "cpu" and record.get("precision", "fp32") == "fp32"


def retime_traffic(stages: dict[str, dict], run_dir: Path, protocol: dict) -> list[str]:
    """Serve the run's real test texts again (eval/traffic.py) with every stage that has `traffic` records, all in the
    same rounds, and replace those records. The texts are the run folder's `traffic_texts.jsonl`, the settings
    `protocol["traffic"]`; a run without them (made before the traffic timer, or `bench.traffic: false`) is left alone."""
    from eval.traffic import TEXTS_FILE, read_texts, time_traffic

    settings, path = protocol.get("traffic"), run_dir / TEXTS_FILE
    if not settings or not path.is_file():
        return []
    folders = {name: (run_dir / fields["onnx_dir"], fields.get("precision") or "fp32") for name, fields in stages.items()
               if fields.get("traffic") and fields.get("onnx_dir") and (run_dir / fields["onnx_dir"] / ONNX_FILE).is_file()}
    if not folders:
        return []
    fresh = time_traffic(folders, read_texts(path), settings["seq_len"], protocol["threads"],
                         batch_size=settings["batch_size"], warmup=protocol["warmup"])
    for name, records in fresh.items():
        stages[name]["traffic"] = records
    return list(fresh)


def onnx_vocab_size(config: Path) -> int:
    """An ONNX folder's vocabulary size, from its config.json; SlimformerError naming the file when it is broken."""
    try:
        vocab_size = json.loads(config.read_text(encoding="utf-8")).get("vocab_size")
    except (ValueError, AttributeError):
        vocab_size = None
    if not isinstance(vocab_size, int) or isinstance(vocab_size, bool) or vocab_size < 1:
        raise SlimformerError(f"{config} is broken (not JSON with an integer vocab_size); the stage's ONNX folder was edited "
                              "or cut short: re-run the recipe to export it again")
    return vocab_size


def retime_run(run_dir: Path, repeats: int | None = None,
               load_torch: Callable[[Path], torch.nn.Module] | None = None) -> dict[str, list[str]]:
    """`slimformer bench runs/<name>`: re-time a finished run's stages in interleaved rounds and rewrite its results.json.

    `load_torch(model folder)` loads a stage's saved torch model (`stages/<name>/model`), so eager
    torch is re-timed in the same rounds; without it only ONNX Runtime is. The stages timed on real
    texts (`traffic`) are served them again, in rounds of their own (`retime_traffic`). Returns the
    stages re-timed: `fixed` (fixed-shape latency) and `traffic`.
    """
    from eval.io import atomic_write_json
    from eval.results import load_results

    path = Path(run_dir) / "results.json"
    results = load_results(run_dir, bench=True)  # a broken file: one error naming it and the fix, before anything is timed
    protocol = dict(results["protocol"])
    if repeats is not None:
        protocol["repeats"] = repeats
    stages = {s["name"]: s for s in results["stages"]}
    # the smallest vocabulary: ids every stage can read (prune_vocab shrinks a stage's)
    vocab_size = min((onnx_vocab_size(run_dir / s["onnx_dir"] / "config.json")
                      for s in stages.values()
                      if s.get("onnx_dir") and (run_dir / s["onnx_dir"] / "config.json").is_file()), default=None)
    if vocab_size is None:
        raise SlimformerError(f"{run_dir}: no stage has an ONNX folder with a config.json; nothing to time")
    folders = {name: run_dir / "stages" / name / "model" for name in stages}
    loaders = {name: (lambda folder=folder: load_torch(folder)) for name, folder in folders.items()
               if load_torch is not None and folder.is_dir()}
    timed = retime_stages(stages, run_dir, protocol, vocab_size, loaders)
    served = retime_traffic(stages, run_dir, protocol)
    results["protocol"]["repeats"] = protocol["repeats"]
    results["protocol"]["timing"] = timing_settings(protocol["threads"])
    results["protocol"]["interleaved"] = bool(timed)
    atomic_write_json(path, results)
    return {"fixed": timed, "traffic": served}
