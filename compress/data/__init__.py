"""Tasks and tokenizers: everything between a recipe's `task:` block and model-ready tensors.

    data = load_task(cfg, seed=recipe.seed, base_dir=recipe_dir)     # TaskData
    tok = train_tokenizer(data.texts["train"], cfg.tokenizer, cfg.seq_len)
    batch = encode(tok, data.texts["validation"], cfg.seq_len)       # input_ids (N, seq_len)
    splits = encode_task(data, tok, cfg.seq_len)   # all splits + labels; fills stats["n_truncated"]

Task kinds (one file each, registered in `TASKS`): `listops` (Long Range Arena ListOps),
`lookup` (key-value associative recall, optionally a long needle-in-a-haystack form),
`wordnet` (WordNet 3.0 definitions -> lexicographer file, shipped with the package), `files`
(your CSV/TSV/JSONL/JSON/Parquet files, e.g. those `build_vader` and `build_spam` write) and
`embedding` (texts a sentence-embedding teacher's students learn to embed as it does, with a
WordNet reverse-dictionary retrieval test: `compress/data/embedding.py`).
`TaskConfig` is the discriminated union of their configs, keyed by `kind`, for the recipe schema.
Tokenizer kinds: `wordpiece`, `bpe`, `char` (symbols) and `byte` (UTF-8 bytes).
"""

from typing import Annotated, Union

from pydantic import Field

from compress.data.task import (
    SPLITS, TASKS, TaskConfigBase, TaskData, data_changes, data_notes, encode_task, load_task, register_task,
)
from compress.data.tokenizer import SPECIAL_TOKENS, TokenizerConfig, encode, train_tokenizer

# importing a task module registers it
from compress.data.listops import ListOpsConfig, evaluate_listops  # noqa: E402
from compress.data.lookup import LookupConfig  # noqa: E402
from compress.data.wordnet import WordNetConfig  # noqa: E402
from compress.data.files import FilesConfig  # noqa: E402
from compress.data.embedding import EmbeddingTaskConfig  # noqa: E402

# every registered task config, told apart by its `kind` field
TaskConfig = Annotated[Union[tuple(TASKS.values())], Field(discriminator="kind")]  # type: ignore[valid-type]

__all__ = [
    "SPLITS",
    "SPECIAL_TOKENS",
    "TASKS",
    "EmbeddingTaskConfig",
    "FilesConfig",
    "ListOpsConfig",
    "LookupConfig",
    "TaskConfig",
    "TaskConfigBase",
    "TaskData",
    "TokenizerConfig",
    "WordNetConfig",
    "data_changes",
    "data_notes",
    "encode",
    "encode_task",
    "evaluate_listops",
    "load_task",
    "register_task",
    "train_tokenizer",
]
