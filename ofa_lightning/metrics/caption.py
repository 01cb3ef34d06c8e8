"""Caption metrics (CIDEr-D, BLEU-1..4, ROUGE-L) as DDP-safe torchmetrics.

All three share one state layout: per sample an id, the tokenized prediction and the tokenized
references, stored as UTF-8 byte tensors (see :mod:`._base`). ``compute()`` decodes the gathered
samples, drops padded duplicates by id (first occurrence wins) and runs the pure scorers from
:mod:`.cider`, :mod:`.bleu` and :mod:`.rouge_l`, which reproduce pycocoevalcap's ``Cider``, ``Bleu(4)``
and ``Rouge`` on the same tokenized strings.

Tokenization defaults to :func:`~.tokenize.simple_tokenize`: pycocoevalcap's Stanford PTBTokenizer
pipeline re-implemented without Java (exact; see :mod:`.ptb_tokenizer` and docs/metrics.md); pass
``tokenizer=None`` when the strings are already tokenized. CIDEr is not decomposable over batches
(its IDF depends on the whole reference set), hence the sample-level states.

Values are on pycocoevalcap's scale: CIDEr-D 1.382 is reported as "138.2" in papers.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from ._base import IdsLike, TypedListStateMetric, decode_strings, encode_strings, first_occurrence_mask, ids_to_tensor
from .bleu import bleu_corpus
from .cider import CiderDfTable, cider_d_scores
from .registry import register_metric
from .rouge_l import rouge_l_scores
from .tokenize import simple_tokenize

__all__ = ["CaptionMetric", "CIDErD", "BLEU", "ROUGEL", "CiderDfTable", "cider_d_scores", "simple_tokenize"]

Tokenizer = Callable[[str], str] | None


class CaptionMetric(TypedListStateMetric):
    """Base class: stores (id, prediction, references) per sample as tensors.

    Args:
        tokenizer: ``str -> str`` applied to predictions and references at update time;
            ``None`` keeps the strings as given (they must already be space-tokenized).
    """

    def __init__(self, tokenizer: Tokenizer = simple_tokenize, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tokenizer = tokenizer
        self.add_typed_list_state("sample_ids", torch.long)
        self.add_typed_list_state("pred_bytes", torch.uint8)
        self.add_typed_list_state("pred_lens", torch.long)
        self.add_typed_list_state("ref_bytes", torch.uint8)
        self.add_typed_list_state("ref_lens", torch.long)
        self.add_typed_list_state("ref_counts", torch.long)

    def _tok(self, s: str) -> str:
        return self.tokenizer(s) if self.tokenizer is not None else s

    def update(self, preds: Sequence[str], refs: Sequence[Sequence[str]], ids: IdsLike = None) -> None:
        """Add a batch.

        Args:
            preds: one generated caption per sample.
            refs: the reference captions of each sample (non-empty list of strings).
            ids: one non-negative id per sample (e.g. the COCO image id); repeated ids — from a
                padded ``DistributedSampler`` — are counted once. ``None``: no de-duplication.
        """
        if isinstance(preds, str) or len(preds) != len(refs):
            raise ValueError(f"preds must be a list of strings with one entry per refs item ({len(refs)})")
        flat_refs: list[str] = []
        counts = []
        for r in refs:
            if isinstance(r, str) or len(r) == 0:
                raise ValueError("each refs item must be a non-empty list of strings")
            flat_refs.extend(self._tok(x) for x in r)
            counts.append(len(r))
        pb, pl = encode_strings([self._tok(p) for p in preds], self.device)
        rb, rl = encode_strings(flat_refs, self.device)
        self.sample_ids.append(ids_to_tensor(ids, len(preds), self.device))
        self.pred_bytes.append(pb)
        self.pred_lens.append(pl)
        self.ref_bytes.append(rb)
        self.ref_lens.append(rl)
        self.ref_counts.append(torch.tensor(counts, dtype=torch.long, device=self.device))

    def samples(self) -> tuple[list[int], list[str], list[list[str]]]:
        """De-duplicated (ids, tokenized predictions, tokenized reference lists) in gathered order."""
        ids = self.list_state("sample_ids")
        preds = decode_strings(self.list_state("pred_bytes"), self.list_state("pred_lens"))
        flat = decode_strings(self.list_state("ref_bytes"), self.list_state("ref_lens"))
        counts = self.list_state("ref_counts").tolist()
        if not (len(preds) == len(counts) == ids.numel()) or sum(counts) != len(flat):
            raise RuntimeError("inconsistent caption metric states")
        refs, pos = [], 0
        for c in counts:
            refs.append(flat[pos : pos + c])
            pos += c
        keep = first_occurrence_mask(ids).tolist()
        ids_l = ids.tolist()
        sel = [i for i, k in enumerate(keep) if k]
        return [ids_l[i] for i in sel], [preds[i] for i in sel], [refs[i] for i in sel]

    def _scalar(self, value: float) -> Tensor:
        return torch.tensor(value, dtype=torch.float64, device=self.device)


@register_metric("cider")
class CIDErD(CaptionMetric):
    """Corpus CIDEr-D (mean of per-image scores, x10 like pycocoevalcap).

    Args:
        df: ``None`` (default) computes document frequencies from the references of the evaluated
            (de-duplicated) images, as pycocoevalcap does; or a :class:`CiderDfTable`, or a path to an
            OFA-style ``*-words.p`` pickle (:meth:`CiderDfTable.from_pickle`) for a fixed corpus df.
        n, sigma: n-gram order and length-penalty width.
    """

    def __init__(
        self,
        df: None | CiderDfTable | str | os.PathLike = None,
        n: int = 4,
        sigma: float = 6.0,
        tokenizer: Tokenizer = simple_tokenize,
        **kwargs: Any,
    ) -> None:
        super().__init__(tokenizer=tokenizer, **kwargs)
        if df is not None and not isinstance(df, CiderDfTable):
            df = CiderDfTable.from_pickle(df, n=n)
        self.df = df
        self.n = n
        self.sigma = sigma

    def per_sample(self) -> dict[int, float]:
        """``{id: CIDEr-D}`` for the de-duplicated samples (ids < 0 are collapsed; use with ids)."""
        ids, preds, refs = self.samples()
        return dict(zip(ids, self._scores(preds, refs)))

    def _scores(self, preds: list[str], refs: list[list[str]]) -> list[float]:
        if not preds:
            return []
        table = self.df if self.df is not None else CiderDfTable.from_references(refs, self.n)
        return cider_d_scores(preds, refs, table, n=self.n, sigma=self.sigma)

    def compute(self) -> Tensor:
        _, preds, refs = self.samples()
        scores = self._scores(preds, refs)
        return self._scalar(sum(scores) / len(scores) if scores else 0.0)


@register_metric("bleu")
class BLEU(CaptionMetric):
    """Corpus BLEU-1..n ("closest" reference length), returned as ``{"bleu_1": ..., "bleu_n": ...}``."""

    def __init__(self, n: int = 4, tokenizer: Tokenizer = simple_tokenize, **kwargs: Any) -> None:
        super().__init__(tokenizer=tokenizer, **kwargs)
        self.n = n

    def compute(self) -> dict[str, Tensor]:
        _, preds, refs = self.samples()
        scores = bleu_corpus(preds, refs, self.n) if preds else [0.0] * self.n
        return {f"bleu_{k + 1}": self._scalar(s) for k, s in enumerate(scores)}


@register_metric("rouge_l")
class ROUGEL(CaptionMetric):
    """Mean sentence ROUGE-L F-measure (beta = 1.2, max precision/recall over references)."""

    def __init__(self, beta: float = 1.2, tokenizer: Tokenizer = simple_tokenize, **kwargs: Any) -> None:
        super().__init__(tokenizer=tokenizer, **kwargs)
        self.beta = beta

    def compute(self) -> Tensor:
        _, preds, refs = self.samples()
        scores = rouge_l_scores(preds, refs, self.beta)
        return self._scalar(sum(scores) / len(scores) if scores else 0.0)
