"""Every command of the README's table, typed as a user types it: the installed `slimformer` script in a subprocess.

Each command that runs something goes through the script; its error paths and the commands that
only read or copy files (`ls`, `cp`, `schema`) are checked in this process with `cli.main` (the same
argument parsing and code: a subprocess would add only its ~8 s of imports). One shrunk quickstart
run (with an int8 variant, so `bench` has two stages to compare) is made once; each command then
runs against it. Also what the README promises about a stage folder:
`AutoModelForSequenceClassification.from_pretrained` loads it after `import compress`, with no
`trust_remote_code`.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import cli

SHRINK = ["task.max_examples=400", "task.seq_len=24", "task.tokenizer.vocab_size=300", "teacher.size=tiny", "teacher.dim=32",
          "teacher.n_heads=2", "teacher.ffn_dim=64", "teacher.n_layers=2", "steps.teacher.epochs=1",
          "bench.batch_sizes=[1,2]", "bench.repeats=3", "bench.warmup=1", "bench.memory=false",
          "bench.interleave=false",  # `slimformer bench` re-times in interleaved rounds below (test_bench_retimes_a_run)
          "variants={q: [{kind: quantize}, {kind: evaluate}, {kind: bench}]}"]


def slimformer(*args: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    script = shutil.which("slimformer")
    assert script, "the `slimformer` console script is not installed: pip install -e '.[test]'"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([script, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("cli")
    done = slimformer("run", "quickstart", *SHRINK, "--runs-dir", str(work / "runs"), cwd=work)
    assert done.returncode == 0, done.stderr
    assert "report:" in done.stdout
    assert "Loading weights" not in done.stderr and "Writing model shards" not in done.stderr, (
        "transformers' own bars are silenced")
    return work / "runs" / "quickstart"


def test_run_writes_stages_reports_and_model_cards(run):
    results = json.loads((run / "results.json").read_text())
    assert [s["name"] for s in results["stages"]] == ["teacher", "q.int8"]
    card = (run / "stages" / "teacher" / "model" / "README.md").read_text()
    assert card.startswith("---\n") and "pipeline_tag: text-classification" in card
    teacher = results["stages"][0]
    assert f"{100 * teacher['accuracy']:.2f}%" in card and "Lineage: teacher (train)" in card


def test_predict_prints_labels(run):
    done = slimformer("predict", str(run / "stages" / "teacher" / "onnx"), "a small domestic animal", "a tall plant", cwd=run)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    labels = json.loads((run / "stages" / "teacher" / "onnx" / "config.json").read_text())["id2label"].values()
    assert [p["text"] for p in lines] == ["a small domestic animal", "a tall plant"]
    assert all(p["label"] in labels and 0 < p["score"] <= 1 for p in lines)


def test_predict_on_a_folder_without_a_model_is_a_clear_error(run, capsys):
    assert cli.main(["predict", str(run), "text"]) == 2
    err = capsys.readouterr().err
    assert "holds no model.onnx" in err and "Traceback" not in err


def test_a_stage_loads_with_auto_classes_after_import_compress(run):
    script = ("import compress, sys\n"
              "from transformers import AutoModelForSequenceClassification, AutoTokenizer\n"
              "folder = sys.argv[1]\n"
              "model = AutoModelForSequenceClassification.from_pretrained(folder)\n"
              "tok = AutoTokenizer.from_pretrained(folder)\n"
              "print(type(model).__module__, model(**tok(['a dog'], return_tensors='pt')).logits.shape[-1])\n")
    done = subprocess.run([sys.executable, "-c", script, str(run / "stages" / "teacher" / "model")], capture_output=True,
                          text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdin=subprocess.DEVNULL, timeout=300)
    assert done.returncode == 0, done.stderr
    module, n_classes = done.stdout.split()
    assert module.startswith("compress.models") and int(n_classes) == 26


def test_validate_ls_cp_schema(tmp_path, capsys):
    done = slimformer("validate", "quickstart", "steps.teacher.epochs=1", "--print", cwd=tmp_path)
    assert done.returncode == 0 and "ok (4 steps" in done.stdout and "epochs: 1" in done.stdout, done.stderr
    assert cli.main(["ls"]) == 0
    printed = "".join(capsys.readouterr())
    assert "quickstart" in printed and "swap_attention" in printed
    assert cli.main(["cp", "quickstart", str(tmp_path / "mine.yaml")]) == 0
    assert (tmp_path / "mine.yaml").read_text().startswith("#")
    assert cli.main(["schema", "-o", str(tmp_path / "schema.json")]) == 0
    assert json.loads((tmp_path / "schema.json").read_text())["title"] == "slimformer recipe"


def test_report_and_check(run, tmp_path):
    thresholds = tmp_path / "t.yaml"
    thresholds.write_text('stages:\n  "*": {min_accuracy: 0.0}\n  teacher: {max_params: 10}\n')
    done = slimformer("report", str(run), "--check", str(thresholds), cwd=tmp_path)
    assert done.returncode == 1, done.stderr  # the teacher has more than 10 parameters
    assert "FAIL" in done.stderr and (run / "report.md").is_file()
    text = (run / "report.md").read_text()
    assert text.index("## Summary") < text.index("## Protocol"), "the summary comes first"
    assert "`slimformer bench <run folder>`" in text or "latency spread" not in text  # code spans keep their brackets


def test_bench_retimes_a_run(run):
    done = slimformer("bench", str(run), "--repeats", "3", cwd=run)
    assert done.returncode == 0, done.stderr
    assert "re-timed 2 stages" in done.stdout
    assert json.loads((run / "results.json").read_text())["protocol"]["interleaved"] is True


def test_bench_scaling(tmp_path, capsys):
    done = slimformer("bench", "--scaling", "--lengths", "16", "32", "--kinds", "full", "linformer", "--repeats", "1",
                      "--warmup", "0", "--no-memory", "--out", str(tmp_path / "scaling"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    data = json.loads((tmp_path / "scaling" / "scaling.json").read_text())
    assert {r["kind"] for r in data["latency"]} == {"full", "linformer"}
    capsys.readouterr()
    assert cli.main(["bench", "--scaling", "--kinds", "longformer", "--out", str(tmp_path / "x")]) == 2
    assert "unknown attention kind" in capsys.readouterr().err
    broken = tmp_path / "broken_run"  # a run folder whose results.json is unreadable: refused before measuring
    broken.mkdir()
    (broken / "results.json").write_text("{bad")
    assert cli.main(["bench", "--scaling", "--lengths", "16", "32", "--out", str(broken)]) == 2
    assert "results.json is not valid JSON" in capsys.readouterr().err
    assert not (broken / "scaling.json").exists()
