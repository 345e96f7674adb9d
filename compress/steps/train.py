"""The `train` step: the teacher, trained with cross-entropy in the one training loop.

Built from the recipe's `teacher:` shape, or, with `teacher.from`, the imported pretrained
checkpoint fine-tuned on the task (its encoder and head), or, right after a `pretrain` step,
that stage's pretrained encoder (and a fresh head) fine-tuned. A length `curriculum:` trains on
the task redrawn at short inputs first (compress/training/curriculum.py).
"""

import copy
from typing import Literal

import torch
from pydantic import Field

from compress.errors import RecipeError
from compress.run.config_base import NAME_PATTERN, StepConfig
from compress.run.registry import STEPS, register_step
from compress.training.batches import predict
from compress.training.curriculum import CurriculumPhase
from compress.training.loop import OptimConfig, cross_entropy_loss, train, train_curriculum


class TrainConfig(StepConfig, OptimConfig):
    """Train the teacher from scratch on the task's training split."""

    kind: Literal["train"] = "train"
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    name: str | None = Field("teacher", pattern=NAME_PATTERN)  # the stage this step makes
    # length curriculum (compress/training/curriculum.py): phases on the task redrawn at shorter inputs, trained in
    # order before the task itself; a generated long task only (lookup's long form, listops)
    curriculum: list[CurriculumPhase] = Field(default_factory=list)
    # false: take `teacher.from` as it is, already fine-tuned on this task (its head must classify into the task's
    # labels): its validation accuracy is measured, nothing is trained (`slimformer compress` starts from such a model)
    fit: bool = True



@register_step("train", TrainConfig, makes_stage=True, needs_model=False)
def train_teacher(model, cfg: TrainConfig, ctx):
    """Train the teacher with cross-entropy: built from the recipe's `teacher:` shape, or, with
    `teacher.from`, the imported pretrained checkpoint fine-tuned on the task (its encoder and head),
    or, right after a `pretrain` step, that stage's pretrained encoder (and fresh head) fine-tuned."""
    from compress.models import SlimformerForSequenceClassification

    origin = ctx.current.parent
    if origin is not None and STEPS[ctx.stages[origin].kind].pretrains:
        model = copy.deepcopy(model)  # the pretrained stage's model; its tokenizer is this stage's too (inherited)
        ctx.record("pretrained", origin)
        if ctx.imported is not None:  # the pretrained stage continued the imported checkpoint's pretraining
            ctx.record("imported", ctx.imported.info)
    elif ctx.imported is not None:
        model = copy.deepcopy(ctx.imported.model)
        ctx.record("imported", ctx.imported.info)
    else:
        config = ctx.recipe.teacher.build_config(len(ctx.tokenizer), ctx.recipe.task.seq_len, ctx.data.label_names)
        torch.manual_seed(ctx.recipe.seed)
        model = SlimformerForSequenceClassification(config)
    if not cfg.fit:
        return measure_as_is(model, cfg, ctx)
    if getattr(model.config, "embedding_dim", None) is not None:
        raise RecipeError(f"train {cfg.name!r}: the teacher is a sentence-embedding model, used as it is (its students learn "
                          "its embeddings; there are no labels to fine-tune on): set fit: false")
    if cfg.curriculum:
        model = train_curriculum(model, cfg.curriculum, cfg, cross_entropy_loss(cfg.label_smoothing), ctx, f"train {cfg.name}")
    model, curve = train(
        model,
        ctx.encoded["train"],
        ctx.encoded["validation"],
        cfg,
        cross_entropy_loss(cfg.label_smoothing),
        seed=ctx.recipe.seed,
        device=ctx.device,
        log=ctx.log,
        desc=f"train {cfg.name}",
    )
    ctx.record("train_curve", curve)
    ctx.record("val_accuracy", max(p["val_accuracy"] for p in curve))
    return model


def measure_as_is(model, cfg: TrainConfig, ctx):
    """`fit: false`: the imported checkpoint is the teacher as it is; its validation accuracy is recorded like a trained one's."""
    info = ctx.imported.info if ctx.imported is not None else {}
    if info.get("head") == "embedding":  # a sentence-embedding model as it is: the teacher's own embeddings are the target
        ctx.record("fit", False)
        ctx.record("embedding", info.get("embedding"))
        return model.eval()
    if ctx.imported is None or info.get("head") != "imported":
        why = info.get("head_reason", "the teacher is not imported (no teacher.from)")
        raise RecipeError(f"train {cfg.name!r}: fit: false keeps the teacher as it is, but it has no head for the task's labels "
                          f"({why}); set fit: true to fine-tune it, or give teacher.from a model fine-tuned on these labels")
    val = ctx.encoded["validation"]
    accuracy = round((predict(model, val).argmax(-1) == val["labels"]).float().mean().item(), 5)
    ctx.record("fit", False)
    ctx.record("val_accuracy", accuracy)
    ctx.log(event="as_is", val_accuracy=accuracy)
    return model.eval()
