"""W&B set-up that survives Hydra multiruns, resumes and offline machines, plus a reader for what a run logged.

* :func:`make_wandb_logger` — a ``WandbLogger`` whose run id lives in ``<run_dir>/wandb_id`` (a resumed job reuses
  it), whose files go under ``<run_dir>/wandb/``, whose config is the resolved config (also in
  ``config_resolved.yaml``) and whose mode is passed to ``wandb.init`` (never to ``os.environ``). A multirun job is
  named by its swept overrides (``mixture=caption_only,seed=1``). What W&B stages for logged tables (the full
  table, its images) stays inside the run's ``[offline-]run-<ts>-<id>/`` folder: that folder is what
  ``wandb sync`` needs.
* :func:`finish_wandb` — ends the live run; call it at the end of every job, or the next job of a sequential
  multirun logs into this one's run (ashleve/lightning-hydra-template#289).
* :class:`MetricsFileLogger` — appends every logged scalar to ``<run_dir>/metrics.csv`` and ``metrics.jsonl``
  (rank 0), with or without W&B (``PredictionTables`` attaches one when the Trainer has none).
* :func:`read_offline_run` — what a run logged, from files it writes in the open (``metrics.jsonl``, the config,
  each W&B folder's ``files/`` and staged tables); W&B's private ``run-<id>.wandb`` log is not parsed.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import json
import logging
import netrc
import os
import re
import sys
import time
from argparse import Namespace
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pytorch_lightning.loggers.logger import Logger, rank_zero_experiment
from pytorch_lightning.utilities import rank_zero_only

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
]

log = logging.getLogger(__name__)

RUN_ID_FILE = "wandb_id"
CONFIG_FILE = "config_resolved.yaml"
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


def read_run_id(run_dir: str | os.PathLike) -> str | None:
    """The W&B run id stored in ``<run_dir>/wandb_id`` (None when absent or empty)."""
    path = Path(run_dir) / RUN_ID_FILE
    return (path.read_text(encoding="utf-8").strip() or None) if path.is_file() else None


def write_run_id(run_dir: str | os.PathLike, run_id: str) -> Path:
    path = Path(run_dir) / RUN_ID_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(run_id + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def _new_run_id() -> str:
    from wandb.sdk.lib.runid import generate_id

    return generate_id()


def _plain(config: Any) -> Any:
    """A plain (resolved) container of a DictConfig / Namespace / Mapping."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(config, (DictConfig, ListConfig)):
        return OmegaConf.to_container(config, resolve=True)
    if isinstance(config, Namespace):
        return vars(config)
    return config


def dump_config(config: Mapping[str, Any], run_dir: str | os.PathLike, filename: str = CONFIG_FILE) -> Path:
    """Write the resolved config as YAML to ``<run_dir>/<filename>`` (atomically)."""
    import yaml

    path = Path(run_dir) / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    text = yaml.safe_dump(json.loads(json.dumps(_plain(dict(config)), default=str)), sort_keys=False)
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


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
        """Stages logged tables' files inside the run's own folder once the run exists."""

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


# ------------------------------------------------------------------------------------------------ metrics files
def _scalar(value: Any) -> float | None:
    """A one-element tensor / numpy scalar / bool / number as a float; None for anything else."""
    import numpy as np

    if hasattr(value, "numel") and hasattr(value, "item"):
        value = value.item() if value.numel() == 1 else None
    if isinstance(value, np.generic) and value.size == 1:
        value = value.item()
    return float(value) if isinstance(value, (bool, int, float)) else None


class MetricsFileLogger(Logger):
    """Appends every logged scalar to ``<run_dir>/metrics.csv`` (header ``step,key,value,time``; one row per
    (step, key, value)) and ``<run_dir>/metrics.jsonl`` (``{"step", "time", <key>: value, …}`` per log call).

    ``step`` is the one Lightning passes (the optimizer-step count, W&B's ``trainer/global_step``). Files are
    appended to, never truncated, so a resumed run continues them (rows of steps re-run after the last checkpoint
    appear twice: keep the last). Non-scalar values are skipped. Rank 0 only. Hyper-parameters go to
    ``<run_dir>/hparams.json`` (the resolved config is ``config_resolved.yaml``).
    """

    CSV_NAME = "metrics.csv"
    JSONL_NAME = "metrics.jsonl"

    def __init__(self, run_dir: str | os.PathLike):
        super().__init__()
        self._run_dir = Path(run_dir)

    name = property(lambda self: "")
    version = property(lambda self: "")
    save_dir = root_dir = log_dir = property(lambda self: str(self._run_dir))
    csv_path = property(lambda self: self._run_dir / self.CSV_NAME)
    jsonl_path = property(lambda self: self._run_dir / self.JSONL_NAME)

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        return None

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        params = _plain(params)
        if not isinstance(params, Mapping):
            return
        self._run_dir.mkdir(parents=True, exist_ok=True)
        (self._run_dir / "hparams.json").write_text(json.dumps(params, indent=1, default=str), encoding="utf-8")

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        now = time.time()
        values = {str(k): v for k, v in ((k, _scalar(v)) for k, v in metrics.items()) if v is not None}
        if not values:
            return
        self._run_dir.mkdir(parents=True, exist_ok=True)
        new = not self.csv_path.exists() or self.csv_path.stat().st_size == 0
        with open(self.csv_path, "a", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            if new:
                writer.writerow(["step", "key", "value", "time"])
            for key, value in values.items():
                writer.writerow([step if step is not None else "", key, repr(value), f"{now:.3f}"])
        with open(self.jsonl_path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"step": step, "time": round(now, 3), **values}) + "\n")


def read_metrics_csv(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of a ``metrics.csv`` as ``{"step": int | None, "key": str, "value": float, "time": float}``."""
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            rows.append(
                {
                    "step": int(r["step"]) if r["step"] not in ("", None) else None,
                    "key": r["key"],
                    "value": float(r["value"]),
                    "time": float(r["time"]) if r.get("time") else None,
                }
            )
    return rows


def read_metrics_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The objects of a ``metrics.jsonl`` (``{"step", "time", <key>: value, …}`` per log call); a torn last line
    (a run killed mid-write) is left out with a log line."""
    rows = []
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except ValueError:
            log.warning("%s:%d: not JSON, left out", path, number)
    return rows


# ------------------------------------------------------------------------------------------------ reader
_RUN_DIR_RE = re.compile(r"^(?:offline-)?run-(\d{8}_\d{6})-(.+)$")
_TABLE_FILE_RE = re.compile(r"^media/table/(?P<key>.+)_(?P<step>\d+)_[0-9a-f]+\.table\.json$")


def find_wandb_runs(run_dir: str | os.PathLike, run_id: str | None = None) -> list[Path]:
    """The ``[offline-]run-<ts>-<id>`` folders under ``<run_dir>/wandb`` (or ``run_dir`` itself when it is one),
    oldest first; only those of ``run_id`` when given."""
    run_dir = Path(run_dir)
    if _RUN_DIR_RE.match(run_dir.name) and run_dir.is_dir():
        return [run_dir]
    root = run_dir / "wandb" if (run_dir / "wandb").is_dir() else run_dir
    found = []
    for p in root.iterdir() if root.is_dir() else ():
        m = _RUN_DIR_RE.match(p.name)
        if m and p.is_dir() and not p.is_symlink() and (run_id is None or m.group(2) == run_id):
            found.append((m.group(1), p.stat().st_mtime, p))
    return [p for _, _, p in sorted(found)]


def _staged_files(folder: Path) -> tuple[list[tuple[float, dict[str, Any]]], dict[str, str]]:
    """The tables W&B staged in ``folder`` (mtime, content) and ``{sha256 hex | base64 MD5: path}`` of every staged
    file (images are referenced by SHA-256, class maps by base64 MD5)."""
    tables, by_digest = [], {}
    for path in sorted((folder / "artifacts" / "staging").glob("*")):
        if not path.is_file():
            continue
        data = path.read_bytes()
        by_digest[hashlib.sha256(data).hexdigest()] = str(path)
        by_digest[base64.b64encode(hashlib.md5(data).digest()).decode()] = str(path)
        if data[:1] == b"{":
            try:
                content = json.loads(data)
            except ValueError:
                continue
            if isinstance(content, dict) and "columns" in content and "data" in content:
                tables.append((path.stat().st_mtime, content))
    return sorted(tables, key=lambda t: t[0]), by_digest


def table_media(data: list[list[Any]], by_digest: Mapping[str, str]) -> dict[str, str | None]:
    """``{referenced path: staged file or None}`` for every file the cells of a table reference (images by
    ``sha256``, their class maps by ``digest``)."""
    media: dict[str, str | None] = {}

    def visit(cell: Any) -> None:
        if isinstance(cell, dict):
            if isinstance(cell.get("path"), str) and (cell.get("sha256") or cell.get("digest")):
                media[cell["path"]] = by_digest.get(cell.get("sha256") or cell.get("digest"))
            for value in cell.values():
                visit(value)
        elif isinstance(cell, list):
            for value in cell:
                visit(value)

    visit(data)
    return media


def _folder_tables(folder: Path) -> dict[str, list[dict[str, Any]]]:
    """``{key: [table, …]}`` of one run folder, by step: W&B's copy under ``files/`` (media cells reduced to their
    type name, e.g. ``"Image"``), replaced by the full staged table (cells such as ``{"_type": "image-file",
    "path", "boxes", …}``) when one with the same columns and ids was staged."""
    staged, by_digest = _staged_files(folder)
    found = []
    for path in (folder / "files" / "media" / "table").rglob("*.table.json"):
        m = _TABLE_FILE_RE.match(path.relative_to(folder / "files").as_posix())
        if m:
            found.append((int(m["step"]), m["key"], path))
    tables: dict[str, list[dict[str, Any]]] = {}
    for step, key, path in sorted(found, key=lambda f: (f[0], f[1])):
        content = json.loads(path.read_text(encoding="utf-8"))
        entry = {
            "path": str(path),
            "step": step,
            "columns": content.get("columns"),
            "data": content.get("data"),
            "staged_table": None,
            "media": {},
        }
        ids = [row[0] for row in entry["data"] or []]
        for i, (_, full) in enumerate(staged):
            if full["columns"] == entry["columns"] and [row[0] for row in full["data"]] == ids:
                entry["data"], entry["staged_table"] = full["data"], True
                entry["media"] = table_media(full["data"], by_digest)
                del staged[i]
                break
        tables.setdefault(key, []).append(entry)
    return tables


def read_offline_run(run_dir: str | os.PathLike, run_id: str | None = None) -> dict[str, Any]:
    """What a run logged: ``<run_dir>/metrics.jsonl`` (every scalar, at the step W&B got it), the resolved config
    and its W&B folders' tables and files.

    Args:
        run_dir: the job's run dir (``<run_dir>/wandb/…`` holds the W&B folders).
        run_id: which W&B run; default ``<run_dir>/wandb_id``, else the newest folder's id.

    Returns a dict: ``run_id``, ``dirs`` (the W&B folders of that id, oldest first: one per restart offline), ``dir``
    (the newest), ``config`` (``config_resolved.yaml``), ``history`` (the ``metrics.jsonl`` objects), ``keys``
    (sorted), ``values`` (``{key: [(step, value), …]}``), ``summary`` (each key's last value), ``tables``
    (``{key: [{"path", "step", "columns", "data", "staged_table", "media"}]}`` over all folders: ``media`` maps each
    file a table cell references to its staged copy inside the folder, None when it is not there), ``files``
    (paths under the folders' ``files/``, relative).
    """
    import yaml

    run_dir = Path(run_dir)
    run_id = run_id or read_run_id(run_dir)
    folders = find_wandb_runs(run_dir, run_id)
    if not folders:
        raise FileNotFoundError(f"no W&B run folder{f' for id {run_id!r}' if run_id else ''} under {run_dir}")
    if run_id is None:
        run_id = _RUN_DIR_RE.match(folders[-1].name).group(2)
        folders = [f for f in folders if _RUN_DIR_RE.match(f.name).group(2) == run_id]
    history = (
        read_metrics_jsonl(run_dir / MetricsFileLogger.JSONL_NAME)
        if (run_dir / MetricsFileLogger.JSONL_NAME).is_file()
        else []
    )
    values: dict[str, list[tuple[Any, float]]] = {}
    for row in history:
        for key, value in row.items():
            if key not in ("step", "time") and isinstance(value, (int, float)) and not isinstance(value, bool):
                values.setdefault(key, []).append((row.get("step"), float(value)))
    config_path = run_dir / CONFIG_FILE
    config = yaml.safe_load(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    tables: dict[str, list[dict[str, Any]]] = {}
    files: set[str] = set()
    for folder in folders:
        for key, entries in _folder_tables(folder).items():
            tables.setdefault(key, []).extend(entries)
        files.update(p.relative_to(folder / "files").as_posix() for p in (folder / "files").rglob("*") if p.is_file())
    return {
        "run_id": run_id,
        "dirs": [str(f) for f in folders],
        "dir": str(folders[-1]),
        "config": config or {},
        "history": history,
        "keys": sorted(values),
        "values": values,
        "summary": {k: pairs[-1][1] for k, pairs in values.items()},
        "tables": tables,
        "files": sorted(files),
    }
