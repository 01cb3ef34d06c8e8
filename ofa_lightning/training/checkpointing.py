"""Checkpoints that survive kills and full disks, load without running pickled code, and resume exactly.

* :class:`AtomicCheckpointIO` (a Lightning ``CheckpointIO`` plugin, given to the Trainer by ``run.train``): a
  checkpoint is serialised into ``.<name>.tmp-<pid>-<random>`` in the destination folder, flushed and fsync'ed,
  then ``os.replace`` d onto its name (atomic on POSIX) and the folder fsync'ed. A kill or an error mid-write
  (``ENOSPC``, a quota, an I/O error) leaves the previous file with that name untouched, so ``last.ckpt`` is always
  a complete checkpoint; the error is re-raised as :class:`CheckpointWriteError` naming the file, the cause and the
  checkpoint that stays usable. Temporary files of killed writes are removed by :func:`remove_stale_temporaries`
  (called when a run starts). Remote (fsspec) paths keep Lightning's own transactional write. Loading uses
  ``torch.load(weights_only=True)``: our checkpoints hold only tensors, containers and scalars.
  Every checkpoint gets a sha256 sidecar (``<file>.sha256.json``, ``ofa_lightning.weights.integrity``),
  verified before it is loaded; with ``keep_last`` = K (``checkpoint.keep_last``, 2) the file a write replaces is
  kept as ``last-step<N>.ckpt`` and the K - 1 newest of those stay, so a damaged ``last.ckpt`` has a fallback.
* :class:`LastCheckpoint`: ``ModelCheckpoint`` whose ``last.ckpt`` also gets the final step of a run, and is
  ``last.ckpt`` whatever the dirpath was when the checkpoint it resumed from was written.
* :class:`StepRNG` (callback): re-seeds torch / python / numpy from ``(seed, rank, global step)`` before every
  training batch, so dropout, drop-path and patch sampling of step ``k`` are the same in an uninterrupted run and in
  one resumed from a checkpoint (Lightning does not store RNG states, and the resumed process consumes its RNG in a
  different order while it sets up).
* :class:`StepLog` (callback, off by default; ``tracking.step_log.enabled=true``): one JSON line per optimiser step
  and rank with the global step, the sample ids of the batch and the loss, appended and flushed at once (a SIGKILL
  loses nothing already written). The kill-and-resume tests compare these files between runs.
"""

from __future__ import annotations

import errno
import glob
import json
import logging
import os
import random
import secrets
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.plugins.io import TorchCheckpointIO

from ofa_lightning.weights.integrity import (
    DamagedCheckpointError,
    file_sha256,
    read_sidecar,
    sidecar_path,
    verify_checkpoint,
    write_checksum,
)

__all__ = [
    "AtomicCheckpointIO",
    "CheckpointWriteError",
    "LastCheckpoint",
    "StepRNG",
    "StepLog",
    "read_step_log",
    "ReplayedSteps",
    "remove_stale_temporaries",
    "atomic_torch_save",
    "TMP_MARK",
]

log = logging.getLogger(__name__)

TMP_MARK = ".tmp-"


class CheckpointWriteError(OSError):
    """A checkpoint could not be written; the previous file of that name (if any) is untouched."""

    def __str__(self) -> str:  # the message alone (OSError would prefix "[Errno 28] ")
        return str(self.strerror)


def _is_local(path: str | os.PathLike) -> bool:
    text = str(path)
    return "://" not in text or text.startswith("file://")


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _describe(exc: BaseException, folder: Path | None = None) -> str:
    from ofa_lightning.errors import disk_full_message

    full = disk_full_message(exc, folder)
    return full if full is not None else f"{type(exc).__name__}: {exc}"


def saved_step(path: Path) -> int | None:
    """The global step of the checkpoint at ``path``: its sidecar's, else read from the file (None: unreadable)."""
    record = read_sidecar(path)
    if record is not None and record.get("global_step") is not None:
        return int(record["global_step"])
    try:
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - damaged or not a checkpoint: no step
        return None
    step = data.get("global_step") if isinstance(data, dict) else None
    return int(step) if isinstance(step, int) else None


def kept_name(target: Path, step: int) -> Path:
    """Where an older copy of ``target`` (``last.ckpt``) is kept: ``last-step00000120.ckpt``."""
    return target.with_name(f"{target.stem}-step{step:08d}{target.suffix}")


def _kept_copies(target: Path) -> list[tuple[int, Path]]:
    prefix = f"{target.stem}-step"
    out = []
    for path in target.parent.glob(f"{glob.escape(prefix)}*{target.suffix}"):
        digits = path.name[len(prefix) : -len(target.suffix) or None]
        if digits.isdigit():
            out.append((int(digits), path))
    return sorted(out, reverse=True)


def _move_with_sidecar(src: Path, dst: Path) -> None:
    os.replace(src, dst)
    if sidecar_path(src).exists():
        os.replace(sidecar_path(src), sidecar_path(dst))
    else:
        sidecar_path(dst).unlink(missing_ok=True)


def _remove_with_sidecar(path: Path) -> None:
    path.unlink(missing_ok=True)
    sidecar_path(path).unlink(missing_ok=True)


def _keep_previous(target: Path, keep_last: int) -> None:
    """Before ``target`` is replaced: keep it as ``<stem>-step<N><suffix>`` (a rename, no copy) unless it is
    damaged; then drop the kept copies beyond the newest ``keep_last - 1``."""
    if target.exists():
        step = saved_step(target)
        try:
            verify_checkpoint(target)
        except DamagedCheckpointError as exc:
            log.warning("not keeping the previous %s: %s", target.name, exc)
            step = None
        if step is not None:
            _move_with_sidecar(target, kept_name(target, step))
    for _, path in _kept_copies(target)[max(0, keep_last - 1) :]:
        _remove_with_sidecar(path)


def atomic_torch_save(obj: Any, path: str | os.PathLike, keep_last: int = 1) -> None:
    """``torch.save`` to a temporary file beside ``path``, fsync, then rename onto ``path`` and write its checksum
    sidecar (``ofa_lightning.weights.integrity``); on any failure the temporary file is removed, ``path``
    is left as it was and :class:`CheckpointWriteError` is raised.

    ``keep_last`` > 1: the file ``path`` held is kept as ``<stem>-step<N><suffix>`` (N: its global step) and the
    ``keep_last - 1`` newest such copies stay; ``resume=auto`` falls back to them when the newest is damaged."""
    target = Path(str(path)[len("file://") :] if str(path).startswith("file://") else path)
    folder = target.parent
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{target.name}{TMP_MARK}{os.getpid()}-{secrets.token_hex(4)}"
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        sha256 = file_sha256(tmp)
        if keep_last > 1:
            _keep_previous(target, keep_last)
        os.replace(tmp, target)
        _fsync_dir(folder)
        step = obj.get("global_step") if isinstance(obj, dict) else None
        write_checksum(target, global_step=step if isinstance(step, int) else None, sha256=sha256)
    except BaseException as exc:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        except OSError as cleanup:  # pragma: no cover
            log.warning("could not remove the partial checkpoint %s: %s", tmp, cleanup)
        if not isinstance(exc, Exception):  # KeyboardInterrupt, SystemExit: not a write error
            raise
        kept = f"the previous {target.name} is untouched" if target.exists() else f"no {target.name} existed before"
        raise CheckpointWriteError(
            getattr(exc, "errno", None) or errno.EIO,
            f"could not write checkpoint {target}: {_describe(exc, folder)}; nothing was replaced ({kept})",
        ) from exc
    _fsync_dir(folder)


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Removes ``.<name>.tmp-*`` files that killed writes left in ``folder``; returns what was removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for path in folder.glob(f".*{TMP_MARK}*"):
        try:
            path.unlink()
            removed.append(path)
        except OSError as exc:  # pragma: no cover
            log.warning("could not remove %s: %s", path, exc)
    if removed:
        log.info("removed %d partial checkpoint file(s) of an interrupted write in %s", len(removed), folder)
    return removed


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning ``CheckpointIO``: atomic local writes with a checksum sidecar, ``keep_last`` copies of each name
    (see the module doc); loads verify the checksum first and use ``weights_only=True``."""

    def __init__(self, keep_last: int = 2):
        super().__init__()
        if int(keep_last) < 1:
            raise ValueError(f"checkpoint.keep_last must be >= 1, got {keep_last}")
        self.keep_last = int(keep_last)

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__}.save_checkpoint takes no storage_options, got {storage_options!r}")
        if not _is_local(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        atomic_torch_save(checkpoint, path, keep_last=self.keep_last)

    def load_checkpoint(
        self, path: Any, map_location: Any = lambda storage, loc: storage, weights_only: bool | None = None
    ) -> dict[str, Any]:
        if _is_local(path):
            verify_checkpoint(str(path)[len("file://") :] if str(path).startswith("file://") else path)
        return super().load_checkpoint(
            path, map_location=map_location, weights_only=True if weights_only is None else weights_only
        )


class LastCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` that also writes ``last`` when training ends between two cadence steps, so ``last.ckpt``
    always holds the final weights (Lightning only does so when nothing was saved during the fit, e.g. a run
    resumed late that ends before its next cadence step)."""

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if (
            self.save_last
            and not trainer.fast_dev_run
            and not trainer.sanity_checking
            and trainer.global_step != self._last_global_step_saved
        ):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
            return
        super().on_train_end(trainer, pl_module)

    def __init__(self, *args: Any, **kwargs: Any):
        # always ``last.ckpt``: Lightning would write ``last-v1.ckpt`` beside a ``last.ckpt`` it does not know (a run
        # dir that was moved or copied), and the stale ``last.ckpt`` would shadow it
        kwargs.setdefault("enable_version_counter", False)
        super().__init__(*args, **kwargs)


class StepRNG(pl.Callback):
    """Seeds torch (all devices), ``random`` and numpy from ``(seed, rank, global_step)`` before each training
    batch: the randomness of step ``k`` no longer depends on what the process did before (e.g. resuming)."""

    def __init__(self, seed: int = 0):
        self.seed = int(seed)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        from ofa_lightning.data.stream import make_seed

        seed = make_seed(
            self.seed,
            trainer.global_rank,
            trainer.global_step,
            batch_idx % max(1, trainer.accumulate_grad_batches),
            "step-rng",
        )
        torch.manual_seed(seed)
        random.seed(seed)
        try:
            import numpy as np

            np.random.seed(seed % (2**32))
        except ImportError:  # pragma: no cover
            pass


class StepLog(pl.Callback):
    """Appends ``{"batch", "step", "rank", "epoch", "ids", "tasks", "loss"}`` per training batch to
    ``<path>/steps-rank<r>.jsonl`` (flushed per line)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._file = None

    def _open(self, rank: int):
        if self._file is None:
            self.path.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path / f"steps-rank{rank}.jsonl", "a", encoding="utf-8")
        return self._file

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        record = {
            "batch": int(trainer.fit_loop.epoch_loop.batch_progress.total.processed),
            "step": int(trainer.global_step),
            "rank": int(trainer.global_rank),
            "epoch": int(trainer.current_epoch),
            "ids": list(batch.get("ids", [])) if isinstance(batch, dict) else [],
            "tasks": list(batch.get("tasks") or []) if isinstance(batch, dict) else [],
            "loss": float(loss.detach()) if isinstance(loss, torch.Tensor) else None,
            "skipped_nonfinite": int(getattr(pl_module, "skipped_nonfinite", 0)),
        }
        f = self._open(trainer.global_rank)
        f.write(json.dumps(record) + "\n")
        f.flush()

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class ReplayedSteps(pl.Callback):
    """After a resume, the steps between the checkpoint and the kill are trained again: their rows are dropped from
    ``metrics.csv`` / ``metrics.jsonl`` (the replayed rows replace them), and the W&B run, which already holds
    them, is not sent the same (step, key) twice (one value per step). Runs when training starts, after Lightning
    restored the checkpoint; rank 0 writes."""

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.ckpt_path:
            return
        from ofa_lightning.training.run_files import MetricsFileLogger
        from ofa_lightning.training.tracking import logger_step

        step = logger_step(trainer)
        files = next((lg for lg in trainer.loggers if isinstance(lg, MetricsFileLogger)), None)
        jsonl = files.jsonl_path if files is not None else None
        if jsonl is None and trainer.loggers:
            jsonl = Path(trainer.loggers[0].save_dir or ".") / MetricsFileLogger.JSONL_NAME
        logged = _rows_after(jsonl, step) if jsonl is not None else {}
        for lg in trainer.loggers:
            if hasattr(lg, "already_logged"):
                lg.already_logged = {s: set(keys) for s, keys in logged.items()}
        if files is not None and trainer.global_rank == 0 and logged:
            _drop_rows_after(files.jsonl_path, files.csv_path, step)
            log.info("resume: dropped the metric rows of steps after %d from %s (they are trained again)", step, jsonl)


def _rows_after(jsonl: Path, step: int) -> dict[int, set[str]]:
    """step -> keys that ``metrics.jsonl`` holds for the steps after ``step``."""
    out: dict[int, set[str]] = {}
    if not jsonl.is_file():
        return out
    for line in jsonl.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row.get("step"), int) and row["step"] > step:
            out.setdefault(row["step"], set()).update(k for k in row if k not in ("step", "time"))
    return out


def _rewrite(path: Path, keep: Any) -> None:
    if not path.is_file():
        return
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    tmp = path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}")
    tmp.write_text("".join(line for i, line in enumerate(lines) if keep(i, line)), encoding="utf-8")
    os.replace(tmp, path)


def _drop_rows_after(jsonl: Path, csv_path: Path, step: int) -> None:
    import csv

    def keep_json(_: int, line: str) -> bool:
        try:
            row_step = json.loads(line).get("step")
        except ValueError:
            return False  # a line torn by the kill
        return not (isinstance(row_step, int) and row_step > step)

    def keep_csv(i: int, line: str) -> bool:
        if i == 0:
            return True  # the header
        cells = next(csv.reader([line]), [])
        return not (cells and cells[0].isdigit() and int(cells[0]) > step)

    _rewrite(jsonl, keep_json)
    _rewrite(csv_path, keep_csv)


def read_step_log(path: str | os.PathLike, rank: int = 0) -> list[dict[str, Any]]:
    """The records of a :class:`StepLog` file by batch number; a batch logged twice (re-run after a resume) keeps
    the last record."""
    by_step: dict[int, dict[str, Any]] = {}
    file = Path(path) / f"steps-rank{rank}.jsonl"
    for line in file.read_text(encoding="utf-8").splitlines():
        if line.strip():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a kill
                continue
            by_step[record["batch"]] = record
    return [by_step[k] for k in sorted(by_step)]
