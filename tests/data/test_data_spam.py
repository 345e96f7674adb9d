"""SpamAssassin builder on a tiny fake npm tarball with the real layout: headers dropped, MIME decoded,
labels by group, duplicates, deterministic bytes per seed, errors. No network and no real package."""

import base64
import csv
import io
import json
import quopri
import tarfile
from pathlib import Path

import pytest

from compress.data.build_spam import GROUPS, body_text, build, main
from compress.errors import DataError

N_PER_GROUP = 10  # the split takes 1 + 1 of each group, 8 stay in train
WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike".split()


def plain(n: int, group: str) -> str:
    body = " ".join(WORDS[(n + i) % len(WORDS)] for i in range(12)) + f" message {group} {n}"
    return (f"From sender{n}@example.com  Thu Aug 22 13:17:22 2002\nReturn-Path: <HEADERMARK@example.com>\n"
            f"Received: from HEADERMARK.example.com\n\tby localhost with SMTP\nSubject: HEADERMARK {n}\n"
            f"Content-Type: text/plain; charset=us-ascii\n\n{body}\n\n  indented   line\n")


def multipart(n: int, group: str) -> str:
    text = quopri.encodestring(f"Caf\u00e9 deal {group} {n} = best price, reply now ".encode("latin-1") * 2).decode()
    html = base64.b64encode(b"<html><head><style>STYLEMARK{}</style><script>SCRIPTMARK()</script></head>"
                            b"<body><p>Buy&nbsp;now &amp; save</p><br>today only</body></html>").decode()
    image = base64.b64encode(b"IMAGEMARK" * 20).decode()
    return (f"From spammer@example.com  Fri Aug 23 10:00:00 2002\nSubject: HEADERMARK offer {n}\nMIME-Version: 1.0\n"
            'Content-Type: multipart/mixed; boundary="OUTER"\n\nPREAMBLE\n--OUTER\n'
            'Content-Type: multipart/alternative; boundary="INNER"\n\n--INNER\n'
            "Content-Type: text/plain; charset=iso-8859-1\nContent-Transfer-Encoding: quoted-printable\n"
            f"X-Part-Header: HEADERMARK\n\n{text}\n--INNER\nContent-Type: text/html; charset=utf-8\n"
            f"Content-Transfer-Encoding: base64\n\n{html}\n--INNER--\n--OUTER\n"
            'Content-Type: image/png; name="x.png"\nContent-Transfer-Encoding: base64\n'
            f'Content-Disposition: attachment; filename="x.png"\n\n{image}\n--OUTER--\n')


def fake_tarball(path: Path, extra: dict[str, list[str]] | None = None) -> Path:
    """npm's layout: package/data/<group>/<nnnnn>.<md5>.json ({id, group, checksum, text}) beside .txt copies."""
    messages = {g: [multipart(i, g) if g.startswith("spam") and i % 2 else plain(i, g) for i in range(N_PER_GROUP)]
                for g in GROUPS}
    for g, texts in (extra or {}).items():
        messages[g] += texts
    with tarfile.open(path, "w:gz") as tar:
        def add(name: str, data: bytes):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        add("package/LICENSE", b"Apache License 2.0\n")
        add("package/data/file_list.json", b"[]")
        for g, texts in messages.items():
            for i, text in enumerate(texts):
                name = f"package/data/{g}/{i + 1:05d}.{i:032x}"
                add(name + ".json", json.dumps({"id": f"{i + 1:05d}", "group": g, "checksum": {}, "text": text}).encode())
                add(name + ".txt", b"RAWCOPY " + text.encode())
    return path


def read(path: Path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def test_headers_dropped_and_mime_decoded(tmp_path):
    splits, stats = build(tmp_path / "out", fake_tarball(tmp_path / "p.tgz"), min_chars=20)
    rows = [r for name in ("train", "validation", "test") for r in read(tmp_path / "out" / f"{name}.csv")]
    assert len(rows) == 5 * N_PER_GROUP == stats["kept"] and stats["read"] == 5 * N_PER_GROUP
    everything = "\n".join(r["text"] for r in rows)
    for mark in ("HEADERMARK", "Received", "Return-Path", "Content-Type", "From sender", "RAWCOPY", "IMAGEMARK",
                 "SCRIPTMARK", "STYLEMARK", "PREAMBLE", "<p>", "&amp;"):
        assert mark not in everything, mark
    spam = next(r["text"] for r in rows if "deal spam-1 1 " in r["text"])
    assert spam == ("Caf\u00e9 deal spam-1 1 = best price, reply now " * 2).strip() + " Buy now & save today only"  # &nbsp; is whitespace too
    ham = next(r["text"] for r in rows if r["group"] == "easy-ham-2")
    assert ham.endswith("indented line") and "  " not in ham and "\n" not in ham
    assert all(r["label"] == GROUPS[r["group"]] for r in rows)


def test_same_seed_same_bytes_other_seed_other_split(tmp_path):
    tgz = fake_tarball(tmp_path / "p.tgz")
    build(tmp_path / "a", tgz, seed=0, min_chars=20)
    build(tmp_path / "b", tgz, seed=0, min_chars=20)
    build(tmp_path / "c", tgz, seed=1, min_chars=20)
    for name in ("train.csv", "validation.csv", "test.csv", "README.md"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert (tmp_path / "a" / "test.csv").read_bytes() != (tmp_path / "c" / "test.csv").read_bytes()
    sizes = {n: len(read(tmp_path / "a" / f"{n}.csv")) for n in ("train", "validation", "test")}
    assert sizes == {"train": 40, "validation": 5, "test": 5}  # one of each group's 10 in validation and test
    assert "ham" in {r["label"] for r in read(tmp_path / "a" / "test.csv")}


def test_short_duplicate_and_conflicting_bodies_dropped(tmp_path):
    dup = plain(3, "easy-ham-1").replace("HEADERMARK 3", "another subject")  # the same body, other headers
    conflict = "Subject: x\n\n" + "the very same words in both groups " * 3
    extra = {"easy-ham-1": [dup, conflict, "Subject: short\n\ntoo short"], "spam-2": [conflict]}
    _, stats = build(tmp_path / "out", fake_tarball(tmp_path / "p.tgz", extra), min_chars=20)
    assert stats == {"read": 54, "short_dropped": 1, "duplicates_dropped": 1, "conflicting_dropped": 2, "kept": 50}
    assert "Public Domain" in (tmp_path / "out" / "README.md").read_text()


def test_body_of_a_message_without_headers_or_with_an_unknown_charset():
    assert body_text("\nno headers at all") == "no headers at all"
    raw = "Content-Type: text/plain; charset=x-unknown-charset\n\nplain \xe9 text"
    assert body_text(raw) == "plain \xe9 text"


def test_errors_name_the_file(tmp_path, capsys):
    assert main(["--out", str(tmp_path / "o"), "--tarball", str(tmp_path / "missing.tgz")]) == 2
    assert "missing.tgz" in capsys.readouterr().err
    (tmp_path / "junk.tgz").write_bytes(b"not a tarball")
    with pytest.raises(DataError, match="junk.tgz"):
        build(tmp_path / "o", tmp_path / "junk.tgz")
    with tarfile.open(tmp_path / "empty.tgz", "w:gz") as tar:
        info = tarfile.TarInfo("package/README.md")
        tar.addfile(info, io.BytesIO(b""))
    with pytest.raises(DataError, match="holds no"):
        build(tmp_path / "o", tmp_path / "empty.tgz")
    assert not (tmp_path / "o").exists(), "a failed build writes nothing"
