"""What a run writes in the open: its W&B run id (``wandb_id``), its resolved config (``config_resolved.yaml``) and
every logged scalar (``metrics.csv``, ``metrics.jsonl``), with the readers of those files.

* :class:`MetricsFileLogger` — appends every logged scalar to ``<run_dir>/metrics.csv`` and ``metrics.jsonl``
  (rank 0), with or without W&B (``PredictionTables`` attaches one when the Trainer has none).
"""

from __future__ import annotations

import csv
import json
import logging
import os
import time
from argparse import Namespace
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers.logger import Logger, rank_zero_experiment
from pytorch_lightning.utilities import rank_zero_only

__all__ = [
    "RUN_ID_FILE",
    "CONFIG_FILE",
    "read_run_id",
    "write_run_id",
    "dump_config",
    "MetricsFileLogger",
    "read_metrics_csv",
    "read_metrics_jsonl",
]

log = logging.getLogger(__name__)

RUN_ID_FILE = "wandb_id"
CONFIG_FILE = "config_resolved.yaml"


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
