"""What ``OFALitModule`` adds to (and takes from) a Lightning checkpoint, as a mixin.

Saved besides Lightning's own entries: the EMA (``ema``; never the averaged weights as the trained ones when the
EMA happens to be swapped in), the non-finite guard and the training counters, and the model card
(``model_card.py``). A LoRA run (``peft.py``) with adapter-only checkpoints keeps only the trainable tensors in
``state_dict`` (and in the EMA shadow) and records its base weights under ``ofa_adapter`` (path and SHA-256); on
loading (a resume, ``ofa-eval``) the base tensors come from the module's own model, which ``init_from`` filled with
that base, after checking it is the recorded file.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ofa_lightning.errors import UserError

from .ema import EMA, _tracked
from .model_card import CARD_KEY, module_card
from .peft import ADAPTER_KEY, adapter_state_names, file_sha256

__all__ = ["CheckpointStateMixin"]

log = logging.getLogger(__name__)


class CheckpointStateMixin:
    """``on_save_checkpoint`` / ``on_load_checkpoint`` / ``on_fit_start`` of ``OFALitModule``."""

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.ema is not None:
            if self.ema.swapped_in:  # never store the averaged weights as the trained ones
                backup = self.ema._backup or {}
                by_id = {id(t): backup[n] for n, t in _tracked(self.model) if n in backup}
                state = checkpoint.get("state_dict", {})
                for key, t in self.model.state_dict(keep_vars=True).items():
                    if id(t) in by_id and f"model.{key}" in state:
                        state[f"model.{key}"] = by_id[id(t)].clone()
            checkpoint["ema"] = self.ema.state_dict()
        checkpoint["ofa_nonfinite"] = self.nonfinite.state_dict()
        checkpoint["ofa_training"] = {
            "skipped_nonfinite": self.skipped_nonfinite,
            "samples_seen": self.samples_seen,
            "tokens_seen": self.tokens_seen,
        }
        checkpoint[CARD_KEY] = module_card(self)  # model_card.py: config, tokenizer, tasks, decoding
        if self.peft_cfg is not None:
            self._save_adapter(checkpoint)

    def _save_adapter(self, checkpoint: dict[str, Any]) -> None:
        only = self.peft_cfg.adapter_only_checkpoints
        checkpoint[ADAPTER_KEY] = {
            "peft": self.peft_cfg.to_dict(),
            "adapter_only": only,
            "base": str(Path(self.peft_base).resolve()) if self.peft_base else None,
            "base_sha256": file_sha256(self.peft_base) if self.peft_base else None,
        }
        if not only:
            return
        keep = set(adapter_state_names(self.model, self.peft_cfg))
        state = checkpoint.get("state_dict", {})
        checkpoint["state_dict"] = type(state)(
            (k, v) for k, v in state.items() if not k.startswith("model.") or k[len("model.") :] in keep
        )
        if "ema" in checkpoint:
            ema = dict(checkpoint["ema"])
            ema["shadow"] = {k: v for k, v in ema["shadow"].items() if k in keep}
            checkpoint["ema"] = ema

    def _restore_base(self, checkpoint: dict[str, Any]) -> None:
        """Fill an adapter-only checkpoint's missing base tensors from the module's model (its ``init_from``)."""
        info = checkpoint[ADAPTER_KEY]
        if not info.get("adapter_only"):
            return
        if self.peft_cfg is None:
            raise UserError("this is a LoRA adapter checkpoint: load it with module.peft set as in its run")
        want = info.get("base_sha256")
        if want and (not self.peft_base or file_sha256(self.peft_base) != want):
            raise UserError(
                f"the adapter checkpoint was trained on {info.get('base')} (SHA-256 {want[:16]}...), but this run's "
                f"module.init_from is {self.peft_base!r}: set module.init_from to that base"
            )
        state = checkpoint["state_dict"]
        for key, value in self.model.state_dict().items():
            state.setdefault(f"model.{key}", value)
        if "ema" in checkpoint and self.ema is not None:
            shadow = dict(checkpoint["ema"]["shadow"])
            for name, t in _tracked(self.model):
                if name not in shadow:
                    shadow[name] = t.detach().float().clone() if t.is_floating_point() else t.detach().clone()
            checkpoint["ema"] = {**checkpoint["ema"], "shadow": shadow}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if ADAPTER_KEY in checkpoint:
            self._restore_base(checkpoint)
        if self.ema is not None and "ema" in checkpoint:
            self.ema.load_state_dict(checkpoint["ema"])
        elif self.ema is not None:
            log.warning("EMA is on but the checkpoint has no EMA state: starting the average from the loaded weights")
            self._reseed_ema = True
        counters = checkpoint.get("ofa_training", {})
        self.skipped_nonfinite = int(counters.get("skipped_nonfinite", 0))
        self.samples_seen = int(counters.get("samples_seen", 0))
        self.tokens_seen = int(counters.get("tokens_seen", 0))
        self.nonfinite.load_state_dict(checkpoint.get("ofa_nonfinite") or {})

    def on_fit_start(self) -> None:
        self._last_ema_step = self.global_step
        if self.ema is not None and getattr(self, "_reseed_ema", False):
            self.ema = EMA.from_config(self.model, self.ema_cfg)
            self._reseed_ema = False
