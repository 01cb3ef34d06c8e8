"""Candidate selection by sampling (fairseq ``search.Sampling``).

Each of the ``N`` hypotheses per input is an independent sample; the outer loop
(``beam_search.search``) treats them like beams, so finished samples are
finalised exactly as in fairseq.  Random draws come from ``torch.multinomial``
with an optional ``torch.Generator`` and follow fairseq's call pattern, so a
generator seeded with ``s`` reproduces fairseq/ModelScope run after
``torch.manual_seed(s)`` on the same device.
"""

from __future__ import annotations

import torch
from torch import Tensor


def top_p_filter(lprobs: Tensor, top_p: float) -> tuple[Tensor, Tensor]:
    """Smallest set of tokens whose probability mass reaches ``top_p`` (nucleus).

    ``lprobs`` (B, K, V) → (probs, indices), both (B, K, W): probabilities sorted
    descending, zeroed outside the nucleus, truncated to the widest nucleus.
    """
    probs = lprobs.exp()
    sorted_probs, sorted_indices = probs.sort(dim=-1, descending=True)
    inside = sorted_probs.cumsum(dim=-1).lt(top_p)
    # one more token so that the kept mass exceeds p
    last = inside.cumsum(dim=-1)[..., -1:].clamp(0, inside.size(-1) - 1)
    inside = inside.scatter(-1, last, True)
    width = int(last.max()) + 1
    kept = sorted_probs[..., :width].masked_fill(~inside[..., :width], 0)
    return kept, sorted_indices[..., :width]


def sampling_candidates(
    step: int,
    lprobs: Tensor,
    prev_scores: Tensor | None,
    top_k: int = -1,
    top_p: float = -1.0,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """One sampling step.

    Args:
        lprobs: (B, N, V) next-token log-probs of every hypothesis.
        prev_scores: (B, N) cumulative scores so far (unused at step 0).
    Returns:
        scores (B, N) cumulative, tokens (B, N), source hypothesis (B, N).
    """
    bsz, n, _ = lprobs.shape
    if step == 0:  # all hypotheses are identical: sample N times from the first
        lprobs = lprobs[:, :1]
    if top_p > 0:
        probs, top_indices = top_p_filter(lprobs, top_p)
    elif top_k > 0:
        top_lprobs, top_indices = lprobs.topk(top_k, dim=-1)
        probs = top_lprobs.exp()
    else:
        probs, top_indices = lprobs.exp(), None

    if step == 0:
        choice = torch.multinomial(probs.view(bsz, -1), n, replacement=True, generator=generator).view(bsz, n)
        probs = probs.expand(bsz, n, -1)
    else:
        choice = torch.multinomial(probs.view(bsz * n, -1), 1, replacement=True, generator=generator).view(bsz, n)

    scores = probs.gather(2, choice.unsqueeze(-1)).log().view(bsz, n)
    if top_indices is not None:
        tokens = top_indices.expand(bsz, n, -1).gather(2, choice.unsqueeze(-1)).squeeze(2)
    else:
        tokens = choice
    if step == 0:
        beams = torch.zeros_like(tokens)
    else:
        beams = torch.arange(n, device=tokens.device).repeat(bsz, 1)
        scores = scores + prev_scores
    return scores, tokens, beams
