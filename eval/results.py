"""results.json: a run's stages, each with what was measured, under one stated protocol.

The runner (`compress/run/runner.py`) hands over plain values: the stages' recorded fields, the
recipe's task and bench settings, the machine (`eval/env.py`); this module assembles the document
that `eval/results_schema.json` describes, writes it atomically, and writes each stage's model
card beside its weights (`eval/model_card.py`). Reports, `slimformer bench` and `report --check`
read it back with `eval/io.py: load_results`.
"""

from pathlib import Path
from typing import Any

from eval.io import atomic_write_json, atomic_write_text
from eval.model_card import write_cards

SCHEMA_VERSION = 1


def build_protocol(*, task: dict, bench: dict, env: dict, timing: dict, interleaved: bool, devices: list[str],
                   peak: dict | None, traffic: dict | None) -> dict:
    """The protocol entry: what every number of the run was measured on.

    `task`: name, description, n_test, seq_len, truncated; `bench`: the recipe's bench section
    (batch_sizes, seq_lens, threads, warmup, repeats)."""
    return {
        "task": task["name"],
        "task_description": task["description"],
        "split": "test",
        "n_test": task["n_test"],
        "seq_len": task["seq_len"],
        "batch_sizes": bench["batch_sizes"],
        "seq_lens": bench.get("seq_lens") or [task["seq_len"]],
        "threads": bench["threads"],
        "warmup": bench["warmup"],
        "repeats": bench["repeats"],
        "interleaved": interleaved,
        "timing": timing,
        "devices": devices,
        "truncated": task.get("truncated", {}),
        "versions": env.get("versions", {}),
        "cpu": f"{env.get('cpu')} ({env.get('n_cores_usable')} usable cores)",
        "cpu_features": env.get("cpu_features"),
        "gpu": ", ".join(env.get("cuda_devices") or []) or None,
        "peak": peak,
        "traffic": traffic,
    }


def write_results(run_dir: Path, *, run: str, command: str, protocol: dict, baseline: str | None,
                  stages: list[dict[str, Any]]) -> Path:
    """Write `run_dir/results.json` and every stage's model card; returns the results path."""
    results = {"schema_version": SCHEMA_VERSION, "run": run, "command": command, "protocol": protocol,
               "baseline": baseline, "stages": stages}
    path = run_dir / "results.json"
    atomic_write_json(path, results)
    write_cards(results, run_dir, atomic_write_text)  # each model/ folder's README.md, with these measurements
    return path
