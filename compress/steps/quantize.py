"""The `quantize` step: int8 ONNX artifacts made with ONNX Runtime's own quantization tools.

Post-training quantization of an exported stage (Jacob et al. 2018, "Quantization and Training
of Neural Networks for Efficient Integer-Arithmetic-Only Inference"): weights are stored as int8
with a scale per tensor or per output channel; activations are quantized either at run time from
each batch's range (`mode: dynamic`) or with ranges fixed beforehand by running calibration
examples from the training split (`mode: static`; minmax, entropy (KL divergence, as in
TensorRT's calibrator) or percentile). `torch.ao.quantization` is not used: it is deprecated
and its int8 models do not export to ONNX.

The parent's artifact arrives already fused by the `export` step (`compress/onnx/fuse_graph.py`:
full attention as one packed `Attention`, which dynamic quantization turns into `QAttention`
(int8 QKV GEMM); static quantization, which has no int8 Attention, first unpacks it into q/k/v
MatMuls it quantizes and a `MultiHeadAttention` that stays fp32; the flash form of long inputs is
already q/k/v MatMuls around a fp32 `MultiHeadAttention`). Before quantizing, the graph
may be fused further by `onnxruntime.transformers.optimizer` (LayerNorm, BiasGelu, and BERT-pattern
Attention for a graph exported with `fuse: false`; its SkipLayerNorm is undone after it; the fusions
that happened are recorded) and is always prepared by `quant_pre_process` (shape inference, basic
graph optimisations). Nodes are first renamed `<module path>/<node>` (from the `name_scopes`
metadata the dynamo exporter writes, or the TorchScript exporter's `/model/<path>/<op>` names),
so the selector vocabulary of `compress/select.py` (`include`/`exclude`/`protect` globs over
module names: `classifier`, `layers.0.*`) picks the nodes they came from; the others stay fp32.
The graph bookkeeping (names, selection, which nodes were quantized) is in `quantize_graph.py`.

The stage made here is ONNX only (no torch model): `model.onnx` + the parent's config and
tokenizer files, written atomically. Later `evaluate`/`bench` steps measure that artifact;
the next model-making step starts again from the parent's torch model.
"""

import contextlib
import io
import shutil
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from compress.run.config_base import NAME_PATTERN, ConfigBase, StepConfig
from compress.distributed import main_process_only
from compress.errors import RecipeError
from compress.onnx.fuse_graph import fused_ops, unfuse_skip_layer_norm_, unpack_attention_
from compress.io import atomic_dir
from compress.onnx.quantize_graph import (
    aliases,
    candidates,
    is_node_selected,
    name_fused_nodes_,
    name_nodes_by_module_,
    quantized_nodes,
    split_unsqueezes_,
)
from compress.run.registry import STEPS, register_step, stage_history
from compress.select import SelectConfig, is_selected
from eval.bench import ONNX_FILE

QUANT_TYPES = {"int8": "QInt8", "uint8": "QUInt8"}
CALIBRATION_METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}


class CalibrationConfig(ConfigBase):
    """Where static quantization gets its activation ranges: examples of the training split."""

    method: Literal[tuple(CALIBRATION_METHODS)] = "minmax"  # minmax | entropy (KL) | percentile
    samples: int = Field(512, ge=1)  # training examples run through the model (seeded sample; all if fewer)
    batch_size: int = Field(32, ge=1)  # examples per calibration batch (each trimmed to its longest)
    percentile: float = Field(99.999, gt=90, le=100)  # method percentile: the range keeps this % of values


class QuantizeConfig(StepConfig, SelectConfig):
    """Quantize a stage's ONNX artifact to int8 with ONNX Runtime (a new, ONNX-only stage)."""

    kind: Literal["quantize"] = "quantize"
    name: str | None = Field("int8", pattern=NAME_PATTERN)  # the stage this step makes
    parent: str | None = Field(None, pattern=NAME_PATTERN)  # stage to quantize; default: the current model's stage
    mode: Literal["dynamic", "static"] = "dynamic"  # dynamic: activation ranges per batch at run time; static: calibrated
    format: Literal["qdq", "qoperator"] = "qdq"  # static only: Q/DQ pairs around float ops, or QLinear* ops
    per_channel: bool = True  # one weight scale per output channel instead of per tensor
    weight_type: Literal[tuple(QUANT_TYPES)] = "int8"
    activation_type: Literal[tuple(QUANT_TYPES)] = "uint8"  # static only; u8 activations x s8 weights is the fast CPU path
    weight_symmetric: bool = True  # zero point 0 for weights
    activation_symmetric: bool = False  # static only: symmetric activation ranges around 0
    reduce_range: bool = False  # 7-bit weights: avoids int16 overflow on CPUs without VNNI, costs accuracy
    # ONNX ops to quantize; default MatMul + Gather (the embedding tables), + Attention (fused) when dynamic
    op_types: list[str] | None = Field(None, min_length=1)
    activation_matmuls: bool = False  # also quantize MatMuls of two activations (attention scores, context)
    # kept fp32 whatever include says; unlike other methods the embeddings are quantized: their tables dominate file size
    protect: list[str] = Field(["classifier*"])
    optimize: bool = True  # fuse with onnxruntime.transformers.optimizer before quantizing
    calibration: CalibrationConfig | None = Field(default_factory=CalibrationConfig)  # static only
    check_samples: int = Field(64, ge=1)  # validation examples on which int8 logits are compared with fp32

    @model_validator(mode="after")
    def check_modes(self):
        if self.mode == "static" and self.calibration is None:
            raise ValueError("mode: static needs calibration data: set calibration: {method: minmax, samples: 512}, "
                             "or use mode: dynamic")
        if self.mode == "dynamic" and self.activation_symmetric:
            raise ValueError("activation_symmetric applies to mode: static; dynamic activations are always asymmetric uint8")
        from onnxruntime.quantization import registry

        if self.mode == "dynamic":
            supported, where = registry.IntegerOpsRegistry, "mode dynamic"
        else:
            supported = registry.QDQRegistry if self.format == "qdq" else registry.QLinearOpsRegistry
            where = f"mode static, format {self.format}"
        if self.op_types is None:
            self.op_types = ["MatMul", "Gather"] + (["Attention"] if self.mode == "dynamic" else [])
        unknown = [op for op in self.op_types if op not in supported]
        if unknown:
            raise ValueError(f"op_types {unknown} cannot be quantized in {where}; ONNX Runtime supports: {sorted(supported)}")
        return self

    def check_recipe(self, steps: list, index: int) -> None:
        """Cross-step rules, called by the recipe validator: a parent with an ONNX artifact, no export after."""
        parent, model_stages, exported = stage_history(steps, index, self.parent)
        where = f"steps[{index}] (quantize {self.name!r})"
        if parent not in model_stages:
            raise ValueError(f"{where}: parent {parent!r} is not an earlier stage with a torch model; "
                             f"choose one of {model_stages}")
        if parent not in exported:
            raise ValueError(f"{where}: stage {parent!r} has no ONNX artifact to quantize; "
                             f"put an `export` step after the step that makes {parent!r}, before this one")
        for j in range(index + 1, len(steps)):
            if STEPS[steps[j].kind].makes_stage:
                break
            if steps[j].kind == "export":
                raise ValueError(f"steps[{j}] (export) would overwrite the int8 artifact of stage {self.name!r}; "
                                 "remove it (a quantized stage is already ONNX)")


# --------------------------------------------------------------------------- calibration


def calibration_batches(split: dict, cfg: CalibrationConfig, seed: int) -> list[dict[str, np.ndarray]]:
    """A seeded sample of `cfg.samples` examples as ONNX feeds, batch by batch, each trimmed to its longest."""
    from compress.training.batches import trim

    if cfg is None or len(split["input_ids"]) == 0:
        raise RecipeError("quantize mode: static needs calibration data, and the training split is empty; use mode: dynamic")
    n = min(cfg.samples, len(split["input_ids"]))
    order = torch.randperm(len(split["input_ids"]), generator=torch.Generator().manual_seed(seed))[:n]
    batches = []
    for start in range(0, n, cfg.batch_size):
        rows = order[start : start + cfg.batch_size]
        ids, mask = trim(split["input_ids"][rows], split["attention_mask"][rows])
        batches.append({"input_ids": ids.numpy().astype(np.int64), "attention_mask": mask.numpy().astype(np.int64)})
    return batches


def data_reader(batches: list[dict[str, np.ndarray]]):
    """ONNX Runtime's CalibrationDataReader over ready batches."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(batches)

        def get_next(self):
            return next(self.batches, None)

    return Reader()


# --------------------------------------------------------------------------- quantize an ONNX file


def optimize_graph(src: Path, dst: Path, attention: bool = True) -> dict[str, int]:
    """Fuse with ONNX Runtime's transformer optimizer (model_type bert, heads and width auto-detected).

    `attention=False` leaves attention unfused (static quantization cannot quantize the fused
    op's weights). Returns the fusions that happened, `{op: count}` (those with count 0 dropped).
    """
    import onnx
    import onnxruntime as ort
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    ort.set_default_logger_severity(3)  # errors only: its graph optimiser warns about every unused constant
    options = FusionOptions("bert")
    options.enable_attention = attention
    optimized = optimize_model(str(src), model_type="bert", num_heads=0, hidden_size=0, optimization_options=options)
    # SkipLayerNormalization undone after the optimizer (its attention fusion anchors on it): slower on CPU (fuse_graph.py)
    unfuse_skip_layer_norm_(optimized.model)
    name_fused_nodes_(optimized.model, {n.name for n in onnx.load(str(src), load_external_data=False).graph.node})
    optimized.save_model_to_file(str(dst))
    return {op: n for op, n in optimized.get_fused_operator_statistics().items() if n}


def stays_packed(module: str, cfg: QuantizeConfig) -> bool:
    """May the packed `Attention` of `module` be quantized as it is? Only by dynamic quantization (`QAttention`), which
    makes its whole QKV GEMM int8: so only when `Attention` is among the op types and all three projections are selected."""
    return cfg.mode == "dynamic" and "Attention" in cfg.op_types and all(
        is_selected(f"{module}.{p}_proj", cfg.include, cfg.exclude, cfg.protect) for p in "qkv")


def quantize_onnx(src: Path, dst: Path, cfg: QuantizeConfig, calibration: list[dict] | None = None) -> dict:
    """Quantize the fp32 ONNX model `src` into `dst` per `cfg`; returns what was done (fusions, nodes).

    The graph is fused by ONNX Runtime's transformer optimizer and prepared by quant_pre_process
    (symbolic shape inference). Those tools give up on some graphs (BigBird's block gathers) with
    bare Exceptions; such a graph is quantized unfused instead, after ONNX's own shape inference,
    and `shape_inference` in the summary says which path was taken.
    """
    import onnx
    from onnxruntime.quantization import quant_pre_process

    if cfg.mode == "static" and not calibration:
        raise RecipeError("quantize mode: static needs calibration data (calibration.samples >= 1 training examples); "
                          "or use mode: dynamic")
    work = dst.parent / f".{dst.stem}.work"
    work.mkdir(parents=True, exist_ok=True)
    named, prepared = work / "named.onnx", work / "prepared.onnx"
    try:
        proto = onnx.load(str(src))
        unpack_attention_(proto, lambda module: not stays_packed(module, cfg))
        name_nodes_by_module_(proto)
        if cfg.optimize:
            split_unsqueezes_(proto)
        onnx.save(proto, str(named))
        try:
            fusions = optimize_graph(named, work / "optimized.onnx", attention=cfg.mode == "dynamic") if cfg.optimize else {}
            with contextlib.chdir(work):  # a failed symbolic pass writes its partial model to the current folder
                quant_pre_process(str(work / "optimized.onnx" if cfg.optimize else named), str(prepared))
            excluded, nodes = quantize_prepared(prepared, dst, cfg, calibration)
            shapes = "symbolic"
        except Exception as e:
            del proto.graph.value_info[:]  # the exporter's intermediate shapes, which ONNX's inference may contradict
            onnx.save(proto, str(named))
            quant_pre_process(str(named), str(prepared), skip_symbolic_shape=True)
            excluded, nodes = quantize_prepared(prepared, dst, cfg, calibration)
            fusions, shapes = {}, f"onnx, unfused (symbolic: {type(e).__name__}: {str(e)[:120]})"
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"mode": cfg.mode, "format": cfg.format if cfg.mode == "static" else None, "fusions": fusions, "shape_inference": shapes,
            "n_quantized": len(nodes["quantized"]), "excluded": excluded, "kept_fp32": nodes["fp32"],
            "calibration_samples": sum(len(b["input_ids"]) for b in calibration or [])}


def quantize_prepared(prepared: Path, dst: Path, cfg: QuantizeConfig, calibration: list[dict] | None) -> tuple[list[str], dict]:
    """Run ONNX Runtime's dynamic or static quantizer on a prepared graph. Returns (excluded nodes, quantized/fp32 nodes)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static

    touched = candidates(onnx.load(str(prepared)), cfg.op_types, cfg.activation_matmuls, cfg.mode == "dynamic")
    excluded = [n.name for n in touched if not is_node_selected(n.name, cfg)]
    common = {
        "op_types_to_quantize": cfg.op_types,
        "per_channel": cfg.per_channel,
        "reduce_range": cfg.reduce_range,
        "weight_type": getattr(QuantType, QUANT_TYPES[cfg.weight_type]),
        "nodes_to_exclude": [name for n in touched if n.name in excluded for name, _ in aliases(n)],
        # DefaultTensorType: our graphs are fp32; ONNX's shape inference leaves the outputs of ONNX Runtime's
        # fused ops (com.microsoft domain) untyped when the symbolic pass failed, and the quantizer needs a type
        "extra_options": {"WeightSymmetric": cfg.weight_symmetric, "MatMulConstBOnly": not cfg.activation_matmuls,
                          "DefaultTensorType": onnx.TensorProto.FLOAT},
    }
    if cfg.mode == "dynamic":
        quantize_dynamic(str(prepared), str(dst), **common)
    else:
        method = getattr(CalibrationMethod, CALIBRATION_METHODS[cfg.calibration.method])
        common["extra_options"] |= {"ActivationSymmetric": cfg.activation_symmetric}
        if cfg.calibration.method == "percentile":
            common["extra_options"]["CalibPercentile"] = cfg.calibration.percentile
        with contextlib.redirect_stdout(io.StringIO()):  # the histogram calibrators print progress
            quantize_static(
                str(prepared), str(dst), data_reader(calibration),
                quant_format=QuantFormat.QDQ if cfg.format == "qdq" else QuantFormat.QOperator,
                activation_type=getattr(QuantType, QUANT_TYPES[cfg.activation_type]),
                calibrate_method=method,
                **common,
            )
    return excluded, quantized_nodes(touched, onnx.load(str(dst)))


def compare_logits(fp32: Path, int8: Path, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict:
    """Max and mean |int8 - fp32| of the logits and argmax agreement, on the given inputs."""
    from eval.accuracy import predict_onnx

    a = predict_onnx(fp32, input_ids, attention_mask, threads=1)
    b = predict_onnx(int8, input_ids, attention_mask, threads=1)
    return {"max_abs_diff": float(np.abs(a - b).max()), "mean_abs_diff": float(np.abs(a - b).mean()),
            "argmax_agreement": float((a.argmax(-1) == b.argmax(-1)).mean()), "n": len(a)}


def quantize_stage(parent_dir: Path, out_dir: Path, cfg: QuantizeConfig, calibration: list[dict] | None,
                   check_inputs: tuple) -> dict:
    """Write `out_dir` atomically: the quantized `model.onnx` + every other file of `parent_dir` (config, tokenizer)."""
    from compress.training.batches import trim

    with atomic_dir(out_dir) as tmp:
        summary = quantize_onnx(parent_dir / ONNX_FILE, tmp / ONNX_FILE, cfg, calibration)
        for path in parent_dir.iterdir():
            if path.name != ONNX_FILE and path.is_file():
                shutil.copy2(path, tmp / path.name)
        summary["check"] = compare_logits(parent_dir / ONNX_FILE, tmp / ONNX_FILE, *trim(*check_inputs))
    return summary


@register_step("quantize", QuantizeConfig, makes_stage=True, saves_model=False)
@main_process_only  # several processes: the main one exports/measures, the others wait
def quantize(model, cfg: QuantizeConfig, ctx):
    import onnx

    from eval.bench import file_size

    parent = ctx.parent(cfg.parent)
    source = ctx.onnx_dir(parent)
    if parent is None or not (source / ONNX_FILE).is_file():
        raise RecipeError(f"quantize {cfg.name!r}: stage {parent!r} has no ONNX artifact ({source / ONNX_FILE}); "
                          "put an `export` step before `quantize`")
    calibration = calibration_batches(ctx.encoded["train"], cfg.calibration, ctx.recipe.seed) if cfg.mode == "static" else None
    val = ctx.encoded["validation"]
    check = (val["input_ids"][: cfg.check_samples], val["attention_mask"][: cfg.check_samples])
    summary = quantize_stage(source, ctx.onnx_dir(), cfg, calibration, check)
    ctx.record("parent", parent)
    ctx.record("precision", "int8")
    ctx.record("onnx_dir", str(ctx.onnx_dir().relative_to(ctx.run_dir)))
    ctx.record("onnx_bytes", file_size(ctx.onnx_dir()))
    ctx.record("fusions", fused_ops(onnx.load(str(ctx.onnx_dir() / ONNX_FILE), load_external_data=False)))
    ctx.record("quantization", summary)
    ctx.log(event="quantize", parent=parent, fusions=summary["fusions"], n_quantized=summary["n_quantized"], **summary["check"])
    return model  # the parent's torch model stays current for later model-making steps
