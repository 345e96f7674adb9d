"""The report's figures as PNG bytes: accuracy against latency and size, latency against batch, training curves.

Figures are drawn on `matplotlib.figure.Figure` objects with the Agg canvas, never through
pyplot, so drawing a report changes no global matplotlib state (backend, open figures).
Each function returns None when it has nothing worth drawing.
"""

import io
import math
from collections.abc import Sequence

import numpy as np
from matplotlib.axis import Axis
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

DPI = 110


def figure_png(fig: Figure) -> bytes:
    """The figure as PNG bytes, without the Software metadata that changes with matplotlib's version."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def plain_number(value: float, _position: float = 0) -> str:
    return f"{value:g}"


def two_and_five(value: float, _position: float = 0) -> str:
    """Minor log tick labels: 2, 5, 20, 50, 0.2, ... and nothing in between, to keep the axis readable."""
    mantissa = value / 10 ** math.floor(math.log10(value)) if value > 0 else 0
    return f"{value:g}" if any(math.isclose(mantissa, m, rel_tol=1e-6) for m in (2, 5)) else ""


def plain_log_ticks(axis: Axis) -> None:
    """Label a log axis 0.5, 1, 2, 5, 10 rather than 5×10⁻¹, 10⁰, 2×10⁰."""
    axis.set_major_formatter(FuncFormatter(plain_number))
    axis.set_minor_formatter(FuncFormatter(two_and_five))


def pareto_front(costs: Sequence[float], gains: Sequence[float]) -> list[int]:
    """Indices of the points no other point beats, ordered by cost: lower cost and higher gain are better.

    A point is on the front when every point with lower-or-equal cost has strictly lower gain.
    """
    order = sorted(range(len(costs)), key=lambda i: (costs[i], -gains[i]))
    front: list[int] = []
    for i in order:
        if not front or gains[i] > gains[front[-1]]:
            front.append(i)
    return front


def trade_off(names: list[str], costs: list[float], accuracies: list[float], xlabel: str, log_x: bool,
              reference: Sequence[bool] | None = None, ylabel: str = "accuracy (ONNX Runtime, %)") -> bytes | None:
    """Accuracy (%) against a cost, every stage labelled, the Pareto front drawn as a step line.

    Points flagged in `reference` (the classical baseline row) are grey diamonds, kept off the front:
    the front is the pipeline's, the reference what it is measured against."""
    if not names:
        return None
    reference = list(reference) if reference is not None else [False] * len(names)
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.subplots()
    percent = [100 * a for a in accuracies]
    own = [i for i, ref in enumerate(reference) if not ref]
    refs = [i for i, ref in enumerate(reference) if ref]
    ax.scatter([costs[i] for i in own], [percent[i] for i in own], s=36, color="#4c72b0", zorder=3)
    if refs:
        ax.scatter([costs[i] for i in refs], [percent[i] for i in refs], s=60, marker="D", facecolors="none",
                   edgecolors="#555555", linewidths=1.5, zorder=3, label="reference (not on the front)")
    for name, x, y, dy in zip(names, costs, percent, label_offsets(costs, percent, log_x), strict=True):
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(5, dy), fontsize=8)
    front = [own[i] for i in pareto_front([costs[i] for i in own], [percent[i] for i in own])]
    if len(front) > 1:
        ax.step([costs[i] for i in front], [percent[i] for i in front], where="post",
                color="#dd8452", lw=1.5, label="Pareto front", zorder=2)
    if len(front) > 1 or refs:
        ax.legend(fontsize=8)
    if log_x:
        ax.set_xscale("log")
        plain_log_ticks(ax.xaxis)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)
    return figure_png(fig)


def label_offsets(xs: Sequence[float], ys: Sequence[float], log_x: bool, near: float = 0.04) -> list[int]:
    """Vertical label offsets in points: a point close to an earlier one (within `near` of each
    axis' span) gets its label one line lower than that one's, so coinciding stages stay readable."""
    fx = [np.log10(x) if log_x else x for x in xs]
    span_x, span_y = (max(fx) - min(fx)) or 1.0, (max(ys) - min(ys)) or 1.0
    offsets: list[int] = []
    for i in range(len(xs)):
        close = [offsets[j] for j in range(i)
                 if abs(fx[i] - fx[j]) / span_x < near * 3 and abs(ys[i] - ys[j]) / span_y < near]
        offsets.append(min(close) - 10 if close else 4)
    return offsets


def accuracy_vs_latency(names: list[str], p50_ms: list[float], accuracies: list[float], setting: str,
                        reference: Sequence[bool] | None = None, **kwargs) -> bytes | None:
    """Accuracy (or `ylabel`'s measure) against p50 latency on a log axis, with the Pareto front (reference points apart)."""
    return trade_off(names, p50_ms, accuracies, f"p50 latency, ms (log; {setting})", log_x=True, reference=reference, **kwargs)


def accuracy_vs_size(names: list[str], size_mb: list[float], accuracies: list[float],
                     reference: Sequence[bool] | None = None, **kwargs) -> bytes | None:
    """Accuracy (or `ylabel`'s) against file size (ONNX; a reference row's own files), with the Pareto front."""
    xlabel = "size, MB (log; ONNX, a reference: its own files)" if reference and any(reference) else "ONNX size, MB (log)"
    return trade_off(names, size_mb, accuracies, xlabel, log_x=True, reference=reference, **kwargs)


def latency_curves(series: dict[str, list[tuple[int, float]]], xlabel: str, setting: str) -> bytes | None:
    """p50 latency against `xlabel` (batch size or sequence length), one line per stage, log-log.

    None unless some stage has at least two points.
    """
    series = {name: sorted(points) for name, points in series.items() if points}
    if not any(len(points) > 1 for points in series.values()):
        return None
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.subplots()
    for name, points in series.items():
        ax.plot([x for x, _ in points], [ms for _, ms in points], marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.xaxis.set_major_locator(FixedLocator(sorted({x for points in series.values() for x, _ in points})))
    ax.xaxis.set_major_formatter(FuncFormatter(plain_number))
    ax.xaxis.set_minor_formatter(NullFormatter())
    plain_log_ticks(ax.yaxis)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"p50 latency, ms ({setting})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return figure_png(fig)


def training_curves(curves: dict[str, list[dict]]) -> bytes | None:
    """Training loss and validation accuracy against step, one line per stage that trained; a pretraining
    stage's masked-token accuracy (`val_masked_accuracy`) is drawn dashed beside the accuracies."""
    curves = {name: points for name, points in curves.items() if points}
    if not curves:
        return None
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    loss_ax, acc_ax = fig.subplots(1, 2)
    for name, points in curves.items():
        for ax, key, scale in ((loss_ax, "train_loss", 1), (acc_ax, "val_accuracy", 100), (acc_ax, "val_cosine", 100)):
            xy = [(p.get("step", i), p[key] * scale) for i, p in enumerate(points) if p.get(key) is not None]
            if xy:
                ax.plot([x for x, _ in xy], [y for _, y in xy], marker=".", label=name)
        masked = [(p.get("step", i), p["val_masked_accuracy"] * 100)
                  for i, p in enumerate(points) if p.get("val_masked_accuracy") is not None]
        if masked:
            acc_ax.plot([x for x, _ in masked], [y for _, y in masked], marker=".", linestyle="--",
                        label=f"{name} (masked tokens)")
    loss_ax.set_ylabel("training loss")
    acc_ax.set_ylabel("validation accuracy, %  (dashed: masked tokens; embeddings: cosine x 100)")
    for ax in (loss_ax, acc_ax):
        ax.set_xlabel("step")
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    return figure_png(fig)


def head_importance(rounds: list[dict], title: str) -> bytes | None:
    """Layer-by-head importance heatmaps, one panel per pruning round; heads already removed (and unselected layers) blank."""
    import numpy as np

    panels = [r for r in rounds if any(row for row in r.get("scores") or [])]
    if not panels:
        return None
    width = max(len(row or []) for r in panels for row in r["scores"])
    fig = Figure(figsize=(min(3.2 * len(panels) + 1.2, 12), 0.45 * len(panels[0]["scores"]) + 1.6), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, r in zip(axes, panels, strict=True):
        grid = np.full((len(r["scores"]), width), np.nan)
        for i, row in enumerate(r["scores"]):
            for h, v in enumerate(row or []):
                grid[i, h] = np.nan if v is None else v
        image = ax.imshow(grid, cmap="viridis", aspect="auto")
        ax.set_title(f"round {r['round']}", fontsize=9)
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        ax.set_xticks(range(width))
        ax.set_yticks(range(grid.shape[0]))
        fig.colorbar(image, ax=ax, shrink=0.8)
    fig.suptitle(title, fontsize=10)
    return figure_png(fig)


def sensitivity(data: dict, title: str) -> bytes | None:
    """Accuracy (%, before recovery) against the fraction of units removed, one line per importance method."""
    curves = {m: acc for m, acc in (data.get("accuracy") or {}).items() if acc}
    if not curves:
        return None
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.subplots()
    xs = [100 * f for f in data["fractions"]]
    for method, acc in curves.items():
        spread = (data.get("spread") or {}).get(method)
        label = f"{method} (mean of {spread['seeds']} seeds, band: min-max)" if spread else method
        line, = ax.plot(xs, [100 * a for a in acc], marker="o", label=label)
        if spread:
            ax.fill_between(xs, [100 * a for a in spread["min"]], [100 * a for a in spread["max"]],
                            color=line.get_color(), alpha=0.15)
    ax.set_xlabel(f"{data.get('unit', 'units')} removed, % of {data.get('n_units', '?')}")
    ax.set_ylabel(f"{data.get('split', 'validation')} accuracy before recovery, %")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return figure_png(fig)
