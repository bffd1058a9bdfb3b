"""BiSeNet with a ResNet-18 context path: the GSVNet key-frame segmentation net.

GSVNet runs a per-frame segmentation network on key frames only and propagates its
logits to the frames in between. This module re-implements the BiSeNet-R18 variant
used by the official GSVNet code in its inference configuration (``is_training=False``,
``real_time=False``): a ResNet-18 context path, a three-conv spatial path, a global
context branch, two attention refinement modules, a feature fusion module and the
main head. ``forward`` takes a float32 ``[B, 3, h, w]`` RGB image (``h`` and ``w``
multiples of 32) scaled to [0, 1] and normalised per channel with mean
(0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225), in RGB order, and returns
float32 logits ``[B, num_classes, h/8, w/8]``. The official trainer builds that input
by normalising in BGR order and flipping the channels back to RGB just before the net,
so the net itself sees ordinary ImageNet-normalised RGB. The two auxiliary heads are
not used at inference; they are kept so that official checkpoints load with
``strict=True``. The ``state_dict`` key names and shapes are an interface: they must
stay equal to the official ones (``tests/data/official_keys/bisenet_r18.json``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BiSeNetR18"]

_CHANNELS = 128  # width of the context and spatial paths


def _upsample(x: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


class ConvBnRelu(nn.Module):
    """Conv2d, then optional BatchNorm and ReLU (attributes ``conv``, ``bn``)."""

    def __init__(self, c_in: int, c_out: int, k: int, stride: int = 1,
                 bn: bool = True, relu: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, k, stride, k // 2, bias=False)
        if bn:
            self.bn = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True) if relu else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if hasattr(self, "bn"):
            x = self.bn(x)
        return self.relu(x)


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 conv-BN pairs and a residual connection."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        skip = x if self.downsample is None else self.downsample(x)
        return F.relu(out + skip)


class ResNet18(nn.Module):
    """ResNet-18 trunk without the classifier; returns the 1/4, 1/8, 1/16, 1/32 maps."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        widths = (64, 128, 256, 512)
        c_in = 64
        for i, c_out in enumerate(widths, start=1):
            stride = 1 if i == 1 else 2
            self.add_module(f"layer{i}", nn.Sequential(
                BasicBlock(c_in, c_out, stride), BasicBlock(c_out, c_out)))
            c_in = c_out

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        feats = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            feats.append(x)
        return feats


class SpatialPath(nn.Module):
    """Three stride-2 convs and a 1x1 projection: a detail branch at 1/8 resolution."""

    def __init__(self, c_out: int = _CHANNELS):
        super().__init__()
        self.conv_7x7 = ConvBnRelu(3, 64, 7, 2)
        self.conv_3x3_1 = ConvBnRelu(64, 64, 3, 2)
        self.conv_3x3_2 = ConvBnRelu(64, 64, 3, 2)
        self.conv_1x1 = ConvBnRelu(64, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_1x1(self.conv_3x3_2(self.conv_3x3_1(self.conv_7x7(x))))


class AttentionRefinement(nn.Module):
    """3x3 conv, then channel reweighting by a sigmoid of its global average."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv_3x3 = ConvBnRelu(c_in, c_out, 3)
        self.channel_attention = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), ConvBnRelu(c_out, c_out, 1, relu=False), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_3x3(x)
        return x * self.channel_attention(x)


class FeatureFusion(nn.Module):
    """Concatenate both paths, 1x1 conv, and add a channel-attended copy: y = f + f * a(f)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv_1x1 = ConvBnRelu(c_in, c_out, 1)
        self.channel_attention = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            ConvBnRelu(c_out, c_out, 1, bn=False),
            ConvBnRelu(c_out, c_out, 1, bn=False, relu=False),
            nn.Sigmoid(),
        )

    def forward(self, spatial: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = self.conv_1x1(torch.cat([spatial, context], dim=1))
        return x + x * self.channel_attention(x)


class Head(nn.Module):
    """3x3 conv-BN-ReLU then a 1x1 classifier conv with bias."""

    def __init__(self, c_in: int, c_mid: int, num_classes: int):
        super().__init__()
        self.conv_3x3 = ConvBnRelu(c_in, c_mid, 3)
        self.conv_1x1 = nn.Conv2d(c_mid, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_1x1(self.conv_3x3(x))


class BiSeNetR18(nn.Module):
    """BiSeNet-R18 key-frame net; see the module docstring for the I/O contract."""

    def __init__(self, num_classes: int = 19):
        super().__init__()
        c = _CHANNELS
        # Attribute order follows the official model, so state_dict order matches too.
        self.context_path = ResNet18()
        self.spatial_path = SpatialPath(c)
        self.global_context = nn.Sequential(nn.AdaptiveAvgPool2d(1), ConvBnRelu(512, c, 1))
        self.ffm = FeatureFusion(2 * c, 2 * c)
        self.arms = nn.ModuleList([AttentionRefinement(512, c), AttentionRefinement(256, c)])
        self.refines = nn.ModuleList([ConvBnRelu(c, c, 3), ConvBnRelu(c, c, 3)])
        # heads[0] (on the 1/16 map) and heads[1] (on the 1/8 map) are the training-time
        # auxiliary heads; only heads[2], on the fused features, runs at inference.
        self.heads = nn.ModuleList([
            Head(c, 256, num_classes), Head(c, 256, num_classes), Head(2 * c, 64, num_classes)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spatial = self.spatial_path(x)
        _, c8, c16, c32 = self.context_path(x)

        # Global context: a 1x1 map upsampled (a broadcast) to the 1/32 grid.
        context = _upsample(self.global_context(c32), c32.shape[2:])
        for feat, skip, arm, refine in zip((c32, c16), (c16, c8), self.arms, self.refines):
            context = refine(_upsample(arm(feat) + context, skip.shape[2:]))

        return self.heads[2](self.ffm(spatial, context))
