"""slimformer evaluation: measure the same way for torch and ONNX Runtime, then report.

    from eval import bench_onnx, classification_metrics, write_report

Names are imported lazily from their modules on first use, so `python -m eval.memprobe`
(which measures memory in a fresh process) does not pay for importing torch.
"""

import importlib
from typing import Any

# public name -> module that defines it
EXPORTS = {
    "time_callable": "bench",
    "ort_session": "bench",
    "bench_onnx": "bench",
    "bench_torch": "bench",
    "peak_memory": "bench",
    "count_params": "bench",
    "file_size": "bench",
    "make_inputs": "bench",
    "predict_onnx": "accuracy",
    "predict_torch": "accuracy",
    "classification_metrics": "accuracy",
    "collect_env": "env",
    "load_results": "results",
    "write_report": "report",
    "load_thresholds": "check",
    "run_checks": "check",
}

__all__ = sorted(EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in EXPORTS:
        raise AttributeError(f"module 'eval' has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{EXPORTS[name]}"), name)


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
