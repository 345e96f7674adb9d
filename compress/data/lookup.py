"""Key-value lookup: find the value paired with the queried key anywhere earlier in the text.

An example lists `n_pairs` distinct keys, each followed by its value (a digit), then `?` and
a query key; the label is the query key's value:

    `c 4 x 7 q 1 m 7 ? x`  ->  7                                   (key_len 1, no filler)
    `; c a 4 . - ! x b 7 ~ q q 1 , m a 7 + + ? x b`  ->  7          (key_len 2, filler)

This is the associative-retrieval task of Ba et al. (2016, "Using Fast Weights to Attend to
the Recent Past"), also called associative recall (Fu et al. 2023, "Hungry Hungry Hippos")
and solved in Transformers by induction heads (Olsson et al. 2022). The answer sits next to
the matching key at a uniformly random position, so the classifier must compare the query
with every key across the whole sequence and read the token after the match. A bag of words
cannot: it sees which values occur but not which key each belongs to, so it is stuck near
picking one of the values present (about 1/`n_values` to 1/`n_pairs`), while a two-layer
Transformer (one layer to attach each value to its key, one to match the query) solves it.

Keys are `key_len` letters from the first `n_keys` lowercase letters, one token each, distinct
within an example (drawn without replacement from all n_keys^key_len keys); keys that share
letters make the match depend on the whole key, not on one token. Values are digits drawn
uniformly from 0..`n_values`-1, so classes are balanced in expectation.

Long form (`min_length`/`max_length` set): the example is padded to a length drawn uniformly
in [`min_length`, `max_length`] tokens with filler symbols (punctuation, never a key letter, a
digit or `?`, so no tokenizer setting can confuse them with a key) placed in the gaps before,
between and after the pairs, uniformly at random over the arrangements (stars and bars), so
the queried pair can sit anywhere in a 512-4096-token input: a needle in a haystack whose
position only attention across the whole input finds. Without filler the text is
(`key_len` + 1) * `n_pairs` + `key_len` + 1 tokens; `n_pairs` is drawn uniformly from
[`min_pairs`, `max_pairs`].

Joined form (`joined: true`, with a word tokenizer such as wordpiece): each pair is one word,
`ab7`, and the query `? ab`, so the needle is one token. Matching it is then a content match
between the query's key and each pair (one attention hop across the input), where the spelled
form first needs a previous-token head to bind each value to its key; with learned positions a
2-layer model learns that slowly at 1K tokens (the spelled long form did not leave chance in 190
steps on CPU). A bag of words still cannot solve it: a pair word's evidence for its value does
not depend on the query. The length window counts words (a pair is one). Splits are drawn by `generated.draw_splits`: one stream per
(seed, split), no example repeated across splits. `answer_lookup` is the reference solver.
"""

from __future__ import annotations

import random
import string
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from compress.data.generated import GeneratedTaskConfig, draw_splits
from compress.data.task import SPLITS, TaskData, make_task_data, register_task

QUERY = "?"
# filler symbols: one character each, none a letter, digit, "?" or "[" (the char tokenizer joins "[" with letters)
FILLERS = ".,;:!-+=*/%&@#$~^_<>|"


@register_task("lookup")
class LookupConfig(GeneratedTaskConfig):
    """Key-value lookup (associative recall) over letter keys and digit values, optionally long with filler."""

    kind: Literal["lookup"] = "lookup"
    # how many distinct key letters exist (the first n_keys letters a..z)
    n_keys: int = Field(26, ge=2, le=26)
    # how many values exist (digits 0..n_values-1) = number of classes
    n_values: int = Field(10, ge=2, le=10)
    # key-value pairs per example, drawn uniformly in [min_pairs, max_pairs]
    min_pairs: int = Field(8, ge=2)
    max_pairs: int = Field(24, ge=2)
    # letters (tokens) per key; 1 = the classic single-letter keys
    key_len: int = Field(1, ge=1, le=8)
    # long form: tokens per example ([CLS]/[SEP] not counted) drawn uniformly in [min_length, max_length],
    # the rest filled with filler symbols; both None = no filler
    min_length: int | None = Field(None, ge=4, le=65536)
    max_length: int | None = Field(None, ge=4, le=65536)
    # how many distinct filler symbols are drawn from (the first `filler` of FILLERS)
    filler: int = Field(8, ge=1, le=len(FILLERS))
    # write each pair as one word (`ab7`: the key's letters, then its value) and the query as `? ab`;
    # with a word tokenizer (wordpiece) a pair is then one token, see the module docstring
    joined: bool = False
    # put the query first (`? c` then the pairs), as a question before its document: with BigBird the query
    # then sits in the global first block that every token sees (BigBird's QA setup makes question tokens
    # global); joined form only, where the query is one word and where it ends is plain
    query_first: bool = False

    @model_validator(mode="after")
    def _check_pairs(self) -> "LookupConfig":
        if self.min_pairs > self.max_pairs:
            raise ValueError(
                f"min_pairs ({self.min_pairs}) > max_pairs ({self.max_pairs}); make min_pairs <= max_pairs"
            )
        n_distinct = self.n_keys**self.key_len
        if self.max_pairs > n_distinct:
            raise ValueError(
                f"max_pairs ({self.max_pairs}) > n_keys ({self.n_keys}) ** key_len ({self.key_len}) = {n_distinct}: "
                "keys in one example are distinct; lower max_pairs or raise n_keys (at most 26) or key_len"
            )
        if (self.min_length is None) != (self.max_length is None):
            raise ValueError("set both min_length and max_length (the long form with filler), or neither")
        if self.min_length is not None and self.max_length is not None:
            if self.min_length > self.max_length:
                raise ValueError(
                    f"min_length ({self.min_length}) > max_length ({self.max_length}); make min_length <= max_length"
                )
            longest = self.max_pairs * self.pair_width + self.query_width
            if self.min_length < longest:
                raise ValueError(
                    f"min_length ({self.min_length}) is shorter than {self.max_pairs} pairs of a {self.key_len}-letter "
                    f"key and a value plus the query ({longest} tokens); raise min_length to at least {longest} "
                    "or lower max_pairs or key_len"
                )
        if self.joined:
            self._check_joined_vocabulary()
        if self.query_first and not self.joined:
            raise ValueError("query_first: true needs joined: true (a one-word query); set joined: true or query_first: false")
        return self

    def _check_joined_vocabulary(self) -> None:
        """Joined pairs are words: a word tokenizer must hold every pair and key whole, or a pair
        splits into pieces and the input outgrows seq_len."""
        if self.tokenizer.kind not in ("wordpiece", "bpe"):
            raise ValueError(
                f"joined: true writes each pair as one word, but tokenizer.kind is {self.tokenizer.kind!r}, which "
                "splits it into symbols; set tokenizer: {kind: wordpiece, lowercase: false} or joined: false"
            )
        n_words = self.n_keys**self.key_len * (self.n_values + 1)  # every pair word and every query key
        # wordpiece keeps the alphabet whole in both forms (x, ##x): letters, digits, filler, "?"
        need = 5 + 2 * (self.n_keys + self.n_values + self.filler + 1) + n_words
        if self.tokenizer.vocab_size < need:
            raise ValueError(
                f"tokenizer.vocab_size {self.tokenizer.vocab_size} cannot hold the {n_words} pair words and keys of "
                f"joined: true whole; raise tokenizer.vocab_size to at least {need} (or lower n_keys or key_len)"
            )

    @property
    def pair_width(self) -> int:
        """Words per pair: key letters + value, or one joined word."""
        return 1 if self.joined else self.key_len + 1

    @property
    def query_width(self) -> int:
        """Words of the query: `?` + key letters, or `?` + one joined key."""
        return 2 if self.joined else self.key_len + 1

    def load(self, seed: int, base_dir: Path | None) -> TaskData:
        letters = string.ascii_lowercase[: self.n_keys]
        fillers = FILLERS[: self.filler] if self.min_length is not None else ""
        lengths = (self.min_length, self.max_length) if self.min_length is not None else None
        texts, labels = draw_splits(
            "lookup",
            seed,
            self.sizes(),
            lambda rng: generate_example(
                rng, letters, self.n_values, self.min_pairs, self.max_pairs, self.key_len, lengths, fillers,
                self.joined, self.query_first,
            ),
            hint="raise n_keys, key_len, n_values or max_pairs, or ask for fewer examples",
        )
        extra = {}
        if lengths is not None:  # tokens per example, [CLS]/[SEP] not counted
            n_tokens = {s: [t.count(" ") + 1 for t in texts[s]] for s in SPLITS}
            extra["lengths"] = {s: {"min": min(n), "max": max(n)} for s, n in n_tokens.items()}
        long_form = f", {self.min_length}-{self.max_length} tokens with filler" if lengths else ""
        long_form += ", each pair one word" if self.joined else ""
        long_form += ", query first" if self.query_first else ""
        return make_task_data(
            self,
            seed,
            name="lookup",
            texts=texts,
            labels=labels,
            label_names=[str(v) for v in range(self.n_values)],
            description=(
                f"key-value lookup: {self.n_train}/{self.n_validation}/{self.n_test} examples, "
                f"{self.min_pairs}-{self.max_pairs} pairs of {self.key_len}-letter keys over {self.n_keys} letters"
                f"{long_form}, {self.n_values} classes, seed {seed}"
            ),
            extra_stats=extra,
        )


def generate_example(
    rng: random.Random,
    letters: str,
    n_values: int,
    min_pairs: int,
    max_pairs: int,
    key_len: int = 1,
    lengths: tuple[int, int] | None = None,
    fillers: str = "",
    joined: bool = False,
    query_first: bool = False,
) -> tuple[str, int]:
    """Draw one example: (text, value of the queried key).

    With key_len 1 and no `lengths` the draws are those of the classic form, so its data stay pinned;
    `joined` writes the same draws with each pair as one word and the query's key as one word;
    `query_first` puts the query before the pairs (same draws, same label).
    """
    n_pairs = rng.randint(min_pairs, max_pairs)
    # random.sample draws indices from the population's length only: for key_len 1 this is sample(letters, n)
    codes = rng.sample(range(len(letters) ** key_len), n_pairs)
    keys = [_spell(code, letters, key_len) for code in codes]
    values = [rng.randrange(n_values) for _ in range(n_pairs)]
    q = rng.randrange(n_pairs)
    if joined:  # each pair one word `ab7`, the query `? ab`
        pairs = [["".join(k) + str(v)] for k, v in zip(keys, values)]
        query = [QUERY, "".join(keys[q])]
    else:  # each pair: key_len letters + its value
        pairs = [[*k, str(v)] for k, v in zip(keys, values)]
        query = [QUERY, *keys[q]]
    if lengths is None:
        body = [t for p in pairs for t in p]
        return " ".join(query + body if query_first else body + query), values[q]
    n_fill = rng.randint(*lengths) - sum(map(len, pairs)) - len(query)
    # stars and bars: the pairs' places among n_pairs + n_fill slots, uniform over arrangements
    at = set(rng.sample(range(n_pairs + n_fill), n_pairs))
    filler = iter(rng.choices(fillers, k=n_fill))
    pair = iter(pairs)
    tokens: list[str] = []
    for slot in range(n_pairs + n_fill):
        if slot in at:
            tokens += next(pair)
        else:
            tokens.append(next(filler))
    return " ".join(query + tokens if query_first else tokens + query), values[q]


def _spell(code: int, letters: str, key_len: int) -> list[str]:
    """Key number `code` in base len(letters), key_len digits, most significant first."""
    out = []
    for _ in range(key_len):
        code, r = divmod(code, len(letters))
        out.append(letters[r])
    return out[::-1]


def answer_lookup(text: str) -> int:
    """Reference solver, from the tokens alone: the value after the key that equals the query.

    The query is `?` and the key's letters at the end, or `?` and one joined key first (`query_first`).
    Reads the key length from the query, skips filler (any token that is neither letters nor
    digits), spells every other token as its characters (so the joined form `ab7 ... ? ab` reads
    as `a b 7 ... ? a b`), cuts them into (key letters, value digit) pairs and returns the value
    of the one pair whose key matches. Raises ValueError on a malformed example or a key not found exactly once.
    """
    tokens = text.split()
    if QUERY not in tokens:
        raise ValueError(f"not a lookup example (no {QUERY!r}): {text[:80]!r}")
    if tokens[0] == QUERY and tokens.count(QUERY) == 1 and len(tokens) > 2:  # query first: `? ab` then the pairs
        query = list(tokens[1])
        body = [c for t in tokens[2:] if t.isalnum() for c in t]
    else:
        q = len(tokens) - 1 - tokens[::-1].index(QUERY)
        query = [c for t in tokens[q + 1 :] for c in t]
        body = [c for t in tokens[:q] if t.isalnum() for c in t]
    width = len(query) + 1
    if not query or not body or len(body) % width:
        raise ValueError(f"not a lookup example (pairs of {len(query)} letters + a digit expected): {text[:80]!r}")
    found = []
    for i in range(0, len(body), width):
        key, value = body[i : i + width - 1], body[i + width - 1]
        if not value.isdigit() or not all(t.isalpha() for t in key):
            raise ValueError(f"pair {key} {value} is not letters then a digit in {text[:80]!r}")
        if key == query:
            found.append(int(value))
    if len(found) != 1:
        raise ValueError(f"query {' '.join(query)} matches {len(found)} keys in {text[:80]!r}")
    return found[0]
