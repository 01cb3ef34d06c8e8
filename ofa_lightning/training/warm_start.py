"""Start a run from existing weights (OFA's ``--restore-file`` with ``--reset-optimizer --reset-dataloader
--reset-meters``): ``module.init_from=<file>``.

Accepted files: our Lightning ``.ckpt`` (e.g. caption stage 1's ``last.ckpt`` for stage 2), an ``ofa-convert``
output, or an OFA fairseq / HF / ModelScope checkpoint. Only the model weights are taken (optimizer, schedule,
step counters and data position start fresh); ``init_from_ema=true`` takes the EMA copy where there is one.
A smaller checkpoint vocabulary is grown by OFA's rule; any other shape mismatch is an error naming the tensors.
``resume=`` (continuing the same run) is a different thing and wins: Lightning restores the checkpoint afterwards.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

log = logging.getLogger(__name__)

__all__ = ["load_initial_weights"]


def load_initial_weights(
    model, path: str | Path, use_ema: bool = False, strict: bool = True, trust_checkpoint: bool = False
):
    """Copy the weights of ``path`` into ``model`` (an ``OFAModel``); returns the conversion report."""
    from ofa_lightning.weights.convert import fairseq_state_dict, load_checkpoint_file, load_state_dict_into

    data = load_checkpoint_file(path, trust_checkpoint)
    if "state_dict" in data and "hyper_parameters" in data:  # our Lightning checkpoint
        if use_ema and "ema" in data:
            state = _ema_state(data["ema"])
        else:
            state = {k[len("model.") :]: v for k, v in data["state_dict"].items() if k.startswith("model.")}
    elif "model_config" in data and "state_dict" in data:  # ofa-convert output
        state = dict(data["state_dict"])
    else:  # fairseq / HF / ModelScope
        state = fairseq_state_dict(data, use_ema=use_ema)
    report = load_state_dict_into(model, state, strict=strict)
    log.info("initialised the model from %s: %s", path, report.summary())
    return report


def _ema_state(ema: dict) -> dict[str, torch.Tensor]:
    shadow = ema.get("shadow", ema)
    return {k: v for k, v in shadow.items() if isinstance(v, torch.Tensor)}
