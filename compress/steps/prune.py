"""Structured pruning: attention heads (`prune_heads`) and FFN neurons (`prune_ffn`), removed physically.

Heads are ranked by an importance score (`compress/training/importance.py`: Michel et al. 2019's head-mask
gradients, weight magnitude, attention entropy or random), normalised per layer and ranked
globally over the selected layers (Michel et al. 2019, "Are Sixteen Heads Really Better than
One?"), or per layer. The lowest are cut out of the weights: head h is rows h*head_dim:(h+1)*head_dim
of q_proj/k_proj/v_proj and the same columns of out_proj, so the residual width `dim` is unchanged
and `config.n_heads[i]` is updated in the same call (STYLE.md rule 7). FFN neurons are rows of
up_proj and columns of down_proj, with `config.ffn_dim[i]`. A layer that loses every head (or
neuron) has that branch set to None and skipped; with pre-LN its output bias, the one thing the
masked branch still added, is folded into the bias that last wrote the residual stream, so the
pruned model computes exactly what the unpruned one computes with those units masked. (With
post-LN the Block also skips that branch's LayerNorm, so there the equality needs a head left.)
A step empties a layer only with `allow_empty_layers: true`: otherwise every layer keeps at least
one unit (the global ranking passes over a layer's last one, and the record's `floored_layers`
says where), and a cut that must empty a layer (`amount: 1`, a `per_layer` fraction of 1) is
refused before the run (`check_shape`, called by `slimformer validate` and `run` alike).

`schedule: {iterations: N}` prunes in N rounds, re-scoring in between (Michel et al.'s iterative
pruning), each round followed by recovery fine-tuning with the one training loop, optionally
distilling from the unpruned teacher (Hinton et al. 2015; `compress/training/recover.py`).

Why explicit slicing rather than torch-pruning's dependency graph: every attention kind keeps
q/k/v/out as plain Linears with the heads concatenated in order (the attention contract), so the
slices are known exactly; a kind with its own per-head tensors cuts them in an optional
`slice_heads_(keep)` method (or an entry of `HEAD_EXTRAS`), and the config is updated here.
"""

import copy
from collections.abc import Callable
from typing import ClassVar, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from compress.distributed import broadcast_from_main
from compress.errors import RecipeError
from compress.models.shape import ModelShape
from compress.run.config_base import NAME_PATTERN, ConfigBase, StepConfig
from compress.run.registry import register_step, stage_history
from compress.select import SelectConfig, select_names
from compress.training.batches import predict
from compress.training.embedding import score_key, val_score, validation
from compress.training.importance import UNITS_OF, Gates, Scores, importance, n_units, scoring_batches
from compress.training.loop import train
from compress.training.recover import RecoverConfig as BaseRecoverConfig
from compress.training.recover import recover_inputs, recovery

METHODS = ("taylor", "magnitude", "random", "attention_entropy")


# --------------------------------------------------------------------------- surgery


def slice_rows_(linear: nn.Linear, keep: torch.Tensor) -> None:
    """Keep output rows `keep` of `linear` (weight and bias), in place."""
    linear.weight = nn.Parameter(linear.weight.detach()[keep].clone(), requires_grad=linear.weight.requires_grad)
    if linear.bias is not None:
        linear.bias = nn.Parameter(linear.bias.detach()[keep].clone(), requires_grad=linear.bias.requires_grad)
    linear.out_features = len(keep)


def slice_columns_(linear: nn.Linear, keep: torch.Tensor) -> None:
    """Keep input columns `keep` of `linear`, in place (the bias is per output: unchanged)."""
    linear.weight = nn.Parameter(linear.weight.detach()[:, keep].clone(), requires_grad=linear.weight.requires_grad)
    linear.in_features = len(keep)


def linformer_heads_(attn: nn.Module, keep: list[int]) -> None:
    """Linformer with `per_head: true` has one E (and F) per head, shape (n_heads, k, max_len)."""
    if not attn.per_head:
        return
    for name in ("E", "F"):
        p = getattr(attn, name)
        if p is not None:
            setattr(attn, name, nn.Parameter(p.detach()[keep].clone(), requires_grad=p.requires_grad))


# per-head tensors of kinds that do not cut their own with `slice_heads_(keep)`
HEAD_EXTRAS: dict[str, Callable[[nn.Module, list[int]], None]] = {"linformer": linformer_heads_}


def fold_bias_(model: nn.Module, i: int, branch: str, bias: torch.Tensor | None) -> None:
    """Add the output bias of layer i's `branch` (about to be removed) to the last bias that wrote the
    residual stream before it: the same residual results (pre-LN only; post-LN normalises in between)."""
    if bias is None or model.config.norm != "pre":
        return
    order = [(j, b) for j in range(len(model.layers)) for b in ("attn", "mlp")]
    for j, b in reversed(order[: order.index((i, branch))]):
        module = getattr(model.layers[j], b)
        if module is not None:
            target = module.out_proj.bias if b == "attn" else module.down_proj.bias
            break
    else:
        emb = model.embeddings  # its projection (embed_dim -> dim), else its LayerNorm, writes the stream first
        target = (emb.proj if getattr(emb, "proj", None) is not None else emb.norm).bias  # (dim,)
    with torch.no_grad():
        target.add_(bias.detach())


def check_plan(model: nn.Module, plan: dict[int, list[int]], unit: str) -> None:
    for i, drop in plan.items():
        if not 0 <= i < len(model.layers):
            raise ValueError(f"layer {i} does not exist; the model has layers 0..{len(model.layers) - 1}")
        n = n_units(model, unit, i)
        bad = [h for h in drop if not 0 <= h < n]
        if bad or len(set(drop)) != len(drop):
            raise ValueError(f"layer {i} has {n} {unit} (0..{n - 1}); cannot remove {sorted(drop)}")


def prune_heads_(model: nn.Module, heads_to_prune: dict[int, list[int]]) -> nn.Module:
    """Remove attention heads in place: {layer: [head, ...]} (current indices); updates config.n_heads."""
    check_plan(model, heads_to_prune, "heads")
    for i, drop in sorted(heads_to_prune.items()):
        block = model.layers[i]
        attn = block.attn
        if not drop:
            continue
        keep = [h for h in range(attn.n_heads) if h not in set(drop)]
        if not keep:
            fold_bias_(model, i, "attn", attn.out_proj.bias)
            block.attn = None
            model.config.n_heads[i] = 0
            continue
        d = attn.head_dim
        # (len(keep) * head_dim,)
        rows = torch.tensor([h * d + c for h in keep for c in range(d)], device=attn.q_proj.weight.device)
        for proj in (attn.q_proj, attn.k_proj, attn.v_proj):
            slice_rows_(proj, rows)
        slice_columns_(attn.out_proj, rows)
        if hasattr(attn, "slice_heads_"):  # a kind with per-head tensors of its own cuts them itself
            attn.slice_heads_(keep)
        elif getattr(attn, "kind", None) in HEAD_EXTRAS:
            HEAD_EXTRAS[attn.kind](attn, keep)
        assert attn.n_heads == len(keep), f"layer {i}: n_heads is {attn.n_heads} after keeping {len(keep)} heads"
        model.config.n_heads[i] = len(keep)
    return model


def prune_ffn_(model: nn.Module, neurons: dict[int, list[int]]) -> nn.Module:
    """Remove FFN neurons in place: {layer: [neuron, ...]} (current indices); updates config.ffn_dim."""
    check_plan(model, neurons, "neurons")
    for i, drop in sorted(neurons.items()):
        block = model.layers[i]
        if not drop:
            continue
        keep = [j for j in range(block.mlp.down_proj.in_features) if j not in set(drop)]
        if not keep:
            fold_bias_(model, i, "mlp", block.mlp.down_proj.bias)
            block.mlp = None
            model.config.ffn_dim[i] = 0
            continue
        index = torch.tensor(keep, device=block.mlp.up_proj.weight.device)
        slice_rows_(block.mlp.up_proj, index)
        slice_columns_(block.mlp.down_proj, index)
        model.config.ffn_dim[i] = len(keep)
    return model


PRUNE: dict[str, Callable[[nn.Module, dict[int, list[int]]], nn.Module]] = {"heads": prune_heads_, "neurons": prune_ffn_}


def plan_removal(scores: Scores, counts: int | dict[int, int], keep: int = 0) -> dict[int, list[int]]:
    """The lowest-scoring units: `counts` units over all layers (global ranking), or {layer: count}.

    A global ranking leaves at least `keep` units in every layer: a unit that would take a layer below
    it is passed over for the next lowest (fewer are removed only when no other unit is left)."""
    if isinstance(counts, dict):
        return {i: sorted(torch.argsort(scores[i], stable=True)[:k].tolist()) for i, k in counts.items() if k > 0}
    ranked = sorted((float(s), i, h) for i, layer in scores.items() for h, s in enumerate(layer))  # ties: lower layer, head first
    plan: dict[int, list[int]] = {}
    for _, i, h in ranked:
        if sum(map(len, plan.values())) >= counts:
            break
        if len(scores[i]) - len(plan.get(i, [])) > keep:
            plan.setdefault(i, []).append(h)
    return {i: sorted(plan[i]) for i in sorted(plan)}


def floored_layers(scores: Scores, counts: int, plan: dict[int, list[int]], keep: int) -> list[int]:
    """Layers where the global ranking's lowest `counts` units would have left fewer than `keep`: the floor spared them."""
    ranked = sorted((float(s), i, h) for i, layer in scores.items() for h, s in enumerate(layer))[:max(counts, 0)]
    wanted = {i: sum(1 for _, j, _ in ranked if j == i) for i in scores}
    return sorted(i for i, n in wanted.items() if n > len(plan.get(i, [])) and len(scores[i]) - n < keep)


# --------------------------------------------------------------------------- step configs


class ScheduleConfig(ConfigBase):
    iterations: int = Field(1, ge=1, le=50)  # rounds of score -> prune -> recover; round r reaches r/iterations of the amount


class RecoverConfig(BaseRecoverConfig):
    """Fine-tuning after each pruning round (the one training loop), distilling from the teacher or on labels."""

    epochs: int = Field(1, ge=0, le=10000)  # passes over the training split after each round; 0 = no recovery


class PruneConfig(StepConfig, SelectConfig):
    """Fields shared by `prune_heads` and `prune_ffn`; `unit` says what is removed."""

    unit: ClassVar[str]
    parent: str | None = Field(None, pattern=NAME_PATTERN)  # stage to prune; default: the current model's stage
    amount: float | None = Field(None, ge=0, le=1)  # fraction of all selected units removed (global ranking)
    per_layer: list[float] | None = None  # or: fraction removed in each layer, one entry per layer (unselected layers: ignored)
    importance: Literal[METHODS] = "taylor"  # taylor (Michel et al.) | magnitude | random | attention_entropy (heads)
    normalize: bool = True  # divide each layer's scores by their L2 norm before ranking (Michel et al.)
    # where taylor / attention_entropy are computed. A trained model fits its training set almost
    # perfectly, so gradients there are near zero and a few misfit examples decide the ranking;
    # held-out gradients rank heads better (recipes/prune_wordnet.yaml teacher, 50% of heads
    # masked, test accuracy: scored on 8 validation batches 77.2%, on 8 training batches 71.8%,
    # random 74.5% averaged over 5 seeds). The sweep then scores accuracy on the test split.
    score_split: Literal["validation", "train"] = "validation"
    score_batches: int = Field(8, ge=1, le=10000)  # batches of `score_split` taylor / attention_entropy are computed on
    score_batch_size: int = Field(64, ge=1, le=65536)
    seed: int | None = None  # scoring sample and random scores; default: the recipe's seed
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    recover: RecoverConfig = Field(default_factory=RecoverConfig)
    sweep: bool = False  # also record accuracy (before recovery) against the fraction removed, per method
    sweep_random_seeds: int = Field(5, ge=1, le=100)  # random's sweep curve is the mean over this many seeds
    sweep_fractions: list[float] = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]  # fractions the sweep masks
    sweep_importance: list[Literal[METHODS]] | None = None  # methods the sweep compares; default: every one that fits
    # module-name globs (layers.1, layers.*.attn); the classifier is protected
    include: list[str] = Field(["layers.*"], min_length=1)
    # false: every layer keeps at least one head (neuron), and a cut that would empty one is refused; true: a layer may
    # lose them all, its attention (MLP) branch then skipped
    allow_empty_layers: bool = False

    @model_validator(mode="after")
    def check_amount(self):
        if (self.amount is None) == (self.per_layer is None):
            raise ValueError("give exactly one of `amount` (fraction of all units removed, e.g. 0.5) "
                             "or `per_layer` (one fraction per layer)")
        if self.per_layer is not None and not all(0 <= f <= 1 for f in self.per_layer):
            raise ValueError(f"per_layer fractions must be in [0, 1], got {self.per_layer}")
        if not all(0 <= f <= 1 for f in self.sweep_fractions):
            raise ValueError(f"sweep_fractions must be in [0, 1], got {self.sweep_fractions}")
        for method in [self.importance, *(self.sweep_importance or [])]:
            if self.unit not in UNITS_OF[method]:
                raise ValueError(f"importance {method!r} scores attention heads only; "
                                 f"for {self.kind} use taylor, magnitude or random")
        if self.sweep_importance is None:
            self.sweep_importance = [m for m in METHODS if self.unit in UNITS_OF[m]]
        return self

    def check_recipe(self, steps: list, index: int) -> None:
        """Called by the recipe validator: the parent is an earlier stage with a torch model."""
        parent, model_stages, _ = stage_history(steps, index, self.parent)
        if parent not in model_stages:
            raise ValueError(f"steps[{index}] ({self.kind} {self.name!r}): parent {parent!r} is not an earlier stage with "
                             f"a torch model; choose one of {model_stages}")

    def check_shape(self, shape: ModelShape, teacher: ModelShape) -> ModelShape:
        """The shape of the parent it cuts -> the shape it makes (compress/run/preflight.py); ValueError naming the fix."""
        unit, field = self.unit, "n_heads" if self.unit == "heads" else "ffn_dim"
        if not shape.is_transformer():
            raise ValueError(f"its parent is {shape.describe()}; {self.kind} cuts a Transformer: start it from one with "
                             "`parent:`")
        spans = list(getattr(shape, field))
        layers = selected_spans(spans, self)
        if not layers:
            raise ValueError(f"include {self.include} / exclude {self.exclude} select no layer with {unit} left "
                             f"(the parent: {shape.describe()})")
        floor = 0 if self.allow_empty_layers else 1
        empty = "or set allow_empty_layers: true to remove the whole branch"
        if self.per_layer is not None:
            if len(self.per_layer) != shape.n_layers:
                raise ValueError(f"per_layer has {len(self.per_layer)} entries; give one per layer ({shape.n_layers}: "
                                 f"{shape.describe()})")
            for i in layers:
                low = spans[i][0]
                if floor and low and round(self.per_layer[i] * low) >= low:
                    raise ValueError(f"per_layer[{i}] = {self.per_layer[i]:g} removes all {low} {unit} of layer {i}, which "
                                     f"leaves it none; give a fraction of at most {(low - 1) / low:.6g}, {empty}")
            spans = [(lo - round(f * lo), hi - round(f * hi)) if i in layers else (lo, hi)
                     for i, ((lo, hi), f) in enumerate(zip(spans, self.per_layer, strict=True))]
        else:
            total = sum(spans[i][0] for i in layers)
            cut = round(self.amount * total)
            most = total - sum(1 for i in layers if spans[i][0]) * floor
            if cut > most:
                raise ValueError(f"amount {self.amount:g} removes {cut} of the {total} {unit} of the selected layers; at least "
                                 f"one stays in each of the {len(layers)} layers, so at most {most} can go (amount <= "
                                 f"{most / total:.3g}); lower amount, {empty}")
            # which layers lose how many is decided by importance at run time: each keeps between the floor and all of them
            spans = [(max(min(floor, lo), lo - cut), hi) if i in layers else (lo, hi) for i, (lo, hi) in enumerate(spans)]
        return shape.evolve(**{field: tuple(spans)})


class PruneHeadsConfig(PruneConfig):
    """Remove the least important attention heads, then recover accuracy."""

    unit: ClassVar[str] = "heads"
    kind: Literal["prune_heads"] = "prune_heads"


class PruneFfnConfig(PruneConfig):
    """Remove the least important FFN neurons, then recover accuracy."""

    unit: ClassVar[str] = "neurons"
    kind: Literal["prune_ffn"] = "prune_ffn"
    importance: Literal[METHODS] = "taylor"  # taylor | magnitude | random (attention_entropy scores heads only)


# --------------------------------------------------------------------------- the steps


def accuracy(model: nn.Module, split: dict) -> float:
    return round((predict(model, split).argmax(-1) == split["labels"]).float().mean().item(), 5)


def selected_layers(model: nn.Module, cfg: PruneConfig) -> list[int]:
    """Layers whose attention (heads) or MLP (neurons) module name the include/exclude globs select."""
    return select_layers(len(model.layers), cfg)


def select_layers(n_layers: int, cfg: PruneConfig) -> list[int]:
    branch = "attn" if cfg.unit == "heads" else "mlp"
    names = {f"layers.{i}.{branch}": i for i in range(n_layers)}
    return [names[n] for n in select_names(list(names), cfg)]


def selected_spans(spans: list[tuple[int, int]], cfg: PruneConfig) -> list[int]:
    """The selected layers that may still have units (the shape check's `selected_layers`)."""
    return [i for i in select_layers(len(spans), cfg) if spans[i][1] > 0]


def round_counts(cfg: PruneConfig, original: dict[int, int], removed: dict[int, int], r: int) -> int | dict[int, int]:
    """How many units round r removes: cumulative targets r/N of the amount, minus what is gone."""
    n = cfg.schedule.iterations
    if cfg.per_layer is None:
        return round(cfg.amount * sum(original.values()) * r / n) - sum(removed.values())
    return {i: round(cfg.per_layer[i] * original[i] * r / n) - removed[i] for i in original}


def sensitivity(model: nn.Module, cfg: PruneConfig, layers: list[int], batches: list[dict], data: dict, seed: int,
                split: str = "validation", score=accuracy) -> dict:
    """Accuracy on `data` with the lowest `fraction` of units masked (no recovery), per importance method.

    One random ranking can be lucky or very unlucky (5 seeds at 50% of heads: 68.7% to 76.4%),
    so random's curve is the mean over `cfg.sweep_random_seeds` seeds, its spread beside it.
    """
    total = sum(n_units(model, cfg.unit, i) for i in layers)
    curves, spread = {}, {}
    for method in cfg.sweep_importance:
        seeds = [seed + k for k in range(cfg.sweep_random_seeds if method == "random" else 1)]
        runs = []
        for s in seeds:
            scores = importance(model, cfg.unit, method, layers, batches, s, cfg.normalize)
            runs.append([])
            for fraction in cfg.sweep_fractions:
                plan = plan_removal(scores, round(fraction * total))
                gates = {i: torch.ones(len(v)).index_fill_(0, torch.tensor(plan.get(i, []), dtype=torch.long), 0.0)
                         for i, v in scores.items()}
                with Gates(model, cfg.unit, layers, values=gates):
                    runs[-1].append(score(model, data))
        curves[method] = [sum(col) / len(col) for col in zip(*runs, strict=True)]
        if len(runs) > 1:
            spread[method] = {"seeds": len(runs), "min": [min(col) for col in zip(*runs, strict=True)],
                              "max": [max(col) for col in zip(*runs, strict=True)]}
    return {"unit": cfg.unit, "split": split, "n_units": total, "fractions": list(cfg.sweep_fractions), "accuracy": curves,
            "spread": spread}


def parent_model(model: nn.Module, cfg: PruneConfig, ctx) -> tuple[str, nn.Module]:
    """The stage pruned and a copy of its model (the current model, or an earlier stage loaded from disk)."""
    parent, current = ctx.parent(cfg.parent), ctx.parent()
    return parent, copy.deepcopy(model) if parent == current else ctx.load_model(parent)


def prune_stage(model: nn.Module, cfg: PruneConfig, ctx) -> nn.Module:
    """Score, prune and recover in `schedule.iterations` rounds; record scores, accuracies and the sweep."""
    unit = cfg.unit
    parent, model = parent_model(model, cfg, ctx)
    model = model.cpu().eval()
    layers = selected_layers(model, cfg)
    original = {i: n_units(model, unit, i) for i in layers}
    if not sum(original.values()):
        raise RecipeError(f"{cfg.kind} {cfg.name!r}: include {cfg.include} / exclude {cfg.exclude} select no layer "
                          f"with {unit} left")
    seed = ctx.recipe.seed if cfg.seed is None else cfg.seed
    batches = scoring_batches(ctx.encoded[cfg.score_split], cfg.score_batches, cfg.score_batch_size, seed)
    val, teacher_val = ctx.encoded["validation"], ctx.base_encoded["validation"]
    # the teacher reads the run's tokenizer: each split's texts in its ids (the model's differ after prune_vocab)
    teacher_splits = {id(ctx.encoded[s]): ctx.base_encoded[s] for s in ctx.encoded}
    ctx.record("parent", parent)
    teacher, key = ctx.teacher, score_key(ctx.teacher)  # embedding mode: the mean cosine with the teacher, not accuracy

    def score(m, split):
        return val_score(teacher, m, split, teacher_splits.get(id(split)))

    if cfg.sweep:  # on the split the scores did not see
        sweep_split = "test" if cfg.score_split == "validation" else "validation"
        ctx.record("sensitivity", sensitivity(model, cfg, layers, batches, ctx.encoded[sweep_split], seed, sweep_split, score))
    alive = {i: list(range(n)) for i, n in original.items()}  # original index of each unit still there
    split, loss = recovery(ctx, cfg.recover) if cfg.recover.epochs else (None, None)
    rounds, score_maps, curve, floored = [], [], [], set()
    for r in range(1, cfg.schedule.iterations + 1):
        scores = importance(model, unit, cfg.importance, [i for i in layers if alive[i]], batches, seed + r - 1, cfg.normalize)
        counts = round_counts(cfg, original, {i: original[i] - len(alive[i]) for i in layers}, r)
        keep = 0 if cfg.allow_empty_layers else 1
        plan = broadcast_from_main(plan_removal(scores, counts, keep))  # several processes: all cut what the main one chose
        if not isinstance(counts, dict):
            floored |= set(floored_layers(scores, counts, plan, keep))
        score_maps.append([[None] * original[j] if j in original else None for j in range(len(model.layers))])
        for i, s in scores.items():
            for k, h in enumerate(alive[i]):
                score_maps[-1][i][h] = round(float(s[k]), 6)
        removed = {i: [alive[i][k] for k in ks] for i, ks in plan.items()}
        PRUNE[unit](model, plan)
        alive = {i: [h for h in hs if h not in removed.get(i, [])] for i, hs in alive.items()}
        before = score(model, val)
        entry = {"round": r, "n_removed": sum(map(len, removed.values())), f"{key}_before_recovery": before, key: before}
        if unit == "heads":  # which heads (original indices); neuron lists would be hundreds of numbers
            entry["removed"] = {str(i): hs for i, hs in removed.items()}
        if cfg.recover.epochs:
            model, points = train(model, split, val, cfg.recover, loss, seed=seed + r - 1, device=ctx.device, log=ctx.log,
                                  desc=f"recover {cfg.name} {r}/{cfg.schedule.iterations}",
                                  **validation(teacher, val, teacher_val))
            offset = curve[-1]["step"] if curve else 0
            curve += [{**p, "step": p["step"] + offset, "round": r} for p in points]
            entry[key] = max(p[key] for p in points)
        rounds.append(entry)
        ctx.log(event=cfg.kind, **{k: v for k, v in entry.items() if k != "removed"})
    total, gone = sum(original.values()), sum(original[i] - len(alive[i]) for i in layers)
    ctx.record("pruning", {
        "unit": unit, "importance": cfg.importance, "amount": cfg.amount, "per_layer": cfg.per_layer,
        "iterations": cfg.schedule.iterations,
        "n_selected": total, "n_removed": gone, "fraction_removed": round(gone / total, 5),
        "n_removed_by_layer": {str(i): original[i] - len(alive[i]) for i in layers},
        "n_heads": list(model.config.n_heads), "ffn_dim": list(model.config.ffn_dim), "rounds": rounds,
        # the global ranking leaves each layer at least this many; floored: layers where that spared a lower-scored unit
        "min_per_layer": 0 if cfg.allow_empty_layers else 1, "floored_layers": sorted(floored),
    } | ({"removed": {str(i): sorted(set(range(original[i])) - set(alive[i])) for i in layers}} if unit == "heads" else {}))
    if unit == "heads":
        ctx.record("head_importance", {"method": cfg.importance, "normalized": cfg.normalize,
                                       "rounds": [{"round": r + 1, "scores": m} for r, m in enumerate(score_maps)]})
    ctx.record(f"{key}_before_recovery", rounds[-1][f"{key}_before_recovery"])
    ctx.record(key, rounds[-1][key])
    if curve:
        ctx.record("train_curve", curve)
    return model.eval()


@register_step("prune_heads", PruneHeadsConfig, makes_stage=True, inputs=recover_inputs)
def prune_heads(model, cfg: PruneHeadsConfig, ctx):
    """Remove the least important attention heads (physically), recovering after each round."""
    return prune_stage(model, cfg, ctx)


@register_step("prune_ffn", PruneFfnConfig, makes_stage=True, inputs=recover_inputs)
def prune_ffn(model, cfg: PruneFfnConfig, ctx):
    """Remove the least important FFN neurons (physically), recovering after each round."""
    return prune_stage(model, cfg, ctx)
