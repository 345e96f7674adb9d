"""int8 quantization with ONNX Runtime: logits close to fp32, exclusions kept fp32, clear errors, the pipeline stage."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from pydantic import ValidationError

from compress.errors import RecipeError
from compress.models import SlimformerConfig, SlimformerForSequenceClassification
from compress.onnx.export import ExportOptions, export_stage
from compress.onnx.quantize import quantize_onnx, quantize_stage
from compress.onnx.quantize_graph import is_node_selected, module_of
from compress.run.config import load_recipe, validate_recipe
from compress.steps.quantize import QuantizeConfig
from tests.helpers import FakeTokenizer

# int8 error budget on logits: |int8 - fp32| <= ATOL + RTOL * max|fp32 logits|
ATOL, RTOL = 0.02, 0.1
MIN_AGREEMENT = 0.9  # argmax agreement with fp32 on random inputs


def batch(n=64, seq_len=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 60, (n, seq_len), generator=g)
    mask = torch.ones_like(ids)
    mask[::3, seq_len // 2 :] = 0  # every third example padded
    ids[mask == 0] = 0
    return ids, mask


def calibration(n_batches=4):
    out = []
    for i in range(n_batches):
        ids, mask = batch(16, 16, seed=10 + i)
        out.append({"input_ids": ids.numpy(), "attention_mask": mask.numpy()})
    return out


def run(path, ids, mask):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]


@pytest.fixture(scope="module")
def parent(tmp_path_factory):
    """A tiny model with per-layer heads, exported; weights scaled up so logits are not all near 0."""
    config = SlimformerConfig(vocab_size=60, max_len=24, dim=32, n_layers=2, n_heads=[4, 2], head_dim=8,
                              ffn_dim=[64, 16], num_labels=3, initializer_range=0.2, dropout=0.0)
    torch.manual_seed(0)
    model = SlimformerForSequenceClassification(config).eval()
    out = tmp_path_factory.mktemp("parent") / "onnx"
    export_stage(model, FakeTokenizer(), out, batch(8), ExportOptions())
    return out


@pytest.mark.parametrize("settings", [
    {"mode": "dynamic"},
    {"mode": "static", "format": "qdq"},
    {"mode": "static", "format": "qoperator", "per_channel": False, "calibration": {"method": "entropy"}},
    {"mode": "static", "activation_symmetric": True, "activation_type": "int8", "calibration": {"method": "percentile"}},
], ids=["dynamic", "static-qdq-minmax", "static-qoperator-entropy", "static-symmetric-percentile"])
def test_quantized_logits_close_to_fp32(parent, tmp_path, settings):
    cfg = QuantizeConfig(**settings)
    summary = quantize_onnx(parent / "model.onnx", tmp_path / "model.onnx", cfg, calibration())
    ids, mask = batch(seed=1)
    fp32, int8 = run(parent / "model.onnx", ids, mask), run(tmp_path / "model.onnx", ids, mask)
    assert np.abs(fp32).max() > 0.5, "the fixture's logits are too small to test anything"
    # symmetric int8 activations spend their sign bit on mostly positive (post-GELU) values, and
    # percentile calibration clips the few largest: the coarsest setting (ONNX Runtime 1.32: 14% of max |logit|)
    rtol = 2 * RTOL if settings.get("activation_symmetric") else RTOL
    assert np.abs(int8 - fp32).max() <= ATOL + rtol * np.abs(fp32).max()
    assert (int8.argmax(-1) == fp32.argmax(-1)).mean() >= MIN_AGREEMENT
    # every Linear of the encoder and the token embedding became int8; the classifier (excluded by default) did not
    assert summary["n_quantized"] >= 8 and sorted(summary["kept_fp32"]) == sorted(summary["excluded"])
    integer = [t for t in onnx.load(str(tmp_path / "model.onnx")).graph.initializer if t.data_type in (2, 3)]
    assert sum(int(np.prod(t.dims)) for t in integer) >= 60 * 32  # at least the embedding table's worth
    assert "SkipLayerNormalization" not in summary["fusions"]  # slower on CPU than Sum + LayerNormalization: never fused
    classifier = [n for n in onnx.load(str(tmp_path / "model.onnx")).graph.node if n.name.startswith("classifier/")]
    assert classifier and {n.op_type for n in classifier} <= {"Gemm", "MatMul", "Add"}, classifier
    assert all(name.startswith("classifier/") for name in summary["excluded"])


def test_excluded_nodes_stay_fp32(parent, tmp_path):
    cfg = QuantizeConfig(mode="dynamic", exclude=["layers.0.mlp*", "embeddings.tok"])
    summary = quantize_onnx(parent / "model.onnx", tmp_path / "model.onnx", cfg)
    excluded = summary["excluded"]
    modules = {name.split("/")[0] for name in excluded}
    assert modules == {"layers.0.mlp.up_proj", "layers.0.mlp.down_proj", "embeddings.tok", "classifier"}  # classifier: protected
    assert sorted(summary["kept_fp32"]) == sorted(excluded)
    graph = onnx.load(str(tmp_path / "model.onnx")).graph
    floats = {t.name for t in graph.initializer if t.data_type == 1}
    nodes = {n.name: n for n in graph.node}
    for name in excluded:  # same node, same op, a float weight input
        node = nodes.get(name) or nodes[name + "_MatMul"]  # quantize_dynamic turns the classifier's Gemm into MatMul + Add
        assert node.op_type in ("MatMul", "Gather") and any(i in floats for i in node.input), name
    kept_layer = {n.op_type for name, n in nodes.items() if name.startswith("layers.1.mlp.up_proj/")}
    assert kept_layer and "MatMul" not in kept_layer, kept_layer  # the same Linear one layer up is int8


def test_a_packed_attention_is_unpacked_where_the_selection_splits_it(parent, tmp_path):
    """Dynamic quantization makes a packed Attention's whole QKV GEMM int8 (QAttention); excluding one projection
    unpacks that layer's attention, so exactly the excluded projection stays fp32."""
    cfg = QuantizeConfig(mode="dynamic", exclude=["layers.0.attn.v_proj"])
    summary = quantize_onnx(parent / "model.onnx", tmp_path / "model.onnx", cfg)
    assert {name.split("/")[0] for name in summary["excluded"]} == {"layers.0.attn.v_proj", "classifier"}
    graph = onnx.load(str(tmp_path / "model.onnx")).graph
    assert {module_of(n) or n.name.split("/")[0] for n in graph.node if n.op_type == "QAttention"} == {"layers.1.attn"}
    kept = {n.op_type for n in graph.node if n.name.startswith("layers.0.attn.v_proj/")}
    quantized = {n.op_type for n in graph.node if n.name.startswith("layers.0.attn.q_proj/")}
    assert "MatMul" in kept and "MatMul" not in quantized and quantized, (kept, quantized)
    ids, mask = batch(seed=1)
    fp32, int8 = run(parent / "model.onnx", ids, mask), run(tmp_path / "model.onnx", ids, mask)
    assert (int8.argmax(-1) == fp32.argmax(-1)).mean() >= MIN_AGREEMENT


def test_node_names_carry_module_paths(parent):
    proto = onnx.load(str(parent / "model.onnx"))
    modules = {module_of(n) for n in proto.graph.node}
    assert {"embeddings.tok", "layers.0.attn", "layers.1.mlp.down_proj", "classifier"} <= modules  # attn: the packed Attention
    cfg = QuantizeConfig(include=["layers.*"], exclude=["*.v_proj", "*node_MatMul_7"])
    assert is_node_selected("layers.0.attn.q_proj/node_MatMul_1", cfg)
    assert not is_node_selected("layers.0.attn.v_proj/node_MatMul_2", cfg)  # excluded by module
    assert not is_node_selected("layers.1.mlp.up_proj/node_MatMul_7", cfg)  # excluded by node name
    assert not is_node_selected("embeddings.tok/node_embedding", cfg)  # not included
    assert not is_node_selected("classifier/node_Gemm_3", QuantizeConfig())  # protected by default
    assert is_node_selected("embeddings.tok/node_embedding", QuantizeConfig())  # embeddings are quantized by default
    # names from the TorchScript exporter (RNN students) carry the module path too
    node = onnx.helper.make_node("MatMul", ["a", "b"], ["c"], name="/model/layers.0/attn/q_proj/MatMul")
    assert module_of(node) == "layers.0.attn.q_proj"


class BertPatternAttention(torch.nn.Module):
    """Full attention written as BERT's eager graph (explicit heads, additive mask): what ORT's fusion matches."""

    def __init__(self, dim, n_heads, head_dim, dropout=0.0):
        super().__init__()
        self.head_dim = head_dim
        self.q_proj, self.k_proj, self.v_proj = (torch.nn.Linear(dim, n_heads * head_dim) for _ in range(3))
        self.out_proj = torch.nn.Linear(n_heads * head_dim, dim)

    def forward(self, x, mask=None):
        B, T, _ = x.shape
        H, D = self.q_proj.out_features // self.head_dim, self.head_dim
        q = self.q_proj(x).view(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
        k = self.k_proj(x).view(B, T, H, D).permute(0, 2, 3, 1)  # (B, H, D, T)
        v = self.v_proj(x).view(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
        scores = torch.matmul(q, k) / D**0.5  # (B, H, T, T)
        if mask is not None:
            scores = scores + (1.0 - mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
        y = torch.matmul(scores.softmax(-1), v).transpose(1, 2).reshape(B, T, H * D)
        return self.out_proj(y)


def test_attention_fuses_when_the_graph_matches(tmp_path):
    """With BERT's attention pattern, ORT fuses Attention per layer (heads differ per layer) and dynamic int8 quantizes it."""
    from compress.models import ATTENTION

    ATTENTION["test_bert_pattern"] = BertPatternAttention
    try:
        config = SlimformerConfig(vocab_size=60, max_len=24, dim=32, n_layers=2, n_heads=[4, 2], head_dim=8, ffn_dim=[64, 16],
                                  num_labels=3, initializer_range=0.2, dropout=0.0, attention="test_bert_pattern")
        torch.manual_seed(0)
        model = SlimformerForSequenceClassification(config).eval()
        export_stage(model, FakeTokenizer(), tmp_path / "onnx", batch(8), ExportOptions(fuse=False))  # ORT's optimizer fuses here
    finally:
        del ATTENTION["test_bert_pattern"]
    cfg = QuantizeConfig(mode="dynamic", exclude=["layers.0.attn"])
    summary = quantize_onnx(tmp_path / "onnx" / "model.onnx", tmp_path / "int8.onnx", cfg)
    assert summary["fusions"].get("Attention") == 2
    graph = onnx.load(str(tmp_path / "int8.onnx")).graph
    ops = {n.name.split("/")[0]: n.op_type for n in graph.node if n.op_type.endswith("Attention")}
    assert ops == {"layers.0.attn": "Attention", "layers.1.attn": "QAttention"}  # fused nodes keep their module path
    ids, mask = batch(seed=2)
    fp32, int8 = run(tmp_path / "onnx" / "model.onnx", ids, mask), run(tmp_path / "int8.onnx", ids, mask)
    assert np.abs(int8 - fp32).max() <= ATOL + RTOL * np.abs(fp32).max()
    assert (int8.argmax(-1) == fp32.argmax(-1)).mean() >= MIN_AGREEMENT


def test_stage_folder_is_complete_and_atomic(parent, tmp_path):
    out = tmp_path / "int8" / "onnx"
    summary = quantize_stage(parent, out, QuantizeConfig(mode="dynamic"), None, batch(16))
    assert {p.name for p in out.iterdir()} == {p.name for p in parent.iterdir()}  # model + config + tokenizer + code
    assert json.loads((out / "config.json").read_text())["n_heads"] == [4, 2]
    assert summary["check"]["n"] == 16 and summary["check"]["argmax_agreement"] >= MIN_AGREEMENT
    assert (out / "model.onnx").stat().st_size < (parent / "model.onnx").stat().st_size
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]


def test_bad_settings_are_clear_errors(parent, tmp_path):
    with pytest.raises(ValidationError, match="mode: static needs calibration"):
        QuantizeConfig(mode="static", calibration=None)
    with pytest.raises(ValidationError, match="minmax"):
        QuantizeConfig(mode="static", calibration={"method": "mse"})
    with pytest.raises(ValidationError, match="cannot be quantized in mode static"):
        QuantizeConfig(mode="static", op_types=["Attention"])
    with pytest.raises(ValidationError, match="activation_symmetric applies to mode: static"):
        QuantizeConfig(mode="dynamic", activation_symmetric=True)
    with pytest.raises(RecipeError, match="needs calibration data"):
        quantize_onnx(parent / "model.onnx", tmp_path / "model.onnx", QuantizeConfig(mode="static"), calibration=[])
    assert not (tmp_path / "model.onnx").exists()


def recipe(steps: list[dict]) -> dict:
    return {"name": "q", "task": {"kind": "lookup", "n_train": 50, "n_validation": 10, "n_test": 10}, "steps": steps}


def test_recipe_checks_name_the_fix():
    train, export, quantize = {"kind": "train"}, {"kind": "export"}, {"kind": "quantize"}
    with pytest.raises(RecipeError, match="put an `export` step"):
        validate_recipe(recipe([train, quantize]))
    with pytest.raises(RecipeError, match=r"steps\[3\] \(export\) would overwrite the int8 artifact"):
        validate_recipe(recipe([train, export, quantize, export]))
    with pytest.raises(RecipeError, match="parent 'int8' is not an earlier stage with a torch model"):
        validate_recipe(recipe([train, export, quantize, {"kind": "quantize", "name": "again", "parent": "int8"}]))
    # two quantize steps in a row share the teacher as parent
    ok = validate_recipe(recipe([train, export, quantize, {"kind": "evaluate"}, {"kind": "quantize", "name": "int8-dynamic"}]))
    assert [s.kind for s in ok.steps] == ["train", "export", "quantize", "evaluate", "quantize"]


def test_pipeline_int8_stage(tmp_path, capsys):
    """The shipped recipe's smoke run (tests/run/test_pipeline.py leaves it here), shrunk: int8 stages are measured on
    ONNX only, against their fp32 parent, and cached."""
    import cli
    from tests.run.test_pipeline import check_shipped_run, shrink

    path = load_recipe("quantize")[1]
    args = ["run", str(path), *shrink(path, tmp_path), "--runs-dir", str(tmp_path)]
    assert cli.main(args) == 0
    check_shipped_run(tmp_path / "quantize", capsys.readouterr().out)
    results = json.loads((tmp_path / "quantize" / "results.json").read_text())
    stages = {s["name"]: s for s in results["stages"]}
    quantized = [s for s in stages.values() if s["kind"] == "quantize"]
    assert len(quantized) == 2
    for stage in quantized:
        assert stage["parent"] == "teacher" and stage["precision"] == "int8"
        assert stage["accuracy_torch"] is None and 0.0 <= stage["agreement"] <= 1.0
        assert stage["onnx_bytes"] < stages["teacher"]["onnx_bytes"]
        assert {(r["runtime"], r["precision"]) for r in stage["latency"] if r["device"] == "cpu"} == {("onnxruntime", "int8")}
        assert not (tmp_path / "quantize" / "stages" / stage["name"] / "model").exists()
    marker = next((tmp_path / "quantize" / "steps").glob("*-quantize-int8.json"))
    mtime = marker.stat().st_mtime_ns
    assert cli.main(args) == 0  # a rerun resumes: the quantize step is cached
    assert marker.stat().st_mtime_ns == mtime


def test_each_mode_is_a_registered_handler_with_its_own_options():
    """One handler per mode (compress/onnx/quantize.py): the step validates a mode's fields with that mode's options."""
    from compress.onnx.quantize import QUANTIZERS, DynamicOptions, StaticOptions

    assert {m: q.options for m, q in QUANTIZERS.items()} == {"dynamic": DynamicOptions, "static": StaticOptions}
    static = QuantizeConfig(mode="static", format="qoperator", calibration={"method": "entropy", "samples": 8})
    assert isinstance(static.options, StaticOptions) and static.options.format == "qoperator"
    assert static.options.calibration.samples == 8 and static.op_types == ["MatMul", "Gather"]
    assert QuantizeConfig(mode="static").options.calibration.method == "minmax"  # the mode's default when unset
    dynamic = QuantizeConfig()
    assert isinstance(dynamic.options, DynamicOptions) and "Attention" in dynamic.op_types
    with pytest.raises(ValidationError, match="format applies to mode: static only; remove it, or set mode: static"):
        QuantizeConfig(mode="dynamic", format="qdq")
    # the hint works: following it gets past the error
    assert QuantizeConfig(mode="static", format="qdq").options.format == "qdq"
