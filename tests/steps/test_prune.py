"""Head and FFN pruning: identity at 0, shapes and parameter counts, equality with masking for every
attention kind, save/load/ONNX round trips, importance scores, the global ranking, the step and its errors."""

import copy
from types import SimpleNamespace

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from compress.errors import RecipeError
from compress.models import ATTENTION, SlimformerConfig, SlimformerForSequenceClassification
from compress.onnx.export import ExportOptions, export_stage
from compress.run.config import validate_recipe
from compress.select import SelectConfig, is_selected, select_modules
from compress.steps.prune import (
    PruneFfnConfig,
    PruneHeadsConfig,
    plan_removal,
    prune_ffn_,
    prune_heads_,
    prune_stage,
    round_counts,
)
from compress.steps.train import TrainConfig
from compress.training.importance import IMPORTANCE, Gates, importance, n_units, scoring_batches
from tests.helpers import logits, padded_batch

DIM, HEAD_DIM, FFN = 32, 8, 64
ARGS = {  # small settings that exercise each kind's structure on short inputs
    "bigbird": {"block": 4, "window": 3, "n_global": 1, "n_random": 1},
    "linformer": {"k": 6, "max_len": 24, "per_head": True},
    "performer": {"n_features": 32},
}


def tiny(attention="full", n_layers=3, n_heads=4, norm="pre", seed=0) -> SlimformerForSequenceClassification:
    spec = {"kind": attention, **ARGS.get(attention, {})}
    config = SlimformerConfig(vocab_size=60, max_len=24, dim=DIM, n_layers=n_layers, n_heads=n_heads, head_dim=HEAD_DIM,
                              ffn_dim=FFN, num_labels=3, attention=spec, norm=norm, dropout=0.0)
    torch.manual_seed(seed)
    model = SlimformerForSequenceClassification(config).eval()
    with torch.no_grad():  # larger than the init's 0.02, so every head and bias visibly matters
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    return model


def batch(n=4, seq_len=13, seed=0):
    return padded_batch(n, seq_len, seed)


def masked_logits(model, unit, plan, ids, mask):
    """The unpruned model with the units of `plan` gated to 0."""
    gates = {i: torch.ones(n_units(model, unit, i)).index_fill_(0, torch.tensor(units), 0.0) for i, units in plan.items()}
    with Gates(model, unit, list(range(len(model.layers))), values=gates):
        return logits(model, ids, mask)


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------- surgery


def test_pruning_nothing_is_the_identity():
    model = tiny()
    ids, mask = batch()
    pruned = prune_ffn_(prune_heads_(copy.deepcopy(model), {0: [], 2: []}), {1: []})
    assert torch.equal(logits(model, ids, mask), logits(pruned, ids, mask))
    assert pruned.config.n_heads == [4, 4, 4] and pruned.config.ffn_dim == [FFN] * 3
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), pruned.state_dict().values(), strict=True))
    scores = importance(model, "heads", "taylor", [0, 1, 2],
                        [dict(zip(("input_ids", "attention_mask"), batch(), strict=True), labels=torch.tensor([0, 1, 2, 0]))])
    assert plan_removal(scores, 0) == {}


def test_pruned_weights_shrink_and_param_count_matches_the_formula():
    model = tiny()
    before = n_params(model)
    prune_heads_(model, {0: [1], 1: [0, 1, 2, 3], 2: [0, 3]})
    prune_ffn_(model, {0: list(range(10)), 2: list(range(FFN))})
    attn0, attn2 = model.layers[0].attn, model.layers[2].attn
    assert attn0.q_proj.weight.shape == (3 * HEAD_DIM, DIM) and attn0.out_proj.weight.shape == (DIM, 3 * HEAD_DIM)
    assert attn2.k_proj.bias.shape == (2 * HEAD_DIM,) and attn2.n_heads == 2
    assert model.layers[1].attn is None and model.layers[2].mlp is None
    assert (model.layers[0].mlp.up_proj.weight.shape == (FFN - 10, DIM)
            and model.layers[0].mlp.down_proj.weight.shape == (DIM, FFN - 10))
    assert model.config.n_heads == [3, 0, 2] and model.config.ffn_dim == [FFN - 10, FFN, 0]
    per_head = 4 * DIM * HEAD_DIM + 3 * HEAD_DIM  # q/k/v rows with their biases + out_proj columns
    per_neuron = 2 * DIM + 1  # up_proj row and bias + down_proj column
    removed = 7 * per_head + DIM + 74 * per_neuron + DIM  # + out_proj and down_proj biases of the emptied branches
    assert n_params(model) == before - removed


@pytest.mark.parametrize("kind", sorted(ATTENTION))
def test_pruned_model_equals_the_masked_model_for_every_kind(kind):
    """Physically removed heads (including every head of layer 1) = the same heads gated to 0."""
    model = tiny(kind)
    ids, mask = batch()
    plan = {0: [1, 3], 1: [0, 1, 2, 3], 2: [2]}
    expected = masked_logits(model, "heads", plan, ids, mask)
    assert not torch.allclose(expected, logits(model, ids, mask), atol=1e-3), "the masked heads must matter"
    pruned = prune_heads_(copy.deepcopy(model), plan)
    torch.testing.assert_close(logits(pruned, ids, mask), expected, atol=1e-5, rtol=1e-5)
    assert [n_units(pruned, "heads", i) for i in range(3)] == pruned.config.n_heads == [2, 0, 3]
    out = pruned.train()(input_ids=ids, attention_mask=mask).logits
    out.sum().backward()  # still trainable


@pytest.mark.parametrize("norm", ["pre", "post"])
def test_pruned_ffn_equals_the_masked_ffn(norm):
    model = tiny(norm=norm)
    ids, mask = batch()
    plan = {0: list(range(0, FFN, 2)), 1: [5]} | ({2: list(range(FFN))} if norm == "pre" else {})  # post-LN: see prune.py
    expected = masked_logits(model, "neurons", plan, ids, mask)
    pruned = prune_ffn_(copy.deepcopy(model), plan)
    torch.testing.assert_close(logits(pruned, ids, mask), expected, atol=1e-5, rtol=1e-5)
    heads = {0: [0], 2: [1, 2]}
    torch.testing.assert_close(logits(prune_heads_(copy.deepcopy(model), heads), ids, mask),
                               masked_logits(model, "heads", heads, ids, mask), atol=1e-5, rtol=1e-5)


def test_a_removed_first_layer_folds_its_bias_into_the_embedding_projection():
    """Pre-LN with embeddings narrower than dim (embed_dim): `embeddings.proj` writes the stream first."""
    config = SlimformerConfig(vocab_size=60, max_len=24, dim=DIM, n_layers=2, n_heads=4, head_dim=HEAD_DIM, ffn_dim=FFN,
                              num_labels=3, embed_dim=16, dropout=0.0)
    torch.manual_seed(0)
    model = SlimformerForSequenceClassification(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    ids, mask = batch()
    plan = {0: [0, 1, 2, 3]}
    pruned = prune_heads_(copy.deepcopy(model), plan)
    assert pruned.layers[0].attn is None
    torch.testing.assert_close(logits(pruned, ids, mask), masked_logits(model, "heads", plan, ids, mask), atol=1e-5, rtol=1e-5)


def test_linformer_per_head_projections_are_cut_too():
    model = tiny("linformer")
    prune_heads_(model, {0: [0, 2]})
    assert model.layers[0].attn.E.shape == (2, 6, 24) and model.layers[0].attn.F.shape == (2, 6, 24)
    assert model.layers[1].attn.E.shape == (4, 6, 24)


def test_bad_plans_are_clear_errors():
    model = tiny()
    with pytest.raises(ValueError, match="layer 0 has 4 heads"):
        prune_heads_(model, {0: [4]})
    with pytest.raises(ValueError, match="layers 0..2"):
        prune_ffn_(model, {3: [0]})


def test_uneven_pruned_model_round_trips_with_from_pretrained_and_onnx(tmp_path):
    model = tiny("full", n_layers=4)
    prune_heads_(model, {0: [0], 1: [0, 1, 2, 3], 2: [1, 2, 3]})
    prune_ffn_(model, {1: list(range(50)), 3: list(range(FFN))})
    model.save_pretrained(tmp_path / "model")
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "model")
    assert loaded.config.n_heads == [3, 0, 1, 4] and loaded.config.ffn_dim == [FFN, 14, FFN, 0]
    ids, mask = batch()
    assert torch.equal(logits(model, ids, mask), logits(loaded, ids, mask))
    tokenizer = SimpleNamespace(save_pretrained=lambda folder: (folder / "tokenizer.json").write_text("{}"))
    parity = export_stage(loaded, tokenizer, tmp_path / "onnx", batch(seq_len=17, seed=1), ExportOptions())
    assert parity["max_abs_diff"] <= 1e-4 and (tmp_path / "onnx" / "model.onnx").is_file()


# --------------------------------------------------------------------------- importance and ranking


def scoring_data(n=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids, mask = batch(n, 13, seed)
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.randint(0, 3, (n,), generator=g)}


@pytest.mark.parametrize("method", sorted(IMPORTANCE))
def test_importance_is_per_head_normalised_and_leaves_the_model_alone(method):
    model = tiny()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    batches = scoring_batches(scoring_data(), 2, 16, seed=0)
    scores = importance(model, "heads", method, [0, 2], batches, seed=3)
    assert sorted(scores) == [0, 2] and all(s.shape == (4,) and (s >= 0).all() for s in scores.values())
    torch.testing.assert_close(torch.stack([s.norm() for s in scores.values()]), torch.ones(2))
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters()), "scoring must not leave gradients behind"
    again = importance(model, "heads", method, [0, 2], batches, seed=3)
    assert all(torch.equal(scores[i], again[i]) for i in scores), "scores are deterministic"


def test_a_dead_head_scores_zero():
    """A head whose out_proj columns are 0 changes nothing: zero Taylor score and zero weight magnitude of its output."""
    model = tiny()
    batches = scoring_batches(scoring_data(), 2, 16, seed=0)
    with torch.no_grad():
        model.layers[0].attn.out_proj.weight[:, HEAD_DIM : 2 * HEAD_DIM] = 0
        for proj in ("q_proj", "k_proj", "v_proj"):
            getattr(model.layers[0].attn, proj).weight[HEAD_DIM : 2 * HEAD_DIM] = 0
    taylor = importance(model, "heads", "taylor", [0], batches, normalize=False)[0]
    magnitude = importance(model, "heads", "magnitude", [0], batches, normalize=False)[0]
    assert taylor[1] == 0 and (taylor[[0, 2, 3]] > 0).all()
    assert magnitude[1] == 0 and (magnitude[[0, 2, 3]] > 0).all()
    # a head with q = 0 attends uniformly: zero distance from uniform
    entropy = importance(model, "heads", "attention_entropy", [0], batches, normalize=False)[0]
    assert entropy[1] == pytest.approx(0.0, abs=1e-6) and (entropy[[0, 2, 3]] > 1e-3).all()


def test_taylor_matches_a_finite_difference():
    """Michel et al.'s I_h = mean over examples of |dL(x)/dgate_h|: the slope of each example's loss as head h is scaled."""
    model = tiny(n_layers=1)
    data = scoring_batches(scoring_data(16), 2, 8, seed=0)
    score = importance(model, "heads", "taylor", [0], data, normalize=False)[0][2]

    def losses(scale):  # (16,) per-example losses with head 2 scaled
        with Gates(model, "heads", [0], values={0: torch.tensor([1.0, 1.0, scale, 1.0])}), torch.no_grad():
            out = [model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits for b in data]
            labels = torch.cat([b["labels"] for b in data])
            return torch.nn.functional.cross_entropy(torch.cat(out).double(), labels, reduction="none")

    eps = 1e-3
    slopes = (losses(1 + eps) - losses(1 - eps)) / (2 * eps)
    assert score.item() == pytest.approx(slopes.abs().mean().item(), rel=1e-2)
    assert score.item() > abs(slopes.mean().item()), "per-example absolute values, not the batch gradient's"


def test_neuron_importance_and_entropy_is_heads_only():
    model = tiny()
    batches = scoring_batches(scoring_data(), 1, 16, seed=0)
    for method in ("taylor", "magnitude", "random"):
        assert {i: s.shape for i, s in importance(model, "neurons", method, [0, 1], batches).items()} == {0: (FFN,), 1: (FFN,)}
    with pytest.raises(ValueError, match="heads only"):
        importance(model, "neurons", "attention_entropy", [0], batches)


def test_global_ranking_per_layer_counts_and_schedule():
    scores = {0: torch.tensor([0.5, 0.1, 0.9]), 1: torch.tensor([0.2, 0.8]), 3: torch.tensor([0.05])}
    assert plan_removal(scores, 3) == {0: [1], 1: [0], 3: [0]}
    assert plan_removal(scores, {0: 2, 1: 0}) == {0: [0, 1]}
    cfg = PruneHeadsConfig(amount=0.5, schedule={"iterations": 3})
    original = {0: 4, 1: 4}
    assert round_counts(cfg, original, {0: 0, 1: 0}, 1) == 1  # round(8 * 0.5 / 3) = 1
    assert round_counts(cfg, original, {0: 1, 1: 0}, 2) == 2  # cumulative 3
    assert round_counts(cfg, original, {0: 2, 1: 1}, 3) == 1  # cumulative 4 = half of 8
    cfg = PruneHeadsConfig(per_layer=[0.5, 1.0])
    assert round_counts(cfg, original, {0: 0, 1: 0}, 1) == {0: 2, 1: 4}


def test_selector_globs_and_protection():
    assert is_selected("layers.1.attn", ["layers.1"]) and not is_selected("layers.10.attn", ["layers.1"])
    assert is_selected("layers.0.attn", ["layers.*"], exclude=["layers.0"]) is False
    assert not is_selected("classifier", ["*"]) and is_selected("classifier", ["*"], protect=[])
    names = [n for n, _ in select_modules(tiny(n_layers=2), SelectConfig(exclude=["*.mlp*", "*norm*"]), types=torch.nn.Linear)]
    assert names == [f"layers.{i}.attn.{p}" for i in range(2) for p in ("q_proj", "k_proj", "v_proj", "out_proj")]


# --------------------------------------------------------------------------- the steps


class FakeContext(SimpleNamespace):
    """RunContext's surface that the prune steps use; the running step is the last of `steps`."""

    def parent(self, name=None):
        from compress.run.registry import stage_history

        return stage_history(self.steps, len(self.steps) - 1, name)[0]

    def record(self, key, value):
        self.recorded[key] = value

    def log(self, **metrics):
        self.logged.append(metrics)


def fake_context(teacher, steps, n=96):
    data = scoring_data(n)
    val = {k: v[: n // 3] for k, v in data.items()}
    recipe = SimpleNamespace(steps=steps, seed=0)
    # steps: the lineage run (RunContext.steps); no prune_vocab: the stage's ids are the run's (base_encoded)
    encoded = {"train": data, "validation": val, "test": val}
    return FakeContext(recipe=recipe, steps=steps, encoded=encoded, base_encoded=encoded, teacher=teacher, device="cpu",
                       recorded={}, logged=[])


def test_prune_heads_step_rounds_recovery_sweep_and_records():
    teacher = tiny(n_layers=2)
    cfg = PruneHeadsConfig(name="pruned", amount=0.5, importance="taylor", schedule={"iterations": 2}, score_batches=2,
                           score_batch_size=16, recover={"epochs": 1, "batch_size": 32}, sweep=True,
                           sweep_fractions=[0.0, 0.5, 1.0])
    ctx = fake_context(teacher, [TrainConfig(), cfg])
    pruned = prune_stage(copy.deepcopy(teacher), cfg, ctx)
    assert sum(pruned.config.n_heads) == 4 and pruned.config.n_heads == [n_units(pruned, "heads", i) for i in range(2)]
    rec = ctx.recorded
    assert rec["parent"] == "teacher" and rec["pruning"]["n_removed"] == 4 and rec["pruning"]["fraction_removed"] == 0.5
    assert ([sum(map(len, r["removed"].values())) for r in rec["pruning"]["rounds"]]
            == [r["n_removed"] for r in rec["pruning"]["rounds"]] == [2, 2])
    assert sum(map(len, rec["pruning"]["removed"].values())) == sum(rec["pruning"]["n_removed_by_layer"].values()) == 4
    first, second = (r["scores"] for r in rec["head_importance"]["rounds"])
    assert all(v is not None for row in first for v in row)  # round 1 scores every head
    assert sum(v is None for row in second for v in row) == 2  # round 2: the two removed in round 1 are blank
    sweep = rec["sensitivity"]
    assert set(sweep["accuracy"]) == set(IMPORTANCE) and all(len(v) == 3 for v in sweep["accuracy"].values())
    full = (logits(teacher, *(ctx.encoded["validation"][k] for k in ("input_ids", "attention_mask"))).argmax(-1)
            == ctx.encoded["validation"]["labels"]).float().mean()
    assert all(v[0] == pytest.approx(full.item(), abs=1e-5) for v in sweep["accuracy"].values()), (
        "fraction 0 is the unpruned model")
    assert len({tuple(v)[-1] for v in sweep["accuracy"].values()}) == 1, "fraction 1 masks every head whatever the method"
    assert sweep["split"] == "test", "scored on validation batches, so the sweep is measured on the test split"
    band = sweep["spread"]["random"]
    assert band["seeds"] == 5 and all(lo <= mean <= hi
                                      for lo, mean, hi in zip(band["min"], sweep["accuracy"]["random"], band["max"], strict=True))
    assert [p["round"] for p in rec["train_curve"]] == [1, 2] and rec["train_curve"][1]["step"] > rec["train_curve"][0]["step"]


def test_prune_ffn_step_per_layer_from_an_earlier_stage():
    teacher = tiny(n_layers=2)
    cfg = PruneFfnConfig(name="narrow", parent="teacher", per_layer=[0.25, 0.0], importance="magnitude", recover={"epochs": 0})
    ctx = fake_context(teacher, [TrainConfig(), PruneHeadsConfig(name="other", amount=0.5), cfg])
    ctx.load_model = lambda stage: copy.deepcopy(teacher) if stage == "teacher" else pytest.fail(f"loaded {stage}")
    pruned = prune_stage(None, cfg, ctx)
    assert pruned.config.ffn_dim == [48, FFN] and ctx.recorded["parent"] == "teacher" and "head_importance" not in ctx.recorded
    assert ctx.recorded["val_accuracy"] == ctx.recorded["val_accuracy_before_recovery"]
    assert ctx.recorded["pruning"]["n_removed_by_layer"] == {"0": 16, "1": 0} and "removed" not in ctx.recorded["pruning"]


def test_bad_prune_settings_are_errors():
    with pytest.raises(ValueError, match="exactly one of `amount`"):
        PruneHeadsConfig(amount=0.5, per_layer=[0.5])
    with pytest.raises(ValueError, match="heads only"):
        PruneFfnConfig(amount=0.5, importance="attention_entropy")
    with pytest.raises(ValueError, match="less than or equal to 1"):
        PruneHeadsConfig(amount=1.5)
    base = {"name": "r", "task": {"kind": "lookup"}, "steps": [{"kind": "train"}]}
    with pytest.raises(RecipeError, match="parent 'nope' is not an earlier stage"):
        validate_recipe({**base, "steps": [{"kind": "train"}, {"kind": "prune_heads", "amount": 0.5, "parent": "nope"}]})
    with pytest.raises(RecipeError, match="unknown key 'amout'"):
        validate_recipe({**base, "steps": [{"kind": "train"}, {"kind": "prune_heads", "amout": 0.5}]})
    teacher = tiny(n_layers=2)
    cfg = PruneHeadsConfig(amount=0.5, include=["layers.7"])
    with pytest.raises(RecipeError, match="select no layer"):
        prune_stage(teacher, cfg, fake_context(teacher, [TrainConfig(), cfg]))


def test_report_draws_head_importance_and_sensitivity():
    from eval.report import Row, make_figures

    stage = {"name": "pruned", "kind": "prune_heads",
             "head_importance": {"method": "taylor", "rounds": [{"round": 1, "scores": [[0.2, 0.9], [0.5, 0.1]]},
                                                                {"round": 2, "scores": [[None, 1.0], None]}]},
             "sensitivity": {"unit": "heads", "split": "validation", "n_units": 4, "fractions": [0.0, 0.5],
                             "accuracy": {"taylor": [0.8, 0.7], "random": [0.8, 0.5]},
                             "spread": {"random": {"seeds": 3, "min": [0.8, 0.4], "max": [0.8, 0.6]}}}}
    names = [name for _, name, png in make_figures([Row("pruned", stage)], None) if png.startswith(b"\x89PNG")]
    assert names == ["head_importance_pruned.png", "sensitivity_pruned.png"]
