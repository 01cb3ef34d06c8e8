"""No-repeat-n-gram blocking (fairseq ``NGramRepeatBlock``), vectorised over hypotheses.

For every hypothesis, any token that would complete an n-gram already present
in its prefix gets log-prob -inf.  The prefix is the whole decoder row,
BOS and forced prefix tokens included, as in fairseq.
"""

from __future__ import annotations

import torch
from torch import Tensor


def block_repeated_ngrams(tokens: Tensor, lprobs: Tensor, ngram_size: int, rows: Tensor | None = None) -> Tensor:
    """In place on ``lprobs`` (R, V); ``tokens`` (R, T) are the prefixes so far.

    ``rows`` (R,) bool restricts blocking to some hypotheses (fairseq skips
    hypotheses still inside a forced prefix).
    """
    n = ngram_size
    num_ngrams = tokens.size(1) - n + 1  # n-grams fully inside the prefix
    if n <= 0 or num_ngrams <= 0:
        return lprobs
    if n == 1:
        match = torch.ones(tokens.size(0), num_ngrams, dtype=torch.bool, device=tokens.device)
    else:
        heads = tokens[:, : tokens.size(1) - 1].unfold(1, n - 1, 1)[:, :num_ngrams]  # (R, G, n-1)
        last = tokens[:, tokens.size(1) - n + 1 :]  # (R, n-1)
        match = (heads == last.unsqueeze(1)).all(-1)  # (R, G)
    if rows is not None:
        match &= rows.unsqueeze(1)
    followers = tokens[:, n - 1 :]  # token completing each n-gram, (R, G)
    # -inf where an n-gram matches, +inf elsewhere; "amin" keeps lprobs untouched at +inf
    # (no host sync, and duplicate followers are harmless).
    inf = torch.tensor(float("inf"), dtype=lprobs.dtype, device=lprobs.device)
    lprobs.scatter_reduce_(1, followers, torch.where(match, -inf, inf), reduce="amin")
    return lprobs
