"""Build the shipped WordNet files `compress/data/wordnet/glosses.tsv.xz` and `lemmas.tsv.xz`.

Reads Princeton WordNet 3.0 (Miller 1995, "WordNet: A Lexical Database for English",
Communications of the ACM 38(11)) from its `data.noun`, `data.verb`, `data.adj` and
`data.adv` files, in the format of the `wndb(5WN)` manual page:

    synset_offset lex_filenum ss_type w_cnt word lex_id [word lex_id...] p_cnt ... | gloss

and writes one row per synset: `offset  pos  lexname  gloss` (tab-separated, header first,
sorted by part of speech then offset, xz-compressed; byte-identical on every run), and beside it
`lemmas.tsv.xz`: `offset  pos  lemmas`, every synset's words in the file's order, underscores as
spaces, an adjective's syntactic marker (`(a)`, `(p)`, `(ip)`) removed, joined with ", " (the
queries of the reverse-dictionary retrieval task, `compress/data/embedding.py`).

- `lexname` is the lexicographer file named by `lex_filenum` (`lexnames(5WN)`, 45 names);
- `pos` is noun, verb, adj (ss_type `a` and satellite `s`) or adv;
- `gloss` is the definition only: the gloss up to its first example sentence (`; "...`,
  or `: "...` in a few glosses); quotes inside a definition (`the phrase "make strides"`) stay.
- Duplicate definitions are kept once when all their synsets share a lexname (the first by
  pos and offset) and dropped when they disagree, so no definition lands in two splits or
  carries two labels.

The license header of the data files (lines starting with two spaces) is skipped here and
written to `compress/data/wordnet/LICENSE`, as the WordNet 3.0 license requires.

Run:  python -m compress.data.build_wordnet [--wordnet-dir /usr/share/wordnet] [--out DIR]
(Debian/Ubuntu: `apt-get install wordnet-base` provides /usr/share/wordnet.)
"""

from __future__ import annotations

import argparse
import lzma
import re
from collections import defaultdict
from pathlib import Path

# lexnames(5WN): lex_filenum -> lexicographer file name
LEXNAMES = [
    "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact",
    "noun.attribute", "noun.body", "noun.cognition", "noun.communication", "noun.event",
    "noun.feeling", "noun.food", "noun.group", "noun.location", "noun.motive", "noun.object",
    "noun.person", "noun.phenomenon", "noun.plant", "noun.possession", "noun.process",
    "noun.quantity", "noun.relation", "noun.shape", "noun.state", "noun.substance", "noun.time",
    "verb.body", "verb.change", "verb.cognition", "verb.communication", "verb.competition",
    "verb.consumption", "verb.contact", "verb.creation", "verb.emotion", "verb.motion",
    "verb.perception", "verb.possession", "verb.social", "verb.stative", "verb.weather",
    "adj.ppl",
]  # fmt: skip
POS_FILES = {"noun": "data.noun", "verb": "data.verb", "adj": "data.adj", "adv": "data.adv"}
SS_TYPE_POS = {"n": "noun", "v": "verb", "a": "adj", "s": "adj", "r": "adv"}
HEADER = "offset\tpos\tlexname\tgloss"
LEMMA_HEADER = "offset\tpos\tlemmas"
_MARKER = re.compile(r"\((a|p|ip)\)$")  # an adjective's syntactic marker, glued to its word
_EXAMPLE = re.compile(r'[;:]\s*"')  # `; "example"` (or `: "example"`) starts the part we drop
_LICENSE_LINE = re.compile(r"^ {2}\d+ ?(.*?)\s*$")


def definition(gloss: str) -> str:
    """The definition part of a gloss: text before the first quoted example."""
    text = _EXAMPLE.split(gloss.strip(), maxsplit=1)[0]
    return " ".join(text.split()).rstrip(";: ").strip()


def parse_data_file(path: Path, pos: str) -> tuple[list[tuple[int, str, str, str]], list[str]]:
    """Rows (offset, pos, lexname, definition) of one data file, and its license lines."""
    rows: list[tuple[int, str, str, str]] = []
    license_lines: list[str] = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("  "):
                m = _LICENSE_LINE.match(line.rstrip("\n"))
                license_lines.append(m.group(1) if m else line.strip())
                continue
            head, sep, gloss = line.partition("|")
            fields = head.split()
            if not sep or len(fields) < 4:
                raise ValueError(f"{path}: cannot parse line {line[:60]!r}")
            offset, lex_filenum, ss_type = int(fields[0]), int(fields[1]), fields[2]
            if SS_TYPE_POS.get(ss_type) != pos:
                raise ValueError(f"{path}: ss_type {ss_type!r} in a {pos} file at offset {offset}")
            text = definition(gloss)
            if "\t" in text or not text:
                continue
            rows.append((offset, pos, LEXNAMES[lex_filenum], text))
    return rows, license_lines


def parse_lemmas(path: Path, pos: str) -> list[tuple[int, str, str]]:
    """Rows (offset, pos, lemmas joined with ", ") of one data file: `w_cnt` (two hex digits) words after ss_type."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("  "):
                continue
            fields = line.partition("|")[0].split()
            n = int(fields[3], 16)
            words = [_MARKER.sub("", w).replace("_", " ") for w in fields[4 : 4 + 2 * n : 2]]
            rows.append((int(fields[0]), pos, ", ".join(words)))
    return rows


def dedupe(rows: list[tuple[int, str, str, str]]) -> tuple[list[tuple[int, str, str, str]], int, int]:
    """Keep each definition once; drop definitions whose synsets disagree on the lexname."""
    by_text: dict[str, list[tuple[int, str, str, str]]] = defaultdict(list)
    for row in rows:
        by_text[row[3]].append(row)
    kept, n_merged, n_conflict = [], 0, 0
    for row in rows:
        group = by_text[row[3]]
        if len({r[2] for r in group}) > 1:
            n_conflict += 1
        elif group[0] is row:
            kept.append(row)
        else:
            n_merged += 1
    return kept, n_merged, n_conflict


def build(wordnet_dir: Path, out_dir: Path) -> dict[str, int]:
    """Write glosses.tsv.xz, lemmas.tsv.xz and LICENSE into `out_dir`; return counts."""
    rows: list[tuple[int, str, str, str]] = []
    lemmas: list[tuple[int, str, str]] = []
    license_lines: list[str] = []
    for pos, name in POS_FILES.items():
        path = wordnet_dir / name
        if not path.exists():
            raise SystemExit(f"{path} not found; install WordNet 3.0 (apt-get install wordnet-base) "
                             "or pass --wordnet-dir")
        part, lic = parse_data_file(path, pos)
        rows += sorted(part)
        lemmas += sorted(parse_lemmas(path, pos))
        license_lines = license_lines or lic
    n_read = len(rows)
    rows, n_merged, n_conflict = dedupe(rows)
    body = "\n".join([HEADER] + [f"{o:08d}\t{p}\t{lex}\t{g}" for o, p, lex, g in rows]) + "\n"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "glosses.tsv.xz").write_bytes(
        lzma.compress(body.encode("utf-8"), format=lzma.FORMAT_XZ, preset=9 | lzma.PRESET_EXTREME)
    )
    lemma_body = "\n".join([LEMMA_HEADER] + [f"{o:08d}\t{p}\t{words}" for o, p, words in lemmas]) + "\n"
    (out_dir / "lemmas.tsv.xz").write_bytes(
        lzma.compress(lemma_body.encode("utf-8"), format=lzma.FORMAT_XZ, preset=9 | lzma.PRESET_EXTREME)
    )
    license_text = "\n".join(license_lines).strip()
    (out_dir / "LICENSE").write_text(
        "The files glosses.tsv.xz and lemmas.tsv.xz in this folder are derived from Princeton\n"
        "WordNet 3.0 (https://wordnet.princeton.edu/): the definitions (glosses), lemma names,\n"
        "parts of speech, synset offsets and lexicographer file names of its data.noun,\n"
        "data.verb, data.adj and data.adv files, built by compress/data/build_wordnet.py.\n"
        "It is distributed under the WordNet 3.0 license, reproduced below.\n\n"
        "WordNet 3.0 license\n"
        "-------------------\n\n" + license_text + "\n",
        encoding="utf-8",
    )
    return {"read": n_read, "written": len(rows), "duplicates_merged": n_merged,
            "conflicting_dropped": n_conflict, "lemma_rows": len(lemmas)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wordnet-dir", type=Path, default=Path("/usr/share/wordnet"),
                        help="folder with data.noun, data.verb, data.adj, data.adv")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "wordnet",
                        help="output folder (default: the shipped compress/data/wordnet)")
    args = parser.parse_args(argv)
    counts = build(args.wordnet_dir, args.out)
    size = (args.out / "glosses.tsv.xz").stat().st_size
    print(f"wrote {args.out / 'glosses.tsv.xz'} ({size / 1e6:.2f} MB): {counts}")


if __name__ == "__main__":
    main()
