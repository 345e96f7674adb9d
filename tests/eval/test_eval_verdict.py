"""eval.verdict: the efficient-attention verdict renders from a synthetic results.json, with the right numbers."""

import json

from eval import write_report
from eval.verdict import HEADERS, LRA_TABLE1, build_verdict, verdict_text


def record(p50: float, seq_len: int = 1024, batch: int = 1, runtime: str = "onnxruntime") -> dict:
    return {"device": "cpu", "runtime": runtime, "precision": "fp32", "batch": batch, "seq_len": seq_len, "threads": 2,
            "p50_ms": p50}


def memory(mb: float, seq_len: int = 1024, batch: int = 1) -> dict:
    return {"device": "cpu", "runtime": "onnxruntime", "batch": batch, "seq_len": seq_len, "peak_rss_bytes": int(mb * 1e6)}


def swapped(name: str, to: str, accuracy: float, p50: float, mb: float, layers=(0, 1), agreement=0.9) -> dict:
    return {"name": name, "kind": "swap_attention", "parent": "teacher", "accuracy": accuracy, "agreement": agreement,
            "latency": [record(p50), record(p50 / 4, seq_len=256)], "peak_memory": [memory(mb)],
            "swap": {"to": to, "layers": list(layers), "attention": [{"kind": to}, {"kind": to}]}}


def results() -> dict:
    stages = [
        {"name": "baseline", "kind": "baseline", "reference": True, "accuracy": 0.41},
        {"name": "teacher", "kind": "train", "accuracy": 0.60, "agreement": 1.0,
         "latency": [record(100.0), record(150.0, batch=8), record(300.0, runtime="torch")], "peak_memory": [memory(900.0)]},
        {"name": "boe", "kind": "distill", "accuracy": 0.40, "distill": {"student": "boe"}},
        swapped("bigbird", "bigbird", 0.595, 20.0, 300.0),
        swapped("performer", "performer", 0.50, 10.0, 200.0, agreement=0.7),
        swapped("linformer_l1", "linformer", 0.61, 50.0, 450.0, layers=[1]),
    ]
    return {"schema_version": 1, "run": "long_lookup", "baseline": "teacher", "stages": stages,
            "protocol": {"task": "lookup", "seq_len": 1024, "split": "test"}}


def test_verdict_rows_numbers_and_verdicts():
    verdict = build_verdict({"long_lookup": results()})
    rows = {row[2]: dict(zip(verdict.headers, row, strict=True)) for row in verdict.rows}
    assert list(rows) == ["teacher", "bigbird", "performer", "linformer_l1"]
    big = rows["bigbird"]
    assert (big["Task"], big["seq_len"], big["Kind"], big["Layers"]) == ("lookup", "1024", "bigbird", "all")
    assert ((big["Accuracy %"], big["Δ vs teacher (pts)"], big["Teacher %"], big["BoE %"], big["Baseline %"])
            == ("59.50", "-0.50", "60.00", "40.00", "41.00"))
    assert (big["p50 ms"], big["Speed-up"], big["Peak MB"], big["Memory ×"]) == ("20.00", "5.00×", "300.0", "0.33×")
    assert big["Timed"] == "cpu onnxruntime, batch 1"  # the task's length, CPU ONNX Runtime, smallest batch
    assert big["Verdict"] == "within 2 points of the teacher"
    assert rows["performer"]["Verdict"] == "not within 2 points: 10.00 below the teacher, 8.00 beyond the margin"
    assert rows["performer"]["Agreement %"] == "70.00"
    assert rows["linformer_l1"]["Layers"] == "1" and rows["linformer_l1"]["Verdict"].startswith("within 2 points")
    assert rows["teacher"]["Verdict"] == "reference" and rows["teacher"]["Speed-up"] == "1.00×"
    assert verdict.notes == ["lookup: the teacher is 20.00 points above the bag-of-embeddings student."]


def test_memory_measured_at_another_batch_is_shown_and_said():
    other = results()
    for stage in other["stages"]:
        for m in stage.get("peak_memory") or []:
            m["batch"] = 8  # the bench measures memory at its largest batch only
    big = {row[2]: dict(zip(build_verdict({"r": other}).headers, row, strict=True))
           for row in build_verdict({"r": other}).rows}["bigbird"]
    assert big["Peak MB"] == "300.0" and big["Timed"] == "cpu onnxruntime, batch 1 (memory: batch 8)"


def test_verdict_text_edges():
    assert verdict_text(58.0, 60.0) == "within 2 points of the teacher"  # exactly 2 points below still counts
    assert verdict_text(57.5, 60.0).startswith("not within 2 points: 2.50 below")
    assert verdict_text(None, 60.0) == "no accuracy to judge"
    assert verdict_text(99.6, 99.6 + 1e-9) == "within 2 points of the teacher (equal to it)"
    assert verdict_text(99.8, 99.6) == "within 2 points of the teacher (0.20 above it)"


def test_lra_reference_numbers_are_table_1():
    assert LRA_TABLE1["ListOps"] == {"full": 36.37, "bigbird": 36.05, "linformer": 35.70, "performer": 18.01}
    assert LRA_TABLE1["Text"] == {"full": 64.27, "bigbird": 64.02, "linformer": 53.94, "performer": 65.40}


def test_agreement_against_another_baseline_is_said():
    other = results()
    other["baseline"] = "baseline"  # the reference row: agreement was measured against it
    notes = build_verdict({"r": other}).notes
    assert "lookup: agreement is with the baseline stage baseline, not the teacher teacher." in notes


def test_no_swaps_no_verdict():
    plain = results()
    plain["stages"] = [s for s in plain["stages"] if "swap" not in s]
    assert build_verdict({"r": plain}) is None


def test_report_renders_the_verdict_section(tmp_path):
    run = tmp_path / "long_lookup"
    run.mkdir()
    (run / "results.json").write_text(json.dumps(results()), encoding="utf-8")
    paths = write_report([run])
    md, page = paths["md"].read_text(encoding="utf-8"), paths["html"].read_text(encoding="utf-8")
    assert "## Efficient attention: verdict" in md and "<h2>Efficient attention: verdict</h2>" in page
    assert "not within 2 points: 10.00 below the teacher, 8.00 beyond the margin" in md
    assert "| ListOps | 36.37 | 36.05 | 35.70 | 18.01 |" in md and "| Text | 64.27 | 64.02 | 53.94 | 65.40 |" in md
    assert "teacher is 20.00 points above the bag-of-embeddings student" in page


def test_accuracies_carry_their_intervals_when_n_test_is_known():
    other = results()
    other["protocol"]["n_test"] = 100
    stages = {s["name"]: s for s in other["stages"]}
    stages["teacher"]["accuracy"] = 0.50  # 50 of 100: Wilson 95% [40.38, 59.62]
    stages["bigbird"]["accuracy_delta"] = {"baseline": "teacher", "delta": 0.095, "ci": [-0.01, 0.2]}
    rows = {row[2]: dict(zip(HEADERS, row, strict=True)) for row in build_verdict({"r": other}).rows}
    assert rows["teacher"]["Accuracy %"] == "50.00 [40.38, 59.62]"
    assert rows["bigbird"]["Δ vs teacher (pts)"] == "+9.50 [-1.00, +20.00] n.s."
    assert rows["performer"]["Δ vs teacher (pts)"] == "+0.00"  # no paired record: the difference alone
