"""fp16 ONNX artifacts for GPU runtimes, with their own parity gate.

The exported fp32 graph is converted by ONNX Runtime's own converter
(`onnxruntime.transformers.float16.convert_float_to_float16`, shipped inside onnxruntime:
onnxconverter-common is not needed) with `keep_io_types=True`: weights and activations become
fp16, while the inputs stay int64 and `logits` stays fp32, so a caller feeds and reads the
same tensors as from the fp32 artifact (Cast nodes sit at the boundary). Constants beyond
fp16's range are clamped to +-65504 by the converter: our masks' -1e30 becomes -65504, still
exp() == 0 after the max is subtracted.

The gate: the fp16 graph's logits against fp32 torch's on the same validation inputs must
agree within `atol` (looser than fp32's: fp16 keeps about 3 significant digits, so logits of
magnitude ~10 move by ~1e-2). It runs in CPU ONNX Runtime, which executes fp16 MatMul, Softmax
and LayerNorm (slowly: the artifact is for CUDA/TensorRT providers, the check only needs it
to be right). As in the fp32 export, a folder that fails the gate is never written.
"""

import shutil
from pathlib import Path

import numpy as np
import onnx
import torch

from compress.errors import ExportError
from compress.io import atomic_dir
from eval.bench import ONNX_FILE, output_name

FP16_DIR = "onnx_fp16"  # beside each stage's onnx/ folder


def convert_fp16(src: Path, dst: Path) -> Path:
    """Write the fp16 version of ONNX model `src` to `dst`, fp32 inputs/outputs kept."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    onnx.save(model, str(dst))
    return dst


def fp16_parity(model: torch.nn.Module, onnx_path: Path, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                atol: float) -> dict:
    """max |logits_fp16_onnx - logits_fp32_torch| over the inputs; ExportError beyond `atol`."""
    import onnxruntime as ort

    with torch.no_grad():
        expected = model.eval()(input_ids=input_ids, attention_mask=attention_mask).logits.float().numpy()  # (B, n_classes)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run([output_name(session)], {"input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy()})[0]
    if got.dtype != np.float32:
        raise ExportError(f"fp16 artifact returns {got.dtype} logits; the converter was to keep fp32 outputs")
    diff = float(np.abs(got - expected).max())
    report = {"max_abs_diff": diff, "atol": atol, "n": int(input_ids.shape[0]),
              "argmax_agreement": float((got.argmax(-1) == expected.argmax(-1)).mean())}
    if not diff <= atol:
        raise ExportError(f"fp16 ONNX parity failed: max |onnx_fp16 - torch| = {diff:.3g} > fp16_atol {atol:g} on "
                          f"{report['n']} inputs; nothing was written (raise export.fp16_atol, or keep the fp32 artifact)")
    return report


def export_fp16_stage(model: torch.nn.Module, fp32_dir: Path, out_dir: Path, parity_inputs: tuple[torch.Tensor, torch.Tensor],
                      atol: float) -> dict:
    """Convert `fp32_dir/model.onnx`, gate it, and move it with the fp32 folder's config and tokenizer into `out_dir`."""
    with atomic_dir(out_dir) as tmp:
        for path in fp32_dir.iterdir():  # config.json, tokenizer files, remote code: the folder loads the same way
            if path.is_file() and path.name != ONNX_FILE:
                shutil.copy2(path, tmp / path.name)
        convert_fp16(fp32_dir / ONNX_FILE, tmp / ONNX_FILE)
        return fp16_parity(model, tmp / ONNX_FILE, *parity_inputs, atol)
