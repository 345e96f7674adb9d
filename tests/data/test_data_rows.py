"""No silent data changes: labels written two ways, dropped rows, texts cut when read (compress/data/files.py, limits.py)."""

import json
import re

import pytest

import cli
from compress.data import FilesConfig, load_task
from compress.data.limits import max_text_chars
from compress.data.unlabeled import read_unlabeled
from compress.errors import DataError


def write_csv(path, rows):
    import csv

    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows(rows)


MIXED = [(f"text {i}", ("0", "negative", "1", "positive")[i % 4]) for i in range(40)]


def test_labels_written_two_ways_are_an_error_naming_rows_of_each(tmp_path):
    write_csv(tmp_path / "train.csv", MIXED)
    with pytest.raises(DataError) as caught:
        load_task(FilesConfig(train="train.csv"), 0, tmp_path)
    message = str(caught.value)
    assert "integers (rows 1, 3: '0', '1') and words (rows 2, 4: 'negative', 'positive'), which would be 4 classes" in message
    # the fix it names, applied as written, reads the file as two classes
    fix = re.search(r"label_map: (\{[^}]*\})", message).group(1)
    assert fix == "{0: negative, 1: positive}"
    import yaml

    data = load_task(FilesConfig(train="train.csv", label_map=yaml.safe_load(fix)), 0, tmp_path)
    assert data.label_names == ["negative", "positive"] and data.n_classes == 2


def test_json_integers_and_words_are_refused_too(tmp_path):
    rows = [{"text": f"t {i}", "label": (0, "pos")[i % 2]} for i in range(20)]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=r"writes labels two ways"):
        load_task(FilesConfig(train="train.jsonl"), 0, tmp_path)


def test_dropped_rows_are_counted_by_reason_and_said_by_validate(tmp_path, capsys):
    rows = [{"text": f"words {i}", "label": ("a", "b")[i % 2]} for i in range(40)]
    rows += [{"text": None, "label": "a"}, {"text": "  ", "label": "b"}]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = load_task(FilesConfig(train="train.jsonl"), 0, tmp_path)
    assert data.stats["dropped"] == {"train": {"empty": 1, "null": 1}}
    (tmp_path / "r.yaml").write_text("name: x\ntask: {kind: files, train: train.jsonl}\nsteps: [{kind: train}]\n")
    assert cli.main(["validate", str(tmp_path / "r.yaml")]) == 0
    assert "train: 2 row(s) dropped (1 with empty text, 1 with no text (null))" in capsys.readouterr().out


def test_the_run_logs_dropped_rows_and_results_json_carries_them(tmp_path):
    from compress.run.config import load_recipe
    from compress.run.runner import open_run, write_results

    write_csv(tmp_path / "train.csv", [(f"words {i}", "ab"[i % 2]) for i in range(40)] + [("", "a")])
    (tmp_path / "r.yaml").write_text("name: x\ntask: {kind: files, train: train.csv, seq_len: 8, tokenizer: {vocab_size: 100}}\n"
                                     "steps: [{kind: train}]\n")
    recipe, path = load_recipe(tmp_path / "r.yaml")
    ctx, env, _ = open_run(recipe, path, tmp_path / "runs")
    events = [json.loads(line) for line in (ctx.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert next(e for e in events if e["event"] == "data")["dropped"] == {"train": {"null": 1}}  # an empty CSV cell reads as null
    write_results(ctx, "slimformer run r.yaml", env)
    protocol = json.loads((ctx.run_dir / "results.json").read_text())["protocol"]
    assert protocol["data"]["dropped"] == {"train": {"null": 1}} and protocol["data"]["max_text_chars"] == max_text_chars(8)


def test_the_report_shows_the_data_section(tmp_path):
    from eval.report import protocol_table

    data = {"dropped": {"train": {"null": 3}}, "cut": {"test": 1}, "max_text_chars": 4096}
    table = protocol_table({"run": {"protocol": {"data": data}}})
    row = next(r for r in table.rows if r[0][0] == "data")
    assert "train: (null 3)" in row[1][0] and "test 1" in row[1][0] and "max_text_chars 4096" in row[1][0]


def test_a_huge_text_is_cut_when_read(tmp_path):
    """300 rows, one of them 2 MB: the text kept is max_text_chars(seq_len) long (memory stays what the model sees)."""
    rows = [(f"words {i}", "ab"[i % 2]) for i in range(299)] + [("x " * 1_000_000, "a")]
    write_csv(tmp_path / "train.csv", rows)
    data = load_task(FilesConfig(train="train.csv", seq_len=32), 0, tmp_path)
    limit = max_text_chars(32)
    assert max(len(t) for split in data.texts.values() for t in split) == limit
    assert sum(data.stats["cut"].values()) == 1
    (tmp_path / "u.txt").write_text("short\n" + "y" * 100_000 + "\n")
    counts = {}
    texts, _ = read_unlabeled("u.txt", base_dir=tmp_path, max_chars=limit, counts=counts)
    assert [len(t) for t in texts] == [5, limit] and counts == {"dropped": 0, "cut": 1}


def test_unlabeled_files_count_rows_without_text(tmp_path):
    rows = [{"text": "a b"}, {"text": None}, {"text": ""}, {"text": "c d"}]
    (tmp_path / "u.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    counts = {}
    texts, _ = read_unlabeled("u.jsonl", base_dir=tmp_path, counts=counts)
    assert texts == ["a b", "c d"] and counts["dropped"] == 2
