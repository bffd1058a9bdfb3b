"""PyTorch reference pipelines: ground truth for parity with the ONNX pipelines.

The same models and the same schedulers, driven by loops written after the official
code (GSVNet's trainer forward, TDNet's Testing forward) rather than by the runtime's
programs, so orchestration and export are both checked. Needs torch; the runtime
never imports this module.
"""
from __future__ import annotations

import numpy as np
import torch

from vss_edge.runtime.preprocess import labels_to_frame, to_graph_input
from vss_edge.runtime.schedulers import FrameInfo, Scheduler
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


class STMGReference:
    """STMG in PyTorch, written after the paper (Sec. 3, Algorithm 1) rather than the
    runtime's program: Enc_f on every frame (t of frame i is e of frame i-1), the mask
    generator and the scheduler pick key frames; non-key frames run the non-key DDRNet
    skipping the dropped blocks in Python, blend with the previous frame's features
    (Eq. 11) and run the non-key head.

    step(frame BGR uint8 HxWx3) -> (labels uint8 at the frame's size, is_key).
    keep_override: bool [K] to force which blocks run on non-key frames (None: the generator's).
    """

    def __init__(self, model, scheduler, keep_override=None):
        self.model = model.eval()
        self.scheduler = scheduler
        self.keep_override = keep_override
        self.reset()

    def reset(self) -> None:
        self.scheduler.reset()
        self.prev_encoding = self.prev_features = None
        self.index = self.since_key = 0

    @torch.no_grad()
    def step(self, frame: np.ndarray) -> tuple[np.ndarray, bool]:
        from vss_edge.models.stmg.mask_generator import aggregate

        m, cfg = self.model, self.model.cfg
        x = m.normalise(torch.from_numpy(to_graph_input(frame, cfg.height, cfg.width)))
        e = m.mask_generator.encoder(x)
        t = self.prev_encoding if self.prev_encoding is not None else torch.zeros_like(e)
        spatial_mask, keep_probability, distortion = m.mask_generator(t, e)
        signals = {"distortion": float(distortion[0])}
        is_key = self.prev_features is None or self.scheduler.is_key(FrameInfo(self.index, self.since_key, signals))
        if is_key:
            features = m.key.features(x)
            logits = m.key.head(features)
        else:
            keep = self.keep_override if self.keep_override is not None \
                else (keep_probability[0] > cfg.keep_threshold).tolist()
            features = aggregate(m.nonkey.features(x, [bool(k) for k in keep]), self.prev_features, spatial_mask)
            logits = m.nonkey.head(features)
        self.prev_encoding, self.prev_features = e, features
        self.index += 1
        self.since_key = 1 if is_key else self.since_key + 1
        labels = torch.nn.functional.interpolate(logits, size=cfg.label_size, mode="bilinear", align_corners=False)
        return labels_to_frame(labels.argmax(1).to(torch.uint8).numpy(), frame.shape), is_key


class MPVSSReference:
    """MPVSS in PyTorch, driven like the official mpvss.py inference rather than the runtime's
    program: on a key frame Mask2Former runs and its class logits, last-layer mask logits,
    queries and the key image are kept (self.mem); on the other frames the motion module
    estimates the flows from (current, key) with the key queries, every key mask is warped
    with its own flow and merged with the key class probabilities. 'copy' repeats the key
    labels; 'optical_flow' warps every mask with one flow.

    step(frame BGR uint8 HxWx3) -> (labels uint8 at the frame's size, is_key).
    """

    def __init__(self, model, scheduler):
        from vss_edge.runtime.signals import FrameDifference

        self.model = model.eval()
        self.scheduler = scheduler
        self.frame_difference = FrameDifference()  # the distortion signal, for the distortion scheduler
        self.reset()

    def reset(self) -> None:
        self.scheduler.reset()
        self.frame_difference.reset()
        self.mem = None
        self.index = self.since_key = 0

    @torch.no_grad()
    def step(self, frame: np.ndarray) -> tuple[np.ndarray, bool]:
        from vss_edge.models.mpvss.motion import warp_masks

        m, cfg = self.model, self.model.cfg
        graph_input = to_graph_input(frame, cfg.height, cfg.width)
        image = torch.from_numpy(graph_input)
        signals = {"distortion": self.frame_difference(graph_input)} \
            if "distortion" in getattr(self.scheduler, "signals_needed", ()) else {}
        is_key = self.mem is None or self.scheduler.is_key(FrameInfo(self.index, self.since_key, signals))
        if is_key:
            class_logits, mask_logits, queries = m.segment(image)
            labels = m.labels(class_logits, mask_logits)
            self.mem = {"class_logits": class_logits, "mask_logits": mask_logits, "queries": queries,
                        "ref_img": m.flow_image(image), "labels": labels}
        elif cfg.propagation == "copy":
            labels = self.mem["labels"]
        else:
            pair = torch.cat([m.flow_image(image), self.mem["ref_img"]], dim=1)
            flow = m.motion(pair, self.mem["queries"].transpose(0, 1))
            labels = m.labels(self.mem["class_logits"], warp_masks(self.mem["mask_logits"], flow))
        self.index += 1
        self.since_key = 1 if is_key else self.since_key + 1
        return labels_to_frame(labels.numpy(), frame.shape), is_key
