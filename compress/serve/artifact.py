"""An exported ONNX folder, loaded to classify texts: ONNX Runtime session, fast tokenizer, labels.

The folder is what the `export` step writes (`compress/steps/export.py`): `model.onnx` (inputs
`input_ids`, `attention_mask`, output `logits`), `config.json` (labels in `id2label`, positions in
`max_len` or `max_position_embeddings`) and the tokenizer's files. Only JSON is read from the
config, so no model code runs. Texts are served as `eval.traffic.Server` serves them (the
real-traffic timer, so what is timed is what is served): the stage's `tokenizer.json` through the
`tokenizers` library, truncation at `seq_len`, each batch padded to its longest text, and files in
length-sorted batches with the input order restored.

`seq_len`, the most tokens a text is read to, is the smallest of the model's positions and the
tokenizer's `model_max_length` (what the run trained and measured at, when the tokenizer says so).

Every way a copied, edited or interrupted folder can be broken (no folder, no or truncated
`model.onnx`, a graph with other inputs, no or broken `config.json`, no or broken tokenizer) is an
`ArtifactError` naming the file and the fix.
"""

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from compress.data.limits import max_text_chars
from compress.errors import ArtifactError
from eval.bench import INPUT_NAMES, ONNX_FILE, OUTPUT_NAME, ort_session
from eval.errors import SlimformerError
from eval.traffic import TOKENIZER_FILE, Server, load_tokenizer

CONFIG_FILE = "config.json"
DEFAULT_SEQ_LEN = 512  # a config that names no positions: BERT's
EXPORT_AGAIN = "export the stage again (`slimformer run` on its recipe re-runs the export step)"
A_STAGE = "give a stage's onnx folder, e.g. runs/quickstart/stages/teacher/onnx"


@dataclass
class Artifact:
    """A loaded ONNX folder: `probabilities(texts)` is all a caller needs."""

    folder: Path
    server: Server  # session + tokenizer, truncation at seq_len, padding per batch
    labels: list[str]  # class id -> label
    seq_len: int  # tokens read per text, special tokens included

    @property
    def max_text_chars(self) -> int:
        """The longest text read (characters): `compress/data/limits.py`, for this artifact's seq_len."""
        return max_text_chars(self.seq_len)

    def probabilities(self, texts: list[str], batch_size: int = 32, call_tokens: float | None = None) -> np.ndarray:
        """Class probabilities (N, C) in the order of `texts`, run in length-sorted batches of `batch_size`; with
        `call_tokens` (what one model call costs beyond its tokens, `call_overhead_tokens`), in the length groups
        that compute the fewest padded tokens (`length_groups`): what the server does with a batch of unrelated texts."""
        if call_tokens is None:
            logits = self.server.predict_sorted(texts, batch_size)  # (N, C)
        else:
            logits = self.server.predict_grouped(texts, lambda lengths: length_groups(lengths, call_tokens, batch_size))
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        return probs / probs.sum(-1, keepdims=True)

    def call_overhead_tokens(self, repeats: int = 15) -> float:
        """What one model call costs beyond its tokens, in tokens: one text of 4 and of `min(seq_len, 64)` tokens
        timed (medians of `repeats`), cost = a + b x tokens, returns a / b. On a busy machine the fit can come out
        without slope: then seq_len, which keeps batches whole."""
        lo, hi = min(4, self.seq_len), min(self.seq_len, 64)
        if hi <= lo:
            return float(self.seq_len)

        def median_s(length: int) -> float:
            ids = [[self.server.pad_id] * length]  # the ids do not change the time
            for _ in range(3):
                self.server.run(ids)
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                self.server.run(ids)
                times.append(time.perf_counter() - start)
            return float(np.median(times))

        t_lo, t_hi = median_s(lo), median_s(hi)
        slope = (t_hi - t_lo) / (hi - lo)  # seconds per token
        if slope <= 0:
            return float(self.seq_len)
        return float(min(max((t_lo - slope * lo) / slope, 0.0), self.seq_len))


def length_groups(lengths: list[int], call_tokens: float, max_size: int) -> list[range]:
    """Cut `lengths` (sorted, shortest first) into consecutive groups of at most `max_size`, one padded model call
    each, computing the least: sum over groups of (`call_tokens` + size x its longest). Dynamic programme over the
    end of the last group, O(N x max_size). A batch of 16 unrelated sentences padded to its longest computes about
    twice the tokens its texts hold (VADER: median 22 tokens, longest of 16 about 45)."""
    n = len(lengths)
    best = [0.0] + [float("inf")] * n  # best[j]: least cost of lengths[:j]
    start_of = [0] * (n + 1)  # where the last group of the best cut of lengths[:j] starts
    for end in range(1, n + 1):
        for start in range(max(0, end - max_size), end):
            cost = best[start] + call_tokens + (end - start) * lengths[end - 1]
            if cost < best[end]:
                best[end], start_of[end] = cost, start
    groups, end = [], n
    while end > 0:
        groups.append(range(start_of[end], end))
        end = start_of[end]
    return groups[::-1]


def load_artifact(folder: str | Path, threads: int) -> Artifact:
    """Load an exported ONNX folder for serving with `threads` intra-op threads; ArtifactError when it is broken."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ArtifactError(f"{folder} is not a folder; {A_STAGE}")
    if not (folder / ONNX_FILE).is_file():
        raise ArtifactError(f"{folder} holds no {ONNX_FILE}; {A_STAGE}")
    config = read_config(folder)
    if not (folder / TOKENIZER_FILE).is_file():
        raise ArtifactError(f"{folder} holds no tokenizer ({TOKENIZER_FILE}); copy the whole onnx folder, or {EXPORT_AGAIN}")
    seq_len = min(positions(config, folder), tokenizer_max_length(folder))
    try:
        tokenizer = load_tokenizer(folder, seq_len)
    except SlimformerError:
        raise
    except Exception as e:  # tokenizers raises a plain Exception for a file it cannot parse
        raise ArtifactError(f"{folder / TOKENIZER_FILE} cannot be read ({first_line(e)}); "
                            f"copy it again, or {EXPORT_AGAIN}") from None
    try:
        session = ort_session(folder / ONNX_FILE, threads)
    except SlimformerError:
        raise
    except Exception as e:  # onnxruntime's InvalidProtobuf / Fail: a truncated or corrupt file
        raise ArtifactError(f"{folder / ONNX_FILE} cannot be loaded by ONNX Runtime ({first_line(e)}): the file is truncated "
                            f"or corrupt; copy it again, or {EXPORT_AGAIN}") from None
    check_signature(session, folder)
    return Artifact(folder, Server(session, tokenizer[0], tokenizer[1], seq_len), labels_of(config, session, folder), seq_len)


def read_config(folder: Path) -> dict[str, Any]:
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise ArtifactError(f"{folder} holds no {CONFIG_FILE} (labels, positions); {EXPORT_AGAIN}")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArtifactError(f"{path} is not valid JSON ({first_line(e)}); copy it again, or {EXPORT_AGAIN}") from None
    if not isinstance(config, dict):
        raise ArtifactError(f"{path} holds a JSON {type(config).__name__}, not an object; copy it again, or {EXPORT_AGAIN}")
    return config


def positions(config: dict[str, Any], folder: Path) -> int:
    """The model's positions: slimformer's `max_len`, else transformers' `max_position_embeddings`."""
    value = config.get("max_len", config.get("max_position_embeddings", DEFAULT_SEQ_LEN))
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ArtifactError(f"{folder / CONFIG_FILE}: max_len must be a positive integer, got {value!r}; "
                            f"fix it (the positions the model was exported with), or {EXPORT_AGAIN}")
    return value


def tokenizer_max_length(folder: Path) -> int:
    """`model_max_length` of tokenizer_config.json when it names a real length (transformers writes ~1e30 for none)."""
    path = folder / "tokenizer_config.json"
    try:
        value = json.loads(path.read_text(encoding="utf-8")).get("model_max_length") if path.is_file() else None
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError) as e:
        raise ArtifactError(f"{path} is not a JSON object ({first_line(e)}); copy it again, or {EXPORT_AGAIN}") from None
    return value if isinstance(value, int) and 0 < value < 1_000_000 else 1_000_000


def labels_of(config: dict[str, Any], session: Any, folder: Path) -> list[str]:
    """Class id -> label from `id2label`; without one, the ids themselves ("0", "1", ...)."""
    n_classes = session.get_outputs()[0].shape[-1]
    id2label = config.get("id2label")
    if id2label is None and isinstance(n_classes, int):
        return [str(i) for i in range(n_classes)]
    try:
        by_id = {int(k): str(v) for k, v in id2label.items()}
    except (AttributeError, TypeError, ValueError):
        raise ArtifactError(f"{folder / CONFIG_FILE}: id2label must map class ids to labels, e.g. {{\"0\": \"negative\"}}; "
                            f"got {str(id2label)[:80]}; fix it, or {EXPORT_AGAIN}") from None
    if sorted(by_id) != list(range(len(by_id))) or (isinstance(n_classes, int) and len(by_id) != n_classes):
        raise ArtifactError(f"{folder / CONFIG_FILE}: id2label has ids {sorted(by_id)[:10]} but {ONNX_FILE} gives "
                            f"{n_classes} classes; give one label per class id 0..{n_classes}-1, or {EXPORT_AGAIN}")
    return [by_id[i] for i in range(len(by_id))]


def check_signature(session: Any, folder: Path) -> None:
    inputs = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]
    if sorted(inputs) != sorted(INPUT_NAMES) or OUTPUT_NAME not in outputs:
        raise ArtifactError(f"{folder / ONNX_FILE} takes {inputs} and gives {outputs}; a classifier here takes "
                            f"{list(INPUT_NAMES)} and gives [{OUTPUT_NAME!r}]: {EXPORT_AGAIN}")


def first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:200]


def prediction(row: np.ndarray, labels: list[str], with_probabilities: bool = False) -> dict:
    """One text's answer from its probabilities (C,): the label, its score, and on request every label's probability."""
    best = int(row.argmax())
    out: dict[str, Any] = {"label": labels[best], "score": round(float(row[best]), 6)}
    if with_probabilities:
        out["probabilities"] = {label: round(p, 6) for label, p in zip(labels, row.tolist(), strict=True)}
    return out
