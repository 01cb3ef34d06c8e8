"""Per-row scores of predictions (prediction tables): exact match, VQA's soft score, box IoU. The task metrics
(corpus CIDEr, official VQA accuracy, Acc@0.5) live in :mod:`ofa_lightning.metrics`."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["row_score", "exact_match", "soft_score", "is_box", "box_iou"]


def row_score(prediction: Any, reference: Any) -> float | None:
    """A per-row indicator (not the task metric): VQA soft score for a ``{answer: confidence}`` reference, box IoU
    for a box, exact match for a string; None otherwise (captions: the corpus metrics say more)."""
    if reference is None:
        return None
    if is_box(reference) and is_box(prediction):
        return box_iou(prediction, reference)
    return soft_score(prediction, reference)


def exact_match(prediction: Any, reference: Any) -> float | None:
    """1.0 / 0.0 for a string prediction against a string reference (case and outer spaces ignored)."""
    if isinstance(reference, str) and isinstance(prediction, str):
        return float(prediction.strip().lower() == reference.strip().lower())
    return None


def soft_score(prediction: Any, reference: Any) -> float | None:
    """``reference[prediction]`` of a ``{answer: confidence}`` reference (VQA's soft score)."""
    if isinstance(reference, Mapping) and isinstance(prediction, str):
        try:
            return float(reference.get(prediction, 0.0))
        except (TypeError, ValueError):
            return None
    return exact_match(prediction, reference)


def is_box(value: Any) -> bool:
    return (
        isinstance(value, (list, tuple))
        and len(value) == 4
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    )


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two ``[x0, y0, x1, y1]`` boxes (0 for a NaN / empty box)."""
    if any(math.isnan(float(v)) for v in list(a) + list(b)):
        return 0.0
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = max(0.0, a[2] - a[0]) * max(0.0, a[3] - a[1]) + max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
