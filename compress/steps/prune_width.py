"""The `prune_width` step: narrow the residual stream `dim` of a Transformer with torch-pruning, then recover.

CoFi (Xia et al. 2022, "Structured Pruning Learns Compact and Accurate Models") prunes hidden
dimensions because a narrower model cut out of a pretrained one keeps much of what pretraining
gave it, where a narrower student initialised at random does not.

The residual width is one set of channels shared by everything that reads or writes the stream:
the token and position tables and their LayerNorm (or the output of `embeddings.proj` when the
tables are narrower, ELECTRA), every block's LayerNorms, the input side of q_proj/k_proj/v_proj
and up_proj, the output side of out_proj and down_proj, the final LayerNorm and the input of the
head (classifier_dense, else classifier). torch-pruning's dependency graph (Fang et al. 2023,
"DepGraph: Towards Any Structural Pruning") traces the model once and returns that whole group
from one root, so all of them are cut at the same channels. The group is checked against the list
above: a tensor the graph coupled that must not be cut, or one it missed (an attention kind whose
forward it cannot follow), is an error that names it. Only the residual width shrinks:
n_heads * head_dim (the q/k/v outputs), ffn_dim and the number of classes stay, and so does the
output width of classifier_dense (`config.classifier_dim` keeps it). `config.dim` is updated in
the same function that cuts (STYLE.md rule 7).

Channels are ranked with torch-pruning's group criteria: `magnitude` (each channel's L2 norm in
every weight of the group, normalised per layer, DepGraph) or `taylor` (|w * dL/dw| summed over
the channel's weights, Molchanov et al. 2019, with the gradient of the cross-entropy on held-out
batches, as prune_heads scores heads). The kept width is rounded to a multiple of `round_to`.

What the cut preserves, exactly: every kept weight is the original's at the kept channels, and the
pruned model computes what the original computes when the removed channels are zeroed wherever
the stream is written and every LayerNorm takes its statistics over the kept channels only
(tests/test_prune_width.py checks both). It does not compute the original function even when the
removed channels carry nothing: a LayerNorm's mean and variance over fewer channels differ. The
recovery that follows (the shared `recover:` block, distilling from the teacher) adapts the rest.
"""

import copy
import tempfile
import warnings
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from compress.errors import RecipeError
from compress.models.shape import ModelShape
from compress.run.config_base import NAME_PATTERN, StepConfig
from compress.run.registry import register_step, stage_history
from compress.training.batches import predict
from compress.training.embedding import is_embedding, probe_loss, score_key, val_score, validation
from compress.training.importance import scoring_batches
from compress.training.loop import train
from compress.training.recover import RecoverConfig, recover_inputs, recovery

METHODS = ("taylor", "magnitude")


class PruneWidthConfig(StepConfig):
    """Narrow the residual stream (dim) of a Transformer stage, then recover accuracy by distillation."""

    kind: Literal["prune_width"] = "prune_width"
    parent: str | None = Field(None, pattern=NAME_PATTERN)  # stage to prune; default: the current model's stage
    amount: float | None = Field(None, gt=0, lt=1)  # fraction of the residual width removed, e.g. 0.25
    dim: int | None = Field(None, ge=1, le=65536)  # or: the width kept, a multiple of round_to
    round_to: int = Field(8, ge=1, le=1024)  # the kept width is a multiple of this (matrix kernels like multiples of 8)
    importance: Literal[METHODS] = "taylor"  # taylor: |w * grad| on held-out batches | magnitude: weight L2 norm
    score_split: Literal["validation", "train"] = "validation"  # where taylor's gradients are computed (held-out, as prune_heads)
    score_batches: int = Field(8, ge=1, le=10000)  # batches of `score_split` taylor is computed on
    score_batch_size: int = Field(64, ge=1, le=65536)
    seed: int | None = None  # scoring sample; default: the recipe's seed
    recover: RecoverConfig = Field(default_factory=RecoverConfig)

    @model_validator(mode="after")
    def check_target(self):
        if (self.amount is None) == (self.dim is None):
            raise ValueError("give exactly one of `amount` (fraction of the width removed, e.g. 0.25) "
                             "or `dim` (the width kept, e.g. 256)")
        if self.dim is not None and self.dim % self.round_to:
            lower = self.dim // self.round_to * self.round_to
            raise ValueError(f"dim {self.dim} is not a multiple of round_to {self.round_to}; use {lower or self.round_to} or "
                             f"{lower + self.round_to}, or set round_to: 1")
        return self

    def check_recipe(self, steps: list, index: int) -> None:
        """Called by the recipe validator: the parent is an earlier stage with a torch model."""
        parent, model_stages, _ = stage_history(steps, index, self.parent)
        if parent not in model_stages:
            raise ValueError(f"steps[{index}] (prune_width {self.name!r}): parent {parent!r} is not an earlier stage with "
                             f"a torch model; choose one of {model_stages}")

    def check_shape(self, shape: ModelShape, teacher: ModelShape) -> ModelShape:
        """The parent's shape -> the narrower one (compress/run/preflight.py); ValueError naming the fix."""
        if not shape.is_transformer():
            raise ValueError(f"its parent is {shape.describe()}; width pruning needs a Transformer stage: start it from one "
                             "with `parent:`")
        return shape.evolve(dim=checked_width(shape.dim, shape.embed_dim, self))


# --------------------------------------------------------------------------- the residual group


def expected_cuts(model: nn.Module) -> dict[str, str]:
    """Module name -> "in" | "out": every side of a module that carries the residual stream (branches in use)."""
    cuts = {}
    if model.embeddings.proj is not None:
        cuts["embeddings.proj"] = "out"
    else:
        cuts |= {"embeddings.tok": "out", "embeddings.pos": "out", "embeddings.norm": "out"}
        if model.embeddings.typ is not None:  # the segment table of a pair model
            cuts["embeddings.typ"] = "out"
    for i, block in enumerate(model.layers):
        if block.attn is not None:
            cuts |= {f"layers.{i}.norm1": "out", f"layers.{i}.attn.out_proj": "out"}
            cuts |= {f"layers.{i}.attn.{p}": "in" for p in ("q_proj", "k_proj", "v_proj")}
        if block.mlp is not None:
            cuts |= {f"layers.{i}.norm2": "out", f"layers.{i}.mlp.up_proj": "in", f"layers.{i}.mlp.down_proj": "out"}
    if isinstance(model.norm, nn.LayerNorm):
        cuts["norm"] = "out"
    if model.classifier_dense is not None or model.classifier is not None:  # a sentence-embedding model may have no head
        cuts["classifier_dense" if model.classifier_dense is not None else "classifier"] = "in"
    return cuts


def dead_norms(model: nn.Module) -> list[nn.LayerNorm]:
    """LayerNorms of branches pruned away: not in the traced graph, but saved and rebuilt at width dim."""
    return ([block.norm1 for block in model.layers if block.attn is None]
            + [block.norm2 for block in model.layers if block.mlp is None])


def kinds_of(model: nn.Module) -> list[str]:
    return sorted({getattr(block.attn, "kind", type(block.attn).__name__) for block in model.layers if block.attn is not None})


def residual_group(model: nn.Module, example: dict):
    """torch-pruning's group of every channel of the residual stream, checked against `expected_cuts`."""
    import torch_pruning as tp

    emb = model.embeddings
    root, fn = (emb.proj, tp.prune_linear_out_channels) if emb.proj is not None else (emb.tok, tp.prune_embedding_out_channels)
    try:
        with warnings.catch_warnings(), torch.enable_grad():
            warnings.simplefilter("ignore")  # unwrapped parameters (Linformer's E/F) are reported, and are not on the stream
            graph = tp.DependencyGraph().build_dependency(
                model, example_inputs=example, output_transform=lambda out: out.logits, verbose=False)
            group = graph.get_pruning_group(root, fn, idxs=list(range(model.config.dim)))
    except Exception as e:  # torch-pruning raises many types on graphs it cannot follow
        raise RecipeError(f"prune_width: torch-pruning cannot trace this model (attention {kinds_of(model)}): "
                          f"{type(e).__name__}: {str(e)[:500]}") from e
    names = {m: n for n, m in model.named_modules()}
    params = {p: n for n, p in model.named_parameters()}
    found = {}
    for dep, _ in group:
        target = dep.target.module
        name = names.get(target) or params.get(target)
        if name is None:
            continue  # an operation (add, reshape, mean), not a tensor
        side = {"prune_in_channels": "in", "prune_out_channels": "out"}.get(getattr(dep.handler, "__name__", ""),
                                                                           str(dep.handler))
        found[name] = side
    expected = expected_cuts(model)
    extra = {n: s for n, s in found.items() if expected.get(n) != s}
    missing = sorted(set(expected) - set(found))
    if extra or missing:
        raise RecipeError(f"prune_width: torch-pruning's residual group does not match the model (attention {kinds_of(model)}): "
                          + (f"it would also cut {extra}, which must keep their width; " if extra else "")
                          + (f"it did not reach {missing} (an operation it cannot trace)" if missing else "").rstrip("; "))
    return group


def channel_scores(model: nn.Module, group, method: str, batches: list[dict]) -> torch.Tensor:
    """One score per residual channel (dim,): torch-pruning's group magnitude or group Taylor importance."""
    import torch_pruning as tp

    if method == "magnitude":
        return tp.importance.GroupMagnitudeImportance(p=2)(group).float().cpu()
    was_training = model.training
    model.eval()  # no dropout: the gradients are deterministic
    model.zero_grad(set_to_none=True)
    device = next(model.parameters()).device
    with torch.enable_grad():
        for i, batch in enumerate(batches):
            ids, mask, labels = (batch[k].to(device) for k in ("input_ids", "attention_mask", "labels"))
            out = model(input_ids=ids, attention_mask=mask).logits
            # a sentence-embedding model has no labels: its embedding along random directions (training/embedding.py)
            (probe_loss(out, i) / len(ids) if is_embedding(model) else F.cross_entropy(out, labels)).backward()
    scores = tp.importance.GroupTaylorImportance()(group).float().cpu()
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return scores


def kept_width(dim: int, cfg: PruneWidthConfig) -> int:
    """The width kept: cfg.dim, or dim * (1 - amount) rounded to the nearest multiple of round_to (at least round_to)."""
    if cfg.dim is not None:
        return cfg.dim
    return max(cfg.round_to, round(dim * (1 - cfg.amount) / cfg.round_to) * cfg.round_to)


def checked_width(dim: int, embed_dim: int | None, cfg: PruneWidthConfig) -> int:
    """The width kept from `dim`; ValueError when it removes nothing or equals the embeddings' width."""
    width = kept_width(dim, cfg)
    if width >= dim:
        raise ValueError(f"keeping {width} of {dim} channels removes nothing; raise amount or lower dim (a multiple of "
                         f"round_to {cfg.round_to}, below {dim})")
    if width == embed_dim:
        others = [w for w in (width - cfg.round_to, width + cfg.round_to) if 0 < w < dim]
        raise ValueError(f"the kept width {width} equals the embeddings' width (embed_dim), which a config reads as 'no "
                         f"projection' while the model keeps embeddings.proj; set dim to {others or 'another width'}")
    return width


def prune_width_(model: nn.Module, drop: list[int], example: dict) -> nn.Module:
    """Remove residual channels `drop` in place from every tensor that carries them; updates config.dim.

    `example` is a batch ({"input_ids", "attention_mask"}) torch-pruning traces the model with.
    """
    config = model.config
    dim = config.dim
    if not drop:
        return model
    if len(set(drop)) != len(drop) or not all(0 <= c < dim for c in drop):
        raise ValueError(f"channels to remove must be distinct and in 0..{dim - 1}, got {sorted(drop)[:10]}...")
    width = dim - len(drop)
    if width < 1:
        raise ValueError(f"cannot remove all {dim} channels of the residual stream")
    if config.embed_dim is not None and width == config.embed_dim:
        raise ValueError(f"the kept width {width} equals embed_dim, which the config reads as 'no projection' while the model "
                         "keeps embeddings.proj; keep another width")
    import torch_pruning as tp

    shapes = {n: tuple(m.weight.shape) for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    residual_group(model, example).prune(idxs=list(drop))
    for norm in dead_norms(model):  # untraced (their branch is gone), but rebuilt at width dim on reload
        tp.prune_layernorm_out_channels(norm, list(drop))
    config.dim = width
    if model.classifier_dense is not None and config.classifier_dim is None:
        config.classifier_dim = dim  # the head's own width stays
    check_widths(model, shapes)
    return model


def check_widths(model: nn.Module, before: dict[str, tuple[int, int]]) -> None:
    """Every Linear lost exactly its residual side (q/k/v/up outputs, out/down inputs and the classes are
    unchanged) and every LayerNorm on the stream has the new width."""
    width, cuts = model.config.dim, expected_cuts(model)
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            rows, cols = before[name]
            side = cuts.get(name)
            want = (width if side == "out" else rows, width if side == "in" else cols)
        elif isinstance(module, nn.LayerNorm):
            narrow = name == "embeddings.norm" and model.embeddings.proj is not None  # the tables' own width
            want = (model.config.embed_dim if narrow else width,)
        else:
            continue
        got = tuple(module.weight.shape)
        assert got == want, f"{name}: {got} after pruning, expected {want}"


def check_reload(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> float:
    """Save, reload with `from_pretrained` and return max |logits - reloaded logits|; raise if they differ."""
    model = model.eval()
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        model.save_pretrained(tmp)
        again = type(model).from_pretrained(tmp).eval().to(next(model.parameters()).device)
        diff = float((model(input_ids=ids, attention_mask=mask).logits
                      - again(input_ids=ids, attention_mask=mask).logits).abs().max())
    if diff > 0:
        raise AssertionError(f"prune_width: the pruned model reloads with different logits (max |diff| {diff:.3g})")
    return diff


# --------------------------------------------------------------------------- the step


def accuracy(model: nn.Module, split: dict) -> float:
    return round((predict(model, split).argmax(-1) == split["labels"]).float().mean().item(), 5)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@register_step("prune_width", PruneWidthConfig, makes_stage=True, inputs=recover_inputs)
def prune_width(model, cfg: PruneWidthConfig, ctx):
    """Remove the least important residual channels of every layer at once, then recover by distillation."""
    from compress.models import SlimformerForSequenceClassification

    parent = ctx.parent(cfg.parent)
    model = copy.deepcopy(model) if parent == ctx.parent() else ctx.load_model(parent)
    if not isinstance(model, SlimformerForSequenceClassification):
        raise RecipeError(f"prune_width {cfg.name!r}: stage {parent!r} is a {type(model).__name__}; "
                          "width pruning needs a Transformer stage")
    model = model.cpu().eval()
    dim, params = model.config.dim, n_params(model)
    try:  # checked before the run (check_shape); here against the model itself
        width = checked_width(dim, model.config.embed_dim, cfg)
    except ValueError as e:
        raise RecipeError(f"prune_width {cfg.name!r}: {e}") from None
    seed = ctx.recipe.seed if cfg.seed is None else cfg.seed
    batches = scoring_batches(ctx.encoded[cfg.score_split], cfg.score_batches, cfg.score_batch_size, seed)
    example = {"input_ids": batches[0]["input_ids"][:2], "attention_mask": batches[0]["attention_mask"][:2]}
    val, teacher_val = ctx.encoded["validation"], ctx.base_encoded["validation"]  # the teacher reads the run's tokenizer
    teacher, key = ctx.teacher, score_key(ctx.teacher)  # embedding mode: the mean cosine with the teacher, not accuracy
    unpruned = val_score(teacher, model, val, teacher_val)
    model.add_projection_()  # an embedding model keeps its width: an identity projection, whose input side the cut narrows
    scores = channel_scores(model, residual_group(model, example), cfg.importance, batches)
    drop = sorted(torch.argsort(scores, stable=True)[: dim - width].tolist())  # the lowest scores
    prune_width_(model, drop, example)
    check_reload(model, example["input_ids"], example["attention_mask"])
    before = val_score(teacher, model, val, teacher_val)
    ctx.record("parent", parent)
    ctx.log(event="prune_width", dim=width, **{f"{key}_before_recovery": before})
    after = before
    if cfg.recover.epochs:
        split, loss = recovery(ctx, cfg.recover)
        model, curve = train(model, split, val, cfg.recover, loss, seed=seed, device=ctx.device, log=ctx.log,
                             desc=f"recover {cfg.name}", **validation(teacher, val, teacher_val))
        ctx.record("train_curve", curve)
        after = max(p[key] for p in curve)
    ctx.record("width", {
        "dim_before": dim, "dim_after": width, "fraction_removed": round(1 - width / dim, 5), "round_to": cfg.round_to,
        "importance": cfg.importance, "score_split": cfg.score_split, "params_before": params, "params_after": n_params(model),
        "embed_dim": model.config.embed_dim, "head_dim": model.config.head_dim, f"{key}_unpruned": unpruned,
    })
    ctx.record(f"{key}_before_recovery", before)
    ctx.record(key, after)
    return model.eval()
