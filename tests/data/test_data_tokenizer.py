"""Tokenizers: special ids, save/reload offline with identical ids, determinism, encode shapes."""

import json
import subprocess
import sys

import pytest
import torch
from pydantic import ValidationError
from transformers import AutoTokenizer

from compress.data import SPECIAL_TOKENS, TokenizerConfig, encode, train_tokenizer
from compress.data.tokenizer import _TRAINERS

TEXTS = [
    "a domesticated carnivorous mammal that typically has a long snout",
    "move fast by using one's feet, with one foot off the ground at any given time",
    "an instrument for measuring time; unbelievably precise clocks exist",
    "the quality of being able to meet a need satisfactorily",
    "Café au lait: coffee with hot milk (French)",
] * 4
UNSEEN = ["zebras quickly jumped over the lazy wolves!", "ñ € 中文", ""]
LISTOPS = ["[MAX 2 9 [MIN 4 7 ] 0 ]", "[SM 1 [MED 3 4 5 ] ]", "[MIN 8 8 ]"]


@pytest.fixture(scope="module", params=["wordpiece", "bpe", "char"])
def trained(request):
    kind = request.param
    texts = LISTOPS * 5 if kind == "char" else TEXTS
    cfg = TokenizerConfig(kind=kind, vocab_size=120, lowercase=kind != "char")
    return kind, texts, train_tokenizer(texts, cfg, seq_len=16)


def test_special_tokens_and_settings(trained):
    _, texts, tok = trained
    assert [tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    assert tok.pad_token_id == 0 and tok.unk_token_id == 1 and tok.cls_token_id == 2 and tok.sep_token_id == 3
    assert tok.mask_token_id == 4
    assert tok.model_max_length == 16 and tok.padding_side == "right"
    ids = tok(texts[0])["input_ids"]
    assert ids[0] == 2 and ids[-1] == 3
    assert len(tok) <= 120 or trained[0] == "wordpiece"  # wordpiece keeps its whole alphabet


def test_save_and_reload_offline_gives_identical_ids(trained, tmp_path):
    _, texts, tok = trained
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    probe = texts[:5] + UNSEEN
    assert again(probe)["input_ids"] == tok(probe)["input_ids"]
    a = encode(again, probe, 16)
    b = encode(tok, probe, 16)
    assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["attention_mask"], b["attention_mask"])
    assert again.pad_token_id == 0 and again.model_max_length == 16 and again.padding_side == "right"


def test_char_tokenizer_keeps_listops_symbols_whole():
    tok = train_tokenizer(LISTOPS, TokenizerConfig(kind="char", lowercase=False), seq_len=32)
    text = "[MAX 2 9 [MIN 4 7 ] 0 ]"
    assert tok.tokenize(text) == text.split()
    assert tok.unk_token_id not in tok(text)["input_ids"]
    assert tok.tokenize("[MED 35 ]") == ["[MED", "3", "5", "]"]


def test_wordpiece_and_bpe_pieces():
    wp = train_tokenizer(TEXTS, TokenizerConfig(kind="wordpiece", vocab_size=200), seq_len=32)
    pieces = wp.tokenize("Unbelievably precise")
    assert pieces[0].startswith("un") and any(p.startswith("##") for p in pieces)
    assert wp.decode(wp("the quality of time")["input_ids"], skip_special_tokens=True) == "the quality of time"
    bpe = train_tokenizer(TEXTS, TokenizerConfig(kind="bpe", vocab_size=200), seq_len=32)
    assert bpe.decode(bpe("the quality of time")["input_ids"], skip_special_tokens=True) == "the quality of time"
    assert wp.unk_token_id in wp("中")["input_ids"]


_CHILD = """
import json, sys
from compress.data.tokenizer import _TRAINERS, TokenizerConfig
texts = json.loads(sys.stdin.read())
print(json.dumps({k: _TRAINERS[k](texts, TokenizerConfig(kind=k, vocab_size=300)).to_str() for k in _TRAINERS}))
"""


def test_training_is_deterministic_across_processes():
    # the `tokenizers` trainers iterate hash maps whose order differs per process
    texts = [f"{t} {w}" for t in TEXTS for w in ("alpha", "beta", "gamma", "delta")]
    here = {k: _TRAINERS[k](texts, TokenizerConfig(kind=k, vocab_size=300)).to_str() for k in _TRAINERS}
    out = subprocess.run([sys.executable, "-c", _CHILD], input=json.dumps(texts), capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    there = json.loads(out.stdout)
    for kind in _TRAINERS:
        assert json.loads(there[kind]) == json.loads(here[kind]), kind


def test_encode_shapes_padding_and_truncation(trained):
    _, texts, tok = trained
    long_text = " ".join([texts[0]] * 6)
    batch = [texts[1], long_text, texts[2], ""]
    out = encode(tok, batch, seq_len=16)
    ids, mask = out["input_ids"], out["attention_mask"]
    assert ids.shape == mask.shape == (4, 16) and ids.dtype == mask.dtype == torch.int64
    assert out["n_truncated"] == sum(len(tok(t)["input_ids"]) > 16 for t in batch) >= 1
    for row, m, text in zip(ids, mask, batch):
        n = int(m.sum())
        assert m[:n].all() and not m[n:].any()  # real tokens first, then padding
        assert (row[n:] == 0).all()
        assert row[0] == 2 and row[n - 1] == 3  # [CLS] ... [SEP], also when truncated
        full = tok(text)["input_ids"]
        assert row[: n - 1].tolist() == full[: n - 1]
    reference = tok(batch, padding="max_length", truncation=True, max_length=16, return_tensors="pt")
    assert torch.equal(ids, reference["input_ids"]) and torch.equal(mask, reference["attention_mask"])
    # encode leaves the tokenizer's own settings alone
    assert len(tok(long_text)["input_ids"]) > 16
    assert encode(tok, [], 16)["input_ids"].shape == (0, 16)


def test_training_is_deterministic_in_process():
    for kind in ("wordpiece", "bpe", "char"):
        cfg = TokenizerConfig(kind=kind, vocab_size=150)
        a = train_tokenizer(TEXTS, cfg, 16).backend_tokenizer.to_str()
        assert train_tokenizer(list(reversed(TEXTS)), cfg, 16).backend_tokenizer.to_str() == a


@pytest.mark.parametrize("fields", [{"kind": "sentencepiece"}, {"vocab_size": 4}, {"lowercase": "maybe"}, {"size": 1}])
def test_invalid_tokenizer_config(fields):
    with pytest.raises(ValidationError):
        TokenizerConfig(**fields)


def test_bad_arguments():
    with pytest.raises(ValueError):
        train_tokenizer([], TokenizerConfig(), 16)
    with pytest.raises(ValueError):
        train_tokenizer(TEXTS, TokenizerConfig(), 2)


def test_encode_task_fills_truncation_stats():
    from compress.data import ListOpsConfig, encode_task, load_task

    cfg = ListOpsConfig(n_train=60, n_validation=10, n_test=10, seq_len=24)
    data = load_task(cfg, seed=0)
    tok = train_tokenizer(data.texts["train"], cfg.tokenizer, cfg.seq_len)
    splits = encode_task(data, tok, cfg.seq_len)
    for split in ("train", "validation", "test"):
        n = len(data.texts[split])
        assert splits[split]["input_ids"].shape == (n, 24) and splits[split]["labels"].tolist() == data.labels[split]
        expected = sum(len(t.split()) + 2 > 24 for t in data.texts[split])  # one token per symbol
        assert data.stats["n_truncated"][split] == expected
    assert data.stats["n_truncated"]["train"] > 0


def test_a_saved_tokenizer_truncates_at_seq_len_and_pads_to_the_batch_longest(tmp_path):
    """With the `tokenizers` library alone, the saved tokenizer gives the lengths the model was measured at, whatever
    the file said before (all-MiniLM-L6-v2's tokenizer.json pads every text to a fixed 128)."""
    from tokenizers import Tokenizer

    from compress.data.tokenizer import TokenizerConfig, fit_to_length_, train_tokenizer

    texts = ["a b c d e f g h i j k l", "a b", "c d e"]
    tokenizer = train_tokenizer(texts * 3, TokenizerConfig(kind="wordpiece", vocab_size=40), seq_len=8)
    tokenizer.backend_tokenizer.enable_padding(length=128, pad_id=tokenizer.pad_token_id, pad_token=tokenizer.pad_token)
    fit_to_length_(tokenizer, 8).save_pretrained(tmp_path)
    loaded = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    batch = loaded.encode_batch(texts)
    assert [len(e.ids) for e in batch] == [8, 8, 8]  # the longest is cut at 8, the others padded to it
    assert [sum(e.attention_mask) for e in batch] == [8, 4, 5]  # [CLS] text [SEP], real tokens only
    assert len(loaded.encode_batch(texts[1:])[0].ids) == 5  # padded to this batch's longest, not to a fixed length
