"""Dilated ResNet-18 / ResNet-50 backbones of TDNet (output stride 8).

Contract: forward(x) takes float32 [B, 3, H, W] and returns layer4's features
[B, 512 * expansion, h, w] with h = ceil(ceil(ceil(H / 2) / 2) / 2) (likewise w):
the stem conv, the stem max-pool and layer2 are the only strided steps.

Attribute names reproduce the official backbone (feinanshan/TDNet,
Testing/model/pspnet/resnet.py) so its state_dict loads strictly, including the
ImageNet classifier `fc`, which is stored but never used.

Faithfulness notes from the official code (dilated=True, multi_grid=True):
- layer3 (dilation 2): its first block uses dilation 1 in conv1 and 2 in conv2
  (BasicBlock); later blocks use 2 throughout.
- layer4 (multi-grid): block i's conv1 (BasicBlock) / conv2 (Bottleneck) use dilation
  4, 8, 16; a BasicBlock's conv2 keeps dilation 4.
- ResNet-50 has the "deep base" stem: three 3x3 convs (64, 64, 128), no 7x7.
"""
from __future__ import annotations

import torch
import torch.nn as nn


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, c_in: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None, previous_dilation: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, planes, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=previous_dilation, dilation=previous_dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + residual)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, c_in: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None, previous_dilation: int = 1):
        super().__init__()
        del previous_dilation  # unused by the official bottleneck
        self.conv1 = nn.Conv2d(c_in, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + residual)


class DilatedResNet(nn.Module):
    """Stem + layer1..4 at output stride 8 (dilated layer3/layer4, multi-grid layer4)."""

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], layers: list[int], deep_base: bool,
                 width: int = 64):
        super().__init__()
        w = width  # base width (official 64): every layer scales with it, key names unchanged
        self.inplanes = 2 * w if deep_base else w
        if deep_base:
            self.conv1 = nn.Sequential(
                nn.Conv2d(3, w, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
                nn.Conv2d(w, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
                nn.Conv2d(w, 2 * w, 3, padding=1, bias=False),
            )
        else:
            self.conv1 = nn.Conv2d(3, w, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, w, layers[0])
        self.layer2 = self._make_layer(block, 2 * w, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 4 * w, layers[2], dilation=2)
        self.layer4 = self._make_layer(block, 8 * w, layers[3], dilation=4, multi_grid=(4, 8, 16))
        self.fc = nn.Linear(8 * w * block.expansion, 1000)  # ImageNet classifier: stored, unused
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _make_layer(self, block, planes: int, blocks: int, stride: int = 1, dilation: int = 1,
                    multi_grid: tuple[int, ...] | None = None) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        if multi_grid:
            dilations = [multi_grid[i] for i in range(blocks)]
        else:  # the first block of a dilated layer uses half the dilation (1 for 1 and 2)
            dilations = [max(1, dilation // 2)] + [dilation] * (blocks - 1)
        layers = [block(self.inplanes, planes, stride, dilations[0], downsample, previous_dilation=dilation)]
        self.inplanes = planes * block.expansion
        for i in range(1, blocks):
            layers.append(block(self.inplanes, planes, 1, dilations[i], previous_dilation=dilation))
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def resnet18(width: int = 64) -> DilatedResNet:
    return DilatedResNet(BasicBlock, [2, 2, 2, 2], deep_base=False, width=width)


def resnet50(width: int = 64) -> DilatedResNet:
    return DilatedResNet(Bottleneck, [3, 4, 6, 3], deep_base=True, width=width)
