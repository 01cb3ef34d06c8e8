"""Activation checkpointing of the encoder and decoder layers (``activation_checkpointing``), and the BatchNorm
guard the trunk's checkpointing uses (``checkpoint_resnet``, :mod:`.resnet`).

:class:`CheckpointedEncoderLayer` / :class:`CheckpointedDecoderLayer` are the plain layers (same parameters) whose
training forward keeps only the layer's inputs and recomputes the rest in the backward pass
(``torch.utils.checkpoint``, non-reentrant). Without autograd, and for a decoder step that reads a KV cache, they
run the plain forward.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ..model.layers import DecoderLayer, EncoderLayer


def _recompute(module: nn.Module) -> bool:
    return module.training and torch.is_grad_enabled()


class CheckpointedEncoderLayer(EncoderLayer):
    def forward(self, x: Tensor, bias) -> Tensor:
        if _recompute(self):
            return checkpoint(super().forward, x, bias, use_reentrant=False)
        return super().forward(x, bias)


class CheckpointedDecoderLayer(DecoderLayer):
    def forward(self, x, self_bias, cross_k, cross_v, cross_bias, past_kv=None):
        if _recompute(self) and past_kv is None:
            return checkpoint(super().forward, x, self_bias, cross_k, cross_v, cross_bias, None, use_reentrant=False)
        return super().forward(x, self_bias, cross_k, cross_v, cross_bias, past_kv)


@contextmanager
def frozen_bn_stats(*modules: nn.Module):
    """BatchNorm layers of ``modules`` still normalise with batch statistics but leave their running
    statistics and ``num_batches_tracked`` unchanged (momentum 0): for a checkpoint's recomputation."""
    bns = [
        m
        for module in modules
        for m in module.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training
    ]
    saved = [(m.momentum, None if m.num_batches_tracked is None else m.num_batches_tracked.clone()) for m in bns]
    for m in bns:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, (momentum, tracked) in zip(bns, saved):
            m.momentum = momentum
            if tracked is not None:
                m.num_batches_tracked.copy_(tracked)
