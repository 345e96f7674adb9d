"""Reliability: every bad input is one clear message, exit code 2 and no files; kills lose nothing.

The table below holds the bad recipes and data a user is likely to write. Each goes through
`slimformer run` and must name the field (or file) and the fix, exit with code 2, and leave
the runs folder untouched. Random YAML documents (hypothesis) must never raise anything but
our own RecipeError.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cli
from compress.errors import RecipeError, TrainingError
from compress.run.config import parse_yaml, validate_recipe

ROOT = Path(__file__).resolve().parents[2]

GOOD = """\
name: good
task:
  kind: listops
  n_train: 50
  n_validation: 10
  n_test: 10
steps:
  - kind: train
    epochs: 1
  - kind: export
"""

CSV_OK = "text,label\n" + "".join(f"some words {i},{'a' if i % 2 else 'b'}\n" for i in range(40))
FILES = "name: mine\ntask: {{kind: files, train: {train}{extra}}}\nsteps:\n  - kind: train\n"


def files_recipe(train="train.csv", extra=""):
    return FILES.format(train=train, extra=extra)


# case -> (recipe text, {file name: contents}, regex the message must match)
BAD = {
    "yaml syntax": ("name: x\ntask: {kind: listops\nsteps: []\n", {}, r"line \d+, column \d+: YAML syntax error"),
    "yaml tab indentation": ("name: x\n\ttask: 1\n", {}, r"YAML syntax error"),
    "yaml duplicate key": (GOOD + "name: other\n", {}, r"duplicate key 'name': keep one of them"),
    "yaml python tag": ("name: !!python/object/apply:os.system ['echo hi']\n", {}, r"YAML syntax error"),
    "not a mapping": ("- a\n- b\n", {}, r"a recipe is a YAML mapping"),
    "empty file": ("", {}, r"a recipe is a YAML mapping"),
    "unknown top-level key": (GOOD + "seeed: 3\n", {},
                              r"recipe.yaml:11: recipe: unknown key 'seeed' \(did you mean 'seed'\?\); "
                              r"valid keys: name, seed"),
    "unknown step key": (GOOD.replace("epochs: 1", "epocs: 1"), {},
                         r"recipe.yaml:9: steps\[0\]: unknown key 'epocs' \(did you mean 'epochs'\?\)"),
    "unknown task key": (GOOD.replace("n_test: 10", "n_tests: 10"), {},
                         r"recipe.yaml:6: task: unknown key 'n_tests' \(did you mean 'n_test'\?\)"),
    "unknown teacher key": (GOOD + "teacher: {layers: 3}\n", {}, r"teacher: unknown key 'layers'"),
    "unknown bench key": (GOOD + "bench: {batch: [1]}\n", {}, r"bench: unknown key 'batch' \(did you mean 'batch_sizes'\?\)"),
    "wrong type": (GOOD.replace("epochs: 1", "epochs: many"), {},
                   r"recipe.yaml:9: steps\[0\].epochs: Input should be a valid integer"),
    "wrong type list": (GOOD + "bench: {batch_sizes: 8}\n", {}, r"bench.batch_sizes: Input should be a valid list"),
    "epochs zero": (GOOD.replace("epochs: 1", "epochs: 0"), {}, r"steps\[0\].epochs: Input should be greater than or equal to 1"),
    "negative lr": (GOOD.replace("epochs: 1", "lr: -0.1"), {}, r"steps\[0\].lr: Input should be greater than 0"),
    "dropout above 1": (GOOD + "teacher: {dropout: 1.5}\n", {}, r"teacher.dropout: Input should be less than 1"),
    "bad pooling": (GOOD + "teacher: {pooling: max}\n", {}, r"teacher.pooling: Input should be 'mean' or 'cls'"),
    "bad size": (GOOD + "teacher: {size: huge}\n", {}, r"teacher.size: Input should be 'tiny', 'mini'"),
    "heads do not divide dim": (GOOD + "teacher: {dim: 30, n_heads: 4}\n", {},
                                r"dim 30 is not divisible by n_heads 4; set head_dim"),
    "unknown attention kind": (GOOD + "teacher: {attention: sparse}\n", {},
                               r"unknown attention kind 'sparse'; choose one of \[.*'full'"),
    "unknown step kind": (GOOD.replace("kind: export", "kind: exportt"), {},
                          r"steps\[1\]: Input tag 'exportt' found using 'kind' does not match any of the expected tags"),
    "unknown task kind": (GOOD.replace("kind: listops", "kind: listopz"), {}, r"task: Input tag 'listopz'"),
    "step needs a teacher first": (GOOD.replace("  - kind: train\n    epochs: 1\n", ""), {},
                                   r"steps\[0\] \(export\) needs a model: put a `train` step before it"),
    "duplicate stage names": (GOOD.replace("  - kind: export\n", "  - kind: train\n"), {}, r"stage name 'teacher' is used twice"),
    "bench longer than positions": (GOOD + "bench: {seq_lens: [4096]}\n", {},
                                    r"bench.seq_lens \[4096\] exceed task.seq_len 128 \(the model's positions\)"),
    "missing name": ("\n".join(GOOD.splitlines()[1:]) + "\n", {}, r"name: required field is missing"),
    "missing task": ("name: x\nsteps:\n  - kind: train\n", {}, r"task: required field is missing"),
    "empty steps": ("name: x\ntask: {kind: listops}\nsteps: []\n", {}, r"steps: List should have at least 1 item"),
    "run name escapes runs folder": (GOOD.replace("name: good", "name: ../../etc"), {}, r"name: String should match pattern"),
    "absolute run name": (GOOD.replace("name: good", "name: /tmp/x"), {}, r"name: String should match pattern"),
    "step name with slash": (GOOD.replace("    epochs: 1", "    name: a/b"), {}, r"steps\[0\].name: String should match pattern"),
    "bad baseline": (GOOD + "report: {baseline: student}\n", {}, r"report.baseline 'student' is not a stage"),
    "listops lengths": (GOOD.replace("n_test: 10", "n_test: 10\n  min_length: 50\n  max_length: 20"), {},
                        r"min_length \(50\) > max_length \(20\)"),
    "export opset too old": (GOOD.replace("  - kind: export\n", "  - kind: export\n    opset: 11\n"), {},
                             r"steps\[1\].opset: Input should be greater than or equal to 17"),
    "cuda without a gpu": (GOOD + "device: cuda\n", {},
                           r"device: cuda, but torch sees no CUDA device" if not torch.cuda.is_available() else r"^$"),
    "missing data file": (files_recipe("nope.csv"), {}, r"nope.csv"),
    "missing text column": (files_recipe(extra=", text_column: sentence"), {"train.csv": CSV_OK},
                            r"train.csv has no column 'sentence'; columns found: \['text', 'label'\]; set text_column"),
    "missing label column": (files_recipe(extra=", label_column: y"), {"train.csv": CSV_OK}, r"train.csv.*'y'"),
    "single class": (files_recipe(), {"train.csv": "text,label\n" + "w x\n".replace("\n", ",a\n") * 30},
                     r"one class|single class|only 1 class"),
    "not utf-8": (files_recipe(), {"train.csv": b"text,label\n\xff\xfe bad,a\n"}, r"train.csv.*UTF-8|UTF-8.*train.csv"),
    "unseen test label": (files_recipe(extra=", test: test.csv"), {"train.csv": CSV_OK, "test.csv": "text,label\nx y,zzz\n"},
                          r"zzz"),
    "empty data file": (files_recipe(), {"train.csv": ""}, r"train.csv"),
}


def write_case(tmp_path: Path, case: str) -> Path:
    text, files, _ = BAD[case]
    for name, content in files.items():
        (tmp_path / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


def test_table_is_large_enough():
    assert len(BAD) >= 30


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_clear_error_and_writes_nothing(tmp_path, case, capsys):
    if case == "cuda without a gpu" and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    path = write_case(tmp_path, case)
    runs = tmp_path / "runs"
    assert cli.main(["run", str(path), "--runs-dir", str(runs)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    assert len(err.strip().splitlines()) <= 3, err
    import re

    assert re.search(BAD[case][2], err, flags=re.S), err
    assert not runs.exists(), "a bad recipe must write nothing"


yaml_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True), st.text(max_size=12))
yaml_keys = st.sampled_from(["name", "seed", "task", "steps", "kind", "teacher", "bench", "epochs", "train", "listops", "export",
                             "lr", "size", "x"])
yaml_values = st.recursive(yaml_scalars,
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(yaml_keys, inner, max_size=5),
                           max_leaves=25)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(yaml_values)
def test_random_documents_only_raise_recipe_errors(document):
    import yaml

    text = yaml.safe_dump(document)
    try:
        validate_recipe(parse_yaml(text, "fuzz.yaml"), "fuzz.yaml", text)
    except RecipeError:
        pass


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=200))
def test_random_text_only_raises_recipe_errors(text):
    try:
        validate_recipe(parse_yaml(text, "fuzz.yaml"), "fuzz.yaml", text)
    except RecipeError:
        pass


def test_non_finite_loss_names_the_step_and_the_fix():
    from compress.steps.train import TrainConfig
    from compress.training.loop import train

    model = torch.nn.Linear(2, 2)
    split = {"input_ids": torch.ones(8, 3, dtype=torch.long), "attention_mask": torch.ones(8, 3, dtype=torch.long),
             "labels": torch.zeros(8, dtype=torch.long)}

    def nan_loss(model, batch):
        return torch.tensor(float("nan"), requires_grad=True), None

    with pytest.raises(TrainingError, match=r"loss became nan at step 1 \(epoch 1\); lower the learning rate \(lr is 0.001\)"):
        train(model, split, split, TrainConfig(batch_size=4), nan_loss, seed=0, device="cpu")

    def oom(model, batch):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(TrainingError, match=r"out of GPU memory at step 1 with batch_size 4; lower batch_size \(e.g. 2\)"):
        train(model, split, split, TrainConfig(batch_size=4), oom, seed=0, device="cpu")


TINY_RUN = [
    "task.n_train=300", "task.n_validation=40", "task.n_test=40", "task.min_length=5", "task.max_length=30", "task.seq_len=40",
    "teacher.size=tiny", "teacher.dim=32", "teacher.ffn_dim=64", "steps.teacher.epochs=2",
    "bench.batch_sizes=[1]", "bench.repeats=3", "bench.warmup=1", "bench.memory=false",
    "bench.interleave=false",  # the end-of-run re-timing: latencies only, which no test here compares
]


def default_sigint() -> None:
    """In the child before exec: SIGINT back to its default. A pytest-xdist worker ignores SIGINT, and an
    ignored signal stays ignored across exec, so the run would never see the Ctrl-C the test sends."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_cli(runs: Path, *extra: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, str(ROOT / "cli.py"), "run", "listops", "--runs-dir", str(runs), *TINY_RUN, *extra]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=default_sigint, **kw)


def final_metrics(run_dir: Path) -> dict:
    teacher = json.loads((run_dir / "results.json").read_text())["stages"][0]
    return {k: teacher[k] for k in ("accuracy", "accuracy_torch", "macro_f1", "val_accuracy", "train_curve")}


def test_killed_run_resumes_with_the_same_metrics(tmp_path):
    """SIGKILL after training; the rerun reuses the teacher and ends with the metrics of an uninterrupted run."""
    reference = run_cli(tmp_path / "reference")
    killed_runs = tmp_path / "killed"
    victim = run_cli(killed_runs)
    marker = killed_runs / "listops" / "steps" / "00-train-teacher.json"
    wait_until(marker.exists, victim, f"{marker} written")  # the teacher's step is done: kill right after it
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert marker.exists(), victim.stderr.read()
    for path in (killed_runs / "listops").rglob("*"):
        assert not path.name.endswith(".json") or json.loads(path.read_text()) is not None  # every visible json is whole
    resumed = run_cli(killed_runs)
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    assert "[0] train teacher: cached" in err
    out_ref, err_ref = reference.communicate(timeout=600)
    assert reference.returncode == 0, err_ref
    assert final_metrics(killed_runs / "listops") == final_metrics(tmp_path / "reference" / "listops"), "same seed, same metrics"
    assert not list((killed_runs / "listops").rglob(".*.tmp"))


def wait_until(check, proc: subprocess.Popen, what: str, timeout_s: float = 600):
    """Poll `check()` until it returns something truthy (returned): a state the run writes, not a clock.
    The run ending first fails; the deadline only guards against a hung run (generous: CI machines are busy)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        try:  # between checks, wait for the run's own end (at most 0.05 s): ending before `what` fails
            proc.wait(timeout=0.05)
        except subprocess.TimeoutExpired:
            continue
        found = check()  # written just before it ended
        assert found, f"the run ended (code {proc.returncode}) before {what}: {proc.stderr.read()}"
        return found
    raise AssertionError(f"not {what} after {timeout_s} s")


def wait_for_event(path: Path, event: str, proc: subprocess.Popen, timeout_s: float = 600) -> dict:
    """The first line of metrics.jsonl with `event`, once the run has written it."""

    def find() -> dict | None:
        lines = path.read_text().splitlines() if path.is_file() else []
        records = (json.loads(line) for line in lines if line.strip().endswith("}"))
        return next((r for r in records if r.get("event") == event), None)

    return wait_until(find, proc, f"writing a {event!r} event in {path}", timeout_s)


def test_sigint_stops_cleanly_and_says_how_to_resume(tmp_path):
    proc = run_cli(tmp_path, "steps.teacher.epochs=50", "steps.teacher.patience=null")  # far more epochs than the wait needs
    wait_for_event(tmp_path / "listops" / "metrics.jsonl", "epoch", proc)  # training is under way
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err  # the CLI's code for "interrupted by SIGINT" (128 + 2)
    assert "interrupted: finished steps are kept; run the same command again to resume" in err
    events = [json.loads(line).get("event") for line in (tmp_path / "listops" / "metrics.jsonl").read_text().splitlines()]
    assert "step_done" not in events, "the signal stopped training: no step finished"
    assert not (tmp_path / "listops" / "stages" / "teacher").exists()
    assert not list((tmp_path / "listops").rglob(".*.tmp")), "nothing half-written is left"
