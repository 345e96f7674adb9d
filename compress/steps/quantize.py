"""The `quantize` step: int8 ONNX artifacts made with ONNX Runtime's own quantization tools.

Post-training quantization of an exported stage: `mode: dynamic` quantizes activations at run
time from each batch's range, `mode: static` with ranges calibrated on training examples. Each
mode is a handler registered in `compress/onnx/quantize.py` (`QUANTIZERS`) with its own options
class; this step validates the recipe's fields against the chosen mode's options (a field of
another mode is an error that says so), picks calibration batches when the mode needs them, and
records what was done. `torch.ao.quantization` is not used: it is deprecated and its int8
models do not export to ONNX.

Nodes are selected with the selector vocabulary of `compress/select.py` (`include`/`exclude`/
`protect` globs over module names: `classifier`, `layers.0.*`); the others stay fp32. The stage
made here is ONNX only (no torch model): `model.onnx` + the parent's config and tokenizer files,
written atomically. Later `evaluate`/`bench` steps measure that artifact; the next model-making
step starts again from the parent's torch model.
"""

from typing import Any, Literal

from pydantic import Field, PrivateAttr, model_validator

from compress.distributed import main_process_only
from compress.errors import RecipeError
from compress.onnx.fuse_graph import fused_ops
from compress.onnx.quantize import QUANT_TYPES, QUANTIZERS, CalibrationConfig, calibration_batches, quantize_stage
from compress.run.config_base import NAME_PATTERN, StepConfig
from compress.run.registry import STEPS, register_step, stage_history
from compress.select import SelectConfig
from eval.bench import ONNX_FILE

MODE_FIELDS = {mode: set(q.options.model_fields) for mode, q in QUANTIZERS.items()}  # each mode's own fields
OWNER = {name: mode for mode, names in MODE_FIELDS.items() for name in names}  # field -> the mode it belongs to


class QuantizeConfig(StepConfig, SelectConfig):
    """Quantize a stage's ONNX artifact to int8 with ONNX Runtime (a new, ONNX-only stage)."""

    kind: Literal["quantize"] = "quantize"
    name: str | None = Field("int8", pattern=NAME_PATTERN)  # the stage this step makes
    parent: str | None = Field(None, pattern=NAME_PATTERN)  # stage to quantize; default: the current model's stage
    mode: Literal[tuple(QUANTIZERS)] = "dynamic"  # dynamic: activation ranges per batch at run time; static: calibrated
    per_channel: bool = True  # one weight scale per output channel instead of per tensor
    weight_type: Literal[tuple(QUANT_TYPES)] = "int8"
    weight_symmetric: bool = True  # zero point 0 for weights
    reduce_range: bool = False  # 7-bit weights: avoids int16 overflow on CPUs without VNNI, costs accuracy
    # ONNX ops to quantize; default: the mode's (MatMul + Gather (the embedding tables), + Attention (fused) when dynamic)
    op_types: list[str] | None = Field(None, min_length=1)
    activation_matmuls: bool = False  # also quantize MatMuls of two activations (attention scores, context)
    # kept fp32 whatever include says; unlike other methods the embeddings are quantized: their tables dominate file size
    protect: list[str] = Field(["classifier*"])
    optimize: bool = True  # fuse with onnxruntime.transformers.optimizer before quantizing
    check_samples: int = Field(64, ge=1)  # validation examples on which int8 logits are compared with fp32
    # mode static's own fields (compress/onnx/quantize.py: StaticOptions); null: the mode's default
    format: Literal["qdq", "qoperator"] | None = None  # static: Q/DQ pairs around float ops, or QLinear* ops
    activation_type: Literal[tuple(QUANT_TYPES)] | None = None  # static: u8 activations x s8 weights is the fast CPU path
    activation_symmetric: bool | None = None  # static: symmetric activation ranges around 0
    # static: where activation ranges come from; unset: 512 training examples, minmax
    calibration: CalibrationConfig | None = None
    _options: Any = PrivateAttr(None)

    @model_validator(mode="after")
    def check_modes(self):
        quantizer = QUANTIZERS[self.mode]
        # a field set to null is the mode's default (calibration: null asks for none), and another mode's null field
        # is unset: the resolved recipe (runs/<name>/recipe.yaml) writes every field
        own = {name: getattr(self, name) for name in OWNER if name in self.model_fields_set
               if getattr(self, name) is not None or (name == "calibration" and OWNER[name] == self.mode)}
        foreign = sorted(name for name in own if OWNER[name] != self.mode)
        if foreign:
            raise ValueError(f"{', '.join(foreign)} applies to mode: {OWNER[foreign[0]]} only; "
                             f"remove it, or set mode: {OWNER[foreign[0]]}")
        self._options = quantizer.options.model_validate(own)
        for name in MODE_FIELDS[self.mode]:  # the mode's values, defaults included: what the resolved recipe records
            self.__dict__[name] = getattr(self._options, name)
        if quantizer.calibrates and getattr(self._options, "calibration", None) is None:
            raise ValueError(f"mode: {self.mode} needs calibration data: set calibration: {{method: minmax, samples: 512}}, "
                             "or use mode: dynamic")
        if self.op_types is None:
            self.op_types = list(quantizer.default_op_types)
        supported = quantizer.supported_op_types(self._options)
        unknown = [op for op in self.op_types if op not in supported]
        if unknown:
            where = f"mode {self.mode}" + "".join(f", {k} {v}" for k, v in quantizer.describe(self._options).items())
            raise ValueError(f"op_types {unknown} cannot be quantized in {where}; ONNX Runtime supports: {sorted(supported)}")
        return self

    @property
    def options(self):
        """The chosen mode's validated options (DynamicOptions, StaticOptions)."""
        return self._options

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
    calibration = calibration_batches(ctx.encoded["train"], cfg.options.calibration, ctx.recipe.seed) \
        if QUANTIZERS[cfg.mode].calibrates else None
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
