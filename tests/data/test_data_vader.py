"""VADER builder on a tiny fake sdist with the real layout: labels, dropped rows, split, errors.

No network and no real sdist: `fake_sdist` writes vaderSentiment-3.3.2.tar.gz holding LICENSE.txt
and additional_resources/hutto_ICWSM_2014.tar.gz, whose *_GroundTruth.txt files have the real
format (`id<TAB>mean<TAB>text`, CRLF, no newline after the last line).
"""

import csv
import io
import subprocess
import tarfile
from collections import Counter
from pathlib import Path

import pytest

from compress.data import build_vader
from compress.data.build_vader import build, label_of, main
from compress.errors import DataError

# spelled out here rather than taken from the builder, so a builder reading movieReviewSnippets fails
SOURCES = {"amazon": "amazonReviewSnippets_GroundTruth.txt", "nyt": "nytEditorialSnippets_GroundTruth.txt",
           "tweets": "tweets_GroundTruth.txt"}
# 20 rows per (label, source) stratum: the split takes 2 + 2 of each, 16 stay in train
N_PER_STRATUM = 20
SPECIAL = {  # extra lines per source file: boundaries, neutral rows, duplicates, normalisation
    "amazon": [("a_x1", "0.5", "exactly plus half"), ("a_x2", "-0.5", "exactly minus half"),
               ("a_x3", "0.49", "NEUTRAL just under"), ("a_x4", "-0.45", "NEUTRAL minus"),
               ("a_x5", "0.0", "NEUTRAL zero"), ("a_x6", "2.5", "great  product.\t"),
               ("a_x7", "3.0", " great product. "), ("a_x8", "1.5", "fish &amp; chips caf\u00e9")],
    "nyt": [("n_x1", "-2.0", "CONFLICT text"), ("n_x2", "0.2", "NEUTRAL editorial")],
    "tweets": [("t_x1", "1.0", "CONFLICT text"), ("t_x2", "1.2", "i &lt;3 it"), ("t_x3", "0.3", "NEUTRAL tweet"),
               ("t_x4", "1.0", "great product.")],  # a copy in a later source: the amazon row is kept,
}
MOVIE = [("1", "3.2", "MOVIE should never appear"), ("2", "-3.1", "MOVIE nor this one")]


def ground_truth(lines: list[tuple[str, str, str]]) -> bytes:
    return "\r\n".join("\t".join(line) for line in lines).encode("utf-8")


def make_sdist(path: Path, files: dict[str, bytes] | None = None, license_text: bytes = b"The MIT License\n") -> Path:
    """Write a fake sdist; `files` maps ground-truth file name -> bytes (default: the SPECIAL set)."""
    if files is None:
        files = {}
        for source, base in SOURCES.items():
            lines = [(f"{source}_{i}", f"{sign * (0.5 + (i % 7) / 2):g}", f"{source} {sign:+d} sentence {i}")
                     for sign in (1, -1) for i in range(N_PER_STRATUM)]
            files[base] = ground_truth(lines + SPECIAL[source])
        files["movieReviewSnippets_GroundTruth.txt"] = ground_truth(MOVIE)
    inner = io.BytesIO()
    with tarfile.open(fileobj=inner, mode="w:gz") as tar:
        for name, data in files.items():
            add(tar, f"hutto_ICWSM_2014/{name}", data)
    with tarfile.open(path, "w:gz") as tar:
        add(tar, "vaderSentiment-3.3.2/LICENSE.txt", license_text)
        add(tar, "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz", inner.getvalue())
    return path


def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def read(folder: Path, split: str) -> list[dict[str, str]]:
    with open(folder / f"{split}.csv", encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def sdist(tmp_path):
    return make_sdist(tmp_path / "vaderSentiment-3.3.2.tar.gz")


@pytest.fixture
def built(sdist, tmp_path):
    out = tmp_path / "vader"
    assert main(["--out", str(out), "--sdist", str(sdist)]) == 0
    return {row["text"]: row for split in ("train", "validation", "test") for row in read(out, split)}


def test_threshold():
    assert [label_of(m) for m in (0.5, 0.49, 0.0, -0.49, -0.5, 3.9, -3.9)] == [
        "positive", None, None, None, "negative", "positive", "negative"]


def test_labels_dropped_rows_and_normalised_text(built):
    assert built["exactly plus half"]["label"] == "positive"
    assert built["exactly minus half"]["label"] == "negative"
    assert built["amazon -1 sentence 3"] == {"text": "amazon -1 sentence 3", "label": "negative", "source": "amazon"}
    assert not [t for t in built if t.startswith(("NEUTRAL", "MOVIE", "CONFLICT"))]
    assert built["great product."]["source"] == "amazon"  # three copies after whitespace collapse: the first kept
    assert built["fish & chips caf\u00e9"]["source"] == "amazon" and "i <3 it" in built
    assert len(built) == 3 * 2 * N_PER_STRATUM + 5  # the strata, two boundary rows, the duplicate once, two specials


def test_counts_in_readme_and_license(sdist, tmp_path, capsys):
    _, stats = build(tmp_path / "v", sdist)
    assert stats == {"read": 3 * 2 * N_PER_STRATUM + 14, "neutral_dropped": 5, "duplicates_dropped": 2,
                     "conflicting_dropped": 2}
    readme = (tmp_path / "v" / "README.md").read_text()
    assert "The MIT License" in readme and "neutral_dropped 5" in readme and "all          125" in readme
    assert "not PyPI's" in capsys.readouterr().out  # a fake sdist is built, but said to differ
    unlabeled = (tmp_path / "v" / "unlabeled.txt").read_text().splitlines()
    labelled = {r["text"] for split in ("train", "validation", "test") for r in csv.DictReader(open(tmp_path / "v" / f"{split}.csv"))}
    assert 0 < len(unlabeled) <= 5 and len(set(unlabeled)) == len(unlabeled) and not set(unlabeled) & labelled


def test_stratified_split_sizes(sdist, tmp_path):
    splits, _ = build(tmp_path / "v", sdist)
    for name, part in splits.items():
        strata = Counter((label, source) for text, label, source in part if "sentence" in text)
        per = {"train": N_PER_STRATUM - 4, "validation": 2, "test": 2}[name]
        assert len(strata) == 6 and all(abs(n - per) <= 1 for n in strata.values()), (name, strata)
        assert [r[0] for r in part] == [row["text"] for row in read(tmp_path / "v", name)]
    sizes = {name: len(part) for name, part in splits.items()}
    assert sizes == {"train": 101, "validation": 12, "test": 12}  # round(125 * 0.1) each
    assert not set(map(tuple, splits["train"])) & set(map(tuple, splits["test"]))


def test_deterministic_and_seeded(sdist, tmp_path):
    for out, seed in (("a", 0), ("b", 0), ("c", 1)):
        build(tmp_path / out, sdist, seed)
    for name in ("train.csv", "validation.csv", "test.csv", "README.md"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (tmp_path / "a" / "test.csv").read_bytes() != (tmp_path / "c" / "test.csv").read_bytes()


def test_cp1252_file_decodes(tmp_path):
    files = {base: ground_truth([(f"{i}", s, f"{src} {s} {i}") for i in range(5) for s in ("1", "-1")])
             for src, base in SOURCES.items()}
    files[SOURCES["nyt"]] += "\r\n9\t2.0\tit\u2019s fine".encode("cp1252")  # 0x92: not UTF-8
    splits, stats = build(tmp_path / "v", make_sdist(tmp_path / "s.tar.gz", files))
    assert stats["encoding_nyt"] == "cp1252"
    assert "it\u2019s fine" in {r[0] for part in splits.values() for r in part}


@pytest.mark.parametrize("damage, message", [
    (lambda p: p.write_bytes(p.read_bytes()[:300]), "not a readable sdist"),
    (lambda p: p.write_bytes(b"this is no tarball"), "not a readable sdist"),
    (lambda p: make_sdist(p, {SOURCES["amazon"]: b"1\t1\tx", SOURCES["nyt"]: b"1\t1\tx"}), "holds no tweets_GroundTruth.txt"),
    (lambda p: make_sdist(p, {b: b"1_1\t1.0\tok\r\n1_2\tlots\tnot a number" for b in SOURCES.values()}),
     "amazonReviewSnippets_GroundTruth.txt line 2: expected 'id<TAB>mean<TAB>text'"),
    (lambda p: p.unlink(), "no such file"),
])
def test_bad_sdist_names_the_file_and_writes_nothing(sdist, tmp_path, capsys, damage, message):
    damage(sdist)
    out = tmp_path / "vader"
    out.mkdir()
    (out / "train.csv").write_text("old\n")  # a previous build survives a failed one
    with pytest.raises(DataError, match=message) as err:
        build(out, sdist)
    assert str(sdist) in str(err.value)
    assert main(["--out", str(out), "--sdist", str(sdist)]) == 2
    assert message.split(":")[0] in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["vader", sdist.name] if sdist.exists() else ["vader"])
    assert [p.name for p in out.iterdir()] == ["train.csv"] and (out / "train.csv").read_text() == "old\n"


def test_failed_write_leaves_the_old_folder(sdist, tmp_path, monkeypatch):
    out = tmp_path / "vader"
    build(out, sdist)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real_write = build_vader.write_csv

    def write_then_fail(path, rows):
        real_write(path, rows)
        if path.name == "validation.csv":
            raise OSError("disk full")

    monkeypatch.setattr(build_vader, "write_csv", write_then_fail)
    with pytest.raises(OSError, match="disk full"):
        build(out, sdist, seed=1)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["vader", sdist.name])  # no temporary left


def test_download_checks_sha256(sdist, tmp_path, monkeypatch):
    """Without --sdist, pip downloads it (here: a stand-in copies the fake); a wrong hash stops the build."""
    def fake_pip(cmd, **kwargs):
        assert cmd[1:6] == ["-m", "pip", "download", "--no-deps", "--no-binary"] and "vaderSentiment==3.3.2" in cmd
        (Path(cmd[-1]) / sdist.name).write_bytes(sdist.read_bytes())
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(build_vader.subprocess, "run", fake_pip)
    with pytest.raises(DataError, match="vaderSentiment-3.3.2.tar.gz: sha256 .* is not the expected"):
        build(tmp_path / "v", None)
    assert not (tmp_path / "v").exists()
    monkeypatch.setattr(build_vader, "SDIST_SHA256", build_vader.sha256_of(sdist))
    splits, _ = build(tmp_path / "v", None)
    assert sum(map(len, splits.values())) == 125 and (tmp_path / "v" / "test.csv").exists()


def test_output_loads_as_files_task(sdist, tmp_path):
    from compress.data import FilesConfig, load_task

    build(tmp_path / "v", sdist)
    paths = {s: str(tmp_path / "v" / f"{s}.csv") for s in ("train", "validation", "test")}
    data = load_task(FilesConfig(**paths), seed=0)
    assert data.label_names == ["negative", "positive"]
    assert data.texts["test"] == [row["text"] for row in read(tmp_path / "v", "test")]
