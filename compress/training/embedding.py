"""Training in embedding mode: a student learns to reproduce a sentence-embedding teacher's vectors.

When the teacher is a sentence-embedding model (`config.embedding_dim` set: an embedding task,
compress/data/embedding.py), a model's output (its `logits` field) is its sentence embedding, and
every step that trains against the teacher (distill, the recovery after prune_heads / prune_ffn /
prune_width) minimises an embedding loss instead of the soft-target KL: the student's embedding
of each text against the teacher's, as in Reimers & Gurevych 2020 ("Making Monolingual Sentence
Embeddings Multilingual using Knowledge Distillation"), whose student minimises the MSE to the
teacher's vectors. `EmbeddingLoss` weighs

- `mse`: the squared Euclidean distance ||s - t||^2, averaged over the batch (for unit vectors,
  2 - 2 cos(s, t));
- `cosine`: 1 - cos(s, t), averaged over the batch (CosineEmbeddingLoss with target 1).

Both are 0 when student = teacher (tests/training/test_embedding_training.py). The teacher's
embeddings of a split are its "logits" there, so the transfer set (compress/training/transfer.py)
caches them as it caches a classifier's. The training loop keeps the epoch with the highest mean
cosine between the student's and the teacher's embeddings of the validation texts (`val_cosine`).

Importance scores that differentiate a loss (Taylor, for heads, neurons and width channels) need
one that is not at its minimum where they are taken: the loss against the model's own output has
a zero gradient there. In embedding mode they differentiate the embedding projected on a seeded
random direction per text, `<r_x, e(x)>`, whose gradient with respect to a unit's gate is that
unit's first-order effect on the embedding along r_x; averaging its absolute value over texts
(and directions) estimates how far removing the unit moves the embeddings (a Hutchinson-style
probe of the Jacobian, Hutchinson 1989).
"""

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from compress.run.config_base import ConfigBase
from compress.training.batches import predict

VAL_COSINE = "val_cosine"


class EmbeddingLoss(ConfigBase):
    """How a student's sentence embedding is pulled towards the teacher's (embedding tasks only)."""

    mse: float = Field(1.0, ge=0)  # weight of ||s - t||^2 (Reimers & Gurevych 2020's objective)
    cosine: float = Field(0.0, ge=0)  # weight of 1 - cos(s, t)

    @model_validator(mode="after")
    def check_weights(self):
        if not (self.mse or self.cosine):
            raise ValueError("embedding loss weights mse and cosine are both 0; give one of them a weight")
        return self


def is_embedding(model) -> bool:
    """The model outputs sentence embeddings (a slimformer Transformer or RNN with `embedding_dim`), not class logits."""
    model = getattr(model, "student", model)  # distill's wrapper
    return getattr(getattr(model, "config", None), "embedding_dim", None) is not None


def embedding_loss(student: torch.Tensor, teacher: torch.Tensor, cfg: EmbeddingLoss) -> torch.Tensor:
    """cfg.mse * mean ||s - t||^2 + cfg.cosine * mean (1 - cos(s, t)) over a batch of (B, D) embeddings."""
    s, t = student.float(), teacher.float()
    loss = s.new_zeros(())
    if cfg.mse:
        loss = loss + cfg.mse * (s - t).pow(2).sum(dim=-1).mean()
    if cfg.cosine:
        loss = loss + cfg.cosine * (1.0 - F.cosine_similarity(s, t, dim=-1)).mean()
    return loss


def embedding_distillation_loss(teacher: torch.nn.Module, cfg: EmbeddingLoss):
    """loss_fn(model, batch) for the training loop: the embedding loss against the batch's `teacher_logits` (the
    teacher's embeddings, cached with the transfer set), or against the teacher run on the batch."""

    def loss_fn(model, batch):
        ids, mask = batch["input_ids"], batch["attention_mask"]
        emb = model(input_ids=ids, attention_mask=mask).logits  # (B, D)
        target = batch.get("teacher_logits")
        if target is None:
            with torch.no_grad():
                target = teacher.eval().to(ids.device)(input_ids=ids, attention_mask=mask).logits
        return embedding_loss(emb, target, cfg), emb

    loss_fn.remove = lambda: None
    return loss_fn


def mean_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean cosine similarity of matching rows of two (N, D) arrays."""
    return float(F.cosine_similarity(a.float(), b.float(), dim=-1).mean()) if len(a) else 0.0


def teacher_embeddings(teacher: torch.nn.Module, split: dict) -> torch.Tensor:
    """The teacher's embeddings of an encoded split, kept on the teacher so each step computes them once."""
    key = (split["input_ids"].data_ptr(), tuple(split["input_ids"].shape))
    cache = teacher.__dict__.setdefault("_embedding_cache", {})
    if key not in cache:
        cache[key] = predict(teacher, split)
    return cache[key]


def validation(teacher: torch.nn.Module | None, split: dict, teacher_split: dict | None = None) -> dict:
    """Keyword arguments for the training loop: in embedding mode, evaluate by the mean cosine with the teacher's
    embeddings of `split` and keep the best epoch by it; {} for a classifier teacher (accuracy, the loop's default).
    `teacher_split`: the same texts encoded with the teacher's tokenizer, where the model's differs (after prune_vocab)."""
    if teacher is None or not is_embedding(teacher):
        return {}
    target = teacher_embeddings(teacher, split if teacher_split is None else teacher_split)

    def evaluate(model, accelerator):
        return {VAL_COSINE: mean_cosine(predict(model, split, device=accelerator.device), target)}

    return {"evaluate": evaluate, "monitor": VAL_COSINE}


def score_key(teacher) -> str:
    """The validation metric a step records: val_cosine in embedding mode, else val_accuracy."""
    return VAL_COSINE if teacher is not None and is_embedding(teacher) else "val_accuracy"


def val_score(teacher, model: torch.nn.Module, split: dict, teacher_split: dict | None = None) -> float:
    """The model's validation score: mean cosine with the teacher (embedding mode; the teacher reads `teacher_split`,
    the same texts in its own tokenizer's ids, when given) or accuracy."""
    if teacher is not None and is_embedding(teacher):
        target = teacher_embeddings(teacher, split if teacher_split is None else teacher_split)
        return round(mean_cosine(predict(model, split), target), 5)
    return round((predict(model, split).argmax(-1) == split["labels"]).float().mean().item(), 5)


def probe_loss(output: torch.Tensor, seed: int) -> torch.Tensor:
    """Sum over texts of <r_x, e(x)> with r_x a seeded standard normal direction per text: what Taylor importance
    differentiates in embedding mode (module docstring)."""
    g = torch.Generator().manual_seed(seed)
    r = torch.randn(output.shape, generator=g).to(output.device, output.dtype)  # (B, D)
    return (output * r).sum()


__all__ = ["VAL_COSINE", "EmbeddingLoss", "embedding_distillation_loss", "embedding_loss", "is_embedding", "mean_cosine",
           "probe_loss", "score_key", "teacher_embeddings", "val_score", "validation"]
