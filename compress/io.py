"""Atomic writes (`eval/io.py`) under the rule of several processes: only the main one writes.

In a run of several processes (compress/distributed.py) every process runs the recipe, but
only the main one writes: the others' writes are skipped (an `atomic_dir` of theirs is a
throw-away folder), so every file has one writer.
"""

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from compress.distributed import is_main_process
from eval import io as files


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    if is_main_process():
        files.atomic_write_bytes(path, data)


def atomic_write_text(path: str | Path, text: str) -> None:
    if is_main_process():
        files.atomic_write_text(path, text)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    if is_main_process():
        files.atomic_write_json(path, obj)


def append_jsonl(path: str | Path, record: dict) -> None:
    if is_main_process():
        files.append_jsonl(path, record)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """`eval.io.atomic_dir` in the main process; elsewhere a temporary folder that is thrown away."""
    if is_main_process():
        with files.atomic_dir(path) as tmp:
            yield tmp
        return
    with tempfile.TemporaryDirectory(prefix="slimformer-") as tmp:
        yield Path(tmp)
