"""The embedding task: texts whose sentence embeddings a student learns from an embedding teacher, and a
real retrieval benchmark to measure it on, a reverse dictionary over the shipped WordNet 3.0 data.

A sentence-embedding model (Sentence-BERT, Reimers & Gurevych 2019) is compressed by teaching a
student to reproduce the teacher's embedding of each text (Reimers & Gurevych 2020, "Making
Monolingual Sentence Embeddings Multilingual using Knowledge Distillation"): no labels, only texts.
The texts here are WordNet's (Miller 1995): every synset's definition (its gloss) and its lemma
names joined with ", " ("dog, domestic dog, Canis familiaris"). The synsets are split by the data
seed into

- `test` (`test_fraction`, 20%): the evaluation synsets. Their glosses and lemma names are never in
  the training texts, the validation texts or anything a step trains on or keeps a vocabulary
  for (`prune_vocab`'s `splits: [train, validation]`). Their texts are the held-out texts the
  fidelity (cosine with the teacher) is measured on, and their lemma names the queries of the
  reverse dictionary (`retrieval_set`): the query is a synset's lemma names, the corpus every
  gloss of the selected synsets, the right answer that synset's own gloss (Hill et al. 2016,
  "Learning to Understand Phrases by Embedding the Dictionary", the reverse-dictionary task);
- `validation` (`validation_fraction`): texts the training loop picks its best epoch on;
- `train`: the rest (or a seeded `max_train_synsets` of them), gloss and lemma names of each.

Every text has the label 0 of one class, "text": the task has no classes, and the steps that
train in embedding mode never read labels. `slimformer validate` reads the two shipped files
(`compress/data/wordnet.py`: glosses; `lemmas.tsv.xz`: lemma names, built by
`python -m compress.data.build_wordnet`).
"""

from __future__ import annotations

import functools
import hashlib
import lzma
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from compress.data.task import SPLITS, TaskConfigBase, TaskData, make_task_data, register_task
from compress.data.wordnet import GLOSSES_PATH, POS, read_glosses
from compress.errors import DataError

LEMMAS_PATH = GLOSSES_PATH.parent / "lemmas.tsv.xz"
LABEL = "text"  # the one class every text has: the task has none


@register_task("embedding")
class EmbeddingTaskConfig(TaskConfigBase):
    """Texts to embed like the teacher: WordNet glosses and lemma names, with a reverse-dictionary retrieval test."""

    kind: Literal["embedding"] = "embedding"
    embeds: ClassVar[bool] = True  # the teacher is imported as a sentence-embedding model (compress/models/import_hf.py)
    # all-MiniLM-L6-v2's max_seq_length (sentence_bert_config.json): the teacher as it is used
    seq_len: int = Field(256, ge=3, le=65536)
    source: Literal["wordnet"] = "wordnet"  # the texts and the retrieval benchmark (the shipped WordNet 3.0 files)
    pos: list[Literal["noun", "verb", "adj", "adv"]] = Field(default_factory=lambda: list(POS))  # parts of speech kept
    max_synsets: int | None = Field(None, ge=20)  # a seeded subset of the synsets before splitting (smoke runs); None: all
    test_fraction: float = Field(0.2, gt=0.0, lt=0.9)  # evaluation synsets: never trained on, their lemma names the queries
    validation_fraction: float = Field(0.02, gt=0.0, lt=0.5)  # synsets whose texts pick the best epoch
    max_train_synsets: int | None = Field(None, ge=1)  # a seeded sample of the training synsets (2 texts each); None: all
    # the reverse dictionary's corpus: every gloss of the selected synsets, or only the evaluation synsets' glosses
    corpus: Literal["all", "test"] = "all"

    @field_validator("pos")
    @classmethod
    def _check_pos(cls, v: list[str]) -> list[str]:
        if not v or len(set(v)) != len(v):
            raise ValueError(f"pos must list each of noun, verb, adj, adv at most once, and at least one; got {v}")
        return v

    @model_validator(mode="after")
    def _check_fractions(self) -> EmbeddingTaskConfig:
        if self.test_fraction + self.validation_fraction >= 0.9:
            raise ValueError(f"test_fraction + validation_fraction = {self.test_fraction + self.validation_fraction:g} "
                             "leaves under 10% of the synsets for training; lower them")
        return self

    def load(self, seed: int, base_dir: Path | None) -> TaskData:
        synsets = {split: rows for split, rows in select_synsets(self, seed).items() if split in SPLITS}
        texts = {split: [t for row in rows for t in (row.gloss, row.lemmas)] for split, rows in synsets.items()}
        _, gloss_sha = read_glosses()
        sizes = {split: len(rows) for split, rows in synsets.items()}
        if any(n == 0 for n in sizes.values()):
            raise DataError(f"embedding task: a split has no synsets ({sizes}) with max_synsets={self.max_synsets}; "
                            "raise max_synsets or the fractions")
        return make_task_data(
            self, seed, name="wordnet_embedding", texts=texts, labels={s: [0] * len(t) for s, t in texts.items()},
            label_names=[LABEL],
            description=(f"WordNet 3.0 glosses and lemma names to embed (Miller 1995), pos {','.join(self.pos)}: "
                         f"{sizes['train']} training, {sizes['validation']} validation and {sizes['test']} held-out synsets "
                         f"(seed {seed}); retrieval: reverse dictionary over {self.corpus} glosses"),
            extra_stats={"synsets": sizes},
            file_hashes={"wordnet/glosses.tsv.xz": gloss_sha, "wordnet/lemmas.tsv.xz": read_lemmas()[1]},
        )


@dataclass(frozen=True)
class Synset:
    offset: str
    pos: str
    gloss: str  # the definition
    lemmas: str  # lemma names joined with ", ": the reverse dictionary's query


@dataclass(frozen=True)
class RetrievalSet:
    """The reverse dictionary: each query's right answer is one document of the corpus."""

    queries: list[str]  # the evaluation synsets' lemma names
    corpus: list[str]  # glosses
    answers: np.ndarray  # (n_queries,) int: the index in `corpus` of each query's gloss
    held_out: np.ndarray  # (n_queries,) int: the same indices; the held-out glosses are corpus[held_out]


@functools.lru_cache(maxsize=1)
def read_lemmas(path: Path = LEMMAS_PATH) -> tuple[dict[tuple[str, str], str], str]:
    """(pos, offset) -> lemma names joined with ", ", from the shipped file; and the file's sha256."""
    if not path.is_file():
        raise DataError(f"{path} is missing; reinstall slimformer or rebuild it with `python -m compress.data.build_wordnet` "
                        "(needs WordNet 3.0's data files: apt-get install wordnet-base)")
    raw = path.read_bytes()
    lines = lzma.decompress(raw).decode("utf-8").splitlines()[1:]
    table = {(pos, offset): lemmas for offset, pos, lemmas in (line.split("\t", 2) for line in lines)}
    return table, hashlib.sha256(raw).hexdigest()


def all_synsets(pos: tuple[str, ...]) -> list[Synset]:
    """Every shipped synset of the parts of speech `pos`, in the glosses file's order."""
    rows, _ = read_glosses()
    lemmas, _ = read_lemmas()
    return [Synset(offset, p, gloss, lemmas[(p, offset)]) for offset, p, _, gloss in rows if p in pos]


def select_synsets(cfg: EmbeddingTaskConfig, seed: int) -> dict[str, list[Synset]]:
    """The synsets of each split, by the data seed: test first, then validation, the rest train."""
    synsets = all_synsets(tuple(cfg.pos))
    rng = np.random.default_rng([seed, 29])
    if cfg.max_synsets is not None and cfg.max_synsets < len(synsets):
        synsets = [synsets[i] for i in np.sort(rng.choice(len(synsets), size=cfg.max_synsets, replace=False))]
    order = rng.permutation(len(synsets))
    n_test, n_val = round(cfg.test_fraction * len(synsets)), round(cfg.validation_fraction * len(synsets))
    parts = {"test": np.sort(order[:n_test]), "validation": np.sort(order[n_test:n_test + n_val]),
             "train": np.sort(order[n_test + n_val:])}
    if cfg.max_train_synsets is not None and cfg.max_train_synsets < len(parts["train"]):
        parts["train"] = np.sort(rng.choice(parts["train"], size=cfg.max_train_synsets, replace=False))
    out = {split: [synsets[i] for i in index] for split, index in parts.items()}
    out["corpus"] = synsets if cfg.corpus == "all" else out["test"]
    return out


def retrieval_set(cfg: EmbeddingTaskConfig, seed: int) -> RetrievalSet:
    """The reverse dictionary of the task's evaluation synsets: queries, corpus, and each query's gloss in it."""
    synsets = select_synsets(cfg, seed)
    corpus = synsets["corpus"]
    where = {(s.pos, s.offset): i for i, s in enumerate(corpus)}
    answers = np.array([where[(s.pos, s.offset)] for s in synsets["test"]], dtype=np.int64)
    return RetrievalSet([s.lemmas for s in synsets["test"]], [s.gloss for s in corpus], answers, answers)


__all__ = ["EmbeddingTaskConfig", "RetrievalSet", "read_lemmas", "retrieval_set", "select_synsets"]
