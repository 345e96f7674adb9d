"""The `baseline` reference row and distillation with unlabelled texts, end to end on a tiny files task.

One run: the baseline first (before `train`), a tiny teacher, a student distilled with an
`unlabeled:` file, and a second baseline at the end. The reference row is in results.json with
sklearn's own accuracy on the same split (recomputed here), its size and latency; the teacher
is still the teacher, parent and baseline. Editing the unlabelled file re-runs the distillation
with a new teacher-logits cache entry and retrains no teacher. (Re-timing, the report's figures
and --check with a reference row: tests/eval/test_eval_baseline.py.)
"""

import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest

import cli

ROOT = Path(__file__).resolve().parents[2]
POSITIVE = ["good", "great", "fine", "lovely", "superb", "nice"]
NEGATIVE = ["bad", "awful", "poor", "dull", "boring", "weak"]
FILLER = ["movie", "plot", "actor", "scene", "story", "film", "music", "ending", "the", "was", "very", "quite"]


def sentences(n: int, seed: int) -> list[tuple[str, str]]:
    """Seeded short reviews: label words plus filler, 15% of labels flipped (so no model is perfect)."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        label = int(rng.integers(2))
        words = list(rng.choice(FILLER, 4)) + list(rng.choice(POSITIVE if label else NEGATIVE, 2))
        rng.shuffle(words)
        if rng.random() < 0.15:
            label = 1 - label
        rows.append((" ".join(words), "pos" if label else "neg"))
    return rows


def write_csv(path: Path, rows: list[tuple[str, str]]) -> None:
    path.write_text("text,label\n" + "".join(f"{t},{y}\n" for t, y in rows))


RECIPE = """\
name: ref
task: {kind: files, train: train.csv, validation: validation.csv, test: test.csv, seq_len: 12,
       tokenizer: {kind: wordpiece, vocab_size: 120}}
teacher: {dim: 32, n_heads: 2, ffn_dim: 64, n_layers: 2}
steps:
  - {kind: baseline, C: [0.5, 4.0]}
  - {kind: train, max_steps: 3}
  - {kind: evaluate}                 # no export: its torch logits are what agreement compares with
  - {kind: distill, student: {n_layers: 1}, max_steps: 2, unlabeled: [more/extra.txt]}
  - {kind: baseline, name: baseline_late}
bench: {batch_sizes: [1, 2], repeats: 3, warmup: 1, memory: false, torch: false, threads: 1}
"""


@pytest.fixture
def task_dir(tmp_path: Path) -> Path:
    for split, (n, seed) in {"train": (160, 0), "validation": (40, 1), "test": (40, 2)}.items():
        write_csv(tmp_path / f"{split}.csv", sentences(n, seed))
    (tmp_path / "more").mkdir()
    (tmp_path / "more" / "extra.txt").write_text("\n".join(t for t, _ in sentences(30, 3)) + "\n\n")  # a blank line: skipped
    (tmp_path / "ref.yaml").write_text(RECIPE)
    return tmp_path


def sklearn_accuracy(folder: Path, C_grid: list[float]) -> tuple[float, float]:
    """(the C with the best validation accuracy, its test accuracy), computed here with scikit-learn directly."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    def read(split):
        lines = (folder / f"{split}.csv").read_text().splitlines()[1:]
        return [line.rsplit(",", 1)[0] for line in lines], [int(line.rsplit(",", 1)[1] == "pos") for line in lines]

    (train, y_train), (val, y_val), (test, y_test) = read("train"), read("validation"), read("test")
    vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    x = vec.fit_transform(train)
    fits = {C: LogisticRegression(C=C, max_iter=1000, random_state=0).fit(x, y_train) for C in C_grid}
    scores = {C: np.mean(m.predict(vec.transform(val)) == y_val) for C, m in fits.items()}
    best = max(sorted(C_grid), key=lambda C: scores[C])  # first of the ties: the smaller C
    return best, float(np.mean(fits[best].predict(vec.transform(test)) == y_test))


def finished(run_dir: Path) -> list[str]:
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [f"{e['stage']}:{e['kind']}" for e in events if e.get("event") == "step_done"]


def test_baseline_row_and_unlabeled_transfer_set(task_dir: Path):
    runs = task_dir / "runs"
    args = ["run", str(task_dir / "ref.yaml"), "--runs-dir", str(runs)]
    assert cli.main(args) == 0
    run_dir = runs / "ref"
    results = json.loads((run_dir / "results.json").read_text())
    jsonschema.validate(results, json.loads((ROOT / "eval" / "results_schema.json").read_text()))
    stages = {s["name"]: s for s in results["stages"]}
    assert list(stages) == ["baseline", "teacher", "student", "baseline_late"]

    # the reference row: sklearn's own accuracy on the same split, a size, a latency; never in the chain
    base = stages["baseline"]
    C, accuracy = sklearn_accuracy(task_dir, [0.5, 4.0])
    assert base["kind"] == "baseline" and base["reference"] is True
    assert base["baseline"]["C"] == C and base["accuracy"] == pytest.approx(accuracy, abs=1e-12)
    assert 0 < base["macro_f1"] <= 1 and base["n_test"] == 40
    assert "agreement" not in base, "the teacher had no test logits yet when the first baseline ran"
    assert stages["baseline_late"]["agreement"] is not None
    files = run_dir / base["artifact_dir"]
    assert base["model_bytes"] == sum(f.stat().st_size for f in files.iterdir()) > 0
    assert sorted(f.name for f in files.iterdir()) == ["model.json", "weights.npz"]
    assert base["params"] == base["baseline"]["nonzero_coef"] + 1 + base["baseline"]["vocab_size"]  # binary: one intercept
    assert [(r["runtime"], r["batch"], r["seq_len"]) for r in base["latency"]] == [("sklearn", 1, 12), ("sklearn", 2, 12)]
    assert all(r["p50_ms"] > 0 and r["input"] == "raw text" for r in base["latency"])
    assert "onnx_dir" not in base and not (run_dir / "stages" / "baseline" / "onnx").exists()
    assert "parent" not in base

    # the teacher is still the teacher, the first parent and the report's baseline
    assert results["baseline"] == "teacher"
    assert stages["teacher"].get("parent") is None and stages["student"]["parent"] == "teacher"
    assert stages["teacher"]["agreement"] == 1.0

    # the report: a marked row, not ranked
    markdown = (run_dir / "report.md").read_text()
    assert "| baseline | baseline (reference) | — |" in markdown and "(reference) are classical models" in markdown

    # the transfer set: n_train grows by the file's non-blank lines; the teacher labels them
    distill = stages["student"]["distill"]
    assert distill["n_unlabeled"] == 30 and distill["n_train"] == 160 + 30
    cache = run_dir / "stages" / "teacher" / "cache"
    assert len(list(cache.glob("train_logits-*.npy"))) == 1

    # a changed unlabelled file: distill re-runs with a new cache entry, the teacher is not retrained
    first = finished(run_dir)
    with (task_dir / "more" / "extra.txt").open("a") as f:
        f.write("a quite superb ending\n")
    assert cli.main(args) == 0
    rerun = finished(run_dir)[len(first):]
    assert "teacher:train" not in rerun and "student:distill" in rerun
    assert "baseline:baseline" in rerun, "the first baseline re-runs once the teacher's logits exist (agreement)"
    assert len(list(cache.glob("train_logits-*.npy"))) == 2
    after = {s["name"]: s for s in json.loads((run_dir / "results.json").read_text())["stages"]}
    assert after["student"]["distill"]["n_unlabeled"] == 31 and after["baseline"]["agreement"] is not None


def test_missing_unlabeled_file_is_an_error_before_anything_runs(task_dir: Path, capsys):
    recipe = task_dir / "ref.yaml"
    recipe.write_text(RECIPE.replace("more/extra.txt", "more/missing.txt"))
    runs = task_dir / "runs"
    assert cli.main(["run", str(recipe), "--runs-dir", str(runs)]) == 2
    assert "unlabeled file" in (err := capsys.readouterr().err) and "missing.txt" in err
    assert not runs.exists(), "nothing trained or written"
    assert cli.main(["validate", str(recipe)]) == 2
    assert "missing.txt" in capsys.readouterr().err
    (task_dir / "more" / "missing.txt").write_text("\n \n")
    assert cli.main(["validate", str(recipe)]) == 2
    assert "holds no text" in capsys.readouterr().err


RECOVER_RECIPE = """\
name: rec
task: {kind: files, train: train.csv, validation: validation.csv, test: test.csv, seq_len: 12,
       tokenizer: {kind: wordpiece, vocab_size: 120}}
teacher: {dim: 32, n_heads: 2, ffn_dim: 64, n_layers: 2}
steps:
  - {kind: train, max_steps: 3}
  - kind: prune_ffn
    amount: 0.5
    recover: {max_steps: 2, unlabeled: [more/extra.txt], augment: {copies: 1}}
bench: {batch_sizes: [1], repeats: 3, warmup: 1, memory: false, torch: false, threads: 1}
"""


def test_recovery_trains_on_the_transfer_set(task_dir: Path, capsys):
    """`recover:` with `unlabeled:` and `augment:` recovers on the split + its copies + the file, labelled by the teacher;
    the resolved recipe names the file by its absolute path; a missing one is an error before anything runs."""
    recipe = task_dir / "rec.yaml"
    recipe.write_text(RECOVER_RECIPE)
    runs = task_dir / "runs"
    assert cli.main(["run", str(recipe), "--runs-dir", str(runs)]) == 0
    stage = {s["name"]: s for s in json.loads((runs / "rec" / "results.json").read_text())["stages"]}["prune_ffn"]
    assert stage["recover_set"]["n_train"] == 160 * 2 + 30 and stage["recover_set"]["n_unlabeled"] == 30
    assert len(list((runs / "rec" / "stages" / "teacher" / "cache").glob("train_logits-*.npy"))) == 1
    import yaml

    resolved = yaml.safe_load((runs / "rec" / "recipe.yaml").read_text())
    assert resolved["steps"][1]["recover"]["unlabeled"] == [str(task_dir.resolve() / "more" / "extra.txt")]

    recipe.write_text(RECOVER_RECIPE.replace("more/extra.txt", "more/gone.txt").replace("name: rec", "name: rec2"))
    assert cli.main(["run", str(recipe), "--runs-dir", str(runs)]) == 2
    assert "gone.txt" in capsys.readouterr().err and not (runs / "rec2").exists()
    recipe.write_text(RECOVER_RECIPE.replace("recover: {", "recover: {distill_from: none, "))
    assert cli.main(["validate", str(recipe)]) == 2
    assert "distill_from: teacher" in capsys.readouterr().err
