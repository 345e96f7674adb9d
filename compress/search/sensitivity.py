"""Sensitivity of the teacher, measured once per search: validation accuracy lost by each cut, with no recovery.

What it measures (every number is accuracy points lost on the validation split, against the
teacher's own):
- `layers[i]`: layer i skipped (its block replaced by the identity: what a student that does not
  copy it loses before training, LayerDrop's view of depth, Fan et al. 2020);
- `heads` / `ffn`: in one layer at a time, the lowest-scoring fraction of its heads (FFN neurons)
  masked, by the importance scores `prune_heads` / `prune_ffn` rank with (`compress/training/
  importance.py`, Taylor scores on validation batches, Michel et al. 2019): a masked unit adds
  nothing to the residual stream, exactly what removing it does;
- `width`: the residual stream narrowed by the `prune_width` step itself (torch-pruning's coupled
  group importance), driven through the step registry with no recovery;
- `int8`: the teacher's ONNX artifact with one module group quantized (dynamic int8), the others
  fp32: which MatMuls hurt when quantized.

The search reads these to decide *which* layers, heads, neurons and groups a candidate cuts or
quantizes (`compress/search/space.py`), and the report draws them as heat maps. The result is
cached in the search folder, keyed by the teacher and the data, so a resumed search reuses it.
"""

import copy
import json
from pathlib import Path

import torch
from torch import nn

from compress.io import atomic_write_json
from compress.run.registry import STEPS, fingerprint
from compress.search.latency import GROUPS, quantize_globs
from compress.training.batches import predict
from compress.training.importance import Gates, importance, n_units, scoring_batches

FRACTIONS = (0.25, 0.5, 0.75)  # of a layer's heads / neurons masked
WIDTHS = (0.75, 0.5, 0.25)  # of the residual width kept
SCORE_BATCHES, SCORE_BATCH_SIZE = 8, 64  # what prune_heads / prune_ffn score on by default


class Skipped(nn.Module):
    """A block that passes its input through: the layer removed."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return x


def accuracy(model: nn.Module, split: dict) -> float:
    return (predict(model, split).argmax(-1) == split["labels"]).float().mean().item()


def points(base: float, acc: float) -> float:
    return round(100 * (base - acc), 3)


def layer_drops(teacher: nn.Module, val: dict, base: float) -> list[float]:
    out = []
    for i in range(len(teacher.layers)):
        model = copy.deepcopy(teacher)
        model.layers[i] = Skipped()
        out.append(points(base, accuracy(model, val)))
    return out


def unit_drops(teacher: nn.Module, unit: str, val: dict, base: float, seed: int) -> dict:
    """Per layer and fraction, the points lost when that layer's lowest-scoring units are masked."""
    layers = list(range(len(teacher.layers)))
    batches = scoring_batches(val, SCORE_BATCHES, SCORE_BATCH_SIZE, seed)
    scores = importance(teacher, unit, "taylor", layers, batches, seed)
    drops = []
    for i in layers:
        row = []
        for f in FRACTIONS:
            n = n_units(teacher, unit, i)
            gate = torch.ones(n)
            gate[torch.argsort(scores[i], stable=True)[: round(f * n)]] = 0.0  # (n,): the least important masked
            with Gates(teacher, unit, [i], {i: gate}):
                row.append(points(base, accuracy(teacher, val)))
        drops.append(row)
    return {"fractions": list(FRACTIONS), "drops": drops}


def width_drops(teacher: nn.Module, ctx, base: float) -> dict:
    """The prune_width step itself (registry, no recovery) at each kept fraction of the width."""
    spec, drops = STEPS["prune_width"], []
    for f in WIDTHS:
        dim = max(8, int(round(f * teacher.config.dim / 8)) * 8)
        if dim >= teacher.config.dim:  # too narrow a teacher to cut this little in multiples of 8
            drops.append(0.0)
            continue
        cfg = spec.config(name="sensitivity-width", dim=dim, recover={"epochs": 0})
        with scratch_stage(ctx, cfg):
            model = spec.fn(copy.deepcopy(teacher), cfg, ctx)
        drops.append(points(base, accuracy(model, ctx.encoded["validation"])))
    return {"fractions": list(WIDTHS), "drops": drops}


def int8_drops(onnx_path: Path, val: dict, base: float, threads: int) -> dict:
    """The teacher's artifact with one module group quantized (dynamic), through the quantize step's own config."""
    import tempfile

    from compress.onnx.quantize import quantize_onnx
    from eval.accuracy import predict_onnx

    labels = val["labels"].numpy()
    drops = []
    with tempfile.TemporaryDirectory() as tmp:
        for group in GROUPS:
            include, exclude = quantize_globs((group,))
            settings = STEPS["quantize"].config(mode="dynamic", include=include, exclude=exclude)
            out = Path(tmp) / f"{group}.onnx"
            quantize_onnx(onnx_path, out, settings)
            logits = predict_onnx(out, val["input_ids"], val["attention_mask"], threads=threads)
            drops.append(points(base, float((logits.argmax(-1) == labels).mean())))
            out.unlink()
    return {"groups": list(GROUPS), "drops": drops}


class scratch_stage:
    """Run a step through the registry on a throw-away stage of the context (restored after)."""

    def __init__(self, ctx, cfg):
        self.ctx, self.cfg = ctx, cfg

    def __enter__(self):
        ctx = self.ctx
        self.saved = (ctx.stage, ctx.steps, ctx.index, ctx.pending)
        parent = ctx.stage
        ctx.steps, ctx.index = [*ctx.recipe.steps, self.cfg], len(ctx.recipe.steps)
        ctx.add_stage(self.cfg.name, self.cfg.kind, parent=parent)
        ctx.stage, ctx.pending = self.cfg.name, {}
        return ctx

    def __exit__(self, *exc):
        ctx = self.ctx
        ctx.stages.pop(self.cfg.name, None)
        ctx.stage, ctx.steps, ctx.index, ctx.pending = self.saved


def measure_sensitivity(ctx, teacher: nn.Module, onnx_path: Path, threads: int, say=print) -> dict:
    """Every sensitivity of the teacher on the validation split (see the module docstring)."""
    val = ctx.encoded["validation"]
    teacher = teacher.eval()
    base = accuracy(teacher, val)
    seed = ctx.recipe.seed
    say("sensitivity: layers")
    out = {"metric": "validation accuracy lost (points) when the unit is removed, no recovery",
           "baseline_val_accuracy": round(base, 5), "layers": layer_drops(teacher, val, base)}
    say("sensitivity: heads and FFN neurons, layer by layer")
    out["heads"] = unit_drops(teacher, "heads", val, base, seed)
    out["ffn"] = unit_drops(teacher, "neurons", val, base, seed)
    say("sensitivity: width (prune_width, no recovery)")
    out["width"] = width_drops(teacher, ctx, base)
    say("sensitivity: int8 per module group")
    out["int8"] = int8_drops(onnx_path, val, base, threads)
    return out


def cached_sensitivity(path: Path, key_parts: tuple, compute) -> dict:
    """`compute()` once per key: a resumed search (same teacher, data and code) reads the file back."""
    key = fingerprint(*key_parts)
    if path.is_file():
        try:
            saved = json.loads(path.read_text())
            if saved.get("key") == key:
                return saved["sensitivity"]
        except (OSError, ValueError):
            pass  # a broken cache is measured again
    result = compute()
    atomic_write_json(path, {"key": key, "sensitivity": result})
    return result
