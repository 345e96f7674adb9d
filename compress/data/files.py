"""User data: text classification examples from CSV, TSV, JSON Lines, JSON or Parquet files.

Files are read with Hugging Face `datasets` (Lhoest et al. 2021, "Datasets: A Community
Library for Natural Language Processing"), `load_dataset("csv" | "json" | "parquet",
data_files=...)`, offline, in memory, with its cache in a temporary folder that is removed
afterwards (nothing is written under ~/.cache). Files are parsed, never unpickled.

- One example per row: the text in `text_column` (optionally a second text in
  `text_pair_column`: a pair, carried as `text [SEP] pair` and encoded by the tokenizer's own pair
  template, `compress/data/tokenizer.py: encode`; an imported BERT-family teacher then reads its
  second text with segment embeddings of type 1) and its class in `label_column`.
- Labels may be strings or integers. `label_names` are the distinct labels of the train file,
  sorted (numerically when all are integers, so labels 0..K-1 keep their ids); validation and
  test labels are mapped by name, and one the train file lacks is an error. A column that writes
  labels two ways (0/1 in some rows, negative/positive in others) is an error naming rows of
  each, not four classes: `label_map:` ({0: negative, 1: positive}) says what the labels mean.
- Without a validation (or test) file, that split is carved out of the train file by the data
  seed, stratified by class (`validation_fraction`, `test_fraction`).
- Rows whose text is empty, missing (null) or not text (a number, a list) are dropped, counted
  by reason in `stats["dropped"]` ({split: {"empty": n, "null": n, "not_text": n}}), and said in
  the run's log, `validate`'s answer and the report's protocol (blank lines are common in exported
  spreadsheets and carry no signal); a column with no text at all is an error (the wrong
  `text_column`), and so is a row with a missing label, since guessing a class would corrupt the
  evaluation.
- Texts are cut to `max_text_chars(seq_len)` characters as they are read (`compress/data/limits.py`:
  far more than `seq_len` tokens can hold), so one huge cell costs no more than the model sees;
  `stats["cut"]` counts them per split.
- Relative paths are resolved against `base_dir` (the recipe file's folder) given to
  `load_task`; absolute paths and `~` are used as they are.

Every problem a user can cause (missing file, non-UTF-8 text, missing column, empty split,
one class only, unknown label) raises `DataError` naming the file and what to do.
"""

from __future__ import annotations

import hashlib
import math
import re
import tempfile
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from compress.data.limits import max_text_chars
from compress.data.split import check_fractions, stratified_split
from compress.data.task import SPLITS, TaskConfigBase, TaskData, make_task_data, register_task
from compress.data.tokenizer import PAIR_SEPARATOR
from compress.errors import DataError

Format = Literal["csv", "tsv", "jsonl", "json", "parquet"]
EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "json", ".parquet": "parquet"}
# our format -> (datasets builder, builder arguments)
_BUILDERS: dict[str, tuple[str, dict[str, Any]]] = {
    "csv": ("csv", {"encoding": "utf-8-sig"}),
    "tsv": ("csv", {"encoding": "utf-8-sig", "delimiter": "\t"}),
    "jsonl": ("json", {}),
    "json": ("json", {}),
    "parquet": ("parquet", {}),
}


@register_task("files")
class FilesConfig(TaskConfigBase):
    """Labelled texts from your own files."""

    kind: Literal["files"] = "files"
    # path of the training file (relative paths: against the recipe's folder)
    train: str
    # validation / test files; None = carve that split out of train
    validation: str | None = None
    test: str | None = None
    # file format; None = from the extension (.csv .tsv .jsonl .json .parquet)
    format: Format | None = None
    # column holding the text, and optionally a second text of a pair
    text_column: str = "text"
    text_pair_column: str | None = None
    # column holding the class (string or integer)
    label_column: str = "label"
    # shares of train carved out when validation / test files are not given
    validation_fraction: float = Field(0.1, gt=0.0, lt=1.0)
    test_fraction: float = Field(0.1, gt=0.0, lt=1.0)
    # labels as written -> the class they mean, applied to every file before anything else, e.g. {0: negative,
    # 1: positive} when some rows say 0/1 and others negative/positive (a column mixing the two ways is an error)
    label_map: dict[str, str] = Field(default_factory=dict)

    @field_validator("label_map", mode="before")
    @classmethod
    def labels_as_text(cls, value: Any) -> Any:
        """YAML reads `0: negative` with an integer key: every key and value is the label's text."""
        if isinstance(value, dict):
            return {_label_name(k)[0] if _label_name(k)[0] else str(k): str(v).strip() for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _check(self) -> "FilesConfig":
        check_fractions(
            self.validation_fraction if self.validation is None else None,
            self.test_fraction if self.test is None else None,
        )
        if self.format is None:
            for role in SPLITS:
                path = getattr(self, role)
                if path is not None and Path(path).suffix.lower() not in EXTENSIONS:
                    raise ValueError(
                        f"cannot tell the format of {role} file {path!r} from its extension; "
                        f"use one of {', '.join(EXTENSIONS)} or set format: to one of "
                        f"{', '.join(_BUILDERS)}"
                    )
        if self.text_pair_column is not None and self.text_pair_column == self.text_column:
            raise ValueError("text_pair_column equals text_column; name a different column or drop it")
        return self

    def load(self, seed: int, base_dir: Path | None) -> TaskData:
        files: dict[str, Path] = {}
        raw_texts: dict[str, list[str]] = {}
        raw_labels: dict[str, list[str]] = {}
        all_int: dict[str, bool] = {}
        file_hashes: dict[str, str] = {}
        dropped: dict[str, dict[str, int]] = {}
        cut: dict[str, int] = {}
        for role in SPLITS:
            if getattr(self, role) is None:
                continue
            path = _resolve(getattr(self, role), base_dir)
            files[role] = path
            fmt = self.format or EXTENSIONS[path.suffix.lower()]
            rows, file_hashes[role] = _read_rows(path, fmt, role)
            raw_texts[role], raw_labels[role], all_int[role], dropped[role], cut[role] = self._examples(rows, path, role)
            del rows  # the file's own copy of the texts (a huge cell among them) goes before the next file is read

        train_file = files["train"]
        names = sorted(set(raw_labels["train"]), key=int if all_int["train"] else str)
        if len(names) < 2:
            raise DataError(
                f"train file {train_file} has only one class ({names[0]!r}) in column "
                f"{self.label_column!r}; a classifier needs at least two"
            )
        label_id = {name: i for i, name in enumerate(names)}
        texts: dict[str, list[str]] = {}
        labels: dict[str, list[int]] = {}
        for role in raw_texts:
            unknown = sorted(set(raw_labels[role]) - set(label_id))
            if unknown:
                raise DataError(
                    f"{role} file {files[role]} has labels the train file {train_file} lacks: "
                    f"{unknown[:10]}{' ...' if len(unknown) > 10 else ''}; fix those labels or add "
                    f"training examples of them (train labels: {names[:20]})"
                )
            texts[role] = raw_texts[role]
            labels[role] = [label_id[y] for y in raw_labels[role]]

        fractions = {"validation": self.validation_fraction, "test": self.test_fraction}
        carve = {role: frac for role, frac in fractions.items() if role not in files}
        if carve:
            parts = stratified_split(labels["train"], carve, seed)
            pool_texts, pool_labels = texts["train"], labels["train"]
            for role, idx in parts.items():
                if not idx:
                    raise DataError(
                        f"train file {train_file} has too few examples ({len(pool_labels)}) to carve a "
                        f"{role} split of {carve[role]:g}; give a {role} file or raise {role}_fraction"
                    )
                texts[role] = [pool_texts[i] for i in idx]
                labels[role] = [pool_labels[i] for i in idx]

        return make_task_data(
            self,
            seed,
            name=train_file.stem,
            texts=texts,
            labels=labels,
            label_names=names,
            description=(
                f"files: {train_file.name}"
                + "".join(f", {r} {files[r].name}" for r in ("validation", "test") if r in files)
                + (f" (carved {', '.join(carve)} by seed {seed})" if carve else "")
                + f", columns {self.text_column!r}->{self.label_column!r}, {len(names)} classes"
            ),
            extra_stats={"dropped": {r: d for r, d in dropped.items() if d}, "cut": {r: n for r, n in cut.items() if n},
                         "max_text_chars": max_text_chars(self.seq_len), "carved": sorted(carve)},
            file_hashes=file_hashes,
        )

    def _examples(self, rows: Any, path: Path, role: str) -> tuple[list[str], list[str], bool, dict[str, int], int]:
        """Texts and label names of one file, whether all labels are integers, rows dropped (by why), texts cut."""
        columns = list(rows.column_names)
        wanted = {self.text_column: "text_column", self.label_column: "label_column"}
        if self.text_pair_column:
            wanted[self.text_pair_column] = "text_pair_column"
        for col, field in wanted.items():
            if col not in columns:
                raise DataError(
                    f"{role} file {path} has no column {col!r}; columns found: {columns}; "
                    f"set {field}: to the right one"
                )
        if len(rows) == 0:
            raise DataError(f"{role} file {path} has no rows; give a file with examples")
        limit = max_text_chars(self.seq_len)
        text_col = rows[self.text_column]
        pair_col = rows[self.text_pair_column] if self.text_pair_column else [None] * len(text_col)
        label_col = rows[self.label_column]
        texts: list[str] = []
        labels: list[str] = []
        all_int = True
        missing_labels: list[int] = []
        kinds: dict[bool, list[tuple[int, str]]] = {True: [], False: []}  # integer-like or not -> (row, label)
        dropped = {"empty": 0, "null": 0, "not_text": 0}
        non_text: list[tuple[int, Any]] = []
        n_cut = 0
        for i, (text, pair, label) in enumerate(zip(text_col, pair_col, label_col)):
            if text is None:
                dropped["null"] += 1
                continue
            if not isinstance(text, str):
                dropped["not_text"] += 1
                non_text.append((i + 1, text))
                continue
            if not text.strip():
                dropped["empty"] += 1
                continue
            if self.text_pair_column:
                if pair is not None and not isinstance(pair, str):
                    raise DataError(
                        f"{role} file {path}, column {self.text_pair_column!r} holds "
                        f"{type(pair).__name__} values, not text; set text_pair_column: to a text column"
                    )
                text = f"{text[:limit]}{PAIR_SEPARATOR}{(pair or '')[:limit]}"
            if len(text) > limit:  # characters far past what seq_len tokens can hold (compress/data/limits.py)
                text, n_cut = text[:limit], n_cut + 1
            name, is_int = _label_name(label)
            if name is None:
                missing_labels.append(i + 1)
                continue
            if name == "":
                raise DataError(
                    f"{role} file {path}, column {self.label_column!r}, row {i + 1}: label {label!r} is "
                    "not a class; classes are strings or integers (not fractions or lists)"
                )
            if name in self.label_map:
                name = self.label_map[name]
                is_int = INTEGER.fullmatch(name) is not None
            kinds[INTEGER.fullmatch(name) is not None].append((i + 1, name))
            all_int &= is_int
            texts.append(text)
            labels.append(name)
        if missing_labels:
            raise DataError(
                f"{role} file {path}: {len(missing_labels)} row(s) have no {self.label_column!r} value "
                f"(rows {missing_labels[:10]}, counting data rows from 1); fill in or remove them"
            )
        if kinds[True] and kinds[False]:
            numbers, words = _examples_of(kinds[True]), _examples_of(kinds[False])
            ints = sorted({n for _, n in kinds[True]}, key=int)
            names = sorted({n for _, n in kinds[False]})
            pairs = zip(ints, names if len(names) == len(ints) else [names[0]] * len(ints))
            raise DataError(
                f"{role} file {path}, column {self.label_column!r} writes labels two ways: integers ({numbers}) and "
                f"words ({words}), which would be {len(ints) + len(names)} classes; write every label one way, or say "
                "what the numbers mean with the task's label_map:, e.g. label_map: "
                f"{{{', '.join(f'{i}: {n}' for i, n in pairs)}}} (check which word each number stands for)"
            )
        if not texts:
            if non_text:
                row, value = non_text[0]
                raise DataError(
                    f"{role} file {path}, column {self.text_column!r} holds {type(value).__name__} values "
                    f"(row {row}: {value!r}), not text; set text_column: to the column with the text"
                )
            raise DataError(
                f"{role} file {path}: every row has an empty {self.text_column!r}; "
                "check text_column or the file"
            )
        return texts, labels, all_int, {k: n for k, n in dropped.items() if n}, n_cut


INTEGER = re.compile(r"-?\d+")


def _examples_of(rows: list[tuple[int, str]]) -> str:
    """'rows 1, 3: 0, 1' for the first rows of each distinct label (at most three)."""
    first: dict[str, int] = {}
    for row, name in rows:
        first.setdefault(name, row)
    shown = list(first.items())[:3]
    return f"rows {', '.join(str(r) for _, r in shown)}: {', '.join(repr(n) for n, _ in shown)}"


def _label_name(label: Any) -> tuple[str | None, bool]:
    """(name, is an integer) of one label; (None, _) when missing, ("", _) when unusable."""
    if label is None or (isinstance(label, float) and math.isnan(label)):
        return None, False
    if isinstance(label, bool):
        return str(label), False
    if isinstance(label, int):
        return str(label), True
    if isinstance(label, float):
        return (str(int(label)), True) if label.is_integer() else ("", False)
    if isinstance(label, str):
        return (label.strip(), False) if label.strip() else (None, False)  # "pos " is "pos"
    return "", False


def _resolve(path: str, base_dir: Path | None) -> Path:
    p = Path(path).expanduser()
    if not p.is_absolute():
        p = (base_dir if base_dir is not None else Path.cwd()) / p
    return p


def _read_rows(path: Path, fmt: str, role: str) -> tuple[Any, str]:
    """The file as a `datasets.Dataset`, and the sha256 of its bytes."""
    if not path.is_file():
        hint = "it is a folder; give a file" if path.is_dir() else (
            "check the path (relative paths are resolved against the recipe's folder)"
        )
        raise DataError(f"{role} file {path} not found: {hint}")
    raw = path.read_bytes()
    if fmt != "parquet":
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataError(
                f"{role} file {path} is not UTF-8 (byte 0x{raw[e.start]:02x} at offset {e.start}); "
                "re-save it as UTF-8, e.g. `iconv -f latin1 -t utf-8 in.csv > out.csv`"
            ) from None
    if not raw.strip():
        raise DataError(f"{role} file {path} is empty; give a file with a header and examples")
    import datasets  # slow to import; only this task needs it

    builder, kwargs = _BUILDERS[fmt]
    bars_were_off = datasets.utils.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        with tempfile.TemporaryDirectory(prefix="slimformer-datasets-") as cache_dir:
            ds = datasets.load_dataset(
                builder,
                data_files={"data": str(path)},
                split="data",
                cache_dir=cache_dir,
                keep_in_memory=True,
                **kwargs,
            )
    except Exception as e:  # parsing errors come as many types (pandas, pyarrow, datasets)
        if "corresponds to no data" in str(e):  # datasets' words for a file with a header only
            raise DataError(f"{role} file {path} has no rows; give a file with examples") from e
        raise DataError(
            f"cannot read {role} file {path} as {fmt}: {type(e).__name__}: {str(e)[:300]}; "
            f"check that it is valid {fmt}, or set format:"
        ) from e
    finally:
        if not bars_were_off:
            datasets.enable_progress_bars()
    return ds, hashlib.sha256(raw).hexdigest()
