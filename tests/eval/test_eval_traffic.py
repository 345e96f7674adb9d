"""eval.traffic: real texts served as a user serves them. Shapes and order are checked with a session that records
what it is given (no timing asserts), then the whole path runs on a tiny ONNX model and a run folder."""

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import jsonschema
import numpy as np
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, processors

import cli
from eval.traffic import TEXTS_FILE, Server, load_tokenizer, read_texts, time_traffic, traffic_in_rounds, write_texts

SCHEMA = Path(__file__).resolve().parents[2] / "eval" / "results_schema.json"
WORDS = [f"w{i}" for i in range(40)]  # ids 5..44: inside the tiny model's vocabulary of 50


def word_tokenizer(folder: Path) -> Path:
    """A WordLevel tokenizer saved the way an imported checkpoint's can be: padding to a fixed 128 and truncation at 128
    in the file itself (MiniLM's tokenizer.json does), which the timer must override."""
    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tokenizer.enable_padding(length=128, pad_id=0, pad_token="[PAD]")
    tokenizer.enable_truncation(max_length=128)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({"pad_token": "[PAD]"}))
    return folder


def texts_of(n: int, seed: int = 0) -> list[str]:
    """n texts of 1..20 words; word 0 names the text (w{i % 40}) so its row can be found in any batch."""
    lengths = np.random.default_rng(seed).integers(1, 21, size=n)
    return [" ".join([WORDS[i % 40]] + [WORDS[(i + j) % 40] for j in range(1, k)]) for i, k in enumerate(lengths)]


class RecordingSession:
    """Stands in for an ONNX Runtime session: records every batch's tensors; logits = (first word's id, real tokens)."""

    def __init__(self):
        self.batches: list[dict[str, np.ndarray]] = []

    def get_outputs(self):
        return [SimpleNamespace(name="logits")]

    def run(self, outputs, feeds):
        assert outputs == ["logits"] and set(feeds) == {"input_ids", "attention_mask"}
        assert all(v.dtype == np.int64 for v in feeds.values())
        self.batches.append({k: v.copy() for k, v in feeds.items()})
        ids, mask = feeds["input_ids"], feeds["attention_mask"]
        return [np.stack([ids[:, 1], mask.sum(1)], axis=1).astype(np.float32)]  # (B, 2)


def test_sorted_batches_are_padded_to_their_longest_text_and_restored_to_input_order(tmp_path):
    seq_len = 16  # some texts (up to 22 tokens with [CLS] and [SEP]) are truncated
    tokenizer, pad_id = load_tokenizer(word_tokenizer(tmp_path / "onnx"), seq_len)
    session, texts = RecordingSession(), texts_of(75)
    server = Server(session, tokenizer, pad_id, seq_len)
    logits = server.predict_sorted(texts, batch_size=32)

    assert [len(b["input_ids"]) for b in session.batches] == [32, 32, 11]
    lengths = [min(len(t.split()) + 2, seq_len) for t in texts]
    assert logits[:, 1].tolist() == lengths  # every text's own row, in input order
    assert logits[:, 0].tolist() == [5 + i % 40 for i in range(75)]
    previous = 0
    for batch in session.batches:
        ids, mask = batch["input_ids"], batch["attention_mask"]
        real = mask.sum(1)
        assert ids.shape[1] == real.max() <= seq_len  # padded to its longest text, never to the file's 128
        assert real.min() >= previous  # sorted by length, shortest batch first
        previous = real.max()
        for r, n in enumerate(real):  # right padding with the pad id, masked out
            assert (mask[r, :n] == 1).all() and (mask[r, n:] == 0).all() and (ids[r, n:] == pad_id).all()

    session.batches.clear()
    server.request(texts[0])
    server.request(texts[0], padded=True)
    own = min(len(texts[0].split()) + 2, seq_len)
    assert [b["input_ids"].shape for b in session.batches] == [(1, own), (1, seq_len)]


def test_rounds_serve_each_text_once_per_mode_and_open_each_stage_once_per_round(tmp_path):
    tokenizer, pad_id = load_tokenizer(word_tokenizer(tmp_path / "onnx"), 16)
    opened, sessions = [], {"a": RecordingSession(), "b": RecordingSession()}

    def opener(name):
        def open_():
            opened.append(name)
            return Server(sessions[name], tokenizer, pad_id, 16)
        return open_

    texts = texts_of(10)
    timed = traffic_in_rounds({"a": opener("a"), "b": opener("b")}, texts, batch_size=4, warmup=2, rounds=3)
    assert opened == ["a", "b", "b", "a", "a", "b"]  # rotated each round
    for name, session in sessions.items():
        assert len(timed[name]["longest"]) == len(timed[name]["max_length"]) == 10 and len(timed[name]["passes_s"]) == 3
        single = [b["input_ids"] for b in session.batches if len(b["input_ids"]) == 1]
        served = [int(ids[0, 1]) for ids in single]  # warm-up (2 texts x 2 modes per round), then each text once per mode
        assert sorted(served) == sorted([5 + i for i in range(10)] * 2 + [5, 5, 6, 6] * 3)


def test_onnx_run_records_validate_and_bench_run_serves_the_saved_texts_again(tmp_path, tiny_onnx, vocab_size, make_results,
                                                                              fast_figures, monkeypatch):
    from eval import peak

    rate = {"flops_per_s": 1e10, "size": 256, "threads": 2}
    monkeypatch.setattr(peak, "measure_peaks", lambda threads: {"fp32": rate, "int8": rate, "measured_at": 0})  # timed elsewhere
    run_dir, texts = tmp_path / "run", texts_of(12)
    results = make_results("run")
    for s in results["stages"]:
        folder = word_tokenizer(run_dir / "stages" / s["name"] / "onnx")
        shutil.copy(tiny_onnx, folder / "model.onnx")
        (folder / "config.json").write_text(json.dumps({"vocab_size": vocab_size}))
        s["onnx_dir"] = f"stages/{s['name']}/onnx"
    folders = {s["name"]: (run_dir / s["onnx_dir"], "fp32") for s in results["stages"]}
    records = time_traffic(folders, texts, seq_len=16, threads=1, batch_size=4, warmup=1)
    assert [(r["mode"], r["batch"], r["padding"]) for r in records["teacher"]] == [
        ("single", 1, "longest"), ("single", 1, "max_length"), ("sorted", 4, "longest")]
    assert all(r["n_texts"] == 12 and r["interleaved"] and r["texts_per_s"] > 0 for r in records["student"])

    write_texts(run_dir / TEXTS_FILE, texts + ["a line\nbreak and \"quotes\""], lambda path, body: path.write_text(body))
    assert read_texts(run_dir / TEXTS_FILE)[-1] == "a line\nbreak and \"quotes\""
    write_texts(run_dir / TEXTS_FILE, texts, lambda path, body: path.write_text(body))
    results["protocol"].update(batch_sizes=[1], seq_lens=[8], warmup=1, repeats=3,
                               traffic={"n_texts": 12, "seq_len": 16, "batch_size": 4, "warmup": 1, "rounds": 3, "threads": 2})
    results["stages"][0]["traffic"] = [dict(r, p50_ms=999.0) for r in records["teacher"]]  # stale: replaced
    results["stages"][1]["traffic"] = records["student"]
    (run_dir / "results.json").write_text(json.dumps(results))
    assert cli.main(["bench", str(run_dir), "--repeats", "3"]) == 0
    after = json.loads((run_dir / "results.json").read_text())
    jsonschema.validate(after, json.loads(SCHEMA.read_text()))
    teacher = after["stages"][0]["traffic"]
    assert len(teacher) == 3 and teacher[0]["p50_ms"] != 999.0 and teacher[0]["n"] == 12
    report = (run_dir / "report.md").read_text()
    assert "## Real traffic" in report and "the first 12 test texts, truncated at 16 tokens" in report


def test_bad_texts_file_names_the_line(tmp_path):
    from compress.errors import SlimformerError

    path = tmp_path / TEXTS_FILE
    path.write_text('{"text": "fine"}\n["not", "an object"]\n')
    with pytest.raises(SlimformerError, match=f"{TEXTS_FILE}:2: expected a JSON object"):
        read_texts(path)
