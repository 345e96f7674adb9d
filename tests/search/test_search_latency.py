"""The latency model: predictions grow with width, depth and length; sizes match real files; the cache is per machine."""

import json
from dataclasses import replace

import numpy as np
import pytest

from compress.models import SlimformerConfig
from compress.search import latency, timing
from compress.search.latency import (
    FEATURES,
    GROUPS,
    LatencyModel,
    Point,
    Shape,
    arch_of,
    cache_file,
    cache_key,
    cache_point,
    cached_points,
    features,
    holdout_error,
    quantize_globs,
    shape_of,
    size_bytes,
)
from compress.search.timing import build_random, plan
from compress.select import is_selected
from eval.bench import count_params

ALL = tuple(GROUPS)


@pytest.fixture
def teacher():
    return SlimformerConfig(vocab_size=2000, max_len=32, dim=64, n_layers=2, n_heads=4, ffn_dim=128, num_labels=3, norm="post")


def synthetic_points(teacher, n=40, seed=0) -> list[Point]:
    """Points whose latency is a known non-negative cost of the features, times a little noise, at several lengths."""
    rng = np.random.default_rng(seed)
    anchors = [replace(shape_of(teacher), int8=mode, int8_groups=ALL if mode else ()) for mode in (None, *latency.MODES)]
    scale = np.max([features(s, 8, 32) for s in anchors], axis=0)  # each cost 0.5-2 ms at the teacher's shape
    true = rng.uniform(0.5, 2.0, len(FEATURES)) / scale
    out = []
    for _ in range(n):
        shape, seq_len = timing.draw_shape(teacher, rng), int(rng.choice([8, 16, 32]))
        ms = float(features(shape, 8, seq_len) @ true) * rng.uniform(0.97, 1.03)
        out.append(Point(shape, 8, seq_len, 1, ms))
    return out


def test_predictions_grow_with_width_depth_and_length(teacher):
    model = LatencyModel.fit(synthetic_points(teacher), arch_of(teacher))
    assert (model.coef >= 0).all() and model.fit_error < 0.05
    for int8, groups in ((None, ()), ("dynamic", ALL), ("static", ("ffn_up", "attn_in"))):
        base = Shape(2, 48, (2, 3), 16, (64, 40), 2000, int8, groups)
        at = model.predict(base, 8, 32)
        assert at > 0
        assert model.predict(replace(base, dim=64), 8, 32) > at  # wider
        assert model.predict(replace(base, n_layers=3, n_heads=(2, 3, 1), ffn_dim=(64, 40, 8)), 8, 32) > at  # deeper
        assert model.predict(base, 8, 48) > at  # longer
        assert model.predict(replace(base, n_heads=(4, 3)), 8, 32) > at  # more heads
        assert model.predict(replace(base, ffn_dim=(128, 40)), 8, 32) > at  # wider FFN
        assert model.predict(base, 16, 32) > at  # larger batch


def test_fit_on_relative_error_recovers_a_known_cost(teacher):
    points = synthetic_points(teacher, n=60, seed=1)
    model = LatencyModel.fit(points[:40], arch_of(teacher))
    err = holdout_error(model, points[40:])
    assert err["n"] == 20 and err["all"] < 0.05 and err["fp32"] is not None and err["int8"] is not None
    saved = LatencyModel.from_dict(json.loads(json.dumps({"model": model.to_dict()})))
    assert saved.predict(points[45].shape, 8, 16) == pytest.approx(model.predict(points[45].shape, 8, 16))


@pytest.mark.parametrize("overrides", [{}, {"norm": "pre", "head_activation": "tanh", "classifier_dim": 24},
                                       {"n_heads": [4, 1], "ffn_dim": [16, 128], "head_dim": 8}])
def test_parameters_are_counted_exactly(teacher, overrides):
    config = SlimformerConfig(**{**teacher.to_dict(), **overrides})
    model = build_random(shape_of(config), config)
    assert shape_of(model.config) == shape_of(config)
    per_file, per_branch = latency.GRAPH_BYTES[None]
    graph = per_file + per_branch * 2 * config.n_layers
    assert size_bytes(shape_of(config), arch_of(config)) - graph == 4 * count_params(model)


def test_quantize_globs_select_exactly_the_groups():
    layer = ["layers.0.attn", "layers.0.attn.q_proj", "layers.0.attn.out_proj", "layers.0.mlp.up_proj", "layers.0.mlp.down_proj",
             "embeddings.tok", "classifier"]

    def selected(groups):
        include, exclude = quantize_globs(groups)
        return [n for n in layer if is_selected(n, include, exclude, ["classifier*"])]

    # the packed Attention node belongs to `layers.0.attn`: attn_in must select it, and only it, with its q/k/v
    assert selected(("attn_in",)) == ["layers.0.attn", "layers.0.attn.q_proj"]
    assert selected(("attn_out",)) == ["layers.0.attn.out_proj"]
    assert selected(("attn_in", "attn_out")) == ["layers.0.attn", "layers.0.attn.q_proj", "layers.0.attn.out_proj"]
    assert selected(("ffn_up", "embeddings")) == ["layers.0.mlp.up_proj", "embeddings.tok"]
    assert selected(ALL) == layer[:-1]


def test_cache_key_separates_machines_threads_and_versions(teacher, tmp_path, monkeypatch):
    key = cache_key(teacher, 8, 32, 1)
    point = Point(shape_of(teacher), 8, 32, 1, 1.5, bytes=100)
    cache_point(key, point, tmp_path)
    assert cached_points(key, tmp_path) == [point]
    with open(cache_file(key, tmp_path), "a") as f:
        f.write('{"key": {"cpu"')  # a writer killed mid-line
    assert cached_points(key, tmp_path) == [point]
    assert cache_file(cache_key(teacher, 8, 32, 2), tmp_path) != cache_file(key, tmp_path)  # threads
    assert cache_file(cache_key(teacher, 1, 32, 1), tmp_path) != cache_file(key, tmp_path)  # batch
    other = SlimformerConfig(**{**teacher.to_dict(), "pooling": "cls"})
    assert cache_file(cache_key(other, 8, 32, 1), tmp_path) != cache_file(key, tmp_path)  # architecture
    monkeypatch.setattr(latency, "cpu_model", lambda: "Another CPU")
    assert cache_file(cache_key(teacher, 8, 32, 1), tmp_path) != cache_file(key, tmp_path)
    monkeypatch.undo()
    monkeypatch.setattr("onnxruntime.__version__", "0.0.1")
    assert cached_points(cache_key(teacher, 8, 32, 1), tmp_path) == []
    monkeypatch.undo()
    monkeypatch.setenv("SLIMFORMER_CACHE", str(tmp_path / "root"))
    assert cache_file(key).parent == tmp_path / "root" / "latency"


def test_measure_times_real_graphs_sizes_match_and_cache_is_reused(teacher, tmp_path, monkeypatch):
    """One export, two quantizations (fp32 folder reused), tiny repeats; predicted file sizes within 3% of the real ones."""
    shape = shape_of(teacher)
    shapes = [shape, replace(shape, int8="dynamic", int8_groups=ALL), replace(shape, int8="static", int8_groups=("ffn_up",))]
    points = timing.measure(shapes, teacher, batch=2, seq_len=16, threads=1, warmup=1, repeats=3, cache_dir=tmp_path)
    assert [p.shape for p in points] == shapes and all(p.ms > 0 for p in points)
    assert points[0].fusions.get("Attention") == teacher.n_layers  # the fused graph users get
    for p in points:
        assert size_bytes(p.shape, arch_of(teacher)) == pytest.approx(p.bytes, rel=0.03), p.shape.describe()
    assert points[1].bytes < points[2].bytes < points[0].bytes

    def never(*args, **kwargs):
        raise AssertionError("a cached point was measured again")

    monkeypatch.setattr(timing, "export_random", never)
    again = timing.measure(shapes[::-1], teacher, batch=2, seq_len=16, threads=1, cache_dir=tmp_path)
    assert again == points[::-1]


def test_entry_point_fits_on_cached_points_and_writes_json(teacher, tmp_path, capsys):
    """The command the search runs in a process of its own (`python -m compress.search.timing`), called in-process here:
    a subprocess would add ~8 s of importing torch and transformers. Its shapes are cached beforehand (synthetic points),
    so it measures nothing and fits on what the cache holds."""
    folder = tmp_path / "teacher"
    teacher.save_pretrained(folder)
    fit, held = plan(teacher, 14, 4, seed=3)
    assert len(fit) == 14 and len(held) == 4 and not set(fit) & set(held)
    key = cache_key(teacher, 2, 16, 1)
    true = np.zeros(len(FEATURES))
    true[FEATURES.index("const")], true[FEATURES.index("gemm_fp32")] = 0.2, 1e-6
    true[FEATURES.index("gemm_dynamic")] = true[FEATURES.index("gemm_static")] = 5e-7
    for shape in fit + held:
        cache_point(key, Point(shape, 2, 16, 1, float(features(shape, 2, 16) @ true)), tmp_path)
    out = tmp_path / "latency.json"
    code = timing.main(["--teacher-config", str(folder / "config.json"), "--batch", "2", "--seq-len", "16", "--threads", "1",
                         "--fit", "14", "--holdout", "4", "--seed", "3", "--out", str(out), "--cache-dir", str(tmp_path),
                         "--deadline-s", "60"])
    assert code == 0
    result = json.loads(out.read_text())
    assert result["measured"] == 0 and result["fit_points"] == 14 and result["holdout_measured"] == 4
    assert result["holdout"]["all"] < 0.01 and len(result["holdout"]["points"]) == 4
    model = LatencyModel.load(out)
    assert model.predict(held[0], 2, 16) == pytest.approx(float(features(held[0], 2, 16) @ true), rel=0.01)
    assert "median |error|" in capsys.readouterr().out
    assert result["command"][:3] == ["python", "-m", "compress.search.timing"]
    # what the search writes of it into search.json (key, held-back shapes) matches eval/search_schema.json
    from types import SimpleNamespace

    from compress.search.final import latency_summary
    from eval.search_report import SCHEMA_FILE, schema_error

    schema = json.loads(SCHEMA_FILE.read_text())
    summary = latency_summary(SimpleNamespace(latency_report=result, done={}))
    assert summary["key"] and summary["holdout"]
    assert schema_error(summary, schema["properties"]["latency_model"], schema, "latency_model") is None


def test_draws_stay_around_the_teacher():
    config = SlimformerConfig(vocab_size=30522, max_len=512, dim=384, n_layers=6, n_heads=12, ffn_dim=1536, norm="post")
    fit, held = plan(config, 16, 20, seed=0)
    assert fit[0] == shape_of(config) and fit[1].int8 == "dynamic" and fit[2].int8 == "static"
    for shape in fit[3:] + held:
        assert 1 <= shape.n_layers <= 6 and shape.dim % 8 == 0 and 96 <= shape.dim <= 384
        assert all(1 <= h <= 12 for h in shape.n_heads) and all(192 <= f <= 1536 for f in shape.ffn_dim)
        assert shape.head_dim == 32 and 30522 // 8 <= shape.vocab_size <= 30522
    assert {s.int8 for s in held} == {None, "dynamic", "static"}
