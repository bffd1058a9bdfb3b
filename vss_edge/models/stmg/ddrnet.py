"""DDRNet-23-slim and DDRNet-39 (Hong et al., 2021) for semantic segmentation, the STMG backbone.

Contract: DDRNet(variant)(x) takes a normalised float32 image [1, 3, H, W] (H, W
multiples of 8) and returns class logits [1, num_classes, H/8, W/8]. It is split as
``head(features(x, keep))`` so that STMG can skip residual blocks: ``features``
returns the fused map the official forward hands to ``final_layer``
[1, 4 * planes, H/8, W/8] (128 channels for 23-slim, 256 for 39).

Attribute names, and so state_dict keys, shapes and order, reproduce the official
``DualResNet`` (ydhongHIT/DDRNet, segmentation/DDRNet_23_slim.py and DDRNet_39.py)
with nn.BatchNorm2d for its SyncBatchNorm; ``augment=True`` adds the auxiliary
training head ``seghead_extra`` (stored, never run here).

Structure: a stem (two stride-2 3x3 convs), layer1 and layer2 (stride 8), then the
network splits into a low-resolution branch (``layer3*``, ``layer4``, ``layer5`` +
DAPPM, strides 16..64) and a high-resolution branch kept at stride 8 (``layer3*_``,
``layer4_``, ``layer5_``). After each stage-3/4 layer pair the branches exchange
information: low += down(relu(high)) (strided 3x3 convs) and high +=
upsample(compression(relu(low))) (1x1 conv). DDRNet-39 splits stage 3 in two
(``layer3_1``/``layer3_2`` with their own fusions). Faithfulness notes:

- The last BasicBlock of every residual layer has no final ReLU; the branches get a
  ReLU at the start of each following step instead. The Bottlenecks (expansion 2,
  layer5/layer5_) never end in a ReLU.
- Every bilinear resize uses align_corners=False, as the released weights expect.
- The fusion resizes go to the high-resolution branch's size, which is the official
  (H // 8, W // 8) whenever H and W are multiples of 8 (the official code fails
  otherwise; this one gives ceil(H / 8) x ceil(W / 8)).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

DDRNET_VARIANTS = ("ddrnet23_slim", "ddrnet39")

_SPP_PLANES = 128


@dataclass(frozen=True)
class _Spec:
    planes: int  # stem width; the high-resolution branch has 2 * planes channels
    depths: tuple[int, int, int, int]  # BasicBlocks in layer1, layer2, stage 3 (in all), layer4
    head_planes: int
    stages: tuple[str, ...]  # suffixes of the fused stages: layer{s}, layer{s}_, compression{s}, down{s}


_SPECS = {
    "ddrnet23_slim": _Spec(planes=32, depths=(2, 2, 2, 2), head_planes=64, stages=("3", "4")),
    "ddrnet39": _Spec(planes=64, depths=(3, 4, 6, 3), head_planes=256, stages=("3_1", "3_2", "4")),
}


def _spec(variant: str) -> _Spec:
    if variant not in _SPECS:
        raise ValueError(f"unknown DDRNet variant {variant!r}; expected one of {', '.join(DDRNET_VARIANTS)}")
    return _SPECS[variant]


def _stage_depth(spec: _Spec, stage: str) -> int:
    """BasicBlocks in each of layer{stage} and layer{stage}_ (stage 3 may be split in two)."""
    if stage == "4":
        return spec.depths[3]
    return spec.depths[2] // (len(spec.stages) - 1)


def _residual_layer_names(variant: str) -> list[tuple[str, int]]:
    """(name, number of blocks) of the BasicBlock layers in forward execution order."""
    spec = _spec(variant)
    layers = [("layer1", spec.depths[0]), ("layer2", spec.depths[1])]
    for s in spec.stages:
        depth = _stage_depth(spec, s)
        layers += [(f"layer{s}", depth), (f"layer{s}_", depth)]
    return layers


def prunable_block_names(variant: str) -> list[str]:
    """Qualified names ("layer1.1", ...) of the skippable blocks of `variant`, in execution order.

    Every residual block except the first of each layer (which changes width or stride,
    or opens a branch); layer5 and layer5_ hold a single Bottleneck each, so none.
    6 blocks for ddrnet23_slim, 17 for ddrnet39.
    """
    return [f"{name}.{i}" for name, depth in _residual_layer_names(variant) for i in range(1, depth)]


# --- building blocks ---------------------------------------------------------------


def _conv_bn(c_in: int, c_out: int, kernel: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False), nn.BatchNorm2d(c_out)]


def _bn_relu_conv(c_in: int, c_out: int, kernel: int, pool: nn.Module | None = None) -> nn.Sequential:
    """[pool] -> BN -> ReLU -> conv (no bias): the pre-activation unit of DAPPM."""
    ops = [] if pool is None else [pool]
    ops += [nn.BatchNorm2d(c_in), nn.ReLU(inplace=True),
            nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, bias=False)]
    return nn.Sequential(*ops)


def _upsample(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Bilinear resize of `t` [B, C, h, w] to the spatial size of `like` (align_corners=False)."""
    return F.interpolate(t, size=like.shape[-2:], mode="bilinear", align_corners=False)


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN units plus a shortcut: [B, c_in, h, w] -> [B, planes, h/stride, w/stride]."""

    expansion = 1

    def __init__(self, c_in: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 no_relu: bool = False):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.no_relu = no_relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        out = out + shortcut
        return out if self.no_relu else self.relu(out)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (strided) -> 1x1 expanding to 2 * planes, plus a shortcut; no final ReLU.

    [B, c_in, h, w] -> [B, 2 * planes, h/stride, w/stride].
    """

    expansion = 2

    def __init__(self, c_in: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.bn3(self.conv3(out)) + shortcut


def _residual_layer(block: type[BasicBlock] | type[Bottleneck], c_in: int, planes: int, depth: int,
                    stride: int = 1) -> nn.Sequential:
    """`depth` blocks; the first one adapts width/stride (1x1 conv-BN shortcut), the last has no ReLU."""
    c_out = planes * block.expansion
    downsample = None
    if stride != 1 or c_in != c_out:
        downsample = nn.Sequential(*_conv_bn(c_in, c_out, 1, stride))
    blocks = [block(c_in, planes, stride, downsample)]
    for i in range(1, depth):
        blocks.append(block(c_out, planes, no_relu=(i == depth - 1)))
    return nn.Sequential(*blocks)


class DAPPM(nn.Module):
    """Deep Aggregation Pyramid Pooling: [B, c_in, h, w] -> [B, c_out, h, w].

    Branch 0 is the full-resolution map; branches 1-4 average-pool (strides 2, 4, 8,
    global), each upsampled and added to the previous branch before its own 3x3 conv
    (``process*``); the five are concatenated, compressed by a 1x1 conv and added to
    a 1x1 shortcut.
    """

    def __init__(self, c_in: int, branch: int, c_out: int):
        super().__init__()
        self.scale1 = _bn_relu_conv(c_in, branch, 1, nn.AvgPool2d(5, stride=2, padding=2))
        self.scale2 = _bn_relu_conv(c_in, branch, 1, nn.AvgPool2d(9, stride=4, padding=4))
        self.scale3 = _bn_relu_conv(c_in, branch, 1, nn.AvgPool2d(17, stride=8, padding=8))
        self.scale4 = _bn_relu_conv(c_in, branch, 1, nn.AdaptiveAvgPool2d((1, 1)))
        self.scale0 = _bn_relu_conv(c_in, branch, 1)
        for i in range(1, 5):
            setattr(self, f"process{i}", _bn_relu_conv(branch, branch, 3))
        self.compression = _bn_relu_conv(5 * branch, c_out, 1)
        self.shortcut = _bn_relu_conv(c_in, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pyramid = [self.scale0(x)]
        for i in range(1, 5):
            pooled = getattr(self, f"scale{i}")(x)
            pyramid.append(getattr(self, f"process{i}")(_upsample(pooled, x) + pyramid[-1]))
        return self.compression(torch.cat(pyramid, dim=1)) + self.shortcut(x)


class SegHead(nn.Module):
    """BN-ReLU-3x3 conv -> BN-ReLU-1x1 conv (with bias): [B, c_in, h, w] -> [B, num_classes, h, w]."""

    def __init__(self, c_in: int, c_mid: int, num_classes: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_mid, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_mid)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c_mid, num_classes, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(self.relu(self.bn1(x)))
        return self.conv2(self.relu(self.bn2(x)))


# --- the network -------------------------------------------------------------------


class DDRNet(nn.Module):
    """DDRNet for segmentation with the official state_dict layout and skippable residual blocks."""

    def __init__(self, variant: str, num_classes: int = 19, augment: bool = False, planes: int | None = None):
        super().__init__()
        spec = _spec(variant)
        self.variant, self.num_classes, self.augment = variant, num_classes, augment
        # planes: the stem width (official: the variant's); a smaller one narrows every layer, the
        # DAPPM and the head in proportion (the trained demo's small configuration); keys unchanged
        p = spec.planes if planes is None else int(planes)
        high = 2 * p
        spp_planes = max(1, _SPP_PLANES * p // spec.planes)
        head_planes = max(1, spec.head_planes * p // spec.planes)
        self.feature_channels = 4 * p
        self._stages = spec.stages

        # Registration order fixes the state_dict order: it follows the official class.
        self.conv1 = nn.Sequential(
            nn.Conv2d(3, p, 3, stride=2, padding=1), nn.BatchNorm2d(p), nn.ReLU(inplace=True),
            nn.Conv2d(p, p, 3, stride=2, padding=1), nn.BatchNorm2d(p), nn.ReLU(inplace=True),
        )
        self.relu = nn.ReLU()  # the pre-activation of every branch step (not in-place)
        self.layer1 = _residual_layer(BasicBlock, p, p, spec.depths[0])
        self.layer2 = _residual_layer(BasicBlock, p, 2 * p, spec.depths[1], stride=2)
        c_low = 2 * p
        for s in spec.stages:  # low-resolution layers: stage 3 at 4p (stride 16), stage 4 at 8p (stride 32)
            width = 8 * p if s == "4" else 4 * p
            first_of_stage = s == "4" or s in ("3", "3_1")
            self.add_module(f"layer{s}", _residual_layer(BasicBlock, c_low, width, _stage_depth(spec, s),
                                                         stride=2 if first_of_stage else 1))
            c_low = width
        for s in spec.stages:
            width = 8 * p if s == "4" else 4 * p
            self.add_module(f"compression{s}", nn.Sequential(*_conv_bn(width, high, 1)))
        for s in spec.stages:
            if s == "4":  # stride 8 -> 32 in two steps
                down = _conv_bn(high, 4 * p, 3, 2) + [nn.ReLU(inplace=True)] + _conv_bn(4 * p, 8 * p, 3, 2)
            else:
                down = _conv_bn(high, 4 * p, 3, 2)
            self.add_module(f"down{s}", nn.Sequential(*down))
        for s in spec.stages:  # high-resolution layers stay at stride 8, 2p channels
            self.add_module(f"layer{s}_", _residual_layer(BasicBlock, high, high, _stage_depth(spec, s)))
        self.layer5_ = _residual_layer(Bottleneck, high, high, 1)
        self.layer5 = _residual_layer(Bottleneck, 8 * p, 8 * p, 1, stride=2)
        self.spp = DAPPM(16 * p, spp_planes, 4 * p)
        if augment:
            self.seghead_extra = SegHead(high, head_planes, num_classes)
        self.final_layer = SegHead(4 * p, head_planes, num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def prunable_blocks(self) -> list[str]:
        """Names ("layer1.1", ...) of the skippable residual blocks in execution order (6 or 17)."""
        return prunable_block_names(self.variant)

    def _keep_map(self, keep) -> dict[str, bool] | None:
        if keep is None:
            return None
        names = self.prunable_blocks()
        if isinstance(keep, torch.Tensor):
            if keep.dim() != 1:
                raise ValueError(f"keep must be 1-D, got shape {list(keep.shape)}")
            keep = keep.tolist()
        keep = list(keep)
        if len(keep) != len(names):
            raise ValueError(f"keep has {len(keep)} entries but {self.variant} has {len(names)} prunable blocks")
        return {name: bool(k) for name, k in zip(names, keep)}

    def _run_layer(self, name: str, x: torch.Tensor, keep: dict[str, bool] | None) -> torch.Tensor:
        """Run layer `name` block by block (each in its own module scope), skipping dropped blocks."""
        for i, block in enumerate(getattr(self, name)):
            if i == 0 or keep is None:
                x = block(x)
            elif isinstance(keep[f"{name}.{i}"], torch.Tensor):  # soft gate g (training): x + g (block(x) - x)
                g = keep[f"{name}.{i}"].view(-1, 1, 1, 1)
                x = x + g * (block(x) - x)
            elif keep[f"{name}.{i}"]:
                x = block(x)
        return x

    def features(self, x: torch.Tensor,
                 keep: Sequence[bool] | torch.Tensor | None = None, gates: torch.Tensor | None = None) -> torch.Tensor:
        """[1, 3, H, W] normalised image -> fused features [1, 4 * planes, H/8, W/8].

        `keep` is None (run every block) or one flag per prunable_blocks() entry (a
        sequence or a 1-D tensor); a block flagged False is skipped, its input passed on
        unchanged. `gates` (training only, instead of keep): float [B, K] in [0, 1]; block k's
        output becomes x + gates[:, k] * (block(x) - x), 0 = dropped, 1 = kept.
        """
        if gates is not None:
            flags = dict(zip(self.prunable_blocks(), gates.unbind(1)))
        else:
            flags = self._keep_map(keep)
        x = self._run_layer("layer1", self.conv1(x), flags)
        low = high = self._run_layer("layer2", self.relu(x), flags)  # stride 8
        for s in self._stages:
            low = self._run_layer(f"layer{s}", self.relu(low), flags)
            high = self._run_layer(f"layer{s}_", self.relu(high), flags)
            low, high = (low + getattr(self, f"down{s}")(self.relu(high)),
                         high + _upsample(getattr(self, f"compression{s}")(self.relu(low)), high))
        high = self.layer5_(self.relu(high))
        low = self.spp(self.layer5(self.relu(low)))
        return _upsample(low, high) + high

    def head(self, features: torch.Tensor) -> torch.Tensor:
        """Fused features [1, 4 * planes, h, w] -> logits [1, num_classes, h, w]."""
        return self.final_layer(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[1, 3, H, W] -> logits [1, num_classes, H/8, W/8] (the official forward, augment=False)."""
        return self.head(self.features(x))
