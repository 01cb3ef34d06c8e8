"""Exponential moving average of the weights (OFA's VQA fine-tuning: decay 0.9999, fp32 copy, evaluate with EMA).

``shadow ← decay · shadow + (1 − decay) · weight`` after every ``update_every``-th optimiser step from
``start_step`` on; before ``start_step`` the shadow just copies the weights. Floating-point buffers (BatchNorm
statistics) are averaged like parameters, as fairseq's EMA does; integer buffers are copied. The shadow is kept in
fp32 whatever the training precision, on the model's device (it follows the model when that moves), and stored in
checkpoints through :meth:`EMA.state_dict` / :meth:`EMA.load_state_dict`. ``with ema.swapped(model):`` puts the
averaged weights into the model and restores the trained ones on exit.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .options import Options

__all__ = ["EMAConfig", "EMA"]


@dataclass
class EMAConfig(Options):
    section = "ema"
    enabled: bool = False
    decay: float = 0.9999
    start_step: int = 0
    update_every: int = 1
    evaluate_with_ema: bool = True  # validation / test run on the averaged weights

    def __post_init__(self) -> None:
        if not 0.0 <= self.decay <= 1.0:
            raise ValueError(f"EMA decay must be in [0, 1], got {self.decay}")
        if self.update_every < 1:
            raise ValueError("update_every must be >= 1")

    @classmethod
    def from_any(cls, value: EMAConfig | Mapping[str, Any] | bool | None) -> EMAConfig:
        if value is True:
            return cls(enabled=True)
        return super().from_any(None if value is False else value)

    @classmethod
    def defaults_for(cls, data: dict[str, Any]) -> dict[str, Any]:
        data.setdefault("enabled", True)  # an ema: {...} section means EMA on
        return data


def _tracked(model: nn.Module) -> Iterator[tuple[str, Tensor]]:
    """Parameters (tied ones once) then buffers, by name."""
    yield from model.named_parameters()
    yield from model.named_buffers()


class EMA:
    def __init__(self, model: nn.Module, decay: float = 0.9999, start_step: int = 0, update_every: int = 1):
        self.decay = float(decay)
        self.start_step = int(start_step)
        self.update_every = int(update_every)
        self.num_updates = 0
        self.shadow: dict[str, Tensor] = {}
        with torch.no_grad():
            for name, t in _tracked(model):
                self.shadow[name] = t.detach().float().clone() if t.is_floating_point() else t.detach().clone()
        self._backup: dict[str, Tensor] | None = None

    @classmethod
    def from_config(cls, model: nn.Module, cfg: EMAConfig) -> EMA:
        return cls(model, cfg.decay, cfg.start_step, cfg.update_every)

    # ------------------------------------------------------------------------------------------------- update
    def _follow_device(self, model: nn.Module) -> None:
        ref = next(iter(self.shadow.values()), None)
        first = next(_tracked(model), None)
        if ref is not None and first is not None and ref.device != first[1].device:
            self.shadow = {k: v.to(first[1].device) for k, v in self.shadow.items()}

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> bool:
        """Fold the model's current weights in after optimiser step ``step``; returns whether it did."""
        if step % self.update_every:
            return False
        self._follow_device(model)
        decay = self.decay if step >= self.start_step else 0.0
        floats_s, floats_m = [], []
        for name, t in _tracked(model):
            s = self.shadow.get(name)
            if s is None:
                raise KeyError(f"EMA has no shadow for {name!r}: the model changed after the EMA was built")
            if s.is_floating_point():
                floats_s.append(s)
                floats_m.append(t.detach().float())
            else:
                s.copy_(t)
        if floats_s:
            if decay == 0.0:
                torch._foreach_copy_(floats_s, floats_m)
            else:
                torch._foreach_lerp_(floats_s, floats_m, 1.0 - decay)
        self.num_updates += 1
        return True

    # ------------------------------------------------------------------------------------------------- swap
    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Write the averaged weights into ``model`` (cast to each tensor's dtype)."""
        self._follow_device(model)
        for name, t in _tracked(model):
            t.copy_(self.shadow[name])

    @contextmanager
    def swapped(self, model: nn.Module):
        """Evaluate with the averaged weights; the trained weights come back on exit (also on error)."""
        if self._backup is not None:
            raise RuntimeError("EMA weights are already swapped in")
        self.swap_in(model)
        try:
            yield model
        finally:
            self.swap_out(model)

    @torch.no_grad()
    def swap_in(self, model: nn.Module) -> None:
        if self._backup is not None:
            raise RuntimeError("EMA weights are already swapped in")
        self._backup = {name: t.detach().clone() for name, t in _tracked(model)}
        self.copy_to(model)

    @torch.no_grad()
    def swap_out(self, model: nn.Module) -> None:
        if self._backup is None:
            return
        for name, t in _tracked(model):
            t.copy_(self._backup[name])
        self._backup = None

    @property
    def swapped_in(self) -> bool:
        return self._backup is not None

    # ------------------------------------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        return {
            "decay": self.decay,
            "start_step": self.start_step,
            "update_every": self.update_every,
            "num_updates": self.num_updates,
            "shadow": dict(self.shadow),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        shadow = state["shadow"]
        missing = sorted(set(self.shadow) - set(shadow))
        unexpected = sorted(set(shadow) - set(self.shadow))
        if missing or unexpected:
            raise KeyError(f"EMA state does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
        for name, value in shadow.items():
            ref = self.shadow[name]
            if ref.shape != value.shape:
                raise ValueError(f"EMA state {name!r}: shape {tuple(value.shape)}, model {tuple(ref.shape)}")
            self.shadow[name] = value.to(device=ref.device, dtype=ref.dtype).clone()
        self.num_updates = int(state.get("num_updates", 0))
