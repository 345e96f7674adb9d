"""The `export` step: the current stage as an ONNX folder, gated by parity with PyTorch.

Each stage becomes a folder that runs in ONNX Runtime with no slimformer installed, in the
layout optimum's `ORTModelForSequenceClassification` reads: `model.onnx` + `config.json` +
tokenizer files. How the graph is written, fused and checked is `compress/onnx/export.py`; this
step picks the parity inputs (the validation split's first `parity_samples`), records what the
export did, and adds the fp16 artifact when asked (`compress/onnx/fp16.py`).
"""

from typing import Literal

from compress.distributed import main_process_only
from compress.onnx.export import ExportOptions, export_stage
from compress.run.config_base import StepConfig
from compress.run.registry import register_step


class ExportConfig(StepConfig, ExportOptions):
    """Export the current stage to ONNX and check it against PyTorch."""

    kind: Literal["export"] = "export"


@register_step("export", ExportConfig)
@main_process_only  # several processes: the main one exports/measures, the others wait
def export(model, cfg: ExportConfig, ctx):
    val = ctx.encoded["validation"]
    n = cfg.parity_samples
    parity = export_stage(model, ctx.tokenizer, ctx.onnx_dir(), (val["input_ids"][:n], val["attention_mask"][:n]), cfg,
                          seq_len=ctx.recipe.task.seq_len)
    ctx.record("onnx_dir", str(ctx.onnx_dir().relative_to(ctx.run_dir)))
    ctx.record("fusions", parity.pop("fusions"))
    ctx.record("flash_attention", parity.pop("flash_attention"))
    ctx.record("parity", parity)
    ctx.record("precision", "fp32")
    if cfg.fp16:
        from compress.onnx.fp16 import FP16_DIR, export_fp16_stage
        from compress.training.batches import trim

        out = ctx.stage_dir() / FP16_DIR
        ctx.record("parity_fp16", export_fp16_stage(model, ctx.onnx_dir(), out,
                                                    trim(val["input_ids"][:n], val["attention_mask"][:n]), cfg.fp16_atol))
        ctx.record("onnx_fp16_dir", str(out.relative_to(ctx.run_dir)))
    return model
