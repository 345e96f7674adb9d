"""Fused attention in the exported graph: which ops fire per attention kind, parity with torch on
padded batches, and that the fused graph quantizes (dynamic and static) within the int8 budget."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import helper

from compress.models import SlimformerConfig, SlimformerForSequenceClassification
from compress.onnx.export import ExportOptions, export_stage
from compress.onnx.fuse_graph import FLASH_MIN_LEN, fused_ops, unpack_attention_
from compress.onnx.quantize import quantize_onnx
from compress.onnx.quantize_graph import module_of
from compress.steps.quantize import QuantizeConfig
from tests.helpers import FakeTokenizer
from tests.steps.test_quantize import ATOL, MIN_AGREEMENT, RTOL, batch, calibration

GATE = ExportOptions().atol  # the export step's parity tolerance, unchanged by fusion


def padded(n=12, seq_len=16, seed=0):
    """Seeded ids (n, seq_len) where every other example is padded, to a different length each."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 60, (n, seq_len), generator=g)
    mask = torch.ones_like(ids)
    for i in range(0, n, 2):
        mask[i, 1 + (i * 5) % (seq_len - 1):] = 0
    ids[mask == 0] = 0
    return ids, mask


def tiny(attention="full"):
    config = SlimformerConfig(vocab_size=60, max_len=24, dim=32, n_layers=2, n_heads=[4, 2], head_dim=8, ffn_dim=[64, 16],
                              num_labels=3, initializer_range=0.2, dropout=0.0, attention=attention)
    torch.manual_seed(0)
    return SlimformerForSequenceClassification(config).eval()


def run(path, ids, mask):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]


def ops(path) -> dict[str, int]:
    return fused_ops(onnx.load(str(path)))


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    model = tiny()
    out = tmp_path_factory.mktemp("fused") / "onnx"
    report = export_stage(model, FakeTokenizer(), out, padded(8), ExportOptions())
    return model, out, report


def test_full_attention_is_one_fused_node_per_layer(full):
    _, out, report = full
    graph = onnx.load(str(out / "model.onnx")).graph
    attention = [n for n in graph.node if n.op_type == "Attention"]
    assert len(attention) == 2 and not any(n.op_type == "MultiHeadAttention" for n in graph.node)  # packed, one per layer
    assert sorted(helper.get_attribute_value(a) for n in attention for a in n.attribute if a.name == "num_heads") == [2, 4]
    assert {module_of(n) for n in attention} == {"layers.0.attn", "layers.1.attn"}  # the module path survives packing
    weights = {t.name: t.dims for t in graph.initializer}
    assert [weights[n.input[1]] for n in attention] == [[32, 3 * 32], [32, 3 * 16]]  # (D, q + k + v): heads 4 and 2 of dim 8
    assert not any(n.op_type in ("Softmax", "Where", "Expand") for n in graph.node)  # no unfused attention or mask broadcast left
    assert sum(n.op_type == "MatMul" for n in graph.node) == 6  # out_proj, up, down per layer; q/k/v are in the packed GEMM
    assert report["fusions"] == ops(out / "model.onnx")
    assert report["fusions"] == {"Attention": 2, "BiasGelu": 2} and report["flash_attention"] is False


def test_residual_sums_stay_apart_from_layer_norm_even_after_onnx_runtime_optimizes(full, tmp_path):
    """SkipLayerNormalization is undone (slower on CPU): each residual is a Sum feeding a LayerNormalization, in the
    file and in the graph ONNX Runtime optimizes at its default level when a user loads the artifact."""
    _, out, _ = full
    graph = onnx.load(str(out / "model.onnx")).graph
    assert sum(n.op_type == "Sum" for n in graph.node) == 4 and sum(n.op_type == "LayerNormalization" for n in graph.node) == 6
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")  # what the session runs, default level (all)
    ort.InferenceSession(str(out / "model.onnx"), options, providers=["CPUExecutionProvider"])
    optimized = [n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node]
    assert "SkipLayerNormalization" not in optimized and optimized.count("Sum") == 4


def test_unpacking_restores_the_multi_head_form_with_the_same_logits(full):
    """What static quantization starts from: q/k/v MatMuls named after their modules, and MultiHeadAttention."""
    _, out, _ = full
    proto = onnx.load(str(out / "model.onnx"))
    assert unpack_attention_(proto) == 2
    assert {module_of(n) for n in proto.graph.node if n.op_type == "MultiHeadAttention"} == {"layers.0.attn", "layers.1.attn"}
    assert {module_of(n) for n in proto.graph.node if n.op_type == "MatMul"} >= {f"layers.{i}.attn.{p}_proj" for i in (0, 1)
                                                                                 for p in "qkv"}
    ids, mask = padded(12, 16, seed=4)
    unpacked = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    logits = unpacked.run(["logits"], {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]
    np.testing.assert_allclose(logits, run(out / "model.onnx", ids, mask), atol=1e-5)


@pytest.mark.parametrize("form", ["full", "flash"])  # the packed Attention, and the flash form of long inputs
@pytest.mark.parametrize("shape", [(12, 16), (3, 24), (5, 2)])
def test_fused_graph_keeps_parity_on_padded_batches(request, form, shape):
    model, out, report = request.getfixturevalue(form)
    assert report["max_abs_diff"] <= GATE
    ids, mask = padded(*shape, seed=1)
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask).logits.numpy()
    assert np.abs(run(out / "model.onnx", ids, mask) - expected).max() <= GATE


def test_a_fusion_that_breaks_parity_ships_the_unfused_graph(tmp_path, monkeypatch):
    """The gate is on what ships: a rewrite that changes the logits is dropped, and the report says why."""
    import compress.onnx.export

    def broken(src, dst, flash=False):
        proto = onnx.load(str(src))
        logits = next(n for n in proto.graph.node if "logits" in n.output)
        logits.output[0] = "logits_raw"  # logits + 1: a fused graph that no longer matches torch
        one = onnx.helper.make_tensor("one", onnx.TensorProto.FLOAT, [], [1.0])
        proto.graph.initializer.append(one)
        proto.graph.node.append(onnx.helper.make_node("Add", ["logits_raw", "one"], ["logits"]))
        onnx.save(proto, str(dst))
        return {"MultiHeadAttention": 2}, 0

    monkeypatch.setattr(compress.onnx.export, "fuse_for_ort", broken)
    report = export_stage(tiny(), FakeTokenizer(), tmp_path / "onnx", padded(8), ExportOptions())
    assert report["fusions"] == {} and "parity failed" in report["fuse_error"] and report["max_abs_diff"] <= GATE
    assert ops(tmp_path / "onnx" / "model.onnx") == {}
    assert not any(p.name.startswith(".") for p in (tmp_path / "onnx").iterdir())  # the unfused copy was moved in, not left


@pytest.mark.parametrize("settings", [{"mode": "dynamic"}, {"mode": "static", "format": "qdq"}], ids=["dynamic", "static-qdq"])
def test_fused_graph_quantizes_within_the_int8_budget(full, tmp_path, settings):
    _, out, _ = full
    cfg = QuantizeConfig(**settings)
    summary = quantize_onnx(out / "model.onnx", tmp_path / "int8.onnx", cfg, calibration() if cfg.mode == "static" else None)
    assert summary["shape_inference"] == "symbolic" and summary["n_quantized"] > 0
    fused = "QAttention" if cfg.mode == "dynamic" else "MultiHeadAttention"  # int8 QKV GEMM, or unpacked around fp32 attention
    assert ops(tmp_path / "int8.onnx").get(fused) == 2  # the fused attention survives quantization
    ids, mask = batch(seed=2)  # the inputs the int8 budget of test_quantize.py was set on (every third padded)
    fp32, int8 = run(out / "model.onnx", ids, mask), run(tmp_path / "int8.onnx", ids, mask)
    assert np.abs(int8 - fp32).max() <= ATOL + RTOL * np.abs(fp32).max()
    assert (int8.argmax(-1) == fp32.argmax(-1)).mean() >= MIN_AGREEMENT


def test_efficient_kinds_get_no_attention_kernel_and_keep_parity(tmp_path):
    """What compress/onnx/fuse_graph.py says: LayerNorm/GELU fuse in every layer; attention in the full layer (packed) and
    in BigBird's global rows (dense; their queries are a gather, so not packed), not in Linformer's or Performer's."""
    kinds = [{"kind": "full"}, {"kind": "linformer", "k": 6, "max_len": 24}, {"kind": "performer", "n_features": 32},
             {"kind": "bigbird", "block": 4, "window": 3, "n_global": 1, "n_random": 1}]
    config = SlimformerConfig(vocab_size=60, max_len=24, dim=32, n_layers=4, n_heads=4, ffn_dim=64, num_labels=3,
                              initializer_range=0.2, dropout=0.0, attention=kinds)
    torch.manual_seed(0)
    model = SlimformerForSequenceClassification(config).eval()
    report = export_stage(model, FakeTokenizer(), tmp_path / "onnx", padded(8), ExportOptions())
    graph = onnx.load(str(tmp_path / "onnx" / "model.onnx")).graph
    assert {module_of(n) for n in graph.node if n.op_type == "Attention"} == {"layers.0.attn"}  # packed: q/k/v of one input
    assert {module_of(n) for n in graph.node if n.op_type == "MultiHeadAttention"} == {"layers.3.attn"}  # global rows' queries
    assert report["fusions"]["Attention"] == 1 and report["fusions"]["MultiHeadAttention"] == 1
    assert "SkipLayerNormalization" not in report["fusions"] and report["fusions"]["BiasGelu"] == 4
    ids, mask = padded(6, 16, seed=3)
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask).logits.numpy()
    assert np.abs(run(tmp_path / "onnx" / "model.onnx", ids, mask) - expected).max() <= GATE


@pytest.fixture(scope="module")
def flash(tmp_path_factory):
    model = tiny()
    out = tmp_path_factory.mktemp("flash") / "onnx"
    report = export_stage(model, FakeTokenizer(), out, padded(8), ExportOptions(flash_attention=True))
    return model, out, report


def test_flash_form_has_no_mask_input_and_carries_the_mask_in_an_extra_coordinate(flash):
    """ONNX Runtime's CPU flash kernel runs only for a MultiHeadAttention without key padding mask or attention bias:
    q and k get one coordinate more per head (heads 4 and 2 of 8 -> 9), v keeps its width."""
    _, out, report = flash
    graph = onnx.load(str(out / "model.onnx")).graph
    mha = [n for n in graph.node if n.op_type == "MultiHeadAttention"]
    assert report["flash_attention"] is True and report["fusions"].get("Attention") is None and len(mha) == 2
    assert all(len(n.input) == 4 for n in mha)  # query, key, value, bias: no key_padding_mask, no attention_bias
    weights = {t.name: t.dims for t in graph.initializer}
    assert [[weights[f"{n.output[0]}_{p}_proj_weight"][1] for p in "qkv"] for n in mha] == [[36, 36, 32], [18, 18, 16]]
    projections = {f"layers.{i}.attn.{p}_proj" for i in (0, 1) for p in "qkv"}
    assert {module_of(n) for n in graph.node if n.op_type == "MatMul"} >= projections  # quantize's selectors find them


def test_flash_form_is_the_default_from_long_inputs_on(tmp_path):
    model = tiny()
    short = export_stage(model, FakeTokenizer(), tmp_path / "short", padded(8), ExportOptions(), seq_len=FLASH_MIN_LEN - 1)
    long = export_stage(model, FakeTokenizer(), tmp_path / "long", padded(8), ExportOptions(), seq_len=FLASH_MIN_LEN)
    assert (short["flash_attention"], long["flash_attention"]) == (False, True)
    assert short["fusions"]["Attention"] == 2 and long["fusions"]["MultiHeadAttention"] == 2


def test_flash_form_is_not_claimed_without_full_attention(tmp_path):
    """BigBird's global rows become a MultiHeadAttention too, but not from a packed Attention: no flash form there."""
    kinds = [{"kind": "bigbird", "block": 4, "window": 3, "n_global": 1, "n_random": 1}, {"kind": "performer", "n_features": 32}]
    config = SlimformerConfig(vocab_size=60, max_len=24, dim=32, n_layers=2, n_heads=4, ffn_dim=64, num_labels=3,
                              initializer_range=0.2, dropout=0.0, attention=kinds)
    torch.manual_seed(0)
    report = export_stage(SlimformerForSequenceClassification(config).eval(), FakeTokenizer(), tmp_path / "onnx", padded(8),
                          ExportOptions(flash_attention=True))
    assert report["fusions"]["MultiHeadAttention"] == 1 and report["flash_attention"] is False


def test_flash_form_quantizes_within_the_int8_budget(flash, tmp_path):
    _, out, _ = flash
    summary = quantize_onnx(out / "model.onnx", tmp_path / "int8.onnx", QuantizeConfig(mode="dynamic"))
    assert summary["n_quantized"] >= 8 and ops(tmp_path / "int8.onnx").get("MultiHeadAttention") == 2
    ids, mask = batch(seed=2)
    fp32, int8 = run(out / "model.onnx", ids, mask), run(tmp_path / "int8.onnx", ids, mask)
    assert np.abs(int8 - fp32).max() <= ATOL + RTOL * np.abs(fp32).max()
    assert (int8.argmax(-1) == fp32.argmax(-1)).mean() >= MIN_AGREEMENT
