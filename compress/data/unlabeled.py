"""Unlabelled texts: the transfer set distillation labels with the teacher's soft targets.

DistilBERT (Sanh et al. 2019) and TinyBERT (Jiao et al. 2020) distil on more text than the
labelled set: a student that has to match a strong teacher needs to see the teacher's outputs
on many inputs, and those need no labels. `read_unlabeled` reads such files:

- `.txt`: one text a line (UTF-8; blank lines skipped);
- `.csv` `.tsv` `.jsonl` `.json` `.parquet`: the texts of one column (`column`, default `text`),
  read like the `files` task (`compress/data/files.py`: `datasets`, offline, never unpickled;
  empty, null and non-text cells dropped, and counted when the caller asks).

Texts are cut to `max_chars` (`compress/data/limits.py`, from the task's seq_len) when a step reads
them for training, so one huge line costs no more than the model sees.

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


def read_unlabeled(path: str, column: str = "text", base_dir: Path | None = None, column_field: str = "unlabeled_column",
                   max_chars: int | None = None, counts: dict | None = None) -> tuple[list[str], str]:
    """The non-empty texts of one unlabelled file, and the sha256 of its bytes.

    `column_field`: the config field that names the column (said in the error when it is missing);
    `max_chars`: texts are cut to this many characters (`compress/data/limits.py`); `counts`, when
    given, gets `dropped` (empty, null or non-text rows) and `cut` added to it."""
    file = unlabeled_path(path, base_dir)
    role = column_field.removesuffix("_column")  # the field that names the file: unlabeled, corpus, extra_texts
    suffix = file.suffix.lower()
    if suffix not in SUFFIXES:
        raise DataError(f"{role} file {file}: cannot tell its format from the extension; "
                        f"use one of {', '.join(SUFFIXES)} (.txt: one text a line)")
    if suffix != TEXT_SUFFIX:
        rows, digest = _read_rows(file, EXTENSIONS[suffix], role)
        if column not in rows.column_names:
            raise DataError(f"{role} file {file} has no column {column!r}; columns found: {list(rows.column_names)}; "
                            f"set {column_field}: to the one with the texts")
        values = rows[column]
        del rows
        texts = [t for t in values if isinstance(t, str) and t.strip()]
        dropped = len(values) - len(texts)
        del values
    else:
        if not file.is_file():
            hint = "it is a folder; give a file" if file.is_dir() else "check the path (relative paths are resolved against the recipe's folder)"
            raise DataError(f"{role} file {file} not found: {hint}")
        raw = file.read_bytes()
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise DataError(f"{role} file {file} is not UTF-8 (byte 0x{raw[e.start]:02x} at offset {e.start}); "
                            "re-save it as UTF-8") from None
        texts = [line.strip() for line in text.splitlines() if line.strip()]
        dropped = 0  # blank lines separate texts in a .txt file: not rows
        digest = hashlib.sha256(raw).hexdigest()
        del raw, text
    n_cut = 0
    if max_chars is not None:
        n_cut = sum(len(t) > max_chars for t in texts)
        texts = [t[:max_chars] for t in texts]
    if counts is not None:
        counts["dropped"] = counts.get("dropped", 0) + dropped
        counts["cut"] = counts.get("cut", 0) + n_cut
    if not texts:
        raise DataError(f"{role} file {file} holds no text; give a file with one text a line (.txt) "
                        f"or a {column!r} column with texts")
    return texts, digest
