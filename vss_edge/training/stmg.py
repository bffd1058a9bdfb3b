"""Train STMG's small configuration on CPU (DDRNet-23-slim at stem width 8), as the paper trains it,
at a small scale.

Two stages (`train`):
1. key DDRNet: cross-entropy on mixed batches (synthetic frames with exact labels, real frames
   with person pseudo-labels), logits at 1/8 upsampled to the labels (align_corners=False, as
   DDRNet). The paper starts from the official Cityscapes DDRNet; there is none here.
2. non-key DDRNet (initialised from the key one) and the mask generator, on pairs of adjacent
   frames with the previous one a fixed key frame (the paper's limitation section: "training is
   performed only on two adjacent frames: a fixed key frame for the previous frame and a
   trainable non-key frame for the current frame"). Blocks are gated by a relaxed Bernoulli
   sample of the keep probabilities (temperature 0.5); features are blended with the key frame's
   by the spatial mask (Eq. 11), then the non-key head. Loss: cross-entropy on the current frame
   + Eq. 9's BCE + dice (Eq. 10) between the spatial mask and the ground-truth distortion map +
   a sparsity prior on the keep probabilities.
Simplified vs the paper: the distortion map is where the exact (or pseudo-) labels of the two
frames differ, on the 1/8 grid (the paper distils it from a strong segmentation model's maps of
both frames); the sparsity prior is KL(Bernoulli(phi_k) || Bernoulli(0.5)) per block instead of
Eq. 6's Gaussian prior on DBB's beta; Adam instead of SGD, a few hundred iterations, no crops.

The checkpoint is the STMG layout `vss-edge export stmg --checkpoint` reads (key.*, nonkey.*,
mask_generator.*; `vss_edge.models.stmg.checkpoints.save_stmg_checkpoint`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from vss_edge import demo_weights
from vss_edge.models.stmg.graphs import STMG
from vss_edge.models.stmg.mask_generator import aggregate
from vss_edge.training.loop import (Batches, TrainingSettings, finish_run, fit_single_frames, log_progress,
                                     person_weighted_ce, schedule, start_run, to_tensors)

KEEP_PRIOR = 0.5  # the sparsity prior's keep probability per block
TEMPERATURE = 0.5  # of the relaxed Bernoulli gates


@dataclass
class Settings(TrainingSettings):
    keyframe_steps: int = 900
    nonkey_steps: int = 400
    sparsity_weight: float = 0.05


def _ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return person_weighted_ce(logits, labels, align_corners=False)


def distortion_target(prev: torch.Tensor, cur: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[B, H, W] labels of two frames -> [B, 1, h, w]: 1 where any label in the cell changed."""
    changed = (prev != cur).float()[:, None]
    return (F.adaptive_max_pool2d(changed, size) > 0).float()


def dice_loss(m: torch.Tensor, n: torch.Tensor, kappa: float = 1.0) -> torch.Tensor:
    """Eq. 10, per sample, averaged."""
    dims = (1, 2, 3)
    return (1 - (2 * (m * n).sum(dims) + kappa) / ((m * m).sum(dims) + (n * n).sum(dims) + kappa)).mean()


def relaxed_bernoulli(p: torch.Tensor, temperature: float) -> torch.Tensor:
    u = torch.rand_like(p).clamp(1e-6, 1 - 1e-6)
    logits = torch.log(p) - torch.log1p(-p) + torch.log(u) - torch.log1p(-u)
    return torch.sigmoid(logits / temperature)


def bernoulli_kl(p: torch.Tensor, prior: float) -> torch.Tensor:
    p = p.clamp(1e-6, 1 - 1e-6)
    return (p * torch.log(p / prior) + (1 - p) * torch.log((1 - p) / (1 - prior))).mean()


def _normalised(model: STMG, image: torch.Tensor) -> torch.Tensor:
    """The graphs' in-graph normalisation, made contiguous: uint8 NHWC permuted is a channels-last
    tensor, and DDRNet's backward on one aborts the process (heap corruption) in torch 2.13 on CPU."""
    return model.normalise(image).contiguous()


def train_key(model: STMG, data: Batches, s: Settings, quiet: bool) -> dict:
    return fit_single_frames(model.key, lambda img: model.key(_normalised(model, img)), _ce, data,
                             s.keyframe_steps, s.batch, s.lr, "key", quiet)


def train_nonkey(model: STMG, data: Batches, s: Settings, quiet: bool) -> dict:
    model.nonkey.load_state_dict(model.key.state_dict())
    model.key.eval()
    model.nonkey.train()
    model.mask_generator.train()
    params = list(model.nonkey.parameters()) + list(model.mask_generator.parameters())
    opt = torch.optim.Adam(params, lr=s.lr)
    sched = schedule(opt, s.nonkey_steps)
    mg = model.mask_generator
    t0, losses, keeps = time.perf_counter(), [], []
    for step in range(1, s.nonkey_steps + 1):
        clips = data.clips(s.batch, 2)
        prev, prev_lab = to_tensors([c[0][0] for c in clips], [c[1][0] for c in clips])
        cur, cur_lab = to_tensors([c[0][1] for c in clips], [c[1][1] for c in clips])
        xp, xc = _normalised(model, prev), _normalised(model, cur)
        with torch.no_grad():
            prev_features = model.key.features(xp)
        t, e = mg.encoder(xp), mg.encoder(xc)
        spatial_mask, keep_probability, _ = mg(t, e)
        gates = relaxed_bernoulli(keep_probability, TEMPERATURE)
        features = model.nonkey.features(xc, gates=gates)
        logits = model.nonkey.head(aggregate(features, prev_features, spatial_mask))
        n = distortion_target(prev_lab, cur_lab, tuple(spatial_mask.shape[-2:]))
        m = spatial_mask.clamp(1e-6, 1 - 1e-6)
        recon = F.binary_cross_entropy(m, n) + dice_loss(m, n)
        ce = _ce(logits, cur_lab)
        loss = ce + recon + s.sparsity_weight * bernoulli_kl(keep_probability, KEEP_PRIOR)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(ce.detach()))
        keeps.append(float(keep_probability.detach().mean()))
        log_progress("nonkey", step, s.nonkey_steps, float(np.mean(losses[-50:])), t0, quiet)
    return {"steps": s.nonkey_steps, "seconds": time.perf_counter() - t0,
            "final_ce": float(np.mean(losses[-50:])) if losses else None,
            "final_mean_keep_probability": float(np.mean(keeps[-50:])) if keeps else None}


def train(out_dir, s: Settings, video=None, exclude=(100, 160), quiet: bool = False) -> dict:
    """Train both stages and write out_dir/{stmg_small.pth, stmg_small.json}."""
    from vss_edge.models.stmg.checkpoints import save_stmg_checkpoint

    run = start_run(out_dir, s, video, exclude, quiet)
    data, report = run.data, run.report
    model = STMG(demo_weights.stmg_config(s.height, s.width))
    report["key"] = train_key(model, data, s, quiet)
    report["nonkey"] = train_nonkey(model, data, s, quiet)
    model.eval()
    path = run.out_dir / demo_weights.STMG_CHECKPOINT.name
    save_stmg_checkpoint(model, path)
    return finish_run(run, "stmg_small.json", [path])
