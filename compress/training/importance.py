"""How much each attention head and each FFN neuron matters: the scores pruning ranks by.

Methods (the `importance` field of `prune_heads` / `prune_ffn`), registered in `IMPORTANCE`:
- `taylor`: head-mask gradient sensitivity (Michel et al. 2019, "Are Sixteen Heads Really
  Better than One?"): a gate xi_h multiplies each head's output; I_h = E_x |dL(x)/dxi_h| at
  xi = 1 over a few training batches, the first-order estimate of the loss change when the head
  is removed. For FFN neurons the gate sits on each neuron's activation (Molchanov et al. 2017's
  Taylor criterion, per neuron). A sentence-embedding model has no labels: L is its embedding
  projected on a seeded random direction per text (`compress/training/embedding.py: probe_loss`).
- `magnitude`: L2 norm of a head's weights (its rows of q_proj/k_proj/v_proj and its columns of
  out_proj); for a neuron, its row of up_proj and column of down_proj.
- `attention_entropy` (heads only): how far each head's attention softmax(Q K^T / sqrt(d)) is
  from uniform over the real keys, log(n_keys) - entropy, averaged over real queries; sharp heads
  score high, heads that average everything score low. Computed from the captured q_proj/k_proj
  outputs, so it works for every attention kind (for the efficient kinds it scores the full
  attention their projections define).
- `random`: seeded uniform scores, the baseline every pruning paper compares against.

Scores are normalised per layer by their L2 norm before a global ranking (Michel et al. 2019),
so layers with large gradients do not lose all their heads first.

Gates need no change to any attention kernel: every kind's `out_proj` receives the heads
concatenated in order, (B, T, n_heads * head_dim), and every MLP's `down_proj` receives the
neuron activations (B, T, ffn_dim); a forward pre-hook multiplies them by the gate.
"""

from collections.abc import Callable
from typing import Literal, Self

import torch
import torch.nn.functional as F
from torch import nn

from compress.training.embedding import is_embedding, probe_loss

Unit = Literal["heads", "neurons"]
Scores = dict[int, torch.Tensor]  # layer index -> (n_units,) one score per head / neuron of that layer
ImportanceFn = Callable[[nn.Module, str, list[int], list[dict], int], Scores]

IMPORTANCE: dict[str, ImportanceFn] = {}
UNITS_OF: dict[str, tuple[str, ...]] = {}  # method -> the units it can score


def register_importance(name: str, units: tuple[str, ...] = ("heads", "neurons")):
    """Register `fn(model, unit, layers, batches, seed) -> Scores` as importance method `name`."""

    def decorator(fn: ImportanceFn) -> ImportanceFn:
        IMPORTANCE[name] = fn
        UNITS_OF[name] = units
        return fn

    return decorator


def gated_linear(model: nn.Module, unit: str, i: int) -> nn.Linear | None:
    """The Linear whose input carries layer i's heads (`out_proj`) or neurons (`down_proj`); None when pruned away."""
    block = model.layers[i]
    if unit == "heads":
        return block.attn.out_proj if block.attn is not None else None
    return block.mlp.down_proj if block.mlp is not None else None


def n_units(model: nn.Module, unit: str, i: int) -> int:
    """Heads or FFN neurons layer i has now (0 when that branch was pruned away)."""
    block = model.layers[i]
    if unit == "heads":
        return block.attn.n_heads if block.attn is not None else 0
    return block.mlp.down_proj.in_features if block.mlp is not None else 0


class Gates:
    """Multiply each head's (or FFN neuron's) output by a gate, with forward pre-hooks; a context manager.

    `values` sets the gates (1 keeps a unit, 0 masks it), (n_units,) or one row per example
    (B, n_units); missing layers get ones. With `requires_grad`, the gates are leaves whose
    gradients are Michel et al.'s sensitivities.
    """

    def __init__(self, model: nn.Module, unit: str, layers: list[int], values: Scores | None = None, requires_grad: bool = False):
        self.unit, self.gates, self.handles = unit, {}, []
        for i in layers:
            linear = gated_linear(model, unit, i)
            if linear is None:
                continue
            weight = linear.weight
            gate = values[i].detach().clone() if values is not None and i in values else torch.ones(n_units(model, unit, i))
            self.gates[i] = gate.to(weight.device, weight.dtype).requires_grad_(requires_grad)
            self.handles.append(linear.register_forward_pre_hook(self.hook(self.gates[i])))

    def hook(self, gate: torch.Tensor):
        def multiply(module, args):
            x = args[0]  # (B, T, n_units * width): heads of head_dim each, or neurons of width 1
            B, T, C = x.shape
            g = gate[:, None, :, None] if gate.ndim == 2 else gate[:, None]  # per example (B, n_units) or shared (n_units,)
            gated = x.reshape(B, T, gate.shape[-1], -1) * g  # (B, T, n_units, width)
            return (gated.reshape(B, T, C), *args[1:])

        return multiply

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def scoring_batches(split: dict, n_batches: int, batch_size: int, seed: int) -> list[dict]:
    """A seeded sample of `n_batches` training batches (padding trimmed) to score importance on."""
    from compress.training.batches import trim

    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(split["input_ids"]), generator=g)[: n_batches * batch_size]
    batches = []
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        ids, mask = trim(split["input_ids"][index], split["attention_mask"][index])
        batches.append({"input_ids": ids, "attention_mask": mask, "labels": split["labels"][index]})
    return batches


def normalize_per_layer(scores: Scores) -> Scores:
    """Each layer's scores divided by their L2 norm (Michel et al. 2019, before the global ranking)."""
    return {i: s / s.norm().clamp(min=1e-12) for i, s in scores.items()}


def importance(model: nn.Module, unit: str, method: str, layers: list[int], batches: list[dict], seed: int = 0,
               normalize: bool = True) -> Scores:
    """Scores of every remaining head (unit="heads") or FFN neuron ("neurons") of `layers`, as float32 on CPU."""
    if method not in IMPORTANCE:
        raise ValueError(f"unknown importance {method!r}; choose one of {sorted(IMPORTANCE)}")
    if unit not in UNITS_OF[method]:
        raise ValueError(f"importance {method!r} scores {' and '.join(UNITS_OF[method])} only, not {unit}")
    layers = [i for i in layers if n_units(model, unit, i) > 0]
    was_training = model.training
    model.eval()  # no dropout: the scores are deterministic
    try:
        scores = IMPORTANCE[method](model, unit, layers, batches, seed)
    finally:
        model.train(was_training)
    scores = {i: s.detach().float().cpu() for i, s in scores.items()}
    return normalize_per_layer(scores) if normalize else scores


def device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@register_importance("taylor")
def taylor(model: nn.Module, unit: str, layers: list[int], batches: list[dict], seed: int) -> Scores:
    """Michel et al. 2019, eq. 2: I_h = mean over examples x of |dL(x)/dgate_h| at gate = 1, L the cross-entropy.

    Each example gets its own gates, so the absolute value is taken per example as in the
    equation (summing over a batch first would let opposite signs cancel).
    """
    device = device_of(model)
    scores = {i: torch.zeros(n_units(model, unit, i)) for i in layers}
    count = 0
    for batch in batches:
        ids, mask, labels = (batch[k].to(device) for k in ("input_ids", "attention_mask", "labels"))
        ones = {i: torch.ones(len(ids), n_units(model, unit, i)) for i in layers}  # (B, n_units)
        with Gates(model, unit, layers, values=ones, requires_grad=True) as gates:
            out = model(input_ids=ids, attention_mask=mask).logits
            if is_embedding(model):  # no labels: the embedding's first-order change along a random direction per text
                loss = probe_loss(out, seed * 1_000_003 + count)
            else:
                loss = F.cross_entropy(out, labels, reduction="sum")  # sum: per-example gradients
            # only the gates: parameters' .grad stay untouched
            grads = torch.autograd.grad(loss, [gates.gates[i] for i in layers])
        for i, g in zip(layers, grads, strict=True):
            scores[i] += g.detach().abs().sum(dim=0).cpu()
        count += len(ids)
    return {i: s / max(count, 1) for i, s in scores.items()}


@register_importance("magnitude")
def magnitude(model: nn.Module, unit: str, layers: list[int], batches: list[dict], seed: int) -> Scores:
    """L2 norm of every weight that belongs to one head (q/k/v rows, out_proj columns) or one neuron."""
    scores = {}
    for i in layers:
        block = model.layers[i]
        if unit == "heads":
            attn, n = block.attn, block.attn.n_heads
            rows = [p.weight.reshape(n, -1) for p in (attn.q_proj, attn.k_proj, attn.v_proj)]  # (H, head_dim * dim) each
            # (H, dim * head_dim)
            cols = attn.out_proj.weight.reshape(attn.out_proj.out_features, n, -1).transpose(0, 1).reshape(n, -1)
            parts = rows + [cols]
        else:
            parts = [block.mlp.up_proj.weight, block.mlp.down_proj.weight.T]  # (ffn_dim, dim) each
        scores[i] = torch.stack([p.pow(2).sum(dim=1) for p in parts]).sum(dim=0).sqrt()
    return scores


@register_importance("random")
def random_scores(model: nn.Module, unit: str, layers: list[int], batches: list[dict], seed: int) -> Scores:
    """Seeded uniform scores: the baseline."""
    g = torch.Generator().manual_seed(seed)
    return {i: torch.rand(n_units(model, unit, i), generator=g) for i in layers}


@register_importance("attention_entropy", units=("heads",))
@torch.no_grad()
def attention_entropy(model: nn.Module, unit: str, layers: list[int], batches: list[dict], seed: int) -> Scores:
    """Mean over real queries of log(n_real_keys) - entropy(softmax(q k^T / sqrt(d))), per head."""
    device = device_of(model)
    captured: dict = {}
    handles = []
    for i in layers:
        attn = model.layers[i].attn
        for name in ("q_proj", "k_proj"):
            handles.append(getattr(attn, name).register_forward_hook(
                lambda m, a, out, key=(i, name): captured.__setitem__(key, out)))
    totals = {i: torch.zeros(n_units(model, unit, i)) for i in layers}
    count = 0.0
    try:
        for batch in batches:
            mask = batch["attention_mask"].to(device).bool()  # (B, T)
            model(input_ids=batch["input_ids"].to(device), attention_mask=mask.long())
            n_keys = mask.sum(dim=1).clamp(min=1).float()  # (B,)
            count += float(mask.sum())
            for i in layers:
                d = model.layers[i].attn.head_dim
                q, k = (captured[(i, name)] for name in ("q_proj", "k_proj"))
                B, T, _ = q.shape
                q = q.float().view(B, T, -1, d).transpose(1, 2)  # (B, H, T, d)
                k = k.float().view(B, T, -1, d).transpose(1, 2)
                scores = (q @ k.transpose(-1, -2)) * d**-0.5  # (B, H, T, T)
                logp = scores.masked_fill(~mask[:, None, None, :], float("-inf")).log_softmax(dim=-1)
                entropy = -(logp.exp() * logp.masked_fill(~mask[:, None, None, :], 0.0)).sum(dim=-1)  # (B, H, T)
                sharpness = n_keys.log()[:, None, None] - entropy  # >= 0: 0 for uniform attention
                totals[i] += (sharpness * mask[:, None, :]).sum(dim=(0, 2)).cpu()
            captured.clear()
    finally:
        for handle in handles:
            handle.remove()
    return {i: t / max(count, 1.0) for i, t in totals.items()}
