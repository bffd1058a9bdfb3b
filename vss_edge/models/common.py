"""Small export-friendly building blocks shared by the PyTorch model definitions."""
from __future__ import annotations

import torch
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
