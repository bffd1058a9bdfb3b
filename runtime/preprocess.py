"""Frame checks and resizing between the camera and the graphs (torch-free).

The graphs take uint8 [1, H, W, 3] BGR at the bundle resolution and normalise
in-graph; here a frame is only validated and, if its size differs, resized.
"""
from __future__ import annotations

import cv2
import numpy as np

from vss_edge.runtime.errors import FrameError


def check_frame(frame) -> None:
    """Raise FrameError unless frame is a uint8 numpy array of shape (H, W, 3), H and W >= 8."""
    if not isinstance(frame, np.ndarray):
        raise FrameError(f"frame must be a numpy array (H, W, 3) uint8 BGR, got {type(frame).__name__}")
    if frame.dtype != np.uint8:
        raise FrameError(f"frame dtype must be uint8 (BGR 0..255), got {frame.dtype}")
    if frame.ndim != 3:
        raise FrameError(f"frame must have shape (H, W, 3), got {frame.shape}")
    if frame.shape[2] != 3:
        raise FrameError(f"frame must have 3 channels (BGR), got {frame.shape[2]} (shape {frame.shape})")
    if frame.shape[0] < 8 or frame.shape[1] < 8:
        raise FrameError(f"frame is too small: {frame.shape[1]}x{frame.shape[0]} (shape {frame.shape}); "
                         f"need at least 8x8")


def to_graph_input(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    """Validated BGR frame (any size) -> uint8 [1, height, width, 3], bilinear resize if needed."""
    check_frame(frame)
    if frame.shape[:2] != (height, width):
        frame = cv2.resize(frame, (width, height), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(frame)[None]


def labels_to_frame(labels: np.ndarray, frame_shape: tuple[int, ...]) -> np.ndarray:
    """uint8 labels [1, H, W] or [H, W] -> [h, w] at the frame's size (nearest neighbour)."""
    labels = labels.reshape(labels.shape[-2:])
    h, w = frame_shape[:2]
    if labels.shape != (h, w):
        labels = cv2.resize(labels, (w, h), interpolation=cv2.INTER_NEAREST)
    return labels
