"""Distillation losses: soft targets, hidden states and attention relations.

- `soft_target_loss`: KL(teacher || student) of temperature-softened class distributions,
  scaled by T^2 so its gradients keep their size as T changes (Hinton et al. 2015).
- `logits_loss`: the weighted soft-target + hard-label objective of Hinton et al. 2015; the one
  implementation behind `distill` and the recovery of `swap_attention` and `prune_*`.
- `hidden_loss`: MSE between a student layer's output and its mapped teacher layer's, through a
  learned linear projection when widths differ (TinyBERT, Jiao et al. 2020).
- `relation_loss`: KL between teacher and student *relations* softmax(A B^T / sqrt(d)) of the
  query/key (= attention probabilities) or value/value vectors (MiniLM, Wang et al. 2020).
  Both sides are split into the same number of relation heads, so it works when head counts
  and widths differ (MiniLM-v2); padded keys are masked, padded queries ignored.

Every loss is 0 when the student equals the teacher (a test checks this) and takes masks of
shape (B, T) with 1 for real tokens.
"""

import math

import torch
import torch.nn.functional as F


def soft_target_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(softmax(t/T) || softmax(s/T)), averaged over the batch."""
    t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)  # (B, C)
    s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    return F.kl_div(s, t, log_target=True, reduction="batchmean") * temperature**2


def logits_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor | None, labels: torch.Tensor, w_logits: float,
                w_hard: float, temperature: float) -> torch.Tensor:
    """w_logits * soft_target_loss + w_hard * CE(student, labels); a zero weight skips its term
    (so `teacher_logits` may be None when w_logits is 0)."""
    loss = student_logits.new_zeros(())
    if w_logits:
        loss = loss + w_logits * soft_target_loss(student_logits, teacher_logits, temperature)
    if w_hard:
        loss = loss + w_hard * F.cross_entropy(student_logits, labels)
    return loss


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of (B, T, ...) over real positions."""
    m = mask.to(x.dtype).view(*mask.shape, *([1] * (x.ndim - 2)))
    return (x * m).sum() / (m.sum() * math.prod(x.shape[2:])).clamp(min=1.0)


def hidden_loss(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """MSE over real tokens between (B, T, dim) hidden states (project the student's first)."""
    return masked_mean((student_hidden.float() - teacher_hidden.float()) ** 2, mask)


def relation_log_probs(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor, n_relations: int) -> torch.Tensor:
    """log softmax(A B^T / sqrt(d)) per relation head: (B, T, C) x2 -> (B, R, T, T)."""
    B, T, C = a.shape
    d = C // n_relations
    a = a.float().view(B, T, n_relations, d).transpose(1, 2)  # (B, R, T, d)
    b = b.float().view(B, T, n_relations, d).transpose(1, 2)
    scores = a @ b.transpose(-1, -2) / math.sqrt(d)  # (B, R, T, T)
    scores = scores.masked_fill(mask[:, None, None, :] == 0, torch.finfo(scores.dtype).min)
    return F.log_softmax(scores, dim=-1)


def relation_loss(student: tuple[torch.Tensor, torch.Tensor], teacher: tuple[torch.Tensor, torch.Tensor], mask: torch.Tensor,
                  n_relations: int) -> torch.Tensor:
    """KL(teacher relation || student relation), summed over keys, averaged over real queries and heads."""
    t = relation_log_probs(*teacher, mask, n_relations)
    s = relation_log_probs(*student, mask, n_relations)
    keys = mask[:, None, None, :].bool()  # (B, 1, 1, T)
    kl = torch.where(keys, t.exp() * (t - s), torch.zeros_like(t)).sum(dim=-1)  # (B, R, T)
    return masked_mean(kl.transpose(1, 2), mask)  # queries on dim 1


def relation_heads(teacher_width: int, student_width: int, teacher_heads: int, student_heads: int) -> int:
    """Relation heads both sides can be split into: the gcd of the head counts, dividing both widths."""
    r = math.gcd(teacher_heads, student_heads)
    while r > 1 and (teacher_width % r or student_width % r):
        r -= 1
    return max(r, 1)
