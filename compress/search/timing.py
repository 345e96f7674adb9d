"""Timing candidate shapes for the latency model (`latency.py`): random-weight models of each shape built with the
teacher's architecture, exported with the shipped path, quantized by the quantize step's own code and timed with the
bench's timer, in a process of its own (nothing trains beside it); every point cached per machine and protocol.

    python -m compress.search.timing --teacher-config runs/x/stages/teacher/model/config.json \
        --batch 8 --seq-len 64 --threads 2 --fit 16 --holdout 20 --out latency.json [--deadline-s 600]

draws shapes around the teacher's, measures them (cached ones reused), fits on every cached point
of the key except the held-back shapes, and writes the model and its held-back error as JSON.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from compress.search.latency import (
    FEATURES,
    GROUPS,
    MODES,
    LatencyModel,
    Point,
    Shape,
    arch_of,
    cache_key,
    cache_point,
    cached_points,
    holdout_error,
    quantize_globs,
    shape_of,
)

STUDENT_KINDS = ("boe", "gru", "lstm")
CALIBRATION = {"samples": 32, "batch_size": 16}  # ranges do not change the time: a few random batches



def build_random(shape: Shape, teacher_config, seed: int = 0):
    """An untrained SlimformerForSequenceClassification of `shape` with the teacher's architecture (full attention)."""
    import torch

    from compress.models import SlimformerConfig, SlimformerForSequenceClassification

    config = SlimformerConfig(**arch_of(teacher_config), vocab_size=shape.vocab_size, dim=shape.dim, n_layers=shape.n_layers,
                              n_heads=list(shape.n_heads), head_dim=shape.head_dim, ffn_dim=list(shape.ffn_dim),
                              attention="full", embed_dim=None, dropout=0.0)
    torch.manual_seed(seed)
    return SlimformerForSequenceClassification(config).eval()


class NoTokenizer:
    """Export writes the tokenizer beside the model; a timed random model has none."""

    def save_pretrained(self, folder):
        pass


def random_split(n: int, seq_len: int, vocab_size: int, seed: int) -> dict:
    """Random token ids and an all-ones mask, (n, seq_len) each: parity and calibration inputs."""
    import torch

    from eval.bench import FIRST_TOKEN_ID

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(FIRST_TOKEN_ID, vocab_size, (n, seq_len), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def export_random(model, folder: Path, seq_len: int, seed: int) -> dict:
    """`model` exported with the shipped path (fused, parity-gated) into `folder`; returns export_stage's report."""
    from compress.onnx.export import export_stage

    split = random_split(4, min(seq_len, model.config.max_len, 32), model.config.vocab_size, seed)
    split["attention_mask"][0, split["input_ids"].shape[1] // 2 :] = 0  # one padded row, as real parity inputs have
    return export_stage(model, NoTokenizer(), folder, (split["input_ids"], split["attention_mask"]), seq_len=seq_len)


def quantize_random(src: Path, dst: Path, mode: str, include: list[str], exclude: list[str], seq_len: int, vocab_size: int,
                    seed: int) -> None:
    """Quantize the exported `src` (model.onnx) into `dst` with the quantize step's own settings, through the registry."""
    import compress.steps  # noqa: F401  (registers every step: the search drives steps, it never imports one)
    from compress.onnx.quantize import QUANTIZERS, calibration_batches, quantize_onnx
    from compress.run.registry import STEPS

    extra = {"calibration": CALIBRATION} if QUANTIZERS[mode].calibrates else {}
    settings = STEPS["quantize"].config(mode=mode, include=include, exclude=exclude, **extra)
    calibration = None
    if QUANTIZERS[mode].calibrates:
        split = random_split(CALIBRATION["samples"], seq_len, vocab_size, seed)
        calibration = calibration_batches(split, settings.options.calibration, seed)
    quantize_onnx(src, dst, settings, calibration)


def time_graph(path: Path, batch: int, seq_len: int, vocab_size: int, threads: int, warmup: int, repeats: int) -> dict:
    """The bench step's timer on one graph: fixed (batch, seq_len) inputs bound once, `threads`, warm-up, repeats."""
    from eval.bench import make_inputs, ort_runner, ort_session, time_callable

    session = ort_session(path, threads)
    try:
        return time_callable(ort_runner(session, make_inputs(batch, seq_len, vocab_size), "cpu"), warmup=warmup, repeats=repeats)
    finally:
        del session  # never an idle session beside the next timed one (eval/bench.py)


def measure(shapes: list[Shape], teacher_config, batch: int, seq_len: int, threads: int, warmup: int = 5, repeats: int = 30,
            cache_dir: str | Path | None = None, deadline: float | None = None, seed: int = 0, log=None) -> list[Point]:
    """Time `shapes` (random weights) in ONNX Runtime; cached points are reused, new ones cached as they come.

    Each fp32 shape is exported once and its int8 variants quantized from that folder. `deadline`
    (a `time.monotonic()` instant): no new shape is started when the mean time per exported shape
    would pass it. Returns the points of `shapes` that exist (in order; fewer on a deadline).
    """
    from eval.bench import ONNX_FILE, file_size

    if seq_len > teacher_config.max_len:
        raise ValueError(f"seq_len {seq_len} exceeds the teacher's max_len {teacher_config.max_len}")
    log = log or (lambda text: None)
    key = cache_key(teacher_config, batch, seq_len, threads)
    done = {p.shape: p for p in cached_points(key, cache_dir) if p.shape is not None}
    bases: dict[Shape, list[Shape]] = {}
    for shape in dict.fromkeys(shapes):
        if shape not in done:
            bases.setdefault(shape.fp32(), []).append(shape)
    work, spent = Path(tempfile.mkdtemp(prefix="slimformer-latency-")), []
    try:
        for i, (base, variants) in enumerate(bases.items()):
            started = time.monotonic()
            if deadline is not None and started + (np.mean(spent) if spent else 0.0) > deadline:
                log(f"deadline: {len(bases) - i} shapes left unmeasured")
                break
            folder = work / f"shape{i}"
            report = export_random(build_random(base, teacher_config, seed), folder, seq_len, seed)
            for j, shape in enumerate(variants):
                path = folder / ONNX_FILE
                if shape.int8 is not None:
                    path = work / f"int8_{j}.onnx"
                    quantize_random(folder / ONNX_FILE, path, shape.int8, *quantize_globs(shape.int8_groups), seq_len,
                                    shape.vocab_size, seed)
                stats = time_graph(path, batch, seq_len, shape.vocab_size, threads, warmup, repeats)
                point = Point(shape, batch, seq_len, threads, stats["p50_ms"], stats["p90_ms"], file_size(path),
                              report["fusions"], load=os.getloadavg()[0])
                cache_point(key, point, cache_dir)
                done[shape] = point
                log(f"{shape.describe():<60} {point.ms:8.2f} ms")
                if shape.int8 is not None:
                    path.unlink()
            shutil.rmtree(folder)
            spent.append(time.monotonic() - started)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return [done[s] for s in shapes if s in done]


def measure_student(kind: str, dim: int, hidden_dim: int, n_layers: int, bidirectional: bool, teacher_config, batch: int,
                    seq_len: int, threads: int, int8: str | None = None, warmup: int = 5, repeats: int = 30,
                    cache_dir: str | Path | None = None, seed: int = 0) -> float:
    """p50 ms of a non-Transformer student (the distill step's `student.kind`: boe, gru, lstm; SlimRNNConfig), timed directly
    (int8: every Linear/Gather/recurrent op the mode can quantize, the classifier kept fp32), cached like the shapes."""
    import torch

    from compress.models import SlimRNNConfig, SlimRNNForSequenceClassification
    from eval.bench import ONNX_FILE, file_size

    if kind not in STUDENT_KINDS:
        raise ValueError(f"student kind must be one of {STUDENT_KINDS}, got {kind!r}")
    key = cache_key(teacher_config, batch, seq_len, threads)
    student = {"kind": kind, "dim": dim, "hidden_dim": hidden_dim, "n_layers": n_layers, "bidirectional": bool(bidirectional),
               "vocab_size": teacher_config.vocab_size, "int8": int8}
    for point in cached_points(key, cache_dir):
        if point.student == student:
            return point.ms
    config = SlimRNNConfig(vocab_size=teacher_config.vocab_size, max_len=teacher_config.max_len, cell=kind, dim=dim,
                           hidden_dim=hidden_dim, n_layers=n_layers, bidirectional=bidirectional,
                           num_labels=teacher_config.num_labels, dropout=0.0)
    torch.manual_seed(seed)
    work = Path(tempfile.mkdtemp(prefix="slimformer-latency-"))
    try:
        report = export_random(SlimRNNForSequenceClassification(config).eval(), work / "fp32", seq_len, seed)
        path = work / "fp32" / ONNX_FILE
        if int8 is not None:
            path = work / "int8.onnx"
            quantize_random(work / "fp32" / ONNX_FILE, path, int8, ["*"], [], seq_len, config.vocab_size, seed)
        stats = time_graph(path, batch, seq_len, config.vocab_size, threads, warmup, repeats)
        point = Point(None, batch, seq_len, threads, stats["p50_ms"], stats["p90_ms"], file_size(path), report["fusions"],
                      student, os.getloadavg()[0])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    cache_point(key, point, cache_dir)
    return point.ms


# --------------------------------------------------------------------------- shapes drawn around the teacher's


def draw_shape(teacher_config, rng: np.random.Generator) -> Shape:
    """A random candidate: depth 1..teacher's, dim a multiple of 8 in [teacher/4, teacher], heads 1..teacher's and
    FFN 1/8..1 of the teacher's per layer, vocabulary kept or cut to 1/8..1, fp32 or an int8 mode over random groups."""
    n_layers = int(rng.integers(1, teacher_config.n_layers + 1))
    low = max(8, -(-teacher_config.dim // 32) * 8)  # the first multiple of 8 at or above dim / 4
    dim = int(rng.choice(np.arange(low, max(low, teacher_config.dim // 8 * 8) + 1, 8)))
    heads = tuple(int(rng.integers(1, max(teacher_config.n_heads) + 1)) for _ in range(n_layers))
    ffn_top = max(teacher_config.ffn_dim)
    ffn = tuple(int(rng.integers(max(1, ffn_top // 8), ffn_top + 1)) for _ in range(n_layers))
    vocab = teacher_config.vocab_size
    if rng.random() < 0.5:  # a pruned vocabulary (prune_vocab)
        vocab = int(rng.integers(vocab // 8, vocab + 1))
    mode = [None, *MODES][int(rng.integers(0, 1 + len(MODES)))]
    groups = tuple(GROUPS)
    if mode is not None and rng.random() < 0.5:  # half quantize every group (the quantize step's default), half a subset
        groups = ()
        while not groups:
            groups = tuple(g for g in GROUPS if rng.random() < 0.5)
    return Shape(n_layers, dim, heads, teacher_config.head_dim, ffn, max(vocab, 8), mode, groups if mode else ())


def plan(teacher_config, n_fit: int, n_holdout: int, seed: int = 0) -> tuple[list[Shape], list[Shape]]:
    """(shapes to fit on, shapes held back), seeded: the fit set starts with the teacher's own shape, fp32 and every int8
    mode over every group (the search's anchors), then random draws; the held-back shapes are other random draws."""
    teacher = shape_of(teacher_config)
    fit = [teacher] + [replace(teacher, int8=mode, int8_groups=tuple(GROUPS)) for mode in MODES]
    fit, held = fit[: max(n_fit, 1)], []
    for shapes, n, rng in ((fit, n_fit, np.random.default_rng(seed)), (held, n_holdout, np.random.default_rng([seed, 1]))):
        for _ in range(1000 * n):  # distinct shapes; a tiny teacher may have fewer than asked for
            if len(shapes) >= n:
                break
            shape = draw_shape(teacher_config, rng)
            if shape not in fit and shape not in held:
                shapes.append(shape)
    return fit, held


def load_teacher_config(path: str | Path):
    from compress.models import SlimformerConfig

    path = Path(path)
    return SlimformerConfig.from_json_file(str(path / "config.json" if path.is_dir() else path))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher-config", required=True, help="the teacher's config.json (or its model folder)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--fit", type=int, default=16, help="shapes to fit on (cached points of the key are used too)")
    p.add_argument("--holdout", type=int, default=20, help="random shapes held back to measure the model's error")
    p.add_argument("--out", required=True, help="JSON file: the model, the held-back points and errors")
    p.add_argument("--deadline-s", type=float, default=None, help="stop starting new shapes this many seconds from now")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--cache-dir", default=None, help="default $SLIMFORMER_CACHE/latency or ~/.cache/slimformer/latency")
    argv = sys.argv[1:] if argv is None else argv
    args = p.parse_args(argv)
    started, load = time.monotonic(), os.getloadavg()[0]
    teacher = load_teacher_config(args.teacher_config)
    deadline = started + args.deadline_s if args.deadline_s is not None else None
    fit, draws = plan(teacher, args.fit, args.holdout, args.seed)
    key = cache_key(teacher, args.batch, args.seq_len, args.threads)
    before = len(cached_points(key, args.cache_dir))
    common = {"teacher_config": teacher, "batch": args.batch, "seq_len": args.seq_len, "threads": args.threads,
              "warmup": args.warmup, "repeats": args.repeats, "cache_dir": args.cache_dir, "deadline": deadline,
              "seed": args.seed, "log": lambda text: print(text, flush=True)}
    measure(fit, **common)
    held = measure(draws, **common)
    everything = cached_points(key, args.cache_dir)
    fit_points = [q for q in everything if q.shape is not None and q.shape not in set(draws)]
    out = {"key": key, "command": ["python", "-m", "compress.search.timing", *argv], "features": list(FEATURES),
           "measured": len(everything) - before,
           "fit_points": len(fit_points), "holdout_requested": args.holdout, "holdout_measured": len(held)}
    if not fit_points:
        out["error"] = "no shape was measured before the deadline: nothing to fit"
    else:
        model = LatencyModel.fit(fit_points, arch_of(teacher))
        out["model"], out["holdout"] = model.to_dict(), holdout_error(model, held)
    out["wall_s"] = time.monotonic() - started
    out["load"] = {"start": load, "end": os.getloadavg()[0], "cores": os.cpu_count()}  # 1-minute load averages
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print_summary(out)
    return 0 if fit_points else 1


def print_summary(out: dict) -> None:
    if "error" in out:
        print(out["error"])
        return
    held = out["holdout"]
    print(f"\n{'held-back shape':<60} {'measured':>9} {'predicted':>9} {'error':>7}")
    for row in held["points"]:
        print(f"{row['shape']:<60} {row['measured_ms']:>9.2f} {row['predicted_ms']:>9.2f} {row['error']:>+7.1%}")

    def pct(value):
        return "-" if value is None else f"{value:.1%}"

    print(f"fitted on {out['fit_points']} points (median fit error {pct(out['model']['fit_error'])}); held back "
          f"{out['holdout_measured']} of {out['holdout_requested']}: median |error| fp32 {pct(held['fp32'])}, "
          f"int8 {pct(held['int8'])} (dynamic {pct(held['dynamic'])}, static {pct(held['static'])}); {out['wall_s']:.0f} s, "
          f"1-min load {out['load']['start']:.1f} -> {out['load']['end']:.1f} on {out['load']['cores']} cores")


if __name__ == "__main__":
    sys.exit(main())
