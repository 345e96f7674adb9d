"""Tokenizers trained on a task's training texts, and batch encoding to fixed-length tensors.

Three kinds, all built with the Hugging Face `tokenizers` library and wrapped as a
`transformers.PreTrainedTokenizerFast`, so they save with `save_pretrained` and reload
offline with `AutoTokenizer.from_pretrained(folder)`:

- `bpe`: byte-pair encoding (Sennrich et al. 2016, "Neural Machine Translation of Rare Words
  with Subword Units") over BERT's normalizer and pre-tokenizer, with SentencePiece's word-start
  marker `\u2581` (Kudo & Richardson 2018) on the first piece of every word.
- `wordpiece`: BERT's subword format (Schuster & Nakajima 2012; Devlin et al. 2019): pieces
  inside a word carry `##`, decoding is greedy longest-match. The vocabulary is learned by the
  same BPE merges, as the `tokenizers` WordPieceTrainer does, then converted: `\u2581x` -> `x`,
  `x` -> `##x`; every character of the training alphabet is kept in both forms.
- `char`: one token per non-space character, except that an opening bracket followed by
  letters (`[MAX`, `[SM`) is one token, so ListOps operators, `]` and digits are single
  tokens exactly as in the Long Range Arena (Tay et al. 2021). Vocabulary = the most frequent
  symbols of the training texts, at most `vocab_size`.
- `byte`: one token per UTF-8 byte, spaces and newlines included, as the Long Range Arena's
  byte-level "Text" task reads IMDB reviews (Tay et al. 2021). Bytes are mapped to printable
  characters by GPT-2's byte-to-unicode table (the `tokenizers` ByteLevel pre-tokenizer), so the
  vocabulary is fixed: the 5 special tokens, then byte b at id b + 5, whatever the training
  texts (`vocab_size` is not used); no text ever needs `[UNK]`.

Training is deterministic: the same texts and config give the same vocabulary and ids in
every process. (The `tokenizers` WordPieceTrainer, and BPE with a `##` prefix or `</w>`
suffix, are not: they number the prefixed characters in hash-map order, which changes how
ties between equally frequent merges are broken. Plain BPE numbers its alphabet in sorted
order and breaks ties by those ids, so it is.)

Special tokens are `[PAD]`=0, `[UNK]`=1, `[CLS]`=2, `[SEP]`=3, `[MASK]`=4; every encoding is
`[CLS] text [SEP]`, padded on the right, truncated so `[SEP]` stays last.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import Field
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from compress.run.config_base import ConfigBase

if TYPE_CHECKING:  # torch and transformers take seconds to import; configs must load fast
    from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]  # ids 0..4 in this order
# `[OP` (bracket + letters) is one token; any other non-space character is one token
_CHAR_PATTERN = r"\[[^\s\[\]]+|\S"
_WORD_START = "\u2581"  # SentencePiece's "▁", put before the first piece of each word
_CONTINUE = "##"  # WordPiece's prefix for pieces inside a word


class TokenizerConfig(ConfigBase):
    """How a task's texts are split into tokens."""

    # wordpiece / bpe: subwords for natural text; char: symbols for generated tasks; byte: UTF-8 bytes of long documents
    kind: Literal["wordpiece", "bpe", "char", "byte"] = "wordpiece"
    # vocabulary size incl. the 5 special tokens (char: an upper bound; wordpiece: never below
    # 5 + 2 x the training alphabet, which it keeps whole; byte: not used, always 261)
    vocab_size: int = Field(8000, ge=16, le=1_000_000)
    # lowercase (and, for wordpiece/bpe, strip accents) before splitting
    lowercase: bool = True


def _train_char(texts: list[str], cfg: TokenizerConfig) -> Tokenizer:
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    if cfg.lowercase:
        tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(Regex(_CHAR_PATTERN), "isolated")]
    )
    # ties in frequency are ordered by the token itself, so ids are deterministic
    trainer = trainers.WordLevelTrainer(
        vocab_size=cfg.vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False
    )
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    return tok


def _train_byte(texts: list[str], cfg: TokenizerConfig) -> Tokenizer:
    # texts are not read: every byte has its id, in the ByteLevel table's order
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet(), key=_BYTE_OF.__getitem__)  # 256 chars, byte 0..255
    tok = Tokenizer(models.WordLevel(vocab={t: i for i, t in enumerate(SPECIAL_TOKENS + alphabet)}, unk_token="[UNK]"))
    if cfg.lowercase:
        tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [  # the text as one string of byte characters, then one piece per character
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            pre_tokenizers.Split(Regex("."), "isolated"),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    return tok


def _bytes_to_unicode() -> dict[str, int]:
    """GPT-2's table (Radford et al. 2019), which the ByteLevel pre-tokenizer uses: char -> byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("\xa1"), ord("\xac") + 1), *range(ord("\xae"), ord("\xff") + 1)]
    chars = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + extra)
            extra += 1
    return {c: b for b, c in chars.items()}


_BYTE_OF = _bytes_to_unicode()


def _train_bpe(texts: list[str], cfg: TokenizerConfig) -> Tokenizer:
    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=cfg.lowercase)
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.BertPreTokenizer(),  # split on whitespace and punctuation
            pre_tokenizers.Metaspace(replacement=_WORD_START, prepend_scheme="always", split=True),
        ]
    )
    tok.decoder = decoders.Metaspace(replacement=_WORD_START, prepend_scheme="always", split=True)
    trainer = trainers.BpeTrainer(
        vocab_size=cfg.vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False
    )
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    return tok


def _train_wordpiece(texts: list[str], cfg: TokenizerConfig) -> Tokenizer:
    bpe = _train_bpe(texts, cfg)
    vocab = bpe.get_vocab()
    learned = sorted((t for t in vocab if t not in SPECIAL_TOKENS), key=vocab.__getitem__)  # merge order
    alphabet = [t for t in learned if len(t) == 1 and t != _WORD_START]
    pieces = list(SPECIAL_TOKENS)
    for c in alphabet:  # any word over the alphabet stays encodable, whatever was merged
        pieces += [c, _CONTINUE + c]
    seen = set(pieces)
    merged = []
    for t in learned:
        if len(t) == 1:
            continue
        piece = t[1:] if t.startswith(_WORD_START) else _CONTINUE + t
        if piece not in seen:
            seen.add(piece)
            merged.append(piece)
    pieces += merged[: max(cfg.vocab_size - len(pieces), 0)]  # drop the latest merges to fit
    tok = Tokenizer(
        models.WordPiece(
            vocab={p: i for i, p in enumerate(pieces)}, unk_token="[UNK]", continuing_subword_prefix=_CONTINUE
        )
    )
    tok.normalizer = normalizers.BertNormalizer(lowercase=cfg.lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix=_CONTINUE)
    return tok


_TRAINERS = {"char": _train_char, "byte": _train_byte, "bpe": _train_bpe, "wordpiece": _train_wordpiece}


def train_tokenizer(texts: list[str], cfg: TokenizerConfig, seq_len: int) -> "PreTrainedTokenizerFast":
    """Train a tokenizer of kind `cfg.kind` on `texts` (the training split only).

    The result adds `[CLS] ... [SEP]`, pads on the right with `[PAD]` (id 0) and has
    `model_max_length = seq_len`. The same texts and config give the same vocabulary.
    """
    from transformers import PreTrainedTokenizerFast

    if not texts:
        raise ValueError("train_tokenizer needs at least one training text")
    if seq_len < 3:
        raise ValueError(f"seq_len must be >= 3 ([CLS], one token, [SEP]), got {seq_len}")
    tok = _TRAINERS[cfg.kind](list(texts), cfg)
    ids = [tok.token_to_id(t) for t in SPECIAL_TOKENS]
    assert ids == list(range(len(SPECIAL_TOKENS))), ids
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", ids[2]), ("[SEP]", ids[3])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=seq_len,
        padding_side="right",
        model_input_names=["input_ids", "attention_mask"],
    )


def fit_to_length_(tokenizer: "PreTrainedTokenizerFast", seq_len: int) -> "PreTrainedTokenizerFast":
    """Set the tokenizer to what the model is measured at, in place: truncate at `seq_len` tokens (special tokens
    included) and pad on the right to the longest text of each batch, not to a fixed length. The settings live in
    the backend, so the saved tokenizer.json carries them: a user who loads it with the `tokenizers` library alone
    gets these lengths, whatever the imported checkpoint's file said (all-MiniLM-L6-v2's pads every text to 128)."""
    tokenizer.model_max_length = seq_len
    backend = tokenizer.backend_tokenizer
    backend.enable_truncation(max_length=seq_len)
    if tokenizer.pad_token_id is not None:
        backend.enable_padding(direction="right", pad_id=tokenizer.pad_token_id, pad_token=tokenizer.pad_token)
    else:
        backend.no_padding()
    return tokenizer


PAIR_SEPARATOR = " [SEP] "  # how a text pair travels as one string (the files task's `text_pair_column`)


def encode(tokenizer: "PreTrainedTokenizerFast", texts: list[str], seq_len: int) -> dict:
    """Encode `texts` to `input_ids` and `attention_mask`, both LongTensor (N, seq_len).

    Texts are `[CLS] text [SEP]`, truncated to `seq_len` with `[SEP]` kept last and padded on
    the right with the pad id; `attention_mask` is 1 on real tokens. `n_truncated` counts the
    texts that did not fit. A text holding PAIR_SEPARATOR is a pair, split there and encoded by the
    tokenizer's own pair template (BERT's `[CLS] A [SEP] B [SEP]`, RoBERTa's `<s> A </s></s> B </s>`),
    the longer text truncated first.
    """
    import torch

    if seq_len < 3:
        raise ValueError(f"seq_len must be >= 3 ([CLS], one token, [SEP]), got {seq_len}")
    # a private copy, so the caller's tokenizer keeps its own truncation/padding settings
    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    backend.enable_truncation(max_length=seq_len)
    backend.enable_padding(length=seq_len, pad_id=tokenizer.pad_token_id, pad_token=tokenizer.pad_token)
    items = [tuple(t.split(PAIR_SEPARATOR, 1)) if PAIR_SEPARATOR in t else t for t in texts]  # pairs: (A, B)
    encodings = backend.encode_batch_fast(items, add_special_tokens=True)  # no char offsets
    input_ids = np.array([e.ids for e in encodings], dtype=np.int64).reshape(-1, seq_len)  # (N, seq_len)
    attention_mask = np.array([e.attention_mask for e in encodings], dtype=np.int64).reshape(-1, seq_len)
    full = np.flatnonzero(attention_mask[:, -1] == 1)  # only texts that fill seq_len can overflow
    n_truncated = sum(1 for i in full if encodings[i].overflowing)
    return {
        "input_ids": torch.from_numpy(input_ids),
        "attention_mask": torch.from_numpy(attention_mask),
        "n_truncated": n_truncated,
    }
