"""Containers passed between the encoder, the decoder and the generator."""
from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor


@dataclass
class EncoderOutput:
    hidden: Tensor  # (B, S, D) final encoder states (after the final LayerNorm)
    padding_mask: Tensor  # (B, S) bool, True = padding
    pos_embed: Tensor  # (B, S, D) LN'd [image ; text] position embeddings for the cross-attention bias

    def index_select(self, order: Tensor) -> "EncoderOutput":
        return EncoderOutput(self.hidden.index_select(0, order), self.padding_mask.index_select(0, order),
                             self.pos_embed.index_select(0, order))


@dataclass
class DecoderCache:
    """Incremental-decoding state: per-layer self-attention K/V, cross-attention K/V
    (computed once from the encoder output), and the position-bias keys, so each step
    computes only the new row of every bias."""

    length: int = 0
    self_kv: list[tuple[Tensor, Tensor]] = field(default_factory=list)
    cross_kv: list[tuple[Tensor, Tensor]] = field(default_factory=list)
    self_pos_k: Tensor | None = None  # (B, H, t, hd) keys of the self-attention absolute bias
    cross_pos_k: Tensor | None = None  # (B, H, S, hd) keys of the cross-attention absolute bias
    cross_mask: Tensor | None = None  # (B, 1, 1, S) additive padding mask of the source

    def reorder(self, order: Tensor) -> None:
        """Select batch rows in place (beam reordering)."""
        sel = lambda t: t.index_select(0, order)  # noqa: E731
        self.self_kv = [(sel(k), sel(v)) for k, v in self.self_kv]
        self.cross_kv = [(sel(k), sel(v)) for k, v in self.cross_kv]
        for name in ("self_pos_k", "cross_pos_k", "cross_mask"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, sel(value))
