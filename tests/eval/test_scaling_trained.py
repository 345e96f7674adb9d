"""`bench --scaling --out RUN_DIR`: the run's trained models become labelled points beside the untrained curves."""

from eval.scaling import figures, markdown, trained_points


def latency(p50: float, seq_len: int = 1024, batch: int = 1, runtime: str = "onnxruntime") -> dict:
    return {"device": "cpu", "runtime": runtime, "precision": "fp32", "batch": batch, "seq_len": seq_len, "threads": 2,
            "p50_ms": p50}


RESULTS = {"stages": [
    {"name": "baseline", "kind": "baseline", "accuracy": 0.3},
    {"name": "teacher", "kind": "train", "accuracy": 0.99,
     "latency": [latency(6.4), latency(50.0, batch=8), latency(9.0, runtime="torch")],
     "peak_memory": [{"batch": 8, "seq_len": 1024, "peak_rss_bytes": 160e6}]},
    {"name": "bigbird", "kind": "swap_attention", "swap": {"to": "bigbird", "layers": [0, 1]}, "accuracy": 0.98,
     "latency": [latency(6.1)], "peak_memory": [{"batch": 1, "seq_len": 1024, "peak_rss_bytes": 90e6}]},
    {"name": "boe", "kind": "distill", "accuracy": 0.15, "latency": [latency(0.2)]},
]}


def test_trained_points_are_the_runs_full_and_swapped_stages_at_batch_1():
    points = trained_points(RESULTS)
    assert [(p["stage"], p["kind"], p["seq_len"], p["p50_ms"], p["peak_rss_bytes"]) for p in points] == [
        ("teacher", "full", 1024, 6.4, None),  # its memory was measured at batch 8 only: not a batch-1 point
        ("bigbird", "bigbird", 1024, 6.1, 90e6),
    ]


def test_the_plots_and_the_table_show_them():
    data = {
        "protocol": {"threads": 2, "lengths": [512, 1024], "kinds": ["full", "bigbird"], "model": "dim 128, untrained",
                     "warmup": 1, "repeats": 5, "attention": {"full": {"kind": "full"}, "bigbird": {"kind": "bigbird"}}},
        "latency": [{"kind": k, **latency(ms, seq_len=n)} for k, n, ms in
                    (("full", 512, 2.0), ("full", 1024, 7.0), ("bigbird", 512, 2.5), ("bigbird", 1024, 5.0))],
        "memory": [], "summary": {}, "trained": trained_points(RESULTS),
    }
    pngs = figures(data)
    assert [name for _, name, png in pngs if png.startswith(b"\x89PNG")] == ["scaling_latency_cpu.png"]
    md = markdown(data, pngs)
    assert "| teacher | full | — | 1024 | 6.40 | — (not at batch 1) | 99.0 |" in md
    assert "| bigbird | bigbird | 0, 1 | 1024 | 6.10 | 90 | 98.0 |" in md
