"""The batcher waits for requests still being received, and only for them: event-ordered, never timed."""

import asyncio

import numpy as np

from compress.serve.batcher import Batcher

LONG_WAIT_MS = 600_000.0  # a batch that waited this long would fail the test's deadline: waits must end on events


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def make_batcher(sizes: list[int], max_batch_size: int = 8) -> Batcher:
    def model(texts):
        sizes.append(len(texts))
        return np.array([[len(t), 0.0] for t in texts])  # (B, 2): a text's row names it

    return Batcher(model, max_batch_size=max_batch_size, max_wait_ms=LONG_WAIT_MS)


def test_a_lone_request_never_waits():
    sizes = []

    async def go():
        batcher = make_batcher(sizes)
        batcher.start()
        rows = await batcher.submit(["abc"])
        await batcher.stop()
        return rows

    assert [r[0] for r in run(go())] == [3] and sizes == [1]


def test_a_batch_waits_for_a_request_being_received_and_takes_it():
    sizes = []

    async def go():
        batcher = make_batcher(sizes)
        batcher.start()
        with batcher.receiving():  # a second request is being read while the first is queued
            first = asyncio.ensure_future(batcher.submit(["a"]))
            await asyncio.sleep(0)  # the loop runs: the batcher sees the first text and waits
            await asyncio.sleep(0)
            assert sizes == [] and batcher.queued == 1
        second = await batcher.submit(["bb", "ccc"])
        rows = await first, second
        await batcher.stop()
        return rows

    (first, second) = run(go())
    assert sizes == [3] and [r[0] for r in first + second] == [1, 2, 3]


def test_a_request_larger_than_a_batch_spans_batches_in_order():
    sizes = []

    async def go():
        batcher = make_batcher(sizes, max_batch_size=4)
        batcher.start()
        rows = await batcher.submit(["x" * n for n in range(1, 11)])
        await batcher.stop()
        return rows, batcher.batches

    rows, batches = run(go())
    assert sizes == [4, 4, 2] and batches == 3 and [r[0] for r in rows] == list(range(1, 11))
