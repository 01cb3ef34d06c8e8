"""Pre-LN Transformer layers with NormFormer (OFA-Sys/OFA ``models/ofa/unify_transformer_layer.py``).

Every attention and FFN sub-block is: LN → sublayer → extra LN (NormFormer)
→ dropout → drop-path → residual. Parameter names follow OFA's fairseq
checkpoints so that conversion is a plain key copy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import DropPath
from torch import Tensor, nn

from .attention import Attention


class _Layer(nn.Module):
    """Shared FFN sub-block: fc1 → GELU → act-dropout → ``ffn_layernorm`` (width FFN) → fc2."""

    def __init__(self, d_model: int, ffn_dim: int, dropout: float, activation_dropout: float, drop_path: float):
        super().__init__()
        self.final_layer_norm = nn.LayerNorm(d_model)
        self.fc1 = nn.Linear(d_model, ffn_dim)
        self.ffn_layernorm = nn.LayerNorm(ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, d_model)
        self.dropout = nn.Dropout(dropout)
        self.activation_dropout = nn.Dropout(activation_dropout)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def residual(self, x: Tensor, h: Tensor) -> Tensor:
        return x + self.drop_path(self.dropout(h))

    def feed_forward(self, x: Tensor) -> Tensor:
        h = self.activation_dropout(F.gelu(self.fc1(self.final_layer_norm(x))))
        return self.residual(x, self.fc2(self.ffn_layernorm(h)))


class EncoderLayer(_Layer):
    def __init__(
        self,
        d_model: int,
        heads: int,
        ffn_dim: int,
        dropout: float,
        attention_dropout: float,
        activation_dropout: float,
        drop_path: float,
        scale_factor: float,
    ):
        super().__init__(d_model, ffn_dim, dropout, activation_dropout, drop_path)
        self.self_attn = Attention(d_model, heads, attention_dropout, scale_factor)
        self.self_attn_layer_norm = nn.LayerNorm(d_model)
        self.attn_ln = nn.LayerNorm(d_model)

    def forward(self, x: Tensor, bias: Tensor) -> Tensor:
        h = self.self_attn_layer_norm(x)
        k, v = self.self_attn.project_kv(h)
        x = self.residual(x, self.attn_ln(self.self_attn(h, k, v, bias)))
        return self.feed_forward(x)


class DecoderLayer(_Layer):
    def __init__(
        self,
        d_model: int,
        heads: int,
        ffn_dim: int,
        dropout: float,
        attention_dropout: float,
        activation_dropout: float,
        drop_path: float,
        scale_factor: float,
    ):
        super().__init__(d_model, ffn_dim, dropout, activation_dropout, drop_path)
        self.self_attn = Attention(d_model, heads, attention_dropout, scale_factor)
        self.self_attn_layer_norm = nn.LayerNorm(d_model)
        self.self_attn_ln = nn.LayerNorm(d_model)
        self.encoder_attn = Attention(d_model, heads, attention_dropout, scale_factor)
        self.encoder_attn_layer_norm = nn.LayerNorm(d_model)
        self.cross_attn_ln = nn.LayerNorm(d_model)

    def forward(
        self,
        x: Tensor,
        self_bias: Tensor | None,
        cross_k: Tensor,
        cross_v: Tensor,
        cross_bias: Tensor,
        past_kv: tuple[Tensor, Tensor] | None = None,
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """Returns the new states and this layer's full self-attention (k, v) for the cache."""
        h = self.self_attn_layer_norm(x)
        k, v = self.self_attn.project_kv(h)
        if past_kv is not None:
            k = torch.cat([past_kv[0], k], dim=2)
            v = torch.cat([past_kv[1], v], dim=2)
        x = self.residual(x, self.self_attn_ln(self.self_attn(h, k, v, self_bias)))
        h = self.encoder_attn_layer_norm(x)
        x = self.residual(x, self.cross_attn_ln(self.encoder_attn(h, cross_k, cross_v, cross_bias)))
        return self.feed_forward(x), (k, v)
