"""The efficient-attention verdict: per task and attention kind, is a swapped model as good as its teacher?

Read from results.json only (it knows nothing of how a stage was made, and imports nothing of
`compress`): a stage whose `swap` record names the kind swapped in (`swap.to`) is one row; the
run's teacher (its baseline stage, else its `train` stage), a bag-of-embeddings student
(`distill.student == "boe"`) and the classical reference row (`reference: true`) stand beside
it. Each row gives accuracy, agreement with the run's baseline stage, latency and peak memory at
the task's length (`protocol.seq_len`) with their ratios to the teacher (accuracy with its 95%
interval, the difference to the teacher with its paired one when recorded: `eval/intervals.py`), and the verdict: within
`MARGIN` points of the teacher, or short by how much. The teacher's lead over the
bag-of-embeddings student says whether the task needs attention at all (the issue asks for
15 points): a swap that matches a teacher a bag of words also matches shows little.

`LRA_TABLE1` quotes Long Range Arena's published accuracies (Tay et al. 2021, "Long Range Arena:
A Benchmark for Efficient Transformers", ICLR, Table 1) as a reference: their tasks, lengths
(ListOps up to 2K tokens, Text 4K bytes) and models differ from ours, so they say which kinds
struggle where, not what our numbers should be.
"""

from dataclasses import dataclass, field

from eval.intervals import contains_zero, wilson_interval

MARGIN = 2.0  # points of accuracy: a kind "within MARGIN of the teacher" is the goal
# Tay et al. 2021, Table 1, test accuracy %: ListOps (up to 2K tokens) and Text (byte-level IMDb, 4K)
LRA_TABLE1 = {
    "ListOps": {"full": 36.37, "bigbird": 36.05, "linformer": 35.70, "performer": 18.01},
    "Text": {"full": 64.27, "bigbird": 64.02, "linformer": 53.94, "performer": 65.40},
}
LRA_NAMES = {"full": "Transformer", "bigbird": "BigBird", "linformer": "Linformer", "performer": "Performer"}
TIMING_ORDER = (("cpu", "onnxruntime"), ("cpu", "torch"), ("cuda", "torch"), ("cuda", "onnxruntime"))  # preferred records
HEADERS = ["Task", "seq_len", "Stage", "Kind", "Layers", "Accuracy %", "Δ vs teacher (pts)", "Teacher %", "BoE %",
           "Baseline %", "Agreement %", "p50 ms", "Speed-up", "Peak MB", "Memory ×", "Timed", "Verdict"]


@dataclass
class Verdict:
    """The verdict's rows and notes (plain strings: the report turns them into its tables)."""

    headers: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    lra_headers: list[str] = field(default_factory=list)
    lra_rows: list[list[str]] = field(default_factory=list)


def accuracy_of(stage: dict | None) -> float | None:
    """Test accuracy in %: the ONNX artifact's, else the torch model's."""
    if not stage:
        return None
    value = stage.get("accuracy") if stage.get("accuracy") is not None else stage.get("accuracy_torch")
    return None if value is None else 100 * value


def interval_text(stage: dict, n_test: int | None) -> str:
    """' [low, high]' in %: the accuracy's 95% interval (recorded, else Wilson's from n_test), or '' without one."""
    interval, value = stage.get("accuracy_ci"), stage.get("accuracy")
    if not interval and value is not None and n_test:
        interval = wilson_interval(round(value * n_test), n_test)
    return f" [{100 * interval[0]:.2f}, {100 * interval[1]:.2f}]" if interval and value is not None else ""


def delta_interval_text(stage: dict, teacher: dict) -> str:
    """' [low, high]' in points (+ ' n.s.' when it holds zero): the paired interval recorded against the teacher, or ''."""
    recorded = stage.get("accuracy_delta") or {}
    if recorded.get("baseline") != teacher.get("name") or not recorded.get("ci"):
        return ""
    low, high = recorded["ci"]
    return f" [{100 * low:+.2f}, {100 * high:+.2f}]" + (" n.s." if contains_zero(recorded["ci"]) else "")


def find_teacher(results: dict) -> dict | None:
    """The run's baseline stage when it is a model of the pipeline, else its first `train` stage."""
    stages = results["stages"]
    named = next((s for s in stages if s["name"] == results.get("baseline") and not s.get("reference")), None)
    return named or next((s for s in stages if s["kind"] == "train"), None)


def timing(stage: dict | None, seq_len: int | None) -> tuple[float | None, float | None, str]:
    """(p50 ms, peak RSS MB, what was timed) at `seq_len`: CPU ONNX Runtime first, smallest batch; the
    peak memory of that batch, or of the batch the bench measured memory at (`bench.memory`: the largest)."""
    if not stage or seq_len is None:
        return None, None, ""
    records = [r for r in stage.get("latency") or [] if r.get("seq_len") == seq_len and r.get("p50_ms") is not None]
    for device, runtime in TIMING_ORDER:
        found = sorted((r for r in records if (r.get("device"), r.get("runtime")) == (device, runtime)), key=lambda r: r["batch"])
        if found:
            r = found[0]
            # peak memory at the timed batch, else at the batch the bench measured it (its largest), said in `what`
            memory = sorted((m for m in stage.get("peak_memory") or [] if m.get("seq_len") == seq_len
                             and m.get("peak_rss_bytes") is not None),
                            key=lambda m: (m.get("batch") != r["batch"], m.get("batch")))
            what = f"{device} {runtime}, batch {r['batch']}"
            if memory and memory[0].get("batch") != r["batch"]:
                what += f" (memory: batch {memory[0].get('batch')})"
            return r["p50_ms"], memory[0]["peak_rss_bytes"] / 1e6 if memory else None, what
    return None, None, ""


def verdict_text(accuracy: float | None, teacher: float | None, margin: float = MARGIN) -> str:
    """'within 2 points' or 'short by N points' (N beyond the margin), from accuracies in %."""
    if accuracy is None or teacher is None:
        return "no accuracy to judge"
    gap = round(teacher - accuracy, 2)  # as shown: a 0.001 difference is not "0.00 above it"
    if gap < 0:
        return f"within {margin:g} points of the teacher ({-gap:.2f} above it)"
    if gap == 0:
        return f"within {margin:g} points of the teacher (equal to it)"
    if gap <= margin:
        return f"within {margin:g} points of the teacher"
    return f"not within {margin:g} points: {gap:.2f} below the teacher, {gap - margin:.2f} beyond the margin"


def layers_text(swap: dict) -> str:
    """'all' or the swapped layer indices ('1', '0, 2'), the rest kept as they were."""
    layers, attention = swap.get("layers") or [], swap.get("attention") or []
    return "all" if not layers or len(layers) == len(attention) else ", ".join(map(str, layers))


def fmt(value: float | None, spec: str = ".2f", suffix: str = "") -> str:
    return "—" if value is None else f"{value:{spec}}{suffix}"


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    return numerator / denominator if numerator is not None and denominator else None


def build_verdict(runs: dict[str, dict], margin: float = MARGIN) -> Verdict | None:
    """The verdict over every run's swapped stages (None when no run has one), with the LRA reference table."""
    verdict = Verdict(HEADERS)
    for run, results in runs.items():
        swapped = [s for s in results["stages"] if (s.get("swap") or {}).get("to")]
        if not swapped:
            continue
        protocol = results.get("protocol") or {}
        task, seq_len = protocol.get("task") or run, protocol.get("seq_len")
        teacher = find_teacher(results)
        boe = next((s for s in results["stages"] if (s.get("distill") or {}).get("student") == "boe"), None)
        reference = next((s for s in results["stages"] if s.get("reference")), None)
        t_acc, boe_acc, ref_acc = accuracy_of(teacher), accuracy_of(boe), accuracy_of(reference)
        t_p50, t_peak, _ = timing(teacher, seq_len)
        prefix = f"{run}/" if len(runs) > 1 else ""
        for stage in [teacher, *swapped]:
            if stage is None:
                continue
            acc = accuracy_of(stage)
            p50, peak, timed = timing(stage, seq_len)
            is_teacher = stage is teacher
            kind = "full (teacher)" if is_teacher else stage["swap"]["to"]
            delta = None if acc is None or t_acc is None else round(acc - t_acc, 2) + 0.0  # + 0.0: no "-0.00"
            verdict.rows.append([
                task, fmt(seq_len, "d"), prefix + stage["name"], kind, "—" if is_teacher else layers_text(stage["swap"]),
                fmt(acc) + interval_text(stage, stage.get("n_test") or protocol.get("n_test")),
                "—" if is_teacher or delta is None else fmt(delta, "+.2f") + delta_interval_text(stage, teacher),
                fmt(t_acc), fmt(boe_acc), fmt(ref_acc),
                fmt(None if stage.get("agreement") is None else 100 * stage["agreement"]),
                fmt(p50), fmt(ratio(t_p50, p50), ".2f", "×"), fmt(peak, ".1f"), fmt(ratio(peak, t_peak), ".2f", "×"),
                timed or "—",
                "reference" if is_teacher else verdict_text(acc, t_acc, margin),
            ])
        if teacher is not None and results.get("baseline") not in (None, teacher["name"]):
            verdict.notes.append(f"{task}: agreement is with the baseline stage {results['baseline']}, "
                                 f"not the teacher {teacher['name']}.")
        if t_acc is not None and boe_acc is not None:
            lead = t_acc - boe_acc
            verdict.notes.append(f"{task}: the teacher is {lead:.2f} points above the bag-of-embeddings student"
                                 + ("." if lead >= 15
                                    else " (under 15: the task may not need attention, so matching the teacher shows little)."))
        elif t_acc is not None:
            verdict.notes.append(f"{task}: no bag-of-embeddings student in the run, so nothing shows the task needs attention.")
    if not verdict.rows:
        return None
    verdict.lra_headers = ["LRA task (Tay et al. 2021, Table 1)", *(LRA_NAMES[k] for k in LRA_TABLE1["ListOps"])]
    verdict.lra_rows = [[task, *(f"{v:.2f}" for v in row.values())] for task, row in LRA_TABLE1.items()]
    return verdict
