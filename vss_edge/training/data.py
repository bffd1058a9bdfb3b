"""Training data (numpy / OpenCV): synthetic clips with exact labels and flow, and real frames
of a static-camera video with person pseudo-labels from background subtraction.

- `SyntheticPool`: a pool of `vss_edge.synthetic` videos with seeds below
  `vss_edge.evaluation.HELD_OUT_SEED` (evaluation's seeds are at or above it), over the
  same people-free background evaluation uses (`vss_edge.evaluation.static_background`);
  frames are rendered on the fly, any (seed, t).
- `RealVideo`: the frames of a static-camera video (vtest.avi) resized to the training
  size, minus an excluded range (the sample clip's 100..159, which the demo shows), with
  pseudo-labels: the per-pixel median of the kept frames is the empty scene; a pixel whose
  colour differs from it by more than a threshold (after blur, opening and closing, blobs
  of at least `min_area` pixels) is a moving person; a band around each blob's border and
  smaller blobs are ignore (255), the rest background (0).
"""
from __future__ import annotations

import cv2
import numpy as np

IGNORE = 255


class SyntheticPool:
    """Synthetic videos, one per seed in [seed0, seed0 + count), sampled at random (seed, t)."""

    def __init__(self, height: int, width: int, num_classes: int, count: int = 64, seed0: int = 0,
                 max_t: int = 400, **config):
        from vss_edge.evaluation import HELD_OUT_SEED, static_background
        from vss_edge.synthetic import SyntheticConfig, SyntheticVideo

        if seed0 + count > HELD_OUT_SEED:
            raise ValueError(f"training seeds must stay below {HELD_OUT_SEED} (held out for evaluation)")
        cfg = SyntheticConfig(height=height, width=width, num_classes=num_classes, **config)
        bg = [static_background()]
        self.videos = [SyntheticVideo(cfg, seed=s, backgrounds=bg) for s in range(seed0, seed0 + count)]
        self.max_t = max_t

    def clip(self, rng: np.random.Generator, length: int):
        """`length` consecutive SyntheticFrames of a random video, from a random start."""
        video = self.videos[rng.integers(len(self.videos))]
        start = int(rng.integers(0, self.max_t))
        return [video.frame(start + i) for i in range(length)]


def pseudo_labels(frame: np.ndarray, background: np.ndarray, person: int, threshold: int = 30,
                  min_area: int = 40, band: int = 2) -> np.ndarray:
    """uint8 labels of one frame: `person` on moving blobs, 0 elsewhere, 255 on blob borders and specks."""
    d = np.abs(frame.astype(np.int16) - background.astype(np.int16)).max(-1).astype(np.uint8)
    fg = (cv2.GaussianBlur(d, (5, 5), 0) > threshold).astype(np.uint8)
    fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    fg = cv2.morphologyEx(fg, cv2.MORPH_CLOSE, np.ones((7, 7), np.uint8))
    n, comp, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
    big = np.zeros(n, bool)
    big[1:] = stats[1:, cv2.CC_STAT_AREA] >= min_area
    person_mask = big[comp]
    labels = np.zeros(frame.shape[:2], np.uint8)
    labels[fg > 0] = IGNORE  # specks: unsure
    k = np.ones((2 * band + 1, 2 * band + 1), np.uint8)
    edge = cv2.dilate(person_mask.astype(np.uint8), k) > cv2.erode(person_mask.astype(np.uint8), k)
    labels[person_mask] = person
    labels[edge] = IGNORE
    return labels


class RealVideo:
    """Frames of a static-camera video at (height, width), minus `exclude` = (start, stop), with pseudo-labels."""

    def __init__(self, path, height: int, width: int, person: int, exclude: tuple[int, int] | None = (100, 160),
                 median_step: int = 3):
        cap = cv2.VideoCapture(str(path))
        if not cap.isOpened():
            raise FileNotFoundError(f"cannot open video {path}")
        frames, index = [], []
        i = 0
        while True:
            ok, f = cap.read()
            if not ok:
                break
            if exclude is None or not exclude[0] <= i < exclude[1]:
                interp = cv2.INTER_AREA if f.shape[0] > height else cv2.INTER_LINEAR
                frames.append(cv2.resize(f, (width, height), interpolation=interp))
                index.append(i)
            i += 1
        cap.release()
        if len(frames) < 8:
            raise ValueError(f"{path}: only {len(frames)} usable frames")
        self.frames = np.stack(frames)
        self.index = np.array(index)
        self.background = np.median(self.frames[::median_step], axis=0).astype(np.uint8)
        self.labels = np.stack([pseudo_labels(f, self.background, person) for f in self.frames])
        # runs of consecutive video frames (the excluded range splits the video)
        self._breaks = np.flatnonzero(np.diff(self.index) != 1) + 1

    def clip(self, rng: np.random.Generator, length: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """`length` consecutive frames (never across the excluded range) and their pseudo-labels."""
        runs = np.split(np.arange(len(self.frames)), self._breaks)
        runs = [r for r in runs if len(r) >= length]
        run = runs[rng.integers(len(runs))]
        s = int(run[rng.integers(0, len(run) - length + 1)])
        return list(self.frames[s:s + length]), list(self.labels[s:s + length])
