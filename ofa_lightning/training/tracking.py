"""W&B set-up that survives Hydra multiruns, resumes and offline machines, plus a reader for what a run logged.

* :func:`make_wandb_logger` — a ``WandbLogger`` whose run id lives in ``<run_dir>/wandb_id`` (a resumed job reuses
  it), whose files go under ``<run_dir>/wandb/``, whose config is the resolved config (also in
  ``config_resolved.yaml``) and whose mode is passed to ``wandb.init`` (never to ``os.environ``). A multirun job is
  named by its swept overrides (``mixture=caption_only,seed=1``). What W&B stages for logged tables (the full
  table, its images) stays inside the run's ``[offline-]run-<ts>-<id>/`` folder: that folder is what
  ``wandb sync`` needs.
* :func:`finish_wandb` — ends the live run; call it at the end of every job, or the next job of a sequential
  multirun logs into this one's run (ashleve/lightning-hydra-template#289).
* :class:`~.run_files.MetricsFileLogger` (every logged scalar in ``metrics.csv`` / ``metrics.jsonl``) and
  :func:`~.wandb_reader.read_offline_run` (what a run logged, from the files it writes in the open) are
  re-exported here.
"""

from __future__ import annotations

import json
import logging
import netrc
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pytorch_lightning.loggers.logger import rank_zero_experiment
from pytorch_lightning.utilities import rank_zero_only

from .run_files import (
    CONFIG_FILE,
    RUN_ID_FILE,
    MetricsFileLogger,
    _new_run_id,
    _plain,
    dump_config,
    read_metrics_csv,
    read_metrics_jsonl,
    read_run_id,
    write_run_id,
)
from .wandb_reader import find_wandb_runs, read_offline_run

__all__ = [
    "make_wandb_logger",
    "sweep_job_name",
    "resolve_mode",
    "has_wandb_credentials",
    "read_run_id",
    "write_run_id",
    "dump_config",
    "finish_wandb",
    "logger_step",
    "MetricsFileLogger",
    "read_metrics_csv",
    "read_metrics_jsonl",
    "find_wandb_runs",
    "read_offline_run",
    "CONFIG_FILE",
    "RUN_ID_FILE",
]

log = logging.getLogger(__name__)

MODES = ("offline", "online", "auto", "disabled")


# ------------------------------------------------------------------------------------------------ mode and id
def has_wandb_credentials() -> bool:
    """``WANDB_API_KEY`` is set, or a netrc entry exists for the W&B host (what ``wandb login`` writes). No network."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    path = os.environ.get("NETRC") or os.path.join(os.path.expanduser("~"), ".netrc")
    try:
        auth = netrc.netrc(path).authenticators(host)
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(auth and auth[2])


def resolve_mode(mode: str | None) -> str:
    """``offline`` | ``online`` | ``disabled`` for a requested mode. ``auto``: ``WANDB_MODE`` if it says offline or
    disabled, else online when credentials exist (:func:`has_wandb_credentials`), else offline. ``dryrun`` is
    offline; None is offline."""
    mode = (mode or "offline").strip().lower().replace("dryrun", "offline")
    if mode not in MODES:
        raise ValueError(f"W&B mode must be one of {MODES}, got {mode!r}")
    if mode != "auto":
        return mode
    env = os.environ.get("WANDB_MODE", "").strip().lower().replace("dryrun", "offline")
    if env in ("offline", "disabled"):
        return env
    return "online" if has_wandb_credentials() else "offline"


def logger_step(trainer: Any) -> int:
    """The step Lightning itself passes to its loggers (``trainer/global_step`` in W&B, ``step`` in metrics.csv):
    the count of optimizer steps *before* the current batch's, so the metrics of the first batch are at 0 and a
    validation run after ``global_step == 2`` is at 1. Callbacks logging straight to ``trainer.loggers`` use it
    to line up with Lightning's own keys (as ``LearningRateMonitor`` does)."""
    loop = getattr(getattr(trainer, "fit_loop", None), "epoch_loop", None)
    value = getattr(loop, "_batches_that_stepped", None)
    return int(value) if value is not None else int(trainer.global_step)


def _rank() -> int:
    return int(getattr(rank_zero_only, "rank", 0) or 0)


# ------------------------------------------------------------------------------------------------ logger
def sweep_job_name() -> str | None:
    """In a job of a Hydra multirun: the job's values of the swept keys (``mixture=caption_only,seed=1`` for
    ``-m mixture=… seed=0,1``; the sweep's ``multirun.yaml`` says which keys were swept), else all its overrides
    (``hydra.job.override_dirname``). None outside a multirun."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    hydra_cfg = HydraConfig.get()
    swept: set[str] = set()
    for folder in list(Path(hydra_cfg.runtime.output_dir).parents)[:3]:  # the sweep dir holds multirun.yaml
        if (folder / "multirun.yaml").is_file():
            task = OmegaConf.load(folder / "multirun.yaml").hydra.overrides.task
            parsed = OverridesParser.create().parse_overrides([str(o) for o in task])
            swept = {o.key_or_group for o in parsed if o.is_sweep_override()}
            break
    job = [str(o) for o in hydra_cfg.overrides.task if str(o).lstrip("+~").partition("=")[0] in swept]
    return ",".join(job) or str(hydra_cfg.job.override_dirname or "") or None


def make_wandb_logger(
    run_dir: str | os.PathLike,
    project: str = "ofa-lightning",
    name: str | None = None,
    group: str | None = None,
    tags: list[str] | tuple[str, ...] | None = None,
    mode: str | None = "offline",
    resume_id: str | None = None,
    config: Mapping[str, Any] | None = None,
    **wandb_kwargs: Any,
):
    """A ``WandbLogger`` for one run dir (or None when the resolved mode is ``disabled``).

    Args:
        run_dir: the job's output dir (Hydra run dir). W&B writes ``<run_dir>/wandb/{offline-,}run-<ts>-<id>/``.
        project, name, group, tags: the W&B run's. The name is, in order: the job's overrides in a Hydra
            multirun (:func:`sweep_job_name`; the jobs of a sweep would otherwise share one name), ``name``, the
            run dir's name.
        mode: ``offline`` (default), ``online``, ``auto`` (see :func:`resolve_mode`) or ``disabled``.
        resume_id: force this run id; else the one in ``<run_dir>/wandb_id``; else a new one. The id is written
            to ``<run_dir>/wandb_id`` (rank 0), so restarting a job in the same run dir continues its W&B run
            (``resume="allow"``). Offline, each restart is a new ``offline-run-*`` folder with the same id
            (``wandb sync`` them in order).
        config: the resolved config; logged as the run's config (``wandb.init(config=…)``, i.e. when the run
            starts) and dumped to ``<run_dir>/config_resolved.yaml`` right away (also in ``disabled`` mode).
        wandb_kwargs: more ``wandb.init`` / ``WandbLogger`` arguments (``settings``, ``job_type``, ``notes``, …).

    Logged tables: W&B copies a table and its images into its data dir (``WANDB_DATA_DIR``) for ``wandb sync`` to
    upload. When the run starts, ``WANDB_DATA_DIR`` is pointed at the run's own folder (``<folder>/artifacts/
    staging/``), so copying or syncing that folder keeps the images; a ``WANDB_DATA_DIR`` the user set is kept.
    The run itself starts lazily (first use of ``logger.experiment``, normally in ``trainer.fit``), on rank 0 only.
    """
    run_dir = Path(run_dir)
    resolved = resolve_mode(mode)
    plain = _plain(config) if config is not None else None
    if _rank() == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        if plain is not None:
            dump_config(plain, run_dir)
    if resolved == "disabled":
        return None

    from pytorch_lightning.loggers import WandbLogger

    class RunFolderWandbLogger(WandbLogger):
        """Stages logged tables' files inside the run's own folder once the run exists; after a resume, a (step,
        key) the run already holds is not logged again (``already_logged``, set by ``checkpointing.ReplayedSteps``)."""

        already_logged: dict[int, set[str]] = {}

        def log_metrics(self, metrics, step=None):
            seen = self.already_logged.get(step) if step is not None else None
            if seen:
                metrics = {k: v for k, v in metrics.items() if k not in seen}
                if not metrics:
                    return
            super().log_metrics(metrics, step)

        @property
        @rank_zero_experiment
        def experiment(self):
            run = WandbLogger.experiment.fget(self)
            _stage_in_run_folder(run)
            return run

    run_id = resume_id or read_run_id(run_dir) or _new_run_id()
    if _rank() == 0 and read_run_id(run_dir) != run_id:
        write_run_id(run_dir, run_id)
    (run_dir / "wandb").mkdir(parents=True, exist_ok=True)
    init: dict[str, Any] = {
        "name": sweep_job_name() or name or run_dir.name,
        "project": project,
        "save_dir": str(run_dir),
        "id": run_id,
        "resume": "allow",
        "mode": resolved,
    }
    if group:
        init["group"] = str(group)
    if tags:
        init["tags"] = [str(t) for t in tags]
    if plain is not None:
        init["config"] = json.loads(json.dumps(plain, default=str))
    init.update(wandb_kwargs)
    logger = RunFolderWandbLogger(**init)
    if getattr(logger, "_wandb_init", {}).get("anonymous", False) is None:
        logger._wandb_init.pop("anonymous")  # wandb 0.31 warns about the (unused) argument even when None
    log.info("W&B %s run %s (%s) under %s", resolved, run_id, init["name"], run_dir / "wandb")
    return logger


_DATA_DIR_SET: str | None = None  # the WANDB_DATA_DIR this module set (a user's own value is never replaced)


def _stage_in_run_folder(run: Any) -> None:
    """Point ``WANDB_DATA_DIR`` (read by W&B each time it stages a file) at the live run's folder."""
    global _DATA_DIR_SET
    current = os.environ.get("WANDB_DATA_DIR")
    if current and current != _DATA_DIR_SET:
        return
    try:
        folder = Path(run.dir).parent  # run.dir is <…>/[offline-]run-<ts>-<id>/files
    except (AttributeError, TypeError):  # a disabled run has no folder
        return
    if current != str(folder):
        _DATA_DIR_SET = os.environ["WANDB_DATA_DIR"] = str(folder)


def finish_wandb(exit_code: int | None = None) -> bool:
    """``wandb.finish()`` when a run is live (True) — end every (multirun) job with it. Never imports wandb.
    A ``WANDB_DATA_DIR`` set by :func:`make_wandb_logger` is unset again."""
    global _DATA_DIR_SET
    wandb = sys.modules.get("wandb")
    run = getattr(wandb, "run", None) if wandb is not None else None
    if _DATA_DIR_SET is not None and os.environ.get("WANDB_DATA_DIR") == _DATA_DIR_SET:
        del os.environ["WANDB_DATA_DIR"]
    _DATA_DIR_SET = None
    if run is None:
        return False
    wandb.finish(exit_code=exit_code)
    return True
