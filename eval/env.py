"""The environment a run was measured in, for `runs/<name>/env.json`.

Latency numbers mean nothing without the machine, library versions and thread counts
behind them. Nothing personal is recorded: no hostname, user name or paths.
"""

import importlib
import importlib.metadata
import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path

# distribution names whose versions are recorded; a missing one is recorded as null
PACKAGES = ("torch", "transformers", "onnx", "onnxruntime", "tokenizers", "numpy")
CPUINFO = Path("/proc/cpuinfo")


def package_version(name: str) -> str | None:
    """Installed version of a distribution, or None when it is not installed."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def slimformer_version() -> str | None:
    """`compress.__version__`, or None when the library cannot be imported."""
    try:
        return importlib.import_module("compress").__version__
    except (ImportError, AttributeError):
        return None


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (Linux), else `platform.processor()`."""
    if CPUINFO.is_file():
        for line in CPUINFO.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                return value.strip()
    return platform.processor() or platform.machine()


# the CPU flags int8 and fp32 speed depend on: AVX2 (both), AVX-512 (wider fp32 and int8), VNNI (one-instruction
# int8 dot products: without it int8 MatMul peaks near 2x fp32, with it far higher), AMX (int8/bf16 tile units)
CPU_FEATURES = {"avx2": "avx2", "avx512f": "avx512", "avx512_vnni": "avx512_vnni", "avx_vnni": "avx_vnni",
                "amx_int8": "amx_int8", "amx_bf16": "amx_bf16"}


def cpu_features() -> dict[str, bool] | None:
    """Which vector and int8 features the CPU has (from /proc/cpuinfo's flags, Linux x86); None where unknown."""
    if not CPUINFO.is_file():
        return None
    for line in CPUINFO.read_text(errors="replace").splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            flags = set(value.split())
            found = {name: flag in flags for flag, name in CPU_FEATURES.items()}
            found["vnni"] = found["avx512_vnni"] or found["avx_vnni"]
            return found
    return None


def describe_cpu_features(features: dict[str, bool] | None) -> str:
    """'AVX2, AVX-512, VNNI, no AMX' for the report's protocol line."""
    if not features:
        return "unknown"
    names = [("avx2", "AVX2"), ("avx512", "AVX-512"), ("vnni", "VNNI"), ("amx_int8", "AMX")]
    return ", ".join(label if features.get(key) else f"no {label}" for key, label in names)


def usable_cores() -> int | None:
    """Cores this process may run on (its affinity mask where the OS has one)."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity else os.cpu_count()


def torch_info() -> dict:
    """torch's intra-op threads and the CUDA device names (empty without CUDA); nulls without torch."""
    try:
        import torch
    except ImportError:
        return {"torch_threads": None, "cuda_devices": [], "cuda_version": None}
    n_gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    devices = [torch.cuda.get_device_name(i) for i in range(n_gpus)]
    return {"torch_threads": torch.get_num_threads(), "cuda_devices": devices, "cuda_version": torch.version.cuda}


def ort_providers() -> list[str]:
    """ONNX Runtime's available execution providers (empty without onnxruntime)."""
    try:
        import onnxruntime
    except ImportError:
        return []
    return onnxruntime.get_available_providers()


def collect_env(threads: int) -> dict:
    """Versions, CPU, cores, threads, providers and GPUs, with a UTC timestamp; `threads` is the benchmark setting."""
    return {
        "timestamp_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "os": sys.platform,
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "cpu_features": cpu_features(),
        "n_cores": os.cpu_count(),
        "n_cores_usable": usable_cores(),
        "threads": threads,
        "versions": {**{name: package_version(name) for name in PACKAGES}, "slimformer": slimformer_version()},
        **torch_info(),
        "onnxruntime_providers": ort_providers(),
    }
