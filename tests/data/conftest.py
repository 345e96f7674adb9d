"""Shared setup for the data tests: offline Hugging Face libraries, tiny task configs."""

import os

import pytest

# no test here may touch the network (the repo-wide conftest sets these too)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def small_listops():
    from compress.data import ListOpsConfig, load_task

    cfg = ListOpsConfig(n_train=600, n_validation=100, n_test=100)
    return cfg, load_task(cfg, seed=0)
