"""Small export-friendly building blocks shared by the PyTorch model definitions."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def _pool_matrix(size_in: int, size_out: int) -> torch.Tensor:
    """[size_out, size_in] averaging matrix with PyTorch's adaptive-pooling bins.

    Bin i covers [floor(i*in/out), ceil((i+1)*in/out)), exactly as
    torch.nn.functional.adaptive_avg_pool2d does.
    """
    rows = []
    for i in range(size_out):
        start = (i * size_in) // size_out
        end = -((-(i + 1) * size_in) // size_out)
        rows.append([1.0 / (end - start) if start <= j < end else 0.0 for j in range(size_in)])
    return torch.tensor(rows)


def adaptive_avg_pool2d_static(x: torch.Tensor, output_size: tuple[int, int]) -> torch.Tensor:
    """adaptive_avg_pool2d that exports to ONNX for any static input size.

    The ONNX exporter only handles adaptive pooling whose output divides the input;
    this computes the same bins as two matrix products with constant weights
    (MatMul in the graph), so any [B, C, H, W] -> [B, C, oh, ow] works.
    """
    h, w = int(x.shape[-2]), int(x.shape[-1])
    oh, ow = output_size
    if h % oh == 0 and w % ow == 0:
        return F.adaptive_avg_pool2d(x, (oh, ow))
    rows = _pool_matrix(h, oh).to(x)
    cols = _pool_matrix(w, ow).to(x)
    return torch.matmul(torch.matmul(rows, x), cols.t())


def resize(x: torch.Tensor, size: tuple[int, int], align_corners: bool) -> torch.Tensor:
    """Bilinear resize of [B, C, H, W] to size=(h, w)."""
    return F.interpolate(x, size=size, mode="bilinear", align_corners=align_corners)


def labels_from_logits(logits: torch.Tensor, size: tuple[int, int], align_corners: bool = True) -> torch.Tensor:
    """argmax of logits [1,C,h,w] resized bilinearly to size -> uint8 [1,H,W].

    align_corners: as the method's official evaluation resizes (True for GSVNet and TDNet,
    False for DDRNet / STMG).
    """
    return torch.argmax(resize(logits, size, align_corners=align_corners), dim=1).to(torch.uint8)


class Normalise(nn.Module):
    """uint8 [1,H,W,3] BGR frame -> float32 [1,3,H,W] normalised, in `channel_order`.

    norm: {"scale", "mean_rgb", "std_rgb"}; value = (pixel * scale - mean) / std.
    """

    def __init__(self, norm: dict, channel_order: str):
        super().__init__()
        if channel_order not in ("BGR", "RGB"):
            raise ValueError(f"channel_order must be BGR or RGB, got {channel_order!r}")
        self.to_rgb = channel_order == "RGB"
        mean, std = list(norm["mean_rgb"]), list(norm["std_rgb"])
        if not self.to_rgb:
            mean, std = mean[::-1], std[::-1]
        self.register_buffer("scale", torch.tensor(float(norm["scale"])), persistent=False)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image.permute(0, 3, 1, 2).float()
        if self.to_rgb:
            x = x.flip(1)
        return (x * self.scale - self.mean) / self.std
