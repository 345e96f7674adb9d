"""Test-wide settings: offline hub, fixed threads, a tiny model config."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

# two xdist workers on two cores: one thread each (tiny models gain nothing from more); else 2
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)


@pytest.fixture
def tiny_config():
    from compress.models import SlimformerConfig

    return SlimformerConfig(vocab_size=60, max_len=24, dim=32, n_layers=2, n_heads=4, ffn_dim=64, num_labels=3, dropout=0.0)
