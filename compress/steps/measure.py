"""The `evaluate` and `bench` steps: measure the current stage, the same way for every stage.

`evaluate` scores the stage's ONNX artifact with ONNX Runtime on the test split (and the torch
model beside it, so a reader sees they agree), plus macro-F1 and agreement with the baseline
stage's predictions (an ONNX-only int8 stage: with its fp32 parent's; no torch accuracy).
Every accuracy gets its Wilson 95% interval, and the difference to the baseline stage a paired
bootstrap interval over the same test texts (eval/intervals.py), from the saved per-example logits
(`stages/<name>/test_logits.npy`).
In an embedding task (compress/data/embedding.py) `evaluate` measures the sentence embeddings
instead (`evaluate_embeddings`, eval/embedding.py): the stage's artifact embeds the reverse
dictionary's corpus (every gloss) and queries (the held-out synsets' lemma names); recall@1/@10
and MRR of each query's gloss, the cosine with the baseline stage's (the teacher's) embeddings of
the held-out texts and the overlap of their 10 nearest neighbours, each with its interval and,
against the teacher, paired ones. The embeddings, ranks and neighbours are saved beside the stage
(`test_logits.npy`, `test_ranks.npy`, `test_neighbours.npy`) for the next stages to pair with.
`bench` times the ONNX artifact (and eager torch) over the recipe's `bench:` grid,
measures peak memory in a fresh process, and (`bench.traffic`) serves the first test texts the
way a user does, tokenization included (eval/traffic.py). Both are thin: the measuring code
lives in `eval/` so reports and `slimformer bench` use the same timer.
"""

from typing import Literal

import numpy as np
import torch
from pydantic import Field

from compress.distributed import main_process_only
from compress.errors import RecipeError
from compress.run.config_base import StepConfig
from compress.run.registry import STEPS, file_digest, register_step
from eval.bench import ONNX_FILE


class EvaluateConfig(StepConfig):
    """Score the current stage on a split, on its ONNX artifact when it has one."""

    kind: Literal["evaluate"] = "evaluate"
    split: Literal["test", "validation"] = "test"
    batch_size: int = Field(64, ge=1)


class BenchStepConfig(StepConfig):
    """Time the current stage under the recipe's `bench:` protocol."""

    kind: Literal["bench"] = "bench"


def reference_path(cfg: EvaluateConfig, ctx):
    """The saved logits agreement is computed against: the fp32 parent's for an ONNX-only (int8)
    stage, else the baseline stage's (report.baseline, default the teacher)."""
    stage = ctx.current.recorded.get("parent") if onnx_only(ctx) else ctx.baseline_stage
    if stage is None or stage == ctx.stage:  # the baseline agrees with itself: it reads nothing else
        return None
    return ctx.stage_dir(stage) / f"{cfg.split}_logits.npy"


def baseline_path(cfg: EvaluateConfig, ctx):
    """The baseline stage's saved logits, which the paired interval of the accuracy difference reads
    (None for the baseline itself); for an fp32 stage the same file as `reference_path`."""
    stage = ctx.baseline_stage
    return None if stage is None or stage == ctx.stage else ctx.stage_dir(stage) / f"{cfg.split}_logits.npy"


def reference_inputs(cfg: EvaluateConfig, ctx) -> dict:
    """What `evaluate` reads besides its own stage, for its fingerprint: a new baseline, or new
    baseline logits, re-runs it (else its `agreement` and `accuracy_delta` would be stale)."""
    if getattr(type(ctx.recipe.task), "embeds", False):
        return embedding_inputs(cfg, ctx)
    path, base = reference_path(cfg, ctx), baseline_path(cfg, ctx)
    return {"baseline": ctx.baseline_stage, "reference": file_digest(path) if path else None,
            "baseline_logits": file_digest(base) if base else None}


def onnx_only(ctx) -> bool:
    """The current stage has no torch model of its own (quantize): `model` is its fp32 parent's."""
    return not STEPS[ctx.current.kind].saves_model


def parent_logits(ctx, split: str, batch_size: int) -> np.ndarray:
    """The fp32 parent's logits on `split`: saved by its evaluate step, else run on its ONNX artifact."""
    from eval.accuracy import predict_onnx

    parent = ctx.current.recorded["parent"]
    path = ctx.stage_dir(parent) / f"{split}_logits.npy"
    if path.is_file():
        return np.load(path, allow_pickle=False)
    data = ctx.encoded[split]
    return predict_onnx(ctx.onnx_dir(parent) / ONNX_FILE, data["input_ids"], data["attention_mask"], batch_size=batch_size,
                        threads=ctx.recipe.bench.threads)


@register_step("evaluate", EvaluateConfig, measures=True, code=("eval.accuracy", "eval.intervals", "eval.embedding"),
               inputs=reference_inputs)
@main_process_only  # several processes: the main one exports/measures, the others wait
def evaluate(model, cfg: EvaluateConfig, ctx):
    from eval.accuracy import classification_metrics, predict_onnx, predict_torch

    if getattr(type(ctx.recipe.task), "embeds", False):
        return evaluate_embeddings(model, cfg, ctx)

    split = ctx.encoded[cfg.split]
    ids, mask, labels = split["input_ids"], split["attention_mask"], split["labels"].numpy()
    quantized = onnx_only(ctx)  # int8: agreement is with its fp32 parent, and there is no torch accuracy
    torch_logits = None if quantized else predict_torch(model, ids, mask, batch_size=cfg.batch_size)
    onnx_path = ctx.onnx_dir() / ONNX_FILE
    if onnx_path.is_file():
        logits = predict_onnx(onnx_path, ids, mask, batch_size=cfg.batch_size, threads=ctx.recipe.bench.threads)
    else:
        logits = torch_logits  # no artifact yet: the report marks accuracy as torch-only
    if quantized:
        reference = parent_logits(ctx, cfg.split, cfg.batch_size)
    else:
        path = reference_path(cfg, ctx)
        reference = np.load(path, allow_pickle=False) if path is not None and path.is_file() else None
    metrics = classification_metrics(logits, labels, reference)
    np.save(ctx.stage_dir() / f"{cfg.split}_logits.npy", logits.astype(np.float32), allow_pickle=False)
    if cfg.split == "test":
        from eval.intervals import accuracy_fields, delta_fields

        ctx.record("accuracy", metrics["accuracy"] if onnx_path.is_file() else None)
        ctx.record("accuracy_ci", accuracy_fields(logits.argmax(1), labels)["accuracy_ci"] if onnx_path.is_file() else None)
        ctx.record("accuracy_torch", None if quantized else classification_metrics(torch_logits, labels)["accuracy"])
        ctx.record("accuracy_torch_ci", None if quantized else accuracy_fields(torch_logits.argmax(1), labels)["accuracy_ci"])
        base = baseline_path(cfg, ctx)
        base_logits = np.load(base, allow_pickle=False) if base is not None and base.is_file() else None
        # paired: the same texts, example by example
        if onnx_path.is_file() and base_logits is not None and len(base_logits) == len(labels):
            ctx.record("accuracy_delta", delta_fields(logits.argmax(1), base_logits.argmax(1), labels,
                                                      ctx.baseline_stage)["accuracy_delta"])
        ctx.record("macro_f1", metrics["macro_f1"])
        # the baseline agrees with itself; a stage measured before its baseline exists has no agreement (yet):
        # its fingerprint holds the baseline's logits, so the next run fills it in
        agreement = 1.0 if ctx.stage == ctx.baseline_stage else metrics["agreement"]
        if agreement is not None:
            ctx.record("agreement", agreement)
        ctx.record("n_test", metrics["n"])
    else:
        ctx.record(f"{cfg.split}_accuracy", metrics["accuracy"])
    ctx.log(event="evaluate", split=cfg.split, **{k: v for k, v in metrics.items() if v is not None})
    return model


def evaluate_embeddings(model, cfg: EvaluateConfig, ctx):
    """`evaluate` in an embedding task: retrieval and fidelity of the stage's sentence embeddings (module docstring)."""
    from compress.data import encode
    from compress.data.embedding import retrieval_set
    from compress.training.batches import predict
    from eval.embedding import embed_onnx, fidelity, neighbours, ranks, retrieval_deltas, retrieval_metrics

    if cfg.split != "test":
        raise RecipeError(f"evaluate {cfg.name!r}: an embedding task is measured on its held-out synsets: set split: test")
    task, seq_len = ctx.recipe.task, ctx.recipe.task.seq_len
    found = retrieval_set(task, task.seed if task.seed is not None else ctx.recipe.seed)
    onnx_path = ctx.onnx_dir() / ONNX_FILE
    threads = ctx.recipe.bench.threads

    def embed(texts: list[str]) -> np.ndarray:
        enc = encode(ctx.tokenizer, texts, seq_len)
        if onnx_path.is_file():
            return embed_onnx(onnx_path, enc["input_ids"].numpy(), enc["attention_mask"].numpy(), cfg.batch_size, threads)
        return predict(model, enc, batch_size=cfg.batch_size).numpy()  # no artifact yet: torch, said in the record

    corpus, queries = embed(found.corpus), embed(found.queries)  # (n_docs, D), (n_queries, D)
    held_out = corpus[found.held_out]  # the held-out synsets' glosses
    test = np.stack([held_out, queries], axis=1).reshape(-1, queries.shape[1])  # the test split: gloss, lemma names per synset
    rank, nbrs = ranks(queries, corpus, found.answers), neighbours(held_out, 10)
    stage_dir = ctx.stage_dir()
    for name, array in (("test_logits", test.astype(np.float32)), ("test_ranks", rank), ("test_neighbours", nbrs)):
        np.save(stage_dir / f"{name}.npy", array, allow_pickle=False)
    base = ctx.baseline_stage
    base_dir = ctx.stage_dir(base) if base is not None and base != ctx.stage else None
    record = {"runtime": "onnxruntime" if onnx_path.is_file() else "torch", "n_corpus": len(found.corpus),
              "n_queries": len(found.queries), "retrieval": retrieval_metrics(rank)}
    if base_dir is not None and (base_dir / "test_logits.npy").is_file():
        teacher = np.load(base_dir / "test_logits.npy", allow_pickle=False)
        teacher_nbrs = np.load(base_dir / "test_neighbours.npy", allow_pickle=False)
        if teacher.shape == test.shape:
            record["fidelity"] = {"baseline": base, **fidelity(test, teacher, nbrs, teacher_nbrs)}
        base_rank = np.load(base_dir / "test_ranks.npy", allow_pickle=False)
        if len(base_rank) == len(rank):
            record["retrieval_delta"] = retrieval_deltas(rank, base_rank, base)
    elif base is None or base == ctx.stage:
        record["fidelity"] = {"baseline": ctx.stage, **fidelity(test, test, nbrs, nbrs)}
    ctx.record("embedding_eval", record)
    ctx.record("n_test", len(found.queries))
    summary = {k: record["retrieval"][k]["mean"] for k in ("recall@1", "recall@10", "mrr")}
    if "fidelity" in record:
        summary |= {"cosine": record["fidelity"]["cosine"]["mean"], "cosine_p5": record["fidelity"]["cosine_p5"]}
    ctx.log(event="evaluate", split=cfg.split, **summary)
    return model


def embedding_inputs(cfg: EvaluateConfig, ctx) -> dict:
    """An embedding evaluation reads the baseline stage's saved embeddings, ranks and neighbours: their digests."""
    base = ctx.baseline_stage
    if base is None or base == ctx.stage:
        return {"baseline": base}
    return {"baseline": base, **{name: file_digest(ctx.stage_dir(base) / f"test_{name}.npy")
                                 for name in ("logits", "ranks", "neighbours")}}


@register_step("bench", BenchStepConfig, uses=("bench",), measures=True,
               code=("eval.bench", "eval.memprobe", "eval.flops", "eval.traffic"))
@main_process_only  # several processes: the main one exports/measures, the others wait
def bench(model, cfg: BenchStepConfig, ctx):
    from eval.bench import bench_onnx, bench_torch, count_params, file_size, peak_memory
    from eval.flops import flops_grid

    protocol = ctx.recipe.bench
    seq_lens = protocol.seq_lens or [ctx.recipe.task.seq_len]
    vocab_size = model.config.vocab_size
    onnx_path = ctx.onnx_dir() / ONNX_FILE
    if not onnx_path.is_file():
        raise RecipeError(f"bench on stage {ctx.stage!r}: it has no ONNX artifact; put an `export` step before `bench`")
    common = dict(batch_sizes=protocol.batch_sizes, seq_lens=seq_lens, threads=protocol.threads, vocab_size=vocab_size,
                  warmup=protocol.warmup, repeats=protocol.repeats)
    precision = ctx.current.recorded.get("precision", "fp32")
    latency = bench_onnx(onnx_path, precision=precision, **common)
    if protocol.torch:
        if not onnx_only(ctx):  # an int8 stage is an ONNX Runtime CPU artifact: no eager torch row of its own
            latency += bench_torch(model, device="cpu", **common)
        if torch.cuda.is_available():  # on GPU, fp32, fp16 and bf16 of the stage (for int8: of its fp32 parent)
            for dtype in (torch.float32, torch.float16, torch.bfloat16):
                latency += bench_torch(model, device="cuda", dtype=dtype, **common)
    ctx.record("latency", latency)
    # the roofline's numerator: FLOPs per call over the grid (an int8 stage runs its fp32 parent's products)
    ctx.record("flops", flops_grid(model.config.to_dict(), protocol.batch_sizes, seq_lens))
    ctx.record("params", count_params(model))
    ctx.record("onnx_bytes", file_size(onnx_path))
    if protocol.traffic:  # real test texts, tokenization included (eval/traffic.py)
        ctx.record("traffic", time_stage_traffic(ctx, precision))
    if protocol.memory:
        batch = 8 if 8 in protocol.batch_sizes else max(protocol.batch_sizes)
        ctx.record("peak_memory", [peak_memory(onnx_path, batch, max(seq_lens), protocol.threads)])
    return model


def time_stage_traffic(ctx, precision: str) -> list[dict]:
    """The stage's artifact served on the first `bench.traffic_texts` test texts (eval/traffic.py); the texts
    are written once to the run folder (eval.traffic.TEXTS_FILE), so `slimformer bench RUN` serves the same."""
    from compress.io import atomic_write_text
    from eval.traffic import TEXTS_FILE, time_traffic, write_texts

    protocol = ctx.recipe.bench
    texts = list(ctx.data.texts["test"][: protocol.traffic_texts])
    write_texts(ctx.run_dir / TEXTS_FILE, texts, atomic_write_text)
    timed = time_traffic({ctx.stage: (ctx.onnx_dir(), precision)}, texts, ctx.recipe.task.seq_len, protocol.threads,
                         batch_size=protocol.traffic_batch_size, warmup=protocol.warmup)
    return timed[ctx.stage]
