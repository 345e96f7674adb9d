"""Real-traffic timing: each stage's ONNX artifact served the way a user serves it, on the task's real test texts.

The fixed-shape timings (`eval/bench.py`) time one forward pass on random token ids padded to
the run's `seq_len`: the right measure for the roofline and the scaling curves, but not what a
request costs. A user pays for tokenization and, with dynamic shapes, not for padding; most
sentences are far shorter than `seq_len` (FastFormers, Kim & Awadalla 2020, got a large share of
its CPU speed-up from dynamic sequence lengths alone). Here, with the stage's own fast tokenizer
(`tokenizer.json` of its ONNX folder, loaded with the `tokenizers` library; truncation at the
run's `seq_len` and padding set here, whatever the file says) and an ONNX Runtime session
(`eval.bench.ort_session`: the protocol's threads):

- single requests (batch 1): each text on its own, tokenize + run, timed per request: p50/p99.
  Each is followed by the same text padded to `seq_len` (`padding: max_length`), tokenization
  included too: the like-for-like answer to what dynamic lengths save per request.
- sorted batches: every text tokenized in one batch call, ordered by token count, cut into
  batches of `batch_size` each padded to its longest text, run, and the logits put back in the
  input order: texts per second over the whole pass (a file of texts, as `predict` serves it).

Several stages are timed in interleaved rounds, like `eval/interleave.py`: in each of `ROUNDS`
rounds every stage (order rotated) opens a fresh session, warms up, serves its share of the
single requests (each text is served once per mode over the rounds) and one full sorted pass;
the session closes before the next stage's opens. The texts come from the caller (the `bench`
step: the first `bench.traffic_texts` test texts in split order, also written to the run folder
as `TEXTS_FILE`, which `slimformer bench RUN` reads back). This module knows nothing of runs.
"""

import gc
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from eval.bench import latency_stats, output_name
from eval.errors import SlimformerError

TEXTS_FILE = "traffic_texts.jsonl"  # in the run folder: one {"text": ...} per line, the texts the timer serves
ROUNDS = 3  # rounds the requests and sorted passes are spread over
TOKENIZER_FILE = "tokenizer.json"
PAD_TOKENS = ("[PAD]", "<pad>")  # tried when the tokenizer's files name no pad token


@dataclass
class Server:
    """A stage's artifact as a user serves it: its fast tokenizer (truncation at `seq_len`, no padding of its
    own) and an ONNX Runtime session (anything with `run([output], feeds) -> [logits]`)."""

    session: Any
    tokenizer: Any  # tokenizers.Tokenizer: encode(text).ids, encode_batch(texts)
    pad_id: int
    seq_len: int

    def run(self, ids: list[list[int]], length: int | None = None) -> np.ndarray:
        """Logits (B, C) of token-id lists, padded on the right to `length` (default: the longest of them)."""
        width = length or max(map(len, ids))
        input_ids = np.full((len(ids), width), self.pad_id, dtype=np.int64)  # (B, T)
        mask = np.zeros((len(ids), width), dtype=np.int64)  # (B, T)
        for row, seq in enumerate(ids):
            input_ids[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1
        return self.session.run([output_name(self.session)], {"input_ids": input_ids, "attention_mask": mask})[0]

    def request(self, text: str, padded: bool = False) -> np.ndarray:
        """One text as a single request: tokenize and run, at its own length or padded to `seq_len`. Logits (1, C)."""
        return self.run([self.tokenizer.encode(text).ids], self.seq_len if padded else None)

    def predict_sorted(self, texts: list[str], batch_size: int) -> np.ndarray:
        """Logits (N, C) in the order of `texts`: tokenized in one call, run in length-sorted batches padded to their longest."""
        return self.predict_grouped(texts, lambda lengths: [range(start, min(start + batch_size, len(lengths)))
                                                            for start in range(0, len(lengths), batch_size)])

    def predict_grouped(self, texts: list[str], groups: Callable[[list[int]], list[range]]) -> np.ndarray:
        """Logits (N, C) in the order of `texts`: tokenized in one call, sorted by length, run in the batches
        `groups(sorted lengths)` cuts (consecutive ranges), each padded to its longest."""
        ids = [e.ids for e in self.tokenizer.encode_batch(texts)]
        order = np.argsort([len(x) for x in ids], kind="stable")  # (N,) shortest first
        logits = np.concatenate([self.run([ids[i] for i in order[g.start: g.stop]])
                                 for g in groups([len(ids[i]) for i in order])])  # (N, C) sorted
        out = np.empty_like(logits)
        out[order] = logits  # back in input order
        return out

    def lengths(self, texts: list[str]) -> np.ndarray:
        """Tokens per text (special tokens included, truncated at `seq_len`), (N,)."""
        return np.array([len(e.ids) for e in self.tokenizer.encode_batch(texts)])


def load_tokenizer(folder: Path, seq_len: int):
    """(tokenizers.Tokenizer truncating at `seq_len` and padding nothing, pad id) from a stage's ONNX folder."""
    from tokenizers import Tokenizer

    path = Path(folder) / TOKENIZER_FILE
    if not path.is_file():
        raise SlimformerError(f"{folder} has no {TOKENIZER_FILE} (a fast tokenizer) to time the stage on real texts; export "
                              "the stage again, or set bench.traffic=false")
    tokenizer = Tokenizer.from_file(str(path))
    pad_id = pad_token_id(folder, tokenizer)
    tokenizer.no_padding()  # padding is the timer's: to the longest of a batch, or to seq_len
    tokenizer.enable_truncation(max_length=seq_len)
    return tokenizer, pad_id


def pad_token_id(folder: Path, tokenizer) -> int:
    """The pad token's id: tokenizer_config.json's pad_token, else [PAD] or <pad>, else the tokenizer file's padding, else 0."""
    config_path = Path(folder) / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    named = config.get("pad_token")
    named = named.get("content") if isinstance(named, dict) else named
    found = [tokenizer.token_to_id(token) for token in [named, *PAD_TOKENS] if isinstance(token, str)]
    fallback = tokenizer.padding["pad_id"] if tokenizer.padding else 0
    return next((i for i in found if i is not None), fallback)


def open_server(onnx_dir: Path, seq_len: int, threads: int, tokenizer=None) -> Server:
    """A `Server` for a stage's ONNX folder: a fresh session, and its tokenizer (loaded unless given as (tokenizer, pad id))."""
    from eval.bench import ONNX_FILE, ort_session

    tokenizer, pad_id = tokenizer or load_tokenizer(onnx_dir, seq_len)
    return Server(ort_session(Path(onnx_dir) / ONNX_FILE, threads), tokenizer, pad_id, seq_len)


def timed_ms(fn: Callable[..., Any], *args: Any) -> float:
    start = time.perf_counter()
    fn(*args)
    return (time.perf_counter() - start) * 1000.0


def traffic_in_rounds(open_stage: dict[str, Callable[[], Server]], texts: list[str], batch_size: int, warmup: int,
                      rounds: int = ROUNDS) -> dict[str, dict]:
    """Per stage: per-request times in ms of the single requests at their own length (`longest`) and padded
    to seq_len (`max_length`), the seconds of each sorted pass, and the texts' token counts.

    `open_stage[name]()` opens the stage (a fresh session) and is called once per round; it is dropped after it.
    Each round, each stage runs `warmup` untimed requests of each mode and one untimed batch of the longest
    texts, then times its share of the texts (`texts[round::rounds]`) as single requests, each followed by the
    same text padded, then one sorted pass over all of `texts`."""
    if not texts:
        raise SlimformerError("the traffic timer needs at least one text")
    names, rounds = list(open_stage), max(1, min(rounds, len(texts)))
    out = {name: {"longest": [], "max_length": [], "passes_s": [], "lengths": None} for name in names}
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:  # rotated: no stage always runs right after the same one
            server, times = open_stage[name](), out[name]
            if times["lengths"] is None:
                times["lengths"] = server.lengths(texts)
            longest = [texts[i] for i in np.argsort(times["lengths"], kind="stable")[-batch_size:]]
            for text in texts[:warmup]:
                server.request(text)
                server.request(text, padded=True)
            server.predict_sorted(longest, batch_size)
            for text in texts[r::rounds]:  # alternating, so a load change hits both modes alike
                times["longest"].append(timed_ms(server.request, text))
                times["max_length"].append(timed_ms(server.request, text, True))
            times["passes_s"].append(timed_ms(server.predict_sorted, texts, batch_size) / 1000.0)
            server = None  # the last reference: the session (and its spinning thread pool) closes before the next stage opens
            gc.collect(1)
    return out


def traffic_records(timed: dict, seq_len: int, batch_size: int, threads: int, precision: str = "fp32",
                    interleaved: bool = False) -> list[dict]:
    """results.json `traffic` records of one stage from its `traffic_in_rounds` entry: two single-request modes, one sorted."""
    lengths = timed["lengths"]
    n = len(lengths)
    common = {"device": "cpu", "runtime": "onnxruntime", "precision": precision, "threads": threads, "seq_len": seq_len,
              "n_texts": n, "mean_tokens": float(np.mean(lengths)), "max_tokens": int(np.max(lengths)),
              "interleaved": interleaved}
    records = []
    for padding in ("longest", "max_length"):
        stats = latency_stats(np.asarray(timed[padding]))
        records.append({**common, "mode": "single", "batch": 1, "padding": padding, **stats,
                        "texts_per_s": 1000.0 / stats["mean_ms"]})
    sorted_lengths = np.sort(lengths)
    widths = [sorted_lengths[s: s + batch_size].max() * len(sorted_lengths[s: s + batch_size]) for s in range(0, n, batch_size)]
    seconds = float(np.median(timed["passes_s"]))
    records.append({**common, "mode": "sorted", "batch": batch_size, "padding": "longest", "passes": len(timed["passes_s"]),
                    "seconds_p50": seconds, "seconds_min": float(np.min(timed["passes_s"])),
                    "padded_tokens_mean": float(np.sum(widths) / n), "texts_per_s": n / seconds})
    return records


def time_traffic(onnx_dirs: dict[str, tuple[Path, str]], texts: list[str], seq_len: int, threads: int, batch_size: int = 32,
                 warmup: int = 5, rounds: int = ROUNDS) -> dict[str, list[dict]]:
    """`traffic` records of every stage in `onnx_dirs` (name -> (ONNX folder, precision)), timed in the same rounds."""
    tokenizers = {name: load_tokenizer(folder, seq_len) for name, (folder, _) in onnx_dirs.items()}
    openers = {name: (lambda folder=folder, name=name: open_server(folder, seq_len, threads, tokenizers[name]))
               for name, (folder, _) in onnx_dirs.items()}
    timed = traffic_in_rounds(openers, texts, batch_size, warmup, rounds)
    return {name: traffic_records(timed[name], seq_len, batch_size, threads, onnx_dirs[name][1], interleaved=len(onnx_dirs) > 1)
            for name in onnx_dirs}


def protocol_entry(n_texts: int, seq_len: int, batch_size: int, warmup: int, threads: int, rounds: int = ROUNDS) -> dict:
    """results.json protocol `traffic`: which texts, how many, and the settings every traffic record ran under."""
    return {"texts": f"the first {n_texts} texts of the test split, in split order ({TEXTS_FILE} in the run folder)",
            "n_texts": n_texts, "seq_len": seq_len, "batch_size": batch_size, "warmup": warmup, "rounds": rounds,
            "threads": threads, "file": TEXTS_FILE,
            "tokenizer": f"each stage's onnx/{TOKENIZER_FILE} (tokenizers library), truncation at seq_len, padding by the timer",
            "single": "batch 1, one request per text: tokenize + run; padding longest (none) or max_length (to seq_len)",
            "sorted": f"all texts tokenized in one call, sorted by length, batches of {batch_size} padded to their longest, "
                      "logits back in input order; texts per second over the pass",
            "tokenizers_parallelism": os.environ.get("TOKENIZERS_PARALLELISM")}


def write_texts(path: Path, texts: list[str], write_text: Callable[[Path, str], None]) -> None:
    """The texts as JSON lines (`{"text": ...}`: any character, newlines included), written by `write_text(path, text)`."""
    body = "".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts)
    if not (Path(path).is_file() and Path(path).read_text(encoding="utf-8") == body):
        write_text(Path(path), body)


def read_texts(path: Path) -> list[str]:
    """The texts of a `TEXTS_FILE`; SlimformerError naming the file and line when one is not `{"text": "..."}`."""
    texts = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        try:
            text = json.loads(line)["text"]
        except (json.JSONDecodeError, KeyError, TypeError):
            text = None
        if not isinstance(text, str):
            raise SlimformerError(f"{path}:{number}: expected a JSON object {{\"text\": \"...\"}}; "
                                  "re-run the recipe's bench step to write the file again")
        texts.append(text)
    return texts
