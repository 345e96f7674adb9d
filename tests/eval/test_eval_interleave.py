"""Re-timing in rounds: every stage opened once per round, in rotated order; records are replaced, not added."""

import json
import shutil

import jsonschema

import cli
from eval.interleave import retime_stages, time_in_rounds


def test_rounds_open_each_stage_once_per_round_in_rotated_order():
    calls, opened = [], []

    def opener(name):
        def open_():
            opened.append(name)
            return {(1, 8): lambda: calls.append((name, 1)), (2, 8): lambda: calls.append((name, 2))}
        return open_

    stats = time_in_rounds({name: opener(name) for name in "abc"}, warmup=1, repeats=4, rounds=2)
    assert opened == list("abc") + list("bca")
    # per open: each cell gets 1 warm-up and ceil(4 / 2) = 2 timed calls, before the next stage opens
    assert calls[:6] == [("a", 1)] * 3 + [("a", 2)] * 3
    assert {name: {cell: s["n"] for cell, s in cells.items()} for name, cells in stats.items()} == {
        name: {(1, 8): 4, (2, 8): 4} for name in "abc"}


def stage(name, onnx_dir, latency):
    return {"name": name, "kind": "train", "onnx_dir": onnx_dir, "precision": "fp32", "latency": latency}


def test_retime_replaces_onnxruntime_cpu_records_and_keeps_the_rest(tmp_path, tiny_onnx, vocab_size):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        shutil.copy(tiny_onnx, tmp_path / name / "model.onnx")
    old_ort = {"device": "cpu", "runtime": "onnxruntime", "batch": 1, "seq_len": 8, "p50_ms": 99.0}
    torch_row = {"device": "cpu", "runtime": "torch", "batch": 1, "seq_len": 8, "p50_ms": 5.0}
    stages = {"a": stage("a", "a", [dict(old_ort), dict(torch_row)]), "b": stage("b", "b", [dict(old_ort)]),
              "c": stage("c", "c", None)}  # c: never benchmarked, left alone
    protocol = {"batch_sizes": [1, 2], "seq_lens": [8], "threads": 1, "warmup": 1, "repeats": 3}
    assert retime_stages(stages, tmp_path, protocol, vocab_size) == ["a", "b"]
    ort_a = [r for r in stages["a"]["latency"] if r["runtime"] == "onnxruntime"]
    assert [(r["batch"], r["seq_len"], r["n"], r["interleaved"]) for r in ort_a] == [(1, 8, 3, True), (2, 8, 3, True)]
    assert torch_row in stages["a"]["latency"] and stages["c"]["latency"] is None
    assert all(r["p50_ms"] < 99.0 for r in ort_a), "the old record was replaced"


def test_torch_is_retimed_in_the_same_rounds_under_inference_mode(tmp_path, tiny_onnx, tiny_model, vocab_size):
    """A torch p50 from the bench step and an ORT p50 from the rounds would compare two machine loads."""
    import torch

    seen = []

    class Watched(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = tiny_model

        def forward(self, **feeds):
            seen.append((torch.is_inference_mode_enabled(), torch.get_num_threads()))
            return self.inner(**feeds)

    (tmp_path / "a").mkdir()
    shutil.copy(tiny_onnx, tmp_path / "a" / "model.onnx")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    old_torch = {"device": "cpu", "runtime": "torch", "precision": "fp32", "batch": 1, "seq_len": 8, "p50_ms": 99.0}
    old_ort = {"device": "cpu", "runtime": "onnxruntime", "batch": 1, "seq_len": 8, "p50_ms": 99.0}
    stages = {"a": stage("a", "a", [dict(old_ort), dict(old_torch)]), "b": stage("b", "b", [dict(old_ort)])}
    protocol = {"batch_sizes": [1], "seq_lens": [8], "threads": 1, "warmup": 1, "repeats": 3}
    threads = torch.get_num_threads()
    retime_stages(stages, tmp_path, protocol, vocab_size, {"a": Watched, "b": Watched})
    torch_a = [r for r in stages["a"]["latency"] if r["runtime"] == "torch"]
    assert [(r["n"], r["interleaved"], r["threads"]) for r in torch_a] == [(3, True, 1)] and torch_a[0]["p50_ms"] < 99.0
    assert not any(r["runtime"] == "torch" for r in stages["b"]["latency"])  # b had no torch record: none added
    assert seen and all(mode and n == 1 for mode, n in seen)  # inference mode, the protocol's threads
    assert torch.get_num_threads() == threads  # restored


def test_bench_run_folder_rewrites_results_and_report(tmp_path, tiny_onnx, vocab_size, make_results):
    results = make_results("quickstart")
    run_dir = tmp_path / "quickstart"
    for s in results["stages"]:
        folder = run_dir / "stages" / s["name"] / "onnx"
        folder.mkdir(parents=True)
        shutil.copy(tiny_onnx, folder / "model.onnx")
        (folder / "config.json").write_text(json.dumps({"vocab_size": vocab_size}))
        s["onnx_dir"] = f"stages/{s['name']}/onnx"
    results["protocol"].update(batch_sizes=[1], seq_lens=[8], warmup=1, repeats=3)
    (run_dir / "results.json").write_text(json.dumps(results))
    assert cli.main(["bench", str(run_dir), "--repeats", "4"]) == 0
    after = json.loads((run_dir / "results.json").read_text())
    assert after["protocol"]["interleaved"] is True and after["protocol"]["repeats"] == 4
    assert after["protocol"]["timing"]["onnxruntime"]["session.intra_op.allow_spinning"] == "1"
    for s in after["stages"]:
        assert [r["n"] for r in s["latency"] if r["runtime"] == "onnxruntime" and r["device"] == "cpu"] == [4]
    schema = json.loads((cli.Path(cli.__file__).parent / "eval" / "results_schema.json").read_text())
    jsonschema.validate(after, schema)
    assert (run_dir / "report.html").is_file()


def test_bench_without_a_run_folder_is_a_clear_error(tmp_path, capsys):
    assert cli.main(["bench"]) == 2
    assert "run folder" in capsys.readouterr().err
    assert cli.main(["bench", str(tmp_path)]) == 2
    assert "results.json not found" in capsys.readouterr().err
