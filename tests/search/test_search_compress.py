"""`slimformer compress` end to end on a tiny self-built teacher: a front, a choice, best.yaml that rebuilds it bit for bit,
the test split read only at the end, an impossible budget that still ends with the nearest candidate, bad arguments,
and a search killed with SIGKILL that resumes without repeating a finished trial."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import cli

ROOT = Path(__file__).resolve().parents[2]
GOOD, BAD, FILLER = ["good", "great", "fine", "nice"], ["bad", "poor", "awful", "sad"], ["the", "a", "day", "film", "was", "it"]


def texts(n: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = i % 2
        words = rng.choices(FILLER, k=rng.randint(2, 6)) + [rng.choice(GOOD if label else BAD)]
        rng.shuffle(words)
        rows.append((" ".join(words), "positive" if label else "negative"))
    return rows


def write_csv(path: Path, rows) -> None:
    path.write_text("text,label\n" + "\n".join(f"{t},{label}" for t, label in rows) + "\n")


@pytest.fixture
def task(tmp_path):
    """CSV files of a two-class word task, unlabelled texts, a recipe with a tiny scratch teacher, a synthetic latency model."""
    write_csv(tmp_path / "train.csv", texts(240, 0))
    write_csv(tmp_path / "validation.csv", texts(60, 1))
    write_csv(tmp_path / "test.csv", texts(60, 2))
    (tmp_path / "more.txt").write_text("\n".join(t for t, _ in texts(60, 3)) + "\n")
    (tmp_path / "teacher.yaml").write_text(
        "name: tiny\nseed: 0\n"
        "task: {kind: files, train: train.csv, validation: validation.csv, test: test.csv, seq_len: 12,"
        " tokenizer: {kind: wordpiece, vocab_size: 60}}\n"
        "teacher: {size: tiny, dim: 32, n_heads: 2, ffn_dim: 64, n_layers: 2}\n"
        "steps:\n  - {kind: train, epochs: 3, batch_size: 16, lr: 3.0e-3}\n")
    from compress.search.latency import FEATURES

    coef = {name: 1e-6 for name in FEATURES} | {"const": 0.05}  # ms: a model that grows with every count, fitted elsewhere
    arch = {"norm": "pre", "activation": "gelu", "pooling": "mean", "max_len": 12, "num_labels": 2, "head_activation": None,
            "classifier_dim": None}
    (tmp_path / "latency.json").write_text(json.dumps({"model": {"coef": coef, "arch": arch}, "fit_points": 0,
                                                       "holdout": {"fp32": 0.1, "int8": 0.1, "points": []}}))
    return tmp_path


def compress_args(task: Path, *budget: str, name: str = "s", trials: int = 2) -> list[str]:
    return ["compress", str(task / "teacher.yaml"), *budget, "--batch-size", "2", "--time", "20m",
            "--unlabeled", str(task / "more.txt"), "--runs-dir", str(task / "runs"), "--name", name, "--in-process",
            "--max-trials", str(trials), "--full-epochs", "1", "--families", "transformer",
            "--latency-model", str(task / "latency.json")]


def test_a_search_killed_then_resumed_chooses_on_validation_and_best_yaml_rebuilds_the_choice(task, monkeypatch):
    """One search, the whole life of it: killed with SIGKILL after its first finished trial, resumed without repeating
    it, ended with a front and a choice; the test file read only by the startup checks and the final scoring; best.yaml
    rebuilding the chosen model bit for bit; then an impossible budget on the same trials ends with the nearest one."""
    import compress.data.files as files
    from compress.search.runner import Search

    # one cheap estimate, then its full recovery
    args = compress_args(task, "--max-drop", "40", "--minimize", "latency", trials=1)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    search_dir = task / "runs" / "s"
    journal = search_dir / "trials.jsonl"
    first = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), *args], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 900  # generous: a loaded machine
    try:
        while time.time() < deadline and first.poll() is None:  # wait for the first finished trial, then kill
            if journal.is_file() and '"state": "complete"' in journal.read_text():
                break
            time.sleep(0.2)
        assert first.poll() is None, "the search ended before it could be killed"
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
    finished = {(e["number"], e["fidelity"]) for e in map(json.loads, journal.read_text().splitlines())
                if e.get("state") == "complete"}
    assert finished, "no trial finished before the deadline"

    # stopped (Ctrl-C, SIGTERM) before any full recovery: nothing chosen and said so, search.json and the report written
    full_phase = Search.full_phase

    def interrupted(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(Search, "full_phase", interrupted)
    assert cli.main(args) == 0
    stopped = json.loads((search_dir / "search.json").read_text())
    assert stopped["chosen"]["trial"] is None and "not yet run" in stopped["chosen"]["note"]
    assert "nothing is chosen" in (search_dir / "report.md").read_text() and (search_dir / "best.yaml").is_file()
    monkeypatch.setattr(Search, "full_phase", full_phase)

    reads, read_rows = [], files._read_rows

    def guarded(path, fmt, role):  # the test file may be opened by the startup checks, then only by the final scoring
        if Path(path).name == "test.csv":
            phase = Search.active.phase if Search.active else None
            if phase not in ("checks", "final scoring"):
                raise AssertionError(f"the test split was read during {phase!r}")
            reads.append(phase)
        return read_rows(path, fmt, role)

    monkeypatch.setattr(files, "_read_rows", guarded)
    assert cli.main(args) == 0  # resumed in this process
    entries = [json.loads(line) for line in journal.read_text().splitlines() if line.strip()]
    runs = [(e["number"], e["fidelity"]) for e in entries if e.get("state") == "complete"]
    assert len(runs) == len(set(runs)), "a finished trial ran again"
    assert finished < set(runs)
    assert reads == ["checks", "final scoring"]
    result = json.loads((search_dir / "search.json").read_text())
    assert result["front"] and result["chosen"]["trial"] in result["front"] and result["chosen"]["meets_budget"]
    assert all(t["full"] is None or t["cheap"] is not None for t in result["trials"])  # full only after a cheap estimate
    assert result["front_test"] and all(0 <= f["test_accuracy"] <= 1 for f in result["front_test"])
    assert result["sensitivity"]["layers"] and len(result["sensitivity"]["heads"]["drops"]) == 2
    assert (search_dir / "chosen" / "onnx" / "model.onnx").is_file() and result["budgets_met"]["accuracy"] is True
    assert (search_dir / "report.html").is_file()

    # best.yaml is a plain recipe that rebuilds the chosen model: the same validation accuracy, bit for bit
    monkeypatch.setattr(files, "_read_rows", read_rows)
    quick = ["bench.memory=false", "bench.traffic=false", "bench.repeats=3", "bench.warmup=1", "bench.interleave=false"]
    assert cli.main(["run", str(search_dir / "best.yaml"), *quick, "--runs-dir", str(task / "again")]) == 0
    rebuilt = json.loads((task / "again" / "s-best" / "results.json").read_text())
    last = [s for s in rebuilt["stages"] if s.get("validation_accuracy") is not None][-1]
    assert last["validation_accuracy"] == result["chosen"]["val_accuracy"]

    # an impossible budget (as accurate as the teacher within a microsecond) ends with the nearest candidate, saying so
    assert cli.main(compress_args(task, "--max-drop", "0", "--max-latency-ms", "0.000001", trials=1)) == 0
    again = json.loads((search_dir / "search.json").read_text())
    assert again["chosen"]["trial"] is not None and not again["chosen"]["meets_budget"]
    assert {m["budget"] for m in again["chosen"]["missed"]} >= {"max_latency_ms"}
    assert (search_dir / "best.yaml").is_file()


@pytest.mark.parametrize("budget, message", [
    (["--max-drop", "-1", "--minimize", "latency"], "non-negative"),
    (["--max-drop", "1"], "nothing to minimise"),
    (["--minimize", "latency"], "accuracy constraint"),
    (["--max-drop", "one", "--minimize", "size"], "percentage"),
])
def test_bad_arguments_are_clean_errors(task, budget, message, capsys):
    assert cli.main(compress_args(task, *budget)) == 2
    assert message in capsys.readouterr().err
    assert not (task / "runs").exists()


def test_unknown_objective_is_refused(task, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(compress_args(task, "--max-drop", "1", "--minimize", "speed"))
    assert e.value.code == 2 and "invalid choice" in capsys.readouterr().err
