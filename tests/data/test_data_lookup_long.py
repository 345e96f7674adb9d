"""Long lookup (multi-token keys, filler): every label equals the reference solver's, lengths and
needle positions span the window, a bag of words cannot tell the label, bad configs are refused."""

from collections import Counter

import pytest
from pydantic import ValidationError

from compress.data import SPLITS, LookupConfig, load_task
from compress.data.lookup import FILLERS, QUERY, answer_lookup

LONG = dict(n_train=300, n_validation=50, n_test=50, n_keys=6, key_len=3, min_pairs=8, max_pairs=16,
            min_length=512, max_length=1024, filler=12, seq_len=1026)


@pytest.fixture(scope="module")
def long_lookup():
    cfg = LookupConfig(**LONG)
    return cfg, load_task(cfg, seed=0)


def pairs_of(text: str, key_len: int) -> list[tuple[tuple[str, ...], str, int]]:
    """(key, value, token position of the key's first letter) for every pair, read independently of the solver."""
    tokens = text.split()
    out, i = [], 0
    while tokens[i] != QUERY:
        if tokens[i].isalpha():
            out.append((tuple(tokens[i : i + key_len]), tokens[i + key_len], i))
            i += key_len + 1
        else:
            i += 1
    return out


def test_every_label_equals_the_reference_solver(long_lookup):
    _, data = long_lookup
    n = 0
    for split in SPLITS:
        for text, label in zip(data.texts[split], data.labels[split]):
            assert answer_lookup(text) == label
            n += 1
    assert n == 400


def test_format_lengths_and_filler(long_lookup):
    cfg, data = long_lookup
    lengths = []
    for text in data.texts["train"]:
        tokens = text.split()
        lengths.append(len(tokens))
        assert cfg.min_length <= len(tokens) <= cfg.max_length
        assert all(len(t) == 1 for t in tokens)  # one symbol per token
        assert tokens[-cfg.key_len - 1] == QUERY and tokens.count(QUERY) == 1
        pairs = pairs_of(text, cfg.key_len)
        keys = [k for k, _, _ in pairs]
        assert cfg.min_pairs <= len(pairs) <= cfg.max_pairs and len(set(keys)) == len(keys)
        assert tuple(tokens[-cfg.key_len:]) in keys
        assert all(all(c in "abcdef" for c in k) and v.isdigit() for k, v, _ in pairs)
        fill = [t for t in tokens if not (t.isalnum() or t == QUERY)]
        assert set(fill) <= set(FILLERS[: cfg.filler])
        assert len(fill) == len(tokens) - len(pairs) * (cfg.key_len + 1) - cfg.key_len - 1
    assert min(lengths) < 560 and max(lengths) > 980  # the length window is used from end to end
    assert data.stats["lengths"]["train"]["max"] == max(lengths)


def test_keys_share_letters_so_one_token_does_not_match(long_lookup):
    cfg, data = long_lookup
    # some other key starts with the query's first letter: matching needs the whole key
    shared = 0
    for text in data.texts["train"]:
        query = tuple(text.split()[-cfg.key_len:])
        shared += any(k != query and k[0] == query[0] for k, _, _ in pairs_of(text, cfg.key_len))
    assert shared > 0.5 * len(data.texts["train"])


def test_needle_sits_anywhere(long_lookup):
    cfg, data = long_lookup
    where = []  # the queried pair's position as a fraction of the input
    for text in data.texts["train"]:
        tokens = text.split()
        query = tuple(tokens[-cfg.key_len:])
        at = next(i for k, _, i in pairs_of(text, cfg.key_len) if k == query)
        where.append(at / len(tokens))
    assert min(where) < 0.05 and max(where) > 0.9
    assert 0.35 < sum(where) / len(where) < 0.65


def test_bag_of_words_cannot_tell_the_label(long_lookup):
    # exchanging the values of the queried pair and a pair with another value keeps every token
    # count but changes the answer: no function of token counts solves the task
    cfg, data = long_lookup
    n_checked = 0
    for text in data.texts["train"][:100]:
        tokens = text.split()
        query = tuple(tokens[-cfg.key_len:])
        pairs = pairs_of(text, cfg.key_len)
        hit = next(p for p in pairs if p[0] == query)
        other = next((p for p in pairs if p[1] != hit[1]), None)
        if other is None:
            continue
        swapped = list(tokens)
        swapped[hit[2] + cfg.key_len], swapped[other[2] + cfg.key_len] = other[1], hit[1]
        assert Counter(swapped) == Counter(tokens)
        assert answer_lookup(" ".join(swapped)) == int(other[1]) != answer_lookup(text)
        n_checked += 1
    assert n_checked > 90


def test_solver_rejects_malformed():
    for bad in ["a 1 b 2", "a b 1 ? a", "a 1 a 2 ? a", "a 1 b 2 ? c", "a x ? a"]:
        with pytest.raises(ValueError):
            answer_lookup(bad)
    assert answer_lookup(". a b 3 , , b a 4 ; ? b a") == 4
    assert answer_lookup("c 4 x 7 q 1 m 7 ? x") == 7  # the classic form


def test_deterministic():
    # 300 inputs of 4K tokens (about a second quiet; no timing asserted: tests run on loaded machines)
    cfg = LookupConfig(**{**LONG, "min_length": 4000, "max_length": 4096, "n_train": 200, "seq_len": 4098})
    first = load_task(cfg, seed=3)
    again = load_task(cfg, seed=3)
    assert first.texts == again.texts and first.fingerprint == again.fingerprint
    assert load_task(cfg, seed=4).texts["train"] != first.texts["train"]


@pytest.mark.parametrize(
    "fields,needle",
    [
        ({"min_length": 512}, "both min_length and max_length"),
        ({"min_length": 900, "max_length": 600}, "min_length"),
        ({"min_length": 40, "max_length": 600, "max_pairs": 24}, "raise min_length to at least 50"),
        ({"n_keys": 3, "key_len": 2, "min_pairs": 4, "max_pairs": 10}, "key_len"),
        ({"key_len": 9}, "key_len"),
        ({"filler": len(FILLERS) + 1}, "filler"),
    ],
)
def test_invalid_config_is_rejected(fields, needle):
    with pytest.raises(ValidationError, match=needle):
        LookupConfig(**fields)


def test_one_token_per_symbol_so_seq_len_fits(long_lookup):
    from compress.data import encode, encode_task, train_tokenizer

    cfg, data = long_lookup
    tok = train_tokenizer(data.texts["train"], cfg.tokenizer, cfg.seq_len)
    text = data.texts["test"][0]
    enc = encode(tok, [text], cfg.seq_len)
    assert int(enc["attention_mask"].sum()) == len(text.split()) + 2  # [CLS] symbols [SEP]
    assert tok.unk_token_id not in enc["input_ids"][0].tolist()
    encode_task(data, tok, cfg.seq_len)
    assert data.stats["n_truncated"] == {s: 0 for s in SPLITS}


# 16 keys: 160 pair words + 16 query keys; 235 pieces (the least the config accepts) hold them whole
JOINED = dict(LONG, n_keys=4, key_len=2, joined=True, tokenizer={"kind": "wordpiece", "vocab_size": 235, "lowercase": False})


@pytest.fixture(scope="module")
def joined_lookup():
    cfg = LookupConfig(**JOINED)
    return cfg, load_task(cfg, seed=0)


def test_joined_form_writes_each_pair_as_one_word(joined_lookup):
    cfg, data = joined_lookup
    for text, label in zip(data.texts["train"], data.labels["train"]):
        words = text.split()
        assert cfg.min_length <= len(words) <= cfg.max_length
        assert words[-2] == QUERY and len(words[-1]) == cfg.key_len and words[-1].isalpha()
        pairs = [w for w in words[:-2] if w.isalnum()]
        assert all(len(w) == cfg.key_len + 1 and w[:-1].isalpha() and w[-1].isdigit() for w in pairs)
        assert [p for p in pairs if p[:-1] == words[-1]] == [words[-1] + str(label)]
        assert answer_lookup(text) == label


def test_joined_pairs_are_one_token_each_with_a_word_tokenizer(joined_lookup):
    from compress.data import encode, encode_task, train_tokenizer

    cfg, data = joined_lookup
    tok = train_tokenizer(data.texts["train"], cfg.tokenizer, cfg.seq_len)
    for text in data.texts["test"][:20]:
        enc = encode(tok, [text], cfg.seq_len)
        assert int(enc["attention_mask"].sum()) == len(text.split()) + 2  # [CLS] words [SEP]
        assert tok.unk_token_id not in enc["input_ids"][0].tolist()
    encode_task(data, tok, cfg.seq_len)
    assert data.stats["n_truncated"] == {s: 0 for s in SPLITS}


def test_joined_bag_of_words_cannot_tell_the_label(joined_lookup):
    # exchanging the digits of the queried pair and another pair's keeps the multiset of keys and of
    # values but changes the answer; a bag of pair words sees a value's key only with that value
    # and never the query's key beside it, so its evidence for a label is the same whichever is queried
    _, data = joined_lookup
    text = data.texts["train"][0]
    words = text.split()
    i = next(n for n, w in enumerate(words[:-2]) if w.isalnum() and w[:-1] == words[-1])
    j = next(n for n, w in enumerate(words[:-2]) if w.isalnum() and w[-1] != words[i][-1])
    swapped = list(words)
    swapped[i], swapped[j] = words[i][:-1] + words[j][-1], words[j][:-1] + words[i][-1]
    assert answer_lookup(" ".join(swapped)) == int(words[j][-1]) != answer_lookup(text)
    # querying a different key of the same input changes the answer with the same pair words
    other = words[j][:-1]
    requery = words[:-1] + [other]
    assert Counter(requery[:-1]) == Counter(words[:-1]) and answer_lookup(" ".join(requery)) == int(words[j][-1])


@pytest.mark.parametrize(
    "tokenizer,needle",
    [
        ({"kind": "char"}, "tokenizer.kind is 'char'"),
        ({"kind": "wordpiece", "vocab_size": 200}, "raise tokenizer.vocab_size to at least 235"),
    ],
)
def test_joined_form_needs_a_word_tokenizer_that_holds_every_pair(tokenizer, needle):
    with pytest.raises(ValidationError, match=needle):
        LookupConfig(**{**JOINED, "tokenizer": tokenizer})


def test_query_first_moves_only_the_query(joined_lookup):
    cfg, data = joined_lookup
    first = load_task(LookupConfig(**{**JOINED, "query_first": True}), seed=0)
    assert first.labels == data.labels  # the same draws
    for last_text, text, label in zip(data.texts["test"], first.texts["test"], first.labels["test"]):
        words = last_text.split()
        assert text.split() == words[-2:] + words[:-2]  # `? ab` first, then the same haystack
        assert answer_lookup(text) == label


def test_query_first_needs_the_joined_form():
    with pytest.raises(ValidationError, match="query_first: true needs joined: true"):
        LookupConfig(**{**LONG, "query_first": True})
