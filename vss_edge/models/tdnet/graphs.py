"""TDNet split into one static graph per sub-network path.

Graph `path{p}` (H x W input; h x w the stride-8 feature size; P = h*w; Ps the
number of positions after the stride-4 subsampling of stored frames; C the value
channels, 512 for TD4-PSP18 and 2048 for TD2-PSP50):

| inputs | outputs |
|---|---|
| image u8 [1,H,W,3] BGR | labels u8 [1,H,W] (argmax of the logits resized bilinearly, align_corners=True) |
| k0 [1,Ps,64], v0 [1,Ps,C]: the oldest stored frame | logits f32 [1,K,h,w] |
| TD4 only: q1, k1, v1 / q2, k2, v2, the two newer ones | q [1,Ps,64], k [1,Ps,64], v [1,Ps,C]: this frame, for later frames |
| history f32 [1]: 1 once the queue is full (3 frames TD4, 1 TD2), else 0 | |

The output is head(LayerNorm(v_cur + history * v_prop)); with history 0 that is the
official warm-up output head(LayerNorm(v_cur)) exactly.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from vss_edge.models.common import Normalise, labels_from_logits

OUTPUTS = ["labels", "logits", "q", "k", "v"]


def stored_names(queue_length: int) -> list[str]:
    """Names of the stored-frame inputs, oldest frame first (its q is never used)."""
    return ["k0", "v0"] + [f"{n}{i}" for i in range(1, queue_length) for n in ("q", "k", "v")]


def input_names(queue_length: int) -> list[str]:
    return ["image", *stored_names(queue_length), "history"]


class TDNetPathGraph(nn.Module):
    """One TDNet path: sub-network, attention propagation over three stored frames, head."""

    def __init__(self, model: nn.Module, path: int):
        super().__init__()
        self.model = model
        self.path = path
        self.normalise = Normalise(model.cfg.normalisation, channel_order="RGB")

    def forward(self, image, *stored_and_history):
        """(image, *stored, history) as named by input_names(queue_length)."""
        m, p = self.model, self.path
        *stored, history = stored_and_history
        z = m.features(p, self.normalise(image))
        q_cur, v_cur = m.encode_current(p, z)
        v_prop = m.propagate(p, *stored, q_cur, tuple(int(d) for d in z.shape))
        logits = m.head(p, v_cur + history.view(1, 1, 1, 1) * v_prop)
        q, k, v = m.encode_stored(p, z)
        return labels_from_logits(logits, m.cfg.label_size), logits, q, k, v


def path_graphs(model: nn.Module) -> dict[str, TDNetPathGraph]:
    """The exportable graph modules by bundle graph name: path0 .. path{N-1}."""
    return {f"path{p}": TDNetPathGraph(model, p) for p in range(model.cfg.num_paths)}


@torch.no_grad()
def empty_state(model: nn.Module, image: torch.Tensor) -> dict[str, torch.Tensor]:
    """Zero (q, k, v) with the shapes one frame stores (used while fewer than 3 are stored)."""
    graph = TDNetPathGraph(model, 0)
    z = model.features(0, graph.normalise(image))
    q, k, v = model.encode_stored(0, z)
    return {"q": torch.zeros_like(q), "k": torch.zeros_like(k), "v": torch.zeros_like(v)}
