"""`slimformer embed ONNX_DIR --input FILE --output FILE`: the sentence embeddings of a file of texts, for an index.

The artifact is a sentence-embedding stage's ONNX folder (its output `sentence_embedding`: pooled,
projected to the teacher's width and normalised as the teacher was; compress/onnx/export.py). Texts
come from a .txt (one a line), .csv, .tsv, .jsonl, .json or .parquet file (`--text-column`), read
by compress/data/unlabeled.py (empty rows dropped and counted), tokenized by the folder's own
tokenizer at its length, embedded on length-sorted batches (eval/embedding.py: embed_onnx) and
written in input order: `.npy` (float32, (N, D), loads with `numpy.load` without pickle, what a
vector index bulk-loads) or `.jsonl` (one `{"text", "embedding"}` a line). The output appears whole
or not at all (eval/io.py).
"""

import io
import json
from pathlib import Path

import numpy as np

from compress.errors import DataError

SUFFIXES = (".npy", ".jsonl")


def embed_file(folder: str | Path, source: str | Path, output: str | Path, text_column: str = "text", batch_size: int = 32,
               threads: int = 1) -> int:
    """Write the embeddings of every text of `source` to `output`; return how many. DataError on a bad file or folder."""
    from transformers import AutoTokenizer

    from compress.data import encode
    from compress.data.limits import max_text_chars
    from compress.data.unlabeled import read_unlabeled
    from compress.serve.artifact import tokenizer_max_length
    from eval.bench import EMBEDDING_OUTPUT, ONNX_FILE, ort_session, output_name
    from eval.embedding import embed_onnx
    from eval.io import atomic_write_bytes

    folder, output = Path(folder), Path(output)
    if output.suffix.lower() not in SUFFIXES:
        raise DataError(f"--output {output}: write embeddings to {' or '.join(SUFFIXES)} (float32 array, or a JSON line a text)")
    if not (folder / ONNX_FILE).is_file():
        raise DataError(f"{folder} has no {ONNX_FILE}; give a stage's ONNX folder (runs/<run>/stages/<stage>/onnx)")
    if output_name(ort_session(folder / ONNX_FILE, threads, "CPUExecutionProvider")) != EMBEDDING_OUTPUT:
        raise DataError(f"{folder / ONNX_FILE} is a classifier (its output is not {EMBEDDING_OUTPUT!r}); use "
                        "`slimformer predict` for it, or give the ONNX folder of a sentence-embedding stage")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    positions = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("max_len", 512)
    seq_len = min(tokenizer_max_length(folder), positions)
    texts, _ = read_unlabeled(str(source), text_column, Path.cwd(), column_field="text_column", max_chars=max_text_chars(seq_len))
    enc = encode(tokenizer, texts, seq_len)
    vectors = embed_onnx(folder / ONNX_FILE, enc["input_ids"].numpy(), enc["attention_mask"].numpy(), batch_size, threads)
    if output.suffix.lower() == ".npy":
        buffer = io.BytesIO()
        np.save(buffer, vectors.astype(np.float32), allow_pickle=False)
        atomic_write_bytes(output, buffer.getvalue())
    else:
        lines = (json.dumps({"text": t, "embedding": [round(float(x), 7) for x in v]}, ensure_ascii=False)
                 for t, v in zip(texts, vectors, strict=True))
        atomic_write_bytes(output, ("\n".join(lines) + "\n").encode("utf-8"))
    return len(texts)


__all__ = ["embed_file"]
