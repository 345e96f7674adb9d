"""Swap a model's attention for an efficient kind, then recover accuracy by distilling from the full-attention teacher.

`swap_attention_` replaces the attention of the selected layers in place: each new module is
built with the layer's current head count, takes the old module's `q_proj`/`k_proj`/`v_proj`/
`out_proj` weights (and any extra tensor of the same name and shape), and only the new kind's
extras start fresh (Linformer's E/F, Performer's features, BigBird's random layout);
`model.config.attention[i]` is updated in the same call, so the model saves and reloads exactly.

Layers are chosen with the one selector vocabulary (`compress/select.py`, STYLE.md rule 8):
`layers` globs over the attention modules' names `layers.<i>.attn`, a parent's name counting
(`layers.1`, `layers.*`, `*`); a bare index glob (`0`, `1*`) is shorthand for `layers.<glob>`.

Swapping one layer at a time: `layers: [1]` swaps layer 1 only and keeps every other layer's
module (full attention, weights untouched), so a recipe with one step per layer shows which
layers tolerate the swap. Arguments a recipe leaves out are filled from the model's length by
the kind's `length_defaults` (Linformer: `max_len` and `k` = min(max_len, max(64, max_len // 4))).
`max_len:` first extends the learned positions (`extend_positions_`: `copy` or `interpolate`),
for a student that must read longer inputs than the teacher's positions cover.

The `swap_attention` step then trains the swapped model with the one training loop and a
distillation loss (Hinton et al. 2015, "Distilling the Knowledge in a Neural Network"): KL
divergence to the teacher's temperature-softened logits, scaled by T^2, plus cross-entropy on
the labels (`compress.training.losses.logits_loss`, shared with `distill`); the teacher's logits on the
training split are computed once. `recover.attention_output` > 0 adds per-layer attention-output
distillation (MSE to the teacher's attention-block outputs, `compress/training/recover.py`), teaching
each swapped layer what full attention computed there. The kinds: BigBird (Zaheer et al.
2020), Linformer (Wang et al. 2020), Performer (Choromanski et al. 2021); see
`compress/models/attention_*.py`.

What each kind needs to recover well, and where it is set (all in `args`):
- bigbird: `n_global` global blocks (default 1: the first block, so [CLS] at position 0 and its
  block see and are seen by every token, BigBird's ITC form);
- linformer: `k` from the length unless given, `share_layers: true` for one E across layers;
- performer: orthogonal random features (always), redrawn every `redraw_interval` training
  forwards, i.e. every `redraw_interval` optimiser steps of the one loop (0 = never).
"""

import copy
import inspect
import re
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from compress.errors import RecipeError
from compress.models import ATTENTION, build_attention
from compress.models.shape import ModelShape
from compress.run.config_base import NAME_PATTERN, StepConfig
from compress.run.registry import register_step
from compress.select import select_names
from compress.training.batches import predict
from compress.training.curriculum import CurriculumPhase
from compress.training.loop import train, train_curriculum
from compress.training.recover import RecoverConfig, recover_inputs, recovery

PROJECTIONS = ("q_proj", "k_proj", "v_proj", "out_proj")
CONTRACT_ARGS = ("dim", "n_heads", "head_dim", "dropout")  # every kind's constructor takes these; the model supplies them
INDEX_GLOB = re.compile(r"[0-9*?\[\]!-]+")  # "0", "1*", "[01]": a glob over layer indices, shorthand for "layers.<glob>"


class SwapRecoverConfig(RecoverConfig):
    """Recovery after a swap: `recover:`'s fields plus per-layer attention-output distillation."""

    attention_output: float = Field(0.0, ge=0)  # weight of the per-layer MSE to the teacher's attention outputs; 0 = off
    # length curriculum before recovery on the task (compress/training/curriculum.py): the swapped model relearns the
    # task's match on short redrawn inputs, where its gradient is not spread over 1K tokens
    curriculum: list[CurriculumPhase] = Field(default_factory=list)

    @model_validator(mode="after")
    def needs_teacher(self):
        if self.attention_output and self.distill_from != "teacher":
            raise ValueError("attention_output distils from the teacher: set distill_from: teacher or attention_output: 0")
        return self


class SwapAttentionConfig(StepConfig):
    """Swap the attention of selected layers for another kind and recover accuracy by distillation."""

    kind: Literal["swap_attention"] = "swap_attention"
    to: str  # the attention kind to swap in: bigbird | linformer | performer | full
    args: dict[str, Any] = Field(default_factory=dict)  # that kind's arguments, e.g. {k: 128} for linformer
    # module-name globs (compress/select.py): "*", "layers.1", "layers.*.attn"; 0 or "0" = "layers.0"
    layers: list[str] = Field(default_factory=lambda: ["*"], min_length=1)
    source: Literal["current", "teacher"] = "current"  # swap the current stage's model, or a copy of the teacher
    max_len: int | None = Field(None, ge=1)  # extend the learned positions to this length before swapping; null = keep
    extend: Literal["copy", "interpolate"] = "copy"  # how new position rows start: repeat the trained table, or stretch it
    recover: SwapRecoverConfig = Field(default_factory=SwapRecoverConfig)
    name: str | None = Field(None, pattern=NAME_PATTERN)  # the stage this step makes; default: the kind swapped in

    @model_validator(mode="after")
    def default_name(self):
        if self.name is None:
            self.name = self.to
        return self

    @field_validator("to")
    @classmethod
    def known_kind(cls, to: str) -> str:
        if to not in ATTENTION:
            raise ValueError(f"unknown attention kind {to!r}; choose one of {sorted(ATTENTION)}")
        return to

    @field_validator("layers", mode="before")
    @classmethod
    def indices_as_globs(cls, layers):
        if isinstance(layers, (int, str)):
            layers = [layers]
        return ([str(g) if isinstance(g, int) and not isinstance(g, bool) else g for g in layers]
                if isinstance(layers, list) else layers)

    @field_validator("layers")
    @classmethod
    def non_empty_globs(cls, layers: list[str]) -> list[str]:
        if any(not g.strip() for g in layers):
            raise ValueError("layers globs must be non-empty strings such as '*', 'layers.1' or '0'")
        return layers

    @field_validator("args")
    @classmethod
    def known_args(cls, args: dict, info: ValidationInfo) -> dict:
        if info.data.get("to") in ATTENTION:
            check_args(info.data["to"], args)
        return args

    def check_shape(self, shape: ModelShape, teacher: ModelShape) -> ModelShape:
        """The shape it swaps (the current stage's, or the teacher's) -> the shape it makes (compress/run/preflight.py)."""
        base = teacher if self.source == "teacher" else shape
        if not base.is_transformer():
            raise ValueError(f"it would swap the attention of {base.describe()}; swap_attention needs a Transformer stage "
                             "(source: teacher swaps a copy of the teacher)")
        check_max_len(self.max_len, base.max_len)
        with_attention = [f"layers.{i}.attn" for i, (_, most) in enumerate(base.n_heads) if most > 0]
        if not select_names(with_attention, include=layer_globs(self.layers)):
            raise ValueError(no_layer_message(self.layers, base.n_layers))
        return base.evolve(max_len=max(self.max_len or 0, base.max_len))


def kind_args(kind: str) -> list[str]:
    """The arguments a kind takes beyond the contract's (dim, n_heads, head_dim, dropout)."""
    return [p for p in inspect.signature(ATTENTION[kind].__init__).parameters if p not in ("self", *CONTRACT_ARGS)]


def check_args(kind: str, args: dict) -> None:
    """ValueError naming unknown arguments, or the kind's own complaint about a bad value."""
    valid = kind_args(kind)
    unknown = [a for a in args if a not in valid]
    if unknown:
        raise ValueError(f"{kind} has no argument(s) {unknown}; valid: {', '.join(valid) or 'none'}")
    try:
        ATTENTION[kind](dim=8, n_heads=1, head_dim=8, **args)  # a tiny build: bad values fail here, not mid-run
    except (TypeError, ValueError) as e:
        raise ValueError(f"{kind} args {args}: {e}") from None


def check_max_len(max_len: int | None, current: int) -> None:
    """ValueError when `max_len` would shrink the model's `current` learned positions."""
    if max_len is not None and max_len < current:
        raise ValueError(f"max_len {max_len} would shrink the {current} learned positions; give at least {current} or leave it "
                         "out")


def no_layer_message(layers: list[str], n_layers: int) -> str:
    return f"layers {list(layers)} match no layer with attention; layers are 0..{n_layers - 1} (or layers.0, ...)"


def layer_globs(patterns: list[str]) -> list[str]:
    """Module-name globs for `compress.select`: a bare index glob `0` becomes `layers.0`, others are kept."""
    return [f"layers.{p}" if INDEX_GLOB.fullmatch(p) else p for p in patterns]


def select_layers(model, patterns: list[str]) -> list[int]:
    """Indices of layers with attention whose module `layers.<i>.attn` the globs select (`compress.select`)."""
    names = {f"layers.{i}.attn": i for i, layer in enumerate(model.layers) if layer.attn is not None}
    return [names[n] for n in select_names(list(names), include=layer_globs(patterns))]


def swap_attention_(model, to: str, args: dict | None = None, layers: list[str] | tuple[str, ...] = ("*",)):
    """Swap the attention of the layers matching `layers` for kind `to` with `args`, in place; returns `model`.

    Arguments a kind takes but `args` leaves out are filled from the model by the kind's
    `length_defaults(config.max_len)` (Linformer: `max_len`, and `k` from it); `seed` (BigBird,
    Performer) becomes `args.get("seed", 0) + layer index`, so layers draw different random
    layouts/features. Linformer layers with `share_layers` are tied afterwards. Raises
    RecipeError when nothing matches.
    """
    args = dict(args or {})
    if to not in ATTENTION:
        raise RecipeError(f"unknown attention kind {to!r}; choose one of {sorted(ATTENTION)}")
    chosen = select_layers(model, list(layers))
    if not chosen:
        raise RecipeError(no_layer_message(list(layers), len(model.layers)))
    takes = kind_args(to)
    config = model.config
    length_defaults = getattr(ATTENTION[to], "length_defaults", None)
    for i in chosen:
        old = model.layers[i].attn
        spec = {"kind": to, **(length_defaults(config.max_len) if length_defaults else {}), **args}
        if "seed" in takes:
            spec["seed"] = int(args.get("seed", 0)) + i
        weight = old.q_proj.weight
        new = build_attention(spec, config.dim, old.n_heads, config.head_dim, config.attention_dropout).to(weight.device,
                                                                                                           weight.dtype)
        wanted = new.state_dict()
        state = {k: v for k, v in old.state_dict().items() if k in wanted and wanted[k].shape == v.shape}
        missing = new.load_state_dict(state, strict=False).missing_keys
        lost = [k for k in missing if k.split(".")[0] in PROJECTIONS]
        assert not lost, (f"layer {i}: {lost} did not carry over from {type(old).__name__}; "
                          "only the new kind's extras may start fresh")
        new.train(old.training)
        model.layers[i].attn = new
        config.attention[i] = spec
    model.tie_shared_projections_()  # Linformer share_layers: the swapped layers now use one E (and F)
    return model


@register_step("swap_attention", SwapAttentionConfig, makes_stage=True, inputs=recover_inputs)
def swap_attention(model, cfg: SwapAttentionConfig, ctx):
    """Swap attention in the current model (or a copy of the teacher), then recover with distillation."""
    model = copy.deepcopy(ctx.teacher) if cfg.source == "teacher" else model
    if cfg.source == "teacher":
        ctx.record("parent", ctx.teacher_stage)
    try:  # checked before the run (check_shape); here against the model itself
        check_max_len(cfg.max_len, model.config.max_len)
    except ValueError as e:
        raise RecipeError(f"{cfg.name}: {e}") from None
    if cfg.max_len is not None and cfg.max_len > model.config.max_len:
        ctx.record("positions", {"max_len_before": model.config.max_len, "max_len": cfg.max_len, "extend": cfg.extend})
        model.extend_positions_(cfg.max_len, cfg.extend)
    swap_attention_(model, cfg.to, cfg.args, cfg.layers)
    val = ctx.encoded["validation"]
    before = (predict(model, val).argmax(-1) == val["labels"]).float().mean().item()
    ctx.record("swap", {"to": cfg.to, "layers": select_layers(model, cfg.layers), "attention": model.config.attention})
    ctx.record("val_accuracy_before_recovery", round(before, 5))
    ctx.log(event="swap_attention", to=cfg.to, val_accuracy_before_recovery=before)
    r = cfg.recover
    if r.epochs == 0:
        return model.eval()
    split, loss = recovery(ctx, r, model, r.attention_output)
    try:
        if r.curriculum:  # phase batches carry no cached teacher logits: the loss runs the teacher on them
            model = train_curriculum(model, r.curriculum, r, loss, ctx, f"recover {cfg.name}")
        model, curve = train(model, split, val, r, loss, seed=ctx.recipe.seed, device=ctx.device, log=ctx.log,
                             desc=f"recover {cfg.name}")
    finally:
        loss.remove()  # the attention-output hooks on the student and the teacher
    ctx.record("train_curve", curve)
    ctx.record("val_accuracy", max(p["val_accuracy"] for p in curve))
    return model
