"""WordNet supersenses: classify a WordNet definition into its lexicographer file.

Data: the definitions (glosses) of Princeton WordNet 3.0 (Miller 1995, "WordNet: A Lexical
Database for English", Communications of the ACM 38(11):39-41), one per synset, labelled with
the synset's lexicographer file, the 45 coarse "supersenses" of `lexnames(5WN)`
(`noun.animal`, `verb.motion`, `adj.all`, ...; cf. Ciaramita & Johnson 2003, "Supersense
Tagging of Unknown Nouns in WordNet"). Example: "a domesticated carnivorous mammal ..." ->
`noun.animal`. The text is a natural-language sentence fragment, so the task suits subword
tokenizers and pretrained-free small Transformers, and ships with the package (no download).

The shipped file `compress/data/wordnet/glosses.tsv.xz` is built by
`python -m compress.data.build_wordnet` from the WordNet 3.0 data files; it is used under
the WordNet 3.0 license (Princeton University), whose text is in
`compress/data/wordnet/LICENSE` and must travel with any copy of the file.

Splits are carved from the selected synsets by the data seed, stratified by lexname; label
ids follow the sorted lexnames of the selected parts of speech (`noun.Tops` sorts before
`noun.act`: capitals first), so `id2label` is the same for every seed and `max_examples`.
"""

from __future__ import annotations

import functools
import hashlib
import lzma
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from compress.data.split import check_fractions, stratified_split
from compress.data.task import SPLITS, TaskConfigBase, TaskData, make_task_data, register_task
from compress.errors import DataError

GLOSSES_PATH = Path(__file__).parent / "wordnet" / "glosses.tsv.xz"
POS = ("noun", "verb", "adj", "adv")


@register_task("wordnet")
class WordNetConfig(TaskConfigBase):
    """WordNet 3.0 definitions -> lexicographer file (45 classes with all parts of speech)."""

    kind: Literal["wordnet"] = "wordnet"
    # parts of speech to keep; labels are the lexnames these use
    pos: list[Literal["noun", "verb", "adj", "adv"]] = Field(default_factory=lambda: list(POS))
    # seeded random subset of the selected synsets before splitting (None = all)
    max_examples: int | None = Field(None, ge=20)
    # shares of the selected synsets carved out for validation and test, per class
    validation_fraction: float = Field(0.1, gt=0.0, lt=1.0)
    test_fraction: float = Field(0.1, gt=0.0, lt=1.0)
    # definitions average ~12 words
    seq_len: int = Field(64, ge=3, le=65536)

    @field_validator("pos")
    @classmethod
    def _check_pos(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("pos is empty; list at least one of noun, verb, adj, adv")
        if len(set(v)) != len(v):
            raise ValueError(f"pos lists a part of speech twice: {v}; list each once")
        return v

    @model_validator(mode="after")
    def _check_fractions(self) -> "WordNetConfig":
        check_fractions(self.validation_fraction, self.test_fraction)
        return self

    def load(self, seed: int, base_dir: Path | None) -> TaskData:
        rows, file_sha = read_glosses()
        selected = [r for r in rows if r[1] in self.pos]
        label_names = sorted({r[2] for r in selected})
        label_id = {name: i for i, name in enumerate(label_names)}
        if self.max_examples is not None and self.max_examples < len(selected):
            rng = np.random.default_rng([seed, 0])
            keep = np.sort(rng.choice(len(selected), size=self.max_examples, replace=False))
            selected = [selected[i] for i in keep]
        all_labels = [label_id[r[2]] for r in selected]
        parts = stratified_split(
            all_labels, {"validation": self.validation_fraction, "test": self.test_fraction}, seed
        )
        for split in SPLITS:
            if not parts[split]:
                raise DataError(
                    f"wordnet: the {split} split is empty with max_examples={self.max_examples}; "
                    "raise max_examples or the split fractions"
                )
        texts = {s: [selected[i][3] for i in parts[s]] for s in SPLITS}
        labels = {s: [all_labels[i] for i in parts[s]] for s in SPLITS}
        return make_task_data(
            self,
            seed,
            name="wordnet",
            texts=texts,
            labels=labels,
            label_names=label_names,
            description=(
                f"WordNet 3.0 definitions -> lexicographer file (Miller 1995): pos {','.join(self.pos)}, "
                f"{len(selected)} synsets, {len(label_names)} classes, seed {seed}"
            ),
            file_hashes={"wordnet/glosses.tsv.xz": file_sha},
        )


@functools.lru_cache(maxsize=1)
def read_glosses(path: Path = GLOSSES_PATH) -> tuple[tuple[tuple[str, str, str, str], ...], str]:
    """Rows (offset, pos, lexname, gloss) of the shipped file, and the file's sha256."""
    if not path.exists():
        raise DataError(
            f"{path} is missing; reinstall slimformer or rebuild it with "
            "`python -m compress.data.build_wordnet`"
        )
    raw = path.read_bytes()
    lines = lzma.decompress(raw).decode("utf-8").splitlines()
    rows = tuple(tuple(line.split("\t", 3)) for line in lines[1:])
    return rows, hashlib.sha256(raw).hexdigest()  # type: ignore[return-value]
