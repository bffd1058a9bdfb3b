"""GSVNet's propagation head: warp in output space, then the guided spatially-varying conv.

Contract of GuidedSpatiallyVaryingConv.forward(warped_logits, image_small):
- warped_logits: float32 [B, C, h, w], the previous frame's logits warped to now;
- image_small: float32 [B, 3, h, w], the current frame at 1/8 (normalised BGR);
- returns refined logits float32 [B, C, h, w] (h, w multiples of 4).

The result is a per-pixel weighted sum of 11 terms: the warped logits, their 8
one-pixel shifts and an all-zero term (the fixed "ideal-delay" conv3d bank), and the
intra net's logits from the current frame. The weights come from the guiding net,
fed by the intra logits and the Laplacian edge map of argmax(warped logits), and are
normalised to sum to one per pixel.

Attribute names follow the official GuidedSpatiallyVaryingConv (checkpoint key
prefix `grm.`), so the official `state_dict` loads strictly.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from vss_edge.models.sampling import bilinear_sample


def ideal_delay_bank(kernel_size: int = 3, num_filters: int = 9) -> torch.Tensor:
    """[num_filters, 1, 1, k, k] one-hot shifts (centre skipped); remaining filters zero."""
    bank = torch.zeros(num_filters, 1, 1, kernel_size, kernel_size)
    idx = 0
    for i in range(kernel_size):
        for j in range(kernel_size):
            if i == kernel_size // 2 and j == kernel_size // 2:
                continue
            if idx < num_filters:
                bank[idx, 0, 0, i, j] = 1.0
            idx += 1
    return bank


class IdealDelayKernels(nn.Module):
    """[B, C, h, w] -> [B, 1 + num_filters, C, h, w]: the input and its shifted copies."""

    def __init__(self, kernel_size: int = 3, num_filters: int = 9):
        super().__init__()
        self.filter_copy_s = nn.Parameter(ideal_delay_bank(kernel_size, num_filters), requires_grad=False)
        self.padding = (kernel_size - 1) // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.unsqueeze(1)
        shifted = F.conv3d(x, self.filter_copy_s, padding=(0, self.padding, self.padding))
        return torch.cat((x, shifted), dim=1)

    def shifts(self) -> list[tuple[int, int] | None] | None:
        """Each filter as the (row, column) of its one 1 in the k x k window (a pure shift), None for
        an all-zero filter; None overall if some filter is neither (then only forward computes them)."""
        found = []
        for f in self.filter_copy_s.detach()[:, 0, 0]:
            ones = torch.nonzero(f)
            if not f.any():
                found.append(None)
            elif len(ones) == 1 and float(f[tuple(ones[0])]) == 1.0:
                found.append((int(ones[0][0]), int(ones[0][1])))
            else:
                return None
        return found

    def weighted_sum(self, weights: torch.Tensor, x: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        """sum_t weights[:, t] * term_t over the terms (x, its filtered copies..., last): weights
        [B, 2 + num_filters, h, w], x and last [B, C, h, w] -> [B, C, h, w]. The same sum as
        stacking the terms (forward) and reducing, in the terms' order, but with the shifts as slices
        of x padded once: the graph never holds the [B, 11, C, h, w] stack (GSVNet 512x1024: the
        weighted sum 2.75 -> 1.1 ms in ONNX Runtime, the same values)."""
        shifts = self.shifts()
        if shifts is None:  # not a bank of shifts: the stacked form
            terms = torch.cat((self(x), last.unsqueeze(1)), dim=1)
            return (weights.unsqueeze(2) * terms).sum(dim=1)
        per_term = torch.split(weights, 1, dim=1)
        pad = self.padding
        # zero borders as slices of x times 0: every shape in the traced graph static (F.pad's pads
        # trace through Reshape and Cast, which leave the graph's output shape unknown without onnxsim)
        rows = torch.cat((x[:, :, :pad] * 0, x, x[:, :, :pad] * 0), dim=2)
        padded = torch.cat((rows[:, :, :, :pad] * 0, rows, rows[:, :, :, :pad] * 0), dim=3)
        out = per_term[0] * x
        for k, shift in enumerate(shifts):
            if shift is not None:  # an all-zero filter adds nothing
                i, j = shift  # the window [i, i + h) of the padded rows: its end counted from the last
                out = out + per_term[1 + k] * padded[:, :, i:(i - 2 * pad) or None, j:(j - 2 * pad) or None]
        return out + per_term[-1] * last


class IntraNetwork(nn.Module):
    """Three 3x3 convs on the current frame at 1/8: 3 -> mid -> mid -> num_classes."""

    def __init__(self, c_in: int, mid: int, num_classes: int):
        super().__init__()
        self.intra_net = nn.Sequential(
            nn.Conv2d(c_in, mid, 3, padding=1), nn.BatchNorm2d(mid), nn.ReLU(),
            nn.Conv2d(mid, mid, 3, padding=1), nn.BatchNorm2d(mid), nn.ReLU(),
            nn.Conv2d(mid, num_classes, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.intra_net(x)


class GuidingNetwork(nn.Module):
    """Small encoder-decoder: cat(intra logits, edge) -> non-negative per-pixel weights."""

    def __init__(self, c_in: int, mid: int, c_out: int):
        super().__init__()
        bn_relu = lambda c: (nn.BatchNorm2d(c), nn.ReLU())  # noqa: E731
        self.guide_conv = nn.Sequential(nn.Conv2d(c_in, mid, 3, padding=1), *bn_relu(mid))
        self.guide_conv_feat = nn.Sequential(
            nn.Conv2d(mid, mid * 2, 3, stride=2, padding=1), *bn_relu(mid * 2),
            nn.Conv2d(mid * 2, mid * 4, 3, stride=2, padding=1), *bn_relu(mid * 4),
        )
        self.guide_deconv = nn.Sequential(
            nn.Upsample(scale_factor=2.0, mode="bilinear", align_corners=True),
            nn.Conv2d(mid * 4, mid * 2, 3, padding=1), *bn_relu(mid * 2),
            nn.Upsample(scale_factor=2.0, mode="bilinear", align_corners=True),
            nn.Conv2d(mid * 2, mid, 3, padding=1), *bn_relu(mid),
        )
        self.guide_decoder = nn.Sequential(nn.Conv2d(mid, c_out, 3, padding=1), *bn_relu(c_out))

    def forward(self, x: torch.Tensor, edge: torch.Tensor) -> torch.Tensor:
        feat = self.guide_conv(torch.cat((x, edge), dim=1))
        feat = feat + self.guide_deconv(self.guide_conv_feat(feat))
        return self.guide_decoder(feat)


class GuidedSpatiallyVaryingConv(nn.Module):
    """GSVNet's refinement of warped logits (see the module docstring for the contract)."""

    def __init__(self, num_classes: int = 19, intra_channels: int = 32, guide_channels: int = 32):
        super().__init__()
        self.num_terms = 9 + 2  # ideal-delay bank (9) + the warped logits + the intra logits
        self.ideal_dk = IdealDelayKernels(3, 9)
        self.intra_net = IntraNetwork(3, intra_channels, num_classes)
        self.guide = GuidingNetwork(num_classes + 1, guide_channels, self.num_terms)
        laplacian = torch.ones(1, 1, 3, 3)
        laplacian[0, 0, 1, 1] = -8.0
        self.register_buffer("laplacian", laplacian, persistent=False)

    def edge_map(self, logits: torch.Tensor) -> torch.Tensor:
        """1 where the argmax label changes within the 3x3 neighbourhood (or at the border)."""
        labels = torch.argmax(logits, dim=1, keepdim=True).float()
        edge = F.conv2d(labels, self.laplacian, padding=1)
        return (edge != 0).float()

    def forward(self, warped_logits: torch.Tensor, image_small: torch.Tensor) -> torch.Tensor:
        intra = self.intra_net(image_small)
        weights = self.guide(intra, self.edge_map(warped_logits))
        weights = weights / (weights.sum(dim=1, keepdim=True) + 1e-9)
        return self.ideal_dk.weighted_sum(weights, warped_logits, intra)


def warp(logits: torch.Tensor, flow: torch.Tensor, sampler: str = "gather") -> torch.Tensor:
    """Backward-warp logits [B,C,h,w] by flow [B,2,h,w] as the official MC module does.

    The flow is divided by 4, scaled to [-1, 1] by (w-1, h-1) onto a linspace base
    grid, and sampled bilinearly with zero padding and align_corners=True (the
    official code predates PyTorch 1.3, when that was the default): output pixel (y, x)
    reads (x + u/4, y + v/4) in pixels of the map, grid and pixel units cancelling.

    sampler: "gather" (B = 1; what the graphs and the reference run: models.sampling, the same
    values to float rounding, faster in ONNX Runtime) or "grid_sample" (the official op, with its
    backward: what training runs).
    """
    _, _, h, w = logits.shape
    if sampler == "gather":
        ys, xs = np.mgrid[0:int(h), 0:int(w)].astype(np.float32)  # pixel grid, a graph constant
        x = torch.from_numpy(xs).to(flow.device) + flow[0, 0] / 4.0
        y = torch.from_numpy(ys).to(flow.device) + flow[0, 1] / 4.0
        return bilinear_sample(logits, x, y, "zeros")
    if sampler != "grid_sample":
        raise ValueError(f"sampler must be 'gather' or 'grid_sample', got {sampler!r}")
    # Built outside the traced ops so the graph holds them as float32 constants.
    xs, ys = np.meshgrid(np.linspace(-1.0, 1.0, w), np.linspace(-1.0, 1.0, h))
    base = torch.from_numpy(np.stack((xs, ys), axis=-1).astype(np.float32)).to(flow.device)  # [h, w, (x, y)]
    scale = torch.from_numpy(np.array([2.0 / (w - 1), 2.0 / (h - 1)], dtype=np.float32)).to(flow.device)
    grid = base.unsqueeze(0) + (flow / 4.0).permute(0, 2, 3, 1) * scale
    return F.grid_sample(logits, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
