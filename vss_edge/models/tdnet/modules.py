"""TDNet's per-path blocks: pyramid pooling, Q/K/V encoding, attention, head, LayerNorm.

Attribute names reproduce the official modules (feinanshan/TDNet,
Testing/model/pspnet/td4_psp18.py and transformer.py) so the official state_dict
loads strictly. Shapes below: C = the feature channels (512 * expansion), h, w the
output-stride-8 size, P = h * w; stored frames are subsampled to hs, ws =
ceil(h / 4), ceil(w / 4) and Ps = hs * ws.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from vss_edge.models.common import adaptive_avg_pool2d_static, resize


class BatchNorm2d(nn.BatchNorm2d):
    """BatchNorm, optionally followed by LeakyReLU (default slope 0.01), as the official one."""

    def __init__(self, num_features: int, leaky_relu: bool = False):
        super().__init__(num_features)
        self.activation = nn.LeakyReLU() if leaky_relu else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(super().forward(x))


class ConvBNReLU(nn.Module):
    """Conv (with bias) and, if `bn`, BatchNorm + LeakyReLU; without `bn` a plain conv."""

    def __init__(self, c_in: int, c_out: int, bn: bool):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel_size=1, bias=True)
        if bn:
            self.bn = BatchNorm2d(c_out, leaky_relu=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return self.bn(x) if hasattr(self, "bn") else x


class PyramidPooling(nn.Module):
    """PSP pooling (bins 1, 2, 3, 6) keeping path `pid`'s share of the channels.

    [1, C, h, w] -> [1, C, h, w]: cat(x's slice pid of path_num, each level's slice
    pid of path_num), the levels bilinearly upsampled with align_corners=True.
    Slicing before the upsampling gives the same values as the official order
    (upsample then slice): both are per channel.
    """

    bins = (1, 2, 3, 6)

    def __init__(self, in_channels: int, path_num: int, pid: int):
        super().__init__()
        self.path_num, self.pid = path_num, pid
        out_channels = in_channels // 4
        for i in range(1, 5):
            self.add_module(f"conv{i}", nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, bias=False), BatchNorm2d(out_channels), nn.ReLU(True)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c, h, w = int(x.shape[1]), int(x.shape[2]), int(x.shape[3])
        n, p = self.path_num, self.pid
        parts = [x[:, p * c // n:(p + 1) * c // n]]
        convs = (self.conv1, self.conv2, self.conv3, self.conv4)
        for grid, conv in zip(self.bins, convs):
            level = conv(adaptive_avg_pool2d_static(x, (grid, grid)))
            level = level[:, p * c // (n * 4):(p + 1) * c // (n * 4)]
            parts.append(resize(level, (h, w), align_corners=True))
        return torch.cat(parts, 1)


def _flatten(t: torch.Tensor) -> torch.Tensor:
    """[1, d, h, w] -> [1, h*w, d] (row-major positions)."""
    return t.permute(0, 2, 3, 1).reshape(t.shape[0], -1, t.shape[1])


class Encoding(nn.Module):
    """Queries, keys and values of a feature map (official `Encoding`).

    Q and K: conv1x1 + BN + LeakyReLU, then conv1x1 (to d_k); V: conv1x1 (to d_v).
    """

    def __init__(self, d_model: int, d_k: int, d_v: int):
        super().__init__()
        self.d_k, self.d_v = d_k, d_v
        self.w_qs = nn.Sequential(ConvBNReLU(d_model, d_k, bn=True), ConvBNReLU(d_k, d_k, bn=False))
        self.w_ks = nn.Sequential(ConvBNReLU(d_model, d_k, bn=True), ConvBNReLU(d_k, d_k, bn=False))
        self.w_vs = nn.Sequential(ConvBNReLU(d_model, d_v, bn=False))
        self.maxpool = nn.MaxPool2d(kernel_size=1, stride=4, padding=0)  # pure striding

    def current(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z [1, C, h, w] -> (q [1, P, d_k], v [1, d_v, h, w])  (official pre=False)."""
        return _flatten(self.w_qs(z)), self.w_vs(z)

    def stored(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """z [1, C, h, w] -> (q, k [1, Ps, d_k], v [1, Ps, d_v]) of z[..., ::4, ::4] (pre=True)."""
        z = self.maxpool(z)
        return _flatten(self.w_qs(z)), _flatten(self.w_ks(z)), _flatten(self.w_vs(z))


class Attention(nn.Module):
    """softmax(q k^T / sqrt(d_k)) v, then a 1x1 conv on every position (official `Attention`).

    forward(k_src [1, Ps, d_k], v_src [1, Ps, d_v], q_tgt [1, Pq, d_k], size=None)
    -> [1, Pq, d_v], or [1, d_v, h, w] when size=(h, w) is given (then Pq = h*w).
    The 1x1 conv is applied as a matrix product (F.linear) with the conv's weights:
    the official code runs it on a batch of Pq 1x1 images, the same arithmetic.
    Dropout (official p=0.1 on the attention map and the output) is inactive in eval.
    """

    def __init__(self, d_v: int, d_k: int):
        super().__init__()
        self.temperature = math.sqrt(d_k)
        self.fc = nn.Sequential(ConvBNReLU(d_v, d_v, bn=False))
        self.dropout = nn.Dropout(0.1)
        self.attn_dropout = nn.Dropout(0.1)

    def forward(self, k_src: torch.Tensor, v_src: torch.Tensor, q_tgt: torch.Tensor,
                size: tuple[int, int] | None = None) -> torch.Tensor:
        attn = torch.softmax(torch.bmm(q_tgt, k_src.transpose(1, 2)) / self.temperature, dim=2)
        out = torch.bmm(self.attn_dropout(attn), v_src)
        conv = self.fc[0].conv
        out = self.dropout(F.linear(out, conv.weight.flatten(1), conv.bias))
        if size is not None:
            out = out.permute(0, 2, 1).reshape(out.shape[0], -1, size[0], size[1])
        return out


class FCNHead(nn.Module):
    """conv3x3 (C -> C / chn_down) + BN + ReLU + Dropout2d, conv1x1 -> num_classes."""

    def __init__(self, in_channels: int, num_classes: int, chn_down: int):
        super().__init__()
        inter = in_channels // chn_down
        self.conv5 = nn.Sequential(
            nn.Conv2d(in_channels, inter, 3, padding=1, bias=False), BatchNorm2d(inter), nn.ReLU(),
            nn.Dropout2d(0.1), nn.Conv2d(inter, num_classes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv5(x)


class SpatialLayerNorm(nn.Module):
    """The official `Layer_Norm`: LayerNorm over (h, w), per-position weight and bias [h, w]."""

    def __init__(self, shape: tuple[int, int]):
        super().__init__()
        self.ln = nn.LayerNorm(list(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ln(x)
