"""Reports: every stage of one or more runs against a baseline row, under one stated protocol.

`write_report` reads `runs/<name>/results.json` (schema: `eval/results_schema.json`), computes
a `Report` here, and writes it through `eval/render.py` as `report.md` (readable in a pull
request; figures as PNG files in `report_files/`) and `report.html` (self-contained).
Sections: summary table (deltas and ratios vs the baseline, best value per column highlighted;
every accuracy with its 95% interval and every Δ with a paired one, `eval/intervals.py`),
warnings, real traffic (each artifact serving real test texts, tokenization included, beside the
fixed-shape timings: `eval/traffic.py`), figures, the fused ONNX Runtime operators in each
artifact, the protocol the numbers were measured under, and every latency record in a
collapsible table: what a reader wants first comes first.
Comparison follows Long Range Arena's rule: like with like, or a warning that it is not.
When a run has attention swaps, a verdict section follows the summary (`eval/verdict.py`): per
task and kind, accuracy beside the teacher, a bag-of-embeddings student and the reference row,
agreement, latency and memory at the task's length, whether the kind is within 2 points of the
teacher (or by how much not), and LRA's published numbers as a reference table.

An embedding run (an embedding task: `embedding_eval` in its stages, eval/embedding.py) swaps the
accuracy columns for the embedding ones: recall@10 and recall@1 of the reverse dictionary with their
Wilson intervals, Δ recall@10 against the baseline row with its paired interval, MRR, the mean
cosine with the teacher's embeddings (interval, 5th percentile) and the 10-nearest-neighbour
overlap; its figures plot recall@10 against latency and size.

A stage marked `reference: true` (the classical `baseline` step: TF-IDF + logistic regression)
is a row for comparison, not a product of the pipeline: its Kind reads "(reference)", it is not
ranked for the best value of a column, its size is that of its own saved files (it has no ONNX
artifact), its latency is its CPU record in its own runtime, and the figures draw it with a
marker of its own, off the Pareto front.
"""

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from eval import plots
from eval.errors import SlimformerError
from eval.intervals import RESAMPLES, newcombe_interval, wilson_interval
from eval.io import atomic_dir, atomic_write_bytes, atomic_write_text
from eval.render import Report, Table, render_html, render_markdown
from eval.results import load_results
from eval.verdict import build_verdict

HEADLINE_BATCH = 8  # the batch the summary quotes latency at, when benchmarked; else the largest
CPU_RUNTIMES = ("onnxruntime", "sklearn")  # headline CPU records: ONNX Runtime, or a reference row's own (eval/baseline.py)
SPREAD_LIMIT = 0.2  # std/mean above this: timings too noisy to trust ratios
MB = 1e6
PROTOCOL_FIELDS = ("task", "task_description", "split", "n_test", "seq_len", "seq_lens", "batch_sizes",
                   "truncated", "data", "threads", "warmup", "repeats", "interleaved", "timing", "traffic", "devices", "cpu")
# truncated: texts cut at seq_len, per split; data: rows dropped and texts cut when the task's files were read;
# interleaved: CPU timings re-taken in interleaved rounds across stages;
# timing: the session/thread settings every timed call ran under (eval.bench.timing_settings);
# traffic: the real test texts the traffic timer served and its settings (eval/traffic.py)
LATENCY_FIELDS = ("device", "runtime", "precision", "batch", "seq_len", "threads",
                  "p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "throughput_per_s")
@dataclass
class Row:
    """One stage in the report: its display name (`run/stage` when comparing runs) and its results."""

    name: str
    stage: dict
    protocol: dict = field(default_factory=dict)  # its run's protocol: the MatMul peak its roofline divides by
    run: str | None = None  # its run's name: a paired accuracy interval holds only against a stage of the same run


@dataclass
class Column:
    """A summary column: how to get a row's number, how to print it, and whether more or less is better."""

    header: str
    value: Callable[[Row], float | None]
    text: Callable[[float, Row], str]
    best: Callable[[list[float]], float] | None = None


def run_name(results: dict, run_dir: Path) -> str:
    return results.get("run") or run_dir.resolve().name


def load_runs(run_dirs: list[Path]) -> dict[str, dict]:
    """The results of each run folder, keyed by run name; SlimformerError when none are given or names repeat."""
    if not run_dirs:
        raise SlimformerError("a report needs at least one run folder")
    loaded = [(Path(d), load_results(d)) for d in run_dirs]
    runs = {run_name(results, d): results for d, results in loaded}
    if len(runs) < len(loaded):
        names = [run_name(results, d) for d, results in loaded]
        raise SlimformerError(f"runs to compare must have distinct names, got {names}")
    return runs


def gather_rows(runs: dict[str, dict]) -> list[Row]:
    """One row per stage; stage names are prefixed `run/` when several runs are compared."""
    prefix = len(runs) > 1
    return [Row(f"{run}/{s['name']}" if prefix else s["name"], s, results.get("protocol") or {}, run)
            for run, results in runs.items() for s in results["stages"]]


def pick_baseline(runs: dict[str, dict], rows: list[Row], baseline: str | None) -> Row:
    """The row named `baseline` (a bare stage name means the first run's), else the first run's baseline, else row 0."""
    first_run = next(iter(runs))
    wanted = baseline or runs[first_run].get("baseline") or rows[0].name
    by_name = {row.name: row for row in rows}
    found = by_name.get(wanted) or by_name.get(f"{first_run}/{wanted}")
    if found is None and baseline is not None:
        raise SlimformerError(f"baseline {baseline!r} is not a stage; choose one of {sorted(by_name)}")
    return found or rows[0]


def headline_setting(rows: list[Row]) -> tuple[int, int] | None:
    """The summary's (batch, seq_len) in CPU ONNX Runtime: batch 8 if measured else the largest; largest seq_len."""
    records = [r for row in rows for r in row.stage.get("latency") or [] if is_headline_kind(r)]
    if not records:
        return None
    batches = {r["batch"] for r in records}
    return (HEADLINE_BATCH if HEADLINE_BATCH in batches else max(batches)), max(r["seq_len"] for r in records)


def is_headline_kind(record: dict) -> bool:
    """A CPU ONNX Runtime record (or a reference row's CPU record in its own runtime) with a setting (batch, seq_len)."""
    setting = record.get("batch") and record.get("seq_len")
    return bool(setting) and record.get("device") == "cpu" and record.get("runtime") in CPU_RUNTIMES


def is_reference(row: Row) -> bool:
    """A reference row (the classical baseline): compared with, not ranked, plotted apart."""
    return bool(row.stage.get("reference"))


def size_bytes(stage: dict) -> int | None:
    """Bytes on disk: the ONNX artifact's, or a reference row's own saved files (it has no ONNX)."""
    if stage.get("onnx_bytes") is not None:
        return stage["onnx_bytes"]
    return stage.get("model_bytes") if stage.get("reference") else None


def at_setting(records: list[dict] | None, setting: tuple[int, int] | None) -> dict | None:
    """The first CPU ONNX Runtime record measured at `setting` (batch, seq_len), if any."""
    matches = [r for r in records or [] if is_headline_kind(r) and (r.get("batch"), r.get("seq_len")) == setting]
    return matches[0] if matches else None


def latency_of(row: Row, setting: tuple[int, int] | None, key: str) -> float | None:
    record = at_setting(row.stage.get("latency"), setting)
    return record.get(key) if record else None


def memory_of(row: Row, setting: tuple[int, int] | None) -> float | None:
    """Peak RSS in MB at the headline setting (the first record when there is no latency to set it)."""
    records = row.stage.get("peak_memory") or []
    record = at_setting(records, setting) if setting else next(iter(records), None)
    return record["peak_rss_bytes"] / MB if record and record.get("peak_rss_bytes") is not None else None


def flops_of(row: Row, setting: tuple[int, int] | None) -> float | None:
    """FLOPs of one call at `setting` (the stage's `flops` grid, eval/flops.py)."""
    found = [f["flops"] for f in row.stage.get("flops") or [] if (f.get("batch"), f.get("seq_len")) == setting]
    return float(found[0]) if found else None


def achieved_of(row: Row, setting: tuple[int, int] | None) -> float | None:
    """FLOP/s the artifact reaches at the headline setting: FLOPs per call / p50."""
    record = at_setting(row.stage.get("latency"), setting)
    return record_roofline(row, record)[0] if record else None


def peak_fraction(row: Row, setting: tuple[int, int] | None) -> float | None:
    """Achieved FLOP/s over the run's measured MatMul peak of the record's precision (eval/peak.py): the roofline."""
    record = at_setting(row.stage.get("latency"), setting)
    return record_roofline(row, record)[1] if record else None


def record_roofline(row: Row, record: dict) -> tuple[float | None, float | None]:
    """(FLOP/s, share of the measured CPU MatMul peak) of one latency record: FLOPs per call at its
    (batch, seq_len) over its p50; the share only for CPU records, whose peak the run measured
    (eval/peak.py, ONNX Runtime at the run's threads)."""
    flops, p50 = flops_of(row, (record.get("batch"), record.get("seq_len"))), record.get("p50_ms")
    if flops is None or not p50:
        return None, None
    achieved = flops / (p50 / 1000.0)
    peak = ((row.protocol.get("peak") or {}).get(record.get("precision") or "fp32") or {}).get("flops_per_s")
    return achieved, ratio(achieved, peak) if record.get("device") == "cpu" else None


def n_test_of(row: Row) -> int | None:
    """Test texts the row's accuracy was measured on: its own count, else its run's."""
    return row.stage.get("n_test") or row.protocol.get("n_test")


def accuracy_interval(row: Row, key: str = "accuracy") -> tuple[float, float] | None:
    """The 95% interval of `accuracy` (or `accuracy_torch`): recorded (`<key>_ci`), else Wilson's from it and n_test."""
    recorded, value, n = row.stage.get(f"{key}_ci"), row.stage.get(key), n_test_of(row)
    if value is None:
        return None
    if recorded:
        return recorded[0], recorded[1]
    return wilson_interval(round(value * n), n) if n else None


def delta_interval(row: Row, base: Row) -> tuple[float, float, bool] | None:
    """(low, high, paired) of the row's accuracy minus the baseline row's, as fractions: the paired bootstrap
    recorded against this very baseline (`accuracy_delta`, same run), else Newcombe's unpaired interval."""
    if row is base or row.stage.get("accuracy") is None or base.stage.get("accuracy") is None:
        return None
    recorded, delta = row.stage.get("accuracy_delta") or {}, row.stage["accuracy"] - base.stage["accuracy"]
    same = row.run == base.run and recorded.get("baseline") == base.stage.get("name")
    fresh = abs(recorded.get("delta", float("nan")) - delta) < 1e-9  # else stale: recorded for other accuracies
    if recorded.get("ci") and same and fresh:
        return recorded["ci"][0], recorded["ci"][1], True
    n, n_base = n_test_of(row), n_test_of(base)
    if not n or not n_base:
        return None
    low, high = newcombe_interval(round(row.stage["accuracy"] * n), n, round(base.stage["accuracy"] * n_base), n_base)
    return low, high, False


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    return numerator / denominator if numerator is not None and denominator else None


def count_text(n: float) -> str:
    """1234567 -> '1.23M'."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{suffix}"
    return f"{n:.0f}"


def summary_columns(base: Row, setting: tuple[int, int] | None) -> list[Column]:
    """The summary table's columns; deltas and ratios are against `base`."""

    def stage_field(key: str) -> Callable[[Row], float | None]:
        return lambda row: row.stage.get(key)

    def p50(row: Row) -> float | None:
        return latency_of(row, setting, "p50_ms")

    def size_mb(row: Row) -> float | None:
        size = size_bytes(row.stage)
        return size / MB if size is not None else None

    def size_text(v: float, row: Row) -> str:
        files = " files" if row.stage.get("onnx_bytes") is None else ""  # a reference row: its own files, no ONNX
        return with_ratio(f"{v:.2f}{files}", ratio(base_size, v), "× smaller")

    def delta(row: Row) -> float | None:
        accuracy, base_accuracy = row.stage.get("accuracy"), base.stage.get("accuracy")
        return None if accuracy is None or base_accuracy is None else 100 * (accuracy - base_accuracy)

    def percent(v: float, row: Row) -> str:
        return f"{100 * v:.2f}"

    def accuracy_text(key: str) -> Callable[[float, Row], str]:
        def text(v: float, row: Row) -> str:
            interval = accuracy_interval(row, key)
            return f"{100 * v:.2f}" + (f" [{100 * interval[0]:.2f}, {100 * interval[1]:.2f}]" if interval else "")

        return text

    def delta_text(v: float, row: Row) -> str:
        interval = delta_interval(row, base)
        if interval is None:
            return f"{v:+.2f}"
        low, high, paired = interval
        marks = [m for m, on in (("n.s.", low <= 0 <= high), ("unpaired", not paired)) if on]
        return f"{v:+.2f} [{100 * low:+.2f}, {100 * high:+.2f}]" + "".join(f" {m}" for m in marks)

    def ms(v: float, row: Row) -> str:
        return f"{v:.2f}"

    base_params, base_size, base_p50 = base.stage.get("params"), size_mb(base), p50(base)
    return [
        Column("Stage", lambda row: row.name, lambda v, row: v),
        Column("Kind", stage_field("kind"), lambda v, row: f"{v} (reference)" if is_reference(row) else v),
        Column("From", stage_field("parent"), lambda v, row: v),  # the stage it was made from: the pipeline's chain
        Column("Accuracy % (ONNX)", stage_field("accuracy"), accuracy_text("accuracy"), max),
        Column("Δ pts", delta, delta_text),
        Column("Accuracy % (torch)", stage_field("accuracy_torch"), accuracy_text("accuracy_torch"), max),
        Column("Macro-F1", stage_field("macro_f1"), lambda v, row: f"{v:.3f}", max),
        Column("Agreement %", stage_field("agreement"), percent, max),
        Column("Params", stage_field("params"),
               lambda v, row: with_ratio(count_text(v), ratio(v, base_params), "×"), min),
        Column("ONNX MB", size_mb, size_text, min),
        Column("p50 ms", p50, ms, min),
        Column("p99 ms", lambda row: latency_of(row, setting, "p99_ms"), ms, min),
        Column("Speed-up", lambda row: ratio(base_p50, p50(row)), lambda v, row: f"{v:.2f}×", max),
        Column("Peak RSS MB", lambda row: memory_of(row, setting), lambda v, row: f"{v:.1f}", min),
        Column("GFLOP/call", lambda row: flops_of(row, setting), lambda v, row: f"{v / 1e9:.3g}", min),
        Column("GFLOP/s", lambda row: achieved_of(row, setting), lambda v, row: f"{v / 1e9:.3g}", max),
        Column("% of peak", lambda row: peak_fraction(row, setting), lambda v, row: f"{100 * v:.1f}", max),
    ]


ACCURACY_HEADERS = ("Accuracy % (ONNX)", "Δ pts", "Accuracy % (torch)", "Macro-F1", "Agreement %")


def is_embedding_run(rows: list[Row]) -> bool:
    return any(row.stage.get("embedding_eval") for row in rows)


def recall10(row: Row) -> float | None:
    return ((row.stage.get("embedding_eval") or {}).get("retrieval") or {}).get("recall@10", {}).get("mean")


def embedding_columns(base: Row) -> list[Column]:
    """The columns an embedding run shows in place of accuracy (module docstring)."""

    def field(*path: str) -> Callable[[Row], dict | float | None]:
        def get(row: Row):
            value = row.stage.get("embedding_eval")
            for key in path:
                value = value.get(key) if isinstance(value, dict) else None
            return value
        return get

    def mean_of(*path: str) -> Callable[[Row], float | None]:
        return lambda row: (field(*path)(row) or {}).get("mean")

    def with_ci(*path: str, scale: float = 100.0, digits: int = 2) -> Callable[[float, Row], str]:
        def text(v: float, row: Row) -> str:
            ci = (field(*path)(row) or {}).get("ci")
            return f"{scale * v:.{digits}f}" + (f" [{scale * ci[0]:.{digits}f}, {scale * ci[1]:.{digits}f}]" if ci else "")
        return text

    def delta_r10(row: Row) -> float | None:
        recorded = field("retrieval_delta", "recall@10")(row) or {}
        return 100 * recorded["delta"] if recorded.get("baseline") == base.stage.get("name") and row is not base else None

    def delta_text(v: float, row: Row) -> str:
        ci = field("retrieval_delta", "recall@10")(row)["ci"]
        return f"{v:+.2f} [{100 * ci[0]:+.2f}, {100 * ci[1]:+.2f}]" + (" n.s." if ci[0] <= 0 <= ci[1] else "")

    def cosine_text(v: float, row: Row) -> str:
        p5 = field("fidelity", "cosine_p5")(row)
        return with_ci("fidelity", "cosine", scale=1.0, digits=4)(v, row) + (f", p5 {p5:.3f}" if p5 is not None else "")

    return [
        Column("Recall@10 %", mean_of("retrieval", "recall@10"), with_ci("retrieval", "recall@10"), max),
        Column("Δ R@10 pts", delta_r10, delta_text),
        Column("Recall@1 %", mean_of("retrieval", "recall@1"), with_ci("retrieval", "recall@1"), max),
        Column("MRR", mean_of("retrieval", "mrr"), with_ci("retrieval", "mrr", scale=1.0, digits=3), max),
        Column("Cosine w/ teacher", mean_of("fidelity", "cosine"), cosine_text, max),
        Column("10-NN overlap %", mean_of("fidelity", "knn_overlap"), with_ci("fidelity", "knn_overlap", digits=1), max),
    ]


def columns_for(rows: list[Row], base: Row, setting: tuple[int, int] | None) -> list[Column]:
    """The summary's columns: accuracy for a classification run, the embedding measures for an embedding run."""
    columns = summary_columns(base, setting)
    if not is_embedding_run(rows):
        return columns
    kept = [c for c in columns if c.header not in ACCURACY_HEADERS]
    at = next(i for i, c in enumerate(kept) if c.header == "From") + 1
    return kept[:at] + embedding_columns(base) + kept[at:]


def with_ratio(text: str, value: float | None, suffix: str) -> str:
    return f"{text} ({value:.2f}{suffix})" if value is not None else text


def summary_table(rows: list[Row], columns: list[Column]) -> Table:
    """Cells of every row; the best value of a column is marked when at least two rows have one.

    Reference rows are not ranked: the best is the pipeline's best, the reference its yardstick."""
    values = [[column.value(row) for column in columns] for row in rows]
    best = []
    for j, column in enumerate(columns):
        present = [v[j] for row, v in zip(rows, values, strict=True) if v[j] is not None and not is_reference(row)]
        best.append(column.best(present) if column.best and len(present) > 1 else None)
    table = Table([column.header for column in columns])
    for row, row_values in zip(rows, values, strict=True):
        cells = zip(columns, row_values, best, strict=True)
        ranked = not is_reference(row)
        table.rows.append([("—", False) if v is None else (c.text(v, row), ranked and v == b) for c, v, b in cells])
    return table


def latency_table(rows: list[Row]) -> Table:
    """Every latency record of every stage, with the roofline of each CPU record: its FLOP/s and the
    share of the run's MatMul peak of its precision (so every point of the grid, not only the headline's)."""
    table = Table(["Stage", *LATENCY_FIELDS, "GFLOP/s", "% of peak"])
    for row in rows:
        for record in row.stage.get("latency") or []:
            achieved, fraction = record_roofline(row, record)
            table.rows.append([(row.name, False)] + [(cell_text(record.get(k)), False) for k in LATENCY_FIELDS]
                              + [("—" if achieved is None else f"{achieved / 1e9:.3g}", False),
                                 ("—" if fraction is None else f"{100 * fraction:.1f}", False)])
    return table


def traffic_of(row: Row, mode: str, padding: str = "longest") -> dict | None:
    """The row's real-traffic record (eval/traffic.py) of a mode (`single`, `sorted`) and padding."""
    return next((r for r in row.stage.get("traffic") or [] if (r.get("mode"), r.get("padding")) == (mode, padding)), None)


def traffic_table(rows: list[Row]) -> Table:
    """Real traffic beside the fixed shapes, for the rows timed on real texts: batch 1 per request at the texts' own
    length, padded to seq_len, and the fixed-shape forward pass; sorted batches in texts/s beside the fixed-shape
    throughput at the same batch. The best of a column is marked."""

    def field_of(mode: str, key: str, padding: str = "longest") -> Callable[[Row], float | None]:
        return lambda row: (traffic_of(row, mode, padding) or {}).get(key)

    def fixed(row: Row, key: str, batch: int | None) -> float | None:
        record = traffic_of(row, "single") or traffic_of(row, "sorted")
        return latency_of(row, (batch, record.get("seq_len")), key) if batch else None

    def speedup(row: Row) -> float | None:
        return ratio(field_of("single", "p50_ms", "max_length")(row), field_of("single", "p50_ms")(row))

    def tokens(row: Row) -> str | None:
        record = traffic_of(row, "single") or traffic_of(row, "sorted")
        return f"{record['mean_tokens']:.1f} / {record.get('max_tokens')}" if record.get("mean_tokens") is not None else None

    def ms(v: float, row: Row) -> str:
        return f"{v:.2f}"

    def per_s(v: float, row: Row) -> str:
        return f"{v:.0f}"

    columns = [
        Column("Stage", lambda row: row.name, lambda v, row: v),
        Column("Texts", lambda row: (traffic_of(row, "single") or traffic_of(row, "sorted"))["n_texts"], lambda v, row: str(v)),
        Column("Tokens mean / max", tokens, lambda v, row: v),
        Column("b=1 p50 ms", field_of("single", "p50_ms"), ms, min),
        Column("b=1 p99 ms", field_of("single", "p99_ms"), ms, min),
        Column("b=1 p50 ms padded to seq_len", field_of("single", "p50_ms", "max_length"), ms, min),
        Column("Dynamic-length speed-up", speedup, lambda v, row: f"{v:.2f}×", max),
        Column("b=1 p50 ms fixed shape", lambda row: fixed(row, "p50_ms", 1), ms, min),
        Column("Sorted batches texts/s", field_of("sorted", "texts_per_s"), per_s, max),
        Column("Fixed shape texts/s", lambda row: fixed(row, "throughput_per_s", field_of("sorted", "batch")(row)), per_s, max),
    ]
    return summary_table([row for row in rows if traffic_of(row, "single") or traffic_of(row, "sorted")], columns)


def accuracy_caption(runs: dict[str, dict]) -> str:
    """How far an accuracy can be trusted: the test texts behind it, what one point is worth, what the brackets are."""
    counts = [(run, (results.get("protocol") or {}).get("n_test")) for run, results in runs.items()]
    worth = "; ".join(f"{run + ': ' if len(runs) > 1 else ''}{n} test texts, so one point is {n / 100:.3g} texts"
                      for run, n in counts if n)
    return ((f"Accuracy on {worth}. " if worth else "")
            + "Brackets hold 95% intervals: Wilson's for an accuracy; for Δ a paired bootstrap over the same test texts "
            f"({RESAMPLES:,} resamples, fixed seed), or Newcombe's interval marked unpaired (rows of different runs, or "
            "no per-text record); n.s.: the interval holds zero, so the difference is within noise.")


def embedding_caption(rows: list[Row]) -> str:
    """What an embedding run's columns measure, and on what (eval/embedding.py)."""
    record = next((r.stage["embedding_eval"] for r in rows if r.stage.get("embedding_eval")), {})
    return (f"Retrieval: a reverse dictionary, {record.get('n_queries', '?'):,} queries (held-out synsets' lemma names) "
            f"over {record.get('n_corpus', '?'):,} glosses; ties count against a query. Cosine: with the teacher's embedding "
            "of each held-out text (mean, then its 5th percentile); 10-NN overlap: the share of each held-out gloss's "
            "10 nearest neighbours under the teacher that the row finds too. Brackets hold 95% intervals: Wilson's for a "
            "recall, a bootstrap for a mean; Δ R@10 a paired bootstrap over the same queries (n.s.: it holds zero).")


def traffic_caption(runs: dict[str, dict]) -> str:
    """Which texts and settings the traffic table's numbers come from (the protocol's `traffic`)."""
    settings = [(run, (results.get("protocol") or {}).get("traffic") or {}) for run, results in runs.items()]
    said = "; ".join(f"{run + ': ' if len(runs) > 1 else ''}the first {t.get('n_texts')} test texts, truncated at "
                     f"{t.get('seq_len')} tokens, sorted batches of {t.get('batch_size')}, {t.get('threads')} threads"
                     for run, t in settings if t)
    return ("Each stage's ONNX artifact serving real test texts as a user does, its own tokenizer's time included "
            f"({said or 'settings: see the protocol'}). b=1: one request per text, at the text's own length; padded to "
            "seq_len: the same requests padded to the run's seq_len (the dynamic-length speed-up is their ratio); fixed "
            "shape: the summary's timer, one forward pass on random ids at seq_len, no tokenization. Sorted batches: every "
            "text, tokenized in one call, in length-sorted batches padded to their longest, results in input order; fixed "
            "shape texts/s: the timer's throughput at the same batch and seq_len.")


def fusions_table(rows: list[Row]) -> Table:
    """The fused ONNX Runtime ops in each stage's artifact (`fusions`: op -> count), for stages that record them."""
    table = Table(["Stage", "Fused ops in the artifact"])
    for row in rows:
        fusions = row.stage.get("fusions")
        if fusions is not None:
            flash = " (flash kernel)" if row.stage.get("flash_attention") else ""
            text = ", ".join(f"{op} ×{n}" + (flash if op == "MultiHeadAttention" else "") for op, n in fusions.items())
            text = text or "none (unfused graph)"
            table.rows.append([(row.name, False), (text, False)])
    return table


def cell_text(value: object) -> str:
    return "—" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def protocol_table(runs: dict[str, dict]) -> Table:
    """The measurement protocol, one column per run, library versions last."""
    protocols = [results.get("protocol") or {} for results in runs.values()]
    versions = [p.get("versions") or {} for p in protocols]
    table = Table(["", *runs])
    for key in PROTOCOL_FIELDS:
        table.rows.append([(key, False)] + [(protocol_text(p.get(key)), False) for p in protocols])
    table.rows.append([("MatMul peak (ONNX Runtime)", False)] + [(peak_text(p.get("peak")), False) for p in protocols])
    for name in sorted({name for v in versions for name in v}):
        table.rows.append([(name, False)] + [(protocol_text(v.get(name)), False) for v in versions])
    return table


def peak_text(peak: dict | None) -> str:
    """'fp32 65.6 GFLOP/s (256³), int8 149 GOP/s (384³), 2 threads' from protocol.peak."""
    if not peak:
        return "—"
    parts = [f"{p} {peak[p]['flops_per_s'] / 1e9:.3g} G{'FLOP' if p == 'fp32' else 'OP'}/s ({peak[p].get('size')}³)"
             for p in ("fp32", "int8") if isinstance(peak.get(p), dict)]
    threads = {peak[p].get("threads") for p in ("fp32", "int8") if isinstance(peak.get(p), dict)}
    return ", ".join(parts) + "".join(f", {t} threads" for t in threads if t)


def protocol_text(value: object) -> str:
    if isinstance(value, dict):  # nested (timing): "onnxruntime: (threads 2, ...); torch: (...)"
        sep = "; " if any(isinstance(v, dict) for v in value.values()) else ", "
        return sep.join(f"{k}: ({protocol_text(v)})" if isinstance(v, dict) else f"{k} {v}" for k, v in value.items())
    return ", ".join(map(str, value)) if isinstance(value, list) else cell_text(value)


def find_warnings(runs: dict[str, dict], rows: list[Row], base: Row) -> list[str]:
    """Noisy timings, failed parity and protocol differences between runs."""
    warnings, noisy_rows = [], []
    for row in rows:
        records = [r for r in row.stage.get("latency") or [] if r.get("std_ms") is not None and r.get("mean_ms")]
        spreads = [r["std_ms"] / r["mean_ms"] for r in records]
        noisy = [s for s in spreads if s > SPREAD_LIMIT]
        if noisy:
            noisy_rows.append(f"{row.name} (up to {max(noisy):.2f} in {len(noisy)} of {len(spreads)} records)")
        diff, atol = (row.stage.get("parity") or {}).get("max_abs_diff"), (row.stage.get("parity") or {}).get("atol")
        if diff is not None and atol is not None and diff > atol:  # every row, whatever the timings
            warnings.append(f"{row.name}: ONNX output differs from torch by {diff:.3g}, above atol {atol:.3g}.")
    if noisy_rows:
        warnings.append(f"latency spread std/mean above {SPREAD_LIMIT}: {'; '.join(noisy_rows)}. Speed-ups from these "
                        "timings are not trustworthy: raise repeats, quiet the machine, or re-time with "
                        "`slimformer bench <run folder>`.")
    protocols = [results.get("protocol") or {} for results in runs.values()]
    compared = [k for k in (*PROTOCOL_FIELDS, "versions") if k != "task_description"]
    differing = [k for k in compared if len({json.dumps(p.get(k), sort_keys=True) for p in protocols}) > 1]
    if differing:
        warnings.append(f"runs were measured under different protocols ({', '.join(differing)}): "
                        "this comparison is not like with like.")
    if base.stage.get("accuracy") is None and not is_embedding_run(rows):
        warnings.append(f"baseline {base.name} has no ONNX accuracy, so the Δ column is empty.")
    return warnings


def make_figures(rows: list[Row], setting: tuple[int, int] | None) -> list[tuple[str, str, bytes]]:
    """The figures that have data: trade-offs, latency against batch, training curves."""
    label = f"CPU ONNX Runtime, batch {setting[0]}, seq_len {setting[1]}" if setting else ""
    quality = recall10 if is_embedding_run(rows) else (lambda r: r.stage.get("accuracy"))  # an embedding run: recall@10
    timed = [(r.name, latency_of(r, setting, "p50_ms"), quality(r), is_reference(r)) for r in rows]
    timed = [t for t in timed if t[1] and t[2] is not None]
    sized = [(r.name, size_bytes(r.stage), quality(r), is_reference(r)) for r in rows]
    sized = [(n, b / MB, a, ref) for n, b, a, ref in sized if b and a is not None]
    by_batch = {r.name: [(x["batch"], x["p50_ms"]) for x in r.stage.get("latency") or []
                         if is_headline_kind(x) and setting and x["seq_len"] == setting[1]] for r in rows}
    by_length = {r.name: [(x["seq_len"], x["p50_ms"]) for x in r.stage.get("latency") or []
                          if is_headline_kind(x) and setting and x["batch"] == setting[0]] for r in rows}
    curves = {r.name: r.stage.get("train_curve") or [] for r in rows}
    measure = {"ylabel": "recall@10, % (reverse dictionary)"} if is_embedding_run(rows) else {}
    what = "Recall@10" if measure else "Accuracy"
    candidates = [
        (f"{what} vs latency", "accuracy_vs_latency.png",
         plots.accuracy_vs_latency(*columns_of(timed)[:3], label, reference=columns_of(timed)[3], **measure) if timed else None),
        (f"{what} vs size", "accuracy_vs_size.png",
         plots.accuracy_vs_size(*columns_of(sized)[:3], reference=columns_of(sized)[3], **measure) if sized else None),
        ("Latency vs batch size", "latency_vs_batch.png",
         plots.latency_curves(by_batch, "batch size", f"CPU ONNX Runtime, seq_len {setting[1]}") if setting else None),
        ("Latency vs sequence length", "latency_vs_length.png",
         plots.latency_curves(by_length, "sequence length (tokens)", f"CPU ONNX Runtime, batch {setting[0]}")
         if setting else None),
        ("Training curves", "training_curves.png", plots.training_curves(curves)),
    ]
    for r in rows:  # pruning stages: head importance per round, and the sensitivity sweep
        slug = "".join(c if c.isalnum() or c in "-_" else "_" for c in r.name)
        scores = r.stage.get("head_importance") or {}
        candidates.append((f"Head importance: {r.name} ({scores.get('method')})", f"head_importance_{slug}.png",
                           plots.head_importance(scores.get("rounds") or [], f"{r.name}: {scores.get('method')} importance")
                           if scores else None))
        sweep = r.stage.get("sensitivity")
        candidates.append((f"Pruning sensitivity: {r.name}", f"sensitivity_{slug}.png",
                           plots.sensitivity(sweep, f"parent of {r.name}, masked, no recovery") if sweep else None))
    return [(title, name, png) for title, name, png in candidates if png]


def columns_of(triples: list[tuple]) -> tuple[list, ...]:
    return tuple(map(list, zip(*triples, strict=True)))


def build_report(runs: dict[str, dict], baseline: str | None) -> Report:
    """Compute every section from the loaded results of each run (keyed by run name)."""
    rows = gather_rows(runs)
    if not rows:
        raise SlimformerError(f"no stages to report in run(s) {', '.join(runs)}: their 'stages' lists are empty")
    base = pick_baseline(runs, rows, baseline)
    setting = headline_setting(rows)
    threads = {str(r.get("threads")) for row in rows for r in row.stage.get("latency") or [] if is_headline_kind(r)}
    where = (f"CPU, ONNX Runtime, batch {setting[0]}, seq_len {setting[1]}, threads {', '.join(sorted(threads))}"
             if setting else "no CPU ONNX Runtime timings")
    caption = (f"Headline latency: {where}. Δ, ratios and speed-up are against {base.name}. "
               "GFLOP/call counts every matrix product of one call from the config; GFLOP/s is that over p50; "
               "% of peak divides it by the run's measured ONNX Runtime MatMul peak of the same precision "
               "(protocol: MatMul peak). Best value per column in bold.")
    if any(is_reference(row) for row in rows):
        caption += (" Rows marked (reference) are classical models fitted on the same split, timed on raw text in "
                    "their own runtime, sized by their own files; they are shown for comparison and not ranked.")
    caption += " " + (embedding_caption(rows) if is_embedding_run(rows) else accuracy_caption(runs))
    return Report(
        title=" vs ".join(runs),
        commands=[results["command"] for results in runs.values() if results.get("command")],
        protocol=protocol_table(runs),
        caption=caption,
        summary=summary_table(rows, columns_for(rows, base, setting)),
        warnings=find_warnings(runs, rows, base),
        figures=make_figures(rows, setting),
        latency=latency_table(rows),
        verdict=build_verdict(runs),
        fusions=fusions_table(rows),
        traffic=traffic_table(rows),
        traffic_caption=traffic_caption(runs),
    )


def write_report(run_dirs: list[Path], out_dir: Path | None = None, baseline: str | None = None) -> dict[str, Path]:
    """Write `report.md`, `report.html` and `report_files/*.png`; return their paths (keys md, html, files).

    One run: into its own folder. Several: into `out_dir`, by default `runs/compare-<names>`
    beside the first run, with stages named `run/stage`. `baseline` names the row that
    deltas and ratios are against (default: the first run's `baseline`, else its first stage).
    """
    run_dirs = [Path(d) for d in run_dirs]
    runs = load_runs(run_dirs)
    out_dir = out_dir or (run_dirs[0] if len(runs) == 1 else run_dirs[0].parent / f"compare-{'-'.join(runs)}")
    report = build_report(runs, baseline)
    for folder in dict.fromkeys([out_dir, *run_dirs]):  # `slimformer bench --scaling --out RUN_DIR` left scaling plots here
        if (folder / "scaling.json").is_file():
            from eval.scaling import figures as scaling_figures

            report.figures += scaling_figures(json.loads((folder / "scaling.json").read_text(encoding="utf-8")))
    paths = {"md": out_dir / "report.md", "html": out_dir / "report.html", "files": out_dir / "report_files"}
    with atomic_dir(paths["files"]) as files_dir:
        for _, name, png in report.figures:
            atomic_write_bytes(files_dir / name, png)
    atomic_write_text(paths["md"], render_markdown(report, "report_files"))
    atomic_write_text(paths["html"], render_html(report))
    return paths
