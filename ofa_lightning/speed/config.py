"""``SpeedConfig``: which fast paths :func:`~ofa_lightning.speed.apply_speed` puts into a plain OFA model.

One config field, ``model.speed``, holds it. ``profile`` names a set of switches; any switch set explicitly
(not null) wins over the profile. The checkpointing and attention-kernel options are memory/kernel choices with
the same meaning in every profile.

Profiles:

* ``fast`` (the default): every path that computes the plain model's function faster on the machine it runs on
  (each equal to the plain path within floating-point rounding, or, for the dropout mask, in distribution).
* ``plain``: none of them: the model as ``ofa_lightning.model`` writes it (``nn.Linear``, ``nn.Dropout``, SDPA,
  BatchNorm ResNet). For reading, debugging and the equality tests.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

log = logging.getLogger(__name__)

# The on/off switches a profile decides (all True in "fast", all False in "plain").
SWITCHES = (
    "channels_last",  # ResNet weights and activations in NHWC (oneDNN / cuDNN convolutions prefer it)
    "fold_batchnorm",  # eval without autograd: BatchNorm folded into the convolutions (cached)
    "prepacked_linears",  # CPU fp32 inference: oneDNN linears with their weights prepacked once
    "fused_convolutions",  # CPU inference, folded trunk: oneDNN's fused conv+ReLU / conv+add+ReLU, weights prepacked
    "inplace_residual",  # with fused_convolutions: the trunk's conv+add+ReLU written into the shortcut's memory
    "fast_dropout",  # CPU training: a 1-byte dropout mask drawn 4 lanes per random word
    "lean_cpu_attention",  # CPU bf16/fp16 training: attention scores kept in the autocast dtype
    "bucket_lookup_index_add",  # CPU: the relative-bias lookup's backward as one index_add_
    "transposed_projection",  # CPU inference on AMD CPUs: the vocabulary projection as (W @ h.T).T
    "fused_loss",  # the training loss as one fused, chunked cross-entropy node (no fp32 (N, V) copies)
)
PROFILES: dict[str, dict[str, bool]] = {
    "fast": dict.fromkeys(SWITCHES, True),
    "plain": dict.fromkeys(SWITCHES, False),
}
ATTENTION_KERNELS = ("sdpa", "flex")
CHECKPOINT_MODES = ("off", "blocks", "stages")
# "stages" checkpointing: the most blocks of stages 1, 2 and 3 in one recomputed segment (a long stage, resnet101/152's
# stage 3, is cut into several). Finer segments hold less during the trunk's backward pass but keep more segment
# inputs for the whole backward pass; which wins depends on where the step's memory peak lies (docs/benchmarks.md).
STAGE_SEGMENT_BLOCKS = (8, 8, 8)


# Speed options a saved model config may hold at its own level (a run config or checkpoint written with them there):
# name there -> SpeedConfig field.
MODEL_LEVEL_OPTIONS = {
    "activation_checkpointing": "activation_checkpointing",
    "checkpoint_resnet": "checkpoint_resnet",
    "checkpoint_resnet_segments": "checkpoint_resnet_segments",
    "channels_last": "channels_last",
    "fold_batchnorm_inference": "fold_batchnorm",
    "attention_kernel": "attention_kernel",
}


def split_model_node(node: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A ``model`` config mapping -> (its ``OFAConfig`` part, its ``model.speed`` part). Speed options found at the
    model level (:data:`MODEL_LEVEL_OPTIONS`) join the speed part, unless ``speed`` sets them itself."""
    arch = dict(node)
    speed = dict(arch.pop("speed", None) or {})
    moved = [name for name in MODEL_LEVEL_OPTIONS if name in arch]
    for name in moved:
        speed.setdefault(MODEL_LEVEL_OPTIONS[name], arch.pop(name))
    if moved:
        log.info("model config: %s read as model.speed options", ", ".join(moved))
    return arch, speed


def checkpoint_mode(value) -> str:
    """The option ``checkpoint_resnet`` as one of :data:`CHECKPOINT_MODES` (``True`` = "blocks")."""
    if value is True or value is False or value is None:
        return "blocks" if value else "off"
    if isinstance(value, str) and value.lower() in CHECKPOINT_MODES + ("none", "false", "true"):
        v = value.lower()
        return {"none": "off", "false": "off", "true": "blocks"}.get(v, v)
    raise ValueError(f"checkpoint_resnet must be one of {CHECKPOINT_MODES} (or true/false), got {value!r}")


def segment_blocks(value) -> tuple[int, int, int]:
    """The option ``checkpoint_resnet_segments`` as three positive ints (one per stage)."""
    try:
        out = () if isinstance(value, (str, bytes)) else tuple(int(v) for v in value)
    except (TypeError, ValueError):
        out = ()
    if len(out) != 3 or min(out) < 1 or any(float(v) != int(v) for v in value):
        raise ValueError(
            f"checkpoint_resnet_segments must be three positive integers (the most blocks of stages 1, "
            f"2 and 3 in one checkpoint segment), got {value!r}"
        )
    return out


@dataclass
class SpeedConfig:
    """The fast paths of one model (``model.speed`` in the configs). ``None`` = the profile's choice."""

    profile: str = "fast"  # fast | plain
    channels_last: bool | None = None
    fold_batchnorm: bool | None = None
    prepacked_linears: bool | None = None
    fused_convolutions: bool | None = None
    inplace_residual: bool | None = None
    fast_dropout: bool | None = None
    lean_cpu_attention: bool | None = None
    bucket_lookup_index_add: bool | None = None
    transposed_projection: bool | None = None
    fused_loss: bool | None = None
    # memory for time, in every profile: recompute in the backward pass (BatchNorm statistics still updated once)
    activation_checkpointing: bool = False  # the encoder and decoder layers
    checkpoint_resnet: str = "off"  # off | blocks (each bottleneck's input) | stages (true/false: blocks/off)
    checkpoint_resnet_segments: list[int] = field(default_factory=lambda: list(STAGE_SEGMENT_BLOCKS))
    # the encoder's self-attention: "sdpa" (one dense (B, H, S, S) float mask; every device) | "flex"
    # (FlexAttention forms the position biases and padding inside the kernel: GPU training; speed/flex.py)
    attention_kernel: str = "sdpa"

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise ValueError(f"model.speed.profile must be one of {sorted(PROFILES)}, got {self.profile!r}")
        if self.attention_kernel not in ATTENTION_KERNELS:
            raise ValueError(f"attention_kernel must be one of {ATTENTION_KERNELS}, got {self.attention_kernel!r}")
        checkpoint_mode(self.checkpoint_resnet)  # fail at config time on an unknown mode
        self.checkpoint_resnet_segments = list(segment_blocks(self.checkpoint_resnet_segments))  # plain ints

    def on(self, switch: str) -> bool:
        """Whether ``switch`` (one of :data:`SWITCHES`) is on: its own value, else the profile's."""
        value = getattr(self, switch)
        return PROFILES[self.profile][switch] if value is None else bool(value)

    @classmethod
    def from_any(cls, value: SpeedConfig | Mapping[str, Any] | str | None) -> SpeedConfig:
        """A ``SpeedConfig`` from itself, a mapping of its fields, a profile name, or None (the default)."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            return cls(profile=value)
        data = dict(value)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown model.speed fields {unknown}; known: {sorted(known)}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
