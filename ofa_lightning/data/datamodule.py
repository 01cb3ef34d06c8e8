"""``OFADataModule``: the Lightning face of the pipeline, built from ``conf/data`` + ``conf/mixture``.

Train: one ``MixtureStream`` per rank (endless resampled shards, per-example mixing, batches collated in workers),
served by a ``StreamLoader`` that pushes (epoch, global step) into persistent workers. Validation / test: one
loader per mixture source that has an eval split, in mixture order (``val_names`` / ``test_names`` give the source
of each ``dataloader_idx``), each covering its samples exactly once across ranks (see ``evaluation``).

Counters (skips by reason, realised mix) arrive inside every batch as ``batch["stats"]``; ``DataStatsCallback``
accumulates and logs them (``data/train/...``, ``data/val/...``), or a LightningModule can read them itself.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
from torch.utils.data import DataLoader

from ofa_lightning.data.evaluation import EvalCollate, EvalDataset, PaddedDistributedSampler, ShardSplitStream
from ofa_lightning.data.mixture import MixtureSource, _plain, parse_mixture
from ofa_lightning.data.samples import DataStats
from ofa_lightning.data.shards import resolve_shards
from ofa_lightning.data.stream import MixtureStream, SharedPosition, StreamLoader, StreamSource, dist_info
from ofa_lightning.tasks.base import Task

__all__ = ["OFADataModule", "DataStatsCallback", "EVAL_DEFAULTS"]

log = logging.getLogger(__name__)

# Lightning warns that an IterableDataset's __len__ may be wrong with several workers; MixtureStream sizes each
# worker's share exactly (ceil(batches_per_epoch / workers) per worker), so the warning does not apply here.
warnings.filterwarnings("ignore", message=r"Your `IterableDataset` has `__len__` defined")

EVAL_DEFAULTS: dict[str, Any] = {
    "split": "val",  # split read for validation (per-source override: eval_split)
    "test_split": "test",  # split read by trainer.test (per-source override: test_split)
    "micro_batch_size": None,  # per rank; None = the training micro_batch_size
    "num_workers": None,  # None = the training num_workers
    "mode": "map",  # map (random access + padded DistributedSampler) | split (explicit shard split)
    "max_samples": None,  # map mode: first N samples of each eval split (quick validation); None = all
}


class OFADataModule(pl.LightningDataModule):
    """Mixture training stream + exactly-once evaluation loaders.

    Args:
        mixture: mapping ``name -> {task, shards, ratio, split, eval_shards, eval_split, test_split, options}``
            or a list of such entries (see ``ofa_lightning.data.mixture``).
        micro_batch_size: examples per batch **per rank** (global batch = this x world size x grad accumulation).
        num_workers: DataLoader workers per rank for training.
        seed: base seed of every stream; the batches of a rank are a pure function of (seed, rank, epoch, batch
            index in the epoch), so a run resumed mid-epoch reads the batches an uninterrupted run would have read
            (same ``num_workers`` and world size; see ``ofa_lightning.data.stream``).
        segment_batches: batches per worker between stream reseeds; bounds what a resume regenerates and drops.
        shuffle_buffer: raw samples buffered per source per worker for shuffling (1 = off).
        bucket_factor: > 1 sorts pools of ``bucket_factor x micro_batch_size`` examples by length into batches
            (less padding); 0/1 = off.
        group_batches: collate OFA's two pre-training groups apart (``batch["groups"]``).
        text_image_size: size of the zero image given to text-only rows when no row of the batch has an image;
            None = ``patch_images`` is None for such batches.
        batches_per_epoch: batches per rank that make a Lightning "epoch" (eval/checkpoint cadence); None = endless
            stream (then use ``max_steps``). Rounded up to a multiple of ``num_workers``.
        persistent_workers, pin_memory, prefetch_factor: passed to the training DataLoader; ``pin_memory`` only
            takes effect when the Trainer runs on a GPU. Worker counts (training and evaluation) are kept within the
            cores this process may use, shared by the ranks of the machine (``os.sched_getaffinity``), with a log
            line when one is lowered.
        multiprocessing_context: DataLoader start method ("fork", "spawn", "forkserver"; None = default); the
            shared epoch/step Values are created in the same context.
        eval: evaluation settings, keys as in ``EVAL_DEFAULTS``.
        shards_root: folder that relative shard specs of the mixture are resolved against (e.g. the recipes' out
            root holding ``coco_caption/``, ``vqav2/`` ...); absolute paths, URLs and ``pipe:`` specs are kept.
        task_options: options given to every task built from the registry (per-source ``options`` win), e.g. one
            ``image_size`` for all tasks so mixed batches stay rectangular.
        tokenizer: ``OFATokenizer`` used to build tasks from the registry (and for ``pad_id``).
        tasks: ready ``Task`` objects by source name or task name (they take precedence over the registry), e.g. the
            LightningModule's own tasks, or test doubles.
    """

    def __init__(
        self,
        mixture: Any,
        micro_batch_size: int = 8,
        num_workers: int = 2,
        seed: int = 0,
        shuffle_buffer: int = 1000,
        bucket_factor: int = 0,
        group_batches: bool = False,
        text_image_size: int | None = None,
        batches_per_epoch: int | None = 1000,
        persistent_workers: bool = True,
        pin_memory: bool = False,
        prefetch_factor: int | None = None,
        multiprocessing_context: str | None = None,
        eval: Mapping[str, Any] | None = None,
        shards_root: str | None = None,
        task_options: Mapping[str, Any] | None = None,
        tokenizer: Any = None,
        tasks: Mapping[str, Task] | None = None,
        pad_id: int | None = None,
        segment_batches: int | None = 64,
    ):
        super().__init__()
        self.sources: list[MixtureSource] = parse_mixture(mixture)
        if int(micro_batch_size) < 1:
            raise ValueError(f"micro_batch_size must be >= 1, got {micro_batch_size}")
        self.micro_batch_size = int(micro_batch_size)
        self.num_workers = int(num_workers)
        self.seed = int(seed)
        self.segment_batches = segment_batches
        self.shuffle_buffer = int(shuffle_buffer)
        self.bucket_factor = int(bucket_factor or 0)
        self.group_batches = bool(group_batches)
        self.text_image_size = text_image_size
        self.batches_per_epoch = batches_per_epoch
        self.persistent_workers = bool(persistent_workers)
        self.pin_memory = bool(pin_memory)
        self.prefetch_factor = prefetch_factor
        self.multiprocessing_context = multiprocessing_context
        eval_cfg = dict(EVAL_DEFAULTS)
        unknown = set(_plain(eval) or {}) - set(EVAL_DEFAULTS)
        if unknown:
            raise ValueError(f"unknown eval settings {sorted(unknown)} (known: {sorted(EVAL_DEFAULTS)})")
        eval_cfg.update(_plain(eval) or {})
        if eval_cfg["mode"] not in ("map", "split"):
            raise ValueError(f"eval.mode must be 'map' or 'split', got {eval_cfg['mode']!r}")
        self.eval_cfg = eval_cfg
        self.shards_root = None if shards_root in (None, "") else str(shards_root)
        self.task_options = dict(_plain(task_options) or {})
        self.tokenizer = tokenizer
        self.pad_id = pad_id if pad_id is not None else getattr(tokenizer, "pad_id", 1)
        self._given_tasks = dict(tasks or {})
        self.tasks: dict[str, Task] = {}
        self.train_urls: dict[str, list[str]] = {}
        self.val_names: list[str] = []
        self.test_names: list[str] = []
        self._eval_urls: dict[str, dict[str, list[str]]] = {"val": {}, "test": {}}
        self._position: SharedPosition | None = None
        self._manual_position = (0, 0)
        self.train_dataset: MixtureStream | None = None
        self._lowered: set[str] = set()  # worker settings already reported as lowered

    # ---- set-up ---------------------------------------------------------------------------------------------
    def _task_for(self, source: MixtureSource) -> Task:
        for key in (source.name, source.task):
            if key in self._given_tasks:
                return self._given_tasks[key]
        if self.tokenizer is None:
            raise ValueError(
                f"source {source.name!r}: no Task object given for {source.task!r} and no tokenizer to "
                f"build one from the registry; pass tokenizer= (or tasks=) to OFADataModule"
            )
        try:
            from ofa_lightning.tasks import build_task
        except ImportError as exc:  # the registry is another package's job
            raise RuntimeError(
                f"source {source.name!r}: no Task given and ofa_lightning.tasks.build_task is not importable ({exc})"
            ) from exc
        return build_task(source.task, self.tokenizer, **{**self.task_options, **source.options})

    def _train_sizes(self, name: str) -> list[int | None]:
        """Sample count per training shard of source ``name`` from the manifests (None where none says), for the
        stream's rotated shard reads; shards are not opened to count them."""
        from ofa_lightning.data.shards import shard_sizes

        sizes = shard_sizes(self.train_urls[name], count_missing=False)
        return [sizes.get(url) for url in self.train_urls[name]]

    def _rooted(self, spec: Any) -> Any:
        """Relative shard specs are taken relative to ``shards_root``."""
        if isinstance(spec, (list, tuple)):
            return [self._rooted(item) for item in spec]
        spec = str(spec)
        if self.shards_root is None or os.path.isabs(spec) or "://" in spec or spec.startswith("pipe:"):
            return spec
        return os.path.join(self.shards_root, spec)

    def _rank_world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            return trainer.global_rank, trainer.world_size
        return dist_info()

    def setup(self, stage: str | None = None) -> None:
        for source in self.sources:
            if source.name not in self.tasks:
                self.tasks[source.name] = self._task_for(source)
        if stage in (None, "fit") and not self.train_urls:
            self.train_urls = {s.name: resolve_shards(self._rooted(s.shards), s.split) for s in self.sources}
        for which, stages, default in (
            ("val", (None, "fit", "validate"), self.eval_cfg["split"]),
            ("test", (None, "test"), self.eval_cfg["test_split"]),
        ):
            if stage not in stages or self._eval_urls[which]:
                continue
            names = []
            for source in self.sources:
                split = source.resolved_eval_split(default, which)
                if split:
                    self._eval_urls[which][source.name] = resolve_shards(self._rooted(source.eval_spec), split)
                    names.append(source.name)
            if which == "val":
                self.val_names = names
            else:
                self.test_names = names

    # ---- training -------------------------------------------------------------------------------------------
    def set_position(self, epoch: int, skip: int = 0) -> None:
        """Where the next training stream starts (epoch, batches of it already consumed on this rank), for use
        without a Trainer (with one, it is read from its loop progress)."""
        self._manual_position = (int(epoch), int(skip))
        if self._position is not None:
            self._position.set(epoch, skip)

    def set_epoch(self, epoch: int, skip: int | None = None) -> None:
        """``set_position`` with the skip unchanged unless given (open_clip-style name)."""
        self.set_position(epoch, self._manual_position[1] if skip is None else skip)

    def current_position(self) -> tuple[int, int]:
        """(epoch, training batches of it this rank has processed): 0 at an epoch's start; after a resume, what the
        checkpoint's loop state says (Lightning restores it before creating the iterator)."""
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            try:
                done = int(trainer.fit_loop.epoch_loop.batch_progress.current.processed)
            except AttributeError:
                done = 0
            epoch_len = self._epoch_length(trainer)
            if done and epoch_len is not None and done >= epoch_len:
                # resumed from a checkpoint written on the epoch's last batch: Lightning goes on with the next epoch
                # on the iterator created now
                return trainer.current_epoch + 1, 0
            return trainer.current_epoch, done
        return self._manual_position

    def _epoch_length(self, trainer: Any) -> int | None:
        """Training batches per epoch on this rank as Lightning counts them (None: endless)."""
        if self.train_dataset is None or self.train_dataset.batches_per_epoch is None:
            return None
        length = len(self.train_dataset)
        limit = getattr(trainer, "limit_train_batches", None)
        if isinstance(limit, int) and not isinstance(limit, bool):
            return min(length, limit)
        if isinstance(limit, float) and limit < 1.0:
            return int(length * limit)
        return length

    def train_dataloader(self) -> DataLoader:
        if not self.train_urls:
            self.setup("fit")
        rank, world = self._rank_world()
        if self._position is None:
            self._position = SharedPosition(self.multiprocessing_context)
        workers = self._usable_workers(self.num_workers, "data.num_workers")
        sources = [
            StreamSource(s.name, self.tasks[s.name], self.train_urls[s.name], s.ratio, sizes=self._train_sizes(s.name))
            for s in self.sources
        ]
        self.train_dataset = MixtureStream(
            sources,
            self.micro_batch_size,
            seed=self.seed,
            shuffle_buffer=self.shuffle_buffer,
            bucket_factor=self.bucket_factor,
            group_batches=self.group_batches,
            pad_id=self.pad_id,
            text_image_size=self.text_image_size,
            batches_per_epoch=self.batches_per_epoch,
            position=self._position,
            rank=rank,
            world_size=world,
            num_workers=workers,
            segment_batches=self.segment_batches,
        )
        return StreamLoader(
            self.train_dataset,
            batch_size=None,
            num_workers=workers,
            pin_memory=self._pin_memory(),
            persistent_workers=self.persistent_workers and workers > 0,
            prefetch_factor=self.prefetch_factor if workers > 0 else None,
            multiprocessing_context=self.multiprocessing_context if workers > 0 else None,
            position_fn=self.current_position,
        )

    def _pin_memory(self) -> bool:
        """``pin_memory`` when the batches go to a GPU (pinned host memory is of no use to a CPU run)."""
        if not self.pin_memory:
            return False
        trainer = getattr(self, "trainer", None)
        try:
            return trainer.strategy.root_device.type == "cuda"
        except AttributeError:  # no Trainer attached
            import torch

            return torch.cuda.is_available()

    def _usable_workers(self, requested: int, setting: str) -> int:
        """``requested`` workers, at most the cores this process may use divided by the ranks on this machine."""
        if requested <= 0:
            return 0
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        ranks = int(
            os.environ.get("LOCAL_WORLD_SIZE") or getattr(getattr(self, "trainer", None), "num_devices", 1) or 1
        )
        usable = max(1, cores // max(1, ranks))
        if requested > usable and setting not in self._lowered:
            self._lowered.add(setting)
            # info, not a warning: the default (4) is meant for cluster nodes, and adapting to a laptop is expected
            log.info(
                "%s=%d but %d core(s) per rank are available: using %d workers", setting, requested, usable, usable
            )
        return min(requested, usable)

    # ---- evaluation -----------------------------------------------------------------------------------------
    def eval_dataloader(self, name: str, which: str = "val") -> DataLoader:
        """The exactly-once loader of one source's eval split on this rank."""
        urls = self._eval_urls[which][name]
        rank, world = self._rank_world()
        batch_size = int(self.eval_cfg["micro_batch_size"] or self.micro_batch_size)
        workers = self.eval_cfg["num_workers"]
        workers = self._usable_workers(self.num_workers if workers is None else int(workers), "data.eval.num_workers")
        task = self.tasks[name]
        context = self.multiprocessing_context if workers > 0 else None
        if self.eval_cfg["mode"] == "split":
            dataset = ShardSplitStream(
                name,
                task,
                urls,
                batch_size,
                rank=rank,
                world_size=world,
                num_workers=workers,
                seed=self.seed,
                pad_id=self.pad_id,
                text_image_size=self.text_image_size,
            )
            return DataLoader(dataset, batch_size=None, num_workers=workers, multiprocessing_context=context)
        dataset = EvalDataset(name, task, urls, seed=self.seed, max_samples=self.eval_cfg["max_samples"])
        sampler = PaddedDistributedSampler(dataset, world, rank) if world > 1 else None
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            shuffle=False,
            num_workers=workers,
            collate_fn=EvalCollate(name, self.pad_id, self.text_image_size),
            pin_memory=self._pin_memory(),
            multiprocessing_context=context,
        )

    def val_dataloader(self) -> list[DataLoader]:
        if not self.val_names:
            self.setup("validate")
        return [self.eval_dataloader(name, "val") for name in self.val_names]

    def test_dataloader(self) -> list[DataLoader]:
        if not self.test_names:
            self.setup("test")
        return [self.eval_dataloader(name, "test") for name in self.test_names]

    # ---- checkpoint -----------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "mixture": {s.name: s.ratio for s in self.sources}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("seed") != self.seed:
            log.warning(
                "resuming with data seed %s, the checkpoint was written with seed %s", self.seed, state.get("seed")
            )
        mixture = {s.name: s.ratio for s in self.sources}
        if state.get("mixture") not in (None, mixture):
            log.warning("resuming with mixture %s, the checkpoint was written with %s", mixture, state["mixture"])


class DataStatsCallback(pl.Callback):
    """Accumulates ``batch["stats"]`` and logs them: ``data/train/skipped/<reason>``, ``data/train/mix/<source>``
    (realised fraction), ``data/train/mix_count/<source>`` every ``log_every_n_steps``; validation counters at the
    end of each validation run (``data/val/...``). Rank-local counts, logged by rank 0 (no collective, so no hang
    when ranks saw different skip reasons). Train counters survive resume (callback state in the checkpoint)."""

    def __init__(self, log_every_n_steps: int = 50):
        self.log_every_n_steps = max(1, int(log_every_n_steps))
        self.train = DataStats()
        self.val = DataStats()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if isinstance(batch, dict):
            self.train.update(batch.get("stats"))
        if trainer.global_step % self.log_every_n_steps == 0:
            pl_module.log_dict(self.train.log_dict("data/train/"), on_step=True, on_epoch=False, rank_zero_only=True)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        if isinstance(batch, dict):
            self.val.update(batch.get("stats"))

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        stats = {k: v for k, v in self.val.log_dict("data/val/").items() if "/mix/" not in k}
        stats["data/val/padded"] = float(self.val.padded)
        pl_module.log_dict(stats, on_step=False, on_epoch=True, rank_zero_only=True)
        self.val = DataStats()

    def state_dict(self) -> dict[str, Any]:
        return {"train": self.train.as_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.train = DataStats().update(state_dict.get("train"))
