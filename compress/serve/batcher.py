"""Dynamic batching across requests: texts from concurrent requests share one model call.

The request handlers, on the event loop, hand their texts to `Batcher.submit` and await the
results; one loop task (`run`) forms batches and runs each one in a worker thread, so the event
loop keeps accepting and parsing requests while a batch runs (tokenization and ONNX Runtime
release the GIL). A batch is formed as Triton's dynamic batcher and Clipper form theirs (Crankshaw
et al. 2017, "Clipper: A Low-Latency Online Prediction Serving System"): it takes what is queued,
up to `max_batch_size` texts, and may wait up to `max_wait_ms` after its oldest text arrived for
more. It waits only while requests the server has begun to receive (`receiving()`) are still being
read, so a lone client never pays the wait, and a burst of clients fills one batch instead of many
small ones. While the worker is busy, new texts queue up and the next batch takes them all.

A request's texts are queued one item each, so a request larger than `max_batch_size` spans
batches and no batch exceeds it. Texts whose request went away (the client disconnected) are
dropped before the batch runs.
"""

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np


@dataclass
class Item:
    text: str
    future: asyncio.Future  # -> its row of probabilities, (C,)
    arrived: float  # loop time


class Batcher:
    """Batches `run_batch(texts) -> (N, C)` calls across concurrent `submit`s; one batch runs at a time."""

    def __init__(self, run_batch: Callable[[list[str]], np.ndarray], max_batch_size: int = 32, max_wait_ms: float = 5.0):
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000.0
        self.batches = 0  # model calls made, and texts they classified: /health reports them
        self.texts = 0
        self._queue: deque[Item] = deque()
        self._receiving = 0  # requests being read: a batch may wait for them
        self._wake = asyncio.Event()  # set when a text is queued or a request stops being received
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="slimformer-model")
        self._task: asyncio.Task | None = None

    @property
    def queued(self) -> int:
        """Texts waiting for a batch."""
        return len(self._queue)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self.run())

    async def stop(self) -> None:
        """Finish what is queued, then stop the loop and the worker thread."""
        while self._queue and self._task is not None and not self._task.done():
            await asyncio.sleep(0.01)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._worker.shutdown(wait=True)

    @contextlib.contextmanager
    def receiving(self) -> Iterator[None]:
        """Around reading a request: batches formed meanwhile may wait (up to max_wait_ms) for its texts.
        Call `submit` right after leaving it, with no `await` between, so no batch sees neither."""
        self._receiving += 1
        try:
            yield
        finally:
            self._receiving -= 1
            self._wake.set()

    async def submit(self, texts: list[str]) -> list[np.ndarray]:
        """Each text's probabilities (C,), in order, once the batches holding them have run."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        items = [Item(text, loop.create_future(), now) for text in texts]
        self._queue.extend(items)
        self._wake.set()
        return list(await asyncio.gather(*(item.future for item in items)))

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._queue:
                self._wake.clear()
                await self._wake.wait()
            deadline = self._queue[0].arrived + self.max_wait_s
            while len(self._queue) < self.max_batch_size and self._receiving and loop.time() < deadline:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), deadline - loop.time())
            batch = [self._queue.popleft() for _ in range(min(self.max_batch_size, len(self._queue)))]
            batch = [item for item in batch if not item.future.done()]  # drop texts of requests gone away
            if not batch:
                continue
            try:
                probs = await loop.run_in_executor(self._worker, self.run_batch, [item.text for item in batch])  # (B, C)
            except Exception as e:  # the model failed: every request in the batch gets the error
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(e)
                continue
            self.batches += 1
            self.texts += len(batch)
            for item, row in zip(batch, probs, strict=True):
                if not item.future.done():
                    item.future.set_result(row)
