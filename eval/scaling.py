"""The scaling benchmark: latency and peak memory against sequence length, full attention vs each efficient kind.

`slimformer bench --scaling` takes one small untrained classifier per attention kind (same
shape, same seed, `max_len` = the longest length; built and exported to ONNX with a parity check
by `compress/onnx/scaling.py` and handed in by the CLI, so this package never imports the library),
then at batch 1 and fixed threads times every length in
ONNX Runtime on CPU with `eval.bench.bench_onnx`, measures peak memory with
`eval.bench.peak_memory` (a fresh process per point), and on a CUDA machine also times eager
torch on the GPU. It writes `scaling.json`, log-log plots and `scaling.md` into one folder;
`eval/report.py` draws the same plots into a run's report when the run folder has `scaling.json`.
With `--out` a finished run folder, the run's own trained models (its teacher and swapped stages,
at their task's length, batch 1, as its bench timed them) are added as labelled points and a table.

The crossover length of a kind is where its latency curve meets full attention's, interpolated
in log-log space between the two measured lengths that bracket it (Long Range Arena reports
speed and memory against length the same way: Tay et al. 2021, "Long Range Arena").
"""

import math
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

from pydantic import Field

from eval import plots
from eval.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from eval.schema import ConfigBase

SCALING_FILE = "scaling.json"
KINDS = ("full", "bigbird", "linformer", "performer")
MB = 1e6


class ScalingConfig(ConfigBase):
    """What the scaling benchmark measures; the CLI flags of `slimformer bench --scaling` set these fields."""

    # lengths timed
    lengths: list[Annotated[int, Field(ge=8, le=65536)]] = Field(default_factory=lambda: [512, 1024, 2048, 4096, 8192])
    # lengths timed in torch on a GPU (when one is present), up to where a kind runs out of GPU memory
    gpu_lengths: list[Annotated[int, Field(ge=8, le=65536)]] = Field(default_factory=lambda: [512, 1024, 2048, 4096, 8192, 16384])
    kinds: list[str] = Field(default_factory=lambda: list(KINDS))  # attention kinds compared; `full` is the reference
    threads: int = Field(2, ge=1, le=256)  # intra-op threads for ONNX Runtime (and torch)
    warmup: int = Field(1, ge=0)  # untimed calls per length
    repeats: int = Field(5, ge=1)  # timed calls per length
    memory: bool = True  # peak memory per length, each in a fresh process
    dim: int = Field(128, ge=8)  # the benchmark model's shape (untrained: timing does not depend on weights)
    n_layers: int = Field(2, ge=1)
    n_heads: int = Field(4, ge=1)
    ffn_dim: int = Field(512, ge=1)
    vocab_size: int = Field(256, ge=8)
    # each kind's arguments; linformer's max_len is set to the longest length
    args: dict[str, dict] = Field(default_factory=lambda: {
        "bigbird": {"block": 64, "window": 3, "n_global": 1, "n_random": 2},
        "linformer": {"k": 128},
        "performer": {"n_features": 128},
    })

    def model_post_init(self, _context) -> None:
        self.lengths = sorted(set(self.lengths))
        self.gpu_lengths = sorted(set(self.gpu_lengths))

    def longest(self) -> int:
        """The model's positions: the longest length any device times."""
        import torch

        return max(self.lengths + (self.gpu_lengths if torch.cuda.is_available() else []))

    def attention(self, kind: str) -> dict:
        spec = {"kind": kind, **self.args.get(kind, {})}
        if kind == "linformer":
            spec["max_len"] = self.longest()
        return spec


def gpu_sweep(model, cfg: ScalingConfig, time_at: Callable[[int], list[dict]],
              peak_at: Callable[[int], int]) -> tuple[list[dict], int | None]:
    """Time `model` at each of `cfg.gpu_lengths` until it runs out of GPU memory.

    `time_at(n)` returns latency records at length n and `peak_at(n)` the peak GPU bytes
    allocated by one call; both may raise torch.cuda.OutOfMemoryError. Returns the records,
    each with `gpu_peak_bytes`, and the first length that ran out of memory (None if none did).
    """
    import torch

    records = []
    for n in cfg.gpu_lengths:
        try:
            peak = peak_at(n)
            records += [{**r, "gpu_peak_bytes": peak} for r in time_at(n)]
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            return records, n  # longer inputs need more memory still
    return records, None


def cuda_peak_bytes(model, n: int, vocab_size: int) -> int:
    """Peak GPU memory allocated by one batch-1 call at length n (weights included)."""
    import torch

    from eval.bench import make_inputs

    feeds = {k: torch.from_numpy(v).cuda() for k, v in make_inputs(1, n, vocab_size).items()}
    model = model.cuda()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    with torch.inference_mode():
        model(**feeds)
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated()


def crossover(lengths: list[int], full_ms: list[float], kind_ms: list[float]) -> dict:
    """Where `kind` becomes faster than full and stays so: {"length", "status"}.

    status "crossed": interpolated length between two measured ones; "below_range": already
    faster at the shortest length; "not_reached": not faster at the longest length.
    """
    ratios = [f / k for f, k in zip(full_ms, kind_ms, strict=True)]
    slower = [i for i, r in enumerate(ratios) if r <= 1.0]
    if not slower:
        return {"length": lengths[0], "status": "below_range"}
    j = slower[-1]
    if j == len(lengths) - 1:
        return {"length": None, "status": "not_reached"}
    x0, x1, y0, y1 = math.log(lengths[j]), math.log(lengths[j + 1]), math.log(ratios[j]), math.log(ratios[j + 1])
    return {"length": round(math.exp(x0 + (0.0 - y0) * (x1 - x0) / (y1 - y0))), "status": "crossed"}


def series(records: list[dict], key: str, **match) -> dict[str, list[tuple[int, float]]]:
    """kind -> sorted (seq_len, value) of the records matching `match`."""
    out: dict[str, list[tuple[int, float]]] = {}
    for r in records:
        if all(r.get(k) == v for k, v in match.items()) and r.get(key) is not None:
            out.setdefault(r["kind"], []).append((r["seq_len"], r[key]))
    return {kind: sorted(points) for kind, points in out.items()}


def trained_points(results: dict) -> list[dict]:
    """The run's own models as points beside the untrained curves: its full-attention stages (kind "full") and
    swapped stages (their kind), each at its task's seq_len, batch 1, CPU ONNX Runtime, with the peak memory
    when the run measured it at batch 1 (the bench measures memory at its largest batch only)."""
    out = []
    for stage in results.get("stages", []):
        swap = stage.get("swap") or {}
        layers = swap.get("layers")
        kind = swap.get("to") if swap else "full" if stage.get("kind") == "train" else None
        if kind is None:
            continue
        for r in stage.get("latency") or []:
            if ((r.get("runtime"), r.get("device"), r.get("batch"), r.get("precision", "fp32"))
                    != ("onnxruntime", "cpu", 1, "fp32")):
                continue
            memory = [m["peak_rss_bytes"] for m in stage.get("peak_memory") or []
                      if m.get("batch") == 1 and m.get("seq_len") == r["seq_len"] and m.get("peak_rss_bytes") is not None]
            out.append({"stage": stage["name"], "kind": kind, "layers": layers, "seq_len": r["seq_len"], "p50_ms": r["p50_ms"],
                        "peak_rss_bytes": memory[0] if memory else None, "accuracy": stage.get("accuracy")})
    return out


def summarise(data: dict) -> dict:
    """Per kind and runtime: crossover length, and speed-up / memory ratio vs full at each length."""
    summary: dict[str, dict] = {}
    runtimes = {(r["runtime"], r["device"]) for r in data["latency"]}
    memory = series(data["memory"], "peak_rss_bytes")
    for runtime, device in sorted(runtimes):
        timed = series(data["latency"], "p50_ms", runtime=runtime, device=device)
        full = dict(timed.get("full", []))
        for kind, points in timed.items():
            if kind == "full" or not full:
                continue
            common = [(n, full[n], ms) for n, ms in points if n in full]
            if not common:
                continue
            entry = summary.setdefault(kind, {})
            lengths, full_ms, kind_ms = map(list, zip(*common, strict=True))
            entry[f"{runtime}_{device}"] = {
                "crossover": crossover(lengths, full_ms, kind_ms),
                "speedup": {str(n): round(f / k, 3) for n, f, k in common},
            }
    full_memory = dict(memory.get("full", []))
    for kind, points in memory.items():
        if kind != "full" and full_memory:
            summary.setdefault(kind, {})["memory_ratio"] = {str(n): round(b / full_memory[n], 4)
                                                            for n, b in points if n in full_memory}
    return summary


def log_log(curves: dict[str, list[tuple[int, float]]], ylabel: str, title: str,
            trained: list[tuple[str, int, float]] = ()) -> bytes | None:
    """One line per kind on log-log axes, and the run's trained models as labelled stars (stage, length, value);
    None when no kind has two points."""
    curves = {k: v for k, v in curves.items() if v}
    if not any(len(v) > 1 for v in curves.values()):
        return None
    from matplotlib.figure import Figure
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.subplots()
    for kind, points in curves.items():
        ax.plot([n for n, _ in points], [y for _, y in points], marker="o", label=kind, lw=2.5 if kind == "full" else 1.5)
    for i, (stage, n, y) in enumerate(sorted(trained, key=lambda t: (t[1], t[2]))):  # stars; names in a column, in their order
        ax.scatter([n], [y], marker="*", s=90, color="black", zorder=3, label="trained (this run)" if i == 0 else None)
        ax.annotate(stage, (n, y), textcoords="offset points", xytext=(14, 10 * (i - len(trained) / 2)), fontsize=7,
                    va="center", arrowprops={"arrowstyle": "-", "lw": 0.4, "color": "0.5"})
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.xaxis.set_major_locator(FixedLocator(sorted({n for v in curves.values() for n, _ in v} | {n for _, n, _ in trained})))
    ax.xaxis.set_major_formatter(FuncFormatter(plots.plain_number))
    ax.xaxis.set_minor_formatter(NullFormatter())
    plots.plain_log_ticks(ax.yaxis)
    ax.set_xlabel("sequence length (tokens, batch 1)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return plots.figure_png(fig)


def figures(data: dict) -> list[tuple[str, str, bytes]]:
    """(title, file name, PNG) of the scaling plots that have data: CPU ONNX Runtime, GPU torch, peak memory."""
    threads = data["protocol"]["threads"]
    crossings = {kind: entry.get("onnxruntime_cpu", {}).get("crossover", {}) for kind, entry in data.get("summary", {}).items()}
    crossing_text = ", ".join(f"{k} {c['length'] if c.get('length') else '>' + str(max(data['protocol']['lengths']))}"
                              for k, c in crossings.items() if c)
    trained = data.get("trained") or []
    trained_ms = [(t["stage"], t["seq_len"], t["p50_ms"]) for t in trained]
    trained_mb = [(t["stage"], t["seq_len"], t["peak_rss_bytes"] / MB) for t in trained if t.get("peak_rss_bytes")]
    candidates = [
        (f"Latency vs length, ONNX Runtime CPU, {threads} threads (crossover: {crossing_text or 'n/a'})",
         "scaling_latency_cpu.png",
         log_log(series(data["latency"], "p50_ms", runtime="onnxruntime", device="cpu"), "p50 latency, ms",
                 f"ONNX Runtime CPU, {threads} threads", trained_ms)),
        ("Latency vs length, torch GPU", "scaling_latency_gpu.png",
         log_log(series(data["latency"], "p50_ms", runtime="torch", device="cuda"), "p50 latency, ms", "torch, CUDA")),
        ("Peak memory vs length, ONNX Runtime CPU (fresh process)", "scaling_memory.png",
         log_log({k: [(n, b / MB) for n, b in v] for k, v in series(data["memory"], "peak_rss_bytes").items()},
                 "peak RSS, MB", "ONNX Runtime CPU", trained_mb)),
    ]
    return [(title, name, png) for title, name, png in candidates if png]


def markdown(data: dict, pngs: list[tuple[str, str, bytes]]) -> str:
    """scaling.md: the protocol, p50 latency and peak memory per kind and length, crossovers and ratios, the plots."""
    p = data["protocol"]
    lengths = p["lengths"]
    protocol = (f"Model: {p['model']}; batch 1; threads {p['threads']}; warmup {p['warmup']}, repeats {p['repeats']}; "
                f"CPU {p.get('cpu')}; versions {p.get('versions')}.")
    lines = ["# Attention scaling benchmark", "", f"Command: `{data.get('command', '')}`", "", protocol, ""]
    cpu = series(data["latency"], "p50_ms", runtime="onnxruntime", device="cpu")
    memory = series(data["memory"], "peak_rss_bytes")
    header = "| kind | args | " + " | ".join(f"{n}" for n in lengths) + " |"
    for title, table, fmt in (("p50 latency, ms (ONNX Runtime, CPU)", cpu, "{:.1f}"),
                              ("peak RSS, MB (fresh process)", memory, None)):
        lines += [f"## {title}", "", header, "|" + "---|" * (len(lengths) + 2)]
        for kind in p["kinds"]:
            values = dict(table.get(kind, []))
            cells = [(fmt.format(values[n]) if fmt else f"{values[n] / MB:.0f}") if n in values else "—" for n in lengths]
            lines.append(f"| {kind} | `{p['attention'][kind]}` | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## Against full attention", "",
              "| kind | runtime | crossover length | speed-up at each length | peak memory / full |", "|---|---|---|---|---|"]
    for kind, entry in data["summary"].items():
        ratio = ", ".join(f"{n}: {r:.3f}" for n, r in entry.get("memory_ratio", {}).items())
        for key, value in entry.items():
            if key != "memory_ratio":
                c = value["crossover"]
                speedups = ", ".join(f"{n}: {s:.2f}×" for n, s in value["speedup"].items())
                lines.append(f"| {kind} | {key} | {c['length'] or '—'} ({c['status']}) | {speedups} | {ratio} |")
    if data.get("trained"):
        lines += ["", "## This run's trained models (their own shape, at their task's length, batch 1)", "",
                  "| stage | kind | layers swapped | tokens | p50 ms | peak RSS MB | test accuracy % |",
                  "|---|---|---|---|---|---|---|"]
        for t in data["trained"]:
            mb = f"{t['peak_rss_bytes'] / MB:.0f}" if t.get("peak_rss_bytes") else "— (not at batch 1)"
            acc = f"{100 * t['accuracy']:.1f}" if t.get("accuracy") is not None else "—"
            layers = ", ".join(map(str, t["layers"])) if t.get("layers") else "—"
            lines.append(f"| {t['stage']} | {t['kind']} | {layers} | {t['seq_len']} | {t['p50_ms']:.2f} | {mb} | {acc} |")
    if p.get("gpu"):
        oom = data.get("gpu_oom") or {}
        lines += ["", f"## GPU ({p['gpu']}): where each kind ran out of memory", ""]
        lines += [f"- {kind}: {f'out of memory at {oom[kind]} tokens' if kind in oom else 'ran every length'}"
                  for kind in p["kinds"]]
        peaks = series(data["latency"], "gpu_peak_bytes", device="cuda")
        lines += ["", "| kind | " + " | ".join(str(n) for n in p.get("gpu_lengths", [])) + " |",
                  "|" + "---|" * (len(p.get("gpu_lengths", [])) + 1)]
        for kind in p["kinds"]:
            values = dict(peaks.get(kind, []))
            lines.append(f"| {kind} (peak GPU MB) | "
                         + " | ".join(f"{values[n] / MB:.0f}" if n in values else "OOM" if kind in oom and n >= oom[kind] else "—"
                                      for n in p.get("gpu_lengths", [])) + " |")
    lines += [""] + [f"![{t}]({name})" for t, name, _ in pngs] + [""]
    return "\n".join(lines)


def run_scaling(cfg: ScalingConfig, out_dir: Path, build_model: Callable, export_model: Callable, command: str = "",
                say: Callable[[str], None] = print, results: dict | None = None) -> dict:
    """Measure every kind at every length; write scaling.json, the plots and scaling.md into `out_dir`.

    `build_model(cfg, kind)` returns the untrained torch classifier of `kind` (eval mode) and
    `export_model(model, path)` writes its ONNX file and returns the parity check's summary
    (`compress/onnx/scaling.py` supplies both). `results`, a run's results.json, adds its trained models
    as points (`trained_points`)."""
    import torch

    from eval.bench import bench_onnx, bench_torch, count_params, peak_memory
    from eval.env import collect_env

    out_dir = Path(out_dir)
    onnx_dir = out_dir / "onnx"
    onnx_dir.mkdir(parents=True, exist_ok=True)
    env = collect_env(cfg.threads)
    latency, memory, params, parity, gpu_oom = [], [], {}, {}, {}
    for kind in cfg.kinds:
        model = build_model(cfg, kind)
        path = onnx_dir / f"{kind}.onnx"
        say(f"{kind}: export")
        parity[kind] = export_model(model, path)
        params[kind] = count_params(model)
        say(f"{kind}: ONNX Runtime CPU, lengths {cfg.lengths}")
        for record in bench_onnx(path, [1], cfg.lengths, cfg.threads, cfg.vocab_size, warmup=cfg.warmup, repeats=cfg.repeats):
            latency.append({"kind": kind, **record})
        if torch.cuda.is_available():
            say(f"{kind}: torch CUDA, lengths {cfg.gpu_lengths}")
            gpu, oom = gpu_sweep(
                model, cfg,
                lambda n, model=model: bench_torch(model, [1], [n], cfg.threads, cfg.vocab_size, warmup=cfg.warmup,
                                                   repeats=cfg.repeats, device="cuda"),
                lambda n, model=model: cuda_peak_bytes(model, n, cfg.vocab_size))
            latency += [{"kind": kind, **record} for record in gpu]
            if oom is not None:
                gpu_oom[kind] = oom
                say(f"{kind}: out of GPU memory at {oom} tokens")
            model.cpu()
        if cfg.memory:
            for n in cfg.lengths:
                memory.append({"kind": kind, **peak_memory(path, 1, n, cfg.threads)})
            say(f"{kind}: peak memory "
                + ", ".join(f"{m['seq_len']}: {m['peak_rss_bytes'] / MB:.0f} MB" for m in memory if m["kind"] == kind))
    data = {
        "command": command,
        "protocol": {
            "lengths": cfg.lengths, "gpu_lengths": cfg.gpu_lengths if torch.cuda.is_available() else [], "kinds": cfg.kinds,
            "batch": 1, "threads": cfg.threads, "warmup": cfg.warmup, "repeats": cfg.repeats,
            "model": f"dim {cfg.dim}, {cfg.n_layers} layers, {cfg.n_heads} heads, ffn {cfg.ffn_dim}, vocab {cfg.vocab_size}, "
                     "untrained",
            "attention": {kind: cfg.attention(kind) for kind in cfg.kinds},
            "cpu": f"{env.get('cpu')} ({env.get('n_cores_usable')} usable cores)",
            "gpu": ", ".join(env.get("cuda_devices") or []) or None,
            "versions": env.get("versions", {}),
        },
        "params": params,
        "parity": parity,
        "latency": latency,
        "memory": memory,
        "gpu_oom": gpu_oom,  # kind -> the first GPU length that ran out of memory
    }
    if results is not None:  # a run folder: its trained models become points beside the curves
        data["trained"] = trained_points(results)
    data["summary"] = summarise(data)
    pngs = figures(data)
    for _, name, png in pngs:
        atomic_write_bytes(out_dir / name, png)
    atomic_write_json(out_dir / SCALING_FILE, data)
    atomic_write_text(out_dir / "scaling.md", markdown(data, pngs))
    return data
