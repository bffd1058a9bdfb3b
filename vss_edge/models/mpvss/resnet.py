"""ResNet in detectron2's layout (the backbone of the official Mask2Former / MPVSS weights).

state_dict keys as detectron2's build_resnet_backbone: stem.conv1.{weight, norm.*},
res{2..5}.{i}.{conv1, conv2, conv3, shortcut}.{weight, norm.*}. Convolutions have no bias
(a norm follows). STRIDE_IN_1X1 = False (MPVSS configs): the stride sits on the 3x3 conv.
Depth 50 uses bottleneck blocks (3, 4, 6, 3); depth 18 basic blocks (2, 2, 2, 2), our
small test configuration (detectron2 builds R18 the same way).
Norm: BatchNorm2d in eval (the official SyncBN / FrozenBN hold the same four tensors;
the loader tolerates a missing num_batches_tracked).
"""
from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F

DEPTHS = {18: ("basic", (2, 2, 2, 2)), 50: ("bottleneck", (3, 4, 6, 3))}


class NormConv2d(nn.Conv2d):
    """detectron2.layers.Conv2d with a norm (keys: weight, norm.*) and an optional ReLU."""

    def __init__(self, cin, cout, kernel_size, stride=1, padding=0, norm: nn.Module | None = None,
                 relu: bool = False, bias: bool = False):
        super().__init__(cin, cout, kernel_size, stride=stride, padding=padding, bias=bias)
        self.norm = norm
        self.relu = relu

    def forward(self, x):
        x = super().forward(x)
        if self.norm is not None:
            x = self.norm(x)
        return F.relu(x) if self.relu else x


def _bn_conv(cin, cout, k, stride=1, relu=False):
    return NormConv2d(cin, cout, k, stride=stride, padding=k // 2, norm=nn.BatchNorm2d(cout), relu=relu)


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.shortcut = _bn_conv(cin, cout, 1, stride) if cin != cout else None
        self.conv1 = _bn_conv(cin, cout, 3, stride, relu=True)
        self.conv2 = _bn_conv(cout, cout, 3)

    def forward(self, x):
        identity = self.shortcut(x) if self.shortcut is not None else x
        return F.relu(self.conv2(self.conv1(x)) + identity)


class BottleneckBlock(nn.Module):
    def __init__(self, cin, cout, stride, bottleneck):
        super().__init__()
        self.shortcut = _bn_conv(cin, cout, 1, stride) if cin != cout else None
        self.conv1 = _bn_conv(cin, bottleneck, 1, relu=True)
        self.conv2 = _bn_conv(bottleneck, bottleneck, 3, stride, relu=True)  # stride_in_1x1 = False
        self.conv3 = _bn_conv(bottleneck, cout, 1)

    def forward(self, x):
        identity = self.shortcut(x) if self.shortcut is not None else x
        return F.relu(self.conv3(self.conv2(self.conv1(x))) + identity)


class Stem(nn.Module):
    """conv 7x7 s2 + norm + ReLU, max-pool 3x3 s2 p1 (detectron2 BasicStem)."""

    def __init__(self, width: int = 64):
        super().__init__()
        self.conv1 = NormConv2d(3, width, 7, stride=2, padding=3, norm=nn.BatchNorm2d(width), relu=True)

    def forward(self, x):
        return F.max_pool2d(self.conv1(x), kernel_size=3, stride=2, padding=1)


class ResNet(nn.Module):
    """forward(x) -> {'res2': 1/4, 'res3': 1/8, 'res4': 1/16, 'res5': 1/32}."""

    def __init__(self, depth: int = 50, width: int = 64):
        super().__init__()
        if depth not in DEPTHS:
            raise ValueError(f"ResNet depth must be one of {sorted(DEPTHS)}, got {depth}")
        kind, counts = DEPTHS[depth]
        self.stem = Stem(width)
        cin = width
        # base width 64 (official); smaller widths scale every stage (the trained demo weights)
        widths = tuple(width * m for m in ((1, 2, 4, 8) if kind == "basic" else (4, 8, 16, 32)))
        self.out_channels = {}
        for stage, (n, cout) in enumerate(zip(counts, widths), start=2):
            blocks = []
            for i in range(n):
                stride = 2 if i == 0 and stage > 2 else 1
                if kind == "basic":
                    blocks.append(BasicBlock(cin, cout, stride))
                else:
                    blocks.append(BottleneckBlock(cin, cout, stride, cout // 4))
                cin = cout
            self.add_module(f"res{stage}", nn.Sequential(*blocks))
            self.out_channels[f"res{stage}"] = cout
        for m in self.modules():  # detectron2: c2_msra_fill on every conv
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        out = {}
        x = self.stem(x)
        for name in ("res2", "res3", "res4", "res5"):
            x = getattr(self, name)(x)
            out[name] = x
        return out
