"""WordNet: the shipped gloss file, its license, label names per part of speech, seeded splits."""

from collections import Counter
from pathlib import Path

import pytest
from pydantic import ValidationError

from compress.data import SPLITS, WordNetConfig, load_task
from compress.data.build_wordnet import LEXNAMES, build, definition, parse_data_file
from compress.data.wordnet import GLOSSES_PATH, read_glosses

WORDNET_DIR = Path("/usr/share/wordnet")


@pytest.fixture(scope="module")
def full():
    return load_task(WordNetConfig(), seed=0)


def test_shipped_file_and_license():
    assert GLOSSES_PATH.exists()
    assert GLOSSES_PATH.stat().st_size < 5_000_000
    license_text = (GLOSSES_PATH.parent / "LICENSE").read_text()
    assert "WordNet 3.0 Copyright 2006 by Princeton University" in license_text
    assert "Permission to use, copy, modify and distribute" in license_text


def test_shipped_file_is_read_once(monkeypatch):
    """Loading is cheap because the file is decompressed once per process (a count, not a clock)."""
    reads = []
    real = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: reads.append(self) or real(self))
    read_glosses.cache_clear()
    rows, sha = read_glosses()
    for _ in range(3):
        load_task(WordNetConfig(max_examples=100), seed=0)
    assert reads == [GLOSSES_PATH]
    assert len(rows) > 110_000 and len(sha) == 64
    assert all(len(r) == 4 for r in rows[:1000])


def test_all_pos_gives_45_sorted_lexnames(full):
    assert len(full.label_names) == 45
    assert full.label_names == sorted(LEXNAMES)
    assert sum(full.stats["sizes"].values()) == len(read_glosses()[0])
    # stratified: every class with at least 10 synsets is in every split
    counts = Counter(full.labels["train"])
    for split in ("validation", "test"):
        present = set(full.labels[split])
        assert all(c in present for c, n in counts.items() if n >= 10)
    assert 0.09 < full.stats["sizes"]["validation"] / sum(full.stats["sizes"].values()) < 0.11
    by_text = {t: full.label_names[y] for s in SPLITS for t, y in zip(full.texts[s], full.labels[s])}
    dog = [name for t, name in by_text.items() if t.startswith("a member of the genus Canis (probably")]
    assert dog == ["noun.animal"]
    assert by_text["change location; move, travel, or proceed, also metaphorically"] == "verb.motion"


def test_texts_are_definitions_without_examples(full):
    texts = full.texts["train"][:5000]
    assert all(t and "\t" not in t and not t.startswith('"') for t in texts)
    assert sum('; "' in t for t in texts) == 0


@pytest.mark.parametrize(
    "pos,n_labels,prefixes",
    [(["verb"], 15, ("verb.",)), (["adj", "adv"], 4, ("adj.", "adv.")), (["noun"], 26, ("noun.",))],
)
def test_subsets_of_pos(pos, n_labels, prefixes):
    data = load_task(WordNetConfig(pos=pos, max_examples=3000), seed=0)
    assert len(data.label_names) == n_labels
    assert all(name.startswith(prefixes) for name in data.label_names)
    assert sum(data.stats["sizes"].values()) == 3000


def test_max_examples_is_seeded():
    cfg = WordNetConfig(max_examples=1000)
    a, b, c = load_task(cfg, 0), load_task(cfg, 0), load_task(cfg, 1)
    assert a.texts == b.texts and a.fingerprint == b.fingerprint
    assert a.texts["train"] != c.texts["train"] and a.fingerprint != c.fingerprint
    assert len(a.label_names) == 45  # id2label does not depend on the sample
    for split in SPLITS:
        assert a.texts[split]


@pytest.mark.parametrize(
    "fields,needle",
    [({"pos": []}, "pos"), ({"pos": ["noun", "noun"]}, "pos"), ({"pos": ["nouns"]}, "pos"),
     ({"validation_fraction": 0.5, "test_fraction": 0.45}, "fraction"), ({"max_examples": 5}, "max_examples")],
)
def test_invalid_config_is_rejected(fields, needle):
    with pytest.raises(ValidationError, match=needle):
        WordNetConfig(**fields)


def test_definition_drops_examples():
    assert definition(' a tangible entity; an entity that can cast a shadow; "it was full of objects"  ') == (
        "a tangible entity; an entity that can cast a shadow"
    )
    assert definition(' the act of substituting: "he sent Smith in"') == "the act of substituting"
    assert definition(' progress (as in the phrase "make strides"); "big strides"') == (
        'progress (as in the phrase "make strides")'
    )


def test_builder_on_a_tiny_wordnet(tmp_path):
    header = "  1 This software and database is being provided  \n  2 WordNet 3.0 Copyright 2006 by Princeton.  \n"
    lines = {
        "data.noun": [
            "00001740 03 n 01 entity 0 000 | that which exists; \"an entity\"  ",
            "00002000 05 n 01 dog 0 000 | a domestic animal  ",
            "00003000 06 n 01 cat 0 000 | a domestic animal  ",  # same definition, other lexname
        ],
        "data.verb": ["00004000 38 v 01 run 0 000 | move fast; \"run home\"  "],
        "data.adj": ["00005000 00 a 01 big 0 000 | large  ", "00006000 00 s 01 huge 0 000 | large  "],
        "data.adv": ["00007000 02 r 01 fast 0 000 | quickly  "],
    }
    for name, rows in lines.items():
        (tmp_path / name).write_text(header + "\n".join(rows) + "\n")
    out = tmp_path / "out"
    counts = build(tmp_path, out)
    assert counts == {"read": 7, "written": 4, "duplicates_merged": 1, "conflicting_dropped": 2, "lemma_rows": 7}
    rows = read_glosses.__wrapped__(out / "glosses.tsv.xz")[0]
    assert rows == (
        ("00001740", "noun", "noun.Tops", "that which exists"),
        ("00004000", "verb", "verb.motion", "move fast"),
        ("00005000", "adj", "adj.all", "large"),
        ("00007000", "adv", "adv.all", "quickly"),
    )
    assert "WordNet 3.0 Copyright 2006 by Princeton." in (out / "LICENSE").read_text()
    first = (out / "glosses.tsv.xz").read_bytes()
    build(tmp_path, out)
    assert (out / "glosses.tsv.xz").read_bytes() == first  # byte-identical rebuild


@pytest.mark.skipif(not (WORDNET_DIR / "data.adv").exists(), reason="WordNet 3.0 not installed")
def test_shipped_rows_match_the_installed_wordnet():
    parsed, license_lines = parse_data_file(WORDNET_DIR / "data.adv", "adv")
    parsed_rows = {(f"{o:08d}", p, lex, g) for o, p, lex, g in parsed}
    shipped = [r for r in read_glosses()[0] if r[1] == "adv"]
    assert set(shipped) <= parsed_rows
    assert len(shipped) > 0.95 * len(parsed_rows)
    assert any("Princeton University" in line for line in license_lines)
