"""The OFA size catalogue: one dataclass, five named sizes (OFA-Sys/OFA ``models/ofa/ofa.py``,
``ofa_*_architecture``).

Every architectural switch lives here so that a checkpoint's shape can be
described by a config alone, litgpt-style: ``OFAConfig.from_name("tiny")``. How fast the model runs (fused
kernels, checkpointing, ...) is no part of it: ``ofa_lightning.speed`` (``model.speed`` in the configs).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

log = logging.getLogger(__name__)

# OFA's vocabulary: 4 specials + 50,260 BPE entries (dict.txt) + <mask> + 8,192 codes + 1,000 bins.
OFA_VOCAB_SIZE = 59457
OFA_NUM_CODES = 8192
OFA_NUM_BINS = 1000
# OFA-CN's vocabulary (OFA-Sys/OFA utils/BERT_CN_dict): 4 specials + 21,128 WordPiece entries + <mask> + codes + bins.
OFA_CN_VOCAB_SIZE = 30325


@dataclass
class OFAConfig:
    """Shape and behaviour of one OFA model.

    Field names follow OFA's fairseq arguments where one exists so that users
    of the original code recognise them.
    """

    name: str = "custom"
    # --- sizes -----------------------------------------------------------
    d_model: int = 256
    encoder_layers: int = 4
    decoder_layers: int = 4
    encoder_attention_heads: int = 4
    decoder_attention_heads: int = 4
    encoder_ffn_dim: int = 1024
    decoder_ffn_dim: int = 1024
    vocab_size: int = OFA_VOCAB_SIZE
    # --- image trunk (timm ResNet, stages 1-3 only) ----------------------
    resnet_type: str = "resnet50"
    resnet_drop_path_rate: float = 0.0
    freeze_resnet_bn: bool = False  # OFA's --freeze-resnet: FrozenBatchNorm2d, conv weights still train
    # --- positions -------------------------------------------------------
    max_source_positions: int = 1024
    max_target_positions: int = 1024
    token_bucket_size: int = 256
    image_bucket_size: int = 42
    attn_scale_factor: float = 2.0
    code_image_size: int = 128  # decoder code mode: window = code_image_size // 8
    # Bilinear interpolation of image position embeddings for grids larger than
    # the one the model was trained on (OFA's --interpolate-position, used for Huge).
    interpolate_position: bool = False
    # OFA's --entangle-position-embedding (off in every released model): also add the raw absolute position
    # embeddings to the token / patch embeddings, not only to the attention biases. The demo turns it on: from
    # scratch it gives image patches their position in minutes (grounding), where OFA had pre-training.
    entangle_position_embedding: bool = False
    orig_patch_image_size: int = 256
    # --- regularisation --------------------------------------------------
    dropout: float = 0.1
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    encoder_drop_path_rate: float = 0.0
    decoder_drop_path_rate: float = 0.0
    # --- special token ids -----------------------------------------------
    pad_token_id: int = 1
    bos_token_id: int = 0
    eos_token_id: int = 2
    # --- over-long text ---------------------------------------------------
    # "truncate": keep the first max positions (with a logged warning); "error": refuse.
    overlong_text: str = "error"

    @property
    def head_dim(self) -> int:
        return self.d_model // self.encoder_attention_heads

    @property
    def max_image_grid(self) -> int:
        """Largest patch grid side the 2-D relative-position buckets cover (42 → 672 px)."""
        return self.image_bucket_size

    def __post_init__(self) -> None:
        for heads in (self.encoder_attention_heads, self.decoder_attention_heads):
            if self.d_model % heads:
                raise ValueError(f"d_model={self.d_model} is not divisible by {heads} attention heads")
        if self.resnet_type not in RESNET_BLOCKS:
            raise ValueError(f"unknown resnet_type {self.resnet_type!r}; known: {sorted(RESNET_BLOCKS)}")
        if self.overlong_text not in ("truncate", "error"):
            raise ValueError(f"overlong_text must be 'truncate' or 'error', got {self.overlong_text!r}")

    # --- catalogue -------------------------------------------------------
    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> OFAConfig:
        """Look a size up in the catalogue; keyword arguments override fields."""
        if name not in CATALOGUE:
            raise ValueError(f"unknown OFA size {name!r}; known sizes: {', '.join(CATALOGUE)}")
        return replace(CATALOGUE[name], **overrides)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OFAConfig:
        """Build from a (Hydra/OmegaConf) mapping; ``size`` picks a catalogue base."""
        data = dict(data)
        base = data.pop("size", None)
        if data.get("vocab_size") is None:  # null in conf/model: OFA's vocabulary (or the tokenizer's, at run time)
            data.pop("vocab_size", None)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown OFAConfig fields {unknown}; known: {sorted(known)}")
        if base is not None:
            name = data.pop("name", base)
            return replace(cls.from_name(base, **data), name=name)
        return cls(**data)

    @classmethod
    def from_saved(cls, data: dict[str, Any]) -> OFAConfig:
        """Build from a config saved beside weights (checkpoint hyper-parameters, ``ofa-convert`` output): fields
        this version does not know (e.g. options that moved out of the model config) are left out, with a log line."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            log.info("saved model config: ignoring fields that are not OFAConfig fields: %s", ", ".join(unknown))
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def ramp(rate: float, n: int) -> list[float]:
    """linspace(0, rate, n) as floats (plain Python so models can be built on the meta device)."""
    return [rate * i / (n - 1) if n > 1 else 0.0 for i in range(n)]


# Bottleneck blocks of ResNet stages 1-3 (OFA never uses stage 4). OFA's sizes use resnet50/101/152; the shallower
# resnet26 / resnet14 (timm's block layouts) are a deviation for from-scratch CPU runs such as ``make demo``.
RESNET_BLOCKS = {
    "resnet14": (1, 1, 1),
    "resnet26": (2, 2, 2),
    "resnet50": (3, 4, 6),
    "resnet101": (3, 4, 23),
    "resnet152": (3, 8, 36),
}


def _size(name: str, d: int, layers_enc: int, layers_dec: int, heads: int, resnet: str) -> OFAConfig:
    return OFAConfig(
        name=name,
        d_model=d,
        encoder_layers=layers_enc,
        decoder_layers=layers_dec,
        encoder_attention_heads=heads,
        decoder_attention_heads=heads,
        encoder_ffn_dim=4 * d,
        decoder_ffn_dim=4 * d,
        resnet_type=resnet,
    )


CATALOGUE: dict[str, OFAConfig] = {
    "tiny": _size("tiny", 256, 4, 4, 4, "resnet50"),
    "medium": _size("medium", 512, 4, 4, 8, "resnet101"),
    "base": _size("base", 768, 6, 6, 12, "resnet101"),
    "large": _size("large", 1024, 12, 12, 16, "resnet152"),
    "huge": _size("huge", 1280, 24, 12, 16, "resnet152"),
    # OFA-CN (OFA-Sys/OFA checkpoints_cn.md): Base and Large over the Chinese vocabulary
    "cn_base": replace(_size("cn_base", 768, 6, 6, 12, "resnet101"), vocab_size=OFA_CN_VOCAB_SIZE),
    "cn_large": replace(_size("cn_large", 1024, 12, 12, 16, "resnet152"), vocab_size=OFA_CN_VOCAB_SIZE),
}

# Parameter counts of ModelScope's port at the same settings (59,457-token vocabulary; OFA-CN's 30,325);
# tests/test_model_sizes.py asserts ours lie within 0.5 %.
REFERENCE_PARAM_COUNTS = {
    "tiny": 33_488_336,
    "medium": 92_892_000,
    "base": 182_238_536,
    "large": 472_977_152,
    "huge": 929_486_848,
    "cn_base": 159_865_160,  # OFA-CN-Base, "160M" in checkpoints_cn.md
    "cn_large": 443_145_984,  # OFA-CN-Large, "443M"
}
