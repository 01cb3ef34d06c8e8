"""W&B set-up that survives Hydra multiruns, resumes and offline machines, plus a reader for offline runs.

* :func:`make_wandb_logger` — a ``WandbLogger`` whose run id lives in ``<run_dir>/wandb_id`` (a resumed job reuses
  it: ``id=…, resume="allow"``), whose files go under ``<run_dir>/wandb/`` and whose config is the resolved
  config (also dumped to ``<run_dir>/config_resolved.yaml``: parallel offline runs can lose config/summary,
  wandb/wandb#7227). The mode is passed to ``wandb.init`` (never written to ``os.environ``, so one multirun job cannot
  switch the next one offline).
* :func:`finish_wandb` — ends the live run; call it in a ``finally`` at the end of every job, or the next job of a
  sequential multirun logs into this one's run (LHT #289).
* :class:`MetricsFileLogger` — a Lightning logger that appends every logged scalar to ``<run_dir>/metrics.csv``
  (``step,key,value`` rows) and ``<run_dir>/metrics.jsonl`` (one object per log call); rank 0 only. The
  ``PredictionTables`` callback attaches one when the Trainer has none, so these files exist with or without W&B.
* :func:`read_offline_run` — what a run wrote locally (history, summary, config, tables), parsed from the
  ``run-<id>.wandb`` transaction log, so tests and notebooks can check it without the W&B service.

The ``.wandb`` file (wandb 0.31 ``wandb-core``; the same layout older Python SDKs wrote): a 7-byte header
(``b":W&B"``, uint16 ``0xBEE1``, uint8 version 0), then LevelDB-log framing in 32 KiB blocks — each chunk has a
7-byte header (uint32 CRC-32 of the type byte + payload, uint16 length, uint8 type: 1 full, 2 first, 3 middle,
4 last), a block tail shorter than 7 bytes is zero padding — and each reassembled payload is one serialised
``wandb.proto.wandb_internal_pb2.Record`` (``header``, ``run``, ``history``, ``summary``, ``config``, ``files``,
``artifact``, ``telemetry``, ``stats``, ``output_raw``, ``exit``, …). wandb 0.31 no longer ships the Python
``DataStore`` reader, hence the small reader here.
"""
from __future__ import annotations

import csv
import glob
import json
import logging
import netrc
import os
import re
import struct
import sys
import time
import zlib
from argparse import Namespace
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pytorch_lightning.loggers.logger import Logger, rank_zero_experiment
from pytorch_lightning.utilities import rank_zero_only

__all__ = [
    "make_wandb_logger",
    "resolve_mode",
    "has_wandb_credentials",
    "read_run_id",
    "write_run_id",
    "dump_config",
    "finish_wandb",
    "logger_step",
    "MetricsFileLogger",
    "read_metrics_csv",
    "find_wandb_runs",
    "iter_wandb_records",
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
    mode = (mode or "offline").strip().lower()
    if mode == "dryrun":
        return "offline"
    if mode not in MODES:
        raise ValueError(f"W&B mode must be one of {MODES}, got {mode!r}")
    if mode != "auto":
        return mode
    env = os.environ.get("WANDB_MODE", "").strip().lower()
    if env in ("offline", "dryrun"):
        return "offline"
    if env == "disabled":
        return "disabled"
    return "online" if has_wandb_credentials() else "offline"


def read_run_id(run_dir: str | os.PathLike) -> str | None:
    """The W&B run id stored in ``<run_dir>/wandb_id`` (None when absent or empty)."""
    path = Path(run_dir) / RUN_ID_FILE
    try:
        value = path.read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return value or None


def write_run_id(run_dir: str | os.PathLike, run_id: str) -> Path:
    path = Path(run_dir) / RUN_ID_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(run_id + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def _new_run_id() -> str:
    try:
        from wandb.sdk.lib.runid import generate_id

        return generate_id()
    except ImportError:  # pragma: no cover - other wandb layouts
        import secrets
        import string

        alphabet = string.ascii_lowercase + string.digits
        return "".join(secrets.choice(alphabet) for _ in range(8))


def _plain(config: Any) -> Any:
    """A plain (resolved) container of a DictConfig / Namespace / Mapping."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(config, (DictConfig, ListConfig)):
            return OmegaConf.to_container(config, resolve=True)
    except ImportError:  # pragma: no cover
        pass
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
def make_wandb_logger(
    run_dir: str | os.PathLike,
    project: str = "ofa-lightning",
    name: str | None = None,
    group: str | None = None,
    tags: list[str] | tuple[str, ...] | None = None,
    mode: str | None = "offline",
    resume_id: str | None = None,
    config: Mapping[str, Any] | None = None,
    data_dir: str | os.PathLike | None = None,
    **wandb_kwargs: Any,
):
    """A ``WandbLogger`` for one run dir (or None when the resolved mode is ``disabled``).

    Args:
        run_dir: the job's output dir (Hydra run dir). W&B writes ``<run_dir>/wandb/{offline-,}run-<ts>-<id>/``.
        project, name, group, tags: the W&B run's; ``name`` defaults to the run dir's name.
        mode: ``offline`` (default), ``online``, ``auto`` (see :func:`resolve_mode`) or ``disabled``.
        resume_id: force this run id; else the one in ``<run_dir>/wandb_id``; else a new one. The id is written
            to ``<run_dir>/wandb_id`` (rank 0), so restarting a job in the same run dir continues its W&B run
            (``resume="allow"``). Offline, each restart is a new ``offline-run-*`` folder with the same id
            (``wandb sync`` them in order).
        config: the resolved config; logged as the run's config (``wandb.init(config=…)``, i.e. when the run
            starts) and dumped to ``<run_dir>/config_resolved.yaml`` right away (also in ``disabled`` mode).
        data_dir: W&B's data dir (``WANDB_DATA_DIR``), where logged tables and their images are staged as
            artifacts until ``wandb sync`` (offline runs keep them there; default ``~/.local/share/wandb``).
            Default: ``<run_dir>/wandb/data``, so a run dir holds everything ``wandb sync`` needs; a
            ``WANDB_DATA_DIR`` set by the user before is left alone. This sets ``os.environ["WANDB_DATA_DIR"]``
            (W&B reads it when a table is logged); the next ``make_wandb_logger`` call moves it to its run dir.
        wandb_kwargs: more ``wandb.init`` / ``WandbLogger`` arguments (``settings``, ``job_type``, ``notes``, …).

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

    run_id = resume_id or read_run_id(run_dir) or _new_run_id()
    if _rank() == 0 and read_run_id(run_dir) != run_id:
        write_run_id(run_dir, run_id)
    (run_dir / "wandb").mkdir(parents=True, exist_ok=True)
    _set_data_dir(Path(data_dir) if data_dir is not None else run_dir / "wandb" / "data")
    init: dict[str, Any] = {
        "name": name or run_dir.name,
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
    logger = WandbLogger(**init)
    if getattr(logger, "_wandb_init", {}).get("anonymous", False) is None:
        logger._wandb_init.pop("anonymous")  # wandb 0.31 warns about the (unused) argument even when None
    log.info("W&B %s run %s under %s", resolved, run_id, run_dir / "wandb")
    return logger


_DATA_DIR_SET: str | None = None  # the WANDB_DATA_DIR this module set (a user's own value is never replaced)


def _set_data_dir(path: Path) -> None:
    global _DATA_DIR_SET
    current = os.environ.get("WANDB_DATA_DIR")
    if current and current != _DATA_DIR_SET:
        return
    path.mkdir(parents=True, exist_ok=True)
    _DATA_DIR_SET = os.environ["WANDB_DATA_DIR"] = str(path)


def finish_wandb(exit_code: int | None = None, wait_s: float = 10.0) -> bool:
    """``wandb.finish()`` when a run is live (True) — end every (multirun) job with it. Never imports wandb.

    wandb-core writes the ``.wandb`` transaction log asynchronously: ``wandb.finish()`` can return before the last
    records are on disk. Up to ``wait_s`` seconds are spent waiting for the run's ``exit`` record, so the files are
    complete for ``wandb sync``, :func:`read_offline_run` or the next job (0: do not wait)."""
    wandb = sys.modules.get("wandb")
    run = getattr(wandb, "run", None) if wandb is not None else None
    if run is None:
        return False
    log_file = None
    try:
        folder = Path(run.dir).parent  # run.dir is <…>/[offline-]run-<ts>-<id>/files
        log_file = next(iter(sorted(folder.glob("run-*.wandb"))), None) or folder / f"run-{run.id}.wandb"
    except Exception:  # pragma: no cover - a disabled or odd run
        pass
    wandb.finish(exit_code=exit_code)
    if log_file is not None and wait_s > 0:
        _wait_for_exit(Path(log_file), wait_s)
    return True


def _wait_for_exit(path: Path, wait_s: float) -> bool:
    deadline, size = time.monotonic() + wait_s, -1
    while time.monotonic() < deadline:
        try:
            now = path.stat().st_size
        except OSError:
            now = -1
        if now != size and now > 0:
            size = now
            try:
                last = None
                for last in iter_wandb_records(path):
                    pass
                if last is not None and last.WhichOneof("record_type") == "exit":
                    return True
            except (OSError, ValueError):
                pass
        time.sleep(0.05)
    log.warning("W&B: no exit record in %s after %.0f s", path, wait_s)
    return False


# ------------------------------------------------------------------------------------------------ metrics files
def _scalar(value: Any) -> float | None:
    if hasattr(value, "numel") and hasattr(value, "item"):
        if value.numel() != 1:
            return None
        value = value.item()
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    try:  # numpy scalars
        import numpy as np

        if isinstance(value, np.generic) and value.size == 1:
            return float(value)
    except ImportError:  # pragma: no cover
        pass
    return None


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

    @property
    def name(self) -> str:
        return ""

    @property
    def version(self) -> str:
        return ""

    @property
    def save_dir(self) -> str:
        return str(self._run_dir)

    @property
    def root_dir(self) -> str:
        return str(self._run_dir)

    @property
    def log_dir(self) -> str:
        return str(self._run_dir)

    @property
    def csv_path(self) -> Path:
        return self._run_dir / self.CSV_NAME

    @property
    def jsonl_path(self) -> Path:
        return self._run_dir / self.JSONL_NAME

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
            rows.append({"step": int(r["step"]) if r["step"] not in ("", None) else None, "key": r["key"],
                         "value": float(r["value"]), "time": float(r["time"]) if r.get("time") else None})
    return rows


# ------------------------------------------------------------------------------------------------ offline reader
_HEADER = struct.Struct("<4sHB")
_CHUNK = struct.Struct("<IHB")
_BLOCK = 32768
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4
_RUN_DIR_RE = re.compile(r"^(?:offline-)?run-(\d{8}_\d{6})-(.+)$")


def iter_wandb_records(path: str | os.PathLike, check_crc: bool = True) -> Iterator[Any]:
    """The ``wandb_internal_pb2.Record`` s of a ``.wandb`` file, in order. A truncated tail (a live run) or a
    chunk with a bad checksum ends the iteration (with a log line) rather than raising."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    if len(data) < _HEADER.size:
        return
    ident, magic, version = _HEADER.unpack_from(data, 0)
    if ident != b":W&B" or magic != 0xBEE1:
        raise ValueError(f"{path}: not a W&B transaction log (header {ident!r} {magic:#x})")
    pos, parts = _HEADER.size, []
    while pos < len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _CHUNK.size:  # block trailer: zero padding
            pos += left
            continue
        if pos + _CHUNK.size > len(data):
            break
        crc, length, kind = _CHUNK.unpack_from(data, pos)
        start, end = pos + _CHUNK.size, pos + _CHUNK.size + length
        if kind == 0 and length == 0:  # padding inside a pre-allocated block
            pos = end
            continue
        if end > len(data):
            log.info("%s: truncated record at byte %d (run still live?)", path, pos)
            break
        payload = data[start:end]
        if check_crc and zlib.crc32(payload, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF != crc:
            log.warning("%s: checksum mismatch at byte %d; stopping", path, pos)
            break
        pos = end
        if kind == _FULL:
            parts = [payload]
        elif kind == _FIRST:
            parts = [payload]
            continue
        elif kind == _MIDDLE:
            parts.append(payload)
            continue
        elif kind == _LAST:
            parts.append(payload)
        else:
            log.warning("%s: unknown chunk type %d at byte %d; stopping", path, kind, pos)
            break
        record = pb.Record()
        record.ParseFromString(b"".join(parts))
        parts = []
        yield record


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


def _item_key(item: Any) -> list[str]:
    return list(item.nested_key) if len(item.nested_key) else [item.key]


def _set_nested(target: dict[str, Any], keys: list[str], value: Any) -> None:
    for k in keys[:-1]:
        nxt = target.get(k)
        if not isinstance(nxt, dict):
            nxt = target[k] = {}
        target = nxt
    target[keys[-1]] = value


def _json(value_json: str) -> Any:
    try:
        return json.loads(value_json)
    except ValueError:
        return value_json


_TABLE_TYPES = ("table-file", "incremental-table-file", "partitioned-table", "joined-table")


def _read_segment(folder: Path) -> dict[str, Any]:
    files = sorted(folder.glob("run-*.wandb"))
    out: dict[str, Any] = {"dir": str(folder), "wandb_file": str(files[0]) if files else None, "history": [],
                           "summary": {}, "config": {}, "records": Counter(), "run": {}, "exit_code": None,
                           "finished": False, "artifacts": {}}
    if not files:
        return out
    for record in iter_wandb_records(files[0]):
        kind = record.WhichOneof("record_type")
        out["records"][kind] += 1
        if kind == "run":
            run = record.run
            out["run"] = {"run_id": run.run_id, "project": run.project, "entity": run.entity,
                          "display_name": run.display_name, "group": run.run_group, "job_type": run.job_type,
                          "tags": list(run.tags), "notes": run.notes}
            for item in run.config.update:
                _set_nested(out["config"], _item_key(item), _json(item.value_json))
        elif kind == "config":
            for item in record.config.update:
                _set_nested(out["config"], _item_key(item), _json(item.value_json))
            for item in record.config.remove:
                out["config"].pop(_item_key(item)[0], None)
        elif kind == "history":
            row: dict[str, Any] = {}
            for item in record.history.item:
                _set_nested(row, _item_key(item), _json(item.value_json))
            out["history"].append(row)
        elif kind == "summary":
            for item in record.summary.update:
                _set_nested(out["summary"], _item_key(item), _json(item.value_json))
            for item in record.summary.remove:
                out["summary"].pop(_item_key(item)[0], None)
        elif kind == "artifact":
            art = record.artifact
            contents = {c.path: c.local_path for c in art.manifest.contents}
            for client_id in (art.client_id, art.sequence_client_id):
                if client_id:
                    out["artifacts"][client_id] = contents
        elif kind == "exit":
            out["finished"] = True
            out["exit_code"] = record.exit.exit_code
    return out


def _artifact_file(ref: Any, artifacts: Mapping[str, Mapping[str, str]]) -> tuple[dict[str, str], str | None]:
    """(manifest contents, local path of the referenced file) of a ``wandb-client-artifact://<client id>[:alias]/
    <path>`` reference."""
    if not isinstance(ref, str) or not ref.startswith("wandb-client-artifact://"):
        return {}, None
    client, _, name = ref[len("wandb-client-artifact://"):].partition("/")
    contents = dict(artifacts.get(client.split(":", 1)[0], {}))
    return contents, contents.get(name)


def _tables(history: list[dict[str, Any]], folders: list[Path],
            artifacts: Mapping[str, Mapping[str, str]]) -> dict[str, list[dict[str, Any]]]:
    tables: dict[str, list[dict[str, Any]]] = {}
    for row in history:
        for key, value in row.items():
            if not (isinstance(value, dict) and value.get("_type") in _TABLE_TYPES and value.get("path")):
                continue
            entry: dict[str, Any] = {"path": None, "step": row.get("trainer/global_step", row.get("_step")),
                                     "columns": None, "data": None, "ncols": value.get("ncols"),
                                     "nrows": value.get("nrows"), "media": {}}
            for folder in reversed(folders):  # the run's copy (media cells reduced to their type name)
                candidate = folder / "files" / value["path"]
                if candidate.is_file():
                    entry["path"] = str(candidate)
                    try:
                        content = json.loads(candidate.read_text(encoding="utf-8"))
                        entry["columns"], entry["data"] = content.get("columns"), content.get("data")
                    except (OSError, ValueError):
                        pass
                    break
            # the full table (media cells as dicts) and its media: the staged files of the run_table artifact
            contents, full = _artifact_file(value.get("artifact_path"), artifacts)
            if full is None:
                contents, full = _artifact_file(value.get("_latest_artifact_path"), artifacts)
            if full is not None and os.path.isfile(full):
                try:
                    content = json.loads(Path(full).read_text(encoding="utf-8"))
                    entry["columns"], entry["data"] = content.get("columns"), content.get("data")
                    entry["artifact_table"] = full
                    entry["media"] = {p: lp for p, lp in contents.items() if not p.endswith(".table.json")}
                except (OSError, ValueError):
                    pass
            tables.setdefault(key, []).append(entry)
    return tables


def read_offline_run(run_dir: str | os.PathLike, run_id: str | None = None, segments: str = "all") -> dict[str, Any]:
    """What a W&B run wrote locally, read from its ``.wandb`` transaction log(s) and ``files/``.

    Args:
        run_dir: the job's run dir (``<run_dir>/wandb/…`` is searched), a ``wandb`` dir, or one run folder.
        run_id: which run; default ``<run_dir>/wandb_id``, else the newest run folder's id.
        segments: ``"all"`` — every folder of that id, oldest first (a resumed offline run writes one folder per
            restart; history is concatenated, summary/config merged, later wins) — or ``"latest"``.

    Returns a dict: ``run_id``, ``dirs`` (the folders read), ``dir`` (the newest), ``run`` (project, group, tags,
    display name…), ``config`` (without ``_wandb``), ``history`` (one dict per ``wandb.log`` call, nested values
    such as table references as dicts), ``keys`` (sorted user history keys, ``_``-prefixed ones left out),
    ``values`` (``{key: [(trainer/global_step or _step, value), …]}`` for scalar keys), ``summary``, ``tables``
    (``{key: [{"path", "step", "columns", "data", "nrows", "ncols", "media", "artifact_table"}]}``), ``files``
    (paths under ``files/``, relative), ``records`` (record-type counts), ``finished`` / ``exit_code`` (of the
    newest folder).

    Tables: wandb 0.31 writes ``files/media/table/<key>_<step>_<hash>.table.json`` with media cells reduced to
    their type name (``"Image"``) and puts the full table (cells such as ``{"_type": "image-file", "path":
    "media/images/….png", "boxes": …}``) and its media into a ``run_table`` artifact, staged (until ``wandb sync``)
    under ``$WANDB_DATA_DIR/artifacts/staging`` — ``<run_dir>/wandb/data`` with :func:`make_wandb_logger`. When the
    staged files are there, ``data`` is the full table and ``media`` maps each media path to its staged file.
    """
    run_dir = Path(run_dir)
    if run_id is None and not _RUN_DIR_RE.match(run_dir.name):
        run_id = read_run_id(run_dir)
    folders = find_wandb_runs(run_dir, run_id)
    if not folders and run_id is not None:
        raise FileNotFoundError(f"no W&B run folder for id {run_id!r} under {run_dir}")
    if not folders:
        raise FileNotFoundError(f"no W&B run folder under {run_dir}")
    if run_id is None:
        run_id = _RUN_DIR_RE.match(folders[-1].name).group(2)
        folders = [f for f in folders if _RUN_DIR_RE.match(f.name).group(2) == run_id]
    if segments == "latest":
        folders = folders[-1:]
    elif segments != "all":
        raise ValueError(f"segments must be 'all' or 'latest', got {segments!r}")

    result: dict[str, Any] = {"run_id": run_id, "dirs": [str(f) for f in folders], "dir": str(folders[-1]),
                              "history": [], "summary": {}, "config": {}, "run": {}, "records": Counter(),
                              "finished": False, "exit_code": None}
    artifacts: dict[str, Mapping[str, str]] = {}
    for folder in folders:
        seg = _read_segment(folder)
        result["history"].extend(seg["history"])
        result["summary"].update(seg["summary"])
        result["config"].update(seg["config"])
        result["run"] = seg["run"] or result["run"]
        result["records"].update(seg["records"])
        artifacts.update(seg["artifacts"])
        result["finished"], result["exit_code"] = seg["finished"], seg["exit_code"]
    result["config"].pop("_wandb", None)
    keys: set[str] = set()
    values: dict[str, list[tuple[Any, float]]] = {}
    for row in result["history"]:
        step = row.get("trainer/global_step", row.get("_step"))
        for key, value in row.items():
            if key.startswith("_"):
                continue
            keys.add(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                values.setdefault(key, []).append((step, value))
            elif isinstance(value, str) and value in ("NaN", "Infinity", "-Infinity"):
                values.setdefault(key, []).append((step, float(value.replace("Infinity", "inf"))))
    result["keys"] = sorted(keys)
    result["values"] = values
    result["tables"] = _tables(result["history"], folders, artifacts)
    files: set[str] = set()
    for folder in folders:
        root = folder / "files"
        for p in glob.glob(str(root / "**" / "*"), recursive=True):
            if os.path.isfile(p):
                files.add(os.path.relpath(p, root))
    result["files"] = sorted(files)
    return result
