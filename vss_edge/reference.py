"""PyTorch reference pipelines: ground truth for parity with the ONNX pipelines.

The same models and the same schedulers, driven by loops written after the official
code (GSVNet's trainer forward, TDNet's Testing forward) rather than by the runtime's
programs, so orchestration and export are both checked. Needs torch; the runtime
never imports this module.
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


class TDNetReference:
    """TDNet in PyTorch, driven like the official Testing forward: frame i runs path
    scheduler.path(i); a FIFO of the last L frames' stored (q, k, v) (L = 3 for TD4,
    1 for TD2); until it is full, frames use only their own values.

    step(frame BGR uint8 HxWx3) -> (labels uint8 at the frame's size, path).
    """

    def __init__(self, model, scheduler):
        from vss_edge.models.common import Normalise

        self.model = model.eval()
        self.normalise = Normalise(model.cfg.normalisation, channel_order="RGB")
        self.scheduler = scheduler
        self.reset()

    def reset(self) -> None:
        self.scheduler.reset()
        self.queue: list[tuple] = []  # (q, k, v), oldest first
        self.index = 0

    @torch.no_grad()
    def step(self, frame: np.ndarray) -> tuple[np.ndarray, int]:
        from vss_edge.models.common import labels_from_logits

        m, cfg = self.model, self.model.cfg
        p = self.scheduler.path(FrameInfo(self.index, self.index))
        z = m.features(p, self.normalise(torch.from_numpy(to_graph_input(frame, cfg.height, cfg.width))))
        q_cur, v_cur = m.encode_current(p, z)
        length = cfg.queue_length
        if len(self.queue) < length:
            logits = m.head(p, v_cur)
        else:
            stored = list(self.queue[0][1:]) + [t for entry in self.queue[1:] for t in entry]
            logits = m.head(p, m.propagate(p, *stored, q_cur, tuple(z.shape)) + v_cur)
        self.queue = (self.queue + [m.encode_stored(p, z)])[-length:]
        self.index += 1
        return labels_to_frame(labels_from_logits(logits, cfg.label_size).numpy(), frame.shape), p
