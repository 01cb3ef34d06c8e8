"""OFA's decoder, in text mode and in image-code mode (OFA-Sys/OFA ``models/ofa/unify_transformer.py``,
``TransformerDecoder``).

Text mode: 1-D positions, ``pos_ln`` and ``layernorm_embedding``, the 1-D
relative table. Code mode (image infilling, text-to-image; per sample via
``code_masks``): 2-D code-grid positions from ``embed_image_positions``,
``image_pos_ln`` and ``code_layernorm_embedding``, the 2-D relative table.
Cross-attention has the absolute bias only, its keys being the encoder's LN'd
position embeddings.

Incremental decoding: with a :class:`DecoderCache` only the new positions are
computed; self-attention K/V and the position-bias keys are appended to the
cache, cross-attention K/V are computed once, and relative biases are sliced
from the bucket tables instead of being rebuilt.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import OFAConfig, ramp
from .encoder import BucketLookup, padding_bias, relative_bias, split_heads
from .layers import DecoderLayer
from .outputs import DecoderCache, EncoderOutput, select_rows
from .positions import code_position_ids, image_bucket_from_coords, num_image_buckets, token_bucket_matrix


class Decoder(nn.Module):
    def __init__(self, cfg: OFAConfig, embed_tokens: nn.Embedding):
        super().__init__()
        d, heads = cfg.d_model, cfg.decoder_attention_heads
        self.cfg = cfg
        self.num_heads = heads
        self.embed_tokens = embed_tokens
        self.embed_positions = nn.Embedding(cfg.max_target_positions + 2, d)
        self.embed_image_positions = nn.Embedding(cfg.image_bucket_size**2 + 1, d)
        self.pos_ln = nn.LayerNorm(d)
        self.image_pos_ln = nn.LayerNorm(d)
        self.self_pos_q_linear = nn.Linear(d, d)
        self.self_pos_k_linear = nn.Linear(d, d)
        self.cross_pos_q_linear = nn.Linear(d, d)
        self.cross_pos_k_linear = nn.Linear(d, d)
        self.pos_scaling = float(d / heads * cfg.attn_scale_factor) ** -0.5
        self.layernorm_embedding = nn.LayerNorm(d)
        self.code_layernorm_embedding = nn.LayerNorm(d)
        self.dropout = nn.Dropout(cfg.dropout)
        rates = ramp(cfg.decoder_drop_path_rate, cfg.decoder_layers)
        self.layers = nn.ModuleList(
            DecoderLayer(
                d,
                heads,
                cfg.decoder_ffn_dim,
                cfg.dropout,
                cfg.attention_dropout,
                cfg.activation_dropout,
                rates[i],
                cfg.attn_scale_factor,
            )
            for i in range(cfg.decoder_layers)
        )
        self.layer_norm = nn.LayerNorm(d)
        self.bucket_lookup = BucketLookup()
        self.num_text_buckets = 2 * cfg.token_bucket_size - 1
        self.num_image_buckets = num_image_buckets(cfg.image_bucket_size)
        self.token_rel_pos_table_list = nn.ModuleList(
            nn.Embedding(self.num_text_buckets, heads) for _ in range(cfg.decoder_layers)
        )
        self.image_rel_pos_table_list = nn.ModuleList(
            nn.Embedding(self.num_image_buckets, heads) for _ in range(cfg.decoder_layers)
        )
        self.register_buffer(
            "token_rp_bucket", token_bucket_matrix(cfg.token_bucket_size, cfg.max_target_positions), persistent=False
        )
        self.register_buffer(
            "image_position_idx", code_position_ids(cfg.code_image_size, cfg.image_bucket_size), persistent=False
        )

    # --------------------------------------------------------------- positions
    def _target_positions(
        self, start: int, end: int, code_masks: Tensor | None, batch: int, raw: bool = False
    ) -> Tensor:
        """LN'd target position embeddings of positions [start, end) → (B|1, T, D); ``raw``: before the LN
        (what ``entangle_position_embedding`` adds to the token embeddings)."""
        self._check_length(end, code_masks)
        device = self.embed_positions.weight.device
        pos = torch.arange(start, end, device=device)
        mode = _mode(code_masks)
        text_ln = (lambda t: t) if raw else self.pos_ln
        code_ln = (lambda t: t) if raw else self.image_pos_ln
        if mode == "text":
            return text_ln(self.embed_positions(pos))[None]
        code = code_ln(self.embed_image_positions(self.image_position_idx[pos]))[None]
        if mode == "code":
            return code
        text = text_ln(self.embed_positions(pos))[None]
        return torch.where(code_masks.view(-1, 1, 1), code, text).expand(batch, -1, -1)

    def _relative_index(self, start: int, end: int, code_masks: Tensor | None) -> Tensor:
        """Combined bucket index (B|1, end−start, end) for rows [start, end) over keys [0, end)."""
        mode = _mode(code_masks)
        text = self.token_rp_bucket[start:end, :end][None] if mode != "code" else None
        if mode == "text":
            return text
        ids = self.image_position_idx[:end]
        g = self.cfg.image_bucket_size
        rows, cols = (ids - 1).clamp(min=0) // g, (ids - 1).clamp(min=0) % g
        image = image_bucket_from_coords(rows, cols, g)[start:end]
        n = self.num_image_buckets
        is_bos_q, is_bos_k = ids[start:end].eq(0)[:, None], ids.eq(0)[None, :]
        image = torch.where(is_bos_q, n - 3, image)
        image = torch.where(is_bos_k, n - 2, image)
        image = torch.where(is_bos_q & is_bos_k, n - 1, image)
        image = (image + self.num_text_buckets)[None]
        if mode == "code":
            return image
        return torch.where(code_masks.view(-1, 1, 1), image, text)

    # ----------------------------------------------------------------- forward
    def forward(
        self,
        prev_output_tokens: Tensor,
        encoder_out: EncoderOutput,
        code_masks: Tensor | None = None,
        cache: DecoderCache | None = None,
    ) -> Tensor:
        """Final hidden states (after the last LayerNorm) of the new positions: (B, T_new, D)."""
        b, t = prev_output_tokens.shape
        start = cache.length if cache is not None else 0
        if cache is not None and start >= t:
            raise ValueError(f"the cache already holds {start} positions but only {t} tokens were given")
        if code_masks is not None:
            code_masks = code_masks.to(device=prev_output_tokens.device, dtype=torch.bool).view(-1)
        heads = self.num_heads

        tgt_pos = self._target_positions(start, t, code_masks, b)
        self_q = split_heads(self.self_pos_q_linear(tgt_pos), heads) * self.pos_scaling
        self_k = split_heads(self.self_pos_k_linear(tgt_pos), heads)
        cross_q = split_heads(self.cross_pos_q_linear(tgt_pos), heads) * self.pos_scaling
        if cache is not None and cache.cross_pos_k is not None:
            cross_k, cross_mask = cache.cross_pos_k, cache.cross_mask
        else:
            cross_k, cross_mask = self._cross_pos_keys(encoder_out)
        if cache is not None and cache.self_pos_k is not None:
            past = cache.self_pos_k
            if past.shape[0] != self_k.shape[0]:  # one of them is a broadcast (batch-1) row
                past, self_k = past.expand(b, -1, -1, -1), self_k.expand(b, -1, -1, -1)
            self_k = torch.cat([past, self_k], dim=2)
        cross_bias = cross_q @ cross_k.transpose(-1, -2) + cross_mask
        self_abs = self_q @ self_k.transpose(-1, -2)  # (B|1, H, T_new, t)

        q_pos = torch.arange(start, t, device=prev_output_tokens.device)
        causal = torch.zeros(t - start, t, dtype=self_abs.dtype, device=self_abs.device)
        causal = causal.masked_fill(q_pos[:, None] < torch.arange(t, device=q_pos.device)[None, :], float("-inf"))
        base = self_abs + causal + padding_bias(prev_output_tokens.eq(self.cfg.pad_token_id), self_abs.dtype)
        rel_index = self._relative_index(start, t, code_masks)

        x = self.embed_tokens(prev_output_tokens[:, start:])
        if self.cfg.entangle_position_embedding:  # OFA's option: positions in the embeddings too
            x = x + self._target_positions(start, t, code_masks, b, raw=True)
        x = self.dropout(self._embedding_norm(x, code_masks))
        new_self_kv = []
        cached_cross = cache is not None and len(cache.cross_kv) == len(self.layers)
        for i, layer in enumerate(self.layers):
            text_table, image_table = self.token_rel_pos_table_list[i], self.image_rel_pos_table_list[i]
            bias = base + relative_bias(rel_index, text_table, image_table, base.dtype, self.bucket_lookup)
            if cached_cross:
                ck, cv = cache.cross_kv[i]
            else:
                ck, cv = layer.encoder_attn.project_kv(encoder_out.hidden)
                if cache is not None:
                    cache.cross_kv.append((ck, cv))
            past = cache.self_kv[i] if cache is not None and cache.self_kv else None
            x, kv = layer(x, bias, ck, cv, cross_bias, past)
            new_self_kv.append(kv)
        if cache is not None:
            cache.self_kv = new_self_kv
            cache.self_pos_k = self_k  # (1, H, t, hd) in text mode: broadcast over the rows
            cache.cross_pos_k, cache.cross_mask = cross_k, cross_mask
            cache.length = t
        return self.layer_norm(x)

    def _cross_pos_keys(self, encoder_out: EncoderOutput) -> tuple[Tensor, Tensor]:
        """Keys of the cross-attention absolute bias (B|1, H, S, hd) and the source padding mask (B, 1, 1, S).

        The encoder's position embeddings are usually one row broadcast over the batch
        (stride 0): then the keys are projected once and broadcast too."""
        pos = encoder_out.pos_embed
        if pos.shape[0] > 1 and pos.stride(0) == 0:
            pos = pos[:1]
        cross_k = split_heads(self.cross_pos_k_linear(pos), self.num_heads)
        return cross_k, padding_bias(encoder_out.padding_mask, cross_k.dtype)

    def prime_cache(self, cache: DecoderCache, encoder_out: EncoderOutput, rows: Tensor | None = None) -> None:
        """Project the cross-attention K/V and position keys of ``encoder_out`` into ``cache``,
        then select ``rows`` (e.g. every input repeated once per beam)."""
        if cache.length or cache.cross_kv:
            raise ValueError("prime_cache needs an empty cache")
        cross_k, cross_mask = self._cross_pos_keys(encoder_out)
        kv = [layer.encoder_attn.project_kv(encoder_out.hidden) for layer in self.layers]
        group = 1
        if rows is not None:
            sel = lambda t: select_rows(t, rows)  # noqa: E731
            group = _repeat_group(rows, encoder_out.hidden.shape[0])
            if group == 1:
                kv = [(sel(k), sel(v)) for k, v in kv]
            # else: every input repeated `group` times in a row (beam search): K/V stay once per input, and the
            # cross-attention reads them for all of the input's rows at once (5× fewer bytes at beam 5)
            cross_mask = sel(cross_mask)
            if cross_k.shape[0] != 1:
                cross_k = sel(cross_k)
        cache.cross_kv, cache.cross_pos_k, cache.cross_mask = kv, cross_k, cross_mask
        cache.cross_group = group

    def _embedding_norm(self, x: Tensor, code_masks: Tensor | None) -> Tensor:
        mode = _mode(code_masks)
        if mode == "text":
            return self.layernorm_embedding(x)
        if mode == "code":
            return self.code_layernorm_embedding(x)
        return torch.where(code_masks.view(-1, 1, 1), self.code_layernorm_embedding(x), self.layernorm_embedding(x))

    def _check_length(self, end: int, code_masks: Tensor | None) -> None:
        mode = _mode(code_masks)
        limits = {"text": self.cfg.max_target_positions, "code": len(self.image_position_idx)}
        limit = limits.get(mode, min(limits.values()))
        if end > limit:
            raise ValueError(f"target sequence of {end} tokens exceeds the decoder's {limit} positions")

    def project(self, hidden: Tensor, vocab_ids: Tensor | None = None) -> Tensor:
        """Output projection tied to the token embedding (no bias); ``vocab_ids``: only those columns."""
        weight = self.embed_tokens.weight
        if vocab_ids is not None:
            weight = weight.index_select(0, vocab_ids)
        return F.linear(hidden, weight)


def _repeat_group(rows: Tensor, n: int) -> int:
    """g when ``rows`` is ``arange(n).repeat_interleave(g)`` with g > 1 (each input's rows consecutive), else 1."""
    if n < 1 or rows.numel() % n or rows.numel() == n:
        return 1
    g = rows.numel() // n
    return g if torch.equal(rows, torch.arange(n, device=rows.device).repeat_interleave(g)) else 1


def _mode(code_masks: Tensor | None) -> str:
    if code_masks is None or not bool(code_masks.any()):
        return "text"
    return "code" if bool(code_masks.all()) else "mixed"
