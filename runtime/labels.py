"""Full-resolution labels from low-resolution scores, exact and cheap, on the host (torch-free).

The faithful label tail of every method resizes its C score maps bilinearly to the frame's size
and takes the argmax per pixel (GSVNet, TDNet: align_corners=True; STMG: False), which costs
C x H x W multiply-adds and as many compares on every frame. Bilinear interpolation is a convex
combination of the four source neighbours of a pixel, so where those four have the same class
and each has it by a strict margin, every pixel between them has that class too (for scores that
are linear in what is interpolated: logits). Only pixels of the cells whose corners disagree (a
class boundary: a few percent of the image) need their interpolated scores; the others take the
low-resolution argmax; and in a boundary cell only the classes whose corners reach the best lower
bound there are interpolated (usually 2-3 of C). The labels equal the faithful ones except where two
classes tie to float rounding (tests/test_labels.py).

MPVSS's semantic inference is not linear in what is interpolated (the masks pass a sigmoid before
the class-weighted sum), so `MaskLabels` bounds it instead: inside a cell each query's sigmoid lies
between its corner extremes, which bounds every class's score by the corner scores +- the spread;
a cell whose top-left corner's margin beats twice that bound is one class, the rest is computed exactly.
Where many cells are on a boundary (masks that disagree everywhere, as seeded weights give), computing
them cell by cell costs more than resizing every mask (OpenCV's bilinear resize along the columns,
the rows' bilinear weights as one matrix product per block of rows), so above DENSE_SHARE of the
cells (after a dense frame, every DENSE_SAMPLE-th row of cells is tested first, the rest only if
those fall below) `MaskLabels` does that instead (the same labels: benchmarks/label_tail_speed.py
measures both ways).

| class | input | output |
|---|---|---|
| `LogitLabels(src, dst, align_corners)` | float32 [1, C, h, w] logits | uint8 [H, W] argmax of the bilinearly resized logits |
| `MaskLabels(src, padded, dst)` | class logits [1, N, K+1], mask logits [1, N, h4, w4] | uint8 [H, W]: argmax_k sum_q softmax(class)[q, k] sigmoid(resized mask_q), cropped |

A bundle exported with `label_path="host"` has no label tail in its graphs; its manifest's
"labels" entry says how the runtime computes them (`label_tail`):

    {"computed": "host", "kind": "logits", "scores_size": [h, w], "size": [H, W], "align_corners": bool}
    {"computed": "host", "kind": "masks", "scores_size": [h4, w4], "padded_size": [Hp, Wp], "size": [H, W]}

and {"computed": "graph"} (or no entry: bundles before it) means the graphs output "labels".

Both take size=(H', W') too: the [H, W] labels resized to it by OpenCV's nearest neighbour (what the
Pipeline does to reach the frame's size), computed at the pixels that resize keeps only (`at`).
"""
from __future__ import annotations

import copy

import cv2
import numpy as np


class _Axis:
    """Bilinear source indices and weights along one axis, as PyTorch and ONNX Runtime resize.

    For output index d: source coordinate s = d * (n - 1) / (m - 1) (align_corners) or
    (d + 0.5) * n / m - 0.5 clamped at 0 (half-pixel); lo = floor(s), hi = min(lo + 1, n - 1),
    frac = s - lo; value = (1 - frac) * x[lo] + frac * x[hi].
    """

    def __init__(self, n_src: int, n_dst: int, align_corners: bool):
        d = np.arange(n_dst, dtype=np.float64)
        if align_corners:
            s = d * ((n_src - 1) / (n_dst - 1)) if n_dst > 1 else np.zeros_like(d)
        else:
            s = np.maximum((d + 0.5) * (n_src / n_dst) - 0.5, 0.0)
        lo = np.minimum(np.floor(s).astype(np.int64), n_src - 1)
        self.n_src = n_src
        self.lo = lo
        self.hi = np.minimum(lo + 1, n_src - 1)
        self.frac = (s - lo).astype(np.float32)
        self.pick = np.arange(n_dst)  # which output index of the full resize each entry is

    def picked(self, index: np.ndarray) -> "_Axis":
        """The same axis keeping only output indices `index` (non-decreasing, repeats allowed)."""
        axis = object.__new__(_Axis)
        axis.n_src, axis.lo, axis.hi, axis.frac, axis.pick = (
            self.n_src, self.lo[index], self.hi[index], self.frac[index], self.pick[index])
        return axis

    def index_cells(self) -> None:
        """Group the output indices by source cell (lo never decreases along an axis): source index
        i owns count[i] consecutive outputs, held in `slots` = max(count) slots of which valid[i]
        are used; weight[i] gives each slot's frac (0 when unused); keep: the flat slot of each
        output, in order; scatter: each slot's output index, len(lo) for an unused one."""
        n = self.n_src
        self.count = np.bincount(self.lo, minlength=n)  # output pixels per source index
        start = np.cumsum(self.count) - self.count
        self.next = np.minimum(np.arange(n) + 1, n - 1)  # the cell's other corner
        slots = max(int(self.count.max()), 1)
        offset = start[:, None] + np.arange(slots)  # [n, slots] output index per slot
        self.valid = np.arange(slots) < self.count[:, None]
        self.weight = np.where(self.valid, self.frac[np.minimum(offset, len(self.frac) - 1)], 0)
        self.weight = self.weight.astype(np.float32)[..., None]  # [n, slots, 1]
        self.keep = np.flatnonzero(self.valid.ravel())
        self.scatter = np.where(self.valid, offset, len(self.lo))


def nearest_picks(n_from: int, n_to: int) -> np.ndarray:
    """The indices of n_from that OpenCV's INTER_NEAREST resize to n_to reads (runtime.preprocess.
    labels_to_frame's resize): resizing a map and picking these rows and columns are the same."""
    ramp = np.arange(n_from, dtype=np.int32)[None]
    return cv2.resize(ramp, (n_to, 1), interpolation=cv2.INTER_NEAREST)[0].astype(np.int64)


def _cell_corners(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The four corners (y, x), (y, x+1), (y+1, x), (y+1, x+1) of every cell of a [..., h, w] map,
    the last row and column repeated (a pixel there has hi == lo)."""
    p = np.concatenate([x, x[..., -1:, :]], axis=-2)
    p = np.concatenate([p, p[..., :, -1:]], axis=-1)
    return p[..., :-1, :-1], p[..., :-1, 1:], p[..., 1:, :-1], p[..., 1:, 1:]


PRUNE_WORK = 200_000  # LogitLabels: interpolated values (cells x block x C) from which choosing candidates pays
DENSE_SHARE = 0.2  # MaskLabels: above this share of boundary cells, resize everything. Cell by cell costs
# ~5x the dense path at every cell (noisy masks: R50 480x853 874 vs 153 ms; 288x384, 16 masks: 27-33 vs
# 4.6-6.7 ms), so they cross near 0.17-0.20 (it was 0.5, never measured)
RESIZE_CHANNELS = 128  # channels per cv2.resize call (OpenCV 5.1's Python binding refuses more)
DENSE_ROWS = 8  # output rows per block of the dense path ([8 x W, N] float32: ~2.7 MB at 853 x 100, near
# the L2 cache; measured at 480x853, 100 masks: 8 rows 106 ms, 16 rows 108, 64 rows 142, 2 rows 122)
DENSE_SAMPLE = 8  # MaskLabels: every 8th row of cells tells, after a dense frame, whether it stays dense


def interpolation_matrix(axis: _Axis, n_src: int) -> np.ndarray:
    """float32 [n_dst, n_src]: row d holds output index d's two bilinear weights (x_dst = M @ x_src)."""
    m = np.zeros((len(axis.lo), n_src), dtype=np.float32)
    rows = np.arange(len(axis.lo))
    np.add.at(m, (rows, axis.lo), 1.0 - axis.frac)
    np.add.at(m, (rows, axis.hi), axis.frac)
    return m


def _sigmoid_in_place(x: np.ndarray) -> np.ndarray:
    """x <- 1 / (1 + exp(-x)), without temporaries (x: a float32 array it owns); returns x."""
    return _sigmoid_of_negated_in_place(np.negative(x, out=x))


def _sigmoid_of_negated_in_place(minus_x: np.ndarray) -> np.ndarray:
    """minus_x <- 1 / (1 + exp(minus_x)) = sigmoid(x), in place (a float32 array it owns): for
    values computed already negated (the same floats: negation is exact), one pass fewer."""
    np.exp(minus_x, out=minus_x)
    minus_x += 1.0
    return np.reciprocal(minus_x, out=minus_x)


class _Upsampler:
    """Shared machinery: uniform cells -> labels by repetition, boundary cells -> exact scores.

    A cell (y, x) of the source grid owns the output pixels whose `lo` indices are (y, x): a block
    of count[y] consecutive rows x count[x] consecutive columns (lo never decreases along an axis),
    all interpolating the same four corners (y or hi[y]) x (x or hi[x]) with their own weights.
    """

    def __init__(self, src: tuple[int, int], dst: tuple[int, int], align_corners: bool,
                 crop: tuple[int, int] | None = None):
        self.rows = _Axis(src[0], dst[0], align_corners)
        self.cols = _Axis(src[1], dst[1], align_corners)
        if crop is not None:  # only the top-left crop of the resized map is wanted (MPVSS's padding)
            self.rows, self.cols = self.rows.picked(np.arange(crop[0])), self.cols.picked(np.arange(crop[1]))
        self._index_cells()
        self._sized: dict[tuple[int, int], _Upsampler] = {}
        self.boundary_share = 0.0  # share of output pixels computed exactly, for the last frame

    def _index_cells(self) -> None:
        self.rows.index_cells()
        self.cols.index_cells()
        self.size = (len(self.rows.lo), len(self.cols.lo))
        self._block_weight_tables = None  # LogitLabels' per-pixel weights of a block, made on first use

    def at(self, size: tuple[int, int]):
        """(step, rows, cols) giving this label step's labels resized to `size` (H', W') by OpenCV's
        nearest neighbour, made once per size: step computes only the distinct rows and columns
        that resize keeps, and step's labels[rows][:, cols] (an index array, or None for all of
        them in order) repeat them where it repeats one (upscaling). The same labels as
        labels_to_frame(self(...), size), without computing what that resize drops or repeats."""
        size = (int(size[0]), int(size[1]))
        if size not in self._sized:
            sized = copy.copy(self)
            repeats = []
            for name, n_from, n_to in (("rows", self.size[0], size[0]), ("cols", self.size[1], size[1])):
                distinct, repeat = np.unique(nearest_picks(n_from, n_to), return_inverse=True)
                setattr(sized, name, getattr(self, name).picked(distinct))
                repeats.append(None if len(distinct) == n_to else repeat.reshape(-1))
            sized._index_cells()
            sized._sized = {}
            self._sized[size] = (sized, *repeats)
        return self._sized[size]

    def _sized_labels(self, size: tuple[int, int] | None, *scores) -> np.ndarray:
        """uint8 labels of scores at the label size (size None or equal to it), else at size (`at`)."""
        if size is None or tuple(size) == self.size:
            return self._labels(*scores)
        step, rows, cols = self.at(size)
        labels = step._labels(*scores)
        if rows is not None:
            labels = labels[rows]
        return labels if cols is None else np.take(labels, cols, axis=1)

    def _assemble(self, cell_labels: np.ndarray, uniform: np.ndarray, exact) -> np.ndarray:
        """Labels [H, W]: each uniform cell's label repeated over its block; the blocks of the
        other cells from exact(cy, cx) -> labels [cells, rows, cols] of cells (cy, cx).

        Built as [h, row slots, W + 1]: every source row's slots hold its cells' labels along the
        columns, the exact blocks are written over their cells (a block's unused columns into the
        spare last column, its unused rows into slots no output keeps), then the used slots are kept.
        """
        h, slots = self.rows.valid.shape
        width = self.size[1]
        rows = np.empty((h, slots, width + 1), dtype=np.uint8)
        rows[:, :, :width] = np.repeat(cell_labels, self.cols.count, axis=1)[:, None, :]
        cy, cx = np.nonzero(~uniform)
        if cy.size:
            rows[cy[:, None, None], np.arange(slots)[:, None], self.cols.scatter[cx][:, None, :]] = exact(cy, cx)
            self.boundary_share = float((self.rows.count[cy] * self.cols.count[cx]).sum()) / (self.size[0] * width)
        else:
            self.boundary_share = 0.0
        return rows.reshape(h * slots, width + 1)[self.rows.keep, :width]

    def _corners(self, maps_hwc: np.ndarray, cy: np.ndarray, cx: np.ndarray) -> tuple[np.ndarray, ...]:
        """The four corner values [cells, C] of cells (cy, cx) of maps [h, w, C]: top-left,
        top-right, bottom-left, bottom-right (the last row and column are their own neighbours)."""
        y1, x1 = self.rows.next[cy], self.cols.next[cx]
        return maps_hwc[cy, cx], maps_hwc[cy, x1], maps_hwc[y1, cx], maps_hwc[y1, x1]

    def _interpolate(self, maps_hwc: np.ndarray, cy: np.ndarray, cx: np.ndarray) -> np.ndarray:
        """maps [h, w, C] bilinearly interpolated over the blocks of cells (cy, cx) ->
        float32 [cells, rows, cols, C] (slots beyond a block's size hold garbage)."""
        c00, c01, c10, c11 = self._corners(maps_hwc, cy, cx)
        wx = self.cols.weight[cx]  # [cells, cols, 1]
        top = c00[:, None] + wx * (c01 - c00)[:, None]
        bottom = c10[:, None] + wx * (c11 - c10)[:, None]
        wy = self.rows.weight[cy][:, :, None]  # [cells, rows, 1, 1]
        return top[:, None] + wy * (bottom - top)[:, None]


class LogitLabels(_Upsampler):
    """argmax over classes of logits [1, C, h, w] resized bilinearly to dst = (H, W) -> uint8 [H, W]
    (or, given size, those labels resized to it by nearest neighbour: see `at`)."""

    def __call__(self, logits: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
        return self._sized_labels(size, logits)

    def _labels(self, logits: np.ndarray) -> np.ndarray:
        hwc = np.ascontiguousarray(np.asarray(logits, dtype=np.float32)[0].transpose(1, 2, 0))  # [h, w, C]
        top = hwc.argmax(-1)
        best = np.take_along_axis(hwc, top[..., None], -1)
        # strict: no other class reaches the best score (an exact tie goes to the exact path)
        strict = (hwc >= best).sum(-1) == 1
        corners = _cell_corners(np.stack([top, strict]))
        uniform = np.ones(top.shape, dtype=bool)
        for c in corners:
            uniform &= (c[0] == top) & (c[1] == 1)
        return self._assemble(top.astype(np.uint8), uniform, lambda cy, cx: self._argmax_blocks(hwc, cy, cx))

    def _argmax_blocks(self, hwc: np.ndarray, cy: np.ndarray, cx: np.ndarray) -> np.ndarray:
        """uint8 [cells, rows, cols]: the argmax over classes of the interpolated logits in the
        blocks of cells (cy, cx), interpolating only the classes that can win there.

        Inside a cell each class's logit lies between its corner extremes, so the winner scores at
        least floor = max_k min_corners(k) everywhere, and a class whose largest corner is below
        floor never wins. A boundary cell usually has 2-3 such candidates of C classes. Cells are
        grouped by their candidate count k and interpolated over k classes in class order, so ties
        go to the lower class as in the full argmax, and each kept class's values are the same
        arithmetic as with all C. Below PRUNE_WORK interpolated values it interpolates every class:
        choosing costs a fixed ~0.25 ms (measured: trained GSVNet at 288x384, 0.30 vs 0.55 ms).
        """
        if cy.size * self.rows.weight.shape[1] * self.cols.weight.shape[1] * hwc.shape[-1] < PRUNE_WORK:
            return self._interpolate(hwc, cy, cx).argmax(-1).astype(np.uint8)  # too little to save
        n_classes, w = hwc.shape[-1], hwc.shape[1]
        y1, x1 = self.rows.next[cy], self.cols.next[cx]
        cells = [y * w + x for y, x in ((cy, cx), (cy, x1), (y1, cx), (y1, x1))]  # each corner's grid point
        corners = [hwc.reshape(-1, n_classes)[c] for c in cells]  # 4 x [cells, C]
        at = [c * n_classes for c in cells]  # where each corner's scores start in hwc, flat
        high = np.maximum(np.maximum(corners[0], corners[1]), np.maximum(corners[2], corners[3]))
        low = np.minimum(np.minimum(corners[0], corners[1]), np.minimum(corners[2], corners[3]))
        candidate = high >= low.max(-1, keepdims=True)  # [cells, C]
        candidate |= ~candidate.any(-1, keepdims=True)  # a NaN corner compares false: such a cell takes every class
        counts = candidate.sum(-1)
        wx, wy = self._block_weights()
        flat = hwc.reshape(-1)
        out = np.empty((cy.size, wy.shape[1]), dtype=np.uint8)
        for k in np.unique(counts):
            group = np.nonzero(counts == k)[0]
            classes = np.nonzero(candidate[group])[1].reshape(-1, k).T  # [k, cells]: each cell's candidates, in class order
            c00, c01, c10, c11 = (flat[i[group] + classes][..., None] for i in at)  # [k, cells, 1]
            gx, gy = wx[cx[group]], wy[cy[group]]  # [cells, pixels of a block]
            values = gx * (c11 - c10)  # bottom edge, then the top edge, then between them:
            values += c10  # the same arithmetic as _interpolate, in place, [k, cells, pixels]
            top = gx * (c01 - c00)
            top += c00
            values -= top
            values *= gy
            values += top
            best = values[0]
            label = np.empty(best.shape, dtype=np.uint8)
            label[...] = classes[0][:, None]
            for j in range(1, k):  # a strict > keeps the lower class at a tie, as argmax does
                better = values[j] > best
                np.maximum(best, values[j], out=best)
                np.copyto(label, classes[j][:, None].astype(np.uint8), where=better)
            out[group] = label
        return out.reshape(cy.size, self.rows.weight.shape[1], self.cols.weight.shape[1])

    def _block_weights(self) -> tuple[np.ndarray, np.ndarray]:
        """float32 [w, rows x cols] and [h, rows x cols]: each source column's and row's bilinear
        weight at every pixel of a block (slot), flattened (made once)."""
        if self._block_weight_tables is None:
            rows, cols = self.rows.weight[..., 0], self.cols.weight[..., 0]  # [h, R], [w, Cc]
            shape = (rows.shape[1], cols.shape[1])
            self._block_weight_tables = (
                np.ascontiguousarray(np.broadcast_to(cols[:, None, :], (cols.shape[0],) + shape)).reshape(cols.shape[0], -1),
                np.ascontiguousarray(np.broadcast_to(rows[:, :, None], (rows.shape[0],) + shape)).reshape(rows.shape[0], -1))
        return self._block_weight_tables


def _one_class_cells(probs: np.ndarray, sig: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(top, uniform) of the cells of sigmoid masks sig [N, h, w] under class probabilities probs
    [N, K]: top int [h, w], each grid point's class (exact there); uniform bool [h, w], whether that
    class wins at every pixel of the cell whose top-left corner the point is (the last row and
    column are their own neighbours)."""
    n, h, w = sig.shape
    scores = sig.reshape(n, h * w).T @ probs  # [h x w, K], exact at the grid points (classes last:
    top = scores.argmax(-1).reshape(h, w)  # numpy reduces a contiguous last axis fastest)
    part = np.partition(scores, -2, axis=-1)
    margin = (part[:, -1] - part[:, -2]).reshape(h, w)  # 0 at a tie
    # Inside a cell, sigmoid(mask_q) moves at most spread_q from any corner's value, so each
    # class score moves at most sum_q p[q, k] spread_q <= sum_q max_k p[q, k] spread_q = bound.
    c00, c01, c10, c11 = _cell_corners(sig)
    spread = (np.maximum(np.maximum(c00, c01), np.maximum(c10, c11))
              - np.minimum(np.minimum(c00, c01), np.minimum(c10, c11)))  # [N, h, w]
    bound = np.tensordot(probs.max(1), spread, axes=1)  # [h, w]
    # Any one corner then decides: its class wins everywhere in the cell when its margin over
    # the runner-up exceeds twice the bound (the top-left corner is the cell's own grid point).
    return top, margin > 2 * bound


class MaskLabels(_Upsampler):
    """MPVSS / Mask2Former semantic inference at full size.

    src: the mask grid (h4, w4); padded: (Hp, Wp) the masks are resized to (bilinear,
    align_corners=False); dst: (H, W) <= padded, the crop the labels keep.
    """

    def __init__(self, src: tuple[int, int], padded: tuple[int, int], dst: tuple[int, int]):
        super().__init__(src, padded, align_corners=False, crop=dst)
        self.padded = padded

    def _index_cells(self) -> None:
        super()._index_cells()
        self._weights = None  # the dense path's row weights and bands, made on its first frame
        self._last_dense = False  # whether the last frame's full test chose the dense path

    def __call__(self, class_logits: np.ndarray, mask_logits: np.ndarray,
                 size: tuple[int, int] | None = None) -> np.ndarray:
        return self._sized_labels(size, class_logits, mask_logits)

    def _labels(self, class_logits: np.ndarray, mask_logits: np.ndarray) -> np.ndarray:
        c = np.asarray(class_logits, dtype=np.float32)[0]  # [N, K+1]
        e = np.exp(c - c.max(-1, keepdims=True))
        probs = (e / e.sum(-1, keepdims=True))[:, :-1]  # [N, K]
        masks = np.asarray(mask_logits, dtype=np.float32)[0]  # [N, h, w]
        n, h, w = masks.shape
        # Both paths give the same labels, so after a dense frame a sample of the cells may choose:
        # every DENSE_SAMPLE-th row of cells (its own and its next row of grid points), a quarter of
        # the test's cost (not before: where few cells are on a boundary it would only add to it).
        if self._last_dense:
            sampled = np.arange(0, h, DENSE_SAMPLE)
            pairs = np.stack([sampled, np.minimum(sampled + 1, h - 1)], axis=1).reshape(-1)
            if 1.0 - _one_class_cells(probs, _sigmoid_in_place(masks[:, pairs]))[1][0::2].mean() > DENSE_SHARE:
                return self._dense(probs, masks)
        top, uniform = _one_class_cells(probs, _sigmoid_in_place(masks.copy()))
        self._last_dense = bool(1.0 - uniform.mean() > DENSE_SHARE)
        if self._last_dense:
            return self._dense(probs, masks)
        hwc = np.ascontiguousarray(masks.transpose(1, 2, 0))

        def exact(cy, cx):
            m = self._interpolate(hwc, cy, cx)  # [cells, rows, cols, N]
            flat = _sigmoid_in_place(m.reshape(-1, n))  # one [pixels, N] x [N, K] product (a 4-D @ loops)
            return (flat @ probs).argmax(-1).astype(np.uint8).reshape(m.shape[:-1])

        return self._assemble(top.astype(np.uint8), uniform, exact)

    def _dense(self, probs: np.ndarray, masks: np.ndarray) -> np.ndarray:
        """Every pixel exactly -> uint8 [H, W]: the masks resized along the columns by OpenCV's
        bilinear resize (half-pixel, as PyTorch's), then along the rows DENSE_ROWS output rows at
        a time, as one product of the bilinear weights of the band of source rows the block reads
        (a block's first lo to its last hi; the weights outside it are 0), which lays the block out
        as [pixels, N] for the class product. The row weights are kept negated, so the sigmoid's
        exp reads a block as it comes (the same floats: negation is exact). 480x853, 100 masks, 124
        classes (benchmarks/label_tail_speed.py): ~145 ms, ~250 with 64-row blocks and the masks
        copied to the crop."""
        n, h, w = masks.shape
        if self._weights is None:  # the geometry's: made once, on the first dense frame
            self._weights = -interpolation_matrix(self.rows, h), _bands(self.rows, DENSE_ROWS)
        minus_wy, row_bands = self._weights  # [H, h] negated (a block comes out as -x), [(output rows, source rows)]
        width, padded_width = self.size[1], self.padded[1]
        hwc = np.ascontiguousarray(masks.transpose(1, 2, 0))  # [h, w, N]
        # rows unchanged (weights 1 and 0), columns to the padded width: [h, Wp, N]; OpenCV takes
        # at most RESIZE_CHANNELS channels a call and drops the axis of a single one
        across = [cv2.resize(hwc[..., i:i + RESIZE_CHANNELS], (padded_width, h),
                             interpolation=cv2.INTER_LINEAR).reshape(h, padded_width, -1)
                  for i in range(0, n, RESIZE_CHANNELS)]
        across = across[0] if len(across) == 1 else np.concatenate(across, axis=-1)
        columns = self.cols.pick  # of the padded width: the crop, or the pixels a resize keeps
        if not np.array_equal(columns, np.arange(width)):
            across = across[:, columns]  # [h, W, N]
        # else the padding's columns (MPVSS pads to a multiple of 32: under 32) ride along and are
        # cropped from the labels: cheaper than copying every mask to the crop
        labels = np.empty((minus_wy.shape[0], across.shape[1]), dtype=np.uint8)
        for out, src in row_bands:
            block = minus_wy[out, src] @ across[src].reshape(src.stop - src.start, -1)  # -x: [rows, Wp x N]
            flat = _sigmoid_of_negated_in_place(block.reshape(-1, n))  # [pixels, N]
            labels[out] = (flat @ probs).argmax(-1).reshape(-1, across.shape[1])
        labels = np.ascontiguousarray(labels[:, :width])
        self.boundary_share = 1.0
        return labels


def _bands(axis: _Axis, block: int) -> list[tuple[slice, slice]]:
    """(output slice, source slice) per block of `block` output indices along an axis: the source
    indices from the block's first lo to its last hi, all that its bilinear weights touch."""
    n_dst = len(axis.lo)
    return [(slice(start, min(start + block, n_dst)),
             slice(int(axis.lo[start]), int(axis.hi[min(start + block, n_dst) - 1]) + 1))
            for start in range(0, n_dst, block)]


LABEL_KINDS = ("logits", "masks")


def label_tail(spec: dict | None):
    """The host label step a manifest's "labels" entry asks for, or None when the graphs output labels.

    Returns LogitLabels (call it with logits [1, C, h, w]) or MaskLabels (class logits, mask
    logits); either gives uint8 [H, W]. ValueError for an entry that is not one of the two forms
    in the module docstring (runtime.manifest checks it at load).
    """
    if spec is None or spec.get("computed", "graph") == "graph":
        return None
    if spec.get("computed") != "host" or spec.get("kind") not in LABEL_KINDS:
        raise ValueError(f"labels: expected computed 'graph' or 'host' with kind one of {LABEL_KINDS}, got {spec}")
    sizes = {}
    for key in ("scores_size", "size") + (("padded_size",) if spec["kind"] == "masks" else ()):
        value = spec.get(key)
        if (not isinstance(value, list) or len(value) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)):
            raise ValueError(f"labels: '{key}' must be [height, width] of positive ints, got {value!r}")
        sizes[key] = tuple(value)
    if spec["kind"] == "logits":
        if not isinstance(spec.get("align_corners"), bool):
            raise ValueError(f"labels: 'align_corners' must be true or false, got {spec.get('align_corners')!r}")
        return LogitLabels(sizes["scores_size"], sizes["size"], spec["align_corners"])
    if sizes["size"][0] > sizes["padded_size"][0] or sizes["size"][1] > sizes["padded_size"][1]:
        raise ValueError(f"labels: size {list(sizes['size'])} exceeds padded_size {list(sizes['padded_size'])}")
    return MaskLabels(sizes["scores_size"], sizes["padded_size"], sizes["size"])
