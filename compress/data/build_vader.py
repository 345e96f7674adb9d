"""Build a binary sentiment dataset from the VADER human-rated sentences, using PyPI only.

Hutto & Gilbert 2014, "VADER: A Parsimonious Rule-based Model for Sentiment Analysis of Social
Media Text" (ICWSM), had each sentence rated by about 20 people on -4..+4. The (MIT) sdist of
`vaderSentiment==3.3.2` ships `additional_resources/hutto_ICWSM_2014.tar.gz`, whose
`*_GroundTruth.txt` files hold `id<TAB>mean rating<TAB>text` lines (CRLF). We take the Amazon
review, NYT editorial and tweet sets (not movieReviewSnippets) and write `train.csv`,
`validation.csv`, `test.csv` (columns `text,label,source`) and a README (MIT notice, counts).

- label: `positive` if mean >= 0.5, `negative` if mean <= -0.5; near-neutral rows are dropped.
- text: UTF-8 (a file that is not falls back to cp1252, then latin-1, noted in the stats), HTML
  entities unescaped (tweets hold `&amp;`, `&lt;3`), NFC, whitespace runs collapsed.
- duplicates: an exact duplicate keeps its first row (sources in the order below, then file
  order); when the copies disagree on the label, all are dropped.
- split: 80/10/10, seeded, stratified by (label, source) with compress.data.split, so one sdist
  and seed give byte-identical files.

Run:  python -m compress.data.build_vader --out data/vader [--sdist vaderSentiment-3.3.2.tar.gz] [--seed 0]
Without --sdist it runs `pip download` (PyPI) and checks the sdist's sha256.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import html
import io
import subprocess
import sys
import tarfile
import tempfile
import unicodedata
import zlib
from collections import Counter, defaultdict
from pathlib import Path

from compress.data.split import stratified_split
from compress.errors import DataError, SlimformerError
from compress.io import atomic_dir
from eval.io import sha256_of

REQUIREMENT = "vaderSentiment==3.3.2"
SDIST_SHA256 = "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9"  # PyPI's file, recorded on download
INNER_TAR = "additional_resources/hutto_ICWSM_2014.tar.gz"
SOURCES = {  # source name written in the CSV -> ground-truth file in the inner tarball
    "amazon": "amazonReviewSnippets_GroundTruth.txt",
    "nyt": "nytEditorialSnippets_GroundTruth.txt",
    "tweets": "tweets_GroundTruth.txt",
}
THRESHOLD = 0.5  # |mean rating| below this is treated as neutral and dropped
FRACTIONS = {"validation": 0.1, "test": 0.1}  # carved out of the whole set; the rest is train
LABELS = ("negative", "positive")
ENCODINGS = ("utf-8-sig", "cp1252", "latin-1")  # latin-1 decodes any byte, so the chain ends
Row = tuple[str, str, str]  # (text, label, source)


def download_sdist(dest: Path) -> Path:
    """`pip download` the sdist from PyPI into `dest`; raise DataError unless its sha256 matches."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", REQUIREMENT, "-d", str(dest)]
    done = subprocess.run(cmd, check=False, capture_output=True, text=True)
    found = sorted(dest.glob("vaderSentiment-*.tar.gz"))
    if done.returncode != 0 or not found:
        raise DataError(f"`{' '.join(cmd[2:])}` failed (PyPI reachable?): {done.stderr.strip()[-500:]}; "
                        "or download the sdist yourself and pass --sdist PATH")
    if (digest := sha256_of(found[0])) != SDIST_SHA256:
        raise DataError(f"{found[0].name}: sha256 {digest} is not the expected {SDIST_SHA256}; "
                        "PyPI served a different file, so nothing was built")
    return found[0]


def read_sdist(sdist: Path) -> tuple[dict[str, bytes], str]:
    """The raw ground-truth files by source name, and the sdist's LICENSE text."""
    if not sdist.is_file():
        raise DataError(f"{sdist}: no such file; pass the vaderSentiment-3.3.2.tar.gz sdist, or omit --sdist")
    try:  # members are read into memory, never extracted, so odd paths in a tarball are harmless
        with tarfile.open(sdist, "r:*") as outer:
            names = outer.getnames()
            inner_name = next((n for n in names if n.endswith("/" + INNER_TAR)), None)
            lic_name = next((n for n in names if n.count("/") == 1 and n.endswith("/LICENSE.txt")), None)
            if inner_name is None or lic_name is None:
                missing = INNER_TAR if inner_name is None else "LICENSE.txt"
                raise DataError(f"{sdist}: holds no {missing}; is it the vaderSentiment 3.3.2 sdist?")
            license_text = outer.extractfile(lic_name).read().decode("utf-8")
            with tarfile.open(fileobj=io.BytesIO(outer.extractfile(inner_name).read()), mode="r:gz") as inner:
                by_base = {n.rsplit("/", 1)[-1]: n for n in inner.getnames()}
                raw = {}
                for source, base in SOURCES.items():
                    if base not in by_base:
                        raise DataError(f"{sdist}: {INNER_TAR} holds no {base}")
                    raw[source] = inner.extractfile(by_base[base]).read()
    except (tarfile.TarError, OSError, EOFError, zlib.error, UnicodeDecodeError) as e:
        raise DataError(f"{sdist}: not a readable sdist tarball ({e}); download it again") from e
    return raw, license_text


def decode(raw: bytes) -> tuple[str, str]:
    """Text of a file and the encoding that decoded it (the first of ENCODINGS that works)."""
    for encoding in ENCODINGS[:-1]:
        with contextlib.suppress(UnicodeDecodeError):
            return raw.decode(encoding), encoding
    return raw.decode(ENCODINGS[-1]), ENCODINGS[-1]


def normalise(text: str) -> str:
    return " ".join(unicodedata.normalize("NFC", html.unescape(text)).split())


def label_of(mean: float) -> str | None:
    return "positive" if mean >= THRESHOLD else "negative" if mean <= -THRESHOLD else None


def parse(text: str, where: str) -> list[tuple[float, str]]:
    """(mean, normalised text) per line of a ground-truth file; `where` names it in errors."""
    rows = []
    for n, line in enumerate(text.split("\n"), start=1):  # not splitlines(): it also splits on \x85, \x0c
        if not line.strip():
            continue
        fields = line.rstrip("\r").split("\t", 2)
        try:
            mean, sentence = float(fields[1]), normalise(fields[2])
        except (IndexError, ValueError):
            raise DataError(f"{where} line {n}: expected 'id<TAB>mean<TAB>text', got {line[:80]!r}") from None
        if sentence:
            rows.append((mean, sentence))
    return rows


def collect(raw: dict[str, bytes], sdist: Path) -> tuple[list[Row], dict[str, object], list[str]]:
    """Binarised, deduplicated rows in source then file order, what was dropped, and the near-neutral
    sentences (unlabelled for this binary task: a distillation transfer set, `unlabeled.txt`)."""
    rows: list[Row] = []
    neutral: list[str] = []
    stats: dict[str, object] = {}
    n_read = n_neutral = 0
    for source, data in raw.items():
        text, encoding = decode(data)
        if encoding != "utf-8-sig":  # never for the real sdist; worth seeing if it happens
            stats[f"encoding_{source}"] = encoding
        parsed = parse(text, f"{sdist}!{INNER_TAR}!{SOURCES[source]}")
        n_read += len(parsed)
        for mean, sentence in parsed:
            if (label := label_of(mean)) is None:
                n_neutral += 1
                neutral.append(sentence)
            else:
                rows.append((sentence, label, source))
    stats.update(read=n_read, neutral_dropped=n_neutral)
    labels_of: dict[str, set[str]] = defaultdict(set)
    for sentence, label, _ in rows:
        labels_of[sentence].add(label)
    agreed = [row for row in rows if len(labels_of[row[0]]) == 1]
    first: dict[str, Row] = {}
    for row in agreed:
        first.setdefault(row[0], row)  # the first copy, at its place
    kept = list(first.values())
    stats.update(duplicates_dropped=len(agreed) - len(kept), conflicting_dropped=len(rows) - len(agreed))
    labelled = {row[0] for row in rows}
    unlabeled = [t for t in dict.fromkeys(neutral) if t not in labelled]  # once each, never a labelled sentence
    return kept, stats, unlabeled


def split_rows(rows: list[Row], seed: int) -> dict[str, list[Row]]:
    """Seeded 80/10/10 split, stratified by (label, source): each stratum is one class to split.py."""
    strata = sorted({(label, source) for _, label, source in rows})
    ids = [strata.index((label, source)) for _, label, source in rows]
    return {name: [rows[i] for i in idx] for name, idx in stratified_split(ids, FRACTIONS, seed).items()}


def counts_table(splits: dict[str, list[Row]]) -> str:
    """Rows per split: total, per label, and per source as negative/positive."""
    lines = [f"{'split':<10} {'total':>5} {'negative':>8} {'positive':>8} " + " ".join(f"{s + ' -/+':>12}" for s in SOURCES)]
    for name, rows in {**splits, "all": [r for part in splits.values() for r in part]}.items():
        by = Counter((label, source) for _, label, source in rows)
        cells = [f"{sum(n for (lab, _), n in by.items() if lab == label):>8}" for label in LABELS]
        cells += [f"{by['negative', src]:>6}/{by['positive', src]:<5}" for src in SOURCES]
        lines.append((f"{name:<10} {len(rows):>5} " + " ".join(cells)).rstrip())
    return "\n".join(lines)


def write_csv(path: Path, rows: list[Row]) -> None:
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")  # quotes only fields with commas, quotes, newlines
        writer.writerow(("text", "label", "source"))
        writer.writerows(rows)


def readme(sha: str, seed: int, table: str, stats: dict[str, object], license_text: str) -> str:
    dropped = ", ".join(f"{k} {v}" for k, v in stats.items())
    return (
        "# VADER sentiment sentences, binary\n\n"
        "Built by `python -m compress.data.build_vader` (slimformer) from the human-rated sentences of\n"
        f"Hutto & Gilbert 2014 (ICWSM) in PyPI's `{REQUIREMENT}` sdist (sha256 {sha}),\n"
        f"`{INNER_TAR}`: {', '.join(SOURCES.values())}.\n\n"
        f"- label: positive if mean rating >= {THRESHOLD}, negative if <= -{THRESHOLD}, the rest dropped\n"
        "- text: HTML entities unescaped, NFC, whitespace collapsed; an exact duplicate kept once\n"
        f"- split: stratified by (label, source), seed {seed}, validation {FRACTIONS['validation']}, "
        f"test {FRACTIONS['test']}\n- sentences: {dropped}\n"
        "- unlabeled.txt: the near-neutral sentences, once each, one a line (a transfer set for distillation)\n\n"
        f"```\n{table}\n```\n\n"
        "## License (MIT), the sdist's LICENSE.txt\n\n" + license_text.strip() + "\n"
    )


def build(out: Path, sdist: Path | None = None, seed: int = 0) -> tuple[dict[str, list[Row]], dict[str, object]]:
    """Write the three CSVs and README.md into `out` (atomically, whole folder); return splits and stats."""
    with tempfile.TemporaryDirectory(prefix="vader-sdist-") as tmp:
        sdist = sdist or download_sdist(Path(tmp))
        raw, license_text = read_sdist(sdist)  # before hashing, so a missing file gets its own message
        if (sha := sha256_of(sdist)) != SDIST_SHA256:  # a user's own sdist is allowed, and said so
            print(f"note: {sdist} is not PyPI's {REQUIREMENT} sdist (sha256 differs); building from it anyway")
    rows, stats, unlabeled = collect(raw, sdist)
    if not rows:
        raise DataError(f"{sdist}: no sentence has |mean rating| >= {THRESHOLD}; nothing to write")
    splits = split_rows(rows, seed)
    with atomic_dir(out) as tmp_out:
        for name, part in splits.items():
            write_csv(tmp_out / f"{name}.csv", part)
        (tmp_out / "unlabeled.txt").write_text("".join(t + "\n" for t in unlabeled), encoding="utf-8")
        (tmp_out / "README.md").write_text(readme(sha, seed, counts_table(splits), stats, license_text), encoding="utf-8")
    return splits, stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder, replaced whole")
    parser.add_argument("--sdist", type=Path, help=f"a local {REQUIREMENT} sdist (default: pip download it)")
    parser.add_argument("--seed", type=int, default=0, help="split seed")
    args = parser.parse_args(argv)
    try:
        splits, stats = build(args.out, args.sdist, args.seed)
    except SlimformerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: {stats}\n{counts_table(splits)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
