"""Several processes (`accelerate launch`, torchrun): who writes files, and where processes wait.

Every process runs the whole recipe; `compress.training.loop.train` splits each batch over them and
averages the gradients (PyTorch DDP through accelerate). Everything else follows one rule:
the main process writes every file (compress/io.py skips writes in the others) and alone runs
the steps that only export or measure (`main_process_only`); the others wait where they need
what it wrote. In a single process nothing here starts a process group or waits.
"""

import contextlib
import functools
import os
from collections.abc import Iterator
from datetime import timedelta

# the launchers' variables: torchrun/accelerate (RANK, WORLD_SIZE), then MPI's
RANK_VARS = ("RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK")
SIZE_VARS = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
# how long a process waits for the others: long, as the others idle while the main process benchmarks
WAIT_TIMEOUT = timedelta(hours=3)


def env_int(names: tuple[str, ...], default: int) -> int:
    return next((int(os.environ[n]) for n in names if os.environ.get(n)), default)


def world_size() -> int:
    """The number of processes the launcher started (1 without a launcher)."""
    return env_int(SIZE_VARS, 1)


def is_main_process() -> bool:
    """True in the process that writes files: rank 0, or the only process."""
    return env_int(RANK_VARS, 0) == 0


def join(cpu: bool) -> None:
    """Join the launcher's process group (gloo between CPU processes, NCCL between GPUs); no-op in one process.

    The first call decides the backend, so call it with the recipe's device before anything
    waits; `train()`'s `Accelerator` then reuses the group.
    """
    if world_size() > 1:
        from accelerate import PartialState

        PartialState(cpu=cpu, timeout=WAIT_TIMEOUT)


def wait_for_everyone() -> None:
    """A barrier across the processes; no-op in one process."""
    if world_size() > 1:
        import torch
        from accelerate import PartialState

        join(cpu=not torch.cuda.is_available())  # a no-op once joined
        PartialState().wait_for_everyone()


def broadcast_from_main(obj):
    """The main process's `obj` in every process (a decision that float noise must not split); `obj` in one process."""
    if world_size() == 1:
        return obj
    from accelerate.utils import broadcast_object_list

    wait_for_everyone()  # joins the group if nothing has yet
    return broadcast_object_list([obj], from_process=0)[0]


@contextlib.contextmanager
def main_process_first() -> Iterator[None]:
    """Run the block in the main process, then in the others: they find what it wrote (a tokenizer, a cache)."""
    if not is_main_process():
        wait_for_everyone()
    yield
    if is_main_process():
        wait_for_everyone()


def main_process_only(step):
    """Decorate a step that only exports or measures: the main process runs it, the others wait and keep their model."""

    @functools.wraps(step)
    def run(model, cfg, ctx):
        if world_size() == 1:
            return step(model, cfg, ctx)
        if is_main_process():
            model = step(model, cfg, ctx)
        wait_for_everyone()
        return model

    return run
