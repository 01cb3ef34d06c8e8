"""Multi-head attention of OFA with NormFormer head scaling and a KV cache (OFA-Sys/OFA
``models/ofa/unify_multihead_attention.py``).

Scores are ``q·k / sqrt(scale_factor·head_dim) + bias`` where ``bias`` is the sum of the position biases and the
padding/causal mask, handed to ``torch.nn.functional.scaled_dot_product_attention`` as one float mask. Each head's
output is then scaled by a learned ``c_attn`` (NormFormer) before the output projection.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _fold_groups(q: Tensor, bias: Tensor | None, g: int) -> tuple[Tensor, Tensor | None]:
    """(g·B, H, T, hd) queries whose keys are shared by each run of g consecutive rows → (B, H, g·T, hd), and the
    bias (g·B | 1, H | 1, T, S) to match, so that one attention call reads each input's K/V once."""
    bq, h, t, d = q.shape
    b = bq // g
    q = q.reshape(b, g, h, t, d).transpose(1, 2).reshape(b, h, g * t, d)
    if isinstance(bias, Tensor):
        bias = bias.expand(bq, -1, t, -1)
        hb, s = bias.shape[1], bias.shape[-1]
        bias = bias.reshape(b, g, hb, t, s).transpose(1, 2).reshape(b, hb, g * t, s)
    return q, bias


def _unfold_groups(out: Tensor, g: int) -> Tensor:
    b, h, gt, d = out.shape
    t = gt // g
    return out.reshape(b, h, g, t, d).transpose(1, 2).reshape(b * g, h, t, d)


class Attention(nn.Module):
    """q/k/v/out projections (with bias) and a learnable per-head output scale ``c_attn``."""

    def __init__(self, d_model: int, num_heads: int, dropout: float = 0.0, scale_factor: float = 2.0):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = d_model // num_heads
        self.scaling = float(self.head_dim * scale_factor) ** -0.5
        self.dropout = dropout
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        self.c_attn = nn.Parameter(torch.ones(num_heads))  # NormFormer head scale

    def split_heads(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.num_heads, self.head_dim).transpose(1, 2)

    def project_kv(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.split_heads(self.k_proj(x)), self.split_heads(self.v_proj(x))

    def attend(self, q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None, dropout_p: float) -> Tensor:
        """``softmax(q·kᵀ·scaling + bias)·v`` for (B, H, T|S, hd) inputs → (B, H, T, hd)."""
        if bias is not None and bias.dtype != q.dtype:
            bias = bias.to(q.dtype)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout_p, scale=self.scaling)

    def forward(self, x: Tensor, k: Tensor, v: Tensor, bias: Tensor | None) -> Tensor:
        """x: (B, T, D) queries; k, v: (B, H, S, hd) already projected; bias: broadcastable to (B, H, T, S).

        K/V may hold one row per ``g`` consecutive query rows (beam search's cross-attention: each input's
        encoder states are projected once, not once per beam)."""
        q = self.split_heads(self.q_proj(x))
        dropout_p = self.dropout if self.training else 0.0
        group = 1
        if k.shape[0] != q.shape[0]:
            if q.shape[0] % k.shape[0]:
                raise ValueError(f"{q.shape[0]} query rows cannot share {k.shape[0]} key/value rows in equal runs")
            group = q.shape[0] // k.shape[0]
        if group > 1:
            q, bias = _fold_groups(q, bias, group)
        out = self.attend(q, k, v, bias, dropout_p)
        if group > 1:
            out = _unfold_groups(out, group)
        out = out * self.c_attn.to(out.dtype).view(1, -1, 1, 1)
        b, _, t, _ = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, t, -1))
