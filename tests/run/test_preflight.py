"""`slimformer validate` runs every check `slimformer run` runs before it writes anything (compress/run/preflight.py).

For each check, one broken input goes through both commands: each exits 2 with the same one-line
message (the file or field, what is wrong, the fix) and no run folder appears. The checkpoint is a
tiny random BERT (tests/helpers.py), the task a tiny CSV; nothing trains, since every case fails
before the first step.
"""

import json
import re
import shutil

import pytest

import cli
from tests.helpers import tiny_bert_folder, write_task

RECIPE = "name: x\ntask: {{kind: files, train: train.csv, seq_len: {seq_len}}}\nteacher: {{from: ckpt}}\nsteps:\n{steps}"
TRAIN = "  - {kind: train, epochs: 1}\n"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A good tiny BERT folder: 2 layers, dim 32, 4 heads, FFN 48, 40 positions."""
    return tiny_bert_folder(tmp_path_factory.mktemp("ckpt") / "ckpt")


def recipe(steps: str = "", seq_len: int = 16) -> str:
    return RECIPE.format(seq_len=seq_len, steps=TRAIN + steps)


def both(folder, capsys) -> str:
    """The message `validate` and `run` give for folder/recipe.yaml: the same, exit 2, nothing written."""
    path, runs = folder / "recipe.yaml", folder / "runs"
    assert cli.main(["validate", str(path)]) == 2
    validated = capsys.readouterr().err
    assert cli.main(["run", str(path), "--runs-dir", str(runs)]) == 2
    ran = capsys.readouterr().err
    assert validated == ran, (validated, ran)
    assert ran.startswith("error: ") and "Traceback" not in ran and len(ran.strip().splitlines()) == 1, ran
    assert not runs.exists(), "nothing is written"
    return ran


def setup(tmp_path, checkpoint, text: str):
    write_task(tmp_path)
    shutil.copytree(checkpoint, tmp_path / "ckpt")
    (tmp_path / "recipe.yaml").write_text(text)
    return tmp_path / "ckpt"


def truncate(ckpt):
    path = ckpt / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-100])


def corrupt_header(ckpt):
    path = ckpt / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[8:24] = b"\xff" * 16
    path.write_bytes(bytes(data))


def missing_shard(ckpt):
    (ckpt / "model.safetensors").rename(ckpt / "model-00001-of-00002.safetensors")
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    (ckpt / "model.safetensors.index.json").write_text(json.dumps(index))


def config_field(**fields):
    def edit(ckpt):
        config = json.loads((ckpt / "config.json").read_text())
        (ckpt / "config.json").write_text(json.dumps(config | fields))

    return edit


def no_tokenizer(ckpt):
    for path in ckpt.iterdir():
        if "token" in path.name or path.name.startswith(("vocab", "special")):
            path.unlink()


# case -> (break the checkpoint folder, recipe text, the message's regex)
CHECKPOINTS = {
    "folder missing": (lambda c: shutil.rmtree(c), recipe(), r"teacher.from: .*ckpt is not a folder"),
    "no config": (lambda c: (c / "config.json").unlink(), recipe(), r"ckpt has no config.json"),
    "corrupt config": (lambda c: (c / "config.json").write_text('{"model_type": "be'), recipe(),
                       r"config.json is not valid JSON .*download or write the file again"),
    "only a pickled .bin": (lambda c: (c / "model.safetensors").rename(c / "pytorch_model.bin"), recipe(),
                            r"weights only as \['pytorch_model.bin'\].*convert them once to safetensors"),
    "truncated weights": (truncate, recipe(), r"model.safetensors is truncated: [\d,]+ bytes where its header implies "
                                              r"[\d,]+ \(8 \+ [\d,]+ bytes of header \+ [\d,]+ bytes of tensors\); download"),
    "corrupt header": (corrupt_header, recipe(), r"model.safetensors has a corrupt header"),
    "missing shard": (missing_shard, recipe(), r"names shards that are not in the folder: \['model-00002-of-00002"),
    "unsupported model_type": (config_field(model_type="gpt2"), recipe(), r"model_type 'gpt2' cannot be imported; supported"),
    "no tokenizer": (no_tokenizer, recipe(), r"ckpt has no tokenizer: add the checkpoint's tokenizer files"),
    "positions shorter than seq_len": (lambda c: None, recipe(seq_len=64),
                                       r"task.seq_len 64 exceeds the 40 positions .*; set task.seq_len <= 40"),
}


@pytest.mark.parametrize("case", sorted(CHECKPOINTS))
def test_teacher_import_checks(tmp_path, checkpoint, capsys, case):
    edit, text, message = CHECKPOINTS[case]
    edit(setup(tmp_path, checkpoint, text))
    assert re.search(message, both(tmp_path, capsys)), case


# case -> (the steps after the teacher's train step, the message's regex): the checkpoint has 2 layers, dim 32, 4 heads, FFN 48
SHAPES = {
    "width cut as wide as the model": ("  - {kind: prune_width, dim: 32}\n",
                                       r"steps\[1\] \(prune_width 'prune_width'\): keeping 32 of 32 channels removes nothing"),
    "per_layer of the wrong length": ("  - {kind: prune_heads, per_layer: [0.5]}\n",
                                      r"steps\[1\] \(prune_heads .*\): per_layer has 1 entries; give one per layer \(2"),
    "layer_map past the teacher": ("  - {kind: distill, student: {n_layers: 1}, layer_map: [5]}\n",
                                   r"steps\[1\] \(distill 'student'\): layer_map \[5\] needs 1 entries .* in 0..1"),
    "amount 1 empties every layer": ("  - {kind: prune_heads, amount: 1}\n",
                                     r"amount 1 removes 8 of the 8 heads .* at most 6 can go \(amount <= 0.75\); lower amount, "
                                     r"or set allow_empty_layers: true"),
    "a per-layer cut empties a layer": ("  - {kind: prune_ffn, per_layer: [1.0, 0.5]}\n",
                                        r"per_layer\[0\] = 1 removes all 48 neurons of layer 0, which leaves it none"),
    "a cut after a global ranking, at its bound": (
        "  - {kind: prune_heads, amount: 0.75, name: a}\n  - {kind: prune_heads, per_layer: [0.9, 0.0], name: b}\n",
        r"steps\[2\] \(prune_heads 'b'\): per_layer\[0\] = 0.9 removes all 1 heads of layer 0"),
    "student width the teacher's heads do not split": (
        "  - {kind: distill, student: {dim: 30}}\n",
        r"student.dim 30 is not divisible by the teacher's 4 heads, which the student keeps; set student.n_heads"),
    "student heads that do not split its width": ("  - {kind: distill, student: {dim: 100, n_heads: 3}}\n",
                                                  r"steps\[1\].student: dim 100 is not divisible by n_heads 3; set head_dim"),
    "swap that shrinks the positions": ("  - {kind: swap_attention, to: linformer, max_len: 20}\n",
                                        r"max_len 20 would shrink the 40 learned positions"),
    "swap of no layer": ("  - {kind: swap_attention, to: linformer, layers: [7]}\n",
                         r"layers \['7'\] match no layer with attention; layers are 0..1"),
}


@pytest.mark.parametrize("case", sorted(SHAPES))
def test_shape_checks(tmp_path, checkpoint, capsys, case):
    steps, message = SHAPES[case]
    setup(tmp_path, checkpoint, recipe(steps))
    assert re.search(message, both(tmp_path, capsys)), case


def test_a_variant_step_is_placed_in_its_list(tmp_path, checkpoint, capsys):
    setup(tmp_path, checkpoint, recipe() + "variants:\n  kd:\n    - {kind: prune_width, amount: 0.5, name: a}\n"
                                           "    - {kind: prune_width, dim: 16, name: b}\n")
    assert re.search(r"variants.kd\[1\] \(prune_width 'kd.b'\): keeping 16 of 16 channels", both(tmp_path, capsys))


MIXED_CSV = "text,label\n" + "".join(f"w {i},{'0 neg 1 pos'.split()[i % 4]}\n" for i in range(40))
FILES = {
    "missing task file": ({}, "name: x\ntask: {kind: files, train: nope.csv}\nsteps: [{kind: train}]\n", r"nope.csv not found"),
    "labels written two ways": ({"train.csv": MIXED_CSV},
                                "name: x\ntask: {kind: files, train: train.csv}\nsteps: [{kind: train}]\n",
                                r"writes labels two ways: integers \(rows 1, 3: '0', '1'\) and words \(rows 2, 4: "
                                r"'neg', 'pos'\)"),
    "missing unlabeled file": ({}, "name: x\ntask: {kind: files, train: train.csv}\nsteps:\n  - {kind: train}\n"
                                   "  - {kind: distill, unlabeled: [gone.txt]}\n", r"unlabeled file .*gone.txt not found"),
    "corpus without its column": ({"corpus.csv": "sentence\na b\nc d\n"},
                                  "name: x\ntask: {kind: files, train: train.csv}\nsteps:\n"
                                  "  - {kind: pretrain, corpus: [corpus.csv]}\n"
                                  "  - {kind: train}\n",
                                  r"corpus file .*corpus.csv has no column 'text'.*set corpus_column: to the one"),
    "shipped data not built": ({}, "name: x\ntask: {kind: files, train: data/vader/train.csv}\nsteps: [{kind: train}]\n",
                               r"task.train: .*data/vader/train.csv is not there yet: .* run `cd .* && python -m "
                               r"compress.data.build_vader --out data/vader`, then this command again"),
}


@pytest.mark.parametrize("case", sorted(FILES))
def test_file_checks(tmp_path, capsys, monkeypatch, case):
    import compress.run.preflight as preflight

    monkeypatch.setattr(preflight, "ROOT", tmp_path)  # the "repository" whose data/ a builder makes
    files, text, message = FILES[case]
    write_task(tmp_path)
    for name, content in files.items():
        (tmp_path / name).write_text(content)
    (tmp_path / "recipe.yaml").write_text(text)
    assert re.search(message, both(tmp_path, capsys)), case


def test_an_edited_step_marker_reruns_its_step(tmp_path):
    from compress.run.runner import read_marker

    said = []
    marker = tmp_path / "00-train-teacher.json"
    marker.write_text('{"fingerprint": "ab", "recor')
    assert read_marker(marker, said.append) is None and "unreadable" in said[0]
    marker.write_text('{"fingerprint": "ab", "recorded": {}}')
    assert read_marker(marker, said.append) == {"fingerprint": "ab", "recorded": {}}
    assert read_marker(tmp_path / "absent.json", said.append) is None and len(said) == 1
