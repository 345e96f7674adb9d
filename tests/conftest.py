"""Test-wide settings: offline hub, fixed threads, a tiny model config."""

import copy
import gc
import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

# two xdist workers on two cores: one thread each (tiny models gain nothing from more); else 2
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)


def share_onnx_registry() -> None:
    """Build torch.onnx's table of ATen -> ONNX functions once per test process, not once per export.

    `torch.onnx.export(dynamo=True)` rebuilds it from torchlib on every call, re-reading and parsing
    the source of each torchlib function (~1 s of CPU of the ~5 s a tiny model's export takes, and
    the suite exports some 150 models). Its content depends only on the opset, and each export gets
    a copy of its lists, so an op registered by one export (`custom_translation_table`) never leaks
    into the next. Private torch API: if it moves, this does nothing and exports are only slower.
    """
    try:
        from torch.onnx._internal.exporter import _registration
    except ImportError:
        return
    registry_class = getattr(_registration, "ONNXRegistry", None)
    build = getattr(registry_class, "from_torchlib", None)
    if build is None or getattr(build, "shared", False):
        return
    built = {}

    def from_torchlib(cls, *args, **kwargs):
        key = (cls, args, tuple(sorted(kwargs.items())))
        if key not in built:
            built[key] = build.__func__(cls, *args, **kwargs)
        registry = copy.copy(built[key])
        registry.functions = {target: list(decomps) for target, decomps in built[key].functions.items()}
        return registry

    from_torchlib.shared = True
    registry_class.from_torchlib = classmethod(from_torchlib)


@pytest.fixture(autouse=True, scope="session")
def lean_test_process():
    """Once per test process, after collection (every test module and the libraries it imports are loaded):
    one ONNX registry for all exports, and the loaded objects moved out of the garbage collector's sight.
    accelerate's `free_memory` ends every `train()` with a full `gc.collect()`, which otherwise scans the
    ~600k objects of torch, transformers and onnxscript each time (0.4 s of CPU; 0.1 s once frozen)."""
    share_onnx_registry()
    gc.collect()
    gc.freeze()


@pytest.fixture
def tiny_config():
    from compress.models import SlimformerConfig

    return SlimformerConfig(vocab_size=60, max_len=24, dim=32, n_layers=2, n_heads=4, ffn_dim=64, num_labels=3, dropout=0.0)
