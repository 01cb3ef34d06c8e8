"""Optimiser, LR schedule and freezing, as OFA trains (OFA-Sys/OFA ``run_scripts/*/train_*.sh``:
``--optimizer adam --lr-scheduler polynomial_decay``).

* AdamW (fairseq ``adam`` with decoupled weight decay): betas (0.9, 0.999), eps 1e-8, weight decay 0.01 on *all*
  parameters as OFA does; ``exclude_norm_bias_from_decay`` puts 1-D parameters (norms, biases, head scales) in a
  group without decay instead.
* fairseq's ``polynomial_decay`` schedule: linear warm-up from 0 (``warmup_steps``, or ``warmup_ratio`` × max_steps,
  truncated as ``int(ratio * max_steps)``), then ``(peak − end_lr) · (1 − progress)^power + end_lr`` until
  ``max_steps``, ``end_lr`` after. The length is **config** (``max_steps``), never
  ``trainer.estimated_stepping_batches`` (touching it drops the stateful-dataloader state on resume,
  Lightning-AI/pytorch-lightning#20550).
* Step semantics match fairseq: the LR after ``s`` finished updates is ``lr_at(s)``, and the first update runs at
  ``peak / warmup`` (fairseq's initial warm-up factor), so ``lr_at(0) = lr_at(1)`` when warming up.
* Freezing: the shared token embedding (= the output projection; OFA's ``--freeze-encoder-embedding
  --freeze-decoder-embedding``), the ResNet's BatchNorms (``FrozenBatchNorm2d``, OFA's ``--freeze-resnet``; convs
  still train), or the whole ResNet trunk (frozen BatchNorms included).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from .options import Options

__all__ = [
    "OptimConfig",
    "param_groups",
    "build_optimizer",
    "build_scheduler",
    "warmup_steps",
    "lr_at",
    "apply_freezing",
]


@dataclass
class OptimConfig(Options):
    section = "optim"
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.01
    exclude_norm_bias_from_decay: bool = False
    # schedule
    max_steps: int | None = None  # schedule length in optimiser updates; None = the Trainer's (configured) max_steps
    warmup_steps: int | None = None  # wins over warmup_ratio when set
    warmup_ratio: float = 0.0
    end_lr: float = 0.0
    power: float = 1.0
    # implementation
    fused: bool | None = None  # torch AdamW's fused kernel (CUDA); None = torch's default
    # freezing (applied when the LightningModule is built, before the optimiser sees the parameters)
    freeze_embeddings: bool = False
    freeze_resnet_bn: bool = False
    freeze_resnet: bool = False

    def __post_init__(self) -> None:
        self.betas = tuple(float(b) for b in self.betas)  # Hydra gives lists
        if len(self.betas) != 2:
            raise ValueError(f"betas needs two values, got {self.betas}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")


# ---------------------------------------------------------------------------------------------------------------
# optimiser
# ---------------------------------------------------------------------------------------------------------------
def param_groups(model: nn.Module, weight_decay: float, exclude_norm_bias: bool = False) -> list[dict[str, Any]]:
    """Trainable parameters (tied ones once) in one group, or decay / no-decay groups (1-D parameters undecayed)."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if exclude_norm_bias and p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return [g for g in groups if g["params"]]


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.AdamW:
    groups = param_groups(model, cfg.weight_decay, cfg.exclude_norm_bias_from_decay)
    if not groups:
        raise ValueError("no trainable parameters (everything is frozen)")
    kwargs: dict[str, Any] = {}
    if cfg.fused is not None:
        kwargs["fused"] = cfg.fused
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay, **kwargs)


# ---------------------------------------------------------------------------------------------------------------
# schedule
# ---------------------------------------------------------------------------------------------------------------
def warmup_steps(cfg: OptimConfig, max_steps: int) -> int:
    if cfg.warmup_steps is not None:
        return int(cfg.warmup_steps)
    return int(cfg.warmup_ratio * max_steps)


def lr_at(step: int, cfg: OptimConfig, max_steps: int) -> float:
    """LR after ``step`` finished updates (fairseq ``polynomial_decay``; see the module doc)."""
    peak, end = cfg.lr, cfg.end_lr
    warm = warmup_steps(cfg, max_steps)
    if warm > 0 and step <= warm:
        return peak * max(step, 1) / warm
    if step >= max_steps:
        return end
    remaining = 1.0 - (step - warm) / max(max_steps - warm, 1)
    return (peak - end) * remaining**cfg.power + end


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, max_steps: int) -> LambdaLR:
    """Per-update LambdaLR (use with ``interval="step"``); every group follows the schedule scaled to its own LR."""
    if max_steps is None or int(max_steps) <= 0:
        raise ValueError(
            "the LR schedule needs a positive max_steps from the config (optim.max_steps or "
            "trainer.max_steps); it is never derived from the data loader"
        )
    max_steps = int(max_steps)
    if warmup_steps(cfg, max_steps) > max_steps:
        raise ValueError(f"warm-up ({warmup_steps(cfg, max_steps)} steps) is longer than max_steps={max_steps}")
    return LambdaLR(optimizer, lambda step: lr_at(step, cfg, max_steps) / cfg.lr)


# ---------------------------------------------------------------------------------------------------------------
# freezing
# ---------------------------------------------------------------------------------------------------------------
def apply_freezing(model: nn.Module, cfg: OptimConfig) -> dict[str, int]:
    """Freeze what ``cfg`` asks on an ``OFAModel``; returns the number of parameters frozen per option."""
    report: dict[str, int] = {}
    if cfg.freeze_embeddings:
        weight = model.embed_tokens.weight
        weight.requires_grad_(False)
        report["embeddings"] = weight.numel()
    trunk = model.encoder.embed_images
    if cfg.freeze_resnet_bn or cfg.freeze_resnet:  # a frozen trunk must not update BN statistics either
        from timm.layers import freeze_batch_norm_2d

        before = sum(p.numel() for p in trunk.parameters())
        model.encoder.embed_images = trunk = freeze_batch_norm_2d(trunk)
        report["resnet_bn"] = before - sum(p.numel() for p in trunk.parameters())
    if cfg.freeze_resnet:
        n = 0
        for p in trunk.parameters():
            p.requires_grad_(False)
            n += p.numel()
        report["resnet"] = n
    return report
