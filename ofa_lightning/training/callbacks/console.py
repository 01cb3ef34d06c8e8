"""What a training run prints: a progress bar over optimizer steps, a final metrics table and its run dir.

* :class:`StepProgressBar` — the training bar counts global (optimizer) steps of ``trainer.max_steps``
  (``step 1111/1700``), across Lightning's epochs: the training data is an endless stream that Lightning cuts into
  epochs of ``data.batches_per_epoch`` batches, which mean nothing to the run.
* :func:`print_run_summary` — the end of a run: one table per evaluation stage (a row per source, a column per
  metric), the other final scalars (training loss, wall time) and the run dir.
* :func:`quiet_known_warnings` — filters the warnings that are noise for this kit (each with its reason).
"""

from __future__ import annotations

import math
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from pytorch_lightning.callbacks import TQDMProgressBar
from pytorch_lightning.callbacks.progress.tqdm_progress import _update_n

__all__ = ["StepProgressBar", "print_run_summary", "format_run_summary", "quiet_known_warnings"]


class StepProgressBar(TQDMProgressBar):
    """A ``TQDMProgressBar`` whose training bar shows ``step <global step>/<max_steps>`` for the whole fit (a
    resumed run starts at its checkpoint's step); validation and test bars are Lightning's."""

    TRAIN_FORMAT = (
        "step {n_fmt}/{total_fmt} {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}, {rate_noinv_fmt}{postfix}]"
    )

    @staticmethod
    def _total(trainer: Any) -> int | None:
        if trainer.max_steps is not None and trainer.max_steps > 0:
            return int(trainer.max_steps)
        total = trainer.estimated_stepping_batches
        return int(total) if total is not None and math.isfinite(total) else None

    def init_train_tqdm(self) -> Any:
        bar = super().init_train_tqdm()
        bar.bar_format = self.TRAIN_FORMAT
        return bar

    def on_train_start(self, trainer: Any, *_: Any) -> None:
        self.train_progress_bar = self.init_train_tqdm()
        self.train_progress_bar.reset(total=self._total(trainer))
        _update_n(self.train_progress_bar, trainer.global_step)

    def on_train_epoch_start(self, trainer: Any, *_: Any) -> None:
        """An epoch boundary is not shown: the bar goes on counting steps."""

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        bar, step = self._train_progress_bar, trainer.global_step
        if bar is not None and self._should_update(step, bar.total):
            _update_n(bar, step)
            bar.set_postfix(self.get_metrics(trainer, pl_module))

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if self._train_progress_bar is not None and not self.train_progress_bar.disable:
            self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module))

    def get_metrics(self, trainer: Any, pl_module: Any) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)  # the W&B run id: shown once when the run starts
        return metrics


def _value(value: float) -> str:
    return "n/a" if isinstance(value, float) and math.isnan(value) else f"{value:.4g}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells):
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)  # noqa: E731
            for i, (c, w) in enumerate(zip(cells, widths))
        ).rstrip()

    return [line(header), "  ".join("-" * w for w in widths), *(line(r) for r in rows)]


def format_run_summary(metrics: Mapping[str, float], run_dir: str | Path) -> str:
    """The text :func:`print_run_summary` prints: for each of ``val`` and ``test``, a table with a row per source
    and a column per metric (from ``<stage>/<source>/<metric>`` keys); then the training loss, the wall time and
    the run dir."""
    lines: list[str] = []
    for stage in ("val", "test"):
        cells: dict[str, dict[str, float]] = {}
        for key, value in metrics.items():
            parts = key.split("/")
            if len(parts) == 3 and parts[0] == stage:
                cells.setdefault(parts[1], {})[parts[2]] = value
        if not cells:
            continue
        names = sorted({m for row in cells.values() for m in row}, key=lambda m: (m in ("loss", "nll"), m))
        rows = [[source] + [_value(row[m]) if m in row else "" for m in names] for source, row in sorted(cells.items())]
        lines += [f"final {stage} metrics", *_table(["source", *names], rows), ""]
    if "train/loss" in metrics:
        lines.append(f"train/loss   {_value(metrics['train/loss'])}")
    if "wall_seconds" in metrics:
        seconds = float(metrics["wall_seconds"])
        lines.append(f"wall time    {seconds:.1f} s" + (f" ({seconds / 3600:.2f} h)" if seconds >= 3600 else ""))
    lines.append(f"run dir      {Path(run_dir).resolve()}")
    return "\n".join(lines)


def print_run_summary(
    metrics: Mapping[str, float], run_dir: str | Path, rank: int | None = None, stream: TextIO | None = None
) -> None:
    """Print :func:`format_run_summary` on rank 0 (``rank`` default: Lightning's ``rank_zero_only.rank``)."""
    if rank is None:
        from pytorch_lightning.utilities import rank_zero_only

        rank = int(getattr(rank_zero_only, "rank", 0) or 0)
    if rank == 0:
        print("\n" + format_run_summary(metrics, run_dir), file=stream or sys.stdout, flush=True)


def quiet_known_warnings() -> None:
    """Filter the warnings a run prints that it cannot act on. Everything else stays visible.

    * Lightning's own ``isinstance(treespec, LeafSpec)`` deprecation: Lightning's ``_pytree`` helper calls a torch
      API that torch deprecated; nothing in this kit calls it.
    * "Precision bf16-mixed is not supported by the model summary": only the summary's size estimate is affected.
    * "does not have many workers": the worker counts are settings (``data.num_workers``,
      ``data.eval.num_workers``), kept within the cores by the DataModule; Lightning suggests more for every loader,
      including the small per-source evaluation loaders and ``num_workers=0`` debugging runs.
    * "Your `IterableDataset` has `__len__` defined": ``MixtureStream`` sizes each worker's share exactly
      (``ofa_lightning/data/datamodule.py``), so the length is right with several workers.
    """
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated")
    warnings.filterwarnings("ignore", message=r"Precision .* is not supported by the model summary")
    warnings.filterwarnings("ignore", message=r"The '\w+' does not have many workers")
    warnings.filterwarnings("ignore", message=r"Your `IterableDataset` has `__len__` defined")
