"""ONNX export with a parity gate: what the `export` step (compress/steps/export.py) and the benchmarks call.

Each stage becomes a folder that runs in ONNX Runtime with no slimformer installed, in the
layout optimum's `ORTModelForSequenceClassification` reads: `model.onnx` + `config.json` +
tokenizer files. Inputs are `input_ids` and `attention_mask` (int64, (batch, seq_len), both axes
dynamic up to the model's `max_len`); the output is `logits` (batch, n_classes), or, for a
sentence-embedding model, `sentence_embedding` (batch, embedding_dim): pooled, projected and
normalised as the model does, what a search engine indexes.

The export uses torch's dynamo-based exporter (`torch.onnx.export(dynamo=True)`, onnxscript
underneath). With `fuse: true` (the default) the graph is then rewritten for ONNX Runtime's fused
kernels (`compress/onnx/fuse_graph.py`: full attention as one packed Attention, or for inputs of
FLASH_MIN_LEN tokens and more a MultiHeadAttention on ONNX Runtime's flash kernel; BiasGelu); the
fused ops are recorded as the stage's `fusions`, the flash form as `flash_attention`. Before the
folder is moved into place, ONNX Runtime runs the final graph on real validation inputs (padded
ones included) and its logits must match PyTorch's within `atol`; otherwise nothing is written
and the step fails with the measured difference.
"""

import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from pydantic import Field

from compress.errors import ExportError
from compress.io import atomic_dir
from compress.onnx.fuse_graph import FLASH_MIN_LEN, fuse_for_ort
from compress.run.config_base import ConfigBase
from eval.bench import EMBEDDING_OUTPUT, INPUT_NAMES, ONNX_FILE  # the artifact's file name and inputs: the timer reads the same


def output_of(model) -> str:
    """The graph's output name: `sentence_embedding` for a sentence-embedding model, else `logits`."""
    return EMBEDDING_OUTPUT if getattr(model.config, "embedding_dim", None) is not None else "logits"


class ExportOptions(ConfigBase):
    """How a model becomes an ONNX artifact: opset, parity tolerance, fusion (the `export` step's fields)."""

    opset: int = Field(18, ge=17, le=23)  # ONNX opset of the exported graph
    atol: float = Field(1e-4, gt=0)  # max |logits_onnx - logits_torch| allowed on the parity inputs
    parity_samples: int = Field(64, ge=1)  # validation examples the parity check runs on
    # rewrite for ONNX Runtime's fused kernels (compress/onnx/fuse_graph.py); the artifact then needs ONNX Runtime
    fuse: bool = True
    # full attention on ONNX Runtime's CPU flash kernel (compress/onnx/fuse_graph.py: flash_attention_); None: when the task's
    # inputs are FLASH_MIN_LEN (1,024) tokens or more, where it is faster than the packed Attention (slower on short ones)
    flash_attention: bool | None = None
    fp16: bool = False  # also write onnx_fp16/: an fp16 graph with fp32 inputs/outputs, for GPU runtimes (compress/onnx/fp16.py)
    fp16_atol: float = Field(5e-2, gt=0)  # the fp16 artifact's gate: max |logits_fp16 - logits_torch_fp32|



class LogitsOnly(torch.nn.Module):
    """(input_ids, attention_mask) -> logits, the signature the ONNX graph gets."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


def export_onnx(model: torch.nn.Module, path: Path, sample: tuple[torch.Tensor, torch.Tensor], opset: int = 18) -> Path:
    """Write `model` to `path` as ONNX with dynamic batch and sequence axes."""
    model = model.eval().cpu()
    batch = torch.export.Dim("batch", min=1, max=65536)
    seq_len = torch.export.Dim("seq_len", min=1, max=model.config.max_len)
    dynamic = {name: {0: batch, 1: seq_len} for name in INPUT_NAMES}
    input_ids, attention_mask = sample  # batch and length >= 2, or the tracer specialises them
    output = output_of(model)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        if getattr(model, "onnx_dynamo", True):
            program = torch.onnx.export(
                LogitsOnly(model).eval(), (input_ids, attention_mask), dynamo=True, opset_version=opset,
                input_names=list(INPUT_NAMES), output_names=[output], dynamic_shapes=dynamic, verbose=False,
            )
            program.save(str(path), external_data=False)
        else:  # models torch.export specialises (bidirectional RNNs fix the length); the TorchScript exporter keeps it dynamic
            axes = {name: {0: "batch", 1: "seq_len"} for name in INPUT_NAMES} | {output: {0: "batch"}}
            torch.onnx.export(
                LogitsOnly(model).eval(), (input_ids, attention_mask), str(path), dynamo=False, opset_version=opset,
                input_names=list(INPUT_NAMES), output_names=[output], dynamic_axes=axes,
            )
    return path


def check_parity(model: torch.nn.Module, onnx_path: Path, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 atol: float) -> dict:
    """Run torch and ONNX Runtime on the same inputs; raise ExportError beyond `atol`."""
    import onnxruntime as ort

    with torch.no_grad():
        expected = model.eval()(input_ids=input_ids, attention_mask=attention_mask).logits.numpy()
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run([output_of(model)], {"input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy()})[0]
    diff = float(np.abs(got - expected).max())
    report = {"max_abs_diff": diff, "atol": atol, "n": int(input_ids.shape[0]),
              "argmax_agreement": float((got.argmax(-1) == expected.argmax(-1)).mean())}
    if not diff <= atol:
        raise ExportError(f"ONNX parity failed for {onnx_path.parent.name}: max |onnx - torch| = {diff:.3g} > atol {atol:g} "
                          f"on {report['n']} inputs; nothing was written")
    return report


def export_stage(model, tokenizer, out_dir: Path, parity_inputs: tuple[torch.Tensor, torch.Tensor],
                 cfg: ExportOptions | None = None, seq_len: int | None = None) -> dict:
    """Export, fuse (`cfg.fuse`), check parity, and move `model.onnx` + config + tokenizer into `out_dir` atomically.

    `seq_len`, the length of the task's inputs, decides the flash form when `cfg.flash_attention` is None.
    Returns the parity report plus `fusions`: `{op: count}` of the fused ops in the artifact
    ({} unfused), `flash_attention` (whether full attention is in the flash form), and `fuse_error`
    when the rewrite failed or its graph missed parity and the unfused graph was kept (which must
    then pass the same gate).
    """
    from compress.training.batches import trim

    cfg = ExportOptions() if cfg is None else cfg
    input_ids, attention_mask = trim(*parity_inputs)
    with atomic_dir(out_dir) as tmp:
        raw = tmp / f".{ONNX_FILE}.unfused" if cfg.fuse else tmp / ONNX_FILE
        try:
            export_onnx(model, raw, (input_ids, attention_mask), cfg.opset)
        except Exception as e:  # the exporter raises many types; the user needs the stage and the cause
            raise ExportError(f"ONNX export of {out_dir.parent.name} failed: {type(e).__name__}: {str(e)[:2000]}") from e
        fusions, flashed, error = {}, 0, None
        flash = cfg.flash_attention if cfg.flash_attention is not None else (seq_len or 0) >= FLASH_MIN_LEN
        if cfg.fuse:
            try:
                fusions, flashed = fuse_for_ort(raw, tmp / ONNX_FILE, flash=flash)
                check_parity(model, tmp / ONNX_FILE, input_ids, attention_mask, cfg.atol)
            except Exception as e:  # a rule that cannot handle the graph, or breaks it: ship it unfused, say why
                fusions, flashed, error = {}, 0, f"{type(e).__name__}: {str(e)[:300]}"
                raw.replace(tmp / ONNX_FILE)
            raw.unlink(missing_ok=True)
        parity = check_parity(model, tmp / ONNX_FILE, input_ids, attention_mask, cfg.atol)  # the gate, on what ships
        model.config.save_pretrained(tmp)
        if hasattr(tokenizer, "backend_tokenizer"):  # truncate at the task's length, pad to the batch's longest
            from compress.data.tokenizer import fit_to_length_

            fit_to_length_(tokenizer, seq_len or model.config.max_len)
        tokenizer.save_pretrained(tmp)
    return {**parity, "fusions": fusions, "flash_attention": flashed > 0, **({"fuse_error": error} if error else {})}


