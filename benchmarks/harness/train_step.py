"""One training step (forward + backward + AdamW) for our model and for the ModelScope port.

Loss: token cross-entropy over the target positions that are not padding
(mean over real tokens), the same number for both implementations.

Our step takes :class:`TrainOptions`; every switch keeps the maths of the
model (same loss, same gradients up to float rounding) except ``bf16``, which
runs the step under CPU bf16 autocast (off by default; reported separately).

* ``select_targets`` — ``decode_hidden`` → keep the non-pad target rows →
  ``project`` → cross-entropy: the 59,457-way vocabulary projection and its
  backward run on the real tokens only, instead of on every padded position.
* ``channels_last`` — ResNet weights and the image batch in NHWC, the layout
  oneDNN's CPU convolutions (forward and, above all, backward) prefer.
* ``fused_adamw`` — ``torch.optim.AdamW(fused=True)``: one kernel per
  parameter instead of ``foreach`` lists of full-size temporaries.
* ``fused_ce`` — the training criterion's fused, chunked cross-entropy
  (``ofa_lightning/speed/fused_ce.py``, the module's default): no fp32 copy
  of the (N, V) logits, no fp32 log-probabilities kept for backward, the
  gradient written once in the logits' dtype. Same loss to fp32 rounding.
* ``resnet_checkpoint`` — the speed option ``model.speed.checkpoint_resnet``: recompute each
  ResNet bottleneck in the backward pass instead of storing its activations
  (memory for time; off by default). BatchNorm running statistics are not
  updated by the recomputation.
* ``resnet_stage_checkpoint`` — ``checkpoint_resnet="stages"``: the same recomputation,
  but only the inputs of a few segments (the stem, stage 1, stage 2, stage 3) are kept.
* ``layer_checkpoint`` — the speed option ``model.speed.activation_checkpointing``: the encoder and
  decoder layers are recomputed in the backward pass too.
* ``fine_segments`` — ``checkpoint_resnet_segments=[1, 2, 3]``: "stages" segments of at most
  1, 2 and 3 blocks of stages 1, 2 and 3 (default 8 each).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F
from common import PAD, Batch

from ofa_lightning.speed.config import STAGE_SEGMENT_BLOCKS
from ofa_lightning.speed.fused_ce import fused_smoothed_ce

LR = 1e-5


@dataclass(frozen=True)
class TrainOptions:
    select_targets: bool = True
    channels_last: bool = True
    fused_adamw: bool = True
    fused_ce: bool = True
    resnet_checkpoint: bool = False
    resnet_stage_checkpoint: bool = False  # checkpoint_resnet="stages" (wins over resnet_checkpoint)
    bf16: bool = False
    layer_checkpoint: bool = False  # the model option activation_checkpointing (encoder/decoder layers)
    fine_segments: bool = False  # checkpoint_resnet_segments=[1, 2, 3] instead of [8, 8, 8] (with "stages")

    def describe(self) -> str:
        on = [k for k, v in asdict(self).items() if v]
        return "+".join(on) if on else "plain"


BASELINE = TrainOptions(select_targets=False, channels_last=False, fused_adamw=False, fused_ce=False)
DEFAULT = TrainOptions()


def options_from_string(spec: str) -> TrainOptions:
    """A comma list: ``default`` / ``baseline`` (start from those), ``name`` turns a switch on,
    ``-name`` turns it off; a list without a base starts from all switches off.
    E.g. ``"default,bf16"``, ``"default,-channels_last"``, ``"select_targets"``."""
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    flags = {name: False for name in asdict(DEFAULT)}
    if parts and parts[0] in ("default", "baseline"):
        flags = asdict(DEFAULT if parts.pop(0) == "default" else BASELINE)
    for part in parts:
        name, value = (part[1:], False) if part.startswith("-") else (part, True)
        if name not in flags:
            raise ValueError(f"unknown training option {name!r}; known: {sorted(flags)}")
        flags[name] = value
    return TrainOptions(**flags)


def prepare_ours(model, opts: TrainOptions):
    """Apply the model-side switches through the model's speed config (``model.speed``: ``channels_last``,
    ``checkpoint_resnet``, ...; see ``ofa_lightning/speed``) on top of the default profile; returns the model."""
    from ofa_lightning.speed import SpeedConfig, apply_speed

    speed = SpeedConfig(
        channels_last=opts.channels_last,
        checkpoint_resnet="stages" if opts.resnet_stage_checkpoint else str(bool(opts.resnet_checkpoint)).lower(),
        activation_checkpointing=opts.layer_checkpoint,
        checkpoint_resnet_segments=[1, 2, 3] if opts.fine_segments else list(STAGE_SEGMENT_BLOCKS),
    )
    return apply_speed(model, speed)


def make_optimizer(params, fused: bool = False) -> torch.optim.Optimizer:
    if fused:
        return torch.optim.AdamW(params, lr=LR, fused=True)
    return torch.optim.AdamW(params, lr=LR)  # torch's default (foreach) implementation


def ours_loss(model, batch: Batch, opts: TrainOptions) -> torch.Tensor:
    images = batch.patch_images
    if opts.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if opts.bf16 else nullcontext()
    with ctx:
        enc = model.encode(batch.input_ids, images, batch.patch_masks)
        if opts.select_targets:
            keep = batch.target.ne(PAD)
            hidden = model.decode_hidden(batch.prev_output_tokens, enc)[keep]  # (N_real, D)
            logits = model.project(hidden)
            target = batch.target[keep]
        else:
            logits = model.decode(batch.prev_output_tokens, enc)
            logits, target = logits.reshape(-1, logits.shape[-1]), batch.target.reshape(-1)
    if opts.fused_ce:  # the rows are already the real tokens; mean over them = CE(ignore pad)
        if not opts.select_targets:
            keep = target.ne(PAD)
            logits, target = logits[keep], target[keep]
        return fused_smoothed_ce(logits, target)[0].mean()
    return F.cross_entropy(logits.float(), target, ignore_index=PAD)


def peer_loss(model, batch: Batch) -> torch.Tensor:
    out = model(
        input_ids=batch.input_ids,
        patch_images=batch.patch_images,
        patch_masks=batch.patch_masks,
        decoder_input_ids=batch.prev_output_tokens,
    )
    logits = out.logits
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch.target.reshape(-1), ignore_index=PAD)


class TrainStep:
    """Callable doing one optimisation step; ``impl`` is "ours" or "peer"."""

    def __init__(self, impl: str, model, batch: Batch, opts: TrainOptions = DEFAULT):
        self.impl, self.model, self.batch = impl, model, batch
        self.opts = opts if impl == "ours" else replace(BASELINE)
        if impl == "ours":
            prepare_ours(model, self.opts)
        model.train()
        self.optimizer = make_optimizer(model.parameters(), fused=self.opts.fused_adamw and impl == "ours")
        self.last_loss = float("nan")

    def loss(self) -> torch.Tensor:
        if self.impl == "ours":
            return ours_loss(self.model, self.batch, self.opts)
        return peer_loss(self.model, self.batch)

    def __call__(self) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss()
        loss.backward()
        self.optimizer.step()
        self.last_loss = float(loss.detach())
        return self.last_loss
