"""Corpus BLEU-1..n exactly as the COCO caption evaluation computes it (pure functions).

* Captions are whitespace-split. For each image: ``guess[k]`` = number of candidate k-grams,
  ``correct[k]`` = candidate k-gram counts clipped by the maximum count of that k-gram in any single
  reference, ``reflen`` = the reference length *closest* to the candidate length (ties -> the shorter).
* These statistics are summed over the corpus; BLEU-k = (prod_{i<=k} (correct_i + 1e-15) / (guess_i + 1e-9))^(1/k),
  times the brevity penalty ``exp(1 - reflen/testlen)`` when ``testlen < reflen`` (with the same
  epsilons, ``ratio = (testlen + 1e-15) / (reflen + 1e-9)``).

The statistics are additive, so :func:`bleu_stats` per image + :func:`bleu_from_stats` on the sum gives
the corpus score.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

__all__ = ["bleu_stats", "bleu_from_stats", "bleu_corpus"]

_TINY = 1e-15
_SMALL = 1e-9


def _counts(words: list[str], n: int) -> Counter:
    c: Counter = Counter()
    for k in range(1, n + 1):
        for i in range(len(words) - k + 1):
            c[tuple(words[i : i + k])] += 1
    return c


def bleu_stats(candidate: str, references: Sequence[str], n: int = 4) -> list[int]:
    """``[testlen, reflen, guess_1..guess_n, correct_1..correct_n]`` for one image."""
    if len(references) == 0:
        raise ValueError("BLEU needs at least one reference")
    words = candidate.split()
    testlen = len(words)
    max_ref: Counter = Counter()
    ref_lens = []
    for ref in references:
        rw = ref.split()
        ref_lens.append(len(rw))
        for gram, c in _counts(rw, n).items():
            if c > max_ref[gram]:
                max_ref[gram] = c
    reflen = min((abs(length - testlen), length) for length in ref_lens)[1]
    guess = [max(0, testlen - k + 1) for k in range(1, n + 1)]
    correct = [0] * n
    for gram, c in _counts(words, n).items():
        correct[len(gram) - 1] += min(max_ref.get(gram, 0), c)
    return [testlen, reflen, *guess, *correct]


def bleu_from_stats(stats: Sequence[float], n: int = 4) -> list[float]:
    """BLEU-1..n from summed :func:`bleu_stats`."""
    testlen, reflen = float(stats[0]), float(stats[1])
    guess, correct = stats[2 : 2 + n], stats[2 + n : 2 + 2 * n]
    out, prod = [], 1.0
    for k in range(n):
        prod *= (float(correct[k]) + _TINY) / (float(guess[k]) + _SMALL)
        out.append(prod ** (1.0 / (k + 1)))
    ratio = (testlen + _TINY) / (reflen + _SMALL)
    if ratio < 1:
        bp = math.exp(1 - 1 / ratio)
        out = [b * bp for b in out]
    return out


def bleu_corpus(candidates: Sequence[str], references: Sequence[Sequence[str]], n: int = 4) -> list[float]:
    """Corpus BLEU-1..n of tokenized ``candidates`` against their reference sets."""
    if len(candidates) != len(references):
        raise ValueError(f"{len(candidates)} candidates but {len(references)} reference sets")
    total = [0] * (2 + 2 * n)
    for cand, refs in zip(candidates, references):
        total = [a + b for a, b in zip(total, bleu_stats(cand, refs, n))]
    return bleu_from_stats(total, n)
