"""Several processes: a tiny recipe trains under `accelerate launch` (2 CPU processes, gloo) as it does in one."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

import cli
from compress.training.batches import LengthGroupedBatches, ShardedBatches

ROOT = Path(__file__).resolve().parents[2]

# dropout off: one process and two then compute the same thing up to float rounding
RECIPE = """\
# The multi-process test's recipe: a tiny teacher on WordNet glosses, then a main-process-only step.
name: tiny
seed: 0
device: cpu
task:
  kind: wordnet
  pos: [noun]
  max_examples: 2000
  seq_len: 24
  tokenizer: {kind: wordpiece, vocab_size: 400}
teacher: {size: tiny, dim: 32, n_heads: 2, ffn_dim: 64, n_layers: 2, dropout: 0.0}
steps:
  - {kind: train, epochs: 2, batch_size: 32, lr: 1.0e-2}
  - {kind: evaluate}
"""


def test_sharded_batches_split_every_batch_without_overlap():
    lengths = torch.randint(1, 30, (101,), generator=torch.Generator().manual_seed(0))
    whole = list(LengthGroupedBatches(lengths, batch_size=10, seed=0, pool=3))
    shares = [list(ShardedBatches(LengthGroupedBatches(lengths, batch_size=10, seed=0, pool=3), rank, 3)) for rank in range(3)]
    assert all(len(s) == len(whole) for s in shares), "every process takes the same number of steps"
    for i, batch in enumerate(whole):
        parts = [s[i] for s in shares]
        if len(batch) >= 3:
            assert sorted(sum(parts, [])) == sorted(batch), "the shares of a batch are that batch, each example once"
        else:  # the one short batch (101 = 10 * 10 + 1): repeated so that no process gets an empty one
            assert all(len(p) == 1 and p[0] in batch for p in parts)


def test_two_processes_train_like_one(tmp_path):
    """`accelerate launch --multi_gpu --num_processes 2` on CPU: the same steps and, up to rounding, the same model."""
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(RECIPE)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--main_process_port", "0"]  # 0: any free port
    cmd = [*launch, str(ROOT / "cli.py"), "run", str(recipe), "--runs-dir", str(tmp_path / "two")]
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]

    two = tmp_path / "two" / "tiny"
    results = json.loads((two / "results.json").read_text())
    assert results["stages"][0]["name"] == "teacher" and 0 <= results["stages"][0]["accuracy_torch"] <= 1
    assert (two / "stages/teacher/model/model.safetensors").is_file() and (two / "report.md").is_file()
    events = [json.loads(line) for line in (two / "metrics.jsonl").read_text().splitlines()]
    done = [e["kind"] for e in events if e["event"] == "step_done"]
    assert done == ["train", "evaluate"], "each step is recorded once: only the main process writes"
    assert len([e for e in events if e["event"] == "epoch"]) == 2
    assert not [p for p in two.rglob(".*") if p.name.endswith(".tmp")], "no temporary files left behind"

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # like each launched process
    try:
        assert cli.main(["run", str(recipe), "--runs-dir", str(tmp_path / "one")]) == 0
    finally:
        torch.set_num_threads(threads)
    one = json.loads((tmp_path / "one" / "tiny" / "results.json").read_text())

    curve1, curve2 = one["stages"][0]["train_curve"], results["stages"][0]["train_curve"]
    # batch_size is global, so both runs take the same optimiser steps on the same batches at the same learning rates
    assert [(p["step"], p["lr"]) for p in curve2] == [(p["step"], p["lr"]) for p in curve1]
    # and they differ only by float rounding (DDP averages two half-batch gradients), which 2 epochs barely amplify
    assert abs(curve2[0]["train_loss"] - curve1[0]["train_loss"]) < 1e-3
    assert abs(results["stages"][0]["val_accuracy"] - one["stages"][0]["val_accuracy"]) <= 0.05  # 10 of 200 examples
