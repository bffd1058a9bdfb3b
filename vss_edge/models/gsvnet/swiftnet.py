"""SwiftNet-R18 (single scale), GSVNet's default keyframe net.

Contract: forward(x) takes float32 [B, 3, h, w] normalised RGB (h, w multiples of 32;
the official normalisation is pixel*1 minus mean (73.15, 82.90, 72.3) over std
(47.67, 48.49, 47.73), RGB order, pixels in 0..255) and returns logits
[B, num_classes, h/4, w/4].

The attribute names reproduce the official model (robert80203/GSVNet,
model/swiftnet: SemsegModel around a ResNet-18 with a ladder-style upsampling path
and spatial pyramid pooling), so the official state_dict loads strictly: the
names are an interface, do not rename them.

Faithfulness notes from the official code:
- Each residual block returns (relu(out), out) but applies an in-place ReLU, so the
  skip connection it hands to the upsampling path is the post-ReLU tensor.
- Upsampling in the ladder and the pyramid is bilinear with align_corners=False.
- Pyramid pooling uses grids 8, 4, 2 along the height and round(aspect * grid)
  along the width.

``width`` (ResNet base width, official 64) shrinks every layer alike for the trained demo's
small configuration; key names are unchanged, so only the shapes differ.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from vss_edge.models.common import adaptive_avg_pool2d_static, resize


class _BNReluConv(nn.Sequential):
    """BatchNorm -> ReLU -> Conv (k x k), the unit of SwiftNet's decoder."""

    def __init__(self, c_in: int, c_out: int, k: int = 3, bias: bool = False):
        super().__init__()
        self.add_module("norm", nn.BatchNorm2d(c_in))
        self.add_module("relu", nn.ReLU(inplace=False))
        self.add_module("conv", nn.Conv2d(c_in, c_out, kernel_size=k, padding=k // 2, bias=bias))


class BasicBlock(nn.Module):
    """ResNet basic block; returns the post-ReLU output (also used as the skip)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=False)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + residual)


class _Upsample(nn.Module):
    """Ladder step: bottleneck the skip, upsample the coarser map onto it, add, blend."""

    def __init__(self, num_features: int, skip_channels: int):
        super().__init__()
        self.bottleneck = _BNReluConv(skip_channels, num_features, k=1)
        self.blend_conv = _BNReluConv(num_features, num_features, k=3)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        skip = self.bottleneck(skip)
        x = resize(x, (int(skip.shape[2]), int(skip.shape[3])), align_corners=False)
        return self.blend_conv(x + skip)


class SpatialPyramidPooling(nn.Module):
    """SwiftNet's pyramid: bottleneck, three pooled levels (grids 8, 4, 2), fuse."""

    def __init__(self, c_in: int, num_features: int = 128, grids=(8, 4, 2, 1), num_levels: int = 3):
        super().__init__()
        level_size = num_features // num_levels
        self.grids = grids
        self.spp = nn.Sequential()
        self.spp.add_module("spp_bn", _BNReluConv(c_in, num_features, k=1))
        for i in range(num_levels):
            self.spp.add_module(f"spp{i}", _BNReluConv(num_features, level_size, k=1))
        self.spp.add_module(
            "spp_fuse", _BNReluConv(num_features + num_levels * level_size, num_features, k=1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = int(x.shape[2]), int(x.shape[3])
        aspect = w / h
        x = self.spp[0](x)
        levels = [x]
        for i in range(1, len(self.spp) - 1):
            grid = self.grids[i - 1]
            pooled = adaptive_avg_pool2d_static(x, (grid, max(1, round(aspect * grid))))
            levels.append(resize(self.spp[i](pooled), (h, w), align_corners=False))
        return self.spp[-1](torch.cat(levels, 1))


class ResNet18Ladder(nn.Module):
    """ResNet-18 encoder + SPP + three ladder upsampling steps -> features at 1/4."""

    def __init__(self, num_features: int = 128, width: int = 64):
        super().__init__()
        # Kept for state_dict compatibility; the official forward does not use them
        # (normalisation happens before the network).
        self.register_buffer("img_mean", torch.tensor([73.15, 82.90, 72.3]).view(1, -1, 1, 1))
        self.register_buffer("img_std", torch.tensor([47.67, 48.49, 47.73]).view(1, -1, 1, 1))
        c1, c2, c3, c4 = width, 2 * width, 4 * width, 8 * width  # official: 64, 128, 256, 512
        self.conv1 = nn.Conv2d(3, c1, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(c1)
        self.relu = nn.ReLU(inplace=False)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = nn.Sequential(BasicBlock(c1, c1), BasicBlock(c1, c1))
        self.layer2 = nn.Sequential(BasicBlock(c1, c2, 2), BasicBlock(c2, c2))
        self.layer3 = nn.Sequential(BasicBlock(c2, c3, 2), BasicBlock(c3, c3))
        self.layer4 = nn.Sequential(BasicBlock(c3, c4, 2), BasicBlock(c4, c4))
        self.spp = SpatialPyramidPooling(c4, num_features)
        # Deepest first: skips from layer3, layer2, layer1.
        self.upsample = nn.ModuleList(
            [_Upsample(num_features, c3), _Upsample(num_features, c2), _Upsample(num_features, c1)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        s1 = self.layer1(x)
        s2 = self.layer2(s1)
        s3 = self.layer3(s2)
        x = self.spp(self.layer4(s3))
        for skip, up in zip((s3, s2, s1), self.upsample):
            x = up(x, skip)
        return x


class SwiftNetR18(nn.Module):
    """SwiftNet-R18: normalised RGB [B,3,h,w] -> logits [B,num_classes,h/4,w/4]."""

    output_stride = 4

    def __init__(self, num_classes: int = 19, num_features: int = 128, width: int = 64):
        super().__init__()
        self.backbone = ResNet18Ladder(num_features, width)
        self.logits = _BNReluConv(num_features, num_classes, k=1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(self.backbone(x))
