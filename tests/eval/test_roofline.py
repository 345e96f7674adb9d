"""The roofline column: the MatMul peak microbenchmark, its place in results.json, and the report's fraction of peak."""

import json
from pathlib import Path

import jsonschema
import onnx

from eval import write_report
from eval.peak import matmul_graph, measure_peak, measure_peaks, record_peak

SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "eval" / "results_schema.json").read_text())


def test_graphs_are_the_ops_artifacts_run():
    for precision, op in (("fp32", "MatMul"), ("int8", "MatMulInteger")):
        model = onnx.load_from_string(matmul_graph(precision, 8)[0])
        assert [n.op_type for n in model.graph.node] == [op]


def test_peak_is_a_positive_rate_at_the_given_threads():
    """No speed is asserted (a shared machine), only that it measures: positive, finite, at 1 thread."""
    for precision in ("fp32", "int8"):
        peak = measure_peak(precision, threads=1, sizes=(32, 64), warmup=1, repeats=3)
        assert peak["flops_per_s"] > 0 and peak["threads"] == 1 and peak["size"] in (32, 64)
        assert peak["flops_per_s"] == max(peak["rates"].values())
        assert abs(peak["flops_per_s"] - 2 * peak["size"] ** 3 / (peak["p50_ms"] / 1000)) < 1e-6 * peak["flops_per_s"]


def test_report_shows_the_fraction_of_peak(make_run, make_results, fast_figures):
    results = make_results()
    results["protocol"]["peak"] = {"fp32": {"precision": "fp32", "flops_per_s": 100e9, "size": 256, "threads": 2},
                                   "int8": {"precision": "int8", "flops_per_s": 200e9, "size": 256, "threads": 2}}
    results["stages"][0]["flops"] = [{"batch": 8, "seq_len": 64, "flops": 400_000_000}]  # headline: batch 8, p50 10 ms
    jsonschema.validate(results, SCHEMA)
    text = write_report([make_run(results=results)])["md"].read_text()
    header = next(line for line in text.splitlines() if line.startswith("| Stage"))
    teacher = next(line for line in text.splitlines() if line.startswith("| teacher"))
    cells = dict(zip([c.strip() for c in header.split("|")], [c.strip() for c in teacher.split("|")], strict=True))
    assert cells["GFLOP/call"] == "0.4"
    assert cells["GFLOP/s"] == "40"  # 0.4 GFLOP / 10 ms
    assert cells["% of peak"].strip("*") == "40.0"  # of the fp32 peak, 100 GFLOP/s
    assert "fp32 100 GFLOP/s (256³), int8 200 GOP/s (256³), 2 threads" in text


def test_bench_records_the_peak_and_fills_missing_flops(make_run, make_results, monkeypatch):
    """`slimformer bench runs/x` writes protocol.peak, and counts FLOPs of stages from before the column."""
    results = make_results()
    run_dir = make_run(results=results)
    onnx_dir = run_dir / "stages" / "teacher" / "onnx"
    onnx_dir.mkdir(parents=True)
    config = {"model_type": "slimformer", "dim": 32, "n_layers": 1, "n_heads": [4], "head_dim": 8, "ffn_dim": [64],
              "attention": [{"kind": "full"}], "id2label": {"0": "a", "1": "b", "2": "c"}}
    (onnx_dir / "config.json").write_text(json.dumps(config))
    monkeypatch.setattr("eval.peak.measure_peaks", lambda threads: measure_peaks(threads, sizes=(32,), repeats=3))
    peak = record_peak(run_dir)
    written = json.loads((run_dir / "results.json").read_text())
    jsonschema.validate(written, SCHEMA)
    assert written["protocol"]["peak"]["fp32"]["flops_per_s"] == peak["fp32"]["flops_per_s"] > 0
    assert [f["batch"] for f in written["stages"][0]["flops"]] == [1, 8]
    assert "flops" not in written["stages"][1]  # no onnx_dir: nothing to count from


def test_measure_peaks_has_both_precisions():
    peaks = measure_peaks(1, sizes=(16,), repeats=3)
    assert {"fp32", "int8"} <= set(peaks) and all(peaks[p]["flops_per_s"] > 0 for p in ("fp32", "int8"))


def test_latency_table_gives_every_cpu_record_its_roofline(make_run, make_results, fast_figures):
    """Not only the headline: each CPU record of the grid gets FLOP/s and % of the peak of its precision."""
    from eval.report import build_report, load_runs

    results = make_results()
    results["protocol"]["peak"] = {"fp32": {"precision": "fp32", "flops_per_s": 100e9, "size": 256, "threads": 2}}
    stage = results["stages"][0]
    stage["flops"] = [{"batch": r["batch"], "seq_len": r["seq_len"], "flops": 10**9 * r["batch"]} for r in stage["latency"]]
    report = build_report(load_runs([make_run(results=results)]), None)
    header = report.latency.headers
    checked = 0
    for row in report.latency.rows:
        cells = dict(zip(header, [text for text, _ in row], strict=True))
        if cells["Stage"] != stage["name"]:
            continue
        expected = 1e9 * int(cells["batch"]) / (float(cells["p50_ms"]) / 1000)
        assert abs(float(cells["GFLOP/s"]) - expected / 1e9) <= 0.01 * expected / 1e9
        if cells["device"] == "cpu":
            assert abs(float(cells["% of peak"]) - 100 * expected / 100e9) <= 0.6
            checked += 1
        else:
            assert cells["% of peak"] == "—"
    assert checked >= 2, "the grid's CPU records, not only the headline's"
