"""OFA's image trunk: ResNet stages 1-3 from timm (OFA-Sys/OFA ``models/ofa/resnet.py``).

torchvision-style v1.5 Bottlenecks (stride on the 3×3 conv), stem conv7×7/2 +
BN + ReLU + maxpool; no stage 4, pooling or classifier. Output stride 16 and
1024 channels. timm's parameter names (conv1, bn1, layerN.i.convK, downsample.0/1)
equal OFA's, so checkpoints load without renaming.
"""

from __future__ import annotations

from timm.layers import DropPath, freeze_batch_norm_2d
from timm.models.resnet import Bottleneck, ResNet
from torch import Tensor, nn

from .config import RESNET_BLOCKS, ramp

TRUNK_CHANNELS = 1024
STAGES = ("layer1", "layer2", "layer3")


class OFAResNet(ResNet):
    """timm's ResNet run as OFA runs it: the stem, then stages 1-3."""

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        for name in STAGES:
            x = getattr(self, name)(x)
        return x


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
