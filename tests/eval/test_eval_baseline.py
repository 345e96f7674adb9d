"""The classical reference row: eval.baseline (fit, save without pickle, load, time) and how reports,
--check and re-timing treat a stage marked `reference: true`."""

import json
import shutil
from pathlib import Path

import jsonschema
import numpy as np
import pytest

import cli
from eval import plots
from eval.baseline import bench_texts, fit_tfidf_logreg, load, save, size_bytes
from eval.check import load_thresholds, run_checks
from eval.interleave import retime_stages
from eval.report import write_report

SCHEMA = Path(__file__).resolve().parents[2] / "eval" / "results_schema.json"
WORDS = ["red", "green", "blue", "sky", "grass", "sea", "leaf", "fire", "rose", "wave", "tree", "brick"]


def texts(n: int, n_classes: int, seed: int) -> tuple[list[str], list[int]]:
    """Seeded texts whose class shows in a word or two, plus noise words."""
    rng = np.random.default_rng(seed)
    labels = [int(y) for y in rng.integers(n_classes, size=n)]
    return [" ".join([WORDS[y], *rng.choice(WORDS, 4)]) for y in labels], labels


@pytest.mark.parametrize("n_classes", [2, 3])
def test_fit_save_load_predicts_as_sklearn_does(tmp_path, n_classes):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    (train, y_train), (val, y_val), (test, _) = texts(120, n_classes, 0), texts(40, n_classes, 1), texts(40, n_classes, 2)
    model, tried = fit_tfidf_logreg(train, y_train, val, y_val, n_classes, [0.5, 2.0], seed=0)
    assert set(tried) == {"0.5", "2"} and model.settings["C"] == max([0.5, 2.0], key=lambda C: tried[f"{C:g}"])
    vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    reference = LogisticRegression(C=model.settings["C"], max_iter=1000, random_state=0).fit(vec.fit_transform(train), y_train)
    x_test = vec.transform(test)
    np.testing.assert_array_equal(model.predict(test), reference.predict(x_test))
    np.testing.assert_allclose(model.scores(test), reference.predict_log_proba(x_test), atol=1e-10)

    save(model, tmp_path / "sk")
    assert sorted(p.name for p in (tmp_path / "sk").iterdir()) == ["model.json", "weights.npz"]
    np.load(tmp_path / "sk" / "weights.npz", allow_pickle=False)  # plain arrays, no pickled objects
    loaded = load(tmp_path / "sk")
    np.testing.assert_array_equal(loaded.scores(test), model.scores(test))
    assert size_bytes(tmp_path / "sk") == sum(p.stat().st_size for p in (tmp_path / "sk").iterdir())
    counts = model.counts()
    vocab = len(vec.vocabulary_)
    assert (counts["vocab_size"] == vocab
            and counts["params"] == np.count_nonzero(reference.coef_) + reference.intercept_.size + vocab)


def test_a_class_missing_from_training_scores_minus_infinity_and_timing_records():
    (train, y_train), (val, y_val) = texts(60, 2, 0), texts(20, 2, 1)
    model, _ = fit_tfidf_logreg(train, y_train, val, y_val, 3, [1.0], seed=0)  # labels 0..2, class 2 never seen
    scores = model.scores(val)
    assert scores.shape == (20, 3) and np.isneginf(scores[:, 2]).all()
    records = bench_texts(model, val, batch_sizes=[1, 4], seq_len=16, threads=1, warmup=1, repeats=2)
    assert [(r["runtime"], r["device"], r["batch"], r["seq_len"], r["n"], r["input"]) for r in records] == [
        ("sklearn", "cpu", 1, 16, 2, "raw text"), ("sklearn", "cpu", 4, 16, 2, "raw text")]


def with_reference(results: dict, make_latency) -> dict:
    """The conftest results plus a reference row: faster and smaller than both stages, accuracy 70 %."""
    latency = [make_latency(1, 0.2, runtime="sklearn"), make_latency(8, 0.5, runtime="sklearn")]
    results["stages"].insert(0, {"name": "baseline", "kind": "baseline", "reference": True, "accuracy": 0.70, "macro_f1": 0.69,
                                 "params": 5000, "model_bytes": 800_000, "artifact_dir": "stages/baseline/sklearn",
                                 "n_test": 2000, "latency": latency})
    return results


def test_report_marks_the_reference_row_and_plots_it_off_the_front(make_run, make_results, make_latency, monkeypatch):
    results = with_reference(make_results(), make_latency)
    jsonschema.validate(results, json.loads(SCHEMA.read_text()))
    drawn = {}
    real = plots.trade_off

    def spy(names, costs, accuracies, xlabel, log_x, reference=None):
        drawn[xlabel.split(",")[0]] = (names, costs, list(reference))
        return real(names, costs, accuracies, xlabel, log_x, reference)

    monkeypatch.setattr(plots, "trade_off", spy)
    paths = write_report([make_run(results=results)])
    markdown = paths["md"].read_text()
    # not ranked: the fastest and smallest row, yet the student's 2.50 ms and 1.20 MB stay the bold best
    # Wilson's interval from n_test 2000; no per-text record against the teacher in this fixture: Newcombe's unpaired one
    assert "| baseline | baseline (reference) | — | 70.00 [67.95, 71.97] | -1.00 [-3.82, +1.83] n.s. unpaired |" in markdown
    row = next(line for line in markdown.splitlines() if line.startswith("| baseline |"))
    assert "**" not in row and "0.80 files (6.17× smaller)" in row and "| 0.50 |" in row and "20.00×" in row
    assert "**2.50**" in markdown and "**1.20 (4.12× smaller)**" in markdown
    assert "(reference) are classical models" in markdown
    assert drawn["p50 latency"] == (["baseline", "teacher", "student"], [0.5, 10.0, 2.5], [True, False, False])
    assert drawn["size"][2] == [True, False, False]
    assert plots.pareto_front([10.0, 2.5], [71.0, 69.25]) == [1, 0], "the front is the two pipeline stages'"


def test_check_names_a_reference_row_explicitly_and_reads_its_own_size_and_runtime(make_run, make_results, make_latency,
                                                                                    tmp_path):
    run_dir = make_run(results=with_reference(make_results(), make_latency))
    path = tmp_path / "t.yaml"
    path.write_text('stages:\n  "*": {min_accuracy: 0.69, max_onnx_mb: 5.0}\n')
    checks = run_checks([run_dir], load_thresholds(path))
    assert {c.stage for c in checks} == {"teacher", "student"}, "* does not select a reference row"
    path.write_text("stages:\n  baseline: {min_accuracy: 0.71, max_onnx_mb: 0.8, max_p50_ms: 0.5, batch_size: 8, seq_len: 64}\n")
    described = {c.key: (c.describe(), c.passed) for c in run_checks([run_dir], load_thresholds(path))}
    assert described["min_accuracy"] == ("baseline: min_accuracy 70.00 % < 71.00 %", False)
    assert described["max_onnx_mb"] == ("baseline: max_onnx_mb (own files, no ONNX) 0.80 MB ≤ 0.80 MB", True)
    assert described["max_p50_ms"] == ("baseline: max_p50_ms @ batch 8, seq_len 64, onnxruntime cpu 0.50 ms ≤ 0.50 ms", True)


def test_retiming_passes_a_reference_row_by(tmp_path, tiny_onnx, vocab_size, make_results, make_latency, fast_figures):
    """Interleaved re-timing (and `slimformer bench RUN`) times the ONNX stages and leaves the reference row as it was."""
    results = with_reference(make_results("quickstart"), make_latency)
    run_dir = tmp_path / "quickstart"
    for s in results["stages"][1:]:
        folder = run_dir / "stages" / s["name"] / "onnx"
        folder.mkdir(parents=True)
        shutil.copy(tiny_onnx, folder / "model.onnx")
        (folder / "config.json").write_text(json.dumps({"vocab_size": vocab_size}))
        s["onnx_dir"] = f"stages/{s['name']}/onnx"
    results["protocol"].update(batch_sizes=[1], seq_lens=[8], warmup=1, repeats=2)
    stages = {s["name"]: json.loads(json.dumps(s)) for s in results["stages"]}
    stages["baseline"]["onnx_dir"] = "stages/teacher/onnx"  # even with an artifact to time, a reference row is not re-timed
    assert retime_stages(stages, run_dir, results["protocol"], vocab_size) == ["teacher", "student"]
    assert stages["baseline"]["latency"] == results["stages"][0]["latency"]

    (run_dir / "results.json").write_text(json.dumps(results))
    assert cli.main(["bench", str(run_dir), "--repeats", "2"]) == 0
    after = json.loads((run_dir / "results.json").read_text())
    assert after["stages"][0]["latency"] == results["stages"][0]["latency"]
    assert all(r.get("interleaved") for r in after["stages"][1]["latency"] if r["runtime"] == "onnxruntime")
    jsonschema.validate(after, json.loads(SCHEMA.read_text()))
