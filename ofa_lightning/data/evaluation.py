"""Finite evaluation data that every rank walks in step and that covers each sample exactly once (uneven ranks
would hang in a collective).

Two modes:

``map`` (default): ``EvalDataset`` is a map-style dataset over the samples of the eval shards, indexed from the tar
headers (random access by offset; local files and seekable fsspec URLs). ``PaddedDistributedSampler`` gives each rank
a contiguous block of ``ceil(N / world)`` items; the few extra items that even the ranks out are *padding
duplicates*: they are built like the others but flagged (``batch["is_pad"]``), so every real sample is seen
exactly once and every rank runs the same number of batches. It subclasses ``DistributedSampler``, so Lightning
keeps it instead of injecting its own.

``split``: ``ShardSplitStream`` for shards that cannot be read at random (``pipe:`` URLs). Shards are split
explicitly across ranks (``urls[rank::world]``) and then workers; sample counts (manifest, or tar headers) fix
in advance how many batches each rank yields, and ranks with fewer samples top up with flagged padding batches,
so no rank waits for another. A rank that would get no shard makes *every* rank fail at once with a message.

After gathering predictions across ranks, ``dedup_by_id`` keeps one record per sample id (LAVIS-style, but O(n))
and drops padding records.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from typing import Any

from torch.utils.data import Dataset, DistributedSampler, IterableDataset, get_worker_info

from ofa_lightning.data.collate import collate_examples, mark_padding
from ofa_lightning.data.samples import DataStats, Skip, build_example
from ofa_lightning.data.shards import ShardReadError, TarIndex, index_tar, iter_tar_samples, open_url, shard_sizes
from ofa_lightning.data.stream import make_seed
from ofa_lightning.tasks.base import Example, Task

__all__ = [
    "EvalDataset",
    "EvalCollate",
    "PaddedDistributedSampler",
    "ShardSplitStream",
    "dedup_by_id",
    "check_split_possible",
]


class EvalDataset(Dataset):
    """Map-style dataset over every sample of the given shards (file order), built through ``task`` (train=False).

    ``dataset[i]`` returns an ``Example`` or a ``Skip``; ``dataset[(i, True)]`` returns sample i flagged as a
    padding duplicate. ``max_samples`` keeps only the first samples (quick validation).
    """

    def __init__(self, name: str, task: Task, urls: Sequence[str], *, seed: int = 0, max_samples: int | None = None):
        self.name = name
        self.task = task
        self.urls = list(urls)
        self.seed = seed
        self.indexes: list[TarIndex] = [index_tar(url, partial=True) for url in self.urls]
        self.items: list[tuple[int, str]] = [(s, key) for s, index in enumerate(self.indexes) for key in index.keys]
        # a damaged shard gives its readable samples, and one item that is its counted 'unreadable shard' skip
        self.items += [(s, "") for s, index in enumerate(self.indexes) if index.damage]
        if max_samples is not None:
            self.items = self.items[: int(max_samples)]
        self._handles: dict[int, Any] = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        return len(self.items)

    def _handle(self, shard: int):
        if self._pid != os.getpid():  # forked into a worker: never share file offsets with the parent
            self._handles, self._pid = {}, os.getpid()
        if shard not in self._handles:
            self._handles[shard] = open_url(self.urls[shard])
        return self._handles[shard]

    def __getitem__(self, item: int | tuple[int, bool]) -> Example | Skip:
        index, is_pad = item if isinstance(item, tuple) else (item, False)
        shard, key = self.items[index]
        if not key:
            damage = self.indexes[shard].damage or ""
            return Skip("unreadable shard", damage, self.urls[shard] + ("#pad" if is_pad else ""))
        try:
            raw = self.indexes[shard].read(self._handle(shard), key)
        except (OSError, ShardReadError) as exc:
            self._handles.pop(shard, None)
            return Skip("unreadable shard", str(exc), key + ("#pad" if is_pad else ""))
        result = build_example(self.task, raw, train=False, rng=random.Random(make_seed(self.seed, "eval", key)))
        if is_pad:  # a skipped padding item is not counted again (its original is counted where it is read)
            result = mark_padding(result) if isinstance(result, Example) else Skip(result.reason, "", key + "#pad")
        return result

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_handles"] = {}
        return state

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles = {}


class EvalCollate:
    """Collate for ``EvalDataset``: counts and drops ``Skip`` items, then ``collate_examples``; adds ``stats``.

    A batch whose items were all skipped is still returned (``size`` 0), so ranks stay in step.
    """

    def __init__(self, name: str, pad_id: int = 1, text_image_size: int | None = None):
        self.name, self.pad_id, self.text_image_size = name, pad_id, text_image_size

    def __call__(self, items: Sequence[Example | Skip]) -> dict[str, Any]:
        stats = DataStats()
        examples = []
        for item in items:
            if isinstance(item, Skip):
                if not item.id.endswith("#pad"):
                    stats.skip_record(item)
                continue
            examples.append(item)
        batch = collate_examples(examples, self.pad_id, self.text_image_size)
        padded = int(batch["is_pad"].sum())
        stats.padded += padded
        if len(examples) - padded:
            stats.count(self.name, len(examples) - padded)
        batch["stats"] = stats.as_dict()
        batch["source"] = self.name
        return batch


class PaddedDistributedSampler(DistributedSampler):
    """Contiguous, unshuffled split of ``range(N)`` over ranks; the last rank(s) are topped up to ``ceil(N/world)``
    items with ``(i, True)`` padding entries (a repeat of sample i, flagged)."""

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int):
        if len(dataset) == 0:
            raise ValueError("cannot split an empty evaluation dataset over ranks")
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)
        self.num_samples = math.ceil(len(dataset) / num_replicas)
        self.total_size = self.num_samples * num_replicas

    def __iter__(self) -> Iterator[int | tuple[int, bool]]:
        n = len(self.dataset)
        start = self.rank * self.num_samples
        for position in range(start, start + self.num_samples):
            yield position if position < n else (position % n, True)

    def __len__(self) -> int:
        return self.num_samples


def check_split_possible(name: str, num_shards: int, world_size: int) -> None:
    """Fails (on every rank alike) when some rank would get no shard in split mode."""
    if num_shards < world_size:
        empty = list(range(num_shards, world_size))
        raise ValueError(
            f"eval source {name!r}: {num_shards} shard(s) for {world_size} ranks, so rank(s) {empty} would get no "
            f"shard and the other ranks would wait for them forever. Use eval mode 'map' (random access, any shard "
            f"count), run on at most {num_shards} ranks, or re-shard the split into at least {world_size} shards"
        )


class ShardSplitStream(IterableDataset):
    """Finite eval stream with explicit node + worker splitting and batch counts equal on all ranks.

    Yields collated batches (use ``DataLoader(batch_size=None)``). ``len()`` is the number of batches every rank
    yields. Worker 0 of a rank tops the rank up with padding batches (duplicates flagged ``is_pad``; empty batches
    if the worker found no usable sample) when the rank has fewer samples than the fullest one.
    """

    def __init__(
        self,
        name: str,
        task: Task,
        urls: Sequence[str],
        batch_size: int,
        *,
        rank: int,
        world_size: int,
        num_workers: int = 0,
        seed: int = 0,
        pad_id: int = 1,
        text_image_size: int | None = None,
        sizes: dict[str, int] | None = None,
    ):
        check_split_possible(name, len(urls), world_size)
        self.name, self.task, self.urls = name, task, list(urls)
        self.batch_size, self.rank, self.world_size = int(batch_size), rank, world_size
        self.num_workers, self.seed, self.pad_id, self.text_image_size = num_workers, seed, pad_id, text_image_size
        counts = sizes if sizes is not None else shard_sizes(self.urls)
        self.counts = {u: int(counts[u]) for u in self.urls}
        workers = max(1, num_workers)
        self.plan: list[list[int]] = []  # plan[r][w] = batches of worker w on rank r (before padding)
        for r in range(world_size):
            mine = self.urls[r::world_size]
            self.plan.append(
                [math.ceil(sum(self.counts[u] for u in mine[w::workers]) / self.batch_size) for w in range(workers)]
            )
        self.num_batches = max(sum(p) for p in self.plan)

    def __len__(self) -> int:
        return self.num_batches

    def worker_target(self, worker: int) -> int:
        own = self.plan[self.rank][worker]
        return own + (self.num_batches - sum(self.plan[self.rank]) if worker == 0 else 0)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        if workers != max(1, self.num_workers):
            raise RuntimeError(f"ShardSplitStream planned for {self.num_workers} workers, runs with {workers}")
        urls = self.urls[self.rank :: self.world_size][worker::workers]
        target = self.worker_target(worker)
        stats, made = DataStats(), 0
        kept: list[Example] = []  # first examples, reused as padding
        chunk: list[Example] = []

        def emit(examples: list[Example]) -> dict[str, Any]:
            batch = collate_examples(examples, self.pad_id, self.text_image_size)
            padded = int(batch["is_pad"].sum())
            stats.padded += padded
            if len(examples) - padded:
                stats.count(self.name, len(examples) - padded)
            batch["stats"] = stats.take()
            batch["source"] = self.name
            return batch

        for url in urls:
            try:
                for raw in iter_tar_samples(url):
                    result = build_example(
                        self.task, raw, train=False, rng=random.Random(make_seed(self.seed, "eval", raw.get("__key__")))
                    )
                    if isinstance(result, Skip):
                        stats.skip_record(result)
                        continue
                    if made >= target:
                        stats.skip("over manifest count", f"{url} holds more samples than its count", result.id)
                        continue
                    if len(kept) < self.batch_size:
                        kept.append(result)
                    chunk.append(result)
                    if len(chunk) == self.batch_size:
                        yield emit(chunk)
                        chunk, made = [], made + 1
            except ShardReadError as exc:
                stats.skip("unreadable shard", str(exc), url)
        if chunk and made < target:
            yield emit(chunk)
            made += 1
        while made < target:
            yield emit([mark_padding(ex) for ex in kept])
            made += 1


def dedup_by_id(
    records: Iterable[Any],
    key: Callable[[Any], Hashable] | str = "id",
    is_pad: Callable[[Any], bool] | str | None = "is_pad",
) -> list[Any]:
    """Keeps the first record per sample id, in order, and drops padding records.

    ``records`` are gathered predictions (e.g. dicts ``{"id", "prediction", "is_pad"}`` from all ranks); ``key``
    and ``is_pad`` are field names (for dicts) or functions.
    """
    get_key = (lambda r: r[key]) if isinstance(key, str) else key
    if is_pad is None:
        get_pad = lambda r: False  # noqa: E731
    elif isinstance(is_pad, str):
        get_pad = lambda r: bool(r.get(is_pad, False)) if isinstance(r, dict) else False  # noqa: E731
    else:
        get_pad = is_pad
    seen: set = set()
    out = []
    for record in records:
        if get_pad(record):
            continue
        k = get_key(record)
        if k not in seen:
            seen.add(k)
            out.append(record)
    return out
