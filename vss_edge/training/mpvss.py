"""Train MPVSS's small configuration on CPU (variant 'small' at ResNet-18 base width 8 and
motion-encoder width 8), as the paper trains it, at a small scale.

Two stages (`train`), as the paper (Sec. 4.1 / appendix): the key-frame segmentor first, then
the flow module with the segmentor frozen.
1. Mask2Former on key frames: mixed batches (synthetic frames with exact labels, real frames
   with person pseudo-labels; 255 = ignore), the semantic set-prediction loss: each image's
   targets are one binary mask per class present; the N queries are matched to them by
   Hungarian matching (scipy's linear_sum_assignment, Mask2Former's matcher costs: class 2,
   mask BCE 5, dice 5), matched queries get class cross-entropy + mask BCE + dice (weights
   2, 5, 5), unmatched ones the "no object" class (eos_coef 0.1).
2. query-based flow module, segmentor frozen: a key frame and a current frame d = 1..4 frames
   later; the flow graph's per-query flows (from the key frame's queries) warp the key frame's
   mask logits (the exported warp, `warp_masks`), and the warped masks, with the key frame's
   class logits, get the same set-prediction loss against the current frame's labels (only the
   mask terms carry gradient: the classes are the frozen key frame's). On synthetic clips an
   auxiliary L1 (weight AUX_FLOW_WEIGHT) pulls the motion decoder's pixel-wise flow (the
   FlowNetS refinement's output, before the per-query fusion; read by a forward hook) to the
   exact flow from the current frame to the key frame (the generator's one-step backward flows
   composed), on the pixels where it is valid. The paper has only the mask loss.
Simplified vs the paper / Mask2Former: masks are compared on the whole 1/4 grid (labels
nearest-downsampled to it) instead of 12544 importance-sampled points; no deep supervision of
the intermediate decoder layers (the decoder returns only its last layer); no ImageNet or
Cityscapes initialisation; AdamW at lr 1e-3 with warm-up and cosine decay (Mask2Former: AdamW
1e-4, poly) for a few hundred iterations; no crops or scaling.

The checkpoint is the MPVSS layout `vss-edge export mpvss --checkpoint` reads (detectron2 .pth
{'model': state_dict (backbone.*, motion.*, sem_seg_head.*, criterion.empty_weight)},
`vss_edge.models.mpvss.checkpoints.save_mpvss_checkpoint`), with --variant small --backbone-width 8
--motion-width 8.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from vss_edge import demo_weights
from vss_edge.models.mpvss.graphs import MPVSS
from vss_edge.models.mpvss.motion import warp_masks
from vss_edge.training.data import IGNORE
from vss_edge.training.loop import (Batches, TrainingSettings, finish_run, log_progress,
                                     schedule, start_run, to_tensors)

CLASS_WEIGHT, MASK_WEIGHT, DICE_WEIGHT, EOS_COEF = 2.0, 5.0, 5.0, 0.1  # Mask2Former's
AUX_FLOW_WEIGHT = 1.0


@dataclass
class Settings(TrainingSettings):
    keyframe_steps: int = 500
    flow_steps: int = 1800  # 900 left it 2.8 mIoU behind copy one frame after the key frame (synthetic)
    batch: int = 4
    lr: float = 1e-3
    max_interval: int = 5
    aux_flow_weight: float = AUX_FLOW_WEIGHT
    threads: int = 2  # both cores of the 2-core machine: 1085 s with one thread, over the ~15-minute budget


def _targets(labels: torch.Tensor, size: tuple[int, int], num_classes: int):
    """Labels [B, H, W] -> per image (class ids [M], masks [M, h, w] float) and valid [B, h, w] on the mask grid."""
    small = F.interpolate(labels[:, None].float(), size=size, mode="nearest")[:, 0].long()
    out = []
    for lab in small:
        classes = [c for c in range(num_classes) if bool((lab == c).any())]
        out.append((torch.tensor(classes, dtype=torch.long),
                    torch.stack([(lab == c).float() for c in classes]) if classes else torch.zeros(0, *size)))
    return out, (small != IGNORE).float()


def _pair_costs(logits: torch.Tensor, masks: torch.Tensor, valid: torch.Tensor):
    """[N, P] mask logits vs [M, P] binary masks on valid pixels -> (BCE [N, M], dice [N, M]) mean per pixel."""
    v = valid[None]
    n_valid = valid.sum().clamp(min=1)
    pos = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none") * v
    neg = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none") * v
    bce = (pos @ masks.T + neg @ (1 - masks).T) / n_valid
    p = logits.sigmoid() * v
    dice = 1 - (2 * p @ masks.T + 1) / (p.sum(-1)[:, None] + masks.sum(-1)[None] + 1)
    return bce, dice


def set_loss(class_logits: torch.Tensor, mask_logits: torch.Tensor, targets, valid: torch.Tensor,
             class_terms: bool = True) -> torch.Tensor:
    """Mask2Former's semantic set-prediction loss, Hungarian matching per image.

    class_logits [B, N, K+1], mask_logits [B, N, h, w] (the 1/4 grid), targets from `_targets`."""
    from scipy.optimize import linear_sum_assignment

    b, n, k1 = class_logits.shape
    empty_weight = torch.ones(k1)
    empty_weight[-1] = EOS_COEF
    total = mask_logits.new_zeros(())
    for i in range(b):
        classes, masks = targets[i]
        logits = mask_logits[i].flatten(1)
        vmask = valid[i].flatten()
        target_classes = torch.full((n,), k1 - 1, dtype=torch.long)
        if len(classes):
            m = masks.flatten(1) * vmask
            bce, dice = _pair_costs(logits, m, vmask)
            prob = class_logits[i].softmax(-1)[:, classes]
            cost = MASK_WEIGHT * bce + DICE_WEIGHT * dice - CLASS_WEIGHT * prob
            rows, cols = linear_sum_assignment(cost.detach().numpy())
            rows, cols = torch.as_tensor(rows), torch.as_tensor(cols)
            total = total + MASK_WEIGHT * bce[rows, cols].mean() + DICE_WEIGHT * dice[rows, cols].mean()
            target_classes[rows] = classes[cols]
        if class_terms:
            total = total + CLASS_WEIGHT * F.cross_entropy(class_logits[i], target_classes, weight=empty_weight)
    return total / b


def _segment(model: MPVSS, images: torch.Tensor):
    x = model.pad(model.normalise(images).contiguous())
    return model.sem_seg_head(model.backbone(x))


def train_keyframe(model: MPVSS, data: Batches, s: Settings, quiet: bool) -> dict:
    model.backbone.train()
    model.sem_seg_head.train()
    params = list(model.backbone.parameters()) + list(model.sem_seg_head.parameters())
    opt = torch.optim.AdamW(params, lr=s.lr, weight_decay=0.05)
    sched = schedule(opt, s.keyframe_steps)
    t0, losses = time.perf_counter(), []
    for step in range(1, s.keyframe_steps + 1):
        clips = data.clips(s.batch, 1)
        img, lab = to_tensors([c[0][0] for c in clips], [c[1][0] for c in clips])
        class_logits, mask_logits, _ = _segment(model, img)
        targets, valid = _targets(lab, tuple(mask_logits.shape[-2:]), model.cfg.num_classes)
        loss = set_loss(class_logits, mask_logits, targets, valid)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 10.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        log_progress("keyframe", step, s.keyframe_steps, float(np.mean(losses[-50:])), t0, quiet)
    return {"steps": s.keyframe_steps, "seconds": time.perf_counter() - t0,
            "final_loss": float(np.mean(losses[-50:])) if losses else None,
            "matching": "hungarian (scipy linear_sum_assignment)"}


def composed_flow(flows: list[np.ndarray], valids: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """One-step backward flows of frames k+1..t (each frame's to its previous) -> flow of frame t to
    frame k and its validity: f = f_t + f_{t-1}(x + f_t) + ..., valid where every step is."""
    flow, valid = flows[-1].copy(), valids[-1].copy()
    h, w = flow.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    for f, v in zip(flows[-2::-1], valids[-2::-1]):
        mx, my = xs + flow[..., 0], ys + flow[..., 1]
        flow = flow + cv2.remap(f, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        valid = valid & (cv2.remap(v.astype(np.uint8), mx, my, cv2.INTER_NEAREST, borderValue=0) > 0)
    return flow, valid


def warp_identity_flow(cfg) -> torch.Tensor:
    """[2, h8, w8]: the flow (the motion decoder's units) with which `warp_masks` returns its masks
    unchanged. The warp normalises the sampling grid by W and H (not W-1, H-1) and samples with
    align_corners=True (the official convention), so a zero flow samples 1/4-grid pixel x at
    x (W-1)/W: every mask shrinks towards the top-left corner by up to one 1/4-grid pixel. The
    identity needs x/(W-1) there: a ramp, at the 1/8 grid's pixel centres (x4 = 2 x8 + 0.5) and
    halved (the warp resizes the flow to the 1/4 grid and doubles it)."""
    h8, w8 = cfg.flow_size
    h4, w4 = 2 * h8, 2 * w8
    x = (2 * torch.arange(w8, dtype=torch.float32) + 0.5) / (2 * (w4 - 1))
    y = (2 * torch.arange(h8, dtype=torch.float32) + 0.5) / (2 * (h4 - 1))
    return torch.stack([x[None].expand(h8, w8), y[:, None].expand(h8, w8)])


def flow_target(flow: np.ndarray, valid: np.ndarray, cfg) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact flow [H, W, 2] in input pixels -> the flow [2, h8, w8] with which `warp_masks` moves the
    key frame's masks exactly by it, and its validity [1, h8, w8]. The warp moves a 1/4-grid pixel
    by 2 x flow x W4/(W4-1) (grid normalised by W4, align_corners=True), i.e. 8 x flow x W4/(W4-1)
    input pixels, from the identity `warp_identity_flow` (likewise in y with H4)."""
    ph, pw = cfg.padded_size
    h8, w8 = cfg.flow_size
    f = np.zeros((ph, pw, 2), np.float32)
    v = np.zeros((ph, pw), np.float32)
    f[:flow.shape[0], :flow.shape[1]] = flow
    v[:valid.shape[0], :valid.shape[1]] = valid
    f = cv2.resize(f, (w8, h8), interpolation=cv2.INTER_AREA) / 8.0
    v = cv2.resize(v, (w8, h8), interpolation=cv2.INTER_AREA) > 0.999
    gain = torch.tensor([2 * w8 / (2 * w8 - 1), 2 * h8 / (2 * h8 - 1)])[:, None, None]
    target = torch.from_numpy(f).permute(2, 0, 1) * gain + warp_identity_flow(cfg)
    return target, torch.from_numpy(v.astype(np.float32))[None]


def train_flow(model: MPVSS, data: Batches, s: Settings, quiet: bool) -> dict:
    """Segmentor frozen; the flow module learns to warp the key frame's masks onto the current frame's labels."""
    model.backbone.eval()
    model.sem_seg_head.eval()
    model.motion.train()
    for p in list(model.backbone.parameters()) + list(model.sem_seg_head.parameters()):
        p.requires_grad_(False)
    params = list(model.motion.parameters())
    opt = torch.optim.AdamW(params, lr=s.lr, weight_decay=1e-4)
    sched = schedule(opt, s.flow_steps)
    captured = {}
    hook = model.motion.decoder.predict_flow.register_forward_hook(lambda m, i, o: captured.__setitem__("flow", o))
    rng = np.random.default_rng(s.seed + 1)
    n = model.cfg.num_queries
    t0, losses, auxes = time.perf_counter(), [], []
    try:
        for step in range(1, s.flow_steps + 1):
            d = int(rng.integers(1, s.max_interval))  # frames after the key frame: 1 .. interval-1
            clips = data.clips(s.batch, d + 1)
            key, _ = to_tensors([c[0][0] for c in clips], [c[1][0] for c in clips])
            cur, cur_lab = to_tensors([c[0][d] for c in clips], [c[1][d] for c in clips])
            with torch.no_grad():
                class_logits, mask_logits, queries = _segment(model, key)
                key_image = model.flow_image(key)
            pair = torch.cat([model.flow_image(cur), key_image], dim=1)
            flow = model.motion(pair, queries.transpose(0, 1))  # [B*N, 2, h8, w8]
            warped = torch.cat([warp_masks(mask_logits[i:i + 1], flow[i * n:(i + 1) * n], sampler="grid_sample") for i in range(len(clips))])
            targets, valid = _targets(cur_lab, tuple(warped.shape[-2:]), model.cfg.num_classes)
            loss = set_loss(class_logits, warped, targets, valid, class_terms=False)
            synth = [j for j, c in enumerate(clips) if c[2] is not None]
            aux = torch.zeros(())
            if synth and s.aux_flow_weight:
                tf, tv = zip(*(flow_target(*composed_flow(clips[j][2][1:], clips[j][3][1:]), model.cfg) for j in synth))
                tf, tv = torch.stack(tf), torch.stack(tv)
                pixel_flow = captured["flow"][synth]
                aux = ((pixel_flow - tf).abs() * tv).sum() / tv.sum().clamp(min=1) / 2
            total = loss + s.aux_flow_weight * aux
            opt.zero_grad()
            total.backward()
            torch.nn.utils.clip_grad_norm_(params, 10.0)
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            auxes.append(float(aux.detach()))
            log_progress("flow", step, s.flow_steps, float(np.mean(losses[-50:])), t0, quiet)
    finally:
        hook.remove()
        for p in model.parameters():
            p.requires_grad_(True)
    return {"steps": s.flow_steps, "seconds": time.perf_counter() - t0,
            "final_mask_loss": float(np.mean(losses[-50:])) if losses else None,
            "final_aux_flow_l1": float(np.mean(auxes[-50:])) if auxes else None,
            "aux_flow_unit": "mean |error| per component, 1/8-grid pixels (the pixel-wise flow vs the exact one)"}


def train(out_dir, s: Settings, video=None, exclude=(100, 160), quiet: bool = False) -> dict:
    """Train both stages and write out_dir/{mpvss_small.pth, mpvss_small.json}."""
    from vss_edge.models.mpvss.checkpoints import save_mpvss_checkpoint

    run = start_run(out_dir, s, video, exclude, quiet)
    data, report = run.data, run.report
    model = MPVSS(demo_weights.mpvss_config(s.height, s.width))
    report["keyframe"] = train_keyframe(model, data, s, quiet)
    report["flow"] = train_flow(model, data, s, quiet)
    model.eval()
    path = run.out_dir / demo_weights.MPVSS_CHECKPOINT.name
    save_mpvss_checkpoint(model, path)
    return finish_run(run, "mpvss_small.json", [path])
