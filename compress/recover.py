"""Recovery: the fine-tuning that follows a cut (pruning) or a swap (attention), distilling from the teacher.

After structured pruning or an attention swap, the model trains again with the one training
loop (`compress.train.train`) on a distillation objective (Hinton et al. 2015, "Distilling the
Knowledge in a Neural Network"): `alpha` times T^2 * KL between the temperature-softened
teacher and student distributions, plus `1 - alpha` times cross-entropy on the labels
(`compress.losses.logits_loss`, the one implementation `distill` uses too). The teacher's logits
on the training split are computed once per step, not every epoch. `prune_heads`, `prune_ffn`
and `swap_attention` configure it with the same `recover:` block.
"""

from typing import Literal

import torch
from pydantic import Field

from compress.losses import logits_loss
from compress.train import OptimConfig, cross_entropy_loss, predict


class RecoverConfig(OptimConfig):
    """Training after a cut or a swap: the one training loop, distilling from the teacher (or on labels alone)."""

    epochs: int = Field(3, ge=0, le=10000)  # passes over the training split; 0 = no recovery
    lr: float = Field(5e-4, gt=0, le=1.0)  # peak learning rate of AdamW
    distill_from: Literal["teacher", "none"] = "teacher"  # teacher: soft targets from the teacher stage; none: labels only
    temperature: float = Field(2.0, gt=0, le=100)  # softens both distributions in the KL term
    alpha: float = Field(0.5, ge=0, le=1)  # weight of the KL term; (1 - alpha) goes to cross-entropy on the labels


def distillation_loss(teacher: torch.nn.Module, temperature: float = 2.0, alpha: float = 0.5):
    """loss_fn for `train`: `logits_loss` with weights alpha on T^2 * KL(teacher_T || student_T) and
    (1 - alpha) on CE(student, labels).

    Uses the batch's precomputed `teacher_logits` when present, else runs the teacher (eval, no grad).
    """

    def loss_fn(model, batch):
        ids, mask = batch["input_ids"], batch["attention_mask"]
        logits = model(input_ids=ids, attention_mask=mask).logits  # (B, n_classes)
        target = batch.get("teacher_logits")
        if target is None and alpha:
            with torch.no_grad():
                target = teacher.eval().to(ids.device)(input_ids=ids, attention_mask=mask).logits
        return logits_loss(logits, target, batch["labels"], alpha, 1.0 - alpha, temperature), logits

    return loss_fn


def recovery(ctx, cfg: RecoverConfig) -> tuple[dict, callable]:
    """(training split, loss_fn) for recovery; with `distill_from: teacher` the split carries the teacher's logits."""
    split = dict(ctx.encoded["train"])
    if cfg.distill_from == "none":
        return split, cross_entropy_loss()
    split["teacher_logits"] = predict(ctx.teacher, split)  # once, not every epoch
    return split, distillation_loss(ctx.teacher, cfg.temperature, cfg.alpha)
