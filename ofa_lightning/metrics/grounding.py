"""Visual grounding (RefCOCO/+/g) Acc@0.5 and mean IoU as a DDP-safe torchmetrics Metric.

OFA's rule: a predicted box is correct iff IoU >= 0.5 *and* the intersection has positive width and
height. Boxes are ``x1, y1, x2, y2`` in pixels of the original image.

IoU is computed in float64 as ``inter / union`` (union clamped at 1e-6 against division by zero). OFA
writes ``inter / (union + 1e-6)`` in float32, where the 1e-6 is absorbed for any union above a few
square pixels, so the two agree on real boxes; an IoU of exactly 0.5 is correct here.

A predicted box with a non-finite coordinate or ``x2 < x1`` / ``y2 < y1`` scores IoU 0, is wrong and is
counted in ``invalid`` instead of raising: a model early in training emits such boxes. Invalid
*targets* are data errors and raise ``ValueError``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Union

import torch
from torch import Tensor
from torchvision.ops import box_area

from ._base import IdsLike, SampleScoreMetric

__all__ = ["GroundingAccuracy", "grounding_iou"]

BoxesLike = Union[Tensor, Sequence[Sequence[float]]]


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
    correct = (iou >= threshold) & (wh[:, 0] > 0) & (wh[:, 1] > 0) & ~invalid
    return iou, correct, invalid


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
