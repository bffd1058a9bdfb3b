"""GSVNet's lightweight flow net (FlowLight, the paper's HFFB).

Contract: forward(x) takes float32 [B, 6, h, w] = cat(current, previous) frames at
1/8 of the full resolution (BGR, normalised like the keyframe net's input) and
returns flow [B, 2, h/4, w/4] (so 1/32 of the full frame). The pipeline resizes it
to 1/8 (bilinear, align_corners=True); the warp divides it by 4.

Attribute names follow the official FlowLight so its `state_dict_of` loads strictly.
"""
from __future__ import annotations

import torch
import torch.nn as nn


def _conv_bn_lrelu(c_in: int, c_out: int, stride: int = 1, dilation: int = 1, k: int = 3) -> nn.Sequential:
    pad = dilation * (k // 2)
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel_size=k, stride=stride, padding=pad, dilation=dilation),
        nn.BatchNorm2d(c_out),
        nn.LeakyReLU(0.1),
    )


class FlowLight(nn.Module):
    """Two stride-2 convs, four dilated convs summed hierarchically, 1x1 merge + residual."""

    def __init__(self, channels: int = 32):
        super().__init__()
        c2 = channels * 2
        self.conv1 = _conv_bn_lrelu(6, channels, stride=2)
        self.conv2 = _conv_bn_lrelu(channels, c2, stride=2)
        self.conv_dilate_1 = _conv_bn_lrelu(c2, c2, dilation=1)
        self.conv_dilate_2 = _conv_bn_lrelu(c2, c2, dilation=2)
        self.conv_dilate_3 = _conv_bn_lrelu(c2, c2, dilation=4)
        self.conv_dilate_4 = _conv_bn_lrelu(c2, c2, dilation=8)
        self.conv_merge = _conv_bn_lrelu(c2 * 4, c2, k=1)
        self.toflow = nn.Conv2d(c2, 2, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv2(self.conv1(x))
        x1 = self.conv_dilate_1(x)
        x2 = self.conv_dilate_2(x) + x1
        x3 = self.conv_dilate_3(x) + x2
        x4 = self.conv_dilate_4(x) + x3
        out = self.conv_merge(torch.cat((x1, x2, x3, x4), dim=1)) + x
        return self.toflow(out)
