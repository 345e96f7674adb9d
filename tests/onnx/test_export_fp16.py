"""fp16 ONNX artifacts: fp32 inputs/outputs kept, fp16 weights, their own parity gate (run in CPU ONNX Runtime)."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from compress.errors import ExportError
from compress.models import SlimformerConfig, SlimformerForSequenceClassification
from compress.onnx.export import ExportOptions, export_stage
from compress.onnx.fp16 import export_fp16_stage
from tests.helpers import FakeTokenizer


def batch(n=6, seq_len=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 60, (n, seq_len), generator=g)
    mask = torch.ones_like(ids)
    mask[0, 5:] = 0  # a padded row: the mask's -1e30 is clamped to fp16's -65504 and must still mask
    ids[mask == 0] = 0
    return ids, mask


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    config = SlimformerConfig(vocab_size=60, max_len=24, dim=32, n_layers=2, n_heads=4, ffn_dim=64, num_labels=3)
    torch.manual_seed(0)
    model = SlimformerForSequenceClassification(config).eval()
    with torch.no_grad():  # logits of order 1, not 0.01, so the gate's tolerance is exercised
        model.classifier.weight.mul_(50)
    root = tmp_path_factory.mktemp("fp16")
    export_stage(model, FakeTokenizer(), root / "onnx", batch(), ExportOptions())
    parity = export_fp16_stage(model, root / "onnx", root / "onnx_fp16", batch(), atol=5e-2)
    return model, root, parity


def test_fp16_folder_keeps_fp32_io_and_passes_its_gate(exported):
    model, root, parity = exported
    assert {p.name for p in (root / "onnx").iterdir()} == {p.name for p in (root / "onnx_fp16").iterdir()}
    graph = onnx.load(str(root / "onnx_fp16" / "model.onnx")).graph
    assert [i.type.tensor_type.elem_type for i in graph.input] == [onnx.TensorProto.INT64] * 2
    assert graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    halves = [t for t in graph.initializer if t.data_type == onnx.TensorProto.FLOAT16]
    assert sum(np.prod(t.dims) for t in halves) > 0.9 * sum(p.numel() for p in model.parameters())  # the weights are fp16
    assert 0 < parity["max_abs_diff"] <= 5e-2 and parity["argmax_agreement"] == 1.0


def test_fp16_on_other_shapes(exported):
    model, root, _ = exported
    session = ort.InferenceSession(str(root / "onnx_fp16" / "model.onnx"), providers=["CPUExecutionProvider"])
    ids, mask = batch(3, 20, seed=1)
    got = session.run(["logits"], {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask).logits.numpy()
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=5e-2)


def test_gate_fails_and_writes_nothing(exported):
    model, root, _ = exported
    with pytest.raises(ExportError, match="fp16 ONNX parity failed"):
        export_fp16_stage(model, root / "onnx", root / "strict", batch(), atol=1e-9)
    assert not (root / "strict").exists()
