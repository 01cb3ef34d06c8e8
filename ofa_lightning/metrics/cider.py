"""CIDEr-D as pure functions (no torchmetrics), usable as SCST rewards.

Algorithm (Vedantam et al. 2015, "D" variant as in the COCO caption evaluation):

* captions are whitespace-split token strings; n-grams n = 1..4 with their counts;
* TF-IDF weight of an n-gram g in a caption: ``tf(g) * (ref_len - log(max(1, df(g))))`` where ``df(g)``
  is the number of *images* whose reference set contains g and ``ref_len = log(number of images)``;
* for each n, similarity to one reference = ``sum_g min(w_c(g), w_r(g)) * w_r(g) / (|w_c| |w_r|)``
  (clipping) times the Gaussian length penalty ``exp(-(l_c - l_r)^2 / (2 sigma^2))``, sigma = 6;
  the "length" is counted in bigrams, as in the reference code (only differences of lengths are used,
  so this equals counting tokens for non-empty captions);
* per-image score = mean over n of the similarities averaged over the references, times 10.

The document frequencies normally come from the references of the evaluated images
(:meth:`CiderDfTable.from_references`); SCST uses a fixed table from the training references
(:meth:`CiderDfTable.from_pickle` reads the ``coco-train-words.p`` style cache).
"""

from __future__ import annotations

import math
import os
import pickle
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

__all__ = ["CiderDfTable", "cider_d_scores", "ngram_counts"]

NGram = tuple[str, ...]


def ngram_counts(text: str, n: int = 4) -> Counter:
    """Counts of all 1..n-grams of ``text.split()``."""
    words = text.split()
    counts: Counter = Counter()
    for k in range(1, n + 1):
        for i in range(len(words) - k + 1):
            counts[tuple(words[i : i + k])] += 1
    return counts


@dataclass
class CiderDfTable:
    """Document frequencies of n-grams plus the number of documents (images) they were counted over."""

    document_frequency: Mapping[NGram, float] = field(repr=False)
    num_documents: float
    n: int = 4

    @property
    def log_ref_len(self) -> float:
        """``log(num_documents)``: the ``ref_len`` term of the CIDEr-D IDF."""
        return math.log(float(self.num_documents))

    @classmethod
    def from_references(cls, references: Sequence[Sequence[str]], n: int = 4) -> CiderDfTable:
        """df(g) = number of reference *sets* (one per image) in which n-gram g occurs at least once."""
        df: Counter = Counter()
        for refs in references:
            seen = set()
            for ref in refs:
                seen.update(ngram_counts(ref, n))
            df.update(seen)
        return cls(dict(df), len(references), n)

    @classmethod
    def from_pickle(cls, path: str | os.PathLike, n: int = 4) -> CiderDfTable:
        """Load an OFA / self-critical.pytorch df cache: ``{'document_frequency': {ngram: df}, 'ref_len': N}``.

        ``ref_len`` in those files is the raw number of images (the scorer takes its log). Read with the restricted
        unpickler (:mod:`ofa_lightning.safe_pickle`): plain data and a ``defaultdict(float)`` only; a pickle that
        would import or call anything else is refused (``UnsafePickleError``) without running it.
        """
        from ofa_lightning.safe_pickle import DEFAULTDICT_OF_NUMBERS, safe_load_file

        obj = safe_load_file(path, allowed_globals=DEFAULTDICT_OF_NUMBERS, encoding="latin1", errors="strict")
        if not isinstance(obj, Mapping) or "document_frequency" not in obj or "ref_len" not in obj:
            raise ValueError(f"{path}: expected a dict with 'document_frequency' and 'ref_len'")
        return cls(dict(obj["document_frequency"]), float(obj["ref_len"]), n)

    def to_pickle(self, path: str | os.PathLike) -> None:
        """Write the same format :meth:`from_pickle` reads."""
        with open(path, "wb") as f:
            pickle.dump({"document_frequency": dict(self.document_frequency), "ref_len": self.num_documents}, f)


def _tfidf(counts: Counter, df: Mapping[NGram, float], ref_len: float, n: int):
    vec: list[dict[NGram, float]] = [{} for _ in range(n)]
    norm = [0.0] * n
    length = 0
    for gram, tf in counts.items():
        k = len(gram) - 1
        w = float(tf) * (ref_len - math.log(max(1.0, float(df.get(gram, 0.0)))))
        vec[k][gram] = w
        norm[k] += w * w
        if k == 1:  # the reference implementation measures length in bigrams
            length += tf
    return vec, [math.sqrt(x) for x in norm], length


def _sim(cand, ref, n: int, sigma: float) -> list[float]:
    vec_c, norm_c, len_c = cand
    vec_r, norm_r, len_r = ref
    penalty = math.exp(-(float(len_c - len_r) ** 2) / (2 * sigma**2))
    out = []
    for k in range(n):
        rk = vec_r[k]
        val = 0.0
        for gram, w in vec_c[k].items():
            wr = rk.get(gram, 0.0)
            val += min(w, wr) * wr
        if norm_c[k] != 0 and norm_r[k] != 0:
            val /= norm_c[k] * norm_r[k]
        out.append(val * penalty)
    return out


def cider_d_scores(
    candidates: Sequence[str],
    references: Sequence[Sequence[str]],
    df: CiderDfTable | Mapping[NGram, float],
    ref_len: float | None = None,
    n: int = 4,
    sigma: float = 6.0,
) -> list[float]:
    """Per-candidate CIDEr-D (already x10, as pycocoevalcap reports it).

    Args:
        candidates: one tokenized caption (space-separated tokens) per image.
        references: the tokenized reference captions of each image (non-empty lists).
        df: a :class:`CiderDfTable` or a plain ``{ngram_tuple: document_frequency}`` mapping.
        ref_len: ``log(number of documents)``; defaults to ``df.log_ref_len`` for a table, required
            for a plain mapping.
    """
    if len(candidates) != len(references):
        raise ValueError(f"{len(candidates)} candidates but {len(references)} reference sets")
    if isinstance(df, CiderDfTable):
        ref_len = df.log_ref_len if ref_len is None else ref_len
        df = df.document_frequency
    elif ref_len is None:
        raise ValueError("ref_len (log of the number of documents) is required when df is a plain mapping")
    scores = []
    for cand, refs in zip(candidates, references):
        if len(refs) == 0:
            raise ValueError("every candidate needs at least one reference")
        vc = _tfidf(ngram_counts(cand, n), df, ref_len, n)
        acc = [0.0] * n
        for ref in refs:
            sims = _sim(vc, _tfidf(ngram_counts(ref, n), df, ref_len, n), n, sigma)
            acc = [a + s for a, s in zip(acc, sims)]
        scores.append(sum(acc) / n / len(refs) * 10.0)
    return scores
