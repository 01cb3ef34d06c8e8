"""Visual grounding (RefCOCO/+/g) Acc@0.5 and mean IoU as a DDP-safe torchmetrics Metric.

Acc@0.5 is OFA's own rule (``eval_refcoco._calculate_ap_score`` in OFA-Sys/OFA ``utils/eval_utils.py``,
the same function as ``RefcocoTask._calculate_ap_score``), computed the way OFA computes it: boxes
``x1, y1, x2, y2`` in pixels of the original image (OFA de-quantises the 4 generated bins as
``bin / (num_bins - 1) * max_image_size / resize_ratio``), cast to float32, and a prediction is correct iff

    inter / (area_pred + area_target - inter + 1e-6) >= threshold   (float32, ">=": exactly 0.5 counts)
    and the intersection has positive width and height.

So touching boxes and zero-width/zero-height boxes (prediction or target) are never correct, and the 1e-6
makes an IoU of exactly 0.5 fail when the union is tiny (a 1x1 box against 1x2 fails, 4x4 against 4x8
passes), as in OFA
(``tests/test_metrics_grounding.py`` compares against OFA's function on random, boundary and degenerate
boxes).

IoU (``miou``; OFA reports none) is ``inter / union`` in float64 with the intersection clamped at 0 and
the union at 1e-6, torchvision's ``box_iou`` on valid boxes.

A predicted box with a non-finite coordinate or ``x2 < x1`` / ``y2 < y1`` scores IoU 0, is wrong (as it is
in OFA, whose intersection then has negative width) and is counted in ``invalid`` instead of raising: a
model early in training emits such boxes. Invalid *targets* are data errors and raise ``ValueError``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torchvision.ops import box_area

from ._base import IdsLike, SampleScoreMetric
from .registry import register_metric

__all__ = ["GroundingAccuracy", "grounding_iou", "ofa_correct"]

BoxesLike = Tensor | Sequence[Sequence[float]]


def _as_boxes(boxes: BoxesLike, name: str) -> Tensor:
    t = boxes.detach().to(torch.float64) if isinstance(boxes, Tensor) else torch.tensor(boxes, dtype=torch.float64)
    if t.ndim == 1 and t.numel() == 4:
        t = t.unsqueeze(0)
    if t.ndim != 2 or t.shape[1] != 4:
        raise ValueError(f"{name} must have shape (N, 4), got {tuple(t.shape)}")
    return t


def grounding_iou(pred: BoxesLike, target: BoxesLike, threshold: float = 0.5) -> tuple[Tensor, Tensor, Tensor]:
    """Element-wise (IoU, correct, invalid) for matched pred/target rows (float64, bool, bool)."""
    p, g = _as_boxes(pred, "pred boxes"), _as_boxes(target, "target boxes")
    if p.shape[0] != g.shape[0]:
        raise ValueError(f"{p.shape[0]} predicted boxes but {g.shape[0]} targets")
    if not torch.isfinite(g).all() or (g[:, 2:] < g[:, :2]).any():
        raise ValueError("target boxes must be finite with x2 >= x1 and y2 >= y1")
    invalid = ~torch.isfinite(p).all(dim=1) | (p[:, 2:] < p[:, :2]).any(dim=1)
    p = torch.where(invalid.unsqueeze(1), torch.zeros_like(p), p)
    lt = torch.maximum(p[:, :2], g[:, :2])
    rb = torch.minimum(p[:, 2:], g[:, 2:])
    wh = rb - lt
    inter = wh.clamp(min=0).prod(dim=1)
    union = box_area(p) + box_area(g) - inter
    iou = torch.where(invalid, torch.zeros_like(inter), inter / union.clamp(min=1e-6))
    correct = ofa_correct(p, g, threshold) & ~invalid
    return iou, correct, invalid


def ofa_correct(pred: Tensor, target: Tensor, threshold: float = 0.5) -> Tensor:
    """OFA's ``_calculate_ap_score`` decision per row (bool), in float32 with OFA's operation order."""
    hyps, refs = pred.to(torch.float32), target.to(torch.float32)
    lt = torch.where(hyps[:, :2] < refs[:, :2], refs[:, :2], hyps[:, :2])
    rb = torch.where(hyps[:, 2:] < refs[:, 2:], hyps[:, 2:], refs[:, 2:])
    area_p = (hyps[:, 2] - hyps[:, 0]) * (hyps[:, 3] - hyps[:, 1])
    area_t = (refs[:, 2] - refs[:, 0]) * (refs[:, 3] - refs[:, 1])
    inter_w, inter_h = rb[:, 0] - lt[:, 0], rb[:, 1] - lt[:, 1]
    inter = inter_w * inter_h
    ious = inter / (area_p + area_t - inter + 1e-6)
    return (ious >= threshold) & (inter_w > 0) & (inter_h > 0)


@register_metric("grounding")
class GroundingAccuracy(SampleScoreMetric):
    """Acc@``threshold`` and mean IoU.

    ``update(pred_boxes, target_boxes, ids=None)`` with (N, 4) xyxy pixel boxes (tensors or lists).
    ``compute()`` returns ``{"acc": ..., "miou": ..., "invalid": number of invalid predictions}``.
    """

    value_names = ("correct", "iou", "invalid")

    def __init__(self, threshold: float = 0.5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.threshold = threshold

    def update(self, pred_boxes: BoxesLike, target_boxes: BoxesLike, ids: IdsLike = None) -> None:
        iou, correct, invalid = grounding_iou(pred_boxes, target_boxes, self.threshold)
        self._accumulate(torch.stack([correct.double(), iou, invalid.double()], dim=1), ids)

    @property
    def invalid(self) -> Tensor:
        """Number of invalid predicted boxes (after de-duplication by id)."""
        return self.totals()[0][2]

    def compute(self) -> dict[str, Tensor]:
        total, n = self.totals()
        mean = total / n.clamp_min(1).to(total.dtype)
        return {"acc": mean[0], "miou": mean[1], "invalid": total[2]}
