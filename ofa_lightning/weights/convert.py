"""Import OFA checkpoints: fairseq (OFA-Sys) and HF/ModelScope state dicts → :class:`OFAModel`.

Our parameter names are OFA's fairseq names (OFA-Sys/OFA ``models/ofa/unify_transformer.py``), so a fairseq
state dict copies over almost as is; the HF/ModelScope port renamed the
NormFormer norms and the cross-attention, which are mapped back here. Every
key is accounted for: loaded, rebuilt (bucket buffers), tied (output
projection), resized (vocabulary) or reported as missing/unexpected.
"""

from __future__ import annotations

import argparse
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ofa_lightning.model.config import RESNET_BLOCKS, OFAConfig
from ofa_lightning.model.ofa import OFAModel

log = logging.getLogger(__name__)

# HF / ModelScope names → fairseq (= ours). Applied to keys under encoder./decoder.layers.N.
_PORT_RENAMES = [
    (re.compile(r"^(encoder\.layers\.\d+)\.self_attn_mid_layer_norm\."), r"\1.attn_ln."),
    (re.compile(r"^(decoder\.layers\.\d+)\.self_attn_mid_layer_norm\."), r"\1.self_attn_ln."),
    (re.compile(r"^(decoder\.layers\.\d+)\.cross_attn_mid_layer_norm\."), r"\1.cross_attn_ln."),
    (re.compile(r"^(decoder\.layers\.\d+)\.cross_attn_layer_norm\."), r"\1.encoder_attn_layer_norm."),
    (re.compile(r"^(decoder\.layers\.\d+)\.cross_attn\."), r"\1.encoder_attn."),
    (re.compile(r"^((?:en|de)coder\.layers\.\d+)\.ffn_layer_norm\."), r"\1.ffn_layernorm."),
]
# Buffers OFA stores but we rebuild from the config, and fairseq bookkeeping.
_REBUILT = re.compile(r"(token_rp_bucket|image_rp_bucket|image_position_idx|\.version|_float_tensor)$")
_TIED = ("decoder.output_projection.weight",)
_EMBED_KEYS = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")


@dataclass
class ConversionReport:
    loaded: int = 0
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # rebuilt buffers, tied weights
    resized: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.missing and not self.unexpected

    def summary(self) -> str:
        lines = [f"loaded {self.loaded} tensors; ignored {len(self.ignored)} (rebuilt buffers / tied weights)"]
        for name, (old, new) in self.resized.items():
            lines.append(f"resized {name}: {tuple(old)} -> {tuple(new)} (new rows ~ N(0, d^-1/2), OFA's rule)")
        if self.missing:
            lines.append(
                f"MISSING in checkpoint ({len(self.missing)}): {', '.join(self.missing[:20])}"
                + (" ..." if len(self.missing) > 20 else "")
            )
        if self.unexpected:
            lines.append(
                f"UNEXPECTED in checkpoint ({len(self.unexpected)}): {', '.join(self.unexpected[:20])}"
                + (" ..." if len(self.unexpected) > 20 else "")
            )
        return "\n".join(lines)


def to_ofa_names(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Strip wrapper prefixes (``model.``, ``module.``) and map port names to OFA's."""
    out = {}
    for key, value in state_dict.items():
        key = re.sub(r"^(module\.|model\.)+", "", key)
        for pattern, repl in _PORT_RENAMES:
            key = pattern.sub(repl, key)
        out[key] = value
    return out


def infer_config(state_dict: Mapping[str, Tensor], **overrides: Any) -> OFAConfig:
    """Read sizes off a (renamed) state dict: width, layers, heads, FFN, ResNet depth, vocabulary."""
    sd = to_ofa_names(state_dict)
    embed = sd[_EMBED_KEYS[0]] if _EMBED_KEYS[0] in sd else sd[_EMBED_KEYS[1]]
    vocab, d = embed.shape

    def count(prefix: str) -> int:
        idx = {int(m.group(1)) for k in sd if (m := re.match(rf"^{prefix}\.(\d+)\.", k))}
        return max(idx) + 1 if idx else 0

    blocks = (
        count("encoder.embed_images.layer1"),
        count("encoder.embed_images.layer2"),
        count("encoder.embed_images.layer3"),
    )
    resnet = next((name for name, b in RESNET_BLOCKS.items() if b == blocks), None)
    if resnet is None:
        raise ValueError(f"checkpoint ResNet has stage block counts {blocks}; supported: {RESNET_BLOCKS}")
    values = dict(
        d_model=d,
        vocab_size=vocab,
        resnet_type=resnet,
        encoder_layers=count("encoder.layers"),
        decoder_layers=count("decoder.layers"),
        encoder_attention_heads=sd["encoder.layers.0.self_attn.c_attn"].numel(),
        decoder_attention_heads=sd["decoder.layers.0.self_attn.c_attn"].numel(),
        encoder_ffn_dim=sd["encoder.layers.0.fc1.weight"].shape[0],
        decoder_ffn_dim=sd["decoder.layers.0.fc1.weight"].shape[0],
        max_source_positions=sd["encoder.embed_positions.weight"].shape[0] - 2,
        max_target_positions=sd["decoder.embed_positions.weight"].shape[0] - 2,
    )
    values.update(overrides)
    return OFAConfig(**values)


def load_state_dict_into(model: OFAModel, state_dict: Mapping[str, Tensor], strict: bool = True) -> ConversionReport:
    """Copy an OFA/ModelScope state dict into ``model`` and account for every key.

    Raises ``ValueError`` naming every tensor whose shape does not match (other than
    a smaller vocabulary, which is grown by OFA's rule), and, when ``strict``, on
    missing or unexpected keys.
    """
    sd = to_ofa_names(state_dict)
    report = ConversionReport()
    ours = model.state_dict()
    # One shared embedding: accept a checkpoint that stores it once.
    for a, b in (_EMBED_KEYS, _EMBED_KEYS[::-1]):
        if a in sd and b not in sd:
            sd[b] = sd[a]
    target_vocab = model.config.vocab_size
    mismatched = []
    new_state = {}
    for key, value in sd.items():
        if _REBUILT.search(key) or key in _TIED:
            report.ignored.append(key)
            continue
        if key not in ours:
            report.unexpected.append(key)
            continue
        want = ours[key]
        if key in _EMBED_KEYS and value.shape[0] != target_vocab and value.shape[1:] == want.shape[1:]:
            value = _resize_vocab(value, target_vocab, key)
            report.resized[key] = (tuple(sd[key].shape), tuple(value.shape))
        if value.shape != want.shape:
            mismatched.append(f"{key}: checkpoint {tuple(value.shape)} vs model {tuple(want.shape)}")
            continue
        new_state[key] = value.to(want.dtype)
    if mismatched:
        raise ValueError(
            "checkpoint does not fit this model config (wrong size or vocabulary?):\n  " + "\n  ".join(mismatched)
        )
    report.missing = sorted(k for k in ours if k not in new_state and not k.endswith("num_batches_tracked"))
    if strict and not report.ok:
        raise ValueError("checkpoint keys do not match the model:\n" + report.summary())
    result = model.load_state_dict(new_state, strict=False)
    report.loaded = len(new_state)
    assert not result.unexpected_keys, result.unexpected_keys
    return report


def _resize_vocab(weight: Tensor, vocab: int, key: str) -> Tensor:
    """OFA's upgrade rule: a smaller checkpoint vocabulary gets new rows ~ N(0, d^-1/2)."""
    if weight.shape[0] > vocab:
        raise ValueError(
            f"{key}: checkpoint vocabulary {weight.shape[0]} is larger than the model's {vocab}; "
            f"set model.vocab_size={weight.shape[0]} or use the checkpoint's tokenizer"
        )
    extra = torch.randn(vocab - weight.shape[0], weight.shape[1], dtype=weight.dtype) * weight.shape[1] ** -0.5
    log.warning("%s: growing vocabulary %d -> %d", key, weight.shape[0], vocab)
    return torch.cat([weight, extra])


def from_state_dict(
    state_dict: Mapping[str, Tensor], config: OFAConfig | None = None, strict: bool = True
) -> tuple[OFAModel, ConversionReport]:
    """Build an :class:`OFAModel` (config inferred when not given) and load ``state_dict`` into it."""
    config = config or infer_config(state_dict)
    model = OFAModel(config)
    report = load_state_dict_into(model, state_dict, strict=strict)
    return model, report


def from_modelscope_state_dict(state_dict: Mapping[str, Tensor], config: OFAConfig | None = None) -> OFAModel:
    """HF/ModelScope-format state dict → our model (strict: every key accounted for)."""
    model, report = from_state_dict(state_dict, config)
    log.info("converted ModelScope/HF state dict: %s", report.summary())
    return model


# Classes OFA's fairseq checkpoints pickle besides tensors (argparse args of the run).
FAIRSEQ_SAFE_GLOBALS = [argparse.Namespace]


def load_checkpoint_file(path: str | Path, trust_checkpoint: bool = False) -> dict:
    """``torch.load`` with ``weights_only=True`` and a small allow-list.

    ``trust_checkpoint=True`` is the documented opt-in for files whose pickles need
    more (for example fairseq's ``omegaconf`` configs): only use it on files you trust.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    from ofa_lightning.weights.integrity import verify_checkpoint

    verify_checkpoint(path)  # a damaged file is refused naming the file and the damaged member
    if trust_checkpoint:
        return torch.load(path, map_location="cpu", weights_only=False)
    try:
        with torch.serialization.safe_globals(FAIRSEQ_SAFE_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling refused something outside the allow-list
        raise RuntimeError(
            f"{path} could not be loaded with weights_only=True ({exc}). If you trust this file, pass "
            f"trust_checkpoint=True (CLI: --trust-checkpoint) to allow arbitrary pickled objects."
        ) from exc


def fairseq_state_dict(checkpoint: Mapping[str, Any], use_ema: bool = False) -> dict[str, Tensor]:
    """The model weights of an OFA fairseq checkpoint (``model`` key, or the EMA copy)."""
    if use_ema:
        extra = checkpoint.get("extra_state") or {}
        ema = extra.get("ema") or extra.get("ema_fp32_params")
        if ema is None:
            raise KeyError("use_ema=True but the checkpoint has no extra_state['ema'] (only OFA's VQA ckpts do)")
        return dict(ema)
    if "model" not in checkpoint:
        if all(isinstance(v, Tensor) for v in checkpoint.values()):
            return dict(checkpoint)  # already a bare state dict (HF/ModelScope pytorch_model.bin)
        raise KeyError(f"no 'model' key in checkpoint; keys: {sorted(checkpoint)[:10]}")
    return dict(checkpoint["model"])


#: OFA model arguments that change the computation but not the weights' shapes, so infer_config cannot see
#: them; fairseq stores them under the same names in the checkpoint's ``cfg["model"]`` (or ``args``).
ARCH_OPTIONS = (
    "entangle_position_embedding",
    "token_bucket_size",
    "image_bucket_size",
    "attn_scale_factor",
    "code_image_size",
    "orig_patch_image_size",
    "interpolate_position",
)


def fairseq_arch_options(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """The :data:`ARCH_OPTIONS` a fairseq checkpoint records (``cfg["model"]``, else ``args``); others absent."""
    cfg = checkpoint.get("cfg")
    model_args = cfg.get("model") if isinstance(cfg, Mapping) else None
    if model_args is None:
        model_args = checkpoint.get("args")
    if model_args is None:
        return {}
    if not isinstance(model_args, Mapping):  # an argparse Namespace
        model_args = vars(model_args)
    return {k: model_args[k] for k in ARCH_OPTIONS if model_args.get(k) is not None}


def checkpoint_config(
    checkpoint: Mapping[str, Any], state_dict: Mapping[str, Tensor], size: str | None = None, **overrides: Any
) -> OFAConfig:
    """The config of a fairseq/HF checkpoint: sizes from the catalogue entry ``size`` or read off the tensors,
    the computation options from the checkpoint's recorded arguments, then ``overrides``."""
    options = {**fairseq_arch_options(checkpoint), **overrides}
    return OFAConfig.from_name(size, **options) if size else infer_config(state_dict, **options)


def from_fairseq_checkpoint(
    path: str | Path,
    config: OFAConfig | None = None,
    use_ema: bool = False,
    trust_checkpoint: bool = False,
    strict: bool = True,
) -> tuple[OFAModel, ConversionReport]:
    """OFA fairseq ``.pt`` (or a HF/ModelScope ``pytorch_model.bin``) → our model + report (config from
    :func:`checkpoint_config` when not given)."""
    checkpoint = load_checkpoint_file(path, trust_checkpoint)
    state = fairseq_state_dict(checkpoint, use_ema)
    return from_state_dict(state, config or checkpoint_config(checkpoint, state), strict=strict)


def load_converted(path: str | Path) -> OFAModel:
    """Load what ``ofa-convert`` wrote (weights_only=True: plain tensors and builtins only)."""
    data = torch.load(Path(path), map_location="cpu", weights_only=True)
    model = OFAModel(OFAConfig.from_saved(data["model_config"]))
    model.load_state_dict(data["state_dict"])
    return model
