"""int8 ONNX graphs made with ONNX Runtime's quantizers: one registered handler per mode.

Post-training quantization (Jacob et al. 2018, "Quantization and Training of Neural Networks for
Efficient Integer-Arithmetic-Only Inference"): weights are stored as int8 with a scale per tensor
or per output channel; activations are quantized either at run time from each batch's range
(`dynamic`) or with ranges fixed beforehand by running calibration examples (`static`; minmax,
entropy (KL divergence, as in TensorRT's calibrator) or percentile). Each mode is a `Quantizer`
registered in `QUANTIZERS` with its own validated options (`DynamicOptions`, `StaticOptions`)
and what it needs from the pipeline around it (calibration data, whether the packed `Attention`
can stay packed, which op types it can quantize), so the shared pipeline below never asks which
mode it runs.

The pipeline (`quantize_onnx`): the exported graph arrives fused by the `export` step
(`compress/onnx/fuse_graph.py`: full attention as one packed `Attention`, which dynamic
quantization turns into `QAttention` (int8 QKV GEMM); a mode that cannot quantize it unpacks it
into q/k/v MatMuls it quantizes and a `MultiHeadAttention` that stays fp32). Nodes are renamed
`<module path>/<node>` so the selector vocabulary of `compress/select.py` picks the nodes they
came from (`compress/onnx/quantize_graph.py`); the graph may be fused further by
`onnxruntime.transformers.optimizer` (its SkipLayerNorm is undone after it) and is prepared by
`quant_pre_process` (shape inference); then the mode's handler quantizes it.
"""

import contextlib
import io
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field

from compress.errors import RecipeError
from compress.io import atomic_dir
from compress.onnx.fuse_graph import unfuse_skip_layer_norm_, unpack_attention_
from compress.onnx.quantize_graph import (
    aliases,
    candidates,
    is_node_selected,
    name_fused_nodes_,
    name_nodes_by_module_,
    quantized_nodes,
    split_unsqueezes_,
)
from compress.run.config_base import ConfigBase
from compress.select import is_selected
from eval.bench import ONNX_FILE

QUANT_TYPES = {"int8": "QInt8", "uint8": "QUInt8"}
CALIBRATION_METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}


class CalibrationConfig(ConfigBase):
    """Where static quantization gets its activation ranges: examples of the training split."""

    method: Literal[tuple(CALIBRATION_METHODS)] = "minmax"  # minmax | entropy (KL) | percentile
    samples: int = Field(512, ge=1)  # training examples run through the model (seeded sample; all if fewer)
    batch_size: int = Field(32, ge=1)  # examples per calibration batch (each trimmed to its longest)
    percentile: float = Field(99.999, gt=90, le=100)  # method percentile: the range keeps this % of values


class DynamicOptions(ConfigBase):
    """`mode: dynamic` has no options of its own: activation ranges come from each batch at run time (asymmetric uint8)."""


class StaticOptions(ConfigBase):
    """`mode: static`: activation ranges fixed by calibration."""

    format: Literal["qdq", "qoperator"] = "qdq"  # Q/DQ pairs around float ops, or QLinear* ops
    activation_type: Literal[tuple(QUANT_TYPES)] = "uint8"  # u8 activations x s8 weights is the fast CPU path
    activation_symmetric: bool = False  # symmetric activation ranges around 0
    calibration: CalibrationConfig | None = Field(default_factory=CalibrationConfig)


# (prepared graph, destination, the settings every mode shares (QuantizeSettings), the mode's options,
#  calibration batches, ONNX Runtime's common quantizer arguments) -> None
Handler = Callable[[Path, Path, Any, Any, list | None, dict], None]


@dataclass(frozen=True)
class Quantizer:
    mode: str
    options: type[ConfigBase]
    handler: Handler
    default_op_types: tuple[str, ...]  # what it quantizes when a recipe names no op_types
    supported_op_types: Callable[[Any], set[str]]  # options -> the ONNX ops ONNX Runtime can quantize this way
    keeps_attention: bool  # has an int8 fused Attention (QAttention): the packed Attention may stay packed
    calibrates: bool  # needs calibration batches from the training split
    rewrites_gemm: bool  # its quantizer rewrites every Gemm as MatMul + Add, so quantizing MatMul touches Gemms too
    describe: Callable[[Any], dict] = lambda options: {}  # options -> what the summary records beyond the mode


QUANTIZERS: dict[str, Quantizer] = {}


def register_quantizer(mode: str, options: type[ConfigBase], default_op_types: tuple[str, ...],
                       supported_op_types: Callable[[Any], set[str]], keeps_attention: bool, calibrates: bool,
                       rewrites_gemm: bool = False, describe: Callable[[Any], dict] = lambda options: {}):
    """Register `handler` as the quantizer of `mode` (the value of the quantize step's `mode:`); returns it unchanged."""

    def decorator(handler: Handler) -> Handler:
        if mode in QUANTIZERS:
            raise ValueError(f"quantize mode {mode!r} is registered twice")
        QUANTIZERS[mode] = Quantizer(mode, options, handler, default_op_types, supported_op_types, keeps_attention,
                                     calibrates, rewrites_gemm, describe)
        return handler

    return decorator


def integer_ops(options) -> set[str]:
    from onnxruntime.quantization import registry

    return set(registry.IntegerOpsRegistry)


def static_ops(options: StaticOptions) -> set[str]:
    from onnxruntime.quantization import registry

    return set(registry.QDQRegistry if options.format == "qdq" else registry.QLinearOpsRegistry)


@register_quantizer("dynamic", DynamicOptions, default_op_types=("MatMul", "Gather", "Attention"),
                    supported_op_types=integer_ops, keeps_attention=True, calibrates=False, rewrites_gemm=True)
def quantize_dynamic_(prepared: Path, dst: Path, settings, options: DynamicOptions, calibration, common: dict) -> None:
    from onnxruntime.quantization import quantize_dynamic

    quantize_dynamic(str(prepared), str(dst), **common)


@register_quantizer("static", StaticOptions, default_op_types=("MatMul", "Gather"), supported_op_types=static_ops,
                    keeps_attention=False, calibrates=True, describe=lambda options: {"format": options.format})
def quantize_static_(prepared: Path, dst: Path, settings, options: StaticOptions, calibration, common: dict) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    extra = common["extra_options"] | {"ActivationSymmetric": options.activation_symmetric}
    if options.calibration.method == "percentile":
        extra["CalibPercentile"] = options.calibration.percentile
    with contextlib.redirect_stdout(io.StringIO()):  # the histogram calibrators print progress
        quantize_static(
            str(prepared), str(dst), data_reader(calibration),
            quant_format=QuantFormat.QDQ if options.format == "qdq" else QuantFormat.QOperator,
            activation_type=getattr(QuantType, QUANT_TYPES[options.activation_type]),
            calibrate_method=getattr(CalibrationMethod, CALIBRATION_METHODS[options.calibration.method]),
            **{**common, "extra_options": extra},
        )


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


# --------------------------------------------------------------------------- the shared pipeline


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


def stays_packed(module: str, settings) -> bool:
    """May the packed `Attention` of `module` be quantized as it is? Only by a mode with an int8 Attention (dynamic's
    `QAttention`), which makes the whole QKV GEMM int8: so only when `Attention` is among the op types and all three
    projections are selected."""
    return QUANTIZERS[settings.mode].keeps_attention and "Attention" in settings.op_types and all(
        is_selected(f"{module}.{p}_proj", settings.include, settings.exclude, settings.protect) for p in "qkv")


def quantize_onnx(src: Path, dst: Path, settings, calibration: list[dict] | None = None) -> dict:
    """Quantize the fp32 ONNX model `src` into `dst` per `settings` (a QuantizeConfig); returns what was done.

    The graph is fused by ONNX Runtime's transformer optimizer and prepared by quant_pre_process
    (symbolic shape inference). Those tools give up on some graphs (BigBird's block gathers) with
    bare Exceptions; such a graph is quantized unfused instead, after ONNX's own shape inference,
    and `shape_inference` in the summary says which path was taken.
    """
    import onnx
    from onnxruntime.quantization import quant_pre_process

    quantizer, options = QUANTIZERS[settings.mode], settings.options
    if quantizer.calibrates and not calibration:
        raise RecipeError(f"quantize mode: {settings.mode} needs calibration data (calibration.samples >= 1 training "
                          "examples); or use mode: dynamic")
    work = dst.parent / f".{dst.stem}.work"
    work.mkdir(parents=True, exist_ok=True)
    named, prepared = work / "named.onnx", work / "prepared.onnx"
    try:
        proto = onnx.load(str(src))
        unpack_attention_(proto, lambda module: not stays_packed(module, settings))
        name_nodes_by_module_(proto)
        if settings.optimize:
            split_unsqueezes_(proto)
        onnx.save(proto, str(named))
        try:
            fusions = (optimize_graph(named, work / "optimized.onnx", attention=quantizer.keeps_attention)
                       if settings.optimize else {})
            with contextlib.chdir(work):  # a failed symbolic pass writes its partial model to the current folder
                quant_pre_process(str(work / "optimized.onnx" if settings.optimize else named), str(prepared))
            excluded, nodes = quantize_prepared(prepared, dst, settings, calibration)
            shapes = "symbolic"
        except Exception as e:
            del proto.graph.value_info[:]  # the exporter's intermediate shapes, which ONNX's inference may contradict
            onnx.save(proto, str(named))
            quant_pre_process(str(named), str(prepared), skip_symbolic_shape=True)
            excluded, nodes = quantize_prepared(prepared, dst, settings, calibration)
            fusions, shapes = {}, f"onnx, unfused (symbolic: {type(e).__name__}: {str(e)[:120]})"
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"mode": settings.mode, "format": quantizer.describe(options).get("format"), "fusions": fusions,
            "shape_inference": shapes, "n_quantized": len(nodes["quantized"]), "excluded": excluded, "kept_fp32": nodes["fp32"],
            "calibration_samples": sum(len(b["input_ids"]) for b in calibration or [])}


def quantize_prepared(prepared: Path, dst: Path, settings, calibration: list[dict] | None) -> tuple[list[str], dict]:
    """Run the mode's quantizer on a prepared graph. Returns (excluded nodes, quantized/fp32 nodes)."""
    import onnx
    from onnxruntime.quantization import QuantType

    quantizer = QUANTIZERS[settings.mode]
    touched = candidates(onnx.load(str(prepared)), settings.op_types, settings.activation_matmuls, quantizer.rewrites_gemm)
    excluded = [n.name for n in touched if not is_node_selected(n.name, settings)]
    common = {
        "op_types_to_quantize": settings.op_types,
        "per_channel": settings.per_channel,
        "reduce_range": settings.reduce_range,
        "weight_type": getattr(QuantType, QUANT_TYPES[settings.weight_type]),
        "nodes_to_exclude": [name for n in touched if n.name in excluded for name, _ in aliases(n)],
        # DefaultTensorType: our graphs are fp32; ONNX's shape inference leaves the outputs of ONNX Runtime's
        # fused ops (com.microsoft domain) untyped when the symbolic pass failed, and the quantizer needs a type
        "extra_options": {"WeightSymmetric": settings.weight_symmetric, "MatMulConstBOnly": not settings.activation_matmuls,
                          "DefaultTensorType": onnx.TensorProto.FLOAT},
    }
    quantizer.handler(prepared, dst, settings, settings.options, calibration, common)
    return excluded, quantized_nodes(touched, onnx.load(str(dst)))


def compare_logits(fp32: Path, int8: Path, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict:
    """Max and mean |int8 - fp32| of the logits and argmax agreement, on the given inputs."""
    from eval.accuracy import predict_onnx

    a = predict_onnx(fp32, input_ids, attention_mask, threads=1)
    b = predict_onnx(int8, input_ids, attention_mask, threads=1)
    return {"max_abs_diff": float(np.abs(a - b).max()), "mean_abs_diff": float(np.abs(a - b).mean()),
            "argmax_agreement": float((a.argmax(-1) == b.argmax(-1)).mean()), "n": len(a)}


def quantize_stage(parent_dir: Path, out_dir: Path, settings, calibration: list[dict] | None, check_inputs: tuple) -> dict:
    """Write `out_dir` atomically: the quantized `model.onnx` + every other file of `parent_dir` (config, tokenizer)."""
    from compress.training.batches import trim

    with atomic_dir(out_dir) as tmp:
        summary = quantize_onnx(parent_dir / ONNX_FILE, tmp / ONNX_FILE, settings, calibration)
        for path in parent_dir.iterdir():
            if path.name != ONNX_FILE and path.is_file():
                shutil.copy2(path, tmp / path.name)
        summary["check"] = compare_logits(parent_dir / ONNX_FILE, tmp / ONNX_FILE, *trim(*check_inputs))
    return summary
