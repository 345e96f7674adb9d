"""eval/gpu_check.sh: its non-CUDA parts run on CPU (--smoke) and skip CUDA cleanly; on a GPU, the bench's dtypes."""

import json
import os
import subprocess
from pathlib import Path

import jsonschema
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "eval" / "gpu_check.sh"
SCHEMA = json.loads((ROOT / "eval" / "results_schema.json").read_text())


def run_script(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout)


def test_smoke_runs_the_cpu_parts_and_skips_cuda(tmp_path):
    done = run_script("--smoke", "--out", str(tmp_path))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    status = {fields[0]: fields[1:]
              for fields in (line.split("\t") for line in (tmp_path / "status.tsv").read_text().splitlines())}
    assert status["recipe"][0] == "0" and status["scaling"][0] == "0"
    if not torch.cuda.is_available():
        assert status["cuda"][:1] == ["skipped"] and "no CUDA" in status["cuda"][2]
    results = json.loads((tmp_path / "runs" / "base_gpu" / "results.json").read_text())
    jsonschema.validate(results, SCHEMA)
    teacher = results["stages"][0]
    assert results["protocol"]["peak"]["fp32"]["flops_per_s"] > 0 and results["protocol"]["peak"]["int8"]["flops_per_s"] > 0
    assert {(f["batch"], f["flops"] > 0) for f in teacher["flops"]} == {(1, True), (2, True)}
    assert teacher["parity_fp16"]["max_abs_diff"] <= teacher["parity_fp16"]["atol"]
    assert (tmp_path / "runs" / "base_gpu" / teacher["onnx_fp16_dir"] / "model.onnx").is_file()
    summary = (tmp_path / "summary.md").read_text()
    assert "Result: passed" in summary and "% of peak" in summary and "Scaling" in summary
    report = (tmp_path / "runs" / "base_gpu" / "report.md").read_text()
    assert "% of peak" in report and "MatMul peak" in report


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU the full check would run")
def test_without_cuda_the_full_check_refuses(tmp_path):
    done = run_script("--out", str(tmp_path), timeout=300)
    assert done.returncode == 2 and "--smoke" in done.stderr


def test_wheels_script_parses():
    for script in ("gpu_wheels.sh", "gpu_check.sh"):
        assert subprocess.run(["bash", "-n", str(ROOT / "eval" / script)]).returncode == 0


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_torch_cuda_columns_fp32_fp16_bf16(tiny_config):
    from compress.models import SlimformerForSequenceClassification
    from eval.bench import bench_torch

    model = SlimformerForSequenceClassification(tiny_config).eval()
    records = [r for dtype in (torch.float32, torch.float16, torch.bfloat16)
               for r in bench_torch(model, [1, 4], [16], threads=2, vocab_size=60, warmup=1, repeats=3, device="cuda",
                                    dtype=dtype)]
    assert {(r["device"], r["precision"]) for r in records} == {("cuda", "fp32"), ("cuda", "fp16"), ("cuda", "bf16")}
    assert all(r["p50_ms"] > 0 for r in records)
