"""Test oracles written independently of the code under test.

- `bilinear_sample`: grid_sample's bilinear sampling (align_corners=True pixel coordinates)
  written out in numpy, with 'zeros' or 'border' padding, for the hand-computed warps.
- `gsvnet_sample_points` / `mpvss_sample_points`: where each method's warp reads, derived from
  the papers' official conventions (METHODS.md), not from the model code.
- `assert_outputs_match`: the per-graph comparison the parity tests use instead of the
  exporter's own `compare_outputs` (a bug in the comparator must not hide a bug in a graph):
  float outputs within an absolute bound scaled by the output's magnitude, integer and bool
  outputs exactly equal; `assert_labels_equal_but_ties` for label maps whose reference scores tie.
- `recording_label_grids`: the label maps a pipeline's program returns, before the resize to the frame.
- `decoded_frames`: how many frames a written video really holds.

Re-measuring a bar: `VSS_MEASURE=1 python -m pytest -s tests/test_x.py` prints every float error
(`MEASURE ...`) and every tie instead of asserting the float bars; set the bar from what it prints.
"""
from __future__ import annotations

import contextlib
import os

import numpy as np


def bilinear_sample(image: np.ndarray, x: np.ndarray, y: np.ndarray, padding: str) -> np.ndarray:
    """Sample image [C, H, W] at pixel coordinates (x, y) (arrays of one shape) bilinearly.

    padding 'zeros': a corner outside the image contributes 0; 'border': coordinates are
    clamped to the image first. float64 throughout.
    """
    c, h, w = image.shape
    image = image.astype(np.float64)
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if padding == "border":
        x, y = np.clip(x, 0, w - 1), np.clip(y, 0, h - 1)
    elif padding != "zeros":
        raise ValueError(padding)
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = x - x0, y - y0
    out = np.zeros((c,) + x.shape)
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            xi, yi = x0 + dx, y0 + dy
            inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
            values = image[:, np.clip(yi, 0, h - 1), np.clip(xi, 0, w - 1)]
            out += values * (wx * wy * inside)
    return out


def gsvnet_sample_points(h: int, w: int, u: float, v: float) -> tuple[np.ndarray, np.ndarray]:
    """GSVNet's warp (official MC module): output pixel (y, x) reads the previous map at
    (x + u/4, y + v/4) for a constant flow (u, v): the base grid is linspace(-1, 1) over w
    (and h) columns, the flow / 4 is scaled by 2 / (w - 1) and sampling is align_corners=True,
    so grid and pixel units cancel exactly."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    return xs + u / 4.0, ys + v / 4.0


def mpvss_sample_points(h: int, w: int, u: float, v: float) -> tuple[np.ndarray, np.ndarray]:
    """MPVSS's mask warp (mmtrack flow_warp_feats): the grid (x + u, y + v) is normalised by W
    and H, not W - 1 and H - 1, yet sampled with align_corners=True, so output pixel (y, x)
    reads ((x + u) (W - 1) / W, (y + v) (H - 1) / H): the official code's slight shrink,
    which even a zero flow shows. u, v in pixels of the h x w mask grid."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    return (xs + u) * (w - 1) / w, (ys + v) * (h - 1) / h


def mpvss_expected(masks: np.ndarray, flows_uv: list[tuple[float, float]], scale: float) -> np.ndarray:
    """Each mask n warped by its own constant flow (u, v) given at the flow grid, i.e. (u, v) *
    scale pixels of the mask grid (the flow is resized to the masks' size and multiplied by
    W / w), border padding."""
    _, n, h, w = masks.shape
    out = np.empty(masks.shape, np.float64)
    for i, (u, v) in enumerate(flows_uv):
        xs, ys = mpvss_sample_points(h, w, u * scale, v * scale)
        out[0, i] = bilinear_sample(masks[0, i:i + 1], xs, ys, "border")[0]
    return out


def assert_outputs_match(where: str, got: np.ndarray, expected: np.ndarray, rel: float) -> float:
    """Assert a graph output equals its PyTorch value: same shape and dtype; integers and bools
    exactly; floats within rel * max|expected| (absolute). Returns the float error (0 for exact)."""
    got, expected = np.asarray(got), np.asarray(expected)
    assert got.shape == expected.shape, f"{where}: shape {got.shape}, expected {expected.shape}"
    assert got.dtype == expected.dtype, f"{where}: dtype {got.dtype}, expected {expected.dtype}"
    if not np.issubdtype(expected.dtype, np.floating):
        differ = int(np.count_nonzero(got != expected))
        assert differ == 0, f"{where}: {differ} of {expected.size} values differ"
        return 0.0
    assert np.isfinite(got).all(), f"{where}: not finite"
    scale = float(np.abs(expected.astype(np.float64)).max())
    err = float(np.abs(got.astype(np.float64) - expected).max()) / max(scale, 1e-12)
    if os.environ.get("VSS_MEASURE"):  # re-measuring: print, do not judge (module docstring)
        print(f"MEASURE {where}: {err:.3g}")
        return err
    assert err <= rel, f"{where}: max error {err:.3g} of the output's magnitude {scale:.3g} (bar {rel:g})"
    return err


@contextlib.contextmanager
def recording_label_grids(pipe, holder: dict):
    """Within the block, holder['labels'] is, after each pipeline step, the uint8 label map [Hl, Wl]
    the method's program returned: at the bundle's label resolution, before the resize to the frame's
    size (where one label pixel covers many frame pixels), whether the graphs or the host made it."""
    program = pipe.program
    step = program.step

    def recording_step(*args, **kwargs):
        program.label_size = None  # at the label resolution (the pipeline resizes them)
        labels = step(*args, **kwargs)
        holder["labels"] = np.asarray(labels).reshape(np.shape(labels)[-2:])
        return labels

    program.step = recording_step
    try:
        yield holder
    finally:
        del program.step  # the class's method again


def assert_labels_equal_but_ties(where: str, got: np.ndarray, expected: np.ndarray, scores: np.ndarray,
                                 tie: float) -> tuple[int, float]:
    """Label grids [h, w] equal, except where the reference's class scores [K, h, w] are tied
    (top-1 minus top-2 <= tie): there float rounding of the order of the graphs' 1e-7 error
    may pick either class. Returns (pixels that differ, their largest margin)."""
    assert got.shape == expected.shape == scores.shape[1:], (where, got.shape, expected.shape, scores.shape)
    differ = got != expected
    n = int(np.count_nonzero(differ))
    if n == 0:
        return 0, 0.0
    top = np.sort(scores, axis=0)
    margins = (top[-1] - top[-2])[differ]
    worst = float(margins.max())
    assert worst <= tie, (f"{where}: {n} label pixels differ from the reference and are not ties: "
                          f"the reference's top-2 margin there reaches {worst:.3g} (tie bar {tie:g})")
    return n, worst


def decoded_frames(video) -> int:
    """Frames decoded from a written video: an independent count (not its header's frame count,
    not the run's own summary)."""
    import cv2

    capture = cv2.VideoCapture(str(video))
    n = 0
    while capture.read()[0]:
        n += 1
    capture.release()
    return n
