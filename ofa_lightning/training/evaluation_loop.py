"""Evaluation (validation and test) of ``OFALitModule``, as a mixin.

Each batch is decoded the way its task says (``validation.py``), parsed with ``task.parse_prediction`` and fed to
the task's metrics, kept per evaluation source in ``nn.ModuleDict`` s so they move with the module and sync across
ranks (a plain list would do neither). At the end ``<stage>/<source>/<metric>`` (and ``<stage>/<source>/loss``) are
logged, metrics reset, predictions gathered from all ranks, de-duplicated by id, kept in ``self.last_predictions``
and, with ``predictions_dir``, written by rank 0 as JSONL. ``<source>`` is the eval loader's mixture source name
(``batch["source"]``), else the task name. With EMA on, evaluation runs on the averaged weights (swapped in for the
evaluation run, swapped back before any checkpoint is written).

The mixin reads the module's ``model``, ``ema``, ``ema_cfg``, ``eval_metrics``, ``eval_losses``, ``loss_cfg``,
``keep_predictions``, ``predictions_dir``, ``val_loss`` and ``candidate_chunk_size`` and its ``task_for``,
``register_eval_source`` and ``row_constraints``.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from .batch import K, iter_loss_groups, select_rows
from .loss import seq2seq_loss
from .validation import metric_inputs, metric_results, predict_batch

__all__ = ["EvaluationMixin"]


class EvaluationMixin:
    """Validation / test hooks of ``OFALitModule`` (see the module docstring)."""

    def _eval_start(self) -> None:
        self._predictions = defaultdict(list)
        if self.ema is not None and self.ema_cfg.evaluate_with_ema and not self.ema.swapped_in:
            self.ema.swap_in(self.model)

    def _eval_step(self, batch: Mapping[str, Any]) -> None:
        for _, group in iter_loss_groups(batch):
            names = group.get(K.TASKS) or []
            if not names:
                continue
            source = group.get(K.SOURCE)
            by_task: dict[str, list[int]] = defaultdict(list)
            for i, n in enumerate(names):
                by_task[n].append(i)
            for task_name, rows in by_task.items():
                sub = group if len(rows) == len(names) else select_rows(group, rows)
                name = source if source is not None and len(by_task) == 1 else task_name
                self._eval_task_batch(name, self.task_for(name) or self.task_for(task_name), sub)

    def _eval_task_batch(self, name: str, task: Any, batch: Mapping[str, Any]) -> None:
        self.register_eval_source(name, task)
        if self.val_loss and name in self.eval_losses:
            out = seq2seq_loss(self.model, batch, self.loss_cfg, self.pad_id, constraints=self.row_constraints(batch))
            self.eval_losses[name].update(out.loss_sum, out.nll_sum, out.ntokens)
        if task is None:
            return
        metrics = getattr(task, "metrics", ()) or ()
        if not metrics and not self.keep_predictions:
            return
        records = predict_batch(self.model, task, batch, self.pad_id, chunk_size=self.candidate_chunk_size)
        postprocess = getattr(task, "postprocess_predictions", None)  # e.g. text-to-image: codes -> image + caption
        if callable(postprocess):
            records = postprocess(records, batch)
        if metrics:
            preds, refs, ids = metric_inputs(records)
            if preds:
                for metric in metrics:
                    self.eval_metrics[f"{name}__{metric}"].update(preds, refs, ids=ids)
        if self.keep_predictions:
            self._predictions[name].extend(records)

    def _any_rank(self, flags: list[bool]) -> list[bool]:
        if not flags or self._trainer is None or self.trainer.world_size <= 1:
            return flags
        t = torch.tensor([float(f) for f in flags], device=self.device)
        t = self.trainer.strategy.reduce(t, reduce_op="sum")
        return [bool(v > 0) for v in t.tolist()]

    def _eval_end(self, stage: str) -> None:
        try:
            results: dict[str, Tensor] = {}
            metric_keys = sorted(self.eval_metrics.keys())
            loss_keys = sorted(self.eval_losses.keys())
            flags = self._any_rank(
                [self.eval_metrics[k].update_called for k in metric_keys]
                + [self.eval_losses[k].update_called for k in loss_keys]
            )
            for key, used in zip(metric_keys, flags):
                metric = self.eval_metrics[key]
                if used:
                    source, metric_name = self._metric_names.get(key, tuple(key.split("__", 1)))
                    for k, v in metric_results(metric_name, metric.compute()).items():
                        results[f"{stage}/{source}/{k}"] = v
                metric.reset()
            for key, used in zip(loss_keys, flags[len(metric_keys) :]):
                meter = self.eval_losses[key]
                if used:
                    value = meter.compute()
                    if int(value["ntokens"]) > 0:
                        results[f"{stage}/{key}/loss"] = value["loss"].float()
                        results[f"{stage}/{key}/nll"] = value["nll"].float()
                meter.reset()
            if results and self._trainer is not None:
                self.log_dict(results, on_step=False, on_epoch=True, sync_dist=False, add_dataloader_idx=False)
            self.eval_results = {k: float(v) for k, v in results.items()}
            if self.keep_predictions:
                self.last_predictions[stage] = self._gather_predictions()
                self._write_predictions(stage)
        finally:
            self._predictions = defaultdict(list)
            if self.ema is not None:
                self.ema.swap_out(self.model)

    def _gather_predictions(self) -> dict[str, list[dict[str, Any]]]:
        from ofa_lightning.data.evaluation import dedup_by_id

        local = {k: [{kk: vv for kk, vv in r.items()} for r in v] for k, v in self._predictions.items()}
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            gathered: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, local)
            merged: dict[str, list[dict[str, Any]]] = defaultdict(list)
            for part in gathered:
                for k, v in (part or {}).items():
                    merged[k].extend(v)
            local = dict(merged)
        return {k: dedup_by_id(v) for k, v in local.items()}

    def _write_predictions(self, stage: str) -> None:
        if not self.predictions_dir or self.global_rank != 0:
            return
        os.makedirs(self.predictions_dir, exist_ok=True)
        for source, records in self.last_predictions.get(stage, {}).items():
            path = os.path.join(self.predictions_dir, f"{stage}_{source}_step{self.global_step}.jsonl")
            with open(path, "w", encoding="utf-8") as f:
                for r in records:
                    row = {k: v for k, v in r.items() if k not in ("is_pad", "image")}  # images: W&B tables
                    f.write(json.dumps(row, default=_jsonable) + "\n")

    def on_validation_epoch_start(self) -> None:
        self._eval_start()

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch)

    def on_validation_epoch_end(self) -> None:
        self._eval_end("val")

    def on_test_epoch_start(self) -> None:
        self._eval_start()

    def test_step(self, batch: Mapping[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch)

    def on_test_epoch_end(self) -> None:
        self._eval_end("test")


def _jsonable(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.tolist()
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)
