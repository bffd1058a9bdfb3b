"""Train GSVNet's small configuration on CPU, as the paper trains it, at a small scale.

Three stages (`train`):
1. keyframe net: SwiftNet-R18 (base width 16) on the keyframe path the bundle runs
   (normalise, RGB, resize to keyframe_scale, logits at 1/4 upsampled to the labels),
   cross-entropy on mixed batches: synthetic frames with exact labels and real frames
   with person pseudo-labels (ignore = 255). The paper starts from a pre-trained SwiftNet
   (Cityscapes); there is none here, so it is trained from scratch.
2. flow net: FlowLight on synthetic frame pairs, supervised with the exact backward flow
   in GSVNet's convention (the net's output, resized to 1/8 with align_corners=True, is
   4x the displacement in 1/8-resolution pixels: warp() divides it by 4), L1 on the pixels
   whose flow is valid (not dis-occluded).
3. propagation framework end to end (paper Sec. 3.5/4.1): keyframe net frozen; a key
   frame, then d = 1..interval-1 frames propagated recurrently (flow -> warp -> guided
   spatially-varying conv with the intra net), cross-entropy on the final output, on
   synthetic clips and real clips (pseudo-labels). The exact-flow L1 stays on as an
   auxiliary term on synthetic clips (the paper has only the final cross-entropy).
Simplified vs the paper: Adam instead of SGD (lr 0.002, momentum 0.9, decay 0.992 / 100
iterations), a few hundred iterations instead of full schedules, no random patch crops.

Checkpoints are written in the official layouts (`vss_edge.models.gsvnet.checkpoints.save_official_checkpoints`):
a bare SwiftNet state_dict and the GSVNet .tar, which `vss-edge export gsvnet
--keyframe-checkpoint K --checkpoint G` loads.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

from vss_edge import demo_weights
from vss_edge.models.common import resize
from vss_edge.models.gsvnet.graphs import GSVNet
from vss_edge.models.gsvnet.propagation import warp
from vss_edge.training.loop import (Batches, TrainingSettings, finish_run, fit_single_frames, log_progress,
                                     person_weighted_ce, schedule, start_run, to_tensors)


@dataclass
class Settings(TrainingSettings):
    keyframe_steps: int = 900
    flow_steps: int = 1500
    propagation_steps: int = 400
    max_interval: int = 5


def keyframe_logits(model: GSVNet, image: torch.Tensor) -> torch.Tensor:
    """The keyframe graph's path up to SwiftNet's logits (1/4 of the keyframe size)."""
    x = model.normalise(image)
    return model.segnet(resize(x.flip(1), model.cfg.keyframe_size, align_corners=True))


def _ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return person_weighted_ce(logits, labels, align_corners=True)  # GSVNet resizes with align_corners=True


def flow_target(flow: np.ndarray, valid: np.ndarray, small: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact backward flow [B, H, W, 2] (full-resolution pixels) -> GSVNet's flow at 1/8 [B, 2, h, w] and a
    validity mask [B, 1, h, w]. The 1/8 grid samples the full frame with align_corners=True, and
    warp() moves by flow / 4 pixels of that grid, so target = 4 * displacement * (h-1)/(H-1)."""
    H, W = flow.shape[1:3]
    h, w = small
    f = torch.from_numpy(flow).permute(0, 3, 1, 2)
    v = torch.from_numpy(valid.astype(np.float32))[:, None]
    f = resize(f, small, align_corners=True)
    f = f * torch.tensor([4.0 * (w - 1) / (W - 1), 4.0 * (h - 1) / (H - 1)]).view(1, 2, 1, 1)
    v = (resize(v, small, align_corners=True) > 0.999).float()
    return f, v


def predicted_flow(model: GSVNet, image_small: torch.Tensor, prev_small: torch.Tensor) -> torch.Tensor:
    return resize(model.flownet(torch.cat((image_small, prev_small), 1)), model.cfg.small_size, align_corners=True)


def small_image(model: GSVNet, image: torch.Tensor) -> torch.Tensor:
    return resize(model.normalise(image), model.cfg.small_size, align_corners=True)


def train_keyframe(model: GSVNet, data: Batches, s: Settings, quiet: bool) -> dict:
    return fit_single_frames(model.segnet, lambda img: keyframe_logits(model, img), _ce, data,
                             s.keyframe_steps, s.batch, s.lr, "keyframe", quiet)


def _flow_loss(model, imgs, flows, valids, prev_small=None):
    """L1 between predicted and exact flow on valid pixels, frame 1 vs frame 0 of each clip."""
    cur = small_image(model, imgs[1])
    prev = small_image(model, imgs[0]) if prev_small is None else prev_small
    target, valid = flow_target(flows, valids, model.cfg.small_size)
    pred = predicted_flow(model, cur, prev)
    return ((pred - target).abs() * valid).sum() / valid.sum().clamp(min=1) / 2


def train_flow(model: GSVNet, data: Batches, s: Settings, quiet: bool) -> dict:
    model.flownet.train()
    opt = torch.optim.Adam(model.flownet.parameters(), lr=s.lr)
    sched = schedule(opt, s.flow_steps)
    t0, losses = time.perf_counter(), []
    for step in range(1, s.flow_steps + 1):
        clips = data.clips(2 * s.batch, 2, real_ok=False)
        imgs = [to_tensors([c[0][i] for c in clips]) for i in range(2)]
        flows = np.stack([c[2][1] for c in clips])
        valids = np.stack([c[3][1] for c in clips])
        loss = _flow_loss(model, imgs, flows, valids)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        log_progress("flow", step, s.flow_steps, float(np.mean(losses[-50:])), t0, quiet)
    return {"steps": s.flow_steps, "seconds": time.perf_counter() - t0,
            "final_l1": float(np.mean(losses[-50:])) if losses else None,
            "unit": "mean |error| per component, GSVNet flow units (4 x 1/8-grid pixels)"}


def train_propagation(model: GSVNet, data: Batches, s: Settings, quiet: bool) -> dict:
    """End to end: frozen keyframe net, trainable flow + intra + guide, CE on the last propagated frame."""
    model.segnet.eval()
    model.flownet.train()
    model.gsv.train()
    params = list(model.flownet.parameters()) + list(model.gsv.parameters())
    opt = torch.optim.Adam(params, lr=s.lr)
    sched = schedule(opt, s.propagation_steps)
    rng = np.random.default_rng(s.seed + 1)
    t0, losses = time.perf_counter(), []
    for step in range(1, s.propagation_steps + 1):
        d = int(rng.integers(1, s.max_interval))  # frames after the key frame: 1 .. interval-1
        clips = data.clips(s.batch, d + 1)
        imgs = [to_tensors([c[0][i] for c in clips]) for i in range(d + 1)]
        target = torch.from_numpy(np.stack([c[1][d] for c in clips]).astype(np.int64))
        synth = [j for j, c in enumerate(clips) if c[2] is not None]
        with torch.no_grad():
            logits = resize(keyframe_logits(model, imgs[0]), model.cfg.small_size, align_corners=True)
        prev_small = small_image(model, imgs[0])
        aux = 0.0
        for i in range(1, d + 1):
            cur_small = small_image(model, imgs[i])
            flow = predicted_flow(model, cur_small, prev_small)
            if synth:
                tf, tv = flow_target(np.stack([clips[j][2][i] for j in synth]),
                                     np.stack([clips[j][3][i] for j in synth]), model.cfg.small_size)
                aux = aux + ((flow[synth] - tf).abs() * tv).sum() / tv.sum().clamp(min=1) / 2 / d
            logits = model.gsv(warp(logits, flow, sampler="grid_sample"), cur_small)
            prev_small = cur_small
        ce = _ce(logits, target)
        loss = ce + 0.1 * aux
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(ce.detach()))
        log_progress("propagation", step, s.propagation_steps, float(np.mean(losses[-50:])), t0, quiet)
    return {"steps": s.propagation_steps, "seconds": time.perf_counter() - t0,
            "final_ce": float(np.mean(losses[-50:])) if losses else None}


def train(out_dir, s: Settings, video=None, exclude=(100, 160), quiet: bool = False) -> dict:
    """Train all three stages and write out_dir/{gsvnet_small_swiftnet.pth, gsvnet_small.tar, gsvnet_small.json}."""
    from vss_edge.models.gsvnet.checkpoints import save_official_checkpoints

    run = start_run(out_dir, s, video, exclude, quiet)
    data, report = run.data, run.report
    model = GSVNet(demo_weights.gsvnet_config(s.height, s.width))
    report["keyframe"] = train_keyframe(model, data, s, quiet)
    report["flow"] = train_flow(model, data, s, quiet)
    report["propagation"] = train_propagation(model, data, s, quiet)
    model.eval()
    key_path = run.out_dir / demo_weights.GSVNET_KEYFRAME.name
    gsv_path = run.out_dir / demo_weights.GSVNET_PROPAGATION.name
    save_official_checkpoints(model, key_path, gsv_path,
                              args=argparse.Namespace(method="gsvnet", **asdict(s), classes=demo_weights.class_names()))
    return finish_run(run, "gsvnet_small.json", [key_path, gsv_path])
