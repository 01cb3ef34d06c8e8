"""Sentence ROUGE-L (LCS F-measure, beta = 1.2) as in the COCO caption evaluation (pure functions).

Per image: for every reference, precision = LCS / len(candidate) and recall = LCS / len(reference);
take the *maximum* precision and the maximum recall over references independently, then
``F = (1 + beta^2) P R / (R + beta^2 P)`` (0 if either is 0). The corpus score is the mean over images.

Captions are split on single spaces (``str.split(" ")``) like the reference code, so an empty caption is
one empty token; this only matters for empty strings when the tokenizer joins tokens with one space.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["lcs_length", "rouge_l_scores"]


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence (O(len(a) * len(b)) dynamic programme, one row kept)."""
    if len(a) < len(b):
        a, b = b, a
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, start=1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def rouge_l_scores(candidates: Sequence[str], references: Sequence[Sequence[str]], beta: float = 1.2) -> list[float]:
    """Per-image ROUGE-L F-measure."""
    if len(candidates) != len(references):
        raise ValueError(f"{len(candidates)} candidates but {len(references)} reference sets")
    out = []
    for cand, refs in zip(candidates, references):
        if len(refs) == 0:
            raise ValueError("ROUGE-L needs at least one reference")
        tc = cand.split(" ")
        prec, rec = [], []
        for ref in refs:
            tr = ref.split(" ")
            lcs = lcs_length(tr, tc)
            prec.append(lcs / float(len(tc)))
            rec.append(lcs / float(len(tr)))
        p, r = max(prec), max(rec)
        out.append(((1 + beta**2) * p * r) / float(r + beta**2 * p) if p != 0 and r != 0 else 0.0)
    return out
