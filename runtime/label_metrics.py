"""Label agreement between two label maps: confusion matrix, IoU per class, mIoU (torch-free).

On the runtime floor because `backend="auto"` scores a backend's labels against ONNX Runtime's
when it chooses (runtime.backend_choice); calibration.metrics re-exports them for the checks.
Convention: IoU of a class = TP / (TP + FP + FN) over the summed confusion matrix; mIoU = mean
over the classes present in either map (absent classes are NaN, never 0 or 1).
"""
from __future__ import annotations

import numpy as np


def confusion(truth: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """int64 [K, K] confusion matrix, rows = truth, columns = pred; pixels with truth or pred
    outside 0..K-1 (e.g. 255 = ignore) are left out."""
    t = np.asarray(truth).ravel().astype(np.int64)
    p = np.asarray(pred).ravel().astype(np.int64)
    valid = (t >= 0) & (t < num_classes) & (p >= 0) & (p < num_classes)
    return np.bincount(t[valid] * num_classes + p[valid], minlength=num_classes * num_classes).reshape(
        num_classes, num_classes)


def iou_per_class(cm: np.ndarray) -> np.ndarray:
    """float64 [K] IoU per class from a confusion matrix; NaN for a class absent from both maps."""
    tp = np.diag(cm).astype(np.float64)
    union = cm.sum(0) + cm.sum(1) - np.diag(cm)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, tp / np.maximum(union, 1), np.nan)


def miou(cm: np.ndarray) -> float | None:
    """Mean IoU over classes present in either map; None when the matrix is empty."""
    iou = iou_per_class(cm)
    return float(np.nanmean(iou)) if np.any(~np.isnan(iou)) else None
