"""Tracking callbacks: throughput / MFU, evaluation prediction tables (+ metrics CSV/JSONL), the console.

* ``ThroughputMonitor`` (``throughput.py``): ``perf/samples_per_s``, ``perf/tokens_per_s``, ``perf/data_wait_s``,
  ``perf/mfu`` …
* ``PredictionTables`` (``predictions.py``): per-source ``wandb.Table`` s and ``predictions/*.jsonl`` after every
  validation / test run; ``metrics.csv`` / ``metrics.jsonl`` through a ``MetricsFileLogger``.
* ``StepProgressBar`` (``console.py``): the training bar counts optimizer steps of ``max_steps``; the run's final
  metrics table and run dir are printed by ``print_run_summary``.

``default_callbacks(cfg, run_dir)`` builds them from the optional ``tracking`` config group (the progress bar
unless ``trainer.enable_progress_bar=false``)::

    tracking:
      throughput: {enabled: true, window: 20, peak_flops: null, flops_per_sample: null, measure_flops: true,
                   warmup_steps: 1, cuda_sync: false}
      predictions: {enabled: true, max_rows: 16, log_to_wandb: true, save_images: false, image_size: 256}
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .console import StepProgressBar, print_run_summary, quiet_known_warnings
from .predictions import PredictionTables, box_iou, row_score
from .throughput import PEAK_FLOPS, ThroughputMonitor, batch_counts, peak_flops_for

__all__ = [
    "ThroughputMonitor",
    "PredictionTables",
    "StepProgressBar",
    "print_run_summary",
    "default_callbacks",
    "PEAK_FLOPS",
    "peak_flops_for",
    "batch_counts",
    "row_score",
    "box_iou",
]


def _section(cfg: Any, *keys: str) -> dict[str, Any]:
    node = cfg
    for key in keys:
        if node is None:
            return {}
        node = node.get(key) if hasattr(node, "get") else None
    if node is None:
        return {}
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(node, DictConfig):
            node = OmegaConf.to_container(node, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    return dict(node) if isinstance(node, Mapping) else {}


def default_callbacks(cfg: Any, run_dir: str | Path) -> list:
    """``[ThroughputMonitor, PredictionTables, StepProgressBar]`` configured from ``cfg.tracking`` (absent: the
    defaults). Also filters the warnings that are noise for a run (:func:`.console.quiet_known_warnings`)."""
    quiet_known_warnings()
    out: list = []
    throughput = _section(cfg, "tracking", "throughput")
    if throughput.pop("enabled", True):
        out.append(ThroughputMonitor(**throughput))
    predictions = _section(cfg, "tracking", "predictions")
    if predictions.pop("enabled", True):
        predictions.setdefault("run_dir", str(run_dir))
        out.append(PredictionTables(**predictions))
    if _section(cfg, "trainer").get("enable_progress_bar", True) is not False:
        out.append(StepProgressBar())
    return out
