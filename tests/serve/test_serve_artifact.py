"""A broken ONNX folder (as copies, edits and interrupted downloads leave them) is one clean message, for predict and serve."""

import json
import shutil

import numpy as np
import pytest

import cli
from compress.serve import load_artifact
from compress.serve.artifact import length_groups


def test_the_folder_loads(onnx_dir):
    artifact = load_artifact(onnx_dir, threads=1)
    assert artifact.labels == ["negative", "neutral", "positive"] and artifact.seq_len == 16
    assert artifact.server.tokenizer.encode("good " * 40).ids[-1] == 3  # truncated at seq_len, [SEP] kept last


def test_length_groups_compute_the_fewest_padded_tokens():
    lengths = [5, 5, 6, 40, 41]  # sorted
    assert length_groups(lengths, call_tokens=10, max_size=32) == [range(0, 3), range(3, 5)]  # 10+18 + 10+82 < 10+205
    assert length_groups(lengths, call_tokens=1000, max_size=32) == [range(0, 5)]  # calls cost more than padding
    assert length_groups(lengths, call_tokens=0, max_size=2) == [range(0, 2), range(2, 3), range(3, 4), range(4, 5)]  # free calls
    assert all(len(g) <= 2 for g in length_groups(list(range(1, 12)), call_tokens=1e9, max_size=2))


def test_grouped_batches_give_the_sorted_batches_probabilities_in_input_order(onnx_dir, texts):
    artifact = load_artifact(onnx_dir, threads=1)
    assert 0 <= artifact.call_overhead_tokens(repeats=3) <= artifact.seq_len
    np.testing.assert_allclose(artifact.probabilities(texts, 32, call_tokens=0.0), artifact.probabilities(texts, 32),
                               atol=1e-6)


def truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


BREAKAGES = {
    "no folder": (lambda d: shutil.rmtree(d), "is not a folder"),
    "no model.onnx": (lambda d: (d / "model.onnx").unlink(), "holds no model.onnx"),
    "truncated model.onnx": (lambda d: truncate(d / "model.onnx"), "model.onnx cannot be loaded by ONNX Runtime"),
    "no config.json": (lambda d: (d / "config.json").unlink(), "holds no config.json"),
    "broken config.json": (lambda d: truncate(d / "config.json"), "config.json is not valid JSON"),
    "wrong labels": (lambda d: (d / "config.json").write_text(json.dumps({"max_len": 16, "id2label": {"0": "a"}})),
                     "id2label has ids [0] but model.onnx gives 3 classes"),
    "wrong max_len": (lambda d: (d / "config.json").write_text(json.dumps({"max_len": "long"})),
                      "max_len must be a positive integer"),
    "no tokenizer": (lambda d: (d / "tokenizer.json").unlink(), "holds no tokenizer (tokenizer.json)"),
    "broken tokenizer": (lambda d: truncate(d / "tokenizer.json"), "tokenizer.json cannot be read"),
}


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_a_broken_folder_is_a_clean_error_and_nothing_is_written(onnx_dir, tmp_path, capsys, breakage):
    folder = shutil.copytree(onnx_dir, tmp_path / "onnx")
    breaks, message = BREAKAGES[breakage]
    breaks(folder)
    source, out = tmp_path / "in.txt", tmp_path / "out.jsonl"
    source.write_text("a dog\n", encoding="utf-8")
    assert cli.main(["predict", str(folder), "--input", str(source), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()
    assert cli.main(["predict", str(folder), "a dog"]) == 2
    assert message in capsys.readouterr().err


def test_serve_refuses_a_broken_folder_and_bad_flags(onnx_dir, tmp_path, capsys):
    folder = shutil.copytree(onnx_dir, tmp_path / "onnx")
    truncate(folder / "model.onnx")
    assert cli.main(["serve", str(folder), "--port", "0"]) == 2
    assert "model.onnx cannot be loaded by ONNX Runtime" in capsys.readouterr().err
    assert cli.main(["serve", str(onnx_dir), "--max-batch-size", "0"]) == 2
    assert "--max-batch-size: Input should be greater than or equal to 1" in capsys.readouterr().err


def test_serving_imports_no_step_and_nothing_of_the_runner():
    from tests.test_imports import imports_of, module_files

    files = module_files()
    imported = set().union(*(imports_of(m, path, set(files)) for m, path in files.items() if m.startswith("compress.serve")))
    assert imported and not {t for t in imported if t.startswith(("compress.steps", "compress.run"))}
