"""User files: CSV/TSV/JSONL/JSON/Parquet load offline; every user mistake is a DataError naming the file."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from compress.data import SPLITS, FilesConfig, load_task
from compress.errors import DataError, SlimformerError

ROWS = [(f"{adj} movie number {i}", lab) for i in range(8) for adj, lab in
        (("great", "pos"), ("awful", "neg"), ("average", "neutral"))]  # fmt: skip


def write_csv(path, rows, header=("text", "label"), sep=","):
    with open(path, "w", encoding="utf-8") as f:
        f.write(sep.join(header) + "\n")
        for row in rows:
            f.write(sep.join(f'"{v}"' if isinstance(v, str) and sep == "," else str(v) for v in row) + "\n")
    return path


def write_jsonl(path, rows, keys=("text", "label")):
    path.write_text("".join(json.dumps(dict(zip(keys, r))) + "\n" for r in rows), encoding="utf-8")
    return path


def test_csv_with_string_labels_carves_validation_and_test(tmp_path):
    write_csv(tmp_path / "reviews.csv", ROWS)
    data = load_task(FilesConfig(train="reviews.csv"), seed=0, base_dir=tmp_path)
    assert data.name == "reviews"
    assert data.label_names == ["neg", "neutral", "pos"]
    assert data.stats["sizes"] == {"train": 20, "validation": 2, "test": 2}
    assert data.stats["carved"] == ["test", "validation"]
    pairs = {t: data.label_names[y] for s in SPLITS for t, y in zip(data.texts[s], data.labels[s])}
    assert pairs == dict(ROWS)  # every row lands in exactly one split with its own label
    again = load_task(FilesConfig(train=str(tmp_path / "reviews.csv")), seed=0)
    assert again.texts == data.texts  # absolute path, no base_dir
    assert load_task(FilesConfig(train="reviews.csv"), seed=1, base_dir=tmp_path).texts != data.texts


def test_jsonl_with_given_splits_and_integer_labels(tmp_path):
    rows = [(f"text {i}", i % 12) for i in range(48)]
    write_jsonl(tmp_path / "tr.jsonl", rows)
    write_jsonl(tmp_path / "va.jsonl", rows[:12])
    write_jsonl(tmp_path / "te.jsonl", [(t, str(y)) for t, y in rows[12:24]])  # labels as strings
    data = load_task(FilesConfig(train="tr.jsonl", validation="va.jsonl", test="te.jsonl"), 0, tmp_path)
    assert data.label_names == [str(i) for i in range(12)]  # numeric order: "10" after "9"
    assert data.labels["validation"] == [i % 12 for i in range(12)]
    assert data.labels["test"] == [i % 12 for i in range(12, 24)]
    assert data.texts["train"] == [t for t, _ in rows]  # given files keep their order
    assert data.stats["carved"] == []


def test_parquet_tsv_and_json(tmp_path):
    texts, labels = zip(*ROWS)
    pq.write_table(pa.table({"sentence": list(texts), "y": list(labels)}), tmp_path / "d.parquet")
    data = load_task(FilesConfig(train="d.parquet", text_column="sentence", label_column="y"), 0, tmp_path)
    assert data.label_names == ["neg", "neutral", "pos"] and sum(data.stats["sizes"].values()) == 24
    write_csv(tmp_path / "d.tsv", ROWS, sep="\t")
    assert load_task(FilesConfig(train="d.tsv"), 0, tmp_path).texts == data.texts
    (tmp_path / "d.json").write_text(json.dumps([{"text": t, "label": y} for t, y in ROWS]))
    assert load_task(FilesConfig(train="d.json"), 0, tmp_path).texts == data.texts
    (tmp_path / "d.txt").write_text((tmp_path / "d.tsv").read_text())
    assert load_task(FilesConfig(train="d.txt", format="tsv"), 0, tmp_path).texts == data.texts


def test_text_pairs_and_empty_texts(tmp_path):
    rows = [(f"premise {i}", f"hypothesis {i}", ("yes", "no")[i % 2]) for i in range(20)] + [("", "x", "yes")]
    write_jsonl(tmp_path / "nli.jsonl", rows, keys=("a", "b", "label"))
    cfg = FilesConfig(train="nli.jsonl", text_column="a", text_pair_column="b")
    data = load_task(cfg, 0, tmp_path)
    assert data.stats["dropped"] == {"train": {"empty": 1}}
    assert all(" [SEP] hypothesis " in t for s in SPLITS for t in data.texts[s])


def test_fingerprint_follows_file_bytes_not_location(tmp_path):
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        write_csv(tmp_path / d / "x.csv", ROWS)
    fa = load_task(FilesConfig(train="x.csv"), 0, tmp_path / "a").fingerprint
    assert load_task(FilesConfig(train="x.csv"), 0, tmp_path / "b").fingerprint == fa
    write_csv(tmp_path / "b" / "x.csv", ROWS[:-1])
    assert load_task(FilesConfig(train="x.csv"), 0, tmp_path / "b").fingerprint != fa


def _error(tmp_path, **fields) -> str:
    with pytest.raises(DataError) as info:
        load_task(FilesConfig(**fields), 0, tmp_path)
    assert isinstance(info.value, SlimformerError)
    return str(info.value)


def test_missing_file(tmp_path):
    msg = _error(tmp_path, train="nowhere.csv")
    assert "nowhere.csv" in msg and "not found" in msg
    (tmp_path / "folder.csv").mkdir()
    assert "folder.csv" in _error(tmp_path, train="folder.csv")


def test_not_utf8(tmp_path):
    (tmp_path / "latin.csv").write_bytes("text,label\ncafé crème,pos\nthé,neg\n".encode("latin-1"))
    msg = _error(tmp_path, train="latin.csv")
    assert "latin.csv" in msg and "UTF-8" in msg


def test_missing_columns_list_the_columns_found(tmp_path):
    write_csv(tmp_path / "cols.csv", ROWS, header=("review", "label"))
    msg = _error(tmp_path, train="cols.csv")
    assert "cols.csv" in msg and "'text'" in msg and "['review', 'label']" in msg and "text_column" in msg
    msg = _error(tmp_path, train="cols.csv", text_column="review", label_column="stars")
    assert "cols.csv" in msg and "'stars'" in msg and "label_column" in msg


def test_empty_split_and_empty_file(tmp_path):
    write_csv(tmp_path / "train.csv", ROWS)
    write_csv(tmp_path / "val.csv", [])
    msg = _error(tmp_path, train="train.csv", validation="val.csv")
    assert "val.csv" in msg and "no rows" in msg
    (tmp_path / "blank.csv").write_text("")
    assert "blank.csv" in _error(tmp_path, train="blank.csv")
    write_csv(tmp_path / "blanks.csv", [("", "pos"), (" ", "neg")])
    assert "blanks.csv" in _error(tmp_path, train="blanks.csv")


def test_one_class_only(tmp_path):
    write_csv(tmp_path / "mono.csv", [(f"t{i}", "pos") for i in range(10)])
    msg = _error(tmp_path, train="mono.csv")
    assert "mono.csv" in msg and "one class" in msg


def test_label_unseen_in_train(tmp_path):
    write_csv(tmp_path / "train.csv", ROWS)
    write_csv(tmp_path / "test.csv", [("so so", "mixed"), ("great", "pos"), ("eh", "unsure")])
    msg = _error(tmp_path, train="train.csv", test="test.csv")
    assert "test.csv" in msg and "'mixed'" in msg and "'unsure'" in msg and "train.csv" in msg


def test_missing_labels_and_unusable_labels(tmp_path):
    write_jsonl(tmp_path / "nolabel.jsonl", ROWS[:5] + [("text", None)])
    msg = _error(tmp_path, train="nolabel.jsonl")
    assert "nolabel.jsonl" in msg and "row" in msg
    write_jsonl(tmp_path / "frac.jsonl", [("a", 0.5), ("b", 1.5)])
    assert "frac.jsonl" in _error(tmp_path, train="frac.jsonl")


def test_non_text_column_and_unparsable_file(tmp_path):
    write_jsonl(tmp_path / "nums.jsonl", [(i, "pos" if i % 2 else "neg") for i in range(10)])
    msg = _error(tmp_path, train="nums.jsonl")
    assert "nums.jsonl" in msg and "text_column" in msg
    (tmp_path / "broken.jsonl").write_text('{"text": "a", "label": 1}\n{"text": oops\n')
    msg = _error(tmp_path, train="broken.jsonl")
    assert "broken.jsonl" in msg and "jsonl" in msg


def test_too_small_to_carve(tmp_path):
    write_csv(tmp_path / "tiny.csv", [("a", "x"), ("b", "y")])
    msg = _error(tmp_path, train="tiny.csv")
    assert "tiny.csv" in msg and "validation" in msg


@pytest.mark.parametrize(
    "fields,needle",
    [
        ({"train": "data.txt"}, "format"),
        ({"train": "a.csv", "format": "xlsx"}, "format"),
        ({"train": "a.csv", "validation_fraction": 0.6, "test_fraction": 0.4}, "fraction"),
        ({"train": "a.csv", "text_column": "t", "text_pair_column": "t"}, "text_pair_column"),
        ({"train": "a.csv", "colum": "t"}, "colum"),
        ({}, "train"),
    ],
)
def test_invalid_config_is_rejected(fields, needle):
    with pytest.raises(ValidationError, match=needle):
        FilesConfig(**fields)
