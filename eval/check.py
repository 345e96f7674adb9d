"""Regression check for CI: a thresholds YAML file against the stages of one or more runs.

    slimformer report runs/quickstart --check thresholds.yaml   # exit 0 pass, 1 a limit broken, 2 bad input

The file maps a stage selector to limits (`docs/thresholds.example.yaml`):

    stages:
      "*": {min_accuracy: 0.70, min_accuracy_lower: 0.68, max_accuracy_drop: 0.02}
      int8: {max_p50_ms: 5.0, batch_size: 8, seq_len: 48}

A selector is `*` (every stage), a stage name (that stage in every run given) or `run/stage`.
Each limit comes from the most specific selector that sets it (`run/stage` over `stage` over
`*`); a latency ceiling is checked at the setting (batch_size, seq_len, runtime, device) of
the entry it comes from. Numbers are read from results.json exactly as the report reads them,
accuracy drop against the report's baseline row. A selector matching no stage, or a limit whose
measurement the run lacks, is a SlimformerError (exit 2), never a silent pass.

Reference rows (`reference: true`: the classical `baseline` step) are compared with, not shipped,
so `*` does not select them; a selector naming one (`baseline`, `run/baseline`) checks it like any
stage, with two readings for what it lacks: it has no ONNX artifact, so `max_onnx_mb` bounds the
size of its own saved files, and an `onnxruntime` CPU latency ceiling reads its CPU record in
its own runtime (what the report's row shows).
"""

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from eval.errors import SlimformerError
from eval.report import CPU_RUNTIMES, MB, Row, accuracy_interval, gather_rows, is_reference, load_runs, pick_baseline, size_bytes
from eval.schema import ConfigBase, StrictLoader, validation_message, yaml_lines

EPS = 1e-9  # float slack, so that 0.77 - 0.76 passes max_accuracy_drop: 0.01
SETTING_KEYS = ("batch_size", "seq_len", "runtime", "device")


class StageThresholds(ConfigBase):
    """Limits for the stages a selector matches; every field is optional, at least one limit is required."""

    min_accuracy: float | None = None  # ONNX test accuracy floor, a fraction (0.70 = 70 %)
    # floor on the lower end of the accuracy's 95% interval (Wilson; eval/intervals.py): passes only when the
    # accuracy is above it beyond the noise of the test split's size
    min_accuracy_lower: float | None = None
    max_accuracy_drop: float | None = None  # baseline accuracy minus this stage's, a fraction (0.01 = 1 point)
    min_agreement: float | None = None  # argmax agreement with the baseline stage, a fraction
    max_params: int | None = Field(None, ge=0)  # parameter count ceiling
    max_onnx_mb: float | None = Field(None, gt=0)  # ONNX file size ceiling, MB = 10^6 bytes as in the report
    max_p50_ms: float | None = Field(None, gt=0)  # median latency ceiling at the setting below
    max_p99_ms: float | None = Field(None, gt=0)  # 99th-percentile latency ceiling at the setting below
    batch_size: int | None = Field(None, ge=1)  # the setting latency ceilings apply to: one of bench.batch_sizes
    seq_len: int | None = Field(None, ge=1)  # ... and one of bench.seq_lens (default task.seq_len)
    # the runtime the latency was measured in (a reference row: its own CPU runtime)
    runtime: Literal["onnxruntime", "torch"] = "onnxruntime"
    device: Literal["cpu", "cuda"] = "cpu"  # the device the latency was measured on

    @field_validator("min_accuracy", "min_accuracy_lower", "max_accuracy_drop", "min_agreement")
    @classmethod
    def fraction(cls, value: float | None) -> float | None:
        if value is not None and not 0 <= value <= 1:
            raise ValueError(f"{value} is not a fraction in [0, 1]: write 0.7 for 70 %, 0.01 for 1 point")
        return value

    @model_validator(mode="after")
    def check_limits(self):
        limits = [k for k in METRICS if getattr(self, k) is not None]
        if not limits:
            raise ValueError(f"sets no limit; give at least one of {', '.join(METRICS)}")
        timed = [k for k in ("max_p50_ms", "max_p99_ms") if getattr(self, k) is not None]
        if timed and (self.batch_size is None or self.seq_len is None):
            raise ValueError(f"{timed[0]} needs batch_size and seq_len: the latency setting it applies to")
        stray = [k for k in SETTING_KEYS if k in self.model_fields_set]
        if stray and not timed:
            raise ValueError(f"{', '.join(stray)} only apply to max_p50_ms / max_p99_ms; add one of them or remove {stray[0]}")
        return self


class ThresholdsConfig(ConfigBase):
    """A thresholds file: stage selector (`*`, `stage` or `run/stage`) -> limits."""

    stages: dict[str, StageThresholds] = Field(..., min_length=1)  # at least one selector


@dataclass
class Metric:
    """One limit: the number it bounds, whether the limit is a floor, how to print it, what to say when it is missing."""

    value: Callable[[Row, StageThresholds, Row], float | None]  # (row, its entry, baseline row)
    floor: bool
    text: Callable[[float], str]
    missing: Callable[[Row, StageThresholds, Row], str]


@dataclass
class Check:
    """One limit applied to one stage."""

    stage: str
    key: str  # the threshold field, e.g. max_p50_ms
    label: str  # the field, with the latency setting or the baseline it applies to
    selector: str  # the thresholds entry the limit came from
    limit: float
    value: float
    passed: bool

    def describe(self) -> str:
        """`student: min_accuracy 69.25 % < 70.00 %`."""
        metric = METRICS[self.key]
        op = ("≥" if self.passed else "<") if metric.floor else ("≤" if self.passed else ">")
        return f"{self.stage}: {self.label} {metric.text(self.value)} {op} {metric.text(self.limit)}"


def percent(value: float) -> str:
    return f"{100 * value:.2f} %"


def points(value: float) -> str:
    return f"{100 * value:.2f} pts"


def ms(value: float) -> str:
    return f"{value:.2f} ms"


def find_latency(row: Row, entry: StageThresholds) -> dict | None:
    """The first latency record at the entry's setting, as the report picks it (a reference row: its own CPU runtime)."""
    runtimes = CPU_RUNTIMES if is_reference(row) and (entry.runtime, entry.device) == ("onnxruntime", "cpu") else (entry.runtime,)
    for record in row.stage.get("latency") or []:
        setting = (record.get("device"), record.get("batch"), record.get("seq_len"))
        if setting == (entry.device, entry.batch_size, entry.seq_len) and record.get("runtime") in runtimes:
            return record
    return None


def latency_value(key: str) -> Callable[[Row, StageThresholds, Row], float | None]:
    return lambda row, entry, base: (find_latency(row, entry) or {}).get(key)


def setting_text(entry: StageThresholds) -> str:
    return f"batch {entry.batch_size}, seq_len {entry.seq_len}, {entry.runtime} {entry.device}"


def latency_missing(key: str) -> Callable[[Row, StageThresholds, Row], str]:
    def message(row: Row, entry: StageThresholds, base: Row) -> str:
        if find_latency(row, entry):
            return f"its latency record at {setting_text(entry)} has no {key}"
        measured = dict.fromkeys(f"batch {r.get('batch')}, seq_len {r.get('seq_len')}, {r.get('runtime')} {r.get('device')}"
                                 for r in row.stage.get("latency") or [])
        return f"no latency record at {setting_text(entry)}; measured: {'; '.join(measured) or 'none (add a bench step)'}"

    return message


def accuracy_drop(row: Row, entry: StageThresholds, base: Row) -> float | None:
    accuracy, base_accuracy = row.stage.get("accuracy"), base.stage.get("accuracy")
    return None if accuracy is None or base_accuracy is None else base_accuracy - accuracy


def accuracy_lower(row: Row, entry: StageThresholds, base: Row) -> float | None:
    """The lower end of the accuracy's 95% interval, as the report shows it."""
    interval = accuracy_interval(row)
    return None if interval is None else interval[0]


def stage_value(key: str, scale: float = 1.0) -> Callable[[Row, StageThresholds, Row], float | None]:
    return lambda row, entry, base: None if row.stage.get(key) is None else row.stage[key] / scale


def lacks(what: str, fix: str) -> Callable[[Row, StageThresholds, Row], str]:
    return lambda row, entry, base: f"results.json has no {what} for this stage ({fix})"


# threshold field -> how it is checked; the table prints checks in this order
METRICS: dict[str, Metric] = {
    "min_accuracy": Metric(stage_value("accuracy"), True, percent,
                           lacks("accuracy", "add an evaluate step after it")),
    "min_accuracy_lower": Metric(accuracy_lower, True, percent,
                                 lacks("accuracy with an interval (accuracy_ci, or n_test)", "add an evaluate step after it")),
    "max_accuracy_drop": Metric(accuracy_drop, False, points,
                                lambda row, entry, base: f"no accuracy for it or for the baseline {base.name} "
                                                         "(add evaluate steps)"),
    "min_agreement": Metric(stage_value("agreement"), True, percent,
                            lacks("agreement", "add an evaluate step after it")),
    "max_params": Metric(stage_value("params"), False, lambda v: f"{v:,.0f}",
                         lacks("params", "add a bench step after it")),
    "max_onnx_mb": Metric(lambda row, entry, base: None if size_bytes(row.stage) is None else size_bytes(row.stage) / MB,
                          False, lambda v: f"{v:.2f} MB",
                          lacks("onnx_bytes", "add export and bench steps after it")),
    "max_p50_ms": Metric(latency_value("p50_ms"), False, ms, latency_missing("p50_ms")),
    "max_p99_ms": Metric(latency_value("p99_ms"), False, ms, latency_missing("p99_ms")),
}


def load_thresholds(path: str | Path) -> ThresholdsConfig:
    """Read and validate a thresholds file; SlimformerError naming the file, line and key when it is wrong."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise SlimformerError(f"{path}: cannot read the thresholds file: {e}") from None
    try:
        data = yaml.load(text, Loader=StrictLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}:" if mark else ""
        raise SlimformerError(f"{path}:{where} YAML syntax error: {getattr(e, 'problem', None) or e}") from None
    if not isinstance(data, dict):
        raise SlimformerError(f"{path}: a thresholds file is a YAML mapping with one key, stages; "
                              "see docs/thresholds.example.yaml")
    try:
        return ThresholdsConfig.model_validate(data)
    except ValidationError as e:
        raise SlimformerError(validation_message(e, str(path), yaml_lines(text), root="thresholds")) from None


def entries_for(run: str, stage: str, thresholds: ThresholdsConfig, reference: bool = False) -> list[tuple[str, StageThresholds]]:
    """The entries that match a stage, least specific first; `*` does not match a reference row."""
    selectors = ((stage,) if reference else ("*", stage)) + (f"{run}/{stage}",)
    return [(s, thresholds.stages[s]) for s in selectors if s in thresholds.stages]


def run_checks(run_dirs: list[Path], thresholds: ThresholdsConfig, baseline: str | None = None,
               source: str = "thresholds") -> list[Check]:
    """Apply every limit to every stage it selects; SlimformerError when a selector or a measurement is missing.

    `baseline` is the report's (`--baseline`); `source` names the thresholds file in messages.
    """
    runs = load_runs([Path(d) for d in run_dirs])
    rows = gather_rows(runs)
    if not rows:
        raise SlimformerError(f"no stages to check in run(s) {', '.join(runs)}: their 'stages' lists are empty")
    base = pick_baseline(runs, rows, baseline)
    owners = [(run, s["name"]) for run, results in runs.items() for s in results["stages"]]  # same order as rows
    known = {"*"} | {name for _, name in owners} | {f"{run}/{name}" for run, name in owners}
    unknown = [s for s in thresholds.stages if s not in known]
    if unknown:
        close = difflib.get_close_matches(unknown[0], sorted(known), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        run, stage = owners[0]
        names = ", ".join(dict.fromkeys(name for _, name in owners))
        raise SlimformerError(f"{source}: stages.{unknown[0]}: no such stage{hint}; stages: {names} "
                              f"(or run/stage, e.g. {run}/{stage}), or * for every stage")
    checks, problems = [], []
    for row, (run, stage) in zip(rows, owners, strict=True):
        chosen: dict[str, tuple[str, StageThresholds]] = {}
        for selector, entry in entries_for(run, stage, thresholds, reference=is_reference(row)):
            chosen.update({key: (selector, entry) for key in METRICS if getattr(entry, key) is not None})
        for key, (selector, entry) in sorted(chosen.items(), key=lambda item: list(METRICS).index(item[0])):
            metric, limit = METRICS[key], getattr(entry, key)
            value = metric.value(row, entry, base)
            if value is None:
                problems.append(f"stages.{selector}.{key} for {row.name}: {metric.missing(row, entry, base)}")
                continue
            passed = value >= limit - EPS if metric.floor else value <= limit + EPS
            label = f"{key} @ {setting_text(entry)}" if key.endswith("_ms") else key
            label += " (own files, no ONNX)" if key == "max_onnx_mb" and row.stage.get("onnx_bytes") is None else ""
            label += f" vs {base.name}" if key == "max_accuracy_drop" else ""
            checks.append(Check(row.name, key, label, selector, limit, value, passed))
    if problems:
        raise SlimformerError(f"{source} needs measurements the run(s) lack:\n  " + "\n  ".join(problems))
    return checks


def check_table(checks: list[Check]):
    """A rich table of every check: stage, limit, measured value, pass/FAIL, and the selector it came from."""
    from rich.table import Table

    table = Table(title="regression check")
    for header in ("stage", "check", "limit", "value", "result", "from"):
        table.add_column(header, justify="right" if header in ("limit", "value") else "left")
    for c in checks:
        result = "[green]pass[/]" if c.passed else "[bold red]FAIL[/]"
        metric = METRICS[c.key]
        table.add_row(c.stage, c.label, f"{'≥' if metric.floor else '≤'} {metric.text(c.limit)}", metric.text(c.value), result,
                      c.selector)
    return table
