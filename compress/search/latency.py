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

The points are measured by `compress/search/timing.py` (random-weight models exported, quantized and timed).
"""

import hashlib
import json
import os
import platform
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
