"""Export to the HF / ModelScope layout of OFA: ``config.json``, ``model.safetensors``, ``vocab.json`` +
``merges.txt``, loadable by ModelScope's ``OFAModel.from_pretrained`` (``modelscope/models/multi_modal/ofa``) and
OFA's transformers port (OFA-Sys/OFA, ``feature/add_transformers``), and by our own importer
(``ofa_lightning.weights.convert``) bit for bit.

Names: ours are fairseq's; the port renamed the NormFormer norms and the cross-attention, so
:data:`OURS_TO_PORT` is the inverse of the importer's renames (a test checks export → import is the identity). The
port ties one embedding to the encoder, the decoder and the output projection but loads them as three keys, so all
three are written. Buffers the port rebuilds from its config (position buckets) are not written.

Refused with the reason: what the port cannot represent: a WordPiece (Chinese) vocabulary, a vocabulary other than
BPE text + 8,192 codes + 1,000 bins in that order (the port's tokenizer appends exactly those to ``vocab.json``),
different source and target position limits (the port has one ``max_position_embeddings``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ofa_lightning.errors import UserError

__all__ = ["OURS_TO_PORT", "to_port_names", "port_config", "export_hf"]

# ours (fairseq) → HF / ModelScope, applied to keys under encoder./decoder.layers.N (order matters: the cross-attention
# layer norm before the cross-attention itself)
OURS_TO_PORT = [
    (re.compile(r"^(encoder\.layers\.\d+)\.attn_ln\."), r"\1.self_attn_mid_layer_norm."),
    (re.compile(r"^(decoder\.layers\.\d+)\.self_attn_ln\."), r"\1.self_attn_mid_layer_norm."),
    (re.compile(r"^(decoder\.layers\.\d+)\.cross_attn_ln\."), r"\1.cross_attn_mid_layer_norm."),
    (re.compile(r"^(decoder\.layers\.\d+)\.encoder_attn_layer_norm\."), r"\1.cross_attn_layer_norm."),
    (re.compile(r"^(decoder\.layers\.\d+)\.encoder_attn\."), r"\1.cross_attn."),
    (re.compile(r"^((?:en|de)coder\.layers\.\d+)\.ffn_layernorm\."), r"\1.ffn_layer_norm."),
]
PORT_CODES, PORT_BINS = 8192, 1000


def to_port_names(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Our state dict → the port's names, with the tied output projection written out; every tensor a separate,
    contiguous copy (safetensors stores no shared memory)."""
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        if key.endswith("num_batches_tracked"):
            continue
        for pattern, repl in OURS_TO_PORT:
            key = pattern.sub(repl, key)
        out[key] = value.detach().contiguous().clone()
    embed = out.get("decoder.embed_tokens.weight", out.get("encoder.embed_tokens.weight"))
    if embed is not None:
        out["decoder.output_projection.weight"] = embed.clone()
    return out


def port_config(config: Any) -> dict[str, Any]:
    """Our ``OFAConfig`` → the port's ``OFAConfig`` fields (``config.json``)."""
    if config.max_source_positions != config.max_target_positions:
        raise UserError(
            f"the HF/ModelScope layout has one max_position_embeddings; this model has max_source_positions="
            f"{config.max_source_positions} and max_target_positions={config.max_target_positions}"
        )
    return {
        "model_type": "ofa",
        "architectures": ["OFAModel"],
        "vocab_size": config.vocab_size,
        "max_position_embeddings": config.max_source_positions,
        "d_model": config.d_model,
        "encoder_layers": config.encoder_layers,
        "decoder_layers": config.decoder_layers,
        "encoder_attention_heads": config.encoder_attention_heads,
        "decoder_attention_heads": config.decoder_attention_heads,
        "encoder_ffn_dim": config.encoder_ffn_dim,
        "decoder_ffn_dim": config.decoder_ffn_dim,
        "resnet_type": config.resnet_type,
        "resnet_drop_path_rate": config.resnet_drop_path_rate,
        "dropout": config.dropout,
        "attention_dropout": config.attention_dropout,
        "activation_dropout": config.activation_dropout,
        "encoder_drop_path_rate": config.encoder_drop_path_rate,
        "decoder_drop_path_rate": config.decoder_drop_path_rate,
        "token_bucket_size": config.token_bucket_size,
        "image_bucket_size": config.image_bucket_size,
        "attn_scale_factor": config.attn_scale_factor,
        "code_image_size": config.code_image_size,
        "entangle_position_embedding": config.entangle_position_embedding,
        "interpolate_position": config.interpolate_position,
        "orig_patch_image_size": config.orig_patch_image_size,
        "pad_token_id": config.pad_token_id,
        "bos_token_id": config.bos_token_id,
        "eos_token_id": config.eos_token_id,
        "decoder_start_token_id": config.bos_token_id,
        "forced_eos_token_id": config.eos_token_id,
        "normformer": True,
        "add_type_embedding": True,
        "share_decoder_input_output_embed": True,
        "use_ofasys": False,
    }


def check_vocabulary(tokenizer: Any, vocab_size: int) -> None:
    """Refuse a tokenizer the port's tokenizer cannot reproduce (see the module docstring)."""
    if tokenizer is None:
        return
    if tokenizer.text_model.kind != "byte_level_bpe":
        raise UserError(
            "the HF/ModelScope export writes BART's vocab.json + merges.txt: this model's WordPiece (Chinese) "
            "vocabulary is not supported by this exporter"
        )
    codes, bins = tokenizer.code_range, tokenizer.bin_range
    n_codes, n_bins = codes[1] - codes[0], bins[1] - bins[0]
    if (n_codes, n_bins) != (PORT_CODES, PORT_BINS) or bins[0] != codes[1] or bins[1] != vocab_size:
        raise UserError(
            f"the HF/ModelScope tokenizer appends exactly {PORT_CODES} <code_i> then {PORT_BINS} <bin_i> tokens to "
            f"vocab.json; this model has {n_codes} codes at {codes} and {n_bins} bins at {bins} in a vocabulary of "
            f"{vocab_size} (a trained small vocabulary cannot be expressed in that layout)"
        )


def export_hf(model: Any, out_dir: str | Path, tokenizer: Any = None) -> Path:
    """Write ``model`` (an ``OFAModel``) and ``tokenizer`` (an ``OFATokenizer``; None: weights and config only)
    in the HF / ModelScope layout into ``out_dir``; returns the folder."""
    from safetensors.torch import save_file

    check_vocabulary(tokenizer, model.config.vocab_size)
    config = port_config(model.config)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = to_port_names(model.state_dict())
    save_file(
        {k: v.to(torch.float32) if v.is_floating_point() else v for k, v in tensors.items()},
        str(out / "model.safetensors"),
        metadata={"format": "pt"},
    )
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    if tokenizer is not None:
        tokenizer.save(out)  # vocab.json + merges.txt (BART ids = ours) and our manifest beside them
        (out / "tokenizer_config.json").write_text(
            json.dumps(
                {"tokenizer_class": "OFATokenizer", "model_max_length": config["max_position_embeddings"]}, indent=2
            )
            + "\n"
        )
    return out
