"""Dynamic batching for ``ofa-serve``: requests of the same task that arrive within a short window share one batch.

``DynamicBatcher.submit(key, item)`` (a coroutine) puts the request on an asyncio queue and waits for its answer.
One collector task takes the first waiting request, keeps taking requests for up to ``wait_ms`` (or until
``max_batch`` are in hand), groups them by ``key`` (the task) and hands each group to ``run_batch(key, items)`` in a
single worker thread, so the event loop never waits on the model. While the worker computes, new requests queue up
and form the next batch at once. More than ``max_queue`` requests waiting or running: :class:`QueueFull` (the
server's 429 with ``Retry-After``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["DynamicBatcher", "QueueFull"]


class QueueFull(Exception):
    """Too many requests are waiting; try again in ``retry_after`` seconds."""

    def __init__(self, waiting: int, retry_after: int):
        super().__init__(f"server busy: {waiting} requests waiting; retry in {retry_after} s")
        self.retry_after = retry_after


class DynamicBatcher:
    def __init__(
        self,
        run_batch: Callable[[Any, list[Any]], list[Any]],
        max_batch: int = 8,
        wait_ms: float = 10.0,
        max_queue: int = 64,
    ):
        if max_batch < 1 or max_queue < 1:
            raise ValueError("max_batch and max_queue must be at least 1")
        self.run_batch = run_batch
        self.max_batch = int(max_batch)
        self.wait_s = float(wait_ms) / 1000.0
        self.max_queue = int(max_queue)
        self.pending = 0  # waiting or running requests
        self.batches = 0  # batches run so far
        self.last_batch_seconds = 1.0
        self._queue: asyncio.Queue | None = None
        self._collector: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ofa-serve-model")
        self._collector = asyncio.create_task(self._collect())

    async def stop(self) -> None:
        if self._collector is not None:
            self._collector.cancel()
            try:
                await self._collector
            except asyncio.CancelledError:
                pass
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    async def submit(self, key: Any, item: Any) -> tuple[Any, int]:
        """The answer to ``item`` and the size of the batch it ran in."""
        if self._queue is None:
            raise RuntimeError("DynamicBatcher.start() was not awaited")
        if self.pending >= self.max_queue:
            batches_ahead = self.pending / self.max_batch
            raise QueueFull(self.pending, max(1, round(batches_ahead * self.last_batch_seconds)))
        future = asyncio.get_running_loop().create_future()
        self.pending += 1
        try:
            self._queue.put_nowait((key, item, future))
            return await future
        finally:
            self.pending -= 1

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        queue = self._queue
        while True:
            batch = [await queue.get()]
            deadline = loop.time() + self.wait_s
            while len(batch) < self.max_batch:
                try:
                    batch.append(queue.get_nowait())
                    continue
                except asyncio.QueueEmpty:
                    pass
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(queue.get(), timeout))
                except asyncio.TimeoutError:
                    break
            groups: dict[Any, list[tuple[Any, asyncio.Future]]] = {}
            for key, item, future in batch:
                if not future.done():  # the client went away while waiting
                    groups.setdefault(key, []).append((item, future))
            for key, members in groups.items():
                await self._run(loop, key, members)

    async def _run(self, loop, key: Any, members: list[tuple[Any, asyncio.Future]]) -> None:
        start = loop.time()
        try:
            results = await loop.run_in_executor(self._executor, self.run_batch, key, [m[0] for m in members])
            if len(results) != len(members):
                raise RuntimeError(f"run_batch returned {len(results)} answers for {len(members)} requests")
        except Exception as exc:  # noqa: BLE001 - every waiting request gets the error, the collector lives on
            log.exception("batch of %d '%s' requests failed", len(members), key)
            for _, future in members:
                if not future.done():
                    future.set_exception(exc)
            return
        finally:
            self.batches += 1
            self.last_batch_seconds = max(loop.time() - start, 1e-3)
        for (_, future), result in zip(members, results):
            if not future.done():
                future.set_result((result, len(members)))
