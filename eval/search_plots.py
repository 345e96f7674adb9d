"""The figures of a search's report (`eval/search_report.py`), as PNG bytes: every trial against latency and
size with the front, the budget and the chosen model; the sensitivity maps; the latency model's error; the
time spent in each phase.

Drawn like the run report's figures (`eval/plots.py`: `Figure` objects on the Agg canvas, never pyplot, the
same PNG writer and log-axis labels). Cheap estimates are hollow markers and full-fidelity trials filled ones,
so the points a search may choose from (full fidelity only) are never mistaken for the estimates that only
steered it. Each function returns None when it has nothing worth drawing.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from eval.plots import figure_png, plain_log_ticks

FAMILY_COLORS = {"transformer": "#4c72b0", "boe": "#55a868", "gru": "#8172b3", "lstm": "#c44e52"}
OTHER_COLOR = "#937860"  # a family without a colour of its own
BUDGET_COLOR = "#d62728"
FRONT_COLOR = "#dd8452"
PRECISION_COLORS = {"fp32": "#4c72b0", "dynamic": "#dd8452", "static": "#55a868"}


@dataclass
class TrialPoint:
    """One trial at one fidelity: where it is drawn (`cost` in ms or MB, `accuracy` a fraction)."""

    trial: int
    family: str
    fidelity: str  # "cheap" (estimate: hollow) or "full" (full recovery: filled)
    cost: float
    accuracy: float


def trials_trade_off(points: list[TrialPoint], front: Sequence[int], chosen: int | None, xlabel: str,
                     floor: float | None, cap: float | None, cap_label: str,
                     teacher: tuple[float, float] | None) -> bytes | None:
    """Validation accuracy (%) against a cost (log axis) for every trial: full fidelity filled, cheap estimates
    hollow, a thin grey line from a trial's estimate to its full result; the front's trials joined in cost order;
    the accuracy floor (`floor`) and the cost cap (`cap`) as dashed lines; the chosen trial a star; the teacher a
    grey diamond."""
    if not points:
        return None
    fig = Figure(figsize=(7.2, 4.6))
    fig.subplots_adjust(left=0.085, right=0.985, bottom=0.105, top=0.975)  # fixed margins: a third cheaper than constrained
    ax = fig.subplots()
    full = {p.trial: p for p in points if p.fidelity == "full"}
    moves = [(p, full[p.trial]) for p in points if p.fidelity == "cheap" and p.trial in full]
    if moves:  # how far the full recovery moved each estimate: one line, broken by NaN between trials
        ax.plot([x for a, b in moves for x in (a.cost, b.cost, np.nan)],
                [y for a, b in moves for y in (100 * a.accuracy, 100 * b.accuracy, np.nan)], color="#999999", lw=0.6, zorder=1)
    families = list(dict.fromkeys(p.family for p in points))
    for family in families:
        color = FAMILY_COLORS.get(family, OTHER_COLOR)
        for fidelity, face in (("cheap", "none"), ("full", color)):
            group = [p for p in points if p.family == family and p.fidelity == fidelity]
            if group:
                ax.scatter([p.cost for p in group], [100 * p.accuracy for p in group], s=34, facecolors=face,
                           edgecolors=color, linewidths=1.2, zorder=3)
    on_front = sorted((full[t] for t in front if t in full), key=lambda p: p.cost)
    if on_front:
        ax.plot([p.cost for p in on_front], [100 * p.accuracy for p in on_front], color=FRONT_COLOR, lw=1.6,
                marker="o", markersize=9, markerfacecolor="none", markeredgewidth=1.4, zorder=2)
        for p in on_front:
            ax.annotate(f"#{p.trial}", (p.cost, 100 * p.accuracy), textcoords="offset points", xytext=(6, 4), fontsize=8)
    if chosen is not None and chosen in full:
        p = full[chosen]
        ax.scatter([p.cost], [100 * p.accuracy], s=220, marker="*", color="#f2c200", edgecolors="black",
                   linewidths=0.8, zorder=4)
    if teacher is not None:
        ax.scatter([teacher[0]], [100 * teacher[1]], s=60, marker="D", facecolors="none", edgecolors="#555555",
                   linewidths=1.5, zorder=3)
        ax.annotate("teacher", (teacher[0], 100 * teacher[1]), textcoords="offset points", xytext=(6, -3), fontsize=8)
    if floor is not None:
        ax.axhline(100 * floor, color=BUDGET_COLOR, ls="--", lw=1.2)
    if cap is not None:
        ax.axvline(cap, color=BUDGET_COLOR, ls=":", lw=1.4)
    handles = [Line2D([], [], ls="", marker="s", color=FAMILY_COLORS.get(f, OTHER_COLOR), label=f) for f in families]
    handles += [Line2D([], [], ls="", marker="o", color="#555555", markerfacecolor=face, label=label)
                for fidelity, face, label in (("full", "#555555", "full recovery (filled)"),
                                              ("cheap", "none", "cheap estimate (hollow: never chosen)"))
                if any(p.fidelity == fidelity for p in points)]
    if on_front:
        handles.append(Line2D([], [], color=FRONT_COLOR, marker="o", markerfacecolor="none", label="front (full fidelity)"))
    if chosen is not None and chosen in full:
        handles.append(Line2D([], [], ls="", marker="*", markersize=12, color="#f2c200", markeredgecolor="black",
                              label=f"chosen (#{chosen})"))
    if floor is not None:
        handles.append(Line2D([], [], color=BUDGET_COLOR, ls="--", label=f"accuracy floor {100 * floor:.2f}%"))
    if cap is not None:
        handles.append(Line2D([], [], color=BUDGET_COLOR, ls=":", label=cap_label))
    ax.legend(handles=handles, fontsize=7, loc="lower right")  # accuracy rises with cost: that corner is the emptiest
    ax.set_xscale("log")
    ax.margins(x=0.1)  # room for the labels of the rightmost points
    plain_log_ticks(ax.xaxis)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("validation accuracy, %")
    ax.grid(True, which="both", alpha=0.3)
    return figure_png(fig)


def sensitivity_maps(sensitivity: dict) -> bytes | None:
    """Accuracy lost (points) per unit removed: layers (bars), heads and FFN neurons (layer x fraction heat maps,
    one colour scale), width (bars by the fraction of the width kept) and int8 per module group (bars)."""
    heads, ffn = sensitivity.get("heads") or {}, sensitivity.get("ffn") or {}
    maps = [(title, data) for title, data in (("heads: points lost, by layer and fraction removed", heads),
                                              ("FFN neurons: points lost, by layer and fraction removed", ffn))
            if data.get("drops") and data.get("fractions")]
    bars = []
    if sensitivity.get("layers"):
        bars.append(("layer removed", [str(i) for i in range(len(sensitivity["layers"]))], sensitivity["layers"], "layer"))
    width = sensitivity.get("width") or {}
    if width.get("drops") and width.get("fractions"):
        bars.append(("width", [f"{f:g}" for f in width["fractions"]], width["drops"], "fraction of the width kept"))
    int8 = sensitivity.get("int8") or {}
    if int8.get("drops") and int8.get("groups"):
        bars.append(("int8 per module group", list(int8["groups"]), int8["drops"], "quantized group"))
    panels = len(maps) + len(bars)
    if not panels:
        return None
    columns = min(panels, 3)
    rows = -(-panels // columns)
    fig = Figure(figsize=(4.2 * columns, 3.4 * rows), layout="constrained")
    axes = list(fig.subplots(rows, columns, squeeze=False).flat)
    grids = [np.array([[np.nan if v is None else v for v in row] for row in data["drops"]], dtype=float) for _, data in maps]
    finite = [g[np.isfinite(g)] for g in grids]
    high = max([float(f.max()) for f in finite if f.size] + [1e-9])
    low = min([float(f.min()) for f in finite if f.size] + [0.0])
    for ax, (title, data), grid in zip(axes, maps, grids, strict=False):
        ax.imshow(grid, cmap="Reds", aspect="auto", vmin=low, vmax=high)  # one scale for both maps; values written in
        for (i, j), v in np.ndenumerate(grid):
            if np.isfinite(v):
                ax.text(j, i, f"{v:.1f}", ha="center", va="center", fontsize=7,
                        color="white" if v > low + 0.6 * (high - low) else "black")
        ax.set_xticks(range(grid.shape[1]), [f"{f:g}" for f in data["fractions"]])
        ax.set_yticks(range(grid.shape[0]))
        ax.set_xlabel("fraction removed")
        ax.set_ylabel("layer")
        ax.set_title(title, fontsize=9)
    for ax, (title, labels, drops, xlabel) in zip(axes[len(maps):], bars, strict=False):
        values = [np.nan if v is None else v for v in drops]
        ax.bar(range(len(values)), values, color="#c44e52")
        for i, v in enumerate(values):
            if np.isfinite(v):
                ax.annotate(f"{v:.1f}", (i, v), textcoords="offset points", xytext=(0, 2), ha="center", fontsize=7)
        ax.set_xticks(range(len(labels)), labels, rotation=30 if max(map(len, labels)) > 4 else 0, fontsize=8)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("points lost")
        ax.set_title(title, fontsize=9)
        ax.grid(True, axis="y", alpha=0.3)
    for ax in axes[panels:]:
        ax.set_visible(False)
    return figure_png(fig)


def latency_model_error(holdout: list[tuple[str, float, float]], trained: list[tuple[str, float, float]],
                        holdout_title: str, trained_title: str) -> bytes | None:
    """Measured against predicted latency (log-log, the diagonal dashed) on the held-back shapes and on the
    trained candidates, coloured by precision (fp32, int8 dynamic, int8 static); items are (precision, predicted, measured)."""
    panels = [(title, items) for title, items in ((holdout_title, holdout), (trained_title, trained)) if items]
    if not panels:
        return None
    fig = Figure(figsize=(5.0 * len(panels), 4.2), layout="constrained")
    for ax, (title, items) in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels, strict=True):
        for precision in dict.fromkeys(p for p, _, _ in items):
            group = [(x, y) for p, x, y in items if p == precision]
            label = precision if precision == "fp32" else f"int8 {precision}"
            ax.scatter([x for x, _ in group], [y for _, y in group], s=26, color=PRECISION_COLORS.get(precision, OTHER_COLOR),
                       label=label, zorder=3)
        values = [v for _, x, y in items for v in (x, y)]
        span = [min(values) / 1.2, max(values) * 1.2]
        ax.plot(span, span, color="#555555", ls="--", lw=1, label="measured = predicted")
        ax.set_xscale("log")
        ax.set_yscale("log")
        plain_log_ticks(ax.xaxis)
        plain_log_ticks(ax.yaxis)
        ax.set_xlabel("predicted latency, ms")
        ax.set_ylabel("measured latency, ms")
        ax.set_title(title, fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    return figure_png(fig)


def phase_times(phases: list[tuple[str, float]], budget_s: float | None) -> bytes | None:
    """Minutes spent in each phase, as horizontal bars in the order they ran; the time budget in the title."""
    phases = [(name, s) for name, s in phases if s is not None]
    if not phases:
        return None
    fig = Figure(figsize=(6.4, 0.42 * len(phases) + 1.3), layout="constrained")
    ax = fig.subplots()
    minutes = [s / 60 for _, s in phases]
    ax.barh(range(len(phases)), minutes, color="#4c72b0")
    for i, m in enumerate(minutes):
        ax.annotate(f"{m:.1f}", (m, i), textcoords="offset points", xytext=(3, 0), va="center", fontsize=8)
    ax.set_yticks(range(len(phases)), [name for name, _ in phases])
    ax.invert_yaxis()
    ax.margins(x=0.1)  # room for the longest bar's label
    ax.set_xlabel("minutes")
    total = sum(minutes)
    budget = f" of the {budget_s / 60:.0f} min budget" if budget_s else ""
    ax.set_title(f"time per phase: {total:.1f} min in all{budget}", fontsize=9)
    ax.grid(True, axis="x", alpha=0.3)
    return figure_png(fig)
