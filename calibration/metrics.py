"""Metrics of the accuracy checks (torch-free): tensor error, label confusion and IoU, ground truth.

Conventions (also in every result under `conventions`):
- SQNR = 10 log10(sum ref^2 / sum (ref - cand)^2), in float64. Identical outputs give
  float('inf') in Python; a zero reference with a non-zero error gives -inf. JSON cannot hold
  either: `report.to_jsonable` writes every non-finite number as null, and each output carries
  `identical` (true when every element of every sample was equal), so a null SQNR with
  identical=true means infinite SQNR (no error at all).
- IoU of a class = TP / (TP + FP + FN) over the summed confusion matrix; mIoU = mean over the
  classes present in either map (absent classes are None, never 0 or 1).
- Ground-truth label maps: uint8 PNGs named by video frame index (000000.png ...), class ids,
  255 = ignore; frames without a label map are skipped; predictions are resized (nearest) to
  the label map's size if they differ.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from vss_edge.runtime.errors import VssEdgeError
from vss_edge.runtime.label_metrics import confusion, iou_per_class, miou  # noqa: F401  (re-exported)

CONVENTIONS = {
    "sqnr_db": "10*log10(sum(ref^2)/sum((ref-cand)^2)); null in JSON = not finite: +inf when the output is "
               "identical (see 'identical'), -inf when the reference is all zero but the candidate is not",
    "miou": "mean IoU over classes present in either label map (summed confusion matrix); absent classes: null",
    "agreement": "candidate labels scored against reference labels as if the reference were ground truth",
    "ground_truth": "PNG label maps named by frame index (000000.png), uint8 class ids, 255 = ignore",
    "speed_ratio": "candidate / reference (below 1: the candidate is faster)",
}
IGNORE = 255


# ---------------------------------------------------------------- tensor metrics

def output_metrics(reference: np.ndarray, candidate: np.ndarray) -> dict:
    """Error of one output sample: candidate vs reference (same shape).

    Float outputs: {"kind": "float", "sqnr_db", "cosine", "max_abs"} computed in float64;
    sqnr_db is float('inf') when the arrays are equal (and -inf for a zero reference with a
    non-zero error); cosine is 1.0 for two all-zero arrays, 0.0 when only one is all zero.
    Integer / bool outputs (labels): {"kind": "int", "agreement": fraction of equal elements,
    "max_abs"}. ValueError if the shapes differ.
    """
    ref = np.asarray(reference)
    cand = np.asarray(candidate)
    if ref.shape != cand.shape:
        raise ValueError(f"reference shape {ref.shape} != candidate shape {cand.shape}")
    integer = ref.dtype.kind in "iub" and cand.dtype.kind in "iub"
    if integer:
        if ref.size == 0:
            return {"kind": "int", "agreement": 1.0, "max_abs": 0.0}
        diff = np.abs(ref.astype(np.int64) - cand.astype(np.int64))
        return {"kind": "int", "agreement": float(np.mean(ref == cand)), "max_abs": float(diff.max())}
    r = ref.astype(np.float64).ravel()
    c = cand.astype(np.float64).ravel()
    err = r - c
    signal = float(np.dot(r, r))
    noise = float(np.dot(err, err))
    if noise == 0.0:
        sqnr = math.inf
    elif signal == 0.0:
        sqnr = -math.inf
    else:
        sqnr = 10.0 * math.log10(signal / noise)
    nr, nc = math.sqrt(signal), float(np.linalg.norm(c))
    if nr == 0.0 and nc == 0.0:
        cosine = 1.0
    elif nr == 0.0 or nc == 0.0:
        cosine = 0.0
    else:
        cosine = float(np.clip(np.dot(r, c) / (nr * nc), -1.0, 1.0))
    max_abs = float(np.max(np.abs(err))) if err.size else 0.0
    return {"kind": "float", "sqnr_db": sqnr, "cosine": cosine, "max_abs": max_abs}


# ---------------------------------------------------------------- label metrics
# confusion, iou_per_class and miou live in runtime.label_metrics (backend='auto' scores with them).

def pixel_accuracy(cm: np.ndarray) -> float | None:
    total = cm.sum()
    return float(np.trace(cm) / total) if total else None


def per_class(cm: np.ndarray, names) -> list[dict]:
    iou = iou_per_class(cm)
    return [{"class": i, "name": names[i], "iou": None if np.isnan(iou[i]) else float(iou[i]),
             "reference_pixels": int(cm[i].sum()), "candidate_pixels": int(cm[:, i].sum())}
            for i in range(len(names))]


def load_label_map(labels_dir: Path, index: int, num_classes: int) -> np.ndarray | None:
    """The ground-truth label map of video frame `index`: labels_dir/NNNNNN.png as (H, W) uint8 class
    ids (255 = ignore); None when there is none. VssEdgeError for a PNG that is not one channel of
    uint8 ids below num_classes."""
    path = labels_dir / f"{index:06d}.png"
    if not path.is_file():
        return None
    import cv2

    data = np.fromfile(path, dtype=np.uint8)
    gt = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if gt is None:
        raise VssEdgeError(f"label map '{path}' cannot be decoded (expected a PNG of uint8 class ids)")
    if gt.ndim == 3:
        if not (np.array_equal(gt[..., 0], gt[..., 1]) and np.array_equal(gt[..., 0], gt[..., 2])):
            raise VssEdgeError(f"label map '{path}' is a colour image; expected one channel of class ids")
        gt = gt[..., 0]
    if gt.dtype != np.uint8:
        raise VssEdgeError(f"label map '{path}' is {gt.dtype}; expected uint8 class ids (255 = ignore)")
    bad = np.unique(gt[(gt >= num_classes) & (gt != IGNORE)])
    if bad.size:
        raise VssEdgeError(f"label map '{path}' has class id(s) {bad[:5].tolist()} but the bundle has "
                           f"{num_classes} classes (0..{num_classes - 1}, 255 = ignore)")
    return gt
