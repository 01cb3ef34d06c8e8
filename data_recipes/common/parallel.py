"""Building candidates in worker processes, in order, with a bounded number in flight.

`Pool.imap` reads its whole input ahead of the workers, which would hold every row of a large table in memory;
here at most `workers * IN_FLIGHT_PER_WORKER` chunks are submitted at a time, so memory stays constant in the
number of rows. Results come back in candidate order, so shards are the same whatever the worker count.
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

CHUNK = 16
IN_FLIGHT_PER_WORKER = 4


def _run_chunk(function: Callable[[Any], Any], items: list) -> list:
    return [function(item) for item in items]


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    chunk: list = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def ordered_map(function: Callable[[Any], Any], items: Iterable, workers: int) -> Iterator[tuple[Any, Any]]:
    """Yields (item, function(item)) in input order; `function` and the items must be picklable.

    With one worker everything runs here, lazily. Stopping the iteration early shuts the workers down.
    """
    if workers <= 1:
        for item in items:
            yield item, function(item)
        return
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    pending: deque[tuple[list, Future]] = deque()
    limit = workers * IN_FLIGHT_PER_WORKER
    executor = ProcessPoolExecutor(max_workers=workers, mp_context=context)
    try:
        for chunk in _chunks(items, CHUNK):
            pending.append((chunk, executor.submit(_run_chunk, function, chunk)))
            while len(pending) >= limit:
                done_chunk, future = pending.popleft()
                yield from zip(done_chunk, future.result())
        while pending:
            done_chunk, future = pending.popleft()
            yield from zip(done_chunk, future.result())
    finally:
        for _, future in pending:
            future.cancel()
        executor.shutdown(wait=True, cancel_futures=True)
