"""The latency model of this machine: what a candidate shape costs in ONNX Runtime, predicted before it is trained.

`slimformer compress` (issue 27) must not train a candidate that misses a latency budget, so it
needs each candidate's latency before training it. Weights do not change the time of a dense
graph, so random-weight models of candidate shapes are exported with the shipped path (the fused
graph users get, `compress.onnx.export.export_stage`), quantized by the quantize step's own code
(its config from the step registry, `compress.onnx.quantize.quantize_onnx`) and timed by the
bench's timer (`eval.bench`: fixed batch x length inputs, fixed threads, warm-up then repeats,
p50). Points are cached per machine and protocol (CPU model, threads, ONNX Runtime and torch
versions, batch, length, the teacher's architecture): a cached point is never measured again.

The model is a roofline-style sum of interpretable costs (Williams et al. 2009, "Roofline"; the
per-op form of nn-Meter, Zhang et al. 2021, and of HAT's latency predictor, Wang et al. 2020):
time = c . features, each feature a count that grows with width, depth and length (GEMM
multiply-adds split by precision mode, attention's T^2 work, elementwise traffic, per-op
overheads), coefficients non-negative (`scipy.optimize.nnls`) and fitted on relative error,
the metric the search reads. Non-negative costs on non-decreasing counts make the prediction grow
with width, depth and length by construction. `size_bytes` is exact bookkeeping instead: 4 bytes
per fp32 parameter, 1 per int8 weight plus its per-channel scale and zero point.

    python -m compress.search.latency --teacher-config runs/x/stages/teacher/model/config.json \
        --batch 8 --seq-len 64 --threads 2 --fit 16 --holdout 20 --out latency.json [--deadline-s 600]

draws shapes around the teacher's, measures them (cached ones reused), fits on every cached point
of the key except the held-back shapes, and writes the model and its held-back error as JSON.
"""

import argparse
import hashlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

# module-name globs for the quantize step's `include`. The packed Attention of a layer is one node of
# module `layers.i.attn` (compress/onnx/fuse_graph.py); it is quantized (dynamic: QAttention) only when
# `layers.i.attn` itself is selected, so attn_in names the module and `quantize_globs` excludes out_proj
GROUPS = {
    "attn_in": ("layers.*.attn",),
    "attn_out": ("layers.*.attn.out_proj",),
    "ffn_up": ("layers.*.mlp.up_proj",),
    "ffn_down": ("layers.*.mlp.down_proj",),
    "embeddings": ("embeddings*",),
}
MODES = ("dynamic", "static")
ARCH_FIELDS = ("norm", "activation", "pooling", "max_len", "num_labels", "head_activation", "classifier_dim")
STUDENT_KINDS = ("boe", "gru", "lstm")
CALIBRATION = {"samples": 32, "batch_size": 16}  # ranges do not change the time: a few random batches


@dataclass(frozen=True)
class Shape:
    """A candidate Transformer's shape after all cuts; `int8` None (fp32), "dynamic" or "static"."""

    n_layers: int
    dim: int
    n_heads: tuple[int, ...]  # per layer (after head pruning)
    head_dim: int
    ffn_dim: tuple[int, ...]  # per layer (after FFN pruning)
    vocab_size: int
    int8: str | None = None
    int8_groups: tuple[str, ...] = ()  # keys of GROUPS quantized when int8 is set

    def __post_init__(self):
        if len(self.n_heads) != self.n_layers or len(self.ffn_dim) != self.n_layers:
            raise ValueError(f"n_heads and ffn_dim need one entry per layer ({self.n_layers}): {self.n_heads}, {self.ffn_dim}")
        if self.int8 not in (None, *MODES):
            raise ValueError(f"int8 must be None or one of {MODES}, got {self.int8!r}")
        unknown = set(self.int8_groups) - set(GROUPS)
        if unknown or (self.int8 is None) != (not self.int8_groups):
            raise ValueError(f"int8_groups must be a non-empty subset of {sorted(GROUPS)} when int8 is set, and empty "
                             f"otherwise; got int8={self.int8!r}, int8_groups={self.int8_groups}")

    def fp32(self) -> "Shape":
        return replace(self, int8=None, int8_groups=())

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "Shape":
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    def describe(self) -> str:
        mode = f" {self.int8}[{','.join(self.int8_groups)}]" if self.int8 else " fp32"
        return f"L{self.n_layers} d{self.dim} h{list(self.n_heads)}x{self.head_dim} f{list(self.ffn_dim)}{mode}"


def shape_of(config, int8: str | None = None, int8_groups: tuple[str, ...] = ()) -> Shape:
    """The Shape of a SlimformerConfig (per-layer `n_heads` and `ffn_dim` lists)."""
    return Shape(config.n_layers, config.dim, tuple(config.n_heads), config.head_dim, tuple(config.ffn_dim),
                 config.vocab_size, int8, tuple(int8_groups))


def arch_of(teacher_config) -> dict:
    """The teacher's architecture a random model copies, and the cache key holds."""
    if getattr(teacher_config, "model_type", None) != "slimformer":
        raise ValueError(f"the latency model times Slimformer shapes; got a {getattr(teacher_config, 'model_type', None)!r} "
                         "config (import the teacher first: compress/models/import_hf.py)")
    return {k: getattr(teacher_config, k) for k in ARCH_FIELDS}


def build_random(shape: Shape, teacher_config, seed: int = 0):
    """An untrained SlimformerForSequenceClassification of `shape` with the teacher's architecture (full attention)."""
    import torch

    from compress.models import SlimformerConfig, SlimformerForSequenceClassification

    config = SlimformerConfig(**arch_of(teacher_config), vocab_size=shape.vocab_size, dim=shape.dim, n_layers=shape.n_layers,
                              n_heads=list(shape.n_heads), head_dim=shape.head_dim, ffn_dim=list(shape.ffn_dim),
                              attention="full", embed_dim=None, dropout=0.0)
    torch.manual_seed(seed)
    return SlimformerForSequenceClassification(config).eval()


def quantize_globs(groups: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """(include, exclude) globs of the quantize step that quantize exactly `groups`."""
    include = [g for name in groups for g in GROUPS[name]]
    exclude = list(GROUPS["attn_out"]) if "attn_in" in groups and "attn_out" not in groups else []
    return include, exclude


# --------------------------------------------------------------------------- size and features


def linears(shape: Shape) -> list[tuple[str, int, int]]:
    """(group, fan_in, fan_out) of every quantizable Linear, per layer: q+k+v packed as one, out, up, down."""
    out = []
    for h, f in zip(shape.n_heads, shape.ffn_dim, strict=True):
        inner = h * shape.head_dim
        if h:
            out += [("attn_in", shape.dim, 3 * inner), ("attn_out", inner, shape.dim)]
        if f:
            out += [("ffn_up", shape.dim, f), ("ffn_down", f, shape.dim)]
    return out


def int8_of(shape: Shape, group: str) -> bool:
    return shape.int8 is not None and group in shape.int8_groups


def size_bytes(shape: Shape, arch: dict) -> int:
    """Predicted bytes of the ONNX file: fp32 parameters at 4 bytes; int8 Linear weights at 1 byte plus a 4-byte scale and
    a 1-byte zero point per output channel (per-channel, the quantize step's default), int8 embedding tables (token and
    position) at 1 byte with one scale each; biases and LayerNorms fp32; plus the graph itself (GRAPH_BYTES)."""
    dim, branches = shape.dim, sum(h > 0 for h in shape.n_heads) + sum(f > 0 for f in shape.ffn_dim)
    tables = (shape.vocab_size + arch["max_len"]) * dim
    total = 4 * (2 * dim + 2 * dim * branches + (2 * dim if arch["norm"] == "pre" else 0))  # LayerNorms
    total += tables + 10 if int8_of(shape, "embeddings") else 4 * tables
    for group, fan_in, fan_out in linears(shape):
        total += 4 * fan_out + (fan_in * fan_out + 5 * fan_out if int8_of(shape, group) else 4 * fan_in * fan_out)
    width = dim
    if arch.get("head_activation"):
        width = arch.get("classifier_dim") or dim
        total += 4 * (dim * width + width)
    total += 4 * (width * arch["num_labels"] + arch["num_labels"])
    per_file, per_branch = GRAPH_BYTES[shape.int8]
    return int(total + per_file + per_branch * branches)


# the graph itself (nodes, names, the exporter's metadata): bytes per file and per branch (attention or FFN), by precision;
# measured on the exported graphs of ONNX Runtime 1.32 / torch 2.13 (static's Q/DQ pairs add nodes, dynamic's optimizer
# drops metadata); a few % of a tiny model's file, under 0.5% of MiniLM's
GRAPH_BYTES = {None: (21800, 9350), "dynamic": (19600, 6850), "static": (21700, 12500)}

FEATURES = ("const", "branches", "gemm_fp32", "gemm_dynamic", "gemm_static", "attn_core", "softmax", "stream",
            "ffn_act", "quant_io_dynamic", "quant_io_static", "quant_ops")


def features(shape: Shape, batch: int, seq_len: int) -> np.ndarray:
    """The counts whose non-negative sum is the latency (see FEATURES); each grows with width, depth and length."""
    B, T = batch, seq_len
    N = B * T  # tokens in the call
    f = dict.fromkeys(FEATURES, 0.0)
    f["const"] = 1.0
    f["branches"] = sum(h > 0 for h in shape.n_heads) + sum(x > 0 for x in shape.ffn_dim)
    for group, fan_in, fan_out in linears(shape):
        mode = shape.int8 if int8_of(shape, group) else "fp32"
        f[f"gemm_{mode}"] += N * fan_in * fan_out
        if mode != "fp32":
            f[f"quant_io_{mode}"] += N * (fan_in + fan_out)
            f["quant_ops"] += 1
    f["attn_core"] = B * sum(h * T * T * shape.head_dim for h in shape.n_heads)  # QK^T and AV
    f["softmax"] = B * sum(h * T * T for h in shape.n_heads)
    f["stream"] = N * shape.dim * (f["branches"] + 1)  # LayerNorms, residual adds, embeddings, pooling
    f["ffn_act"] = N * sum(shape.ffn_dim)  # GELU
    return np.array([f[name] for name in FEATURES], dtype=np.float64)


# --------------------------------------------------------------------------- the model


@dataclass
class Point:
    """One timed graph: its shape (or an RNN student's), the protocol, the p50 latency and the file's size."""

    shape: Shape | None
    batch: int
    seq_len: int
    threads: int
    ms: float  # p50
    p90_ms: float = 0.0
    bytes: int = 0  # the ONNX file
    fusions: dict = field(default_factory=dict)  # of the fp32 export ({} when the fused graph failed parity)
    student: dict | None = None  # an RNN student instead of a shape
    load: float = 0.0  # the machine's 1-minute load average when it was timed: above the cores, the time is not its own

    def to_dict(self) -> dict:
        d = asdict(self)
        d["shape"] = self.shape.to_dict() if self.shape else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Point":
        d = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**{**d, "shape": Shape.from_dict(d["shape"]) if d.get("shape") else None})


@dataclass
class LatencyModel:
    """latency_ms = coef . features(shape, batch, seq_len), coef >= 0, fitted on relative error."""

    coef: np.ndarray
    arch: dict
    features: tuple[str, ...] = FEATURES
    n_points: int = 0
    fit_error: float = 0.0  # median |predicted / measured - 1| on the points it was fitted on

    @classmethod
    def fit(cls, points: list[Point], arch: dict) -> "LatencyModel":
        """Non-negative least squares on relative error: min sum ((x_i . c - y_i) / y_i)^2 subject to c >= 0."""
        from scipy.optimize import nnls

        points = [p for p in points if p.shape is not None]
        if not points:
            raise ValueError("the latency model needs at least one measured shape to fit")
        X = np.stack([features(p.shape, p.batch, p.seq_len) for p in points])  # (n, F)
        y = np.array([p.ms for p in points])
        scale = np.where(X.max(0) > 0, X.max(0), 1.0)  # columns to [0, 1] for a well-conditioned solve
        c, _ = nnls(X / scale / y[:, None], np.ones(len(y)), maxiter=50 * X.shape[1])
        model = cls(c / scale, arch, FEATURES, len(points))
        model.fit_error = float(np.median(np.abs(X @ model.coef / y - 1)))
        return model

    def predict(self, shape: Shape, batch: int, seq_len: int) -> float:
        """Predicted p50 latency in ms of `shape` at (batch, seq_len), at the threads it was fitted for."""
        return float(features(shape, batch, seq_len) @ self.coef)

    def size_bytes(self, shape: Shape) -> int:
        """Predicted ONNX file size in bytes (see `size_bytes`)."""
        return size_bytes(shape, self.arch)

    def to_dict(self) -> dict:
        return {"coef": dict(zip(self.features, self.coef.tolist(), strict=True)), "arch": self.arch, "n_points": self.n_points,
                "fit_error": self.fit_error}

    @classmethod
    def from_dict(cls, d: dict) -> "LatencyModel":
        d = d.get("model", d)  # the entry point's output holds the model under "model"
        unknown = set(d["coef"]) - set(FEATURES)
        if unknown:
            raise ValueError(f"latency model features {sorted(unknown)} are not this version's {FEATURES}; fit it again")
        return cls(np.array([d["coef"].get(k, 0.0) for k in FEATURES]), d["arch"], FEATURES, d.get("n_points", 0),
                   d.get("fit_error", 0.0))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> "LatencyModel":
        return cls.from_dict(json.loads(Path(path).read_text()))


def holdout_error(model: LatencyModel, points: list[Point]) -> dict:
    """Median |predicted / measured - 1| over held-back points, fp32 and int8 apart, with every point's numbers."""
    rows = [{"shape": p.shape.describe(), "int8": p.shape.int8, "measured_ms": p.ms,
             "predicted_ms": (pred := model.predict(p.shape, p.batch, p.seq_len)), "error": pred / p.ms - 1,
             "bytes": p.bytes, "predicted_bytes": model.size_bytes(p.shape)} for p in points if p.shape is not None]

    def median(rows):
        return float(np.median([abs(r["error"]) for r in rows])) if rows else None

    return {"fp32": median([r for r in rows if r["int8"] is None]), "int8": median([r for r in rows if r["int8"]]),
            **{mode: median([r for r in rows if r["int8"] == mode]) for mode in MODES},
            "all": median(rows), "n": len(rows), "points": rows}


# --------------------------------------------------------------------------- the cache


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cache_key(teacher_config, batch: int, seq_len: int, threads: int) -> dict:
    """What a timed point depends on besides its shape: the machine, the runtimes, the protocol, the architecture."""
    import onnxruntime
    import torch

    return {"cpu": cpu_model(), "threads": threads, "onnxruntime": onnxruntime.__version__, "torch": torch.__version__,
            "batch": batch, "seq_len": seq_len, "arch": arch_of(teacher_config)}


def cache_file(key: dict, cache_dir: str | Path | None = None) -> Path:
    """`<cache dir>/<digest of key>.jsonl`; the dir is `$SLIMFORMER_CACHE/latency`, else ~/.cache/slimformer/latency."""
    if cache_dir is None:
        root = os.environ.get("SLIMFORMER_CACHE")
        cache_dir = Path(root) / "latency" if root else Path.home() / ".cache" / "slimformer" / "latency"
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return Path(cache_dir) / f"{digest}.jsonl"


def cached_points(key: dict, cache_dir: str | Path | None = None) -> list[Point]:
    """Every point cached under `key` (a torn last line, from a killed writer, is skipped)."""
    path = cache_file(key, cache_dir)
    points = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("key") == key:
            points.append(Point.from_dict(record["point"]))
    return points


def cache_point(key: dict, point: Point, cache_dir: str | Path | None = None) -> None:
    path = cache_file(key, cache_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps({"key": key, "point": point.to_dict()}) + "\n")


# --------------------------------------------------------------------------- measuring


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
    out = {"key": key, "command": ["python", "-m", "compress.search.latency", *argv], "features": list(FEATURES),
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
