"""The one seam between the plain model and its fast paths: :func:`apply_speed`.

The fast paths are subclasses of the plain modules that add no parameters (so state dicts, checkpoints and
conversions are unchanged); :func:`apply_speed` switches each module's class in place to the subclass its
:class:`~.config.SpeedConfig` asks for, or back to the plain class, and sets their options. Applying another
config to the same model replaces the previous one.

=====================================  ===========================================  ==============================
plain module (``ofa_lightning.model``)  fast subclass (``ofa_lightning.speed``)      switch(es)
=====================================  ===========================================  ==============================
``nn.Linear``                          :class:`~.linear.PrepackedLinear`            ``prepacked_linears``
``nn.Dropout``                         :class:`~.dropout.FastDropout`               ``fast_dropout``
``Attention``                          :class:`~.attention.SpeedAttention`          ``lean_cpu_attention``,
                                                                                    ``attention_kernel``
``BucketLookup``                       :class:`~.lookups.IndexAddBucketLookup`      ``bucket_lookup_index_add``
``Encoder``                            :class:`~.flex.FlexEncoder`                  ``attention_kernel=flex``
``Decoder``                            :class:`~.lookups.TransposedProjectionDecoder`  ``transposed_projection``
``EncoderLayer`` / ``DecoderLayer``    :mod:`.checkpointing` subclasses             ``activation_checkpointing``
``OFAResNet``                          :class:`~.resnet.FastResNet`                 ``channels_last``,
                                                                                    ``fold_batchnorm``,
                                                                                    ``fused_convolutions``,
                                                                                    ``inplace_residual``,
                                                                                    ``checkpoint_resnet(_segments)``
=====================================  ===========================================  ==============================

The fused loss (``fused_loss``) is not a module: the training loss reads it from :func:`speed_of`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..model import OFAConfig, OFAModel
from ..model.attention import Attention
from ..model.decoder import Decoder
from ..model.encoder import BucketLookup, Encoder
from ..model.layers import DecoderLayer, EncoderLayer
from ..model.resnet import OFAResNet
from .attention import SpeedAttention
from .checkpointing import CheckpointedDecoderLayer, CheckpointedEncoderLayer
from .config import SpeedConfig, checkpoint_mode
from .dropout import FastDropout
from .flex import FlexEncoder
from .linear import PrepackedLinear
from .lookups import IndexAddBucketLookup, TransposedProjectionDecoder
from .resnet import FastResNet

# fast class -> the plain class it extends
PLAIN_CLASS: dict[type, type] = {
    PrepackedLinear: nn.Linear,
    FastDropout: nn.Dropout,
    SpeedAttention: Attention,
    IndexAddBucketLookup: BucketLookup,
    FlexEncoder: Encoder,
    TransposedProjectionDecoder: Decoder,
    CheckpointedEncoderLayer: EncoderLayer,
    CheckpointedDecoderLayer: DecoderLayer,
    FastResNet: OFAResNet,
}
_CACHES = ("_packed", "_folded", "_foldable_cache")  # per-instance caches of the fast classes
_OPTIONS = ("lean_cpu", "channels_last", "checkpoint_mode", "segment_sizes", "fold_bn", "fuse_cpu", "inplace_residual")


def plain(model: nn.Module) -> nn.Module:
    """Every module of ``model`` back to its plain class (caches and options dropped); returns ``model``."""
    for module in model.modules():
        base = PLAIN_CLASS.get(type(module))
        if base is not None:
            for name in _CACHES + _OPTIONS:
                module.__dict__.pop(name, None)
            module.__class__ = base
    if isinstance(model, OFAModel):
        model.encoder.embed_images.to(memory_format=torch.contiguous_format)
        model.__dict__.pop("speed_config", None)
    return model


def _swap(module: nn.Module, fast: type) -> None:
    module.__class__ = fast


def apply_speed(model: OFAModel, speed: SpeedConfig | Mapping[str, Any] | str | None = None) -> OFAModel:
    """Put the fast paths ``speed`` asks for into ``model`` (in place; default: the ``fast`` profile); returns it.

    The function computed stays the plain model's (within floating-point rounding; the fast dropout mask draws
    another random stream at a probability rounded to 2⁻¹⁵)."""
    cfg = SpeedConfig.from_any(speed)
    plain(model)
    flex = cfg.attention_kernel == "flex"
    lean = cfg.on("lean_cpu_attention")
    for module in model.modules():
        kind = type(module)
        if kind is nn.Linear and cfg.on("prepacked_linears"):
            _swap(module, PrepackedLinear)
        elif kind is nn.Dropout and cfg.on("fast_dropout"):
            _swap(module, FastDropout)
        elif kind is Attention and (lean or flex):
            _swap(module, SpeedAttention)
            module.lean_cpu = lean
        elif kind is BucketLookup and cfg.on("bucket_lookup_index_add"):
            _swap(module, IndexAddBucketLookup)
        elif kind is EncoderLayer and cfg.activation_checkpointing:
            _swap(module, CheckpointedEncoderLayer)
        elif kind is DecoderLayer and cfg.activation_checkpointing:
            _swap(module, CheckpointedDecoderLayer)
    if flex:
        _swap(model.encoder, FlexEncoder)
    if cfg.on("transposed_projection"):
        _swap(model.decoder, TransposedProjectionDecoder)
    _speed_trunk(model.encoder.embed_images, cfg)
    model.speed_config = cfg
    return model


def _speed_trunk(trunk: nn.Module, cfg: SpeedConfig) -> None:
    channels_last = cfg.on("channels_last")
    trunk.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    options = dict(
        channels_last=channels_last,
        checkpoint_mode=checkpoint_mode(cfg.checkpoint_resnet),
        segment_sizes=tuple(cfg.checkpoint_resnet_segments),
        fold_bn=cfg.on("fold_batchnorm"),
        fuse_cpu=cfg.on("fused_convolutions"),
        inplace_residual=cfg.on("inplace_residual"),
    )
    if type(trunk) is not OFAResNet:
        return  # e.g. a trunk replaced by the caller: left as it is
    if options["channels_last"] or options["fold_bn"] or options["checkpoint_mode"] != "off":
        _swap(trunk, FastResNet)
        trunk.__dict__.update(options)


def speed_of(model: nn.Module) -> SpeedConfig:
    """The :class:`SpeedConfig` last applied to ``model`` (``plain`` when none was)."""
    return getattr(model, "speed_config", None) or SpeedConfig(profile="plain")


def build_model(config: OFAConfig, speed: SpeedConfig | Mapping[str, Any] | str | None = None) -> OFAModel:
    """``OFAModel(config)`` with the fast paths of ``speed`` (default: the ``fast`` profile)."""
    return apply_speed(OFAModel(config), speed)
