"""Train TDNet's small configuration (TD4-PSP18 at ResNet base width 8) on CPU, as the paper trains
it, at a small scale.

One stage (`train`), end to end (paper Sec. 5, "Training & Testing Details"): each sample is
4 consecutive frames; frame j runs sub-network (o + j) mod 4 for a random order offset o (the
paper evaluates every order), the first three store their subsampled (q, k, v), and the last
frame's output head(LayerNorm(V_cur + attention propagation over the three stored frames)) is
supervised with the last frame's labels (cross-entropy). Mixed batches: synthetic clips with
exact labels and real clips with person pseudo-labels (ignore = 255).
Simplified vs the paper: no teacher network, so Eq. 6's two distillation terms are replaced by
cross-entropy of the last path's own output head(LayerNorm(V_m)) (weight 0.5, the paper's beta)
- the "grouped" term's subspace view against the labels instead of a teacher's sub-feature
output; no ImageNet initialisation; Adam instead of SGD with poly decay; a few hundred
iterations; no crops or scaling.

The checkpoint is a bare TDNet state_dict (the official Testing layout, pretrained1..4, psp1..4,
enc1..4, atn*, layer_norm1..4, head1..4) that `vss-edge export tdnet --checkpoint` reads.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from vss_edge import demo_weights
from vss_edge.models.common import Normalise
from vss_edge.models.tdnet.model import TDNet
from vss_edge.training.loop import (TrainingSettings, finish_run, log_progress, person_weighted_ce,
                                     schedule, start_run, to_tensors)

GROUPED_WEIGHT = 0.5  # the paper's beta, here on the last path's own output against the labels


@dataclass
class Settings(TrainingSettings):
    steps: int = 800
    batch: int = 4
    grouped_weight: float = GROUPED_WEIGHT


def _ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return person_weighted_ce(logits, labels, align_corners=True)


def clip_logits(model: TDNet, normalise: Normalise, frames: list[torch.Tensor], offset: int):
    """Run a clip of queue_length + 1 frames round robin from path `offset`; returns (full logits,
    the last path's own logits) of the last frame."""
    n = model.cfg.num_paths
    stored = []
    for j, image in enumerate(frames[:-1]):
        q, k, v = model.encode_stored((offset + j) % n, model.features((offset + j) % n, normalise(image).contiguous()))
        stored += [k, v] if j == 0 else [q, k, v]
    p = (offset + len(frames) - 1) % n
    z = model.features(p, normalise(frames[-1]).contiguous())
    q_cur, v_cur = model.encode_current(p, z)
    v_prop = model.propagate(p, *stored, q_cur, tuple(int(d) for d in z.shape))
    return model.head(p, v_cur + v_prop), model.head(p, v_cur)


def train(out_dir, s: Settings, video=None, exclude=(100, 160), quiet: bool = False) -> dict:
    """Train and write out_dir/{tdnet_small.pth, tdnet_small.json}."""
    from vss_edge.checkpoints import save_torch_atomic

    run = start_run(out_dir, s, video, exclude, quiet)
    data = run.data
    cfg = demo_weights.tdnet_config(s.height, s.width)
    model = TDNet(cfg).train()
    normalise = Normalise(cfg.normalisation, channel_order="RGB")
    opt = torch.optim.Adam(model.parameters(), lr=s.lr, weight_decay=5e-4)
    sched = schedule(opt, s.steps)
    rng = np.random.default_rng(s.seed + 2)
    length = cfg.queue_length + 1
    t0, losses = time.perf_counter(), []
    for step in range(1, s.steps + 1):
        clips = data.clips(s.batch, length)
        frames = [to_tensors([c[0][j] for c in clips]) for j in range(length)]
        target = torch.from_numpy(np.stack([c[1][-1] for c in clips]).astype(np.int64))
        full, own = clip_logits(model, normalise, frames, int(rng.integers(cfg.num_paths)))
        ce = _ce(full, target)
        loss = ce + s.grouped_weight * _ce(own, target) if s.grouped_weight else ce
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(ce.detach()))
        log_progress("tdnet", step, s.steps, float(np.mean(losses[-50:])), t0, quiet)
    model.eval()
    path = run.out_dir / demo_weights.TDNET_CHECKPOINT.name
    save_torch_atomic(model.state_dict(), path)
    run.report["tdnet"] = {"steps": s.steps, "seconds": time.perf_counter() - t0,
                           "final_ce": float(np.mean(losses[-50:])) if losses else None}
    return finish_run(run, "tdnet_small.json", [path])
