"""eval.check and `slimformer report --check`: exit 0 when every limit holds, 1 when one breaks, 2 for bad input.

The runs are the hand-made results.json of conftest.py: teacher (accuracy 0.71, params 1,234,567,
4.94 MB, p50 10.0 ms at batch 8) and student (0.6925, 300,000, 1.20 MB, p50 2.5 ms), seq_len 64.
"""

from pathlib import Path

import pytest

import cli
from compress.errors import SlimformerError
from eval.check import load_thresholds, run_checks

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "thresholds.example.yaml"

PASSING = """\
stages:
  "*": {min_accuracy: 0.69, max_accuracy_drop: 0.0175}   # the student's drop is exactly 1.75 points
  student: {max_p50_ms: 2.5, max_p99_ms: 4.0, batch_size: 8, seq_len: 64, max_onnx_mb: 1.2, max_params: 300000,
            min_agreement: 0.9}
  teacher: {max_p50_ms: 31.0, batch_size: 8, seq_len: 64, runtime: torch}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "thresholds.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def report_check(run_dirs: list[Path], thresholds: Path, *extra: str) -> int:
    return cli.main(["report", *map(str, run_dirs), "--check", str(thresholds), *extra])


def test_passing_thresholds_exit_0_and_write_the_report(make_run, fast_figures, tmp_path, capsys):
    run_dir = make_run()
    assert report_check([run_dir], write(tmp_path, PASSING)) == 0
    err = capsys.readouterr().err
    assert "regression check" in err and "FAIL" not in err and "check: 10 of 10 passed" in err
    assert (run_dir / "report.html").is_file()


def test_broken_floor_exits_1_names_the_stage_and_still_writes_the_report(make_run, fast_figures, tmp_path, capsys):
    run_dir = make_run()
    assert report_check([run_dir], write(tmp_path, 'stages:\n  "*": {min_accuracy: 0.70}\n')) == 1
    err = capsys.readouterr().err
    assert "FAIL student: min_accuracy 69.25 % < 70.00 % (stages.*)" in err
    assert "FAIL teacher" not in err and "check: 1 of 2 passed, 1 failed" in err
    assert (run_dir / "report.html").is_file()


@pytest.mark.parametrize(
    ("limits", "failed"),
    [
        ("{max_p50_ms: 2.4, batch_size: 8, seq_len: 64}", "max_p50_ms @ batch 8, seq_len 64, onnxruntime cpu 2.50 ms > 2.40 ms"),
        ("{max_p99_ms: 0.6, batch_size: 1, seq_len: 64}", "max_p99_ms @ batch 1, seq_len 64, onnxruntime cpu 0.65 ms > 0.60 ms"),
        ("{max_onnx_mb: 1.1}", "max_onnx_mb 1.20 MB > 1.10 MB"),
        ("{max_params: 299999}", "max_params 300,000 > 299,999"),
        ("{min_agreement: 0.95}", "min_agreement 90.00 % < 95.00 %"),
        ("{max_accuracy_drop: 0.0174}", "max_accuracy_drop vs teacher 1.75 pts > 1.74 pts"),
    ],
)
def test_each_ceiling_fails_just_past_the_measured_value(make_run, tmp_path, limits, failed):
    checks = run_checks([make_run()], load_thresholds(write(tmp_path, f"stages:\n  student: {limits}\n")))
    assert [c.describe() for c in checks if not c.passed] == [f"student: {failed}"]


def test_most_specific_selector_wins_and_drop_follows_the_baseline(make_run, make_results, tmp_path):
    other = make_results("tiny")
    other["stages"][1]["accuracy"] = 0.60
    runs = [make_run("quickstart"), make_run("tiny", other)]
    thresholds = load_thresholds(write(tmp_path, """\
stages:
  "*": {min_accuracy: 0.70}
  student: {min_accuracy: 0.65}
  tiny/student: {min_accuracy: 0.55, max_accuracy_drop: 0.11}
"""))
    checks = run_checks(runs, thresholds)
    got = {(c.stage, c.key): (c.selector, c.limit, c.passed) for c in checks}
    assert got == {
        ("quickstart/teacher", "min_accuracy"): ("*", 0.70, True),
        ("quickstart/student", "min_accuracy"): ("student", 0.65, True),
        ("tiny/teacher", "min_accuracy"): ("*", 0.70, True),
        ("tiny/student", "min_accuracy"): ("tiny/student", 0.55, True),
        ("tiny/student", "max_accuracy_drop"): ("tiny/student", 0.11, True),  # 0.71 - 0.60 against quickstart/teacher
    }
    rebased = run_checks(runs, thresholds, baseline="quickstart/student")  # 0.6925 - 0.60 = 9.25 points
    assert next(c for c in rebased if c.key == "max_accuracy_drop").value == pytest.approx(0.0925)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("stages:\n  studnet: {min_accuracy: 0.5}\n",
         r"stages\.studnet: no such stage \(did you mean 'student'\?\); stages: teacher, student "
         r"\(or run/stage, e\.g\. quickstart/teacher\)"),
        ("stages:\n  student:\n    min_acuracy: 0.5\n",
         r"thresholds\.yaml:3: stages\.student: unknown key 'min_acuracy' \(did you mean 'min_accuracy'\?\); "
         r"valid keys: min_accuracy,"),
        ("stage:\n  student: {min_accuracy: 0.5}\n",
         r"thresholds\.yaml:1: thresholds: unknown key 'stage' \(did you mean 'stages'\?\)"),
        ("stages:\n  student: {max_p50_ms: 3.0, batch_size: 32, seq_len: 64}\n",
         (r"stages\.student\.max_p50_ms for student: no latency record at batch 32, seq_len 64, onnxruntime cpu; "
          r"measured: batch 1, seq_len 64, onnxruntime cpu; batch 8, seq_len 64, onnxruntime cpu")),
        ("stages:\n  student: {max_p50_ms: 3.0, batch_size: 8, seq_len: 64, runtime: torch}\n",
         r"no latency record at batch 8, seq_len 64, torch cpu"),
        ("stages:\n  student: {max_p50_ms: 3.0}\n",
         r"thresholds\.yaml:2: stages\.student: max_p50_ms needs batch_size and seq_len"),
        ("stages:\n  student: {min_accuracy: 0.5, batch_size: 8}\n", r"batch_size only apply to max_p50_ms / max_p99_ms"),
        ("stages:\n  student: {min_accuracy: 70}\n",
         r"stages\.student\.min_accuracy: 70\.0 is not a fraction in \[0, 1\]: write 0\.7"),
        ("stages:\n  student: {}\n", r"stages\.student: sets no limit; give at least one of min_accuracy"),
        ("stages:\n  student: {runtime: ort, max_p50_ms: 3.0, batch_size: 8, seq_len: 64}\n",
         r"stages\.student\.runtime: .*'onnxruntime' or 'torch'"),
        ("stages: {}\n", r"stages: .*at least 1 item"),
        ("- student\n", r"a thresholds file is a YAML mapping"),
        ("stages:\n  student: {min_accuracy: 0.5}\n  student: {max_params: 3}\n", r"duplicate key 'student'"),
        ("stages:\n  student: !!python/object/apply:os.system ['echo hi']\n", r"YAML syntax error"),
    ],
    ids=["unknown stage", "unknown key", "unknown top-level key", "unmeasured batch", "unmeasured runtime",
         "ceiling without setting", "setting without ceiling", "percent not fraction", "no limit", "bad runtime", "no stages",
         "not a mapping", "duplicate key", "python tag"],
)
def test_bad_thresholds_exit_2_with_the_key_and_write_nothing(make_run, tmp_path, capsys, text, message):
    run_dir = make_run()
    assert report_check([run_dir], write(tmp_path, text)) == 2
    assert capsys.readouterr().err.startswith("error: ")
    with pytest.raises(SlimformerError, match=message):
        run_checks([run_dir], load_thresholds(write(tmp_path, text)))
    assert not (run_dir / "report.html").exists()


def test_shipped_example_validates_and_runs(make_run, make_results):
    assert EXAMPLE.read_text(encoding="utf-8").startswith("# Regression thresholds for CI: slimformer report ")
    results = make_results()
    for record in results["stages"][0]["latency"]:
        record["seq_len"] = 48  # the example's setting: quickstart's seq_len
    checks = run_checks([make_run(results=results)], load_thresholds(EXAMPLE))
    assert len(checks) == 11  # teacher: 3 from "*" + its own 5; student: 3 from "*"
    assert [c.describe() for c in checks if not c.passed] == ["student: min_accuracy 69.25 % < 70.00 %"]


def test_min_accuracy_lower_reads_the_interval_recorded_else_wilson_from_n_test(make_run, make_results, tmp_path):
    """Teacher 71.00 % of n_test 2000: Wilson 95% [68.97, 72.95]; the student's recorded interval wins over n_test."""
    results = make_results()
    results["stages"][1]["accuracy_ci"] = [0.6812, 0.7031]
    thresholds = load_thresholds(write(tmp_path, 'stages:\n  "*": {min_accuracy_lower: 0.6850}\n'))
    checks = {c.stage: c for c in run_checks([make_run(results=results)], thresholds)}
    assert checks["teacher"].passed and checks["teacher"].value == pytest.approx(0.689726, abs=1e-6)
    assert checks["student"].describe() == "student: min_accuracy_lower 68.12 % < 68.50 %"
    del results["protocol"]["n_test"]
    with pytest.raises(SlimformerError, match="min_accuracy_lower for teacher: results.json has no accuracy with an interval"):
        run_checks([make_run("bare", results)], thresholds)
