"""OFA's image trunk: ResNet stages 1-3 from timm (OFA-Sys/OFA ``models/ofa/resnet.py``).

torchvision-style v1.5 Bottlenecks (stride on the 3×3 conv), stem conv7×7/2 +
BN + ReLU + maxpool; no stage 4, pooling or classifier. Output stride 16 and
1024 channels. timm's parameter names (conv1, bn1, layerN.i.convK, downsample.0/1)
equal OFA's, so checkpoints load without renaming.

Three efficiency switches (:meth:`OFAResNet.configure`), none of which changes
the parameters or their names:

* ``channels_last`` — weights and activations in NHWC, the layout oneDNN's CPU
  convolutions (forward and above all backward) and cuDNN's tensor-core kernels
  prefer. Only fp32 rounding changes.
* ``checkpoint`` — recompute the trunk's forward in the backward pass instead of
  keeping its activations. ``"blocks"`` (or ``True``): each bottleneck keeps only
  its input. ``"stages"``: only the inputs of a few segments are kept (the stem,
  stage 1, stage 2, stage 3, each cut into chunks of at most ``segments[i]``
  blocks, by default ``STAGE_SEGMENT_BLOCKS`` = (8, 8, 8)). Both
  recompute the same forward once; ``"stages"`` keeps ~130 MB less for OFA-Tiny at
  batch 8, 256 px (bf16), and holds one segment's activations during its backward.
  The stem is its own segment because its full-resolution maps (conv output, BN
  output, max-pool indices) would otherwise sit beside stage 1's during the last
  segment's backward, which was OFA-Tiny's memory peak (40-50 MB lower this way).
  The recomputation does not touch the BatchNorm running statistics (they are
  updated once per step, as without checkpointing), and it replays the same
  drop-path RNG state.
* ``fold_bn`` — in eval mode without autograd (generation, evaluation), each
  BatchNorm is folded into the convolution before it (``w·γ/σ``, ``β − μ·γ/σ``).
  The folded weights are cached and rebuilt whenever a weight or statistic
  changes; outputs equal the unfolded trunk within fp32 rounding. On CPU the
  folded trunk runs oneDNN's fused conv + ReLU and conv + add + ReLU kernels, with
  the weights prepacked for the latest input shape; the residual kernel writes into
  the shortcut's memory instead of a fresh output.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager, nullcontext

import torch
import torch.nn.functional as F
from timm.layers import DropPath, freeze_batch_norm_2d
from timm.models.resnet import Bottleneck, ResNet
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .config import RESNET_BLOCKS, ramp
from .onednn import onednn_cpu_ok

log = logging.getLogger(__name__)
TRUNK_CHANNELS = 1024
STAGES = ("layer1", "layer2", "layer3")
CHECKPOINT_MODES = ("off", "blocks", "stages")
# "stages" checkpointing: the most blocks of stages 1, 2 and 3 in one segment (a long stage, resnet101/152's stage 3,
# is cut into several). Finer segments hold less during the trunk's backward pass but keep more segment inputs for the
# whole backward pass; which wins depends on where the step's memory peak lies (docs/benchmarks.md).
STAGE_SEGMENT_BLOCKS = (8, 8, 8)


def segment_blocks(value) -> tuple[int, int, int]:
    """The model option ``checkpoint_resnet_segments`` as three positive ints (one per stage)."""
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


def checkpoint_mode(value) -> str:
    """The model option ``checkpoint_resnet`` as one of :data:`CHECKPOINT_MODES` (``True`` = "blocks")."""
    if value is True or value is False or value is None:
        return "blocks" if value else "off"
    if isinstance(value, str) and value.lower() in CHECKPOINT_MODES + ("none", "false", "true"):
        v = value.lower()
        return {"none": "off", "false": "off", "true": "blocks"}.get(v, v)
    raise ValueError(f"checkpoint_resnet must be one of {CHECKPOINT_MODES} (or true/false), got {value!r}")


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


class OFAResNet(ResNet):
    """timm's ResNet with the switches described in the module docstring (all off until :meth:`configure`)."""

    channels_last: bool = False
    checkpoint_mode: str = "off"
    fold_bn: bool = False

    segment_sizes: tuple[int, int, int] = STAGE_SEGMENT_BLOCKS  # "stages": the most blocks per segment, per stage

    def configure(
        self,
        channels_last: bool = False,
        checkpoint: bool | str = False,
        fold_bn: bool = False,
        segments=STAGE_SEGMENT_BLOCKS,
    ) -> OFAResNet:
        self.channels_last, self.checkpoint_mode, self.fold_bn = channels_last, checkpoint_mode(checkpoint), fold_bn
        self.segment_sizes = segment_blocks(segments)
        self.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        self._folded = None
        return self

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
                OFAResNet._fused_broken = True
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
    # ``fuse_cpu = False`` on an instance turns them off (the benchmark's A/B).
    fuse_cpu = True
    # the residual conv + add + ReLU written into the shortcut's memory (see _fused_conv_add_relu); False on an
    # instance = the out-of-place kernel (the benchmark's A/B)
    inplace_residual = True
    _fused_broken = False

    def _fused_ok(self, x: Tensor) -> bool:
        """CPU, not under autocast (these ops have no autocast rule: under ``bf16-mixed`` the plain convolutions run,
        cast to bf16 as before), fp32/bf16, and a torch build that has them."""
        return (
            self.fuse_cpu
            and not OFAResNet._fused_broken
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


def build_resnet(resnet_type: str, drop_path_rate: float = 0.0, frozen_bn: bool = False) -> OFAResNet:
    """Build stages 1-3 of ``resnet_type`` (OFA's resnet50/101/152, or the shallower resnet14/26 for from-scratch runs).

    Stochastic depth follows OFA, not timm: within each stage the rate ramps as
    linspace(0, rate, n_blocks) and the first block of a stage never drops.
    ``frozen_bn`` swaps BatchNorm for FrozenBatchNorm2d (OFA's --freeze-resnet);
    the convolutions still train.
    """
    if resnet_type not in RESNET_BLOCKS:
        raise ValueError(f"unknown resnet_type {resnet_type!r}; known: {sorted(RESNET_BLOCKS)}")
    blocks = RESNET_BLOCKS[resnet_type]
    trunk = OFAResNet(Bottleneck, blocks, channels=(64, 128, 256), num_classes=0, global_pool="", zero_init_last=False)
    if drop_path_rate > 0:
        for stage_name, n in zip(STAGES, blocks):
            rates = ramp(drop_path_rate, n)
            for i, block in enumerate(getattr(trunk, stage_name)):
                block.drop_path = DropPath(rates[i]) if i > 0 and rates[i] > 0 else None
    # timm's forward_features always runs a stage 4: drop it (an identity), so
    # ``trunk.forward_features(x)`` is (B, 1024, H/16, W/16) and adds no parameters.
    trunk.layer4 = nn.Identity()
    if frozen_bn:
        trunk = freeze_batch_norm_2d(trunk)
    return trunk
