"""The PyTorch reference pipeline: ground truth for parity with the ONNX pipeline.

The same models (the graph modules before export) and the same scheduler, driven
by a loop written after the official GSVNet trainer's forward: key frames run the
keyframe net, other frames warp the previous logits by the flow and refine them.
Needs torch; the runtime never imports this module.
"""
from __future__ import annotations

import numpy as np
import torch

from runtime.preprocess import labels_to_frame, to_graph_input
from runtime.schedulers import FrameInfo, Scheduler
from vss_edge.models.gsvnet.graphs import GSVNet


class GSVNetReference:
    """step(frame BGR uint8 HxWx3) -> (labels uint8 at the frame's size, is_key)."""

    def __init__(self, model: GSVNet, scheduler: Scheduler):
        self.model = model.eval()
        self.graphs = model.graphs()
        self.scheduler = scheduler
        self.reset()

    def reset(self) -> None:
        self.scheduler.reset()
        self.prev_logits = self.prev_small = None
        self.index = self.since_key = 0

    @torch.no_grad()
    def step(self, frame: np.ndarray) -> tuple[np.ndarray, bool]:
        cfg = self.model.cfg
        image = torch.from_numpy(to_graph_input(frame, cfg.height, cfg.width))
        is_key = self.prev_logits is None or self.scheduler.is_key(FrameInfo(self.index, self.since_key))
        if is_key:
            logits, labels, small = self.graphs["keyframe"](image)
        else:
            flow, small = self.graphs["flow"](image, self.prev_small)
            logits, labels = self.graphs["propagation"](self.prev_logits, small, flow)
        self.prev_logits, self.prev_small = logits, small
        self.index += 1
        self.since_key = 1 if is_key else self.since_key + 1
        return labels_to_frame(labels.numpy(), frame.shape), is_key
