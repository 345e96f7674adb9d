"""ONNX export: parity with torch on real inputs, dynamic axes, and the parity gate."""

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

from compress.errors import ExportError
from compress.models import SlimformerConfig, SlimformerForSequenceClassification
from compress.onnx.export import ExportOptions, check_parity, export_stage
from tests.helpers import FakeTokenizer


def batch(n=6, seq_len=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 60, (n, seq_len), generator=g)
    mask = torch.ones_like(ids)
    mask[0, 5:] = 0
    ids[mask == 0] = 0
    return ids, mask


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    config = SlimformerConfig(vocab_size=60, max_len=24, dim=32, n_layers=2, n_heads=[4, 2], head_dim=8, ffn_dim=[64, 16],
                              num_labels=3)
    torch.manual_seed(0)
    model = SlimformerForSequenceClassification(config).eval()
    out = tmp_path_factory.mktemp("export") / "onnx"
    parity = export_stage(model, FakeTokenizer(), out, batch(), ExportOptions())
    return model, out, parity


def test_export_writes_the_folder(exported):
    _, out, parity = exported
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.onnx", "tokenizer.json"} <= names
    assert "modeling_slimformer.py" in names  # AutoConfig(trust_remote_code=True) works without slimformer
    assert json.loads((out / "config.json").read_text())["n_heads"] == [4, 2]
    assert parity["max_abs_diff"] <= 1e-4 and parity["argmax_agreement"] == 1.0


@pytest.mark.parametrize("shape", [(1, 3), (2, 24), (17, 9)])
def test_dynamic_axes_parity(exported, shape):
    model, out, _ = exported
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask"]
    ids, mask = batch(*shape, seed=1)
    got = session.run(["logits"], {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask).logits.numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)


def test_opset_is_at_least_17(exported):
    import onnx

    model = onnx.load(str(exported[1] / "model.onnx"))
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17


def test_parity_failure_raises_and_writes_nothing(exported, tmp_path):
    model, out, _ = exported
    other = SlimformerForSequenceClassification(model.config).eval()  # different weights
    with pytest.raises(ExportError, match="parity failed"):
        check_parity(other, out / "model.onnx", *batch(), atol=1e-4)

    # a model whose eager outputs drift from what it exports: the gate must refuse the folder
    target = tmp_path / "onnx"
    original = SlimformerForSequenceClassification.forward

    def shifted(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        if not torch.compiler.is_exporting():
            out.logits = out.logits + 1.0
        return out

    SlimformerForSequenceClassification.forward = shifted
    try:
        with pytest.raises(ExportError, match="parity failed"):
            export_stage(model, FakeTokenizer(), target, batch(), ExportOptions())
    finally:
        SlimformerForSequenceClassification.forward = original
    assert not target.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
