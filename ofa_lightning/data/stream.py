"""The training stream: infinite, resampled, mixed per example, a pure function of where it starts.

The batches of a rank are a pure function of ``(seed, rank, epoch, batch index within the epoch)``,
so a run resumed mid-epoch reads exactly the batches an uninterrupted run would have read:

* batch ``b`` of an epoch belongs to *lane* ``b % W`` (W = DataLoader workers; a DataLoader hands out the workers'
  batches round-robin), at index ``b // W`` of that lane;
* each lane is cut into *segments* of ``segment_batches`` batches; a segment is generated from scratch (fresh shard
  draws, shuffle buffer, mixing and augmentation generators) from ``make_seed(seed, rank, lane, epoch, segment)``;
* a stream (re)started after ``skip`` batches of the epoch (the trainer's position, ``SharedPosition``) gives worker
  ``w`` lane ``(skip + w) % W`` from index ``(skip + w) // W``: it regenerates the start of that segment and drops
  what precedes the index (at most ``segment_batches - 1`` batches per worker, their skip counters dropped too, as
  the checkpoint already holds them).

Resuming with another worker count or world size gives a valid, reproducible but different stream. No two ranks or
lanes read the same stream.

Per worker:

1. every mixture source is an endless reader: shards drawn *with replacement* by the worker's seeded generator
   (``ResampledShards``-style: no node splitting, no end, no hang on uneven shard counts, P5/P6), each read whole
   but starting at a seeded random sample (rotated; where the manifest gives the shard's size), so that short
   segments still cover whole shards; samples passed through a seeded shuffle buffer of raw (undecoded) samples;
2. each next example picks a source with probability ``ratio / sum(ratios)`` (seeded, per example, P9), then
   decodes and builds it through the source's task; failures are counted skips (``DataStats``) and the same source
   is read again, so skips do not bend the realised mix;
3. examples are batched (optionally bucketed by length), collated in the worker, and the batch carries the
   counters of what happened since the previous batch (``batch["stats"]``).

Epoch length (P4): with ``batches_per_epoch`` set, each worker yields ``ceil(batches_per_epoch / workers)``
batches and ``len()`` is exact; with None the stream never ends (train by ``max_steps``).

Persistent workers (P7): the epoch and the batches already consumed in it live in ``SharedPosition``,
multiprocessing Values created in the DataLoader's own mp context; ``StreamLoader.__iter__`` writes them before the
workers restart their iterators.
"""

from __future__ import annotations

import hashlib
import math
import multiprocessing
import os
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ofa_lightning.data.collate import collate_examples, collate_grouped, length_key
from ofa_lightning.data.mixture import SourceSampler
from ofa_lightning.data.samples import DataStats, Skip, build_example
from ofa_lightning.data.shards import ShardReadError, iter_tar_samples
from ofa_lightning.tasks.base import Example, Task

__all__ = ["make_seed", "SharedPosition", "StreamSource", "MixtureStream", "StreamLoader", "dist_info"]


def make_seed(*parts: Any) -> int:
    """A 63-bit seed from any printable parts; identical in every process and Python run (no ``hash()``)."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def dist_info() -> tuple[int, int]:
    """(rank, world size) from torch.distributed when initialised, else from RANK/WORLD_SIZE, else (0, 1)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


class SharedPosition:
    """Epoch and batches already consumed in it ("step": where the stream restarts) shared between the main
    process and (persistent) DataLoader workers.

    Create it in the same multiprocessing context the DataLoader uses (``context`` = a name like "fork"/"spawn" or
    a context object; None = the default one, which is also the DataLoader's default): a fork-context lock breaks
    spawn/forkserver workers.
    """

    def __init__(self, context: Any = None):
        if context is None or isinstance(context, str):
            context = multiprocessing.get_context(context)
        self._epoch = context.Value("q", 0)
        self._step = context.Value("q", 0)

    def set(self, epoch: int, step: int) -> None:
        with self._epoch.get_lock():
            self._epoch.value = int(epoch)
        with self._step.get_lock():
            self._step.value = int(step)

    def get(self) -> tuple[int, int]:
        return int(self._epoch.value), int(self._step.value)


@dataclass
class StreamSource:
    """One resolved mixture source: its name, task object, shard URLs, ratio and (optional) sample count per URL.

    ``sizes`` (from the shards' ``manifest.json`` / ``sizes.json``; None where unknown) lets each shard visit start
    at a random sample (see :meth:`MixtureStream._raw_samples`)."""

    name: str
    task: Task
    urls: Sequence[str]
    ratio: float = 1.0
    sizes: Sequence[int | None] | None = None

    @property
    def group(self) -> str:
        return getattr(self.task, "group", "image-text")


def _readable_count(parts: list[tuple[int, int, bool]]) -> int:
    """Samples of a damaged shard readable before the damage, from one visit's parts ``(first index, samples read,
    failed)``: a failed part starting at 0 ends at the damage; else the damage lies after the part that failed."""
    for first, got, failed in parts:
        if failed and first == 0:
            return got
    return max(first + got for first, got, failed in parts if failed)


class MixtureStream(IterableDataset):
    """Infinite (or ``batches_per_epoch``-long) stream of collated training batches; see the module doc."""

    def __init__(
        self,
        sources: Sequence[StreamSource],
        batch_size: int,
        *,
        seed: int = 0,
        shuffle_buffer: int = 1000,
        bucket_factor: int = 0,
        group_batches: bool = False,
        pad_id: int = 1,
        text_image_size: int | None = None,
        batches_per_epoch: int | None = None,
        position: SharedPosition | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        num_workers: int = 0,
        max_consecutive_skips: int = 1000,
        segment_batches: int | None = 64,
    ):
        if not sources:
            raise ValueError("a stream needs at least one source")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        for src in sources:
            if not src.urls:
                raise ValueError(f"source {src.name!r} has no shards")
        self.sources = list(sources)
        self.batch_size = int(batch_size)
        self.seed = seed
        self.shuffle_buffer = max(1, int(shuffle_buffer))
        self.bucket_factor = int(bucket_factor or 0)
        self.group_batches = group_batches
        self.pad_id = pad_id
        self.text_image_size = text_image_size
        self.batches_per_epoch = batches_per_epoch
        self.position = position
        self.rank = rank
        self.world_size = world_size
        self.num_workers = num_workers
        self.max_consecutive_skips = max_consecutive_skips
        # batches per lane between reseeds: bounds the regeneration on resume; None/0 = one segment per epoch
        self.segment_batches = int(segment_batches) if segment_batches else None
        self.sampler = SourceSampler([s.ratio for s in self.sources])

    # ---- sizes -------------------------------------------------------------------------------------------
    def batches_per_worker(self, num_workers: int | None = None) -> int | None:
        if self.batches_per_epoch is None:
            return None
        workers = max(1, self.num_workers if num_workers is None else num_workers)
        return math.ceil(self.batches_per_epoch / workers)

    def __len__(self) -> int:
        """Batches per epoch on this rank (a multiple of the worker count); TypeError when the stream is endless."""
        per_worker = self.batches_per_worker()
        if per_worker is None:
            raise TypeError("endless stream (batches_per_epoch is None): train with max_steps")
        return per_worker * max(1, self.num_workers)

    # ---- the stream ----------------------------------------------------------------------------------------
    def _raw_samples(self, source: StreamSource, rng: random.Random, stats: DataStats) -> Iterator[dict]:
        """Endless raw samples of one source: shards resampled with replacement, then a shuffle buffer.

        Each shard visit reads the whole shard once, *rotated*: from a random sample to the end, then from the start
        up to that sample (when the shard's size is known; else from the start). Without the rotation every segment
        would begin at a shard's first samples, and with segments shorter than a shard (the shapes data: 64 batches
        of 16 against shards of 1,000-5,000) the samples near a shard's end would almost never be trained on.

        A shard that is cut short or partly unreadable still gives every sample before the damage: the second part
        of the rotation is read even when the first failed (a start past the cut gives nothing there), and once the
        readable count is known the later visits of the segment draw their start among the readable samples only,
        so they are used as evenly as any other shard's. A shard that gave nothing is not visited again in the
        segment; the source stops with a message only when none of its shards gives one.
        """
        buffer: list[dict] = []
        readable: dict[int, int] = {}  # shard index -> samples readable before its damage (found in this segment)
        dead: set[int] = set()  # shards that gave no sample in this segment
        empty_in_a_row = 0
        while True:
            pick = rng.randrange(len(source.urls))
            if pick in dead:
                continue
            url = source.urls[pick]
            size = source.sizes[pick] if source.sizes is not None else None
            size = readable.get(pick, size)
            start = rng.randrange(size) if size and size > 1 else 0
            read, error, counts = 0, None, []
            for first, stop in ((start, None), (0, start)) if start else ((0, None),):
                got = 0
                try:
                    for raw in iter_tar_samples(url, first, stop):
                        got += 1
                        read += 1
                        if self.shuffle_buffer <= 1:
                            yield raw
                            continue
                        buffer.append(raw)
                        if len(buffer) >= self.shuffle_buffer:
                            i = rng.randrange(len(buffer))
                            buffer[i], buffer[-1] = buffer[-1], buffer[i]
                            yield buffer.pop()
                except ShardReadError as exc:
                    error = exc  # the other part of the rotation may still be readable
                    counts.append((first, got, True))
                else:
                    counts.append((first, got, False))
            if error is not None:
                stats.skip("unreadable shard", str(error), url)
                readable[pick] = _readable_count(counts)
            elif size and read < size:  # cut at a member boundary: a shorter tar than its manifest says
                stats.skip("unreadable shard", f"{read} of its {size} samples readable", url)
                readable[pick] = read
            elif not read:
                stats.skip("empty shard", "the shard holds no sample", url)
            if read:
                empty_in_a_row = 0
            else:
                dead.add(pick)
                empty_in_a_row += 1
            if len(dead) == len(source.urls):
                raise RuntimeError(
                    f"source {source.name!r}: none of its {len(source.urls)} shard(s) gives a sample "
                    f"({empty_in_a_row} shards in a row gave no sample; last: {url}); see the "
                    "'unreadable shard' / 'empty shard' skips"
                )

    def examples(
        self, rank: int, lane: int, epoch: int, segment: int, stats: DataStats
    ) -> Iterator[tuple[Example, int]]:
        """Endless (example, source index) pairs of one segment of one (rank, lane) stream."""
        key = (self.seed, rank, lane, epoch, segment)
        mix_rng = random.Random(make_seed(*key, "mix"))
        example_rng = random.Random(make_seed(*key, "example"))
        readers = [
            self._raw_samples(src, random.Random(make_seed(*key, "source", i, src.name)), stats)
            for i, src in enumerate(self.sources)
        ]
        while True:
            i = self.sampler(mix_rng)
            source = self.sources[i]
            for _attempt in range(self.max_consecutive_skips + 1):
                result = build_example(source.task, next(readers[i]), train=True, rng=example_rng)
                if not isinstance(result, Skip):
                    break
                stats.skip_record(result)
            else:
                raise RuntimeError(
                    f"source {source.name!r}: {self.max_consecutive_skips} samples in a row were "
                    f"skipped (reasons so far: {stats.skipped}); check the shards and the task"
                )
            yield result, i

    def _segment(self, rank: int, lane: int, epoch: int, segment: int, stats: DataStats) -> Iterator[dict[str, Any]]:
        """Endless collated batches of one segment (without ``stats``; the caller attaches them)."""
        stream = self.examples(rank, lane, epoch, segment, stats)
        order_rng = random.Random(make_seed(self.seed, rank, lane, epoch, segment, "buckets"))
        pending: list[list[tuple[Example, int]]] = []
        while True:
            if self.bucket_factor > 1:
                if not pending:
                    pool = [next(stream) for _ in range(self.batch_size * self.bucket_factor)]
                    pool.sort(key=lambda item: length_key(item[0]))
                    pending = [pool[j : j + self.batch_size] for j in range(0, len(pool), self.batch_size)]
                    order_rng.shuffle(pending)
                chunk = pending.pop()
            else:
                chunk = [next(stream) for _ in range(self.batch_size)]
            examples = [ex for ex, _ in chunk]
            if self.group_batches:
                batch = collate_grouped(
                    examples, [self.sources[i].group for _, i in chunk], self.pad_id, self.text_image_size
                )
            else:
                batch = collate_examples(examples, self.pad_id, self.text_image_size)
            for _, i in chunk:
                stats.count(self.sources[i].name)
            del chunk, examples  # the next batch's examples must not be built while these are still held
            yield batch
            # dropped before the next collate: holding the yielded batch while its successor is allocated kept two
            # batch buffers alive, and every new one came fresh from the OS (page faults: ~10 % of the loop's CPU)
            del batch

    def batches(
        self, rank: int = 0, worker: int = 0, num_workers: int = 1, epoch: int = 0, skip: int = 0
    ) -> Iterator[dict[str, Any]]:
        """The collated batches DataLoader worker ``worker`` yields when the epoch's stream starts after ``skip``
        batches of the rank were consumed (0: the epoch's start); see the module doc."""
        workers = max(1, int(num_workers))
        lane, index = (skip + worker) % workers, (skip + worker) // workers
        limit = self.batches_per_worker(num_workers)
        per_segment = self.segment_batches or math.inf
        stats = DataStats()
        current: Iterator[dict[str, Any]] | None = None
        while limit is None or index < limit:
            segment, offset = divmod(index, per_segment) if per_segment != math.inf else (0, index)
            if current is None:
                current = self._segment(rank, lane, epoch, int(segment), stats)
                for _ in range(int(offset)):  # resumed mid-segment: regenerate and drop what was already trained on
                    next(current)
                    stats.take()
            batch = next(current)
            batch["stats"] = stats.take()
            yield batch
            del batch  # see _segment
            index += 1
            if per_segment != math.inf and index % per_segment == 0:
                current = None

    def __iter__(self) -> Iterator[dict[str, Any]]:
        rank, world = dist_info()
        rank = rank if self.rank is None else self.rank
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        epoch, skip = self.position.get() if self.position is not None else (0, 0)
        return self.batches(rank, worker, num_workers, epoch, skip)


class StreamLoader(DataLoader):
    """DataLoader that writes the current (epoch, batches of the epoch already consumed) into the stream's
    ``SharedPosition`` each time an iterator is created, before (persistent) workers restart their streams."""

    def __init__(self, dataset, *args, position_fn: Callable[[], tuple[int, int]] | None = None, **kwargs):
        super().__init__(dataset, *args, **kwargs)
        self.position_fn = position_fn

    def __iter__(self):
        position = getattr(self.dataset, "position", None)
        if self.position_fn is not None and position is not None:
            position.set(*self.position_fn())
        return super().__iter__()

    # Lightning saves/restores the state of "stateful" train loaders (and warns on mid-epoch resume otherwise).
    # The stream needs no state beyond the trainer's loop progress (epoch, batches done in it: the position_fn reads
    # them after Lightning restored them), so the state only records what the stream depends on, and a seed
    # mismatch on resume is reported.
    def state_dict(self) -> dict[str, Any]:
        position = getattr(self.dataset, "position", None)
        epoch, step = position.get() if position is not None else (0, 0)
        return {"seed": getattr(self.dataset, "seed", None), "stream_epoch": epoch, "stream_skip": step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        seed = getattr(self.dataset, "seed", None)
        if state.get("seed") != seed:
            import logging

            logging.getLogger(__name__).warning(
                "resuming a stream with seed %s, the checkpoint's used seed %s", seed, state.get("seed")
            )
