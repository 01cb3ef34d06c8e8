"""The unified OFA encoder-decoder (OFA paper §3; OFA-Sys/OFA ``models/ofa/unify_transformer.py``, ``OFAModel``).

Plain PyTorch: no Lightning, Hydra or data code, and no machine-specific kernels. ``ofa_lightning.speed`` puts
the fast paths in (:func:`ofa_lightning.speed.build_model`), computing the same function.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .config import OFAConfig
from .decoder import Decoder
from .encoder import Encoder
from .outputs import DecoderCache, EncoderOutput

__all__ = ["OFAModel", "EncoderOutput", "DecoderCache"]


class OFAModel(nn.Module):
    """OFA with one token embedding shared by encoder, decoder and output projection."""

    def __init__(self, config: OFAConfig):
        super().__init__()
        self.config = config
        embed = nn.Embedding(config.vocab_size, config.d_model, padding_idx=config.pad_token_id)
        self.encoder = Encoder(config, embed)
        self.decoder = Decoder(config, embed)
        self.reset_parameters()

    # ----------------------------------------------------------------- set-up
    @classmethod
    def from_name(cls, name: str, **overrides) -> OFAModel:
        return cls(OFAConfig.from_name(name, **overrides))

    def reset_parameters(self) -> None:
        """OFA's ``init_bert_params``: Linear/Embedding ~ N(0, 0.02), biases 0, pad row 0.

        As in OFA this also re-initialises the relative-position tables (they are
        embeddings). The ResNet keeps timm's Kaiming init; LayerNorms 1/0; head scales 1.
        """
        trunk = set(self.encoder.embed_images.modules())
        for module in self.modules():
            if module in trunk:
                continue
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                if module.weight.is_meta:
                    continue
                nn.init.normal_(module.weight, std=0.02)
                if module.padding_idx is not None:
                    with torch.no_grad():
                        module.weight[module.padding_idx].zero_()

    @property
    def embed_tokens(self) -> nn.Embedding:
        return self.encoder.embed_tokens

    def num_parameters(self) -> dict[str, int]:
        """Unique parameters (the tied embedding counted once), total and ResNet part."""
        total = sum(p.numel() for p in self.parameters())
        resnet = sum(p.numel() for p in self.encoder.embed_images.parameters())
        return {"total": total, "resnet": resnet}

    # --------------------------------------------------------------- forward
    def encode(
        self,
        input_ids: Tensor,
        patch_images: Tensor | None = None,
        patch_masks: Tensor | None = None,
        sample_patch_num: int | None = None,
    ) -> EncoderOutput:
        return self.encoder(input_ids, patch_images, patch_masks, sample_patch_num)

    def new_cache(self) -> DecoderCache:
        return DecoderCache()

    def prime_cache(self, cache: DecoderCache, encoder_out: EncoderOutput, rows: Tensor | None = None) -> None:
        """Fill ``cache``'s cross-attention entries from ``encoder_out``, then select ``rows``.

        Beam search calls it with the B distinct inputs and ``rows`` = each input repeated
        ``beam`` times, so the per-layer cross-attention K/V are projected once per input
        instead of once per beam (same values; the projection is row-wise)."""
        self.decoder.prime_cache(cache, encoder_out, rows)

    def decode_hidden(
        self,
        prev_output_tokens: Tensor,
        encoder_out: EncoderOutput,
        code_masks: Tensor | None = None,
        cache: DecoderCache | None = None,
    ) -> Tensor:
        return self.decoder(prev_output_tokens, encoder_out, code_masks, cache)

    def decode(
        self,
        prev_output_tokens: Tensor,
        encoder_out: EncoderOutput,
        code_masks: Tensor | None = None,
        cache: DecoderCache | None = None,
    ) -> Tensor:
        """Logits (B, T_new, V); with a cache only positions cache.length..t−1 are computed."""
        return self.decoder.project(self.decoder(prev_output_tokens, encoder_out, code_masks, cache))

    def project(self, hidden: Tensor, vocab_ids: Tensor | None = None) -> Tensor:
        """Vocabulary logits of decoder states; ``vocab_ids`` (sorted ids) computes only those columns."""
        return self.decoder.project(hidden, vocab_ids)

    def forward(
        self,
        input_ids: Tensor,
        prev_output_tokens: Tensor,
        patch_images: Tensor | None = None,
        patch_masks: Tensor | None = None,
        code_masks: Tensor | None = None,
        sample_patch_num: int | None = None,
    ) -> Tensor:
        encoder_out = self.encode(input_ids, patch_images, patch_masks, sample_patch_num)
        return self.decode(prev_output_tokens, encoder_out, code_masks)
