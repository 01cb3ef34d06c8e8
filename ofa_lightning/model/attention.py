"""Multi-head attention of OFA with NormFormer head scaling and a KV cache.

Scores are ``q·k / sqrt(2·head_dim) + bias`` where ``bias`` is the sum of the
position biases and the padding/causal mask, handed to
``torch.nn.functional.scaled_dot_product_attention`` as one float mask.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


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

    def forward(self, x: Tensor, k: Tensor, v: Tensor, bias: Tensor | None) -> Tensor:
        """x: (B, T, D) queries; k, v: (B, H, S, hd) already projected; bias: broadcastable to (B, H, T, S)."""
        q = self.split_heads(self.q_proj(x))
        if bias is not None and bias.dtype != q.dtype:
            bias = bias.to(q.dtype)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias, dropout_p=self.dropout if self.training else 0.0, scale=self.scaling
        )
        out = out * self.c_attn.to(out.dtype).view(1, -1, 1, 1)
        b, _, t, _ = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, t, -1))
