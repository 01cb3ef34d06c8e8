"""``PredictionTables``: evaluation predictions as W&B tables and JSONL files, metrics as CSV/JSONL (rank 0).

After every validation / test run, per evaluation source, up to ``max_rows`` rows of
``pl_module.last_predictions[stage][source]`` (records ``{"id", "task", "tokens", "prediction", "reference", …}``,
``OFALitModule``) become:

* a ``wandb.Table`` ``<stage>/<source>/predictions`` (when a ``WandbLogger`` is attached) with columns
  ``id, image, prompt, prediction, references, score``; ``image`` is a ``wandb.Image`` of the model's input with the
  predicted (``prediction``) and reference (``reference``) boxes as W&B box overlays for grounding / detection;
* ``<run_dir>/predictions/<stage>-step<global_step>-<source>.jsonl``, the same rows (``image``: the path of the
  saved PNG, relative to ``predictions/``, with ``save_images=True``; else null), always, with or without W&B.

The table is logged at Lightning's logger step (:func:`~ofa_lightning.training.tracking.logger_step`, the step of
the ``val/*`` metrics of the same run, ``global_step - 1`` during fit); file names and the rows' ``step`` field are
``trainer.global_step``.

Every logged metric is appended to ``<run_dir>/metrics.csv`` and ``<run_dir>/metrics.jsonl`` by a
:class:`~ofa_lightning.training.tracking.MetricsFileLogger`, added to the Trainer's loggers in ``setup`` when it has
none (with no other logger, checkpoints without a ``dirpath`` then go to ``<run_dir>/checkpoints``).

The prediction records carry neither the image nor the prompt, so the callback keeps them itself from the
evaluation batches it sees (``on_*_batch_end``, rank 0, at most ``max_rows`` rows per source): the de-normalised
``patch_images`` row as a thumbnail (mean/std from the source task's ``normalization`` option, OFA's 0.5/0.5 by
default), the ``input_ids`` row (decoded with the module's tokenizer into the prompt) and the box ratios of
``metas``. A record that has its own ``prompt`` / ``image`` / ``score`` fields wins. Rows seen by another rank have
no image. ``score`` is per-row: the record's ``score`` if any, else the source task's ``Task.row_score`` (by default
VQA's soft score ``reference[prediction]``, box IoU for a box, exact match for a single string reference, none
otherwise: captions have the corpus metrics).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from torch import Tensor

from ofa_lightning.tasks.scoring import box_iou, is_box, row_score

from ..tracking import MetricsFileLogger, logger_step

__all__ = ["PredictionTables", "row_score", "box_iou", "is_box"]

log = logging.getLogger(__name__)

COLUMNS = ["id", "image", "prompt", "prediction", "references", "score"]
_BOX_META = ("w_ratio", "h_ratio", "image_size", "box")


# ------------------------------------------------------------------------------------------------ boxes
def _boxes_of(value: Any) -> list[tuple[list[float], str | None]]:
    """Boxes (with labels) of a grounding box or a detection list ``[{"box", "label"}]``."""
    if is_box(value):
        return [([float(v) for v in value], None)]
    out = []
    if isinstance(value, (list, tuple)):
        for obj in value:
            if isinstance(obj, Mapping) and is_box(obj.get("box")):
                out.append(([float(v) for v in obj["box"]], obj.get("label")))
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.tolist()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.generic,)):
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", str(name)) or "_"


# ------------------------------------------------------------------------------------------------ the callback
class PredictionTables(Callback):
    """Per-source prediction tables (W&B) + JSONL files, and metrics CSV/JSONL (see the module doc).

    Args:
        run_dir: where ``predictions/``, ``metrics.csv`` and ``metrics.jsonl`` go (default: the Trainer's
            ``default_root_dir``).
        max_rows: rows per source and evaluation run (table and JSONL).
        stages: among ``"val"``, ``"test"``.
        log_to_wandb: log ``wandb.Table`` s when a ``WandbLogger`` is attached.
        metrics_files: attach a ``MetricsFileLogger`` (metrics.csv / metrics.jsonl) if none is attached.
        save_images: also save each row's image (boxes drawn) as a PNG under ``predictions/images/``.
        image_size: longest side of the kept thumbnails (pixels).
        log_sanity_check: also after Lightning's sanity-check validation (skipped by default).
        table_key: W&B key, formatted with ``stage`` and ``source``.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike | None = None,
        max_rows: int = 16,
        stages: Sequence[str] = ("val", "test"),
        log_to_wandb: bool = True,
        metrics_files: bool = True,
        save_images: bool = False,
        image_size: int = 256,
        log_sanity_check: bool = False,
        table_key: str = "{stage}/{source}/predictions",
    ):
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.max_rows = max(1, int(max_rows))
        self.stages = tuple(stages)
        self.log_to_wandb = bool(log_to_wandb)
        self.metrics_files = bool(metrics_files)
        self.save_images = bool(save_images)
        self.image_size = max(16, int(image_size))
        self.log_sanity_check = bool(log_sanity_check)
        self.table_key = table_key
        self._context: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)  # stage -> id -> row context
        self._per_source: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self._warned = False
        self.written: list[Path] = []  # JSONL files written (for tests / notebooks)

    # ------------------------------------------------------------------------------------------------ set-up
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.run_dir is None:
            self.run_dir = Path(trainer.default_root_dir)
        if self.metrics_files and not any(isinstance(lg, MetricsFileLogger) for lg in trainer.loggers):
            trainer.loggers = list(trainer.loggers) + [MetricsFileLogger(self.run_dir)]

    @property
    def predictions_dir(self) -> Path:
        return Path(self.run_dir or ".") / "predictions"

    # ------------------------------------------------------------------------------------------------ capture
    def _start(self, stage: str) -> None:
        self._context[stage] = {}
        self._per_source[stage] = defaultdict(int)

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._start("val")

    def on_test_epoch_start(self, trainer, pl_module) -> None:
        self._start("test")

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if "val" in self.stages and trainer.is_global_zero and (self.log_sanity_check or not trainer.sanity_checking):
            self._capture("val", batch, pl_module)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if "test" in self.stages and trainer.is_global_zero:
            self._capture("test", batch, pl_module)

    def _capture(self, stage: str, batch: Any, pl_module: pl.LightningModule) -> None:
        if not isinstance(batch, Mapping):
            return
        groups = batch["groups"].values() if isinstance(batch.get("groups"), Mapping) else [batch]
        for group in groups:
            try:
                self._capture_group(stage, group, pl_module)
            except Exception as err:  # never break evaluation for a table
                log.warning("PredictionTables: could not keep the rows of a %s batch (%s)", stage, err)

    def _capture_group(self, stage: str, group: Mapping[str, Any], pl_module: pl.LightningModule) -> None:
        ids, tasks = group.get("ids") or [], group.get("tasks") or []
        if not ids:
            return
        source = group.get("source")
        single = source is not None and len(set(tasks)) <= 1
        is_pad = group.get("is_pad")
        metas = group.get("metas") or [{}] * len(ids)
        images, masks, input_ids = group.get("patch_images"), group.get("patch_masks"), group.get("input_ids")
        counts, context = self._per_source[stage], self._context[stage]
        pad_id = int(getattr(pl_module, "pad_id", 1))
        for i, sample_id in enumerate(ids):
            name = str(source if single else (tasks[i] if i < len(tasks) else source))
            if counts[name] >= self.max_rows:
                continue
            if is_pad is not None and bool(is_pad[i]):
                continue
            row: dict[str, Any] = {"source": name, "meta": {}}
            meta = metas[i] or {}
            # the prompt's stand-ins when it cannot be decoded: a "prompt" meta, else the task's text fields
            row["prompt_keys"] = ("prompt", *getattr(_task_of(pl_module, name), "text_fields", ()))
            row["meta"] = {k: meta[k] for k in _BOX_META + row["prompt_keys"] if k in meta}
            if isinstance(input_ids, Tensor):
                row["prompt_ids"] = [int(t) for t in input_ids[i].tolist() if int(t) != pad_id]
            if isinstance(images, Tensor) and images.dim() == 4 and (masks is None or bool(masks[i])):
                row["image"], row["scale"] = self._thumbnail(images[i], self._normalization(pl_module, name))
            context[str(sample_id)] = row
            counts[name] += 1

    @staticmethod
    def _normalization(pl_module: pl.LightningModule, source: str) -> tuple[Sequence[float], Sequence[float]]:
        from ofa_lightning.images import NORMALIZATIONS

        cfg = getattr(_task_of(pl_module, source), "cfg", None) or {}
        name = cfg.get("normalization", "ofa") if isinstance(cfg, Mapping) else "ofa"
        return NORMALIZATIONS.get(name, NORMALIZATIONS["ofa"])

    def _thumbnail(self, image: Tensor, norm: tuple[Sequence[float], Sequence[float]]) -> tuple[np.ndarray, float]:
        from PIL import Image

        img = image.detach().float().cpu()
        mean = torch.tensor(norm[0]).view(-1, 1, 1)
        std = torch.tensor(norm[1]).view(-1, 1, 1)
        if img.size(0) == mean.size(0):
            img = img * std + mean
        arr = (img.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        if arr.shape[2] == 1:
            arr = arr[:, :, 0]
        h, w = arr.shape[:2]
        scale = min(1.0, self.image_size / max(h, w))
        if scale < 1.0:
            pil = Image.fromarray(arr).resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BICUBIC)
            arr = np.asarray(pil)
        return arr, scale

    # ------------------------------------------------------------------------------------------------ emission
    def on_validation_end(self, trainer, pl_module) -> None:
        if "val" in self.stages and (self.log_sanity_check or not trainer.sanity_checking):
            self._emit("val", trainer, pl_module)

    def on_test_end(self, trainer, pl_module) -> None:
        if "test" in self.stages:
            self._emit("test", trainer, pl_module)

    def _emit(self, stage: str, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        by_source = (getattr(pl_module, "last_predictions", None) or {}).get(stage) or {}
        if not by_source:
            if not self._warned:
                log.warning(
                    "PredictionTables: %s has no last_predictions[%r]; no prediction tables",
                    type(pl_module).__name__,
                    stage,
                )
                self._warned = True
            return
        step = int(trainer.global_step)
        tokenizer = self._tokenizer(trainer, pl_module)
        wandb_logger = self._wandb_logger(trainer) if self.log_to_wandb else None
        tables: dict[str, Any] = {}
        for source, records in sorted(by_source.items()):
            rows = self._rows(stage, str(source), records, tokenizer, step, pl_module)
            self._write_jsonl(stage, step, str(source), rows)
            if wandb_logger is not None:
                try:
                    tables[self.table_key.format(stage=stage, source=source)] = self._table(rows)
                except Exception as err:
                    log.warning("PredictionTables: no W&B table for %s/%s (%s)", stage, source, err)
        if tables:
            try:
                wandb_logger.log_metrics(tables, step=logger_step(trainer))
            except Exception as err:
                log.warning("PredictionTables: logging the W&B tables failed (%s)", err)
        self._context[stage] = {}

    def _rows(
        self,
        stage: str,
        source: str,
        records: Sequence[Mapping[str, Any]],
        tokenizer: Any,
        step: int,
        pl_module: Any = None,
    ) -> list[dict[str, Any]]:
        context = self._context.get(stage, {})
        usable = [r for r in records if not r.get("is_pad")]
        with_ctx = [r for r in usable if str(r.get("id")) in context]
        chosen = with_ctx[: self.max_rows]
        if len(chosen) < self.max_rows:
            taken = {id(r) for r in chosen}
            chosen += [r for r in usable if id(r) not in taken][: self.max_rows - len(chosen)]
        order = {id(r): k for k, r in enumerate(usable)}
        chosen.sort(key=lambda r: order[id(r)])
        rows = []
        scorer = getattr(_task_of(pl_module, source), "row_score", None) or row_score
        for k, record in enumerate(chosen):
            ctx = context.get(str(record.get("id")), {})
            references = record.get("references", record.get("reference"))
            prediction = record.get("prediction")
            score = record.get("score")
            if score is None:
                score = scorer(prediction, references)
            row = {
                "stage": stage,
                "step": step,
                "source": source,
                "id": record.get("id"),
                "task": record.get("task"),
                "prompt": self._prompt(record, ctx, tokenizer),
                "prediction": prediction,
                "references": references,
                "score": float(score) if isinstance(score, (int, float, np.generic)) else score,
                "image": None,
            }
            image = record.get("image") if record.get("image") is not None else ctx.get("image")
            row["_image"] = image
            row["_boxes"] = self._boxes(prediction, references, ctx)
            if self.save_images and image is not None:
                row["image"] = self._save_image(image, row["_boxes"], stage, step, source, k)
            rows.append(row)
        return rows

    @staticmethod
    def _tokenizer(trainer: pl.Trainer, pl_module: pl.LightningModule) -> Any:
        for owner in (pl_module, getattr(trainer, "datamodule", None)):
            tok = getattr(owner, "tokenizer", None)
            if tok is not None and callable(getattr(tok, "decode", None)):
                return tok
        return None

    @staticmethod
    def _prompt(record: Mapping[str, Any], ctx: Mapping[str, Any], tokenizer: Any) -> str | None:
        if record.get("prompt") is not None:
            return str(record["prompt"])
        ids = ctx.get("prompt_ids")
        if ids is not None and tokenizer is not None:
            try:
                return str(tokenizer.decode(ids)).strip()
            except Exception:  # an id outside the tokenizer, a toy tokenizer, …
                pass
        meta = ctx.get("meta") or {}
        for key in ctx.get("prompt_keys") or ("prompt",):
            if isinstance(meta.get(key), str):
                return meta[key]
        return None

    @staticmethod
    def _boxes(prediction: Any, references: Any, ctx: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
        """Boxes in thumbnail pixels: original pixels × (patch / original ratio) × thumbnail scale."""
        meta = ctx.get("meta") or {}
        sx = float(meta.get("w_ratio", 1.0)) * float(ctx.get("scale", 1.0))
        sy = float(meta.get("h_ratio", 1.0)) * float(ctx.get("scale", 1.0))
        out: dict[str, list[dict[str, Any]]] = {}
        for role, value in (("prediction", prediction), ("reference", references)):
            boxes = []
            for box, label in _boxes_of(value):
                if any(math.isnan(v) or math.isinf(v) for v in box):
                    continue
                boxes.append({"box": [box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy], "label": label})
            if boxes:
                out[role] = boxes
        return out

    def _save_image(
        self, image: Any, boxes: Mapping[str, Any], stage: str, step: int, source: str, k: int
    ) -> str | None:
        from PIL import Image, ImageDraw

        try:
            pil = Image.fromarray(np.asarray(image)).convert("RGB")
            draw = ImageDraw.Draw(pil)
            for role, color in (("reference", (0, 200, 0)), ("prediction", (230, 30, 30))):
                for b in boxes.get(role, []):
                    draw.rectangle(b["box"], outline=color, width=2)
                    if b.get("label"):
                        draw.text((b["box"][0] + 2, b["box"][1] + 1), str(b["label"]), fill=color)
            rel = Path("images") / f"{stage}-step{step}-{_safe_name(source)}-{k:03d}.png"
            path = self.predictions_dir / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            pil.save(path)
            return str(rel)
        except Exception as err:
            log.warning("PredictionTables: could not save an image (%s)", err)
            return None

    def _write_jsonl(self, stage: str, step: int, source: str, rows: list[dict[str, Any]]) -> None:
        path = self.predictions_dir / f"{stage}-step{step}-{_safe_name(source)}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps({k: v for k, v in row.items() if not k.startswith("_")}, default=_jsonable) + "\n")
        self.written.append(path)

    @staticmethod
    def _wandb_logger(trainer: pl.Trainer) -> Any:
        try:
            from pytorch_lightning.loggers import WandbLogger
        except ImportError:  # pragma: no cover
            return None
        return next((lg for lg in trainer.loggers if isinstance(lg, WandbLogger)), None)

    @staticmethod
    def _table(rows: list[dict[str, Any]]) -> Any:
        import wandb

        table = wandb.Table(columns=COLUMNS)
        for row in rows:
            image = None
            if row["_image"] is not None:
                boxes = {}
                for role, class_id in (("prediction", 0), ("reference", 1)):
                    data = [
                        {
                            "position": {
                                "minX": b["box"][0],
                                "minY": b["box"][1],
                                "maxX": b["box"][2],
                                "maxY": b["box"][3],
                            },
                            "domain": "pixel",
                            "class_id": class_id,
                            "box_caption": str(b["label"]) if b.get("label") else role,
                        }
                        for b in row["_boxes"].get(role, [])
                    ]
                    if data:
                        boxes[role] = {"box_data": data, "class_labels": {0: "prediction", 1: "reference"}}
                image = wandb.Image(np.asarray(row["_image"]), boxes=boxes or None)
            table.add_data(
                str(row["id"]), image, row["prompt"], _cell(row["prediction"]), _cell(row["references"]), row["score"]
            )
        return table


def _cell(value: Any) -> Any:
    """Text for a table cell: strings as they are, anything else as JSON (a W&B column keeps one type)."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, default=_jsonable)


def _task_of(pl_module: Any, source: str) -> Any:
    """The task object of an evaluation source (``pl_module.task_for``), or None."""
    finder = getattr(pl_module, "task_for", None)
    return finder(source) if callable(finder) else None
