"""Text recognition scores (OFA's ``ocr`` task, OFA-Sys/OFA ``tasks/mm_tasks/ocr.py``): exact-match accuracy and
1 - normalised edit distance, both on the strings with every space removed.

``acc`` = mean of ``hyp == ref``; ``ned`` = 1 - mean of ``levenshtein(hyp, ref) / max(len(hyp), len(ref))`` (a pair
of empty strings counts as distance 0). The character edit distance is torchmetrics'.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchmetrics.functional.text import edit_distance

from ._base import IdsLike, SampleScoreMetric
from .registry import register_metric

__all__ = ["OCRScores"]


def _squeeze(text: str) -> str:
    return "".join(text.split())


@register_metric("ocr")
class OCRScores(SampleScoreMetric):
    """``{"acc", "ned"}`` over ``update(preds, refs, ids=None)`` (``refs[i]`` a string or a one-item list)."""

    value_names = ("acc", "ned")

    def update(self, preds: Sequence[str], refs: Sequence[str | Sequence[str]], ids: IdsLike = None) -> None:
        if isinstance(preds, str) or len(preds) != len(refs):
            raise ValueError(f"preds must be a list of strings with one entry per reference ({len(refs)})")
        hyps = [_squeeze(p) for p in preds]
        targets = [_squeeze(r if isinstance(r, str) else r[0]) for r in refs]
        dist = edit_distance(hyps, targets, reduction="none").to(torch.float64) if hyps else torch.zeros(0)
        longest = torch.tensor([max(len(h), len(t), 1) for h, t in zip(hyps, targets)], dtype=torch.float64)
        acc = torch.tensor([float(h == t) for h, t in zip(hyps, targets)], dtype=torch.float64)
        self._accumulate(torch.stack([acc, 1.0 - dist / longest], dim=1), ids)

    def compute(self) -> dict[str, Tensor]:
        means = self.means()
        return {"acc": means[0], "ned": means[1]}
