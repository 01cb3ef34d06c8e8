"""Fused, chunked label-smoothed cross-entropy over the vocabulary (one autograd node).

The plain criterion (``logits.float()`` → ``log_softmax`` → ``gather`` / ``sum``) keeps two fp32 (N, V) tensors for
the backward pass (the upcast logits and the log-probabilities) and builds three more in it (the scatter of the
gather's gradient, the expanded sum gradient, the log-softmax gradient) before casting the result back to the logits'
dtype. With OFA's 59,457-token vocabulary that is 0.24 MB per target token and tensor in fp32: 150 MB each for 640
tokens (batch 32 × 20), several GB for summarisation targets.

:func:`fused_smoothed_ce` saves only the logits it was given (no copy) and one log-sum-exp per row, works on row
chunks of at most ``chunk_rows`` rows in fp32, and writes the gradient straight into one (N, V) tensor of the logits'
dtype.

Per row ``i`` with allowed set ``A_i`` (all of V when ``allowed`` is None), weight ``w_i`` and coefficients
``a_i = 1 − ε − eps_i``, ``e_i = eps_i = ε / max(|A_i| − 1, 1)``::

    lse_i    = log Σ_{j∈A_i} exp x_ij
    nll_i    = w_i · (lse_i − x_i,t)
    smooth_i = w_i · (|A_i| · lse_i − Σ_{j∈A_i} x_ij)
    loss_i   = a_i · nll_i + e_i · smooth_i

    ∂/∂x_ij = w_i · [ (g_loss·(a_i + e_i·|A_i|) + g_nll) · p_ij − (g_loss·a_i + g_nll) · δ_j,t − g_loss·e_i · 1[j∈A_i] ]

with ``p = softmax`` over ``A_i`` (0 outside it). The values equal
:func:`ofa_lightning.training.loss.adjusted_label_smoothed_ce`'s reference path to fp32 rounding (tested).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["fused_smoothed_ce", "CHUNK_ROWS"]

CHUNK_ROWS = 64  # rows per fp32 softmax chunk: 64 × 59,457 fp32 = 15 MB of scratch


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp32 for half/bf16/fp32 logits, fp64 for fp64 ones."""
    return torch.promote_types(dtype, torch.float32)


def _chunk_stats(x: Tensor, t: Tensor, mask: Tensor | None, acc: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
    """(lse, x[target], Σ_allowed x) of one chunk of logits, in ``acc``."""
    xf = x.to(acc)
    if mask is not None:
        xf = xf.masked_fill(~mask, float("-inf"))
        total = xf.masked_fill(~mask, 0.0).sum(-1)
    else:
        total = xf.sum(-1)
    lse = torch.logsumexp(xf, dim=-1)
    picked = xf.gather(-1, t[:, None]).squeeze(-1)
    return lse, picked, total


def _chunk_grad(
    x: Tensor, t: Tensor, mask: Tensor | None, lse: Tensor, coef_p: Tensor, coef_t: Tensor, coef_m: Tensor
) -> Tensor:
    """∂(loss, nll)/∂x of one chunk in ``lse``'s dtype (a fresh tensor; ``x`` is left untouched)."""
    p = x.to(lse.dtype, copy=True)  # a scratch copy even when no cast is needed (in place below)
    if mask is not None:
        p.masked_fill_(~mask, float("-inf"))
    p.sub_(lse[:, None]).exp_()  # softmax over the allowed tokens (exp(−inf) = 0 elsewhere)
    p.mul_(coef_p[:, None])
    if mask is not None:
        p.sub_(mask.to(p.dtype) * coef_m[:, None])
    else:
        p.sub_(coef_m[:, None])
    p[torch.arange(p.shape[0], device=p.device), t] -= coef_t
    return p


def _coefficients(g_loss, g_nll, a, e, weights, count):
    """Per-row factors of p, of the target's one-hot and of the allowed mask in the gradient."""
    zeros = torch.zeros_like(a)
    g_loss = zeros if g_loss is None else g_loss.to(a.dtype)
    g_nll = zeros if g_nll is None else g_nll.to(a.dtype)
    return (weights * (g_loss * (a + e * count) + g_nll), weights * (g_loss * a + g_nll), weights * g_loss * e)


class _FusedSmoothedCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, target, a, e, weights, count, allowed, chunk_rows):
        n = logits.shape[0]
        lse, picked, total = (torch.empty(n, dtype=a.dtype, device=logits.device) for _ in range(3))
        for s in range(0, n, chunk_rows):
            sl = slice(s, s + chunk_rows)
            lse[sl], picked[sl], total[sl] = _chunk_stats(
                logits[sl], target[sl], None if allowed is None else allowed[sl], a.dtype
            )
        nll = weights * (lse - picked)
        loss = a * nll + e * weights * (count * lse - total)
        ctx.save_for_backward(logits, target, lse, a, e, weights, count, allowed)
        ctx.has_allowed, ctx.chunk_rows = allowed is not None, chunk_rows
        return loss, nll

    @staticmethod
    def backward(ctx, g_loss, g_nll):
        logits, target, lse, a, e, weights, count, allowed = ctx.saved_tensors
        allowed = allowed if ctx.has_allowed else None
        coef_p, coef_t, coef_m = _coefficients(g_loss, g_nll, a, e, weights, count)
        grad = torch.empty_like(logits, memory_format=torch.contiguous_format)
        for s in range(0, logits.shape[0], ctx.chunk_rows):
            sl = slice(s, s + ctx.chunk_rows)
            grad[sl] = _chunk_grad(
                logits[sl],
                target[sl],
                None if allowed is None else allowed[sl],
                lse[sl],
                coef_p[sl],
                coef_t[sl],
                coef_m[sl],
            )
        return grad, None, None, None, None, None, None, None


def _prepare(
    n: int,
    vocab: int,
    device,
    acc: torch.dtype,
    target: Tensor,
    epsilon: float,
    weights: Tensor | None,
    allowed: Tensor | None,
    chunk_rows: int,
):
    if target.shape != (n,):
        raise ValueError(f"expected target of shape ({n},), got {tuple(target.shape)}")
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be ≥ 1, got {chunk_rows}")
    if allowed is not None and allowed.shape != (n, vocab):
        raise ValueError(f"expected allowed of shape ({n}, {vocab}), got {tuple(allowed.shape)}")
    count = allowed.sum(-1).to(acc) if allowed is not None else torch.full((n,), float(vocab), device=device, dtype=acc)
    e = epsilon / (count - 1).clamp(min=1)
    a = 1.0 - epsilon - e
    w = torch.ones(n, device=device, dtype=acc) if weights is None else weights.to(device=device, dtype=acc)
    return target.long(), a, e, w, count


def fused_smoothed_ce(
    logits: Tensor,
    target: Tensor,
    epsilon: float = 0.0,
    weights: Tensor | None = None,
    allowed: Tensor | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> tuple[Tensor, Tensor]:
    """Per-token ``(loss, nll)`` for (N, V) ``logits`` of any float dtype (fp32, or fp64 for fp64 logits).

    ``allowed`` (N, V) bool must contain each row's target (the caller's job, as in the reference path).
    Gradients flow to ``logits`` only, in its dtype.
    """
    if logits.dim() != 2:
        raise ValueError(f"expected logits (N, V), got {tuple(logits.shape)}")
    n, vocab = logits.shape
    target, a, e, w, count = _prepare(
        n, vocab, logits.device, _acc_dtype(logits.dtype), target, epsilon, weights, allowed, chunk_rows
    )
    return _FusedSmoothedCE.apply(logits, target, a, e, w, count, allowed, chunk_rows)
