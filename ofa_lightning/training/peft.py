"""LoRA fine-tuning through ``peft``: ``module.peft=lora`` (or a mapping of :class:`PEFTConfig` options).

``peft.inject_adapter_in_model`` swaps the targeted ``Linear`` (and, with ``resnet``, ResNet ``Conv2d``) modules of
the plain ``OFAModel`` for LoRA layers in place (the model keeps its class, so the losses, generation and EMA see the
same object) and freezes everything else; :class:`PEFTConfig` can unfreeze the shared token embedding, the layer
norms or the whole ResNet on top. Targets are named groups (``attention``: q/k/v/out projections of every self- and
cross-attention; ``ffn``: ``fc1``/``fc2``; ``resnet``: the trunk's convolutions) or one regular expression over our
module names (``target_modules``, full match, e.g. ``decoder\\.layers\\.\\d+\\.encoder_attn\\.(q|v)_proj``).

Adapter-only checkpoints (``adapter_only_checkpoints``, on by default) keep the trainable tensors only (a few MB) and
record the base weights they were trained on (``module.init_from``: its path and SHA-256); loading one rebuilds the
base, checks its hash, applies the adapter and (for inference) merges it: :func:`load_adapted_model`.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from ofa_lightning.errors import UserError

from .options import Options

__all__ = [
    "ADAPTER_KEY",
    "PEFTConfig",
    "apply_peft",
    "adapter_state_names",
    "merge_adapter",
    "file_sha256",
    "load_adapted_model",
]

log = logging.getLogger(__name__)

#: checkpoint entry describing a LoRA run's checkpoint (base weights, options, whether only the adapter is stored)
ADAPTER_KEY = "ofa_adapter"

TARGET_GROUPS = {
    "attention": r"(?:en|de)coder\.layers\.\d+\.(?:self_attn|encoder_attn)\.(?:q_proj|k_proj|v_proj|out_proj)",
    "ffn": r"(?:en|de)coder\.layers\.\d+\.fc[12]",
    "resnet": r"encoder\.embed_images\.(?:conv1|layer\d+\.\d+\.conv\d)",
}


@dataclass
class PEFTConfig(Options):
    section = "peft"
    method: str = "lora"
    r: int = 8  # LoRA rank
    alpha: float = 16.0  # scaling alpha / r
    dropout: float = 0.05
    targets: list[str] = field(default_factory=lambda: ["attention", "ffn"])  # groups of TARGET_GROUPS
    target_modules: str | None = None  # a regular expression over module names (replaces ``targets``)
    train_embeddings: bool = False  # the shared token embedding (= output projection) trains too
    train_layer_norms: bool = False  # every LayerNorm trains too
    train_resnet: bool = False  # the whole ResNet trains too (its BatchNorm statistics update)
    adapter_only_checkpoints: bool = True

    def __post_init__(self) -> None:
        if self.method != "lora":
            raise UserError(f"module.peft.method={self.method!r}: only 'lora' is supported")
        if self.r < 1:
            raise UserError(f"module.peft.r must be >= 1, got {self.r}")
        unknown = sorted(set(self.targets) - set(TARGET_GROUPS))
        if unknown and not self.target_modules:
            raise UserError(f"module.peft.targets {unknown} unknown; known: {sorted(TARGET_GROUPS)}")
        self.targets = list(self.targets)

    @classmethod
    def parse(cls, value: Any) -> PEFTConfig | None:
        """None / false / "none" → no PEFT; "lora" / true → the defaults; a mapping → those options."""
        if value in (None, False, "none", "null", ""):
            return None
        if value is True or value == "lora":
            return cls()
        if isinstance(value, str):
            raise UserError(f"module.peft={value!r}: expected 'lora', 'none' or a mapping of options")
        data = dict(value)
        if data.pop("enabled", True) is False:
            return None
        return cls.from_any(data)

    def pattern(self) -> str:
        if self.target_modules:
            return self.target_modules
        return "|".join(f"(?:{TARGET_GROUPS[t]})" for t in self.targets)


def apply_peft(model: nn.Module, cfg: PEFTConfig) -> dict[str, int]:
    """Inject LoRA into ``model`` in place and freeze the rest (but what ``cfg`` unfreezes); returns parameter
    counts ``{adapted_modules, trainable, total}``."""
    import re

    from peft import LoraConfig, inject_adapter_in_model

    pattern = cfg.pattern()
    matched = [n for n, _ in model.named_modules() if re.fullmatch(pattern, n)]
    if not matched:
        raise UserError(f"module.peft target pattern {pattern!r} matches no module of the model")
    lora = LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=pattern, bias="none")
    inject_adapter_in_model(lora, model)
    for name, p in model.named_parameters():
        if "lora_" in name:
            continue
        p.requires_grad_(False)
    if cfg.train_embeddings:
        model.embed_tokens.weight.requires_grad_(True)
    if cfg.train_layer_norms:
        for module in model.modules():
            if isinstance(module, nn.LayerNorm):
                for p in module.parameters():
                    p.requires_grad_(True)
    if cfg.train_resnet:
        for p in model.encoder.embed_images.parameters():
            p.requires_grad_(True)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    log.info(
        "LoRA on %d modules: %d of %d parameters train (%.2f%%)",
        len(matched),
        trainable,
        total,
        100.0 * trainable / max(total, 1),
    )
    return {"adapted_modules": len(matched), "trainable": trainable, "total": total}


def adapter_state_names(model: nn.Module, cfg: PEFTConfig) -> list[str]:
    """State-dict names an adapter-only checkpoint keeps: the trainable parameters, and with ``train_resnet`` the
    ResNet's BatchNorm statistics (they change in training)."""
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    if cfg.train_resnet:
        names += [f"encoder.embed_images.{n}" for n, _ in model.encoder.embed_images.named_buffers()]
    return names


def merge_adapter(model: nn.Module) -> nn.Module:
    """Fold every LoRA layer into its base layer and put the base layer back (in place); the model's state dict
    then has the plain model's names."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name, module in list(model.named_modules()):
        if isinstance(module, BaseTunerLayer):
            module.merge(safe_merge=True)
            base = module.get_base_layer()
            # peft writes through ``.data`` (no version bump): a fresh Parameter drops any cache keyed on the old
            # one (the prepacked oneDNN weight of our Linear)
            base.weight = nn.Parameter(base.weight.detach().clone())
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, base)
    for p in model.parameters():
        p.requires_grad_(True)
    return model


_HASHES: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file (cached per path, size and modification time)."""
    st = os.stat(path)
    key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _HASHES[key] = h.hexdigest()
    return _HASHES[key]


def check_base(info: Mapping[str, Any], base: str | os.PathLike | None = None) -> str:
    """The base weights file of an adapter checkpoint: ``base`` when given, else the recorded path; a recorded
    hash that the file does not have is an error."""
    path = str(base or info.get("base") or "")
    if not path:
        raise UserError("this adapter checkpoint records no base weights: pass the base checkpoint (base=...)")
    if not Path(path).is_file():
        raise UserError(
            f"the adapter's base weights {path!r} are not there: pass the base checkpoint it was trained on "
            f"(OFA.load(..., base=<file>), ofa-predict/ofa-eval base=<file>, ofa-export --base <file>)"
        )
    want = info.get("base_sha256")
    if want and file_sha256(path) != want:
        raise UserError(
            f"{path} is not the base this adapter was trained on: its SHA-256 is {file_sha256(path)[:16]}..., "
            f"the adapter records {want[:16]}... ({info.get('base')})"
        )
    return path


def load_adapter_state(model: nn.Module, state: Mapping[str, Tensor]) -> None:
    """Load adapter tensors into a LoRA-injected ``model``; shape mismatches and unknown names are errors naming
    them (an adapter trained on another size or vocabulary)."""
    ours = model.state_dict()
    problems = [
        f"{k}: adapter {tuple(v.shape)} vs model {tuple(ours[k].shape)}"
        for k, v in state.items()
        if k in ours and ours[k].shape != v.shape
    ]
    unknown = sorted(k for k in state if k not in ours)
    if problems or unknown:
        raise UserError(
            "the adapter does not fit this base model (another size or vocabulary?):\n  "
            + "\n  ".join(problems + [f"{k}: not in the model" for k in unknown[:20]])
        )
    model.load_state_dict(dict(state), strict=False)


def load_adapted_model(data: Mapping[str, Any], base: str | os.PathLike | None = None, merge: bool = True):
    """The ``OFAModel`` of a LoRA run's Lightning checkpoint ``data`` (adapter-only: on top of its base weights,
    checked by hash; ``base`` replaces the recorded path), the adapter merged in when ``merge``."""
    from ofa_lightning.model import OFAConfig, OFAModel

    from .warm_start import load_initial_weights

    info = data[ADAPTER_KEY]
    model = OFAModel(OFAConfig.from_saved(data["hyper_parameters"]["model_config"]))
    cfg = PEFTConfig.from_any(info["peft"])
    if info.get("adapter_only", True):
        try:
            load_initial_weights(model, check_base(info, base))
        except ValueError as exc:
            raise UserError(f"the adapter's base weights do not fit its model config: {exc}") from exc
    if not cfg.train_resnet:
        _freeze_batchnorm(model)
    apply_peft(model, cfg)
    state = {k[len("model.") :]: v for k, v in data["state_dict"].items() if k.startswith("model.")}
    load_adapter_state(model, state)
    return merge_adapter(model) if merge else model


def _freeze_batchnorm(model: nn.Module) -> None:
    from timm.layers import freeze_batch_norm_2d

    model.encoder.embed_images = freeze_batch_norm_2d(model.encoder.embed_images)
