"""The report of a `slimformer compress` search: what the budget cost, read from `runs/<name>/search.json`.

    python -m eval.search_report runs/<name>        # writes runs/<name>/report.md and report.html

`write_search_report` reads `search.json` (format: `eval/search_schema.json`), computes a `Page` of
sections here, and prints it twice, the same sections in the same order: `report.md` (figures as PNG
files in `report_files/`) and `report.html` (self-contained: inline CSS, figures as base64 PNG, no
scripts), with the run report's tables, escaping and look (`eval/render.py`, `eval/plots.py`).
Sections: a banner when the search did not complete; the summary (the budget, which budgets the
chosen candidate meets and by how much it misses the others, the chosen candidate against the
teacher with its paired 95% interval, the rank correlation of cheap and full accuracy, the latency
model's error, how the test split was read); the front; every trial against latency and size
(full fidelity filled, cheap estimates hollow, the front joined, the budget as lines, the chosen
model a star: `eval/search_plots.py`); sensitivity; the latency model; time per phase; every
trial; the protocol.

The file is validated against `eval/search_schema.json` by a small interpreter of the keywords the
schema uses (type, required, properties, items, enum, const, minimum, maximum, minItems, maxItems,
$ref): the report reads the schema as its one definition of the format, and works the same whether
or not the `jsonschema` package (a test dependency only) is installed.
"""

import base64
import html
import json
import math
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

from eval import search_plots
from eval.errors import ReportError
from eval.io import atomic_dir, atomic_write_bytes, atomic_write_text
from eval.render import CSS, Table, markdown_table, md_escape
from eval.render import html_table as render_html_table

SEARCH_FILE = "search.json"
SCHEMA_FILE = Path(__file__).with_name("search_schema.json")
SCHEMA_ID = "slimformer-search/1"
FILES_DIR = "report_files"
MB = 1e6
ALERT_CSS = ".alert{background:#fde8e8;border-left:6px solid #d62728;padding:8px 12px;margin:8px 0;font-weight:bold}"
ENDED = {  # why a search that did not complete still has a report, and what to do next
    "time limit": "it stopped at its time limit (--time). The front and the choice are the best found so far; run the "
                  "same command with more time to resume it without repeating finished trials.",
    "interrupted": "it was interrupted. The front and the choice are the best found so far; run the same command again "
                   "to resume it without repeating finished trials.",
    "impossible budget": "no candidate it can build meets the budget. The nearest candidate is chosen; what it misses, "
                         "and by how much, is said below.",
}
RESUMES = "running it again resumes the search without repeating finished trials"
NOTHING_CHOSEN = ("No trial has finished its full recovery yet, so there is no front and nothing is chosen: cheap estimates "
                  "steer the search but are never chosen.")
FRONT_CAPTION = ("The trials no other full-fidelity trial beats, with test accuracy scored only for them, after the search "
                 "chose on validation.")
TRIALS_CAPTION = ("Filled points: full recovery, the only ones the front and the choice are made from. Hollow points: cheap "
                  "estimates (one-shot cut, short recovery on a subset), joined by a grey line to their full result when they "
                  "have one. Dashed lines: the budget. Star: the chosen model. A point without a measured latency or size is "
                  "drawn at its predicted one.")
BUDGETS = {"max_drop": "accuracy", "min_val_accuracy": "accuracy", "max_latency_ms": "latency", "max_mb": "size"}


@dataclass
class Section:
    """A titled part of the page; blocks are ("p" | "alert", text), ("list", [text]), ("table", Table)
    or ("figure", (title, file name, PNG bytes)). Text may hold `code spans`."""

    title: str
    blocks: list[tuple] = field(default_factory=list)


@dataclass
class Page:
    title: str
    command: str | None
    alert: str | None
    sections: list[Section]

    @property
    def figures(self) -> list[tuple[str, str, bytes]]:
        return [b[1] for s in self.sections for b in s.blocks if b[0] == "figure"]


def rerun_hint(command: str | None = None) -> str:
    run = f"`{command}`" if command else "the `slimformer compress ...` command that wrote it"
    return f"re-run {run}: it resumes the search without repeating finished trials and rewrites this file"


def schema_error(value, node: dict, root: dict, where: str) -> str | None:
    """The first place `value` breaks the schema `node` (a subset of JSON Schema: see the module docstring), or None."""
    if "$ref" in node:
        error = schema_error(value, root["$defs"][node["$ref"].removeprefix("#/$defs/")], root, where)
        if error:
            return error
    shown = json.dumps(value)[:60]
    if "type" in node:
        types = [node["type"]] if isinstance(node["type"], str) else node["type"]
        if not any(is_type(value, t) for t in types):
            return f"{where}: expected {' or '.join(types)}, got {shown}"
    if "const" in node and value != node["const"]:
        return f"{where}: expected {json.dumps(node['const'])}, got {shown}"
    if "enum" in node and value not in node["enum"]:
        return f"{where}: expected one of {', '.join(map(json.dumps, node['enum']))}, got {shown}"
    bounds = node.get("minimum", -math.inf), node.get("maximum", math.inf)
    if is_type(value, "number") and (value < bounds[0] or value > bounds[1]):  # NaN passes, as in jsonschema
        return f"{where}: {value} is outside [{bounds[0]}, {bounds[1]}]"
    if isinstance(value, dict):
        missing = [key for key in node.get("required", []) if key not in value]
        if missing:
            return f"{where}: missing {', '.join(missing)}"
        for key, sub in node.get("properties", {}).items():
            if key in value and (error := schema_error(value[key], sub, root, f"{where}.{key}")):
                return error
    if isinstance(value, list):
        if not node.get("minItems", 0) <= len(value) <= node.get("maxItems", len(value)):
            return f"{where}: expected {node.get('minItems')} to {node.get('maxItems')} items, got {len(value)}"
        for i, item in enumerate(value):
            if "items" in node and (error := schema_error(item, node["items"], root, f"{where}[{i}]")):
                return error
    return None


def is_type(value, name: str) -> bool:
    if name in ("number", "integer"):
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        return number and (name == "number" or float(value).is_integer())
    return isinstance(value, {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}[name])


def load_search(run_dir: str | Path) -> dict:
    """Read and validate `run_dir/search.json`; ReportError naming the file and saying how to rewrite it when unusable."""
    path = Path(run_dir) / SEARCH_FILE
    if not path.is_file():
        raise ReportError(f"{path} not found: pass the run folder of a `slimformer compress` search (runs/<name>), "
                          f"or {rerun_hint()}")
    try:
        search = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ReportError(f"{path} is not valid JSON, e.g. cut short ({e}); {rerun_hint()}") from e
    command = search.get("command") if isinstance(search, dict) and isinstance(search.get("command"), str) else None
    if isinstance(search, dict) and "schema" in search and search["schema"] != SCHEMA_ID:
        raise ReportError(f"{path} has schema {search['schema']!r}; this slimformer reads {SCHEMA_ID!r}: "
                          f"{rerun_hint(command)}")
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    error = schema_error(search, schema, schema, "search.json") or reference_error(search)
    if error:
        raise ReportError(f"{path} does not match eval/search_schema.json: {error}; {rerun_hint(command)}")
    return search


def reference_error(search: dict) -> str | None:
    """Trial ids that repeat, or that the front, front_test or chosen name but trials lacks (a schema cannot say so)."""
    ids = [t["id"] for t in search["trials"]]
    named = [*(search.get("front") or []), *[f["trial"] for f in search.get("front_test") or []],
             *([search["chosen"]["trial"]] if search.get("chosen") and search["chosen"]["trial"] is not None else [])]
    if unknown := sorted({i for i in named if i not in ids}):
        return f"front, front_test or chosen name trial ids {unknown} that are not in trials"
    return "trial ids repeat" if len(set(ids)) < len(ids) else None


def pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.2f}"


def interval_text(ci: list[float] | None, scale: float = 100, sign: str = "") -> str:
    return f" [{scale * ci[0]:{sign}.2f}, {scale * ci[1]:{sign}.2f}]" if ci else ""


def accuracy_text(value: float | None, ci: list[float] | None) -> str:
    return "—" if value is None else pct(value) + interval_text(ci)


def delta_text(delta: dict | None) -> str:
    """Δ in points with its paired interval (already in points), marked n.s. when the interval holds 0."""
    if not delta or delta.get("points") is None:
        return "—"
    ci = delta.get("ci")
    return f"{delta['points']:+.2f}" + interval_text(ci, 1, "+") + (" n.s." if ci and ci[0] <= 0 <= ci[1] else "")


def number(value: float | None, unit: str = "", digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}{unit}"


def megabytes(n_bytes: float | None) -> float | None:
    return None if n_bytes is None else n_bytes / MB


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds >= 3600:
        return f"{int(seconds // 3600)} h {round(seconds % 3600 / 60)} min"
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def uniform(values: list | None) -> str | None:
    """A per-layer list as text: one value when all layers agree, else all of them."""
    if not values:
        return None
    return str(values[0]) if len({json.dumps(v) for v in values}) == 1 else "/".join(map(str, values))


def shape_text(shape: dict | None) -> str:
    """`3 layers, dim 192, 6 heads, ffn 768, vocab 15000, int8 dynamic`; keys it does not know follow as `key value`."""
    if not shape:
        return "—"
    known = {"n_layers": lambda v: f"{v} layer{'s' * (v != 1)}", "dim": lambda v: f"dim {v}",
             "n_heads": lambda v: f"{uniform(v) if isinstance(v, list) else v} heads",
             "ffn_dim": lambda v: f"ffn {uniform(v) if isinstance(v, list) else v}",
             "vocab_size": lambda v: f"vocab {v}", "int8": lambda v: f"int8 {v}" if v is not True else "int8"}
    ordered = [k for k in known if k in shape] + [k for k in shape if k not in known]
    shown = [k for k in ordered if not (shape[k] is None or shape[k] is False or shape[k] == [] or shape[k] == "")]
    parts = [known[k](shape[k]) if k in known else f"{k} {shape[k]}" for k in shown]
    return ", ".join(parts) or "—"


def measured(trial: dict) -> dict:
    """The trial's most trusted measurement: full fidelity, else its cheap estimate."""
    return trial.get("full") or trial.get("cheap") or {}


def budget_value(name: str, value) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "—" if value is None else str(value)
    kind = BUDGETS.get(name)
    return {"accuracy": f"{pct(value)}%", "latency": f"{value:.2f} ms", "size": f"{value:.2f} MB"}.get(kind, f"{value:g}")


def setting_text(budget: dict) -> str:
    labels = (("batch_size", "batch"), ("seq_len", "seq_len"), ("threads", "threads"))
    return ", ".join(f"{label} {budget[k]}" for k, label in labels if budget.get(k) is not None)


def budget_sentence(budget: dict, teacher: dict) -> str:
    drop = budget.get("max_drop")
    drop_text = "" if drop is None else (
        f" (at most {drop:g}% of the teacher's {pct(teacher.get('val_accuracy'))}% lost)" if budget.get("max_drop_relative")
        else f" (at most {drop:g} point{'s' * (drop != 1)} below the teacher's {pct(teacher.get('val_accuracy'))}%)")
    caps = [f"{name} ≤ {budget[key]:g} {unit}" for name, key, unit in (("latency", "max_latency_ms", "ms"),
                                                                        ("size", "max_mb", "MB")) if budget.get(key) is not None]
    goal = f"minimize {budget['minimize']}" if budget.get("minimize") else "maximize accuracy"
    floor = budget.get("min_val_accuracy")
    parts = ([f"validation accuracy ≥ {pct(floor)}%{drop_text}"] if floor is not None else []) + caps + [goal]
    setting = setting_text(budget)
    time = f"; time budget {duration(budget['time_s'])}" if budget.get("time_s") else ""
    return f"Budget: {'; '.join(parts)}. Latency measured at {setting or 'an unrecorded setting'}{time}."


def budgets_table(search: dict) -> Table:
    """Each budget set: its limit, the chosen candidate's value, and whether it is met (by how much not)."""
    budget, chosen, met = search["budget"], search.get("chosen") or {}, search.get("budgets_met") or {}
    missed = {BUDGETS.get(m["budget"], m["budget"]): m for m in chosen.get("missed") or []}
    rows = [("accuracy", "min_val_accuracy", "val ≥ ", chosen.get("val_accuracy")),
            ("latency", "max_latency_ms", "≤ ", chosen.get("latency_ms")),
            ("size", "max_mb", "≤ ", megabytes(chosen.get("onnx_bytes")))]
    table = Table(["Budget", "Limit", "Chosen candidate", "Met"])
    for kind, key, relation, value in rows:
        if budget.get(key) is None and met.get(kind) is None and kind not in missed:
            continue
        ok = met.get(kind)
        verdict = "not known" if ok is None and kind not in missed else "yes" if ok else "no"
        if kind in missed and missed[kind].get("by") is not None:
            by = missed[kind]["by"]
            verdict = f"no: misses by {by if isinstance(by, str) else budget_value(key, by)}"
        limit = missed.get(kind, {}).get("limit", budget.get(key))
        table.rows.append([(kind, False), (relation + budget_value(key, limit), False),
                           (budget_value(key, value) if chosen else "—", False), (verdict, False)])
    return table


def missed_text(missed: list[dict]) -> str:
    parts = []
    for m in missed:
        by = m.get("by")
        by_text = f", short by {by if isinstance(by, str) else budget_value(m['budget'], by)}" if by is not None else ""
        label = {"accuracy": "validation accuracy"}.get(BUDGETS.get(m["budget"]), BUDGETS.get(m["budget"], m["budget"]))
        parts.append(f"{label} ({m['budget']}): {budget_value(m['budget'], m.get('value'))} against a limit of "
                     f"{budget_value(m['budget'], m.get('limit'))}{by_text}")
    return ("The chosen candidate misses the budget (no candidate met it; this is the nearest): "
            + ("; ".join(parts) if parts else "which limits it misses was not recorded") + ".")


def chosen_table(teacher: dict, chosen: dict) -> Table:
    """The teacher and the chosen candidate side by side; ratios against the teacher."""
    speedup = chosen.get("speedup") or (teacher.get("latency_ms") / chosen["latency_ms"]
                                        if teacher.get("latency_ms") and chosen.get("latency_ms") else None)
    smaller = chosen.get("size_ratio") or (teacher.get("onnx_bytes") / chosen["onnx_bytes"]
                                           if teacher.get("onnx_bytes") and chosen.get("onnx_bytes") else None)
    table = Table(["Model", "Val accuracy %", "Test accuracy % [95%]", "Δ test vs teacher, pts [paired 95%]",
                   "Latency ms", "Speed-up", "ONNX MB", "Smaller by"])
    table.rows.append([(c, False) for c in (
        "teacher", pct(teacher.get("val_accuracy")), accuracy_text(teacher.get("test_accuracy"), teacher.get("test_accuracy_ci")),
        "—", number(teacher.get("latency_ms")), "1.00×", number(megabytes(teacher.get("onnx_bytes"))), "1.00×")])
    table.rows.append([(c, False) for c in (
        f"chosen: trial #{chosen['trial']}", pct(chosen.get("val_accuracy")),
        accuracy_text(chosen.get("test_accuracy"), chosen.get("test_accuracy_ci")), delta_text(chosen.get("delta_vs_teacher")),
        number(chosen.get("latency_ms")), number(speedup, "×"), number(megabytes(chosen.get("onnx_bytes"))),
        number(smaller, "×"))])
    return table


def spearman_sentence(spearman: dict | None) -> str:
    if not spearman or spearman.get("rho") is None:
        n = (spearman or {}).get("n")
        return (f"Rank correlation between cheap and full validation accuracy: not available "
                f"({n if n is not None else 'too few'} candidates trained at both fidelities).")
    p = f", p = {spearman['p_value']:.3g}" if spearman.get("p_value") is not None else ""
    return (f"Rank correlation between cheap and full validation accuracy: Spearman ρ = {spearman['rho']:.2f} over "
            f"{spearman.get('n', '?')} candidates trained at both fidelities{p}.")


def relative_error(predicted: float | None, actual: float | None) -> float | None:
    return abs(predicted - actual) / actual if predicted is not None and actual else None


def latency_pairs(search: dict) -> tuple[list[tuple[str, float, float]], list[tuple[str, float, float]]]:
    """(precision, predicted, measured) of the held-back shapes and of every trained candidate."""
    holdout = [(h.get("precision") or "fp32", h["predicted_ms"], h["measured_ms"])
               for h in (search.get("latency_model") or {}).get("holdout") or []
               if h.get("predicted_ms") and h.get("measured_ms")]
    trained = [((t.get("shape") or {}).get("int8") or "fp32", (t.get("predicted") or {}).get("latency_ms"),
                measured(t).get("latency_ms")) for t in search["trials"]]
    return holdout, [(p if isinstance(p, str) else "dynamic", x, y) for p, x, y in trained if x and y]


def latency_errors(search: dict) -> tuple[list[str], int, list[float]]:
    """The median relative errors on the held-back shapes as text per precision group (recorded, else computed),
    their count, and the relative errors on the trained candidates."""
    holdout, trained = latency_pairs(search)
    recorded = (search.get("latency_model") or {}).get("median_abs_error") or {}
    medians = []
    for name, keep in (("fp32", lambda p: p == "fp32"), ("int8", lambda p: p != "fp32")):
        errors = [relative_error(x, y) for p, x, y in holdout if keep(p)]
        value = recorded.get(name) if recorded.get(name) is not None else (statistics.median(errors) if errors else None)
        if value is not None:
            medians.append(f"{name} {100 * value:.1f}% ({len(errors)} shapes)")
    return medians, len(holdout), [relative_error(x, y) for _, x, y in trained]


def latency_model_sentence(search: dict, short: bool = False) -> str:
    model = search.get("latency_model") or {}
    medians, n_holdout, trained = latency_errors(search)
    if not model and not trained:
        return "No latency model was recorded."
    on_trained = f"{100 * statistics.median(trained):.1f}%" if trained else ""
    if short:
        held_back = f"the shapes held back from its fit: {', '.join(medians)}" if medians else "held-back shapes: not recorded"
        trained_text = f"; on the {len(trained)} trained candidates: {on_trained}" if trained else ""
        return f"Latency model, median error on {held_back}{trained_text}."
    where = f" on this machine ({model['key']})" if model.get("key") else ""
    return (f"Latencies are predicted before training from {model.get('n_fit', '?')} shapes timed{where}. "
            f"Median error |predicted − measured| / measured on {n_holdout} held-back shapes (not used in the fit, "
            f"timed in a process of their own): {'; '.join(medians) or 'not measured'}."
            + (f" On the {len(trained)} trained candidates, measured after training: median {on_trained}." if trained else ""))


def trade_off_figures(search: dict) -> list[tuple[str, str, bytes]]:
    """Every trial against latency and against size; a point without a measurement is drawn at its prediction."""
    budget, teacher = search["budget"], search.get("teacher") or {}
    chosen = (search.get("chosen") or {}).get("trial")
    setting = setting_text(budget)
    out = []
    for name, key, scale, xlabel, cap, unit in (
            ("latency", "latency_ms", 1.0, f"latency, ms (log; ONNX Runtime{', ' + setting if setting else ''})",
             budget.get("max_latency_ms"), "ms"),
            ("size", "onnx_bytes", 1 / MB, "ONNX size, MB (log)", budget.get("max_mb"), "MB")):
        points = []
        for t in search["trials"]:
            for fidelity in ("cheap", "full"):
                result = t.get(fidelity) or {}
                cost = result.get(key) if result.get(key) is not None else (t.get("predicted") or {}).get(key)
                if result.get("val_accuracy") is not None and cost:
                    points.append(search_plots.TrialPoint(t["id"], t["family"], fidelity, cost * scale, result["val_accuracy"]))
        teacher_point = ((teacher[key] * scale, teacher["val_accuracy"])
                         if teacher.get(key) and teacher.get("val_accuracy") is not None else None)
        png = search_plots.trials_trade_off(points, search.get("front") or [], chosen, xlabel, budget.get("min_val_accuracy"),
                                            cap, f"{name} cap {cap:g} {unit}" if cap is not None else "", teacher_point)
        if png:
            out.append((f"Validation accuracy vs {name}, every trial", f"search_accuracy_vs_{name}.png", png))
    return out


def trials_table(search: dict) -> Table:
    front, chosen = set(search.get("front") or []), (search.get("chosen") or {}).get("trial")
    table = Table(["Trial", "Family", "Shape", "State", "Cheap val %", "Full val %", "Predicted ms", "Measured ms",
                   "ONNX MB", "Note"])
    for t in search["trials"]:
        best = measured(t)
        size = megabytes(best.get("onnx_bytes"))
        predicted = t.get("predicted") or {}
        size_text = number(size) if size is not None else (
            f"{number(megabytes(predicted.get('onnx_bytes')))} (pred.)" if predicted.get("onnx_bytes") else "—")
        note = "; ".join(n for n in ("chosen" if t["id"] == chosen else "", "front" if t["id"] in front else "",
                                     t.get("skipped") or "") if n)
        table.rows.append([(f"#{t['id']}", t["id"] == chosen), (t["family"], False), (shape_text(t.get("shape")), False),
                           (t["state"], False), (pct((t.get("cheap") or {}).get("val_accuracy")), False),
                           (pct((t.get("full") or {}).get("val_accuracy")), False),
                           (number(predicted.get("latency_ms")), False), (number(best.get("latency_ms")), False),
                           (size_text, False), (note or "", False)])
    return table


def front_table(search: dict) -> Table:
    trials = {t["id"]: t for t in search["trials"]}
    tests = {f["trial"]: f for f in search.get("front_test") or []}
    chosen = (search.get("chosen") or {}).get("trial")
    table = Table(["Trial", "Family", "Shape", "Val accuracy %", "Test accuracy % [95%]",
                   "Δ test vs teacher, pts [paired 95%]", "Latency ms", "ONNX MB"])
    for i in search.get("front") or []:
        t, test, full = trials[i], tests.get(i, {}), trials[i].get("full") or {}
        table.rows.append([(f"#{i}" + (" (chosen)" if i == chosen else ""), i == chosen), (t["family"], False),
                           (shape_text(t.get("shape")), False), (pct(full.get("val_accuracy")), False),
                           (accuracy_text(test.get("test_accuracy"), test.get("test_accuracy_ci")), False),
                           (delta_text(test.get("delta_vs_teacher")), False), (number(full.get("latency_ms")), False),
                           (number(megabytes(full.get("onnx_bytes"))), False)])
    return table


def phases_table(phases: list[dict], budget_s: float | None) -> Table:
    total = sum(p.get("seconds") or 0 for p in phases)
    table = Table(["Phase", "Time", "Share"])
    for p in phases:
        share = f"{100 * p['seconds'] / total:.0f}%" if p.get("seconds") is not None and total else "—"
        table.rows.append([(p["name"], False), (duration(p.get("seconds")), False), (share, False)])
    of_budget = f"{100 * total / budget_s:.0f}% of the {duration(budget_s)} budget" if budget_s else ""
    table.rows.append([("total", False), (duration(total), False), (of_budget, False)])
    return table


def protocol_table(search: dict) -> Table:
    protocol, budget = search.get("protocol") or {}, search["budget"]
    features, versions = protocol.get("cpu_features"), protocol.get("versions")
    features = ", ".join(k for k, on in features.items() if on) if isinstance(features, dict) else features
    versions = ", ".join(f"{k} {v}" for k, v in versions.items()) if isinstance(versions, dict) else versions
    rows = [("CPU", protocol.get("cpu")), ("CPU features", features or None), ("versions", versions or None),
            ("threads", protocol.get("threads", budget.get("threads"))), ("batch size", budget.get("batch_size")),
            ("seq_len", budget.get("seq_len")), ("latency model", (search.get("latency_model") or {}).get("key")),
            ("teacher", (search.get("teacher") or {}).get("folder")), ("ended", search["ended"])]
    return Table(["Field", "Value"], [[(name, False), ("—" if v is None else str(v), False)] for name, v in rows])


def summary_section(search: dict) -> Section:
    """The budget and which parts of it are met, the chosen candidate against the teacher, and how far to trust it."""
    teacher, chosen = search.get("teacher") or {}, search.get("chosen")
    summary = Section("Summary", [("p", budget_sentence(search["budget"], teacher)), ("table", budgets_table(search))])
    if chosen and chosen.get("trial") is not None:
        trial = next(t for t in search["trials"] if t["id"] == chosen["trial"])
        if chosen.get("missed") or chosen.get("meets_budget") is False:
            summary.blocks.append(("alert", missed_text(chosen.get("missed") or [])))
        summary.blocks += [("p", f"Chosen: trial #{chosen['trial']} ({trial['family']}: {shape_text(trial.get('shape'))}), "
                                 + "chosen on validation accuracy at full fidelity. Its steps from the teacher:"),
                           ("list", chosen.get("steps") or ["(not recorded)"]), ("table", chosen_table(teacher, chosen))]
        artifacts = [text.format(chosen[key]) for key, text in (("onnx_dir", "ONNX artifacts in `{}`"),
                     ("best_yaml", "`slimformer run {}` rebuilds it from the teacher")) if chosen.get(key)]
        if artifacts:
            summary.blocks.append(("p", "; ".join(artifacts) + "."))
    else:  # chosen is null, or {trial: null, note} (a search stopped before any full recovery)
        summary.blocks.append(("alert", NOTHING_CHOSEN + (f" {chosen['note'][0].upper()}{chosen['note'][1:]}."
                                                          if chosen and chosen.get("note") else "")))
    summary.blocks += [("p", spearman_sentence(search.get("spearman"))), ("p", latency_model_sentence(search, short=True)),
                       ("p", "Test split: " + (search.get("test_reads") or "how it was read is not recorded").rstrip(".") + ".")]
    return summary


def build_page(search: dict) -> Page:
    """Compute every section of the page from a loaded search.json."""
    budget = search["budget"]
    alert = None if search["ended"] == "completed" else (
        f"This search did not complete (ended: {search['ended']}): "
        + ENDED.get(search["ended"], "the front and the choice are the best found before it stopped."))
    summary = summary_section(search)
    front = Section("Front (full fidelity)", [("p", FRONT_CAPTION),
                                              ("table", front_table(search))] if search.get("front") else
                    [("p", "No front yet: no trial has finished its full recovery.")])
    trade = Section("Every trial", [("p", TRIALS_CAPTION)])
    trade.blocks += [("figure", f) for f in trade_off_figures(search)]
    sens = search.get("sensitivity") or {}
    metric = sens.get("metric") or "validation accuracy lost (points)"
    from_teacher = f"{metric[:1].upper()}{metric[1:]}, from the teacher's {pct(sens.get('baseline_val_accuracy'))}%."
    sensitivity = Section("Sensitivity", [("p", from_teacher)] if sens else
                          [("p", "Not measured.")])
    sensitivity.blocks += [("figure", ("Sensitivity", "search_sensitivity.png", png))
                           for png in [search_plots.sensitivity_maps(sens)] if png]
    holdout, trained = latency_pairs(search)
    model = Section("Latency model", [("p", latency_model_sentence(search))])
    model.blocks += [("figure", ("Latency model: predicted vs measured", "search_latency_model.png", png))
                     for png in [search_plots.latency_model_error(holdout, trained, f"{len(holdout)} held-back shapes",
                                                                  f"{len(trained)} trained candidates")] if png]
    phases = search.get("phases") or []
    timing = Section("Time per phase", [("table", phases_table(phases, budget.get("time_s")))] if phases else
                     [("p", "Not recorded.")])
    timing.blocks += [("figure", ("Time per phase", "search_phases.png", png)) for png in
                      [search_plots.phase_times([(p["name"], p.get("seconds")) for p in phases], budget.get("time_s"))] if png]
    every = Section(f"All trials ({len(search['trials'])})", [("table", trials_table(search))])
    protocol = Section("Protocol", [("table", protocol_table(search))])
    sections = [summary, front, trade, sensitivity, model, timing, every, protocol]
    return Page(search.get("name") or "search", search.get("command"), alert, sections)


def markdown_block(kind: str, content, files_dir: str) -> list[str]:
    match kind:
        case "p":
            return [md_escape(content)]
        case "alert":
            return [f"> **⚠️ {md_escape(content)}**"]
        case "list":
            return [f"{i}. {md_escape(item)}" for i, item in enumerate(content, 1)]
        case "table":
            return markdown_table(content)
        case "figure":
            return [f"![{md_escape(content[0])}]({files_dir}/{content[1]})"]
    raise ValueError(f"unknown block kind {kind!r}")


def render_markdown(page: Page, files_dir: str) -> str:
    """The Markdown page; figures are linked from `files_dir` (relative to the page)."""
    lines = [f"# slimformer compress: {md_escape(page.title)}", ""]
    lines += [f"Command: `{page.command}` ({RESUMES})", ""] if page.command else []
    lines += [f"> **⚠️ {md_escape(page.alert)}**", ""] if page.alert else []
    for section in page.sections:
        lines += [f"## {md_escape(section.title)}", ""]
        for kind, content in section.blocks:
            lines += markdown_block(kind, content, files_dir) + [""]
    return "\n".join(lines)


def html_text(text: str) -> str:
    """Escaped text whose `code spans` become <code> elements."""
    return "".join(f"<code>{html.escape(p)}</code>" if i % 2 else html.escape(p) for i, p in enumerate(text.split("`")))


def figure_html(title: str, png: bytes) -> str:
    uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    return f'<figure><figcaption>{html.escape(title)}</figcaption><img alt="{html.escape(title)}" src="{uri}"></figure>'


def html_block(kind: str, content) -> str:
    match kind:
        case "p":
            return f"<p>{html_text(content)}</p>"
        case "alert":
            return f'<p class="alert">⚠️ {html_text(content)}</p>'
        case "list":
            return "<ol>" + "".join(f"<li>{html_text(item)}</li>" for item in content) + "</ol>"
        case "table":
            return render_html_table(content)
        case "figure":
            return figure_html(content[0], content[2])
    raise ValueError(f"unknown block kind {kind!r}")


def render_html(page: Page) -> str:
    """The self-contained HTML page: inline CSS, figures as base64 PNG data URIs, no scripts."""
    title = html.escape(page.title)
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>slimformer compress: {title}</title><style>{CSS}\n{ALERT_CSS}</style></head><body>",
             f"<h1>slimformer compress: {title}</h1>"]
    parts += [f"<p>Command: <code>{html.escape(page.command)}</code> ({RESUMES})</p>"] if page.command else []
    parts += [html_block("alert", page.alert)] if page.alert else []
    for section in page.sections:
        parts.append(f"<h2>{html.escape(section.title)}</h2>")
        parts += [html_block(kind, content) for kind, content in section.blocks]
    return "\n".join(parts + ["</body></html>\n"])


def write_search_report(run_dir: Path) -> tuple[Path, Path]:
    """Write `run_dir/report.md` (figures in `run_dir/report_files/`) and `run_dir/report.html` from
    `run_dir/search.json`; return (md, html). ReportError when search.json is missing or unusable."""
    run_dir = Path(run_dir)
    page = build_page(load_search(run_dir))
    with atomic_dir(run_dir / FILES_DIR) as files_dir:
        for _, name, png in page.figures:
            atomic_write_bytes(files_dir / name, png)
    md, html_path = run_dir / "report.md", run_dir / "report.html"
    atomic_write_text(md, render_markdown(page, FILES_DIR))
    atomic_write_text(html_path, render_html(page))
    return md, html_path


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m eval.search_report RUN_DIR (the folder of a `slimformer compress` search)", file=sys.stderr)
        return 2
    try:
        md, html_path = write_search_report(Path(argv[0]))
    except ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"report: {html_path}\nreport (markdown): {md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
