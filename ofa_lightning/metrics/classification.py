"""Exact-match accuracy on generated label strings (SNLI-VE, ImageNet class names, GLUE labels).

OFA solves classification tasks by generating (or ranking) the label text, so accuracy is string
equality after a light normalisation (:func:`normalize_label`: lower-case, strip, collapse whitespace).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from ._base import IdsLike, SampleScoreMetric
from .registry import register_metric

__all__ = ["TextAccuracy", "normalize_label"]


def normalize_label(text: str) -> str:
    """Lower-case, strip and collapse internal whitespace."""
    return " ".join(text.lower().split())


@register_metric("accuracy")
class TextAccuracy(SampleScoreMetric):
    """Fraction of predictions equal to the target after normalisation.

    ``update(preds, targets, ids=None)``: ``targets[i]`` is a string, or a list of acceptable strings
    (e.g. ImageNet class synonyms) of which any may match.

    Args:
        normalize: ``str -> str`` applied to both sides; ``None`` compares raw strings.
    """

    value_names = ("correct",)

    def __init__(self, normalize: Callable[[str], str] | None = normalize_label, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.normalize = normalize

    def _n(self, s: str) -> str:
        return self.normalize(s) if self.normalize is not None else s

    def update(self, preds: Sequence[str], targets: Sequence[str | Sequence[str]], ids: IdsLike = None) -> None:
        if isinstance(preds, str) or len(preds) != len(targets):
            raise ValueError(f"preds must be a list of strings with one entry per target ({len(targets)})")
        correct = []
        for p, t in zip(preds, targets):
            options = [t] if isinstance(t, str) else list(t)
            correct.append(float(self._n(p) in {self._n(o) for o in options}))
        self._accumulate(torch.tensor(correct, dtype=torch.float64), ids)

    def compute(self) -> Tensor:
        return self.means()[0]
