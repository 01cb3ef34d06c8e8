"""ROUGE-1/2/L F-measure for Gigaword summarisation, as a DDP-safe torchmetrics Metric.

Scoring is delegated per sample to torchmetrics' Java-free ``torchmetrics.functional.text.rouge_score``
(a re-implementation of Google's ``rouge_score`` package: lower-case, non-alphanumerics -> spaces,
Porter stemming of tokens longer than 3 characters via ``nltk`` when ``use_stemmer=True``), which is
what OFA's evaluation uses (HF ``rouge`` with ``use_stemmer=True``). Per-sample F-measures are stored as
tensors so duplicates can be removed by id; the result is their mean (OFA reports the bootstrap "mid",
which estimates the same mean).

OFA additionally pre-processes Gigaword text (lower-casing, tokenisation fixes, digits -> ``#``); pass
such a function as ``preprocess``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics.functional.text import rouge_score

from ._base import IdsLike, SampleScoreMetric
from .registry import register_metric

__all__ = ["RougeN"]


@register_metric("rouge")
class RougeN(SampleScoreMetric):
    """Mean ROUGE-1, ROUGE-2 and ROUGE-L F-measures.

    ``update(preds, targets, ids=None)`` with one reference summary per prediction.
    ``compute()`` returns ``{"rouge1": ..., "rouge2": ..., "rougeL": ...}`` in [0, 1].

    Args:
        use_stemmer: Porter stemming (needs the ``nltk`` package; OFA uses it).
        preprocess: optional ``str -> str`` applied to predictions and targets first.
    """

    value_names = ("rouge1", "rouge2", "rougeL")

    def __init__(self, use_stemmer: bool = True, preprocess: Callable[[str], str] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if use_stemmer:
            try:
                import nltk  # noqa: F401
            except ImportError as e:
                raise ModuleNotFoundError(
                    "RougeN(use_stemmer=True) needs `nltk` (pip install nltk); or pass use_stemmer=False"
                ) from e
        self.use_stemmer = use_stemmer
        self.preprocess = preprocess

    def update(self, preds: Sequence[str], targets: Sequence[str], ids: IdsLike = None) -> None:
        if isinstance(preds, str) or len(preds) != len(targets):
            raise ValueError(f"preds must be a list of strings with one entry per target ({len(targets)})")
        rows = []
        for p, t in zip(preds, targets):
            if self.preprocess is not None:
                p, t = self.preprocess(p), self.preprocess(t)
            s = rouge_score(p, t, use_stemmer=self.use_stemmer, rouge_keys=("rouge1", "rouge2", "rougeL"))
            rows.append([float(s[f"{k}_fmeasure"]) for k in self.value_names])
        self._accumulate(torch.tensor(rows, dtype=torch.float64).reshape(-1, 3), ids)

    def compute(self) -> dict[str, Tensor]:
        return dict(zip(self.value_names, self.means()))
