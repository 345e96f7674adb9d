"""Efficient attention (bigbird, linformer, performer) and the swap: limiting cases, masking, head counts, save/load, export, distillation, scaling."""

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
from transformers import AutoModelForSequenceClassification

import cli
from compress.errors import RecipeError
from compress.onnx.export import ExportOptions, export_stage
from compress.models import ATTENTION, SlimformerConfig, SlimformerForSequenceClassification
from compress.training.recover import distillation_loss
from compress.steps.swap import SwapAttentionConfig, select_layers, swap_attention_
from tests.helpers import FakeTokenizer, logits, padded_batch, remote_code_logits

KINDS = [kind for kind in ATTENTION if kind != "full"]  # every registered kind meets the battery below
# small settings that exercise the structure on short inputs: several blocks, k < T, few features; a kind
# registered later runs with its defaults until it gets an entry here
SMALL = {
    "bigbird": {"block": 4, "window": 3, "n_global": 1, "n_random": 1},
    "linformer": {"k": 6, "max_len": 24},
    "performer": {"n_features": 32},
}


def full_and(kind: str, n_heads: int = 4, **args):
    """A full-attention module and a `kind` module with the same projection weights."""
    torch.manual_seed(0)
    full = ATTENTION["full"](dim=32, n_heads=n_heads, head_dim=8).eval()
    other = ATTENTION[kind](dim=32, n_heads=n_heads, head_dim=8, **args).eval()
    missing = other.load_state_dict(full.state_dict(), strict=False).missing_keys
    assert not [k for k in missing if k.endswith(("_proj.weight", "_proj.bias"))]
    return full, other


def padded(batch: int, seq_len: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, seq_len, 32, generator=g)
    mask = torch.ones(batch, seq_len, dtype=torch.long)
    mask[0, seq_len // 2 :] = 0  # trailing padding
    mask[-1, 1:3] = 0  # a hole (masks need not be trailing)
    return x, mask


def tiny_model(attention, n_heads=4, max_len=40, seed=0) -> SlimformerForSequenceClassification:
    config = SlimformerConfig(vocab_size=60, max_len=max_len, dim=32, n_layers=len(attention), n_heads=n_heads, head_dim=8,
                              ffn_dim=64, num_labels=3, attention=attention, dropout=0.0)
    torch.manual_seed(seed)
    return SlimformerForSequenceClassification(config).eval()


def token_batch(n=4, seq_len=21, seed=0):
    return padded_batch(n, seq_len, seed)


# --------------------------------------------------------------------------- limiting cases


@pytest.mark.parametrize("seq_len", [12, 13, 3])
@pytest.mark.parametrize("n_global", [0, 1])
def test_bigbird_with_window_covering_every_block_equals_full(seq_len, n_global):
    full, bigbird = full_and("bigbird", block=4, window=9, n_global=n_global, n_random=2)
    x, mask = padded(3, seq_len)
    with torch.no_grad():
        torch.testing.assert_close(bigbird(x, mask), full(x, mask), atol=1e-5, rtol=1e-5)


def test_bigbird_layout_is_linear_and_counts_each_key_block_once():
    bigbird = ATTENTION["bigbird"](dim=32, n_heads=4, head_dim=8, block=4, window=3, n_global=1, n_random=3, seed=1)
    for n_blocks in (1, 2, 7, 300):
        index, valid = bigbird.layout(torch.arange(n_blocks))
        assert index.shape == valid.shape == (n_blocks, 1 + 3 + 3)  # K key blocks per query block, whatever the length
        assert int(index.min()) >= 0 and int(index.max()) < n_blocks
        for i in range(n_blocks):
            kept = index[i][valid[i]].tolist()
            assert len(kept) == len(set(kept)), "a key block counted twice"
            assert 0 in kept and i in kept  # the global block and its own block
    index, valid = bigbird.layout(torch.arange(300))
    assert valid[:, 4:].float().mean() > 0.9  # random blocks mostly land outside window and globals


@pytest.mark.parametrize("seq_len", [16, 10])
def test_linformer_with_k_equal_length_and_identity_projections_equals_full(seq_len):
    full, linformer = full_and("linformer", k=16, max_len=16)
    assert torch.equal(linformer.E, torch.eye(16)) and torch.equal(linformer.F, torch.eye(16))  # the initialisation
    x, mask = padded(3, seq_len)
    with torch.no_grad():
        torch.testing.assert_close(linformer(x, mask), full(x, mask), atol=1e-5, rtol=1e-5)


def test_performer_error_falls_as_features_grow():
    x, mask = padded(2, 16)
    x = x * 0.5
    errors = []
    for n_features in (8, 64, 512):
        per_seed = []
        for seed in range(4):
            full, performer = full_and("performer", n_features=n_features, seed=seed)
            with torch.no_grad():
                per_seed.append((performer(x, mask) - full(x, mask))[mask.bool()].abs().mean().item())
        errors.append(float(np.mean(per_seed)))
    assert errors[0] > errors[1] > errors[2], errors
    assert errors[2] < 0.4 * errors[0], errors


# --------------------------------------------------------------------------- the contract, stricter


@pytest.mark.parametrize("kind", KINDS)
def test_masked_positions_do_not_influence_outputs(kind):
    _, attn = full_and(kind, **SMALL.get(kind, {}))
    x, mask = padded(3, 13)
    x2 = x.clone()
    x2[mask == 0] = torch.randn(int((mask == 0).sum()), 32) * 100  # wild values at padded positions
    with torch.no_grad():
        y, y2 = attn(x, mask), attn(x2, mask)
    assert torch.isfinite(y2).all()
    torch.testing.assert_close(y[mask.bool()], y2[mask.bool()], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n_heads", [1, 3])
def test_fewer_heads_after_pruning(kind, n_heads):
    attn = ATTENTION[kind](dim=32, n_heads=n_heads, head_dim=8, **SMALL.get(kind, {}))
    assert attn.n_heads == n_heads and attn.q_proj.weight.shape == (n_heads * 8, 32)
    x, mask = padded(2, 13)
    y = attn(x, mask)
    assert y.shape == x.shape
    y.sum().backward()


def test_performer_redraws_in_training_and_freezes_in_eval():
    attn = ATTENTION["performer"](dim=32, n_heads=2, head_dim=8, n_features=16, redraw_interval=2, seed=3)
    first = attn.features.clone()
    x, mask = padded(2, 6)
    attn.eval()
    for _ in range(3):
        attn(x, mask)
    assert torch.equal(attn.features, first), "eval mode must not redraw"
    attn.train()
    attn(x, mask), attn(x, mask)
    assert torch.equal(attn.features, first)
    attn(x, mask)  # the third training call redraws
    assert not torch.equal(attn.features, first)
    twin = ATTENTION["performer"](dim=32, n_heads=2, head_dim=8, n_features=16, redraw_interval=2, seed=3)
    twin.redraw_features_()
    assert torch.equal(twin.features, attn.features), "redraws are seeded"
    assert "features" in attn.state_dict()


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="odd"):
        ATTENTION["bigbird"](dim=32, n_heads=4, head_dim=8, window=2)
    with pytest.raises(ValueError, match="max_len=24"):
        ATTENTION["linformer"](dim=32, n_heads=4, head_dim=8, k=4, max_len=24)(torch.randn(1, 30, 32))
    with pytest.raises(ValueError, match="valid: k, max_len"):
        SwapAttentionConfig(to="linformer", args={"kk": 3})
    with pytest.raises(ValueError, match="choose one of"):
        SwapAttentionConfig(to="longformer")


# --------------------------------------------------------------------------- models: save/load, export


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """One model with every kind, pruned-looking head counts, saved and exported once."""
    attention = [{"kind": k, **SMALL.get(k, {})} for k in KINDS]
    model = tiny_model(attention, n_heads=[4, 2, 1], max_len=24)
    folder = tmp_path_factory.mktemp("mixed")
    model.save_pretrained(folder / "model")
    parity = export_stage(model, FakeTokenizer(), folder / "onnx", token_batch(seq_len=21), ExportOptions())
    return model, folder, parity


def test_every_kind_round_trips_with_from_pretrained(mixed):
    model, folder, _ = mixed
    loaded = AutoModelForSequenceClassification.from_pretrained(folder / "model")
    assert [a["kind"] for a in loaded.config.attention] == KINDS
    assert [layer.attn.n_heads for layer in loaded.layers] == [4, 2, 1]
    ids, mask = token_batch()
    assert torch.equal(logits(model, ids, mask), logits(loaded, ids, mask))
    names = {p.name for p in (folder / "model").iterdir()}
    assert {"attention_bigbird.py", "attention_linformer.py", "attention_performer.py", "attention_favor.py", "attention_common.py"} <= names


@pytest.mark.parametrize("shape", [(1, 3), (2, 24), (3, 17), (2, 9)])
def test_every_kind_exports_with_parity(mixed, shape):
    model, folder, parity = mixed
    assert parity["max_abs_diff"] <= 1e-4
    session = ort.InferenceSession(str(folder / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    ids, mask = token_batch(*shape, seed=1)
    got = session.run(["logits"], {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]
    np.testing.assert_allclose(got, logits(model, ids, mask).numpy(), atol=1e-4, rtol=1e-4)


def test_every_kind_loads_with_remote_code_without_slimformer(mixed, tmp_path):
    model, folder, _ = mixed
    ids, mask = token_batch()
    torch.testing.assert_close(remote_code_logits(folder / "model", ids, mask, tmp_path), logits(model, ids, mask), atol=0, rtol=0)


# --------------------------------------------------------------------------- swapping


def test_swap_copies_projections_fills_arguments_and_updates_config(tmp_path):
    model = tiny_model(["full", "full", "full"], n_heads=[4, 2, 4], max_len=24)
    before = {i: layer.attn.state_dict() for i, layer in enumerate(model.layers)}
    swap_attention_(model, "performer", {"n_features": 16}, layers=["layers.1", "2"])
    assert [type(layer.attn).kind for layer in model.layers] == ["full", "performer", "performer"]
    assert model.layers[1].attn.n_heads == 2  # the pruned head count is kept
    for i in (1, 2):
        for name, value in before[i].items():
            assert torch.equal(model.layers[i].attn.state_dict()[name], value)
    assert [a.get("seed") for a in model.config.attention] == [None, 1, 2]  # per-layer random features
    assert not torch.equal(model.layers[1].attn.features[:, :8], model.layers[2].attn.features[:, :8])

    swap_attention_(model, "linformer", {"k": 8})
    assert model.config.attention[0] == {"kind": "linformer", "k": 8, "max_len": 24}  # max_len from the model
    model.save_pretrained(tmp_path)
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    ids, mask = token_batch(seq_len=20)
    assert torch.equal(logits(model, ids, mask), logits(loaded, ids, mask))

    swap_attention_(model, "full", layers=["*"])  # and back: the linformer extras are dropped
    assert all(a == {"kind": "full"} for a in model.config.attention)
    with pytest.raises(RecipeError, match="match no layer"):
        swap_attention_(model, "bigbird", layers=["layers.7"])



def test_swap_layers_use_the_shared_selector_globs():
    model = tiny_model(["full"] * 12, max_len=24)
    model.layers[1].attn = None  # a layer whose heads were all pruned has nothing to swap
    assert select_layers(model, ["*"]) == select_layers(model, ["layers.*.attn"]) == [0] + list(range(2, 12))
    assert select_layers(model, ["1*"]) == select_layers(model, ["layers.1*"]) == [10, 11]  # bare index globs mean layers.<glob>
    assert select_layers(model, ["[02]", "layers.3.attn", "layers.4"]) == [0, 2, 3, 4]
    assert select_layers(model, ["layer.0"]) == []
    with pytest.raises(ValueError, match="non-empty"):
        SwapAttentionConfig(to="performer", layers=[" "])


@pytest.mark.parametrize("to, args", [("linformer", {"k": 24}), ("bigbird", {"block": 4, "window": 15})])
def test_swap_into_the_limiting_case_keeps_the_teachers_outputs(to, args):
    teacher = tiny_model(["full", "full"], max_len=24)
    student = swap_attention_(tiny_model(["full", "full"], max_len=24), to, args)
    ids, mask = token_batch(seq_len=24)
    torch.testing.assert_close(logits(student, ids, mask), logits(teacher, ids, mask), atol=1e-5, rtol=1e-5)


def test_distillation_loss():
    teacher = tiny_model(["full"], max_len=24)
    student = swap_attention_(tiny_model(["full"], max_len=24, seed=1), "performer", {"n_features": 16})
    ids, mask = token_batch(seq_len=12)
    batch = {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([0, 1, 2, 0])}
    ce = torch.nn.functional.cross_entropy(logits(student, ids, mask), batch["labels"])
    torch.testing.assert_close(distillation_loss(teacher, 2.0, alpha=0.0)(student, batch)[0], ce)
    same, _ = distillation_loss(teacher, 2.0, alpha=1.0)(teacher, batch)
    assert abs(same.item()) < 1e-6  # a student equal to its teacher has nothing to learn
    with_cached = distillation_loss(None, 2.0, alpha=1.0)(student, {**batch, "teacher_logits": logits(teacher, ids, mask)})[0]
    torch.testing.assert_close(with_cached, distillation_loss(teacher, 2.0, alpha=1.0)(student, batch)[0])


# --------------------------------------------------------------------------- scaling benchmark


def test_crossover():
    from eval.scaling import crossover

    assert crossover([512, 1024, 2048], [10, 40, 160], [20, 40, 80]) == {"length": 1024, "status": "crossed"}
    c = crossover([512, 1024, 2048], [10, 30, 160], [20, 20, 20])
    assert c["status"] == "crossed" and 512 < c["length"] < 1024
    assert crossover([512, 1024], [10, 40], [5, 5]) == {"length": 512, "status": "below_range"}
    assert crossover([512, 1024], [10, 40], [50, 80]) == {"length": None, "status": "not_reached"}


def test_bench_scaling_writes_json_plots_and_report(tmp_path, capsys):
    out = tmp_path / "scaling"
    args = ["bench", "--scaling", "--lengths", "16", "48", "--kinds", "full", "linformer", "--repeats", "1", "--warmup", "0", "--out", str(out)]
    assert cli.main(args) == 0
    data = json.loads((out / "scaling.json").read_text())
    assert {(r["kind"], r["seq_len"]) for r in data["latency"]} == {(k, n) for k in ("full", "linformer") for n in (16, 48)}
    assert {m["kind"] for m in data["memory"]} == {"full", "linformer"} and all(m["peak_rss_bytes"] > 0 for m in data["memory"])
    assert data["parity"]["linformer"]["max_abs_diff"] <= 1e-4
    assert set(data["summary"]["linformer"]["onnxruntime_cpu"]["speedup"]) == {"16", "48"}
    assert (out / "scaling_latency_cpu.png").is_file() and "crossover" in (out / "scaling.md").read_text()

    # a run folder with scaling.json gets the plots in its report
    from eval.report import write_report

    (out / "results.json").write_text(json.dumps({"schema_version": 1, "run": "r", "stages": [{"name": "teacher", "kind": "train"}]}))
    paths = write_report([out])
    assert "scaling_latency_cpu.png" in paths["md"].read_text() and (paths["files"] / "scaling_memory.png").is_file()

    assert cli.main(["bench"]) == 2 and "--scaling" in capsys.readouterr().err
    assert cli.main(["bench", "--scaling", "--kinds", "longformer"]) == 2


def test_gpu_sweep_stops_at_the_first_length_out_of_memory():
    """The GPU scaling sweep records every length that fits and where the kind ran out of memory."""
    from eval.scaling import ScalingConfig, gpu_sweep

    cfg = ScalingConfig(kinds=["full"], gpu_lengths=[512, 1024, 2048, 4096], memory=False)
    timed = []

    def time_at(n):
        timed.append(n)
        return [{"device": "cuda", "runtime": "torch", "seq_len": n, "p50_ms": n / 100}]

    def peak_at(n):
        if n >= 2048:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return n * 1000

    records, oom = gpu_sweep(None, cfg, time_at, peak_at)
    assert oom == 2048 and timed == [512, 1024], "nothing longer is tried after the first OOM"
    assert [(r["seq_len"], r["gpu_peak_bytes"]) for r in records] == [(512, 512000), (1024, 1024000)]
    assert gpu_sweep(None, ScalingConfig(kinds=["full"], gpu_lengths=[512], memory=False), time_at, lambda n: 1)[1] is None


def test_scaling_markdown_says_where_each_kind_ran_out_of_gpu_memory():
    from eval.scaling import markdown, summarise

    def rec(kind, device, runtime, n, ms, peak=None):
        return {"kind": kind, "device": device, "runtime": runtime, "seq_len": n, "p50_ms": ms, "batch": 1,
                **({"gpu_peak_bytes": peak} if peak else {})}

    latency = [rec(k, "cpu", "onnxruntime", n, n / d) for k, d in (("full", 10), ("linformer", 40)) for n in (512, 1024)]
    latency += [rec("full", "cuda", "torch", 512, 1.0, 50e6), rec("linformer", "cuda", "torch", 512, 0.5, 10e6),
                rec("linformer", "cuda", "torch", 1024, 0.6, 12e6)]
    data = {"command": "slimformer bench --scaling", "latency": latency, "memory": [], "gpu_oom": {"full": 1024},
            "protocol": {"lengths": [512, 1024], "gpu_lengths": [512, 1024], "kinds": ["full", "linformer"], "threads": 2,
                         "warmup": 1, "repeats": 5, "model": "tiny", "attention": {"full": {}, "linformer": {"k": 64}},
                         "gpu": "NVIDIA H100"}}
    data["summary"] = summarise(data)
    text = markdown(data, [])
    assert "- full: out of memory at 1024 tokens" in text and "- linformer: ran every length" in text
    assert "| full (peak GPU MB) | 50 | OOM |" in text and "| linformer (peak GPU MB) | 10 | 12 |" in text
