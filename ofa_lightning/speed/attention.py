"""Attention's fast paths: :class:`SpeedAttention`, the plain :class:`~ofa_lightning.model.attention.Attention`
(same parameters) with two more ways to form ``softmax(q·kᵀ·scaling + bias)·v``:

* CPU training under bf16/fp16 autocast (``lean_cpu_attention``). There SDPA can only take its math path (the
  bias is learned, so it needs a gradient), and on CPU that path upcasts q, k, v, the scores and the probabilities
  to fp32 and keeps them for the backward pass. :func:`reduced_precision_attention` does the same sum with the
  bias added inside one ``baddbmm`` and the softmax in the autocast dtype (fp32 accumulation inside the kernel), as
  OFA's own fp16 training does. It keeps half the bytes (about 10 MB per OFA-Tiny encoder layer at batch 8,
  256 px) and is no slower. Inference and GPU keep SDPA.
* the encoder's :class:`~.flex.FlexScores` (``attention_kernel=flex``): the scores formed inside FlexAttention.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..model.attention import Attention
from .flex import FlexScores


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


def _use_reduced_precision_path(q: Tensor) -> bool:
    return q.device.type == "cpu" and q.dtype in (torch.bfloat16, torch.float16) and torch.is_grad_enabled()


class SpeedAttention(Attention):
    """The plain attention plus the paths of the module docstring (``lean_cpu`` set by ``apply_speed``)."""

    lean_cpu = False

    def attend(self, q: Tensor, k: Tensor, v: Tensor, bias, dropout_p: float) -> Tensor:
        if isinstance(bias, FlexScores):
            return bias.attend(q, k, v, self.scaling, dropout_p)
        if self.lean_cpu and _use_reduced_precision_path(q):
            if bias is not None and bias.dtype != q.dtype:
                bias = bias.to(q.dtype)
            return reduced_precision_attention(q, k, v, bias, dropout_p, self.scaling)
        return super().attend(q, k, v, bias, dropout_p)
