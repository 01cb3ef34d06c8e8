"""Fused, chunked label-smoothed cross-entropy over the vocabulary (one autograd node).

The plain criterion (``logits.float()`` → ``log_softmax`` → ``gather`` / ``sum``) keeps two fp32 (N, V) tensors for
the backward pass (the upcast logits and the log-probabilities) and builds three more in it (the scatter of the
gather's gradient, the expanded sum gradient, the log-softmax gradient) before casting the result back to the logits'
dtype. With OFA's 59,457-token vocabulary that is 0.24 MB per target token and tensor in fp32: 150 MB each for 640
tokens (batch 32 × 20), several GB for summarisation targets.

This function saves only the logits it was given (no copy) and one fp32 log-sum-exp per row, works on row chunks of
at most ``chunk_rows`` rows in fp32, and writes the gradient straight into one (N, V) tensor of the logits' dtype.
Per row ``i`` with allowed set ``A_i`` (all of V when ``allowed`` is None), weight ``w_i`` and coefficients
``a_i = 1 − ε − eps_i``, ``e_i = eps_i``::

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

CHUNK_ROWS = 64  # 64 × 59,457 fp32 = 15 MB of scratch per chunk


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp32 for half/bf16/fp32 logits, fp64 for fp64 ones."""
    return torch.promote_types(dtype, torch.float32)


def _chunk_forward(x: Tensor, t: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """(lse, x[target], Σ_allowed x) of one chunk, in the accumulation dtype."""
    xf = x.to(_acc_dtype(x.dtype))
    if mask is not None:
        xf = xf.masked_fill(~mask, float("-inf"))
        total = xf.masked_fill(~mask, 0.0).sum(-1)
    else:
        total = xf.sum(-1)
    lse = torch.logsumexp(xf, dim=-1)
    picked = xf.gather(-1, t[:, None]).squeeze(-1)
    return lse, picked, total


class _FusedSmoothedCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, target, a, e, weights, allowed, chunk_rows):
        n, vocab = logits.shape
        lse = torch.empty(n, dtype=_acc_dtype(logits.dtype), device=logits.device)
        picked = torch.empty_like(lse)
        total = torch.empty_like(lse)
        for s in range(0, n, chunk_rows):
            sl = slice(s, s + chunk_rows)
            lse[sl], picked[sl], total[sl] = _chunk_forward(
                logits[sl], target[sl], None if allowed is None else allowed[sl])
        count = allowed.sum(-1).to(lse.dtype) if allowed is not None else torch.full_like(lse, float(vocab))
        nll = weights * (lse - picked)
        smooth = weights * (count * lse - total)
        loss = a * nll + e * smooth
        ctx.save_for_backward(logits, target, lse, a, e, weights, count, allowed)
        ctx.has_allowed = allowed is not None
        ctx.chunk_rows = chunk_rows
        return loss, nll

    @staticmethod
    def backward(ctx, g_loss, g_nll):
        logits, target, lse, a, e, weights, count, allowed = ctx.saved_tensors
        if not ctx.has_allowed:
            allowed = None
        n = logits.shape[0]
        zeros = torch.zeros_like(lse)
        g_loss = zeros if g_loss is None else g_loss.to(lse.dtype)
        g_nll = zeros if g_nll is None else g_nll.to(lse.dtype)
        coef_p = weights * (g_loss * (a + e * count) + g_nll)  # times p_ij
        coef_t = weights * (g_loss * a + g_nll)  # at the target
        coef_m = weights * g_loss * e  # on every allowed token
        grad = torch.empty_like(logits, memory_format=torch.contiguous_format)
        for s in range(0, n, ctx.chunk_rows):
            sl = slice(s, s + ctx.chunk_rows)
            xf = logits[sl].to(lse.dtype, copy=True)  # a scratch copy even when no cast is needed (in place below)
            if allowed is not None:
                xf.masked_fill_(~allowed[sl], float("-inf"))
            p = xf.sub_(lse[sl, None]).exp_()  # softmax over the allowed tokens (exp(−inf) = 0 elsewhere)
            p.mul_(coef_p[sl, None])
            if allowed is not None:
                p.sub_(allowed[sl].to(p.dtype) * coef_m[sl, None])
            else:
                p.sub_(coef_m[sl, None])
            rows = torch.arange(p.shape[0], device=p.device)
            p[rows, target[sl]] -= coef_t[sl]
            grad[sl] = p
        return grad, None, None, None, None, None, None


def fused_smoothed_ce(
    logits: Tensor,
    target: Tensor,
    epsilon: float = 0.0,
    weights: Tensor | None = None,
    allowed: Tensor | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> tuple[Tensor, Tensor]:
    """Per-token ``(loss, nll)`` for (N, V) ``logits`` of any float dtype (fp32, or fp64 for fp64 logits).

    ``allowed`` (N, V) bool must contain each row's target (the caller's job, as in the reference path);
    ``eps_i = ε / max(|A_i| − 1, 1)``. Gradients flow to ``logits`` only, in its dtype.
    """
    if logits.dim() != 2 or target.shape != logits.shape[:1]:
        raise ValueError(f"expected logits (N, V) and target (N,), got {tuple(logits.shape)} and "
                         f"{tuple(target.shape)}")
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be ≥ 1, got {chunk_rows}")
    n, vocab = logits.shape
    device = logits.device
    target = target.long()
    acc = _acc_dtype(logits.dtype)
    if allowed is not None:
        count = allowed.sum(-1).to(acc)
    else:
        count = torch.full((n,), float(vocab), device=device, dtype=acc)
    e = epsilon / (count - 1).clamp(min=1)
    a = 1.0 - epsilon - e
    w = torch.ones(n, device=device, dtype=acc) if weights is None else weights.to(device=device, dtype=acc)
    return _FusedSmoothedCE.apply(logits, target, a, e, w, allowed, chunk_rows)
