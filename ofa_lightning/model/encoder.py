"""OFA's encoder: [image patches ; text tokens] through pre-LN NormFormer layers.

OFA-Sys/OFA ``models/ofa/unify_transformer.py`` (``TransformerEncoder``; paper §3.1). Positions never touch the
inputs: a decoupled absolute bias (computed once per forward, shared by all layers) plus per-layer relative tables
(1-D for text×text, 2-D for patch×patch; image×text gets the absolute bias only) are summed with the padding mask
into one float attention mask per layer (:meth:`Encoder.attention_biases`).
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import OFAConfig, ramp
from .layers import EncoderLayer
from .outputs import EncoderOutput
from .positions import image_bucket_from_coords, image_position_ids, num_image_buckets, token_bucket_matrix
from .resnet import TRUNK_CHANNELS, build_resnet

log = logging.getLogger(__name__)


def split_heads(x: Tensor, heads: int) -> Tensor:
    b, t, d = x.shape
    return x.view(b, t, heads, d // heads).transpose(1, 2)


def padding_bias(padding_mask: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """(B, S) bool → (B, 1, 1, S) additive mask with the dtype's most negative value at pads (as OFA)."""
    return torch.zeros(padding_mask.shape, dtype=dtype, device=padding_mask.device).masked_fill(
        padding_mask, torch.finfo(dtype).min
    )[:, None, None, :]


class BucketLookup(nn.Module):
    """Rows of one layer's relative-bias table for a bucket index: ``table[index]`` (an embedding lookup)."""

    def forward(self, table: Tensor, index: Tensor) -> Tensor:
        return F.embedding(index, table)


def relative_bias(
    index: Tensor,
    text_table: nn.Embedding,
    image_table: nn.Embedding,
    dtype: torch.dtype | None = None,
    lookup: nn.Module | None = None,
) -> Tensor:
    """Look a combined bucket index up in [text table ; image table ; zero row] → (B', H, Q, K), contiguous.

    Index layout: [0, 511) text buckets, [511, 511+6892) image buckets, the last row is zero
    (used for image×text blocks, which get no relative bias). ``dtype``: the dtype the attention bias is summed in
    (under autocast the bf16 of the absolute bias), so that the (B, H, S, S) sums are not promoted to fp32 and cast
    again; the result is contiguous so that the sums vectorise. ``lookup``: the module that reads the rows
    (:class:`BucketLookup` unless given).
    """
    table = bucket_table(text_table, image_table)
    # (B', Q, K, H) -> (B', H, Q, K) in ``dtype``: one small copy (B' is 1 unless patches are sampled per image); the
    # lookup and its backward stay in the table's fp32
    rows = lookup(table, index) if lookup is not None else F.embedding(index, table)
    out = rows.permute(0, 3, 1, 2)
    return out.to(dtype=dtype or out.dtype, memory_format=torch.contiguous_format)


def bucket_table(text_table: nn.Embedding, image_table: nn.Embedding) -> Tensor:
    """One layer's relative-bias rows [text ; image ; zero] (R, H), indexed by the combined bucket index."""
    zero = text_table.weight.new_zeros(1, text_table.weight.shape[1])
    return torch.cat([text_table.weight, image_table.weight, zero])


class Encoder(nn.Module):
    def __init__(self, cfg: OFAConfig, embed_tokens: nn.Embedding):
        super().__init__()
        d, heads = cfg.d_model, cfg.encoder_attention_heads
        self.cfg = cfg
        self.num_heads = heads
        self.embed_tokens = embed_tokens
        self.embed_images = build_resnet(cfg.resnet_type, cfg.resnet_drop_path_rate, cfg.freeze_resnet_bn)
        self.image_proj = nn.Linear(TRUNK_CHANNELS, d)
        self.type_embedding = nn.Embedding(2, d)  # 0 text, 1 image
        self.layernorm_embedding = nn.LayerNorm(d)
        self.patch_layernorm_embedding = nn.LayerNorm(d)
        self.embed_positions = nn.Embedding(cfg.max_source_positions + 2, d)
        self.embed_image_positions = nn.Embedding(cfg.image_bucket_size**2 + 1, d)
        self.pos_ln = nn.LayerNorm(d)
        self.image_pos_ln = nn.LayerNorm(d)
        self.pos_q_linear = nn.Linear(d, d)
        self.pos_k_linear = nn.Linear(d, d)
        self.pos_scaling = float(d / heads * cfg.attn_scale_factor) ** -0.5
        self.dropout = nn.Dropout(cfg.dropout)
        rates = ramp(cfg.encoder_drop_path_rate, cfg.encoder_layers)
        self.layers = nn.ModuleList(
            EncoderLayer(
                d,
                heads,
                cfg.encoder_ffn_dim,
                cfg.dropout,
                cfg.attention_dropout,
                cfg.activation_dropout,
                rates[i],
                cfg.attn_scale_factor,
            )
            for i in range(cfg.encoder_layers)
        )
        self.layer_norm = nn.LayerNorm(d)
        self.bucket_lookup = BucketLookup()
        self.num_text_buckets = 2 * cfg.token_bucket_size - 1
        self.num_image_buckets = num_image_buckets(cfg.image_bucket_size)
        self.token_rel_pos_table_list = nn.ModuleList(
            nn.Embedding(self.num_text_buckets, heads) for _ in range(cfg.encoder_layers)
        )
        self.image_rel_pos_table_list = nn.ModuleList(
            nn.Embedding(self.num_image_buckets, heads) for _ in range(cfg.encoder_layers)
        )
        self.register_buffer(
            "token_rp_bucket", token_bucket_matrix(cfg.token_bucket_size, cfg.max_source_positions), persistent=False
        )

    # ------------------------------------------------------------------ images
    def embed_patches(self, images: Tensor, sample_patch_num: int | None):
        """ResNet features → (features (B,N,1024), pos embeddings (B|1,N,D), rows, cols (B|1,N))."""
        feats = self.embed_images.forward_features(images)
        b, _, h, w = feats.shape
        g = self.cfg.image_bucket_size
        if max(h, w) > g and not self.cfg.interpolate_position:
            raise ValueError(
                f"image of {images.shape[-2]}×{images.shape[-1]} px gives a {h}×{w} patch grid, but OFA's image "
                f"position tables cover at most {g}×{g} patches ({g * 16} px). Resize the images or set "
                f"model.interpolate_position=true (bilinear position interpolation, as OFA-Huge)."
            )
        feats = feats.flatten(2).transpose(1, 2)
        device = feats.device
        rows = torch.arange(h, device=device).repeat_interleave(w)[None]
        cols = torch.arange(w, device=device).repeat(h)[None]
        orig = self.cfg.orig_patch_image_size // 16
        if self.cfg.interpolate_position and h * w > orig * orig:
            table = self.embed_image_positions(image_position_ids(orig, orig, g).to(device))
            table = table.reshape(1, orig, orig, -1).permute(0, 3, 1, 2)
            pos = F.interpolate(table, size=(h, w), mode="bilinear").permute(0, 2, 3, 1).reshape(1, h * w, -1)
        else:
            pos = self.embed_image_positions(image_position_ids(h, w, g).to(device))[None]
        if sample_patch_num is not None and 0 < sample_patch_num < h * w:
            # OFA samples k of the h·w patches per image without replacement (pre-training only).
            order = torch.rand(b, h * w, device=device).argsort(dim=1)[:, :sample_patch_num]
            feats = feats.gather(1, order[..., None].expand(-1, -1, feats.shape[-1]))
            pos = pos.expand(b, -1, -1).gather(1, order[..., None].expand(-1, -1, pos.shape[-1]))
            rows, cols = rows.expand(b, -1).gather(1, order), cols.expand(b, -1).gather(1, order)
        return feats, pos, rows, cols

    # ----------------------------------------------------------------- forward
    def forward(
        self,
        input_ids: Tensor,
        patch_images: Tensor | None = None,
        patch_masks: Tensor | None = None,
        sample_patch_num: int | None = None,
    ) -> EncoderOutput:
        input_ids = self._check_length(input_ids)
        b, L = input_ids.shape
        device = input_ids.device
        text_pad = input_ids.eq(self.cfg.pad_token_id)

        raw_pos = self.embed_positions(torch.arange(L, device=device))
        x = self.embed_tokens(input_ids) + self.type_embedding.weight[0]
        if self.cfg.entangle_position_embedding:  # OFA's option: positions in the embeddings too
            x = x + raw_pos
        x = self.dropout(self.layernorm_embedding(x))
        pos = self.pos_ln(raw_pos)[None]  # (1, L, D)
        padding_mask, n_img = text_pad, 0
        text_index = self.token_rp_bucket[:L, :L]
        if patch_images is not None:
            feats, img_pos, rows, cols = self.embed_patches(patch_images, sample_patch_num)
            n_img = feats.shape[1]
            img = self.image_proj(feats) + self.type_embedding.weight[1]
            if self.cfg.entangle_position_embedding:
                img = img + img_pos
            img = self.dropout(self.patch_layernorm_embedding(img))
            x = torch.cat([img, x], dim=1)
            img_pad = torch.zeros(b, n_img, dtype=torch.bool, device=device)
            if patch_masks is not None:
                img_pad = img_pad | ~patch_masks.to(device=device, dtype=torch.bool).view(-1, 1)
            padding_mask = torch.cat([img_pad, text_pad], dim=1)
            img_pos = self.image_pos_ln(img_pos)
            pos = torch.cat([img_pos, pos.expand(img_pos.shape[0], -1, -1)], dim=1)
            rel_index = self._joint_index(text_index, rows, cols, n_img)
        else:
            rel_index = text_index[None]
        x = x * (~padding_mask).unsqueeze(-1).to(x.dtype)

        pos_q = split_heads(self.pos_q_linear(pos), self.num_heads) * self.pos_scaling
        pos_k = split_heads(self.pos_k_linear(pos), self.num_heads)
        biases = self.attention_biases(pos_q, pos_k, rel_index, padding_mask)
        for layer, bias in zip(self.layers, biases):
            x = layer(x, bias)
        x = self.layer_norm(x)
        return EncoderOutput(hidden=x, padding_mask=padding_mask, pos_embed=pos.expand(b, -1, -1))

    def attention_biases(self, pos_q: Tensor, pos_k: Tensor, rel_index: Tensor, padding_mask: Tensor):
        """Each layer's attention bias (B|1, H, S, S): the absolute bias ``pos_q·pos_kᵀ`` (formed once, shared by
        all layers) + the padding mask + that layer's relative bias (a lookup of ``rel_index`` in its tables)."""
        abs_bias = pos_q @ pos_k.transpose(-1, -2)
        base = abs_bias + padding_bias(padding_mask, abs_bias.dtype)
        for text_table, image_table in zip(self.token_rel_pos_table_list, self.image_rel_pos_table_list):
            yield base + relative_bias(rel_index, text_table, image_table, base.dtype, self.bucket_lookup)

    def _joint_index(self, text_index: Tensor, rows: Tensor, cols: Tensor, n_img: int) -> Tensor:
        L = text_index.shape[0]
        s = n_img + L
        none = self.num_text_buckets + self.num_image_buckets  # the zero row
        index = text_index.new_full((rows.shape[0], s, s), none)
        index[:, n_img:, n_img:] = text_index
        index[:, :n_img, :n_img] = (
            image_bucket_from_coords(rows, cols, self.cfg.image_bucket_size) + self.num_text_buckets
        )
        return index

    def _check_length(self, input_ids: Tensor) -> Tensor:
        limit = self.cfg.max_source_positions
        if input_ids.shape[1] <= limit:
            return input_ids
        if self.cfg.overlong_text == "truncate":
            log.warning("source text of %d tokens truncated to max_source_positions=%d", input_ids.shape[1], limit)
            return input_ids[:, :limit]
        raise ValueError(
            f"source text has {input_ids.shape[1]} tokens but max_source_positions={limit}; "
            f"shorten it or set model.overlong_text=truncate"
        )
