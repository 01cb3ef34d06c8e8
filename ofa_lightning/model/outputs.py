"""Containers passed between the encoder, the decoder and the generator."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor


@dataclass
class EncoderOutput:
    hidden: Tensor  # (B, S, D) final encoder states (after the final LayerNorm)
    padding_mask: Tensor  # (B, S) bool, True = padding
    pos_embed: Tensor  # (B, S, D) LN'd [image ; text] position embeddings for the cross-attention bias

    def index_select(self, order: Tensor) -> EncoderOutput:
        pos = self.pos_embed
        if pos.shape[0] > 0 and pos.stride(0) == 0:  # one row broadcast over the batch: stays a broadcast
            pos = pos[:1].expand(order.numel(), -1, -1)
        else:
            pos = select_rows(pos, order)
        return EncoderOutput(select_rows(self.hidden, order), select_rows(self.padding_mask, order), pos)


def select_rows(t: Tensor, order: Tensor) -> Tensor:
    """``t.index_select(0, order)``, made contiguous first: on CPU, ``index_select`` of a
    non-contiguous tensor (e.g. heads split by a transpose) takes a per-element path that is
    ~1000× slower than copying it contiguous and selecting. A single row is broadcast instead
    (a stride-0 view, no copy; attention and matmuls accept it): callers must not write into it."""
    if t.shape[0] == 1:
        return t.expand(order.numel(), *t.shape[1:])
    return t.contiguous().index_select(0, order)


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
    # consecutive rows sharing one cross_kv entry: beam search keeps the cross-attention K/V once per input
    # (B / cross_group rows) and the attention folds each input's beams into its query length (model/attention.py)
    cross_group: int = 1

    def reorder(self, order: Tensor, cross: bool = True) -> None:
        """Select batch rows in place (beam reordering).

        ``cross=False`` leaves the cross-attention entries (K/V, position keys, source mask)
        alone: valid when ``order`` only permutes rows that share an encoder input, as beam
        search's ordinary steps do (all beams of one input have identical cross entries).
        Position keys with a batch of 1 are broadcast over all rows and are kept as they are.
        """
        sel = lambda t: select_rows(t, order)  # noqa: E731
        self.self_kv = [(sel(k), sel(v)) for k, v in self.self_kv]
        names = ("self_pos_k", "cross_pos_k", "cross_mask") if cross else ("self_pos_k",)
        if cross:
            self.cross_kv = self._reorder_cross_kv(order)
        for name in names:
            value = getattr(self, name)
            if value is not None and not (name.endswith("pos_k") and value.shape[0] == 1):
                setattr(self, name, sel(value))

    def _reorder_cross_kv(self, order: Tensor) -> list[tuple[Tensor, Tensor]]:
        g = self.cross_group
        if g == 1:
            return [(select_rows(k, order), select_rows(v, order)) for k, v in self.cross_kv]
        source = order // g  # the cross entry each new row reads
        if order.numel() % g == 0:
            groups = source.view(-1, g)
            if bool((groups == groups[:, :1]).all()):  # rows still come in whole groups of one input (shrinking)
                keep = groups[:, 0]
                return [(select_rows(k, keep), select_rows(v, keep)) for k, v in self.cross_kv]
        self.cross_group = 1  # groups broken up: one entry per row again
        return [(select_rows(k, source), select_rows(v, source)) for k, v in self.cross_kv]
