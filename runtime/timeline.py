"""Per-frame latency timeline of a run, drawn as a PNG (torch-free: numpy and OpenCV only).

`Timeline(graphs, warmup, capacity)` takes one FrameResult at a time, as RunStats does: the first
`warmup` are skipped. Memory is bounded, so a camera can run for days: it keeps at most `capacity`
frames; when full it drops every other kept frame and doubles `stride`, so it always holds every
stride-th measured frame of the whole run (the first of each stretch of `stride` frames) and the
picture spans all of it. Key frames and the slowest total_ms are kept exactly per stretch, so
thinning loses neither a key frame nor a spike.

`to_png(title)` draws one stacked bar per kept frame: x = frame index, y = milliseconds, split
into the time in each graph (in ONNX Runtime; one colour per graph, in `graphs` order: the
manifest's) and "host" = total_ms minus all graph time (preprocessing, orchestration and
postprocessing outside ONNX Runtime). A red strip under the axis marks the stretches with a key
frame; once thinned, a thin dark line above a bar reaches its stretch's slowest frame. Where more
frames than pixel columns are kept, a column shows its slowest stretch.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

CAPACITY = 4000  # frames kept (about 100 kB with three graphs)
SIZE = (1200, 500)  # width, height in pixels
LEFT, RIGHT, TOP, BOTTOM = 70, 20, 76, 62  # margins around the plot area
PALETTE = ((180, 119, 31), (14, 127, 255), (44, 160, 44), (189, 103, 148), (75, 86, 140), (194, 119, 227),
           (34, 189, 188), (207, 190, 23))  # BGR, one per graph (cycled)
HOST, PEAK = (170, 170, 170), (60, 60, 60)
KEY = (40, 39, 214)
GRID, BLACK = (232, 232, 232), (0, 0, 0)
FONT = cv2.FONT_HERSHEY_SIMPLEX


def _nice_step(span: float, ticks: int) -> float:
    """The 1, 2 or 5 x 10^k step that cuts span into about `ticks` intervals."""
    raw = max(span, 1e-9) / ticks
    mag = 10 ** math.floor(math.log10(raw))
    return next(m * mag for m in (1, 2, 5, 10) if raw <= m * mag * 1.0000001)


def _text(img, text: str, x: int, y: int, align: str = "left", scale: float = 0.45) -> int:
    """Draw ASCII text with its baseline at y, left-, centre- or right-aligned on x; returns its width."""
    text = text.encode("ascii", "replace").decode()
    (tw, _), _ = cv2.getTextSize(text, FONT, scale, 1)
    x -= {"left": 0, "centre": tw // 2, "right": tw}[align]
    cv2.putText(img, text, (x, y), FONT, scale, BLACK, 1, cv2.LINE_AA)
    return tw


class Timeline:
    """Per-frame times of a run in bounded memory; to_png draws them (see the module docstring)."""

    def __init__(self, graphs, warmup: int = 0, capacity: int = CAPACITY):
        if capacity < 2:
            raise ValueError(f"capacity must be at least 2, got {capacity}")
        self.graphs = tuple(graphs)
        self.warmup, self.capacity = int(warmup), int(capacity)
        self.seen = self.frames = self.count = 0  # results added, measured (after warm-up), kept
        self.stride = 1  # a kept frame stands for this many consecutive measured frames
        self.last_index: int | None = None
        self.index = np.zeros(capacity, np.int64)  # frame index of each kept frame
        self.ms = np.zeros((capacity, len(self.graphs) + 1), np.float32)  # per graph, then host
        self.keys = np.zeros(capacity, np.int64)  # key frames in each kept frame's stretch
        self.peak = np.zeros(capacity, np.float32)  # the slowest total_ms in each stretch

    def add(self, result) -> None:
        self.seen += 1
        if self.seen <= self.warmup:
            return
        ordinal, self.frames = self.frames, self.frames + 1
        self.last_index = int(result.index)
        while ordinal // self.stride >= self.capacity:
            self._thin()
        slot = ordinal // self.stride
        if slot == self.count:  # the first frame of a new stretch: kept
            graph_ms = [float(result.timings_ms.get(name, 0.0)) for name in self.graphs]
            host = float(result.total_ms) - sum(float(ms) for ms in result.timings_ms.values())
            self.index[slot], self.ms[slot], self.keys[slot] = result.index, graph_ms + [max(0.0, host)], 0
            self.peak[slot] = 0.0
            self.count += 1
        self.keys[slot] += bool(result.is_key)
        self.peak[slot] = max(self.peak[slot], float(result.total_ms))

    def _thin(self) -> None:
        """Keep every other kept frame, in place; stretches merge in pairs (key counts add, peaks max)."""
        n, half = self.count, (self.count + 1) // 2
        self.keys[:half] = np.add.reduceat(self.keys[:n], np.arange(0, n, 2))
        self.peak[:half] = np.maximum.reduceat(self.peak[:n], np.arange(0, n, 2))
        self.index[:half], self.ms[:half] = self.index[0:n:2].copy(), self.ms[0:n:2].copy()
        self.count, self.stride = half, self.stride * 2

    def to_png(self, title: str, size: tuple[int, int] = SIZE) -> bytes:
        """The picture (see the module docstring) as PNG bytes; size = (width, height) in pixels."""
        ok, buf = cv2.imencode(".png", self.render(title, size))
        if not ok:
            raise ValueError("OpenCV could not encode the timeline as PNG")
        return buf.tobytes()

    def render(self, title: str, size: tuple[int, int] = SIZE) -> np.ndarray:
        """The picture as a BGR uint8 array of shape (height, width, 3)."""
        w, h = size
        img = np.full((h, w, 3), 255, np.uint8)
        x0, x1, y_top, y0 = LEFT, w - RIGHT, TOP, h - BOTTOM  # plot area; y0 is the axis
        n = self.count
        first, end = (int(self.index[0]), self.last_index + 1) if n else (0, 1)
        stacks = np.cumsum(self.ms[:n], axis=1)  # each segment's top, bottom to top
        peaks = np.maximum(self.peak[:n], stacks[:, -1])
        peak = float(peaks.max()) if n and peaks.max() > 0 else 1.0
        step = _nice_step(peak, 5)
        ticks = math.ceil(peak / step - 1e-9)

        def px(i) -> int:
            return int(round(x0 + (i - first) * (x1 - x0) / (end - first)))

        def py(ms) -> int:
            return int(round(y0 - ms * (y0 - y_top) / (ticks * step)))

        for k in range(ticks + 1):  # grid and y ticks
            cv2.line(img, (x0 - 4, py(k * step)), (x1, py(k * step)), GRID if k else BLACK, 1)
            _text(img, f"{round(k * step, 6):g}", x0 - 8, py(k * step) + 5, "right")
        _text(img, "ms", x0 - 8, y_top - 14, "right")
        colours = [PALETTE[i % len(PALETTE)] for i in range(len(self.graphs))] + [HOST]
        for j in np.argsort(peaks, kind="stable"):  # slowest last: on top in a shared column
            a, b = px(self.index[j]), px(min(int(self.index[j]) + self.stride, end))
            pad = (b - a) // 8
            a, b = a + pad, max(a + pad, b - pad - 1)
            lo = 0.0
            for colour, top in zip(colours, stacks[j]):
                if py(top) < py(lo):
                    cv2.rectangle(img, (a, py(top)), (b, py(lo) - 1), colour, -1)
                lo = top
            if py(peaks[j]) < py(lo) - 1:  # a slower frame in the stretch than the one drawn
                cv2.line(img, ((a + b) // 2, py(peaks[j])), ((a + b) // 2, py(lo) - 1), PEAK, 1)
            if self.keys[j]:
                cv2.rectangle(img, (a, y0 + 4), (b, y0 + 11), KEY, -1)
        cv2.line(img, (x0, y0), (x1, y0), BLACK, 1)
        cv2.line(img, (x0, y0), (x0, y_top), BLACK, 1)
        _text(img, "key", x0 - 8, y0 + 13, "right", 0.38)
        xstep = max(1, int(_nice_step(end - first, 10)))
        for i in range(math.ceil(first / xstep) * xstep, end, xstep):  # x ticks
            cv2.line(img, (px(i), y0 + 13), (px(i), y0 + 17), BLACK, 1)
            _text(img, str(i), px(i), y0 + 32, "centre")
        kept = f"; 1 in {self.stride} drawn, dark line: the slowest of its {self.stride}" if self.stride > 1 else ""
        _text(img, f"frame index ({self.frames} frames measured{kept})", (x0 + x1) // 2, h - 10, "centre")
        _text(img, title, w // 2, 28, "centre", 0.6)
        x = x0
        for colour, name in zip(colours + [KEY], self.graphs + ("host (outside ONNX Runtime)", "key frame")):
            cv2.rectangle(img, (x, 44), (x + 16, 54), colour, -1)
            x += 24 + _text(img, name, x + 22, 54) + 18
        return img
