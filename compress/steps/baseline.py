"""The `baseline` step: a classical reference row, TF-IDF word n-grams + logistic regression (scikit-learn).

Any recipe can add `- {kind: baseline}` anywhere, first included. `tokens: symbols` counts
whitespace-separated symbols instead of words, for generated tasks whose tokens are single
characters (lookup, ListOps), where the word pattern finds nothing to count. It fits on the
task's training split (C chosen on the validation split), scores the test split like
`evaluate` does (accuracy, macro-F1, agreement with the report's baseline stage when that
stage's test logits exist), saves the model as JSON + .npz under `stages/<name>/sklearn/`, and
times it on raw test texts at the `bench:` batch sizes with the protocol's timer. Its accuracy gets
the Wilson 95% interval and, against the baseline stage's logits, the paired bootstrap interval
of the difference (eval/intervals.py), as `evaluate` gives every other row. The model and its measuring live in
`eval/baseline.py`; this file only wires them to the run.

In an embedding task (compress/data/embedding.py) the reference row is the classical retrieval
instead: TF-IDF word n-grams fitted on the reverse dictionary's corpus, each query ranking the
glosses by cosine (`eval/embedding.py: tfidf_ranks`), with recall@1/@10 and MRR beside the
embedding models' and paired intervals against the teacher.

It is a *reference* step (`compress/run/runner.py`): its row is recorded under its own stage name
(`reference: true` in results.json; the report marks it and plots it apart), but it never
becomes the current stage, a parent, the teacher or the default baseline, and it has no ONNX
artifact, so exports, interleaved re-timing and `slimformer bench RUN` pass it by.
"""

import io
import time
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, field_validator

from compress.distributed import main_process_only
from compress.io import atomic_write_bytes
from compress.run.config_base import NAME_PATTERN, StepConfig
from compress.run.registry import file_digest, register_step, stage_history, teaches

ARTIFACT = "sklearn"  # the stage's folder holding model.json + weights.npz


class BaselineConfig(StepConfig):
    """A classical reference row: TF-IDF word n-grams + logistic regression (scikit-learn), same split."""

    kind: Literal["baseline"] = "baseline"
    name: str | None = Field("baseline", pattern=NAME_PATTERN)  # the reference row's stage name
    ngram_max: int = Field(2, ge=1, le=3)  # n-grams of 1..ngram_max tokens
    # words: 2+ word characters (natural text); symbols: whitespace-separated (lookup, ListOps)
    tokens: Literal["words", "symbols"] = "words"
    min_df: int = Field(1, ge=1)  # keep terms found in at least this many training texts
    sublinear_tf: bool = True  # term frequency counted as 1 + log(tf)
    C: list[float] = Field([0.25, 1.0, 4.0, 16.0], min_length=1, max_length=20)  # inverse L2 strengths tried; best on validation
    max_iter: int = Field(1000, ge=10, le=100000)  # lbfgs iterations per fit

    @field_validator("C")
    @classmethod
    def positive(cls, values: list[float]) -> list[float]:
        if any(c <= 0 for c in values):
            raise ValueError(f"every C must be > 0 (inverse regularisation strength), got {values}")
        return values


def compared_stage(ctx) -> str | None:
    """The report's baseline stage, known even before it is made: report.baseline, else the lineage's teacher
    (its first model-saving stage that is no pretrained encoder), so a baseline step placed before `train` finds the
    teacher's logits on the next run."""
    model_stages = stage_history(ctx.steps, len(ctx.steps))[1]
    return ctx.recipe.report.baseline or next((s.name for s in ctx.steps if s.name in model_stages and teaches(s.kind)), None)


def reference_logits(ctx) -> Path | None:
    """The baseline stage's saved test logits (None when it is this row itself or has none yet)."""
    stage = compared_stage(ctx)
    if stage is None or stage == ctx.stage:
        return None
    path = ctx.stage_dir(stage) / "test_logits.npy"
    return path if path.is_file() else None


def baseline_inputs(cfg: BaselineConfig, ctx) -> dict:
    """Fingerprinted besides the config: the baseline stage's logits, so the run after they appear fills in agreement."""
    path = reference_logits(ctx)
    return {"baseline": compared_stage(ctx), "reference": file_digest(path) if path else None}


def retrieval_baseline(model, cfg: BaselineConfig, ctx):
    """An embedding task's reference row: TF-IDF cosine retrieval on the reverse dictionary (module docstring)."""
    from compress.data.embedding import retrieval_set
    from eval.embedding import retrieval_deltas, retrieval_metrics, tfidf_ranks

    task = ctx.recipe.task
    found = retrieval_set(task, task.seed if task.seed is not None else ctx.recipe.seed)
    started = time.time()
    rank, fitted = tfidf_ranks(found.queries, found.corpus, found.answers, cfg.ngram_max, cfg.min_df, cfg.sublinear_tf)
    ctx.stage_dir().mkdir(parents=True, exist_ok=True)
    np.save(ctx.stage_dir() / "test_ranks.npy", rank, allow_pickle=False)
    record = {"runtime": "sklearn", "n_corpus": len(found.corpus), "n_queries": len(found.queries),
              "retrieval": retrieval_metrics(rank)}
    stage = compared_stage(ctx)
    base = ctx.stage_dir(stage) / "test_ranks.npy" if stage is not None and stage != ctx.stage else None
    if base is not None and base.is_file():
        record["retrieval_delta"] = retrieval_deltas(rank, np.load(base, allow_pickle=False), stage)
    ctx.record("embedding_eval", record)
    ctx.record("n_test", len(found.queries))
    ctx.record("params", fitted["vocab_size"])
    ctx.record("baseline", {"model": f"TF-IDF word 1-{cfg.ngram_max}-grams (sublinear tf), cosine retrieval (scikit-learn)",
                            "fit_seconds": round(time.time() - started, 2), **fitted})
    ctx.log(event="baseline", **{k: record["retrieval"][k]["mean"] for k in ("recall@1", "recall@10", "mrr")})
    return model


def retrieval_inputs(cfg: BaselineConfig, ctx) -> dict:
    """The embedding task's reference row pairs with the baseline stage's ranks; the classifier's with its logits."""
    if not getattr(type(ctx.recipe.task), "embeds", False):
        return baseline_inputs(cfg, ctx)
    stage = compared_stage(ctx)
    path = ctx.stage_dir(stage) / "test_ranks.npy" if stage is not None and stage != ctx.stage else None
    return {"baseline": stage, "ranks": file_digest(path) if path else None}


@register_step("baseline", BaselineConfig, reference=True, uses=("bench",),
               code=("eval.baseline", "eval.bench", "eval.accuracy", "eval.intervals", "eval.embedding"),
               inputs=retrieval_inputs)
@main_process_only  # several processes: the main one fits and measures, the others wait
def baseline(model, cfg: BaselineConfig, ctx):
    from eval.accuracy import classification_metrics
    from eval.baseline import bench_texts, fit_tfidf_logreg, save, size_bytes
    from eval.intervals import accuracy_fields, delta_fields

    if getattr(type(ctx.recipe.task), "embeds", False):
        return retrieval_baseline(model, cfg, ctx)
    data, protocol = ctx.data, ctx.recipe.bench
    started = time.time()
    fitted, tried = fit_tfidf_logreg(
        data.texts["train"], data.labels["train"], data.texts["validation"], data.labels["validation"], data.n_classes,
        cfg.C, seed=ctx.recipe.seed, ngram_max=cfg.ngram_max, min_df=cfg.min_df, sublinear_tf=cfg.sublinear_tf,
        max_iter=cfg.max_iter, threads=protocol.threads, tokens=cfg.tokens,
    )
    fit_seconds = time.time() - started
    folder = ctx.stage_dir() / ARTIFACT
    save(fitted, folder)
    scores = fitted.scores(data.texts["test"])  # (N, n_classes) log-probabilities: the row's "logits"
    path = reference_logits(ctx)
    reference = np.load(path, allow_pickle=False) if path else None
    metrics = classification_metrics(scores, np.asarray(data.labels["test"]), reference)
    buffer = io.BytesIO()
    np.save(buffer, scores.astype(np.float32), allow_pickle=False)
    atomic_write_bytes(ctx.stage_dir() / "test_logits.npy", buffer.getvalue())
    ctx.record("accuracy", metrics["accuracy"])
    labels = np.asarray(data.labels["test"])
    ctx.record("accuracy_ci", accuracy_fields(scores.argmax(1), labels)["accuracy_ci"])  # Wilson 95%
    if reference is not None and len(reference) == len(labels):  # paired bootstrap against the report's baseline stage
        ctx.record("accuracy_delta",
                   delta_fields(scores.argmax(1), reference.argmax(1), labels, compared_stage(ctx))["accuracy_delta"])
    ctx.record("macro_f1", metrics["macro_f1"])
    agreement = 1.0 if ctx.stage == compared_stage(ctx) else metrics["agreement"]
    if agreement is not None:  # the baseline stage has no test logits yet: the next run fills it in
        ctx.record("agreement", agreement)
    ctx.record("n_test", metrics["n"])
    counts = fitted.counts()
    ctx.record("params", counts["params"])
    ctx.record("model_bytes", size_bytes(folder))
    ctx.record("artifact_dir", str(folder.relative_to(ctx.run_dir)))
    seq_lens = protocol.seq_lens or [ctx.recipe.task.seq_len]
    ctx.record("latency", bench_texts(fitted, data.texts["test"], protocol.batch_sizes, max(seq_lens), protocol.threads,
                                      warmup=protocol.warmup, repeats=protocol.repeats, seed=ctx.recipe.seed))
    ctx.record("baseline", {
        "model": f"TF-IDF {cfg.tokens[:-1]} 1-{cfg.ngram_max}-grams (sublinear tf) + logistic regression (scikit-learn)",
        "C": fitted.settings["C"], "validation_accuracy": tried, "fit_seconds": round(fit_seconds, 2),
        "params_counted": "nonzero coefficients + intercepts + one idf weight per vocabulary term", **counts,
    })
    ctx.log(event="baseline", accuracy=metrics["accuracy"], C=fitted.settings["C"], vocab_size=counts["vocab_size"])
    return model
