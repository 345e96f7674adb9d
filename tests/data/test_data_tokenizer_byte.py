"""Byte tokenizer: byte b is id b + 5 for every byte, whitespace included; fixed vocabulary; round trip; reload."""

import random

from compress.data import SPECIAL_TOKENS, TokenizerConfig, encode, train_tokenizer

BYTE = TokenizerConfig(kind="byte", lowercase=False)


def test_every_byte_is_its_own_id_whitespace_included():
    tok = train_tokenizer(["only these letters"], BYTE, 64)
    assert len(tok.get_vocab()) == len(SPECIAL_TOKENS) + 256
    rng = random.Random(0)
    texts = ["Hello,  world\n\ttabs", "caf\u00e9 \u2603 \U0001f600", "".join(chr(rng.randrange(1, 0x2FF)) for _ in range(40))]
    for text in texts:
        raw = text.encode("utf-8")
        enc = encode(tok, [text], len(raw) + 2)
        ids = enc["input_ids"][0].tolist()
        assert ids == [2, *(b + len(SPECIAL_TOKENS) for b in raw), 3]  # [CLS] bytes [SEP]
        assert tok.decode(ids, skip_special_tokens=True) == text


def test_vocabulary_does_not_depend_on_the_training_texts():
    a = train_tokenizer(["abc"], BYTE, 16)
    b = train_tokenizer(["\u00e9\u00e9 zz" * 50, "other"], BYTE, 16)
    assert a.get_vocab() == b.get_vocab()


def test_lowercase_and_truncation():
    tok = train_tokenizer(["x"], TokenizerConfig(kind="byte", lowercase=True), 8)
    enc = encode(tok, ["ABCDEFGHIJ"], 8)
    assert enc["input_ids"][0].tolist() == [2, *(ord(c) + 5 for c in "abcdef"), 3] and enc["n_truncated"] == 1


def test_saves_and_reloads(tmp_path):
    from transformers import AutoTokenizer

    tok = train_tokenizer(["x"], BYTE, 64)
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    text = "Sub ject: \u00fcber\nbody"
    assert again(text)["input_ids"] == tok(text)["input_ids"]
