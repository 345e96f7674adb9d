"""Every error that suggests a key or a value is checked by applying the suggestion: the error goes away.

Each case is a recipe (and files) with one mistake: `slimformer validate` names the fix, the test
applies that fix as a `key=value` override, and `validate` then passes. Also here: paths given as
overrides resolve against the current folder, paths in a YAML file against that file.
"""

import re
from pathlib import Path

import pytest
import torch

import cli
from tests.helpers import tiny_bert_folder, write_task

BASE = ("name: x\ntask: {{kind: files, train: {train}, seq_len: 16{task}}}\nteacher: {teacher}\n"
        "steps:\n  - {{kind: train}}\n{steps}")
TINY = "{size: tiny, dim: 32, ffn_dim: 64}"  # 2 layers of 2 heads
SENTENCES = "sentence,label\n" + "".join(f"the movie was {'good' if i % 2 else 'bad'},{'ab'[i % 2]}\n" for i in range(40))
EXPORT = "  - {kind: export}\n"


def recipe(steps="", train="train.csv", task="", teacher=TINY):
    return BASE.format(train=train, task=task, teacher=teacher, steps=steps)


# case -> (recipe, {file: text}, the suggestion's regex, the suggestion applied as overrides)
HINTS = {
    "text_column": (recipe(train="s.csv"), {"s.csv": SENTENCES}, r"set text_column: to the right one",
                    ["task.text_column=sentence"]),
    "label_column": (recipe(task=", label_column: y"), {}, r"has no column 'y'.*set label_column: to the right one",
                     ["task.label_column=label"]),
    "format": (recipe(train="train.data"), {"train.data": SENTENCES.replace("sentence", "text")},
               r"or set format: to one of csv", ["task.format=csv"]),
    "corpus_column": (recipe("  - {kind: pretrain, corpus: [s.csv]}\n").replace("  - {kind: train}\n  - {kind: pretrain",
                                                                               "  - {kind: pretrain") + "  - {kind: train}\n",
                      {"s.csv": SENTENCES}, r"set corpus_column: to the one with the texts",
                      ["steps.pretrain.corpus_column=sentence"]),
    "unlabeled_column": (recipe("  - {kind: distill, unlabeled: [s.csv]}\n"), {"s.csv": SENTENCES},
                         r"set unlabeled_column: to the one", ["steps.distill.unlabeled_column=sentence"]),
    "recover unlabeled_column": (recipe("  - {kind: prune_heads, amount: 0.5, recover: {unlabeled: [s.csv]}}\n"),
                                 {"s.csv": SENTENCES}, r"set unlabeled_column: to the one",
                                 ["steps.prune_heads.recover.unlabeled_column=sentence"]),
    "extra_texts_column": (recipe(EXPORT + "  - {kind: prune_vocab, extra_texts: [s.csv]}\n"), {"s.csv": SENTENCES},
                           r"set extra_texts_column: to the one", ["steps.prune_vocab.extra_texts_column=sentence"]),
    "teacher head_dim": (recipe(teacher="{size: tiny, dim: 30, n_heads: 4}"), {}, r"set head_dim", ["teacher.head_dim=8"]),
    "student head_dim": (recipe("  - {kind: distill, student: {dim: 100, n_heads: 3}}\n"), {}, r"set head_dim",
                         ["steps.distill.student.head_dim=32"]),
    "student n_heads": (recipe("  - {kind: distill, student: {dim: 33}}\n"), {}, r"set student.n_heads \(a divisor of its dim\)",
                        ["steps.distill.student.n_heads=3"]),
    "round_to": (recipe("  - {kind: prune_width, dim: 20}\n"), {}, r"use 16 or 24, or set round_to: 1",
                 ["steps.prune_width.round_to=1"]),
    "a width below the model's": (recipe("  - {kind: prune_width, dim: 32}\n"), {},
                                  r"lower dim \(a multiple of round_to 8, below 32\)",
                                  ["steps.prune_width.dim=24"]),
    "allow_empty_layers": (recipe("  - {kind: prune_heads, amount: 1}\n"), {}, r"or set allow_empty_layers: true",
                           ["steps.prune_heads.allow_empty_layers=true"]),
    "a lower amount": (recipe("  - {kind: prune_heads, amount: 1}\n"), {}, r"\(amount <= 0.5\); lower amount",
                       ["steps.prune_heads.amount=0.5"]),
    "per_layer length": (recipe("  - {kind: prune_ffn, per_layer: [0.5]}\n"), {}, r"give one per layer \(2",
                         ["steps.prune_ffn.per_layer=[0.5,0.5]"]),
    "per_layer below 1": (recipe("  - {kind: prune_heads, per_layer: [0.9, 0.5]}\n"), {}, r"give a fraction of at most 0.5,",
                          ["steps.prune_heads.per_layer=[0.5,0.5]"]),
    "layer_map": (recipe("  - {kind: distill, student: {n_layers: 1}, layer_map: [3]}\n"), {}, r"each a teacher layer in 0..1",
                  ["steps.distill.layer_map=[1]"]),
    "swap max_len": (recipe("  - {kind: swap_attention, to: linformer, max_len: 8}\n"), {}, r"give at least 16 or leave it out",
                     ["steps.swap_attention.max_len=16"]),
    "quantize mode": (recipe(EXPORT + "  - {kind: quantize, format: qdq, calibration: {samples: 8}}\n"), {},
                      r"or set mode: static",
                      ["steps.quantize.mode=static"]),
    "pretrain text": (recipe().replace("  - {kind: train}\n", "  - {kind: pretrain, use_task_texts: false}\n  - {kind: train}\n"),
                      {},
                      r"set use_task_texts: true", ["steps.pretrain.use_task_texts=true"]),
    "attention_output": (recipe("  - {kind: swap_attention, to: linformer,"
                                " recover: {attention_output: 1, distill_from: none}}\n"),
                         {},
                         r"set distill_from: teacher", ["steps.swap_attention.recover.distill_from=teacher"]),
}
if not torch.cuda.is_available():
    HINTS["device"] = (recipe() + "device: cuda\n", {}, r"use device: cpu or auto", ["device=cpu"])


@pytest.mark.parametrize("case", sorted(HINTS))
def test_the_suggested_fix_gets_past_the_error(tmp_path, capsys, case):
    text, files, suggestion, fix = HINTS[case]
    write_task(tmp_path)
    for name, content in files.items():
        (tmp_path / name).write_text(content)
    (tmp_path / "recipe.yaml").write_text(text)
    assert cli.main(["validate", str(tmp_path / "recipe.yaml")]) == 2
    err = capsys.readouterr().err
    assert re.search(suggestion, err), err
    assert cli.main(["validate", str(tmp_path / "recipe.yaml"), *fix]) == 0, capsys.readouterr().err


def test_the_checkpoints_positions(tmp_path, capsys):
    write_task(tmp_path)
    tiny_bert_folder(tmp_path / "ckpt")
    (tmp_path / "recipe.yaml").write_text(recipe(task="", teacher="{from: ckpt}").replace("seq_len: 16", "seq_len: 64"))
    assert cli.main(["validate", str(tmp_path / "recipe.yaml")]) == 2
    assert "set task.seq_len <= 40" in capsys.readouterr().err
    assert cli.main(["validate", str(tmp_path / "recipe.yaml"), "task.seq_len=40"]) == 0


# --------------------------------------------------------------------------- override paths


def test_override_paths_resolve_against_the_current_folder(tmp_path, monkeypatch, capsys):
    """A path on the command line is relative to the shell's folder; one in the YAML file to the file's folder; the
    resolved recipe records both as absolute paths."""
    from compress.run.config import load_recipe
    from compress.run.resolved import dump_recipe

    recipes, data = tmp_path / "recipes", tmp_path / "data"
    recipes.mkdir()
    data.mkdir()
    write_task(recipes)  # recipes/train.csv: what the YAML names
    write_task(data)  # data/train.csv: what the command line names, from tmp_path
    (data / "u.txt").write_text("the movie was good\n")
    (recipes / "r.yaml").write_text(recipe("  - {kind: distill, unlabeled: [u.txt]}\n", teacher="{}"))
    (recipes / "u.txt").write_text("a day\n")
    monkeypatch.chdir(tmp_path)
    overrides = ["task.train=data/train.csv", "steps.distill.unlabeled=[data/u.txt]", "teacher.from=ckpt"]
    recipe_, path = load_recipe(Path("recipes/r.yaml"), overrides)
    assert recipe_.task.train == str(data / "train.csv")
    assert recipe_.steps[1].unlabeled == [str(data / "u.txt")]
    assert recipe_.teacher.from_ == str(tmp_path / "ckpt")
    kept, _ = load_recipe(Path("recipes/r.yaml"))
    assert kept.task.train == "train.csv" and kept.steps[1].unlabeled == ["u.txt"], "paths in the file stay as written"
    assert f"train: {recipes / 'train.csv'}" in dump_recipe(kept, path.parent), "the resolved recipe records absolute paths"
    assert cli.main(["validate", "recipes/r.yaml", "task.train=data/train.csv", "steps.distill.unlabeled=[data/u.txt]"]) == 0
    assert cli.main(["validate", "recipes/r.yaml", "task.train=train.csv"]) == 2, "train.csv is not in the current folder"
    assert f"{tmp_path / 'train.csv'} not found" in capsys.readouterr().err
