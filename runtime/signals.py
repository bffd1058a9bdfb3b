"""Cheap scheduler signals the runtime computes itself (torch-free).

Methods without a mask generator (GSVNet, MPVSS) still support the distortion-aware
scheduler: their distortion is the mean absolute difference of consecutive frames at
low resolution, a stand-in for STMG's learned spatial mask. The distortion-aware rule
compares each frame's distortion with the previous ones only, so the scale of the
signal does not matter, only how it changes.
"""
from __future__ import annotations

import cv2
import numpy as np

SIGNAL_SIZE = (64, 32)  # (width, height) the frames are averaged down to


class FrameDifference:
    """distortion(image) -> float in [0, 1]: mean |gray_t - gray_{t-1}| / 255 at 64x32 (area average).

    image: uint8 [1, H, W, 3] BGR (the graph input). The first frame after reset gives 0.
    Costs well under a millisecond at 512x1024.
    """

    def __init__(self):
        self.previous: np.ndarray | None = None

    def reset(self) -> None:
        self.previous = None

    def __call__(self, image: np.ndarray) -> float:
        gray = cv2.cvtColor(np.ascontiguousarray(image[0]), cv2.COLOR_BGR2GRAY)
        small = cv2.resize(gray, SIGNAL_SIZE, interpolation=cv2.INTER_AREA).astype(np.float32)
        previous, self.previous = self.previous, small
        if previous is None:
            return 0.0
        return float(np.mean(np.abs(small - previous))) / 255.0
