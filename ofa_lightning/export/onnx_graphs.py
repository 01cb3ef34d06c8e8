"""ONNX graphs of OFA for decoding with onnxruntime: ``encoder.onnx``, ``decoder_first.onnx`` and
``decoder_step.onnx`` (text decoding, the plain model path, fp32).

* encoder: ``input_ids`` (B, S), ``patch_images`` (B, 3, H, W), ``patch_masks`` (B,) → ``hidden`` (B, S', D),
  ``padding_mask`` (B, S'), ``pos_embed`` (B, S', D);
* decoder_first (the BOS step; it also projects what the later steps reuse): ``tokens`` (R, 1), the encoder
  outputs of the R rows → ``logits`` (R, V), ``self_pos_k``, ``cross_pos_k``, ``cross_mask``, and per layer
  ``self_k_i``, ``self_v_i`` (R, H, 1, hd) and ``cross_k_i``, ``cross_v_i`` (R, H, S', hd);
* decoder_step: ``tokens`` (R, t) (every token so far; only the last position is computed), ``self_pos_k``
  (1, H, t−1, hd), ``cross_pos_k``, ``cross_mask``, the per-layer key/value cache (self: length t−1; cross) →
  ``logits`` (R, V), ``self_pos_k`` and the self-attention cache of length t.

Batch, source length and target length are dynamic (``torch.onnx.export(dynamo=True)`` with ``Dim`` s); the image
size is the one exported. ``onnx_runner.py`` runs them under the kit's own beam search. Image-code decoding
(text-to-image) is not exported: the runner refuses it.
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ofa_lightning.model.outputs import DecoderCache, EncoderOutput

__all__ = ["EncoderGraph", "DecoderFirstGraph", "DecoderStepGraph", "export_onnx", "MANIFEST"]

log = logging.getLogger(__name__)
MANIFEST = "ofa_onnx.json"


class EncoderGraph(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: Tensor, patch_images: Tensor, patch_masks: Tensor):
        out = self.model.encode(input_ids, patch_images, patch_masks)
        pos = out.pos_embed.expand(out.hidden.shape[0], -1, -1)
        return out.hidden, out.padding_mask, pos


def _flat_kv(pairs: list[tuple[Tensor, Tensor]]) -> list[Tensor]:
    return [t for pair in pairs for t in pair]


class DecoderFirstGraph(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, tokens: Tensor, hidden: Tensor, padding_mask: Tensor, pos_embed: Tensor):
        cache = DecoderCache()
        enc = EncoderOutput(hidden, padding_mask, pos_embed)
        out = self.model.decoder(tokens, enc, None, cache)
        logits = self.model.decoder.project(out[:, -1, :])
        self_pos_k = cache.self_pos_k.expand(1, -1, -1, -1)
        cross_pos_k = cache.cross_pos_k.expand(tokens.shape[0], -1, -1, -1)
        return (logits, self_pos_k, cross_pos_k, cache.cross_mask, *_flat_kv(cache.self_kv), *_flat_kv(cache.cross_kv))


class DecoderStepGraph(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.layers = len(model.decoder.layers)

    def forward(self, tokens: Tensor, self_pos_k: Tensor, cross_pos_k: Tensor, cross_mask: Tensor, *kv: Tensor):
        n = self.layers
        self_kv = [(kv[2 * i], kv[2 * i + 1]) for i in range(n)]
        cross_kv = [(kv[2 * n + 2 * i], kv[2 * n + 2 * i + 1]) for i in range(n)]
        cache = DecoderCache(
            length=tokens.shape[1] - 1,
            self_kv=self_kv,
            cross_kv=cross_kv,
            self_pos_k=self_pos_k,
            cross_pos_k=cross_pos_k,
            cross_mask=cross_mask,
        )
        enc = EncoderOutput(cross_pos_k[:, 0, :, :1], cross_mask[:, 0, 0, :] != 0, cross_pos_k[:, 0])  # unused
        out = self.model.decoder(tokens, enc, None, cache)
        logits = self.model.decoder.project(out[:, -1, :])
        return (logits, cache.self_pos_k, *_flat_kv(cache.self_kv))


def plain_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` on the plain computation path (no machine-specific kernels), eval mode, fp32."""
    model = copy.deepcopy(model).float().eval()
    try:
        from ofa_lightning.speed import plain
    except ImportError:  # a model package without the speed seam is plain already
        plain = None
    if plain is not None:
        plain(model)
    for module in model.modules():  # prepacked oneDNN linears, when present, are no ONNX ops
        if hasattr(module, "prepack_cpu"):
            module.prepack_cpu = False
    return model


def _names(prefix: str, layers: int) -> list[str]:
    return [f"{prefix}_{kind}_{i}" for i in range(layers) for kind in ("k", "v")]


def export_onnx(
    model: nn.Module, out_dir: str | Path, opset: int = 18, tokenizer: Any = None, image_size: int | None = None
) -> Path:
    """Write the three graphs and a manifest (model config, tensor names, image size) into ``out_dir``."""
    from torch.export import Dim

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = plain_copy(model)
    cfg = model.config
    n = len(model.decoder.layers)
    heads, hd = cfg.decoder_attention_heads, cfg.d_model // cfg.decoder_attention_heads
    size = int(image_size or getattr(cfg, "orig_patch_image_size", 256) or 256)
    batch, src, tgt = Dim("batch", min=1, max=1024), Dim("src", min=2, max=cfg.max_source_positions), None
    ids = torch.randint(4, 100, (2, 7))
    images = torch.randn(2, 3, size, size)
    masks = torch.tensor([True, True])
    with torch.no_grad():
        enc = EncoderGraph(model).eval()
        hidden, pad, pos = enc(ids, images, masks)
        torch.onnx.export(
            enc,
            (ids, images, masks),
            str(out / "encoder.onnx"),
            dynamo=True,
            opset_version=opset,
            input_names=["input_ids", "patch_images", "patch_masks"],
            output_names=["hidden", "padding_mask", "pos_embed"],
            dynamic_shapes={"input_ids": {0: batch, 1: src}, "patch_images": {0: batch}, "patch_masks": {0: batch}},
            verbose=False,
        )
        srcp = Dim("src_total", min=2, max=cfg.max_source_positions + 4096)
        first = DecoderFirstGraph(model).eval()
        bos = torch.zeros(2, 1, dtype=torch.long)
        first_out = first(bos, hidden, pad, pos)
        torch.onnx.export(
            first,
            (bos, hidden, pad, pos),
            str(out / "decoder_first.onnx"),
            dynamo=True,
            opset_version=opset,
            input_names=["tokens", "hidden", "padding_mask", "pos_embed"],
            output_names=["logits", "self_pos_k", "cross_pos_k", "cross_mask", *_names("self", n), *_names("cross", n)],
            dynamic_shapes={
                "tokens": {0: batch},
                "hidden": {0: batch, 1: srcp},
                "padding_mask": {0: batch, 1: srcp},
                "pos_embed": {0: batch, 1: srcp},
            },
            verbose=False,
        )
        tgt = Dim("past", min=1, max=cfg.max_target_positions - 1)
        step = DecoderStepGraph(model).eval()
        _, spk, cpk, cmask, *kv = first_out
        tokens = torch.tensor([[0, 5], [0, 6]])
        kv_shapes = [{0: batch, 2: tgt}] * (2 * n) + [{0: batch, 2: srcp}] * (2 * n)
        torch.onnx.export(
            step,
            (tokens, spk, cpk, cmask, *kv),
            str(out / "decoder_step.onnx"),
            dynamo=True,
            opset_version=opset,
            input_names=["tokens", "self_pos_k", "cross_pos_k", "cross_mask", *_names("self", n), *_names("cross", n)],
            output_names=["logits", "new_self_pos_k", *_names("new_self", n)],
            dynamic_shapes=(
                {0: batch, 1: tgt + 1},
                {2: tgt},
                {0: batch, 2: srcp},
                {0: batch, 3: srcp},
                tuple(kv_shapes),
            ),
            verbose=False,
        )
    manifest = {
        "format": "ofa-onnx",
        "model_config": asdict(cfg),
        "image_size": size,
        "layers": n,
        "heads": heads,
        "head_dim": hd,
        "opset": opset,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1, default=str))
    if tokenizer is not None and hasattr(tokenizer, "save"):
        tokenizer.save(out / "tokenizer")
    return out
