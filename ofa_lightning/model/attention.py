"""Multi-head attention of OFA with NormFormer head scaling and a KV cache.

Scores are ``q·k / sqrt(2·head_dim) + bias`` where ``bias`` is the sum of the
position biases and the padding/causal mask, handed to
``torch.nn.functional.scaled_dot_product_attention`` as one float mask.

One exception: CPU training under bf16/fp16 autocast. There SDPA can only take its
math path (the bias is learned, so it needs a gradient), and on CPU that path
upcasts q, k, v, the scores and the probabilities to fp32 and keeps them for the
backward pass. :func:`reduced_precision_attention` does the same sum with the
bias added inside one ``baddbmm`` and the softmax in the autocast dtype (fp32
accumulation inside the kernel), as OFA's own fp16 training does. It keeps half
the bytes (about 10 MB per OFA-Tiny encoder layer at batch 8, 256 px) and is no
slower. Inference and GPU keep SDPA.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .flex import FlexScores
from .linear import Linear


def reduced_precision_attention(
    q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None, dropout_p: float, scale: float
) -> Tensor:
    """``softmax(q·kᵀ·scale + bias)·v`` with (B, H, T|S, hd) inputs, in the inputs' dtype: the scores come out
    of one ``baddbmm`` (bias added in the kernel) and the softmax keeps the dtype (it accumulates in fp32
    internally). Returns (B, H, T, hd)."""
    b, h, t, d = q.shape
    s = k.shape[2]
    q3, k3, v3 = q.reshape(b * h, t, d), k.reshape(b * h, s, d), v.reshape(b * h, s, d)
    if bias is None:
        scores = torch.bmm(q3, k3.transpose(1, 2)).mul_(scale)
    else:
        scores = torch.baddbmm(bias.expand(b, h, t, s).reshape(b * h, t, s), q3, k3.transpose(1, 2), alpha=scale)
    probs = torch.softmax(scores, dim=-1)
    if dropout_p > 0.0:
        probs = F.dropout(probs, dropout_p)
    return torch.bmm(probs, v3).view(b, h, t, d)


def _fold_groups(q: Tensor, bias: Tensor | None, g: int) -> tuple[Tensor, Tensor | None]:
    """(g·B, H, T, hd) queries whose keys are shared by each run of g consecutive rows → (B, H, g·T, hd), and the
    bias (g·B | 1, H | 1, T, S) to match, so that one attention call reads each input's K/V once."""
    bq, h, t, d = q.shape
    b = bq // g
    q = q.reshape(b, g, h, t, d).transpose(1, 2).reshape(b, h, g * t, d)
    if bias is not None:
        bias = bias.expand(bq, -1, t, -1)
        hb, s = bias.shape[1], bias.shape[-1]
        bias = bias.reshape(b, g, hb, t, s).transpose(1, 2).reshape(b, hb, g * t, s)
    return q, bias


def _unfold_groups(out: Tensor, g: int) -> Tensor:
    b, h, gt, d = out.shape
    t = gt // g
    return out.reshape(b, h, g, t, d).transpose(1, 2).reshape(b * g, h, t, d)


def _use_reduced_precision_path(q: Tensor) -> bool:
    return q.device.type == "cpu" and q.dtype in (torch.bfloat16, torch.float16) and torch.is_grad_enabled()


class Attention(nn.Module):
    """q/k/v/out projections (with bias) and a learnable per-head output scale ``c_attn``."""

    def __init__(self, d_model: int, num_heads: int, dropout: float = 0.0, scale_factor: float = 2.0):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = d_model // num_heads
        self.scaling = float(self.head_dim * scale_factor) ** -0.5
        self.dropout = dropout
        self.q_proj = Linear(d_model, d_model)
        self.k_proj = Linear(d_model, d_model)
        self.v_proj = Linear(d_model, d_model)
        self.out_proj = Linear(d_model, d_model)
        self.c_attn = nn.Parameter(torch.ones(num_heads))  # NormFormer head scale

    def split_heads(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.num_heads, self.head_dim).transpose(1, 2)

    def project_kv(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.split_heads(self.k_proj(x)), self.split_heads(self.v_proj(x))

    def forward(self, x: Tensor, k: Tensor, v: Tensor, bias: Tensor | FlexScores | None) -> Tensor:
        """x: (B, T, D) queries; k, v: (B, H, S, hd) already projected; bias: broadcastable to (B, H, T, S), or
        the encoder's :class:`~.flex.FlexScores` (``attention_kernel=flex``)."""
        q = self.split_heads(self.q_proj(x))
        dropout_p = self.dropout if self.training else 0.0
        group = 1
        if k.shape[0] != q.shape[0]:
            if q.shape[0] % k.shape[0]:
                raise ValueError(f"{q.shape[0]} query rows cannot share {k.shape[0]} key/value rows in equal runs")
            group = q.shape[0] // k.shape[0]
        if group > 1:  # K/V held once per input for `group` consecutive query rows (beam search's cross-attention)
            q, bias = _fold_groups(q, bias, group)
        if isinstance(bias, FlexScores):  # encoder with attention_kernel=flex: scores formed in the kernel
            out = bias.attend(q, k, v, self.scaling, dropout_p)
        else:
            if bias is not None and bias.dtype != q.dtype:
                bias = bias.to(q.dtype)
            if _use_reduced_precision_path(q):
                out = reduced_precision_attention(q, k, v, bias, dropout_p, self.scaling)
            else:
                out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout_p, scale=self.scaling)
        if group > 1:
            out = _unfold_groups(out, group)
        out = out * self.c_attn.to(out.dtype).view(1, -1, 1, 1)
        b, _, t, _ = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, t, -1))
