"""Recovery: the fine-tuning that follows a cut (pruning) or a swap (attention), distilling from the teacher.

After structured pruning or an attention swap, the model trains again with the one training
loop (`compress.training.loop.train`) on a distillation objective (Hinton et al. 2015, "Distilling the
Knowledge in a Neural Network"): `alpha` times T^2 * KL between the temperature-softened
teacher and student distributions, plus `1 - alpha` times cross-entropy on the labels
(`compress.training.losses.logits_loss`, the one implementation `distill` uses too). The teacher's logits
on the training split are computed once per step, not every epoch. `prune_heads`, `prune_ffn`,
`prune_width` and `swap_attention` configure it with the same `recover:` block.

Recovery trains on the labelled training split, or, when `recover:` names a transfer set
(`augment:` copies, `unlabeled:` files; compress/training/transfer.py, the same fields as `distill`'s), on
that: a cut model relearns the teacher's function, not only its labels, and the labelled split
alone is too small a sample of that function to recover a narrowed pretrained model (on
recipes/minilm_vader.yaml, width 384 -> 192 cost 2 validation points recovered on labels).

When the teacher is a sentence-embedding model (an embedding task), the objective is instead the
embedding loss of `recover.embedding` (`compress/training/embedding.py`: MSE and/or cosine between
the student's and the teacher's sentence embeddings), and the best epoch is the one whose
validation embeddings are closest to the teacher's (`val_cosine`).

`swap_attention` can add per-layer attention-output distillation (`attention_output` > 0): the
MSE over real tokens between each layer's attention-block output (B, T, dim) in the student and
in the teacher, averaged over layers, the attention counterpart of TinyBERT's hidden-state loss
(Jiao et al. 2020). A swapped layer then learns to reproduce what full attention computed in
that layer, not only the final logits; it needs the teacher run on every batch (its outputs are
captured by forward hooks on `layers.<i>.attn`, as `distill.Capture` does for q/k/v), so the
logits are taken from that same forward instead of the cached ones.
"""

from functools import partial
from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from compress.training.batches import predict
from compress.training.embedding import EmbeddingLoss, embedding_distillation_loss, is_embedding
from compress.training.loop import OptimConfig, cross_entropy_loss
from compress.training.losses import hidden_loss, logits_loss
from compress.training.transfer import TransferConfig, transfer_set, unlabeled_inputs


class RecoverConfig(OptimConfig, TransferConfig):
    """Training after a cut or a swap: the one training loop, distilling from the teacher (or on labels alone),
    on the training split plus the transfer set its `augment:` and `unlabeled:` ask for."""

    epochs: int = Field(3, ge=0, le=10000)  # passes over the training split; 0 = no recovery
    lr: float = Field(5e-4, gt=0, le=1.0)  # peak learning rate of AdamW
    distill_from: Literal["teacher", "none"] = "teacher"  # teacher: soft targets from the teacher stage; none: labels only
    temperature: float = Field(2.0, gt=0, le=100)  # softens both distributions in the KL term
    alpha: float = Field(0.5, ge=0, le=1)  # weight of the KL term; (1 - alpha) goes to cross-entropy on the labels
    embedding: EmbeddingLoss = Field(default_factory=EmbeddingLoss)  # the objective instead, when the teacher embeds sentences

    @model_validator(mode="after")
    def check_transfer(self):
        if self.distill_from == "none" and self.adds():
            raise ValueError("recover: augment/unlabeled are labelled by the teacher; they need distill_from: teacher")
        return self


def recover_inputs(cfg, ctx) -> dict | None:
    """A step's fingerprint inputs: the digests of its `recover.unlabeled` files."""
    return unlabeled_inputs(cfg.recover, ctx)


class AttentionOutputs:
    """Forward hooks keeping every layer's attention-block output: {layer index: (B, T, dim)}.

    Layers without attention (all heads pruned) have no hook. `remove()` detaches the hooks."""

    def __init__(self, model: nn.Module):
        self.out: dict[int, torch.Tensor] = {}
        self.handles = [layer.attn.register_forward_hook(partial(self.keep, i))
                        for i, layer in enumerate(model.layers) if layer.attn is not None]

    def keep(self, i, module, inputs, output):
        self.out[i] = output

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles, self.out = [], {}


def attention_output_loss(student: dict[int, torch.Tensor], teacher: dict[int, torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
    """Mean over the layers both sides captured of the MSE over real tokens between (B, T, dim) outputs; 0 when none."""
    layers = sorted(student.keys() & teacher.keys())
    if not layers:
        return mask.new_zeros((), dtype=torch.float32)
    return torch.stack([hidden_loss(student[i], teacher[i], mask) for i in layers]).mean()


def distillation_loss(teacher: torch.nn.Module, temperature: float = 2.0, alpha: float = 0.5,
                      attention_output: float = 0.0, student: nn.Module | None = None):
    """loss_fn for `train`: `logits_loss` with weights alpha on T^2 * KL(teacher_T || student_T) and
    (1 - alpha) on CE(student, labels), plus `attention_output` times `attention_output_loss`
    between `student`'s and the teacher's attention blocks (hooks on both; the caller calls
    `loss_fn.remove()` after training).

    Uses the batch's precomputed `teacher_logits` when present and no teacher states are needed,
    else runs the teacher (eval, no grad).
    """
    if attention_output and student is None:
        raise ValueError("attention_output distillation needs the student model, to hook its attention blocks")
    hooks = (AttentionOutputs(student), AttentionOutputs(teacher)) if attention_output else None

    def loss_fn(model, batch):
        ids, mask = batch["input_ids"], batch["attention_mask"]
        logits = model(input_ids=ids, attention_mask=mask).logits  # (B, n_classes)
        target = batch.get("teacher_logits")
        if hooks or (target is None and alpha):
            with torch.no_grad():
                t_logits = teacher.eval().to(ids.device)(input_ids=ids, attention_mask=mask).logits
            target = t_logits if target is None else target
        loss = logits_loss(logits, target, batch["labels"], alpha, 1.0 - alpha, temperature)
        if hooks:
            loss = loss + attention_output * attention_output_loss(hooks[0].out, hooks[1].out, mask)
        return loss, logits

    loss_fn.remove = lambda: [h.remove() for h in hooks or ()]
    return loss_fn


def recovery(ctx, cfg: RecoverConfig, model: nn.Module | None = None, attention_output: float = 0.0,
             name: str = "recover") -> tuple[dict, callable]:
    """(training split, loss_fn) for recovery; with `distill_from: teacher` the split carries the teacher's logits,
    and is the transfer set when `cfg` asks for one (its counts go to the step's record as `recover_set`).

    `attention_output` > 0 (with the `model` that will train) adds per-layer attention-output
    distillation; call `loss_fn.remove()` after training to detach its hooks."""
    embedding = is_embedding(ctx.teacher)
    if embedding and (cfg.distill_from == "none" or attention_output):
        from compress.errors import RecipeError

        raise RecipeError(f"{name}: the teacher is a sentence-embedding model, so recovery distils its embeddings: set "
                          "recover.distill_from: teacher (an embedding task has no labels) and no attention_output")
    if cfg.distill_from == "none":
        loss = cross_entropy_loss()
        loss.remove = lambda: None
        return dict(ctx.encoded["train"]), loss
    if cfg.adds():
        split, details = transfer_set(ctx, ctx.teacher, cfg, name)
        ctx.record("recover_set", details)
    else:
        split = dict(ctx.encoded["train"])
        # once, not every epoch; the teacher reads the run's tokenizer: after prune_vocab the model's ids differ, the
        # texts (rows, in the same order) do not
        split["teacher_logits"] = predict(ctx.teacher, ctx.base_encoded["train"])
    if embedding:
        return split, embedding_distillation_loss(ctx.teacher, cfg.embedding)
    return split, distillation_loss(ctx.teacher, cfg.temperature, cfg.alpha, attention_output, model)
