"""A recipe that imports a pretrained teacher (`teacher.from`): fine-tuned, exported, distilled, pruned and
quantized with the checkpoint's own tokenizer; and the mistakes a user can make with it.

The checkpoint is a tiny random BERT built here (tests/helpers.py), the task a tiny CSV: nothing
comes from a hub.
"""

import json

import pytest

import cli
from compress.errors import RecipeError
from compress.run.config import load_recipe
from tests.helpers import WORDS, tiny_bert_folder, write_task

RECIPE = """\
name: imported
task: {kind: files, train: train.csv, seq_len: 16}
teacher: {from: ckpt, pooling: mean}
steps:
  - {kind: train, epochs: 2, lr: 1.0e-3, batch_size: 16}
  - {kind: export}
  - {kind: evaluate}
variants:
  kd:
    - {kind: distill, student: {n_layers: 1}, max_steps: 4, batch_size: 16}
    - {kind: prune_heads, amount: 0.5, recover: {max_steps: 2}}
    - {kind: export}
    - {kind: evaluate}
    - {kind: quantize}
    - {kind: evaluate}
bench: {batch_sizes: [1], repeats: 3, warmup: 1, memory: false, interleave: false, threads: 1}
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("imported")
    tiny_bert_folder(root / "ckpt")
    write_task(root)
    (root / "recipe.yaml").write_text(RECIPE)
    assert cli.main(["run", str(root / "recipe.yaml"), "--runs-dir", str(root / "runs")]) == 0
    return root / "runs" / "imported"


def test_the_teacher_is_the_imported_checkpoint_fine_tuned(run):
    stages = {s["name"]: s for s in json.loads((run / "results.json").read_text())["stages"]}
    teacher = stages["teacher"]
    assert teacher["imported"]["family"] == "bert" and teacher["imported"]["pooling"] == "mean"
    assert teacher["imported"]["pooling_from"]  # where the pooling came from is said
    assert teacher["parity"]["max_abs_diff"] <= 1e-4
    assert teacher["accuracy"] > 0.9, "the words decide the label: fine-tuning learns it"
    config = json.loads((run / "stages" / "teacher" / "model" / "config.json").read_text())
    assert config["norm"] == "post" and config["vocab_size"] == 5 + len(WORDS) + 52


def test_every_stage_uses_and_saves_the_checkpoints_tokenizer(run, tmp_path):
    from transformers import AutoTokenizer

    original = AutoTokenizer.from_pretrained(run.parent.parent / "ckpt")
    for folder in ("tokenizer", "stages/teacher/model", "stages/teacher/onnx", "stages/kd.student/model", "stages/kd.int8/onnx"):
        tok = AutoTokenizer.from_pretrained(run / folder)
        assert tok.get_vocab() == original.get_vocab(), folder
        assert tok("a good movie")["input_ids"][0] == original.cls_token_id


def test_students_of_an_imported_teacher_compress(run):
    stages = {s["name"]: s for s in json.loads((run / "results.json").read_text())["stages"]}
    student = json.loads((run / "stages" / "kd.student" / "model" / "config.json").read_text())
    assert student["n_layers"] == 1 and student["norm"] == "post" and student["pad_token_id"] == 0
    assert stages["kd.student"]["distill"]["init"]["exact"] > 0, "layers were copied from the teacher"
    heads = json.loads((run / "stages" / "kd.prune_heads" / "model" / "config.json").read_text())["n_heads"]
    assert heads == [2]
    assert stages["kd.int8"]["precision"] == "int8" and stages["kd.int8"]["accuracy"] is not None


def test_predict_reads_the_imported_tokenizer(run, capsys):
    assert cli.main(["predict", str(run / "stages" / "teacher" / "onnx"), "the movie was great"]) == 0
    assert json.loads(capsys.readouterr().out)["label"] in ("pos", "neg")


@pytest.mark.parametrize(("extra", "message"), [
    ("teacher: {from: ckpt, dim: 64}", r"teacher.from imports the checkpoint's shape; remove teacher.dim"),
    ("teacher: {from: ckpt}\ntask: {kind: files, train: train.csv, tokenizer: {kind: bpe}}",
     r"task.tokenizer: the imported teacher \(ckpt\) brings its own tokenizer"),
])
def test_recipe_mistakes_are_clear(tmp_path, extra, message):
    text = "name: x\ntask: {kind: files, train: train.csv}\nsteps: [{kind: train}]\n" + extra + "\n"
    if "task:" in extra:
        text = text.replace("task: {kind: files, train: train.csv}\n", "", 1)
    (tmp_path / "r.yaml").write_text(text)
    with pytest.raises(RecipeError, match=message):
        load_recipe(tmp_path / "r.yaml")


def test_a_missing_checkpoint_or_long_inputs_fail_before_anything_is_written(tmp_path, capsys):
    write_task(tmp_path)
    (tmp_path / "r.yaml").write_text("name: x\ntask: {kind: files, train: train.csv}\nteacher: {from: nowhere}\n"
                                     "steps: [{kind: train}]\n")
    assert cli.main(["run", str(tmp_path / "r.yaml"), "--runs-dir", str(tmp_path / "runs")]) == 2
    assert "teacher.from" in capsys.readouterr().err and not (tmp_path / "runs").exists()
    tiny_bert_folder(tmp_path / "ckpt")
    (tmp_path / "r.yaml").write_text("name: x\ntask: {kind: files, train: train.csv, seq_len: 64}\nteacher: {from: ckpt}\n"
                                     "steps: [{kind: train}]\n")
    assert cli.main(["run", str(tmp_path / "r.yaml"), "--runs-dir", str(tmp_path / "runs")]) == 2
    assert "task.seq_len 64 exceeds the 40 positions" in capsys.readouterr().err and not (tmp_path / "runs").exists()
