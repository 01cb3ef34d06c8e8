"""The ResNet trunk's fast paths: :class:`FastResNet`, what :func:`~ofa_lightning.speed.apply_speed` turns the
plain :class:`~ofa_lightning.model.resnet.OFAResNet` into (same parameters and names).

* ``channels_last`` — weights and activations in NHWC, the layout oneDNN's CPU
  convolutions (forward and above all backward) and cuDNN's tensor-core kernels
  prefer. Only fp32 rounding changes.
* ``checkpoint_mode`` — recompute the trunk's forward in the backward pass instead of
  keeping its activations. ``"blocks"``: each bottleneck keeps only its input. ``"stages"``: only the inputs of
  a few segments are kept (the stem, stage 1, stage 2, stage 3, each cut into chunks of at most
  ``segment_sizes[i]`` blocks, by default (8, 8, 8)). Both recompute the same forward once; ``"stages"`` keeps
  ~130 MB less for OFA-Tiny at batch 8, 256 px (bf16), and holds one segment's activations during its backward.
  The stem is its own segment because its full-resolution maps (conv output, BN output, max-pool indices) would
  otherwise sit beside stage 1's during the last segment's backward, which was OFA-Tiny's memory peak (40-50 MB
  lower this way). The recomputation does not touch the BatchNorm running statistics (they are updated once per
  step, as without checkpointing), and it replays the same drop-path RNG state.
* ``fold_bn`` — in eval mode without autograd (generation, evaluation), each
  BatchNorm is folded into the convolution before it (``w·γ/σ``, ``β − μ·γ/σ``).
  The folded weights are cached and rebuilt whenever a weight or statistic
  changes; outputs equal the unfolded trunk within fp32 rounding.
* ``fuse_cpu`` — on CPU the folded trunk runs oneDNN's fused conv + ReLU and conv + add + ReLU kernels, with
  the weights prepacked for the latest input shape; with ``inplace_residual`` the residual kernel writes into
  the shortcut's memory instead of a fresh output.
"""

from __future__ import annotations

import logging
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from timm.models.resnet import Bottleneck
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ..model.resnet import STAGES, OFAResNet
from .checkpointing import frozen_bn_stats
from .config import STAGE_SEGMENT_BLOCKS
from .onednn import onednn_cpu_ok

log = logging.getLogger(__name__)


def _fold(conv: nn.Conv2d, bn: nn.Module) -> tuple[Tensor, Tensor]:
    """Weights and bias of ``bn(conv(x))`` as one convolution (computed in fp32)."""
    w = conv.weight.float()
    scale = bn.weight.float() * torch.rsqrt(bn.running_var.float() + bn.eps)
    bias = bn.bias.float() - bn.running_mean.float() * scale
    if conv.bias is not None:
        bias = bias + conv.bias.float() * scale
    w = (w * scale.view(-1, 1, 1, 1)).to(conv.weight.dtype)
    if conv.weight.is_contiguous(memory_format=torch.channels_last):
        w = w.contiguous(memory_format=torch.channels_last)
    return w, bias.to(conv.weight.dtype)


def _conv(x: Tensor, conv: nn.Conv2d, wb: tuple[Tensor, Tensor]) -> Tensor:
    return F.conv2d(x, wb[0], wb[1], conv.stride, conv.padding, conv.dilation, conv.groups)


def _run_modules(x: Tensor, *modules: nn.Module) -> Tensor:
    for m in modules:
        x = m(x)
    return x


class FastResNet(OFAResNet):
    """The plain trunk with the switches described in the module docstring (set by ``apply_speed``)."""

    channels_last: bool = False
    checkpoint_mode: str = "off"
    fold_bn: bool = False
    segment_sizes: tuple[int, int, int] = STAGE_SEGMENT_BLOCKS  # "stages": the most blocks per segment, per stage
    _folded = None

    def train(self, mode: bool = True):
        if mode:
            self._folded = None  # training changes the weights: drop the folded (and prepacked) copies
        return super().train(mode)

    def __getstate__(self):
        # pickles and deep copies leave the folded cache out: it is rebuilt on demand, and oneDNN's prepacked
        # (opaque) weights in it cannot be copied
        state = self.__dict__.copy()
        state["_folded"] = None
        return state

    # ------------------------------------------------------------ forward
    def forward_features(self, x: Tensor) -> Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.fold_bn and not self.training and not torch.is_grad_enabled() and self._foldable():
            return self._forward_folded(x)
        mode = self.checkpoint_mode if self.training and torch.is_grad_enabled() else "off"
        if mode == "stages":
            for segment in self._segments():
                x = checkpoint(
                    _run_modules,
                    x,
                    *segment,
                    use_reentrant=False,
                    context_fn=lambda seg=segment: (nullcontext(), frozen_bn_stats(*seg)),
                )
            return x
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        for name in STAGES:
            for block in getattr(self, name):
                if mode == "blocks":
                    x = checkpoint(
                        block, x, use_reentrant=False, context_fn=lambda b=block: (nullcontext(), frozen_bn_stats(b))
                    )
                else:
                    x = block(x)
        return x

    def _segments(self) -> list[tuple[nn.Module, ...]]:
        """The "stages" checkpoint segments: the stem, then each stage in chunks of ≤ ``segment_sizes`` blocks."""
        segments = [(self.conv1, self.bn1, self.act1, self.maxpool)]
        for name, chunk in zip(STAGES, self.segment_sizes):
            blocks = tuple(getattr(self, name))
            segments += [blocks[i : i + chunk] for i in range(0, len(blocks), chunk)]
        return segments

    # ----------------------------------------------------- BN folding
    def _pairs(self):
        """(conv, bn) pairs in forward order: stem, then per block conv1-3 and the downsample."""
        yield self.conv1, self.bn1
        for name in STAGES:
            for block in getattr(self, name):
                yield block.conv1, block.bn1
                yield block.conv2, block.bn2
                yield block.conv3, block.bn3
                if block.downsample is not None:
                    yield block.downsample[0], block.downsample[1]

    def _foldable(self) -> bool:
        if getattr(self, "_foldable_cache", None) is None:
            ok = all(
                isinstance(b, Bottleneck)
                and b.se is None
                and isinstance(b.aa, nn.Identity)
                and isinstance(b.drop_block, nn.Identity)
                and (b.downsample is None or (isinstance(b.downsample, nn.Sequential) and len(b.downsample) == 2))
                for name in STAGES
                for b in getattr(self, name)
            )
            ok = ok and isinstance(self.act1, nn.ReLU)
            self._foldable_cache = ok
        return self._foldable_cache

    def _fold_key(self) -> tuple:
        return tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in (*self.parameters(), *self.buffers()))

    def folded_weights(self) -> list[tuple[Tensor, Tensor]]:
        """The cached (weight, bias) of every conv+BN pair, rebuilt when any weight or statistic changed."""
        key = self._fold_key()
        cached = getattr(self, "_folded", None)
        if cached is None or cached[0] != key:
            with torch.no_grad():  # (key, weights, oneDNN-prepacked weights by input shape: filled by the fused path)
                cached = (key, [_fold(conv, bn) for conv, bn in self._pairs()], {})
            self._folded = cached
        return cached[1]

    def _forward_folded(self, x: Tensor) -> Tensor:
        if self._fused_ok(x):
            try:
                return self._walk_folded(x, *self._prepacked_fused_ops(x))
            except RuntimeError as exc:  # an oneDNN build without these fusions: the plain ops from now on
                log.warning("oneDNN fused convolutions unavailable (%s); using conv + relu", exc)
                FastResNet._fused_broken = True
        return self._walk_folded(x, _plain_conv_act, _plain_conv_add_relu)

    def _walk_folded(self, x: Tensor, conv_act, conv_add_relu) -> Tensor:
        """The trunk with BatchNorm folded: ``conv_act(x, conv, (w, b), relu)`` and
        ``conv_add_relu(y, shortcut, conv, (w, b))`` are the plain or the fused kernels."""
        wbs = iter(self.folded_weights())  # in _pairs() order: stem, then per block conv1-3 and the downsample
        x = self.maxpool(conv_act(x, self.conv1, next(wbs), True))
        for name in STAGES:
            for b in getattr(self, name):
                y = conv_act(x, b.conv1, next(wbs), True)
                y = conv_act(y, b.conv2, next(wbs), True)
                w3 = next(wbs)
                shortcut = x if b.downsample is None else conv_act(x, b.downsample[0], next(wbs), False)
                x = conv_add_relu(y, shortcut, b.conv3, w3)
        return x

    def _prepacked_fused_ops(self, x: Tensor):
        """The fused kernels with each folded weight reordered once into oneDNN's blocked layout for this input shape
        (as Inductor's weight-prepack pass does) instead of on every call; outputs equal the plain kernels' up to
        fp32 summation order (bit-identical at batch 8, 256 px here). The packs live in the folded-weight cache, so
        they are dropped with it; only those for the latest trunk input shape are kept (one extra weight copy)."""
        shape = (tuple(x.shape), x.dtype)

        def packed(x: Tensor, c: nn.Conv2d, wb: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
            store = self._folded[2]  # read at call time: _walk_folded has (re)built the folded cache by now
            packs = store.get(shape)
            if packs is None:
                store.clear()
                packs = store[shape] = {}
            if id(c) not in packs:  # first call for this input shape: each convolution's input shape is now known
                packs[id(c)] = torch.ops.mkldnn._reorder_convolution_weight(
                    wb[0], c.padding, c.stride, c.dilation, c.groups, list(x.shape)
                )
            return packs[id(c)], wb[1]

        def _prepacked_conv_act(x: Tensor, c: nn.Conv2d, wb: tuple[Tensor, Tensor], relu: bool) -> Tensor:
            return _fused_conv_act(x, c, packed(x, c, wb), relu)

        def _prepacked_conv_add_relu(y: Tensor, shortcut: Tensor, c: nn.Conv2d, wb: tuple[Tensor, Tensor]) -> Tensor:
            return _fused_conv_add_relu(y, shortcut, c, packed(y, c, wb), inplace=self.inplace_residual)

        return _prepacked_conv_act, _prepacked_conv_add_relu

    # oneDNN's fused CPU convolutions (the ops Inductor's CPU backend emits): conv + ReLU, and conv + residual add +
    # ReLU, in one pass over the output instead of two or three; same arithmetic, bit-identical outputs here.
    # ``fuse_cpu`` (the speed switch ``fused_convolutions``) turns them on.
    fuse_cpu = False
    # the residual conv + add + ReLU written into the shortcut's memory (see _fused_conv_add_relu); False = the
    # out-of-place kernel (the speed switch ``inplace_residual``)
    inplace_residual = False
    _fused_broken = False

    def _fused_ok(self, x: Tensor) -> bool:
        """CPU, not under autocast (these ops have no autocast rule: under ``bf16-mixed`` the plain convolutions run,
        cast to bf16 as before), fp32/bf16, and a torch build that has them."""
        return (
            self.fuse_cpu
            and not FastResNet._fused_broken
            and onednn_cpu_ok(x, (torch.float32, torch.bfloat16), "_convolution_pointwise")
        )


def _plain_conv_act(x: Tensor, c: nn.Conv2d, wb: tuple[Tensor, Tensor], relu: bool) -> Tensor:
    y = _conv(x, c, wb)
    return F.relu(y) if relu else y


def _plain_conv_add_relu(y: Tensor, shortcut: Tensor, c: nn.Conv2d, wb: tuple[Tensor, Tensor]) -> Tensor:
    return F.relu(_conv(y, c, wb).add_(shortcut))


def _fused_conv_act(x: Tensor, c: nn.Conv2d, wb: tuple[Tensor, Tensor], relu: bool) -> Tensor:
    return torch.ops.mkldnn._convolution_pointwise.default(
        x, wb[0], wb[1], c.padding, c.stride, c.dilation, c.groups, "relu" if relu else "none", [], ""
    )


def _fused_conv_add_relu(
    y: Tensor, shortcut: Tensor, c: nn.Conv2d, wb: tuple[Tensor, Tensor], inplace: bool = True
) -> Tensor:
    """``relu(conv(y) + shortcut)``, written into ``shortcut``'s memory when the folded trunk owns it.

    The in-place kernel (``_convolution_pointwise_``: ``shortcut += conv(y); relu``) allocates no output. That
    matters on glibc: stage 1's maps at batch 8, 256 px are 33.5 MB, above glibc's largest mmap threshold (32 MB),
    so every fresh output is a new mapping page-faulted in 4 KiB at a time; the out-of-place kernel took 31 ms for a
    64 → 256 1×1 convolution that runs in 8 ms in place (bit-identical output). The shortcut is always a trunk
    intermediate here (a block's input, i.e. the previous block's or the max-pool's output, or its downsample's
    output; the caller's images only feed the stem, so they are never written). It must already be laid out as the
    convolution's output would be (channels-last in, channels-last out), else the out-of-place kernel runs."""
    fmt = torch.channels_last if y.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
    if inplace and shortcut.is_contiguous(memory_format=fmt) and shortcut.dtype == y.dtype:
        return torch.ops.mkldnn._convolution_pointwise_.binary(
            shortcut, y, wb[0], wb[1], c.padding, c.stride, c.dilation, c.groups, "add", 1.0, "relu", [], ""
        )
    return torch.ops.mkldnn._convolution_pointwise.binary(
        y, shortcut, wb[0], wb[1], c.padding, c.stride, c.dilation, c.groups, "add", 1.0, "relu", [], ""
    )
