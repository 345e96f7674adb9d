"""A broken run folder or thresholds file: one error naming the file, what is wrong and the fix, exit 2, nothing written.

`slimformer report RUN` and `slimformer bench RUN` read results.json through `eval/results.py:
load_results`, which checks it against eval/results_schema.json before anything is measured or
written; a file an earlier slimformer wrote loads, or says how to write it again.
"""

import json
import re

import pytest

import cli

GOOD = {"schema_version": 1, "run": "r", "command": "slimformer run r.yaml",
        "protocol": {"task": "t", "n_test": 10, "seq_len": 8, "batch_sizes": [1], "seq_lens": [8], "threads": 1, "warmup": 1,
                     "repeats": 3},
        "baseline": "teacher", "stages": [{"name": "teacher", "kind": "train", "accuracy": 0.9, "params": 100}]}


def broken(**change):
    return json.dumps({**GOOD, **change})


# case -> (results.json text, the message's regex)
CASES = {
    "cut short": (json.dumps(GOOD)[:60], r"results.json is not valid JSON \(.*cut short or edited\?\); write it again with "
                                         r"`slimformer run .*recipe.yaml` \(finished steps are cached: nothing retrains\)"),
    "stages a mapping": (broken(stages={"teacher": {}}), r"does not match eval/results_schema.json: stages is an object"),
    "accuracy a string": (broken(stages=[{"name": "teacher", "kind": "train", "accuracy": "high"}]),
                          r"stages\[0\].accuracy is a string \(\"high\"\), not number or null"),
    "latency not a list": (broken(stages=[{"name": "t", "kind": "train", "latency": {"p50_ms": 1}}]),
                           r"stages\[0\].latency is an object"),
    "no stages": (json.dumps({k: v for k, v in GOOD.items() if k != "stages"}), r"the file lacks stages"),
    "empty stages": (broken(stages=[]), r"lists no stages"),
    "a list": ("[]", r"the file is a list"),
    "newer schema": (broken(schema_version=2), r"has schema_version 2; this slimformer reads version 1"),
}


@pytest.mark.parametrize("command", ["report", "bench"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_a_broken_results_file_is_one_clear_error(tmp_path, capsys, case, command):
    text, message = CASES[case]
    run = tmp_path / "run"
    run.mkdir()
    (run / "recipe.yaml").write_text("name: r\n")
    (run / "results.json").write_text(text)
    assert cli.main([command, str(run)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert re.search(message, err), err
    assert sorted(p.name for p in run.iterdir()) == ["recipe.yaml", "results.json"] and (run / "results.json").read_text() == text


def test_a_missing_results_file(tmp_path, capsys):
    assert cli.main(["report", str(tmp_path)]) == 2
    assert "results.json not found: pass a run folder written by `slimformer run`" in capsys.readouterr().err


def test_an_earlier_file_loads_or_says_to_rerun(tmp_path, capsys):
    """A results.json without the fields later versions add (no protocol at all): the report reads it; bench, which
    re-times with the protocol's settings, says what is missing and which commands write it again."""
    old = {"schema_version": 1, "stages": [{"name": "teacher", "kind": "train", "accuracy": 0.5}]}
    (tmp_path / "results.json").write_text(json.dumps(old))
    assert cli.main(["report", str(tmp_path)]) == 0
    assert (tmp_path / "report.md").is_file()
    capsys.readouterr()
    assert cli.main(["bench", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert re.search(r"has no protocol batch_sizes, seq_lens, threads, warmup, repeats \(an earlier slimformer wrote it, or it "
                     r"was edited\).*then `slimformer bench .*`", err), err


@pytest.mark.parametrize(("text", "message"), [
    ("stages: [1\n", r"t.yaml: line \d+, column \d+: YAML syntax error"),
    ("- a\n", r"a thresholds file is a YAML mapping with one key, stages"),
    ("stages:\n  teacher: {min_accuracy: high}\n", r"t.yaml:2: stages.teacher.min_accuracy: Input should be a valid number"),
])
def test_a_broken_thresholds_file_fails_before_the_report_is_written(tmp_path, capsys, text, message):
    (tmp_path / "results.json").write_text(json.dumps(GOOD))
    (tmp_path / "t.yaml").write_text(text)
    assert cli.main(["report", str(tmp_path), "--check", str(tmp_path / "t.yaml")]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err) and "Traceback" not in err, err
    assert not (tmp_path / "report.md").exists()
