"""Unlabelled texts: the transfer set distillation labels with the teacher's soft targets.

DistilBERT (Sanh et al. 2019) and TinyBERT (Jiao et al. 2020) distil on more text than the
labelled set: a student that has to match a strong teacher needs to see the teacher's outputs
on many inputs, and those need no labels. `read_unlabeled` reads such files:

- `.txt`: one text a line (UTF-8; blank lines skipped);
- `.csv` `.tsv` `.jsonl` `.json` `.parquet`: the texts of one column (`column`, default `text`),
  read like the `files` task (`compress/data/files.py`: `datasets`, offline, never unpickled;
  empty cells skipped).

Relative paths are resolved against the recipe's folder. A missing, unreadable or empty file,
or a missing column, is a `DataError` naming the file and the fix.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from compress.data.files import EXTENSIONS, _read_rows, _resolve
from compress.errors import DataError

TEXT_SUFFIX = ".txt"
SUFFIXES = (TEXT_SUFFIX, *EXTENSIONS)


def check_suffixes(paths: list[str], field: str) -> None:
    """A config validator's check: every file in `field` has an extension `read_unlabeled` can read (ValueError naming it)."""
    for path in paths:
        if Path(path).suffix.lower() not in SUFFIXES:
            raise ValueError(f"{field} file {path!r}: cannot tell its format from the extension; use one of {', '.join(SUFFIXES)}")


def unlabeled_path(path: str, base_dir: Path | None) -> Path:
    """The file `path` names: relative paths against `base_dir` (the recipe's folder); `~` expanded."""
    return _resolve(path, base_dir)


def read_unlabeled(path: str, column: str = "text", base_dir: Path | None = None) -> tuple[list[str], str]:
    """The non-empty texts of one unlabelled file, and the sha256 of its bytes."""
    file = unlabeled_path(path, base_dir)
    suffix = file.suffix.lower()
    if suffix not in SUFFIXES:
        raise DataError(f"unlabeled file {file}: cannot tell its format from the extension; "
                        f"use one of {', '.join(SUFFIXES)} (.txt: one text a line)")
    if suffix != TEXT_SUFFIX:
        rows, digest = _read_rows(file, EXTENSIONS[suffix], "unlabeled")
        if column not in rows.column_names:
            raise DataError(f"unlabeled file {file} has no column {column!r}; columns found: {list(rows.column_names)}; "
                            "set unlabeled_column: to the one with the texts")
        texts = [t for t in rows[column] if isinstance(t, str) and t.strip()]
    else:
        if not file.is_file():
            hint = "it is a folder; give a file" if file.is_dir() else "check the path (relative paths are resolved against the recipe's folder)"
            raise DataError(f"unlabeled file {file} not found: {hint}")
        raw = file.read_bytes()
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise DataError(f"unlabeled file {file} is not UTF-8 (byte 0x{raw[e.start]:02x} at offset {e.start}); "
                            "re-save it as UTF-8") from None
        texts = [line.strip() for line in text.splitlines() if line.strip()]
        digest = hashlib.sha256(raw).hexdigest()
    if not texts:
        raise DataError(f"unlabeled file {file} holds no text; give a file with one text a line (.txt) "
                        f"or a {column!r} column with texts")
    return texts, digest
