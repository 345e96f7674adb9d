"""`slimformer predict --input`: every format in the input's order, memory bounded by the chunk, clean errors."""

import csv
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import cli
from compress.data.limits import max_text_chars
from compress.errors import DataError
from compress.serve import READERS, WRITERS, load_artifact, predict_file


@pytest.fixture(scope="module")
def artifact(onnx_dir):
    return load_artifact(onnx_dir, threads=1)


def one_by_one(artifact, texts: list[str]) -> np.ndarray:
    """Each text alone (batch 1, no padding): the reference for any batching and ordering."""
    return np.concatenate([artifact.probabilities([t]) for t in texts])


def write_input(path: Path, texts: list[str]) -> Path:
    rows = [{"id": i, "text": t} for i, t in enumerate(texts)]
    if path.suffix == ".txt":
        path.write_text("".join(t + "\n" for t in texts), encoding="utf-8")
    elif path.suffix in (".csv", ".tsv"):
        with open(path, "w", encoding="utf-8", newline="") as f:
            out = csv.DictWriter(f, ["id", "text"], delimiter="\t" if path.suffix == ".tsv" else ",")
            out.writeheader()
            out.writerows(rows)
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    else:
        pq.write_table(pa.table({"id": [r["id"] for r in rows], "text": texts}), path, row_group_size=7)
    return path


@pytest.mark.parametrize("suffix", [".txt", ".csv", ".tsv", ".jsonl", ".parquet"])
def test_every_format_keeps_the_input_order(onnx_dir, artifact, texts, tmp_path, capsys, suffix):
    texts = texts + (['a "quoted", comma text', "two\nlines"] if suffix in (".csv", ".jsonl", ".parquet") else [])
    source = write_input(tmp_path / f"in{suffix}", texts)
    out = tmp_path / "out.jsonl"
    assert cli.main(["predict", str(onnx_dir), "--input", str(source), "--output", str(out), "--batch-size", "4",
                     "--probabilities", "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    assert f"{len(texts)} texts in" in printed and "texts/s" in printed
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    expected = one_by_one(artifact, texts)  # (N, C)
    assert [r["label"] for r in rows] == [artifact.labels[i] for i in expected.argmax(-1)]
    got = np.array([[r["probabilities"][label] for label in artifact.labels] for r in rows])
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_chunks_and_csv_output(artifact, texts, tmp_path):
    source = write_input(tmp_path / "in.jsonl", texts)
    out = tmp_path / "out.csv"
    assert predict_file(artifact, source, out, batch_size=3, chunk_rows=7, probabilities=True) == len(texts)
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert list(rows[0]) == ["label", "score"] + [f"prob_{label}" for label in artifact.labels]
    expected = one_by_one(artifact, texts)
    assert [r["label"] for r in rows] == [artifact.labels[i] for i in expected.argmax(-1)]
    np.testing.assert_allclose([float(r["score"]) for r in rows], expected.max(-1), atol=1e-5)


def test_texts_are_cut_at_the_shared_limit(artifact, tmp_path, monkeypatch):
    seen = []
    original = type(artifact).probabilities
    monkeypatch.setattr(type(artifact), "probabilities", lambda self, t, b=32: seen.extend(t) or original(self, t, b))
    source = write_input(tmp_path / "in.txt", ["good " * 1000, "bad"])
    predict_file(artifact, source, tmp_path / "out.jsonl")
    assert artifact.max_text_chars == max_text_chars(artifact.seq_len) == 512
    assert [len(t) for t in seen] == [512, 3]


def test_memory_is_bounded_by_the_chunk_on_200k_lines(artifact, tmp_path, monkeypatch):
    """Rows read but not yet written never exceed one chunk (counted, not timed), and row n answers line n.
    The model is a stand-in that labels a text by its length mod 3 (the real one is slow to run 200k times here)."""
    n, chunk_rows = 200_000, 5_000
    source = tmp_path / "big.txt"
    source.write_text("".join("x" * (i % 7) + "\n" for i in range(n)), encoding="utf-8")
    held = {"read": 0, "written": 0, "most": 0}
    read_txt, jsonl_writer = READERS[".txt"], WRITERS[".jsonl"]

    def counting_reader(*args):
        for chunk in read_txt(*args):
            held["read"] += len(chunk.texts)
            held["most"] = max(held["most"], held["read"] - held["written"])
            yield chunk

    def counting_writer(*args):
        write = jsonl_writer(*args)

        def counted(probs):
            write(probs)
            held["written"] += len(probs)

        return counted

    monkeypatch.setitem(READERS, ".txt", counting_reader)
    monkeypatch.setitem(WRITERS, ".jsonl", counting_writer)
    monkeypatch.setattr(artifact, "probabilities", lambda texts, batch_size: np.eye(3)[[len(t) % 3 for t in texts]])
    out = tmp_path / "out.jsonl"
    assert predict_file(artifact, source, out, chunk_rows=chunk_rows) == n
    assert held["read"] == held["written"] == n and held["most"] == chunk_rows
    with out.open(encoding="utf-8") as f:
        labels = [json.loads(line)["label"] for line in f]
    assert labels == [artifact.labels[(i % 7) % 3] for i in range(n)]


@pytest.mark.parametrize("name, content, column, message", [
    ("in.csv", "id,body\n1,a dog\n", "text", "has no column 'text' (columns: ['id', 'body']); name the text column with"),
    ("in.jsonl", '{"text": "a dog"}\n{"text": 3}\n', "text", "line 2: column 'text' holds int 3"),
    ("in.jsonl", '{"text": "a dog"}\n{"text": null}\n', "text", "line 2: column 'text' holds null"),
    ("in.jsonl", '{"text": "a dog"}\n{"body": "x"}\n', "text", "line 2: expected an object with 'text'"),
    ("in.jsonl", '{"text": "a dog"\n', "text", "line 1: not JSON"),
    ("in.txt", b"a dog\n\xff\xfe cat\n", "text", "is not UTF-8 text"),
    ("in.parquet", pa.table({"text": [1, 2]}), "text", "column 'text' holds int64 values, not texts"),
    ("in.parquet", pa.table({"text": ["a", None]}), "text", "row 2: column 'text' holds null"),
    ("in.parquet", b"PAR1 cut short", "text", "is not a readable Parquet file"),
    ("in.xlsx", "x", "text", "cannot read"),
    ("missing.csv", None, "text", "not found: check the path"),
])
def test_bad_input_files_are_clean_errors_and_write_nothing(onnx_dir, tmp_path, capsys, name, content, column, message):
    source = tmp_path / name
    if isinstance(content, pa.Table):
        pq.write_table(content, source)
    elif isinstance(content, bytes):
        source.write_bytes(content)
    elif content is not None:
        source.write_text(content, encoding="utf-8")
    out = tmp_path / "out" / "predictions.jsonl"
    assert cli.main(["predict", str(onnx_dir), "--input", str(source), "--output", str(out), "--text-column", column]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not out.exists() and not list(tmp_path.rglob(".predictions*"))  # nor a temporary file left behind


def test_bad_arguments(onnx_dir, tmp_path, capsys):
    source = write_input(tmp_path / "in.txt", ["a dog"])
    assert cli.main(["predict", str(onnx_dir), "--input", str(source), "--output", str(tmp_path / "out.parquet")]) == 2
    assert "name an output ending in .jsonl, .csv" in capsys.readouterr().err
    assert cli.main(["predict", str(onnx_dir), "--input", str(source)]) == 2
    assert "--input needs --output" in capsys.readouterr().err
    same = write_input(tmp_path / "in.jsonl", ["a dog"])
    assert cli.main(["predict", str(onnx_dir), "--input", str(same), "--output", str(same)]) == 2
    assert "is the input file" in capsys.readouterr().err
    with pytest.raises(DataError, match="at least 1"):
        predict_file(None, source, tmp_path / "o.jsonl", batch_size=0)
