"""Build a text-pair classification task from the shipped WordNet 3.0 files: does this gloss define this word?

Each example is a pair (word, gloss) and a label: `defines` when the gloss is one of the word's own
synset's definition, `other` when it is the gloss of another synset of the same lexicographer
file (`noun.animal` for an animal word): a hard negative, which shares the topic and often the
vocabulary of the right definition, so the pair must be read together (the word alone, or the
gloss alone, says nothing about the label). The word is one of the synset's lemma names, drawn
by the seed. Synsets are split by the seed before pairs are drawn, so no synset's word or gloss
is in two files; each file is balanced (one positive and one negative per synset drawn).

The files (`train.csv`, `validation.csv`, `test.csv`, columns word, gloss, label) are what
`recipes/minilm_pairs.yaml` reads with the `files` task's `text_column: word` and
`text_pair_column: gloss`, a development task for pairs (BERT-style segment embeddings) in the
manner of the gloss-based word-sense tasks of Huang et al. 2019 ("GlossBERT"). Data: Miller 1995,
"WordNet: A Lexical Database for English" (compress/data/wordnet/LICENSE).

Run:  python -m compress.data.build_wordnet_pairs --out data/wordnet_pairs [--train 8000 --validation 1000 --test 2000]
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from pathlib import Path

import numpy as np

from compress.data.embedding import all_synsets
from compress.data.wordnet import POS, read_glosses

LABELS = ("defines", "other")


def build(out: Path, sizes: dict[str, int], seed: int = 0) -> dict[str, int]:
    """Write one CSV per split with `sizes[split]` synsets (two pairs each); return the rows written per split."""
    rng = np.random.default_rng([seed, 291])
    synsets = all_synsets(POS)
    lexname = {(offset, pos): lex for offset, pos, lex, _ in read_glosses()[0]}
    order = rng.permutation(len(synsets))
    counts, start = {}, 0
    out.mkdir(parents=True, exist_ok=True)
    for split, n in sizes.items():
        chosen = [synsets[i] for i in order[start : start + n]]
        start += n
        by_lex = defaultdict(list)
        for s in chosen:
            by_lex[lexname[(s.offset, s.pos)]].append(s)
        rows = []
        for s in chosen:
            words = s.lemmas.split(", ")
            word = words[int(rng.integers(len(words)))]
            peers = [p for p in by_lex[lexname[(s.offset, s.pos)]] if p is not s and word not in p.lemmas.split(", ")]
            rows.append((word, s.gloss, LABELS[0]))
            if peers:  # a gloss of the same lexicographer file that does not define the word
                rows.append((word, peers[int(rng.integers(len(peers)))].gloss, LABELS[1]))
        rows = [rows[i] for i in rng.permutation(len(rows))]
        with open(out / f"{split}.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["word", "gloss", "label"])
            writer.writerows(rows)
        counts[split] = len(rows)
    return counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for train.csv, validation.csv, test.csv")
    parser.add_argument("--train", type=int, default=8000, help="synsets of the training file (two pairs each)")
    parser.add_argument("--validation", type=int, default=1000)
    parser.add_argument("--test", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    counts = build(args.out, {"train": args.train, "validation": args.validation, "test": args.test}, args.seed)
    print(f"wrote {args.out}: {counts} rows (word, gloss, label in {LABELS})")


if __name__ == "__main__":
    main()
