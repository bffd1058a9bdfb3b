"""Train TDNet's small configuration (TD4-PSP18 at ResNet base width 8) on CPU, as the official
Training code trains it, at a small scale.

Two stages (`train`), as the official recipe (Training/ptsemseg/models/td4_psp, train.py):
1. A per-frame PSPNet-18 (`FramePSPNet`: one ResNet-18, pyramid pooling over every channel, head
   2C -> C/4 -> classes) on single frames, `pretrain_steps`. Every path starts from it
   (`start_paths_from`, the official `pretrained_init` / `split_psp_dict`): the same backbone and
   pyramid pooling, and path p's head takes the per-frame head with its first conv cut to the
   channels path p keeps, so two complementary paths' heads sum to the per-frame head's first conv.
   It then stays frozen as the teacher of stage 2.
2. TDNet end to end (paper Sec. 5): each sample is 4 frames, consecutive ones 1..`max_gap` apart
   (the official loader's interval 2, counted back from the labelled last frame); frame j runs
   sub-network (o + j) mod 4 for a random order offset o, the first three store their subsampled
   (q, k, v), and the last frame's output head(LayerNorm(V_cur + attention propagation over the
   three stored frames)) gets cross-entropy with its labels, plus `distill_weight` x KL to the
   per-frame PSPNet's logits (Eq. 6's full-feature distillation; the official teacher is a
   PSPNet-101). Mixed batches: synthetic clips with exact labels and real clips with person
   pseudo-labels (ignore = 255).

The attention aid (`attention_weight`, not in the paper): at this scale, with the labels (and the
teacher) alone, the attention stays near uniform (the propagated values are then near constant over
the image, the LayerNorm over (h, w) cancels them, and round robin scores what each path scores
alone: measured 39.8 vs 39.6 synthetic). A second loss, -log(attention mass on stored positions of
the query position's class), read from each attention map of the chain on the clip's labels, makes
it attend to where the same thing was (README: round robin +4.0 over each path alone on synthetic
video, and 7 points ahead of the Add ablation trained the same way). `aggregation="add"` trains the
paper's "Add" ablation (Fig. 6a): the stored values added at the same positions, no attention.
`pretrain_steps=0, distill_weight=0, max_gap=1` is the earlier from-scratch recipe.

Simplified vs the paper: the teacher is the per-frame PSPNet-18 trained here (not a PSPNet-101),
and Eq. 6's grouped term is the cross-entropy of the last path's own output head(LayerNorm(V_m))
against the labels (weight 0.5, the paper's beta); no ImageNet initialisation, no auxiliary heads;
Adam instead of SGD with poly decay; a few hundred iterations; no crops or scaling.

The checkpoint is a bare TDNet state_dict (the official Testing layout, pretrained1..4, psp1..4,
enc1..4, atn*, layer_norm1..4, head1..4) that `vss-edge export tdnet --checkpoint` reads.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from vss_edge import demo_weights
from vss_edge.models.common import Normalise
from vss_edge.models.tdnet.model import TDNet
from vss_edge.models.tdnet.modules import FCNHead, PyramidPooling
from vss_edge.models.tdnet.resnet import resnet18
from vss_edge.training.data import IGNORE
from vss_edge.training.loop import (TrainingSettings, finish_run, fit_single_frames, log_progress,
                                     person_weighted_ce, schedule, start_run, to_tensors)

GROUPED_WEIGHT = 0.5  # the paper's beta, here on the last path's own output against the labels
AGGREGATIONS = ("apm", "add")  # attention propagation, or the paper's "Add" ablation (Fig. 6a)
ATTENTION_WEIGHT = 1.0  # the attention maps' label-agreement loss (a training aid at our scale, not the paper's)


@dataclass
class Settings(TrainingSettings):
    steps: int = 800
    batch: int = 4
    grouped_weight: float = GROUPED_WEIGHT
    attention_weight: float = ATTENTION_WEIGHT
    aggregation: str = "apm"
    pretrain_steps: int = 300  # a per-frame PSPNet-18 first, the paths start from it (official pretrained_init); 0: from scratch
    pretrain_batch: int = 8
    distill_weight: float = 1.0  # KL to that per-frame PSPNet's logits (Eq. 6's full-feature term), as a teacher
    max_gap: int = 2  # frames between a clip's frames drawn from 1..max_gap (the official loader's interval)

    def __post_init__(self):
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {self.aggregation!r}")
        if self.max_gap < 1 or self.pretrain_steps < 0 or self.pretrain_batch < 1:
            raise ValueError(f"max_gap and pretrain_batch must be >= 1 and pretrain_steps >= 0, got "
                             f"{self.max_gap}, {self.pretrain_batch}, {self.pretrain_steps}")


def _ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return person_weighted_ce(logits, labels, align_corners=True)


class FramePSPNet(nn.Module):
    """The per-frame PSPNet-18 TD4's paths start from (the official `pretrained_init` splits a trained
    PSPNet-18): one dilated ResNet-18, pyramid pooling keeping every channel ([B, 2C, h, w]) and the
    head 2C -> C/4 -> classes. forward: normalised RGB [B, 3, H, W] -> logits [B, K, h, w]."""

    def __init__(self, model: TDNet):
        super().__init__()
        cfg = model.cfg
        if cfg.variant != "td4_psp18":
            raise ValueError("the per-frame PSPNet start is TD4-PSP18's")
        channels = model.psp1.conv1[0].in_channels
        self.pretrained = resnet18(cfg.backbone_width)
        self.psp = PyramidPooling(channels, path_num=1, pid=0)
        self.head = FCNHead(2 * channels, cfg.num_classes, chn_down=8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.psp(self.pretrained(x)))


def start_paths_from(model: TDNet, frame_net: FramePSPNet) -> None:
    """Official `pretrained_init` (split_psp_dict): every path takes the per-frame backbone and pyramid
    pooling; path p's head takes the per-frame head with its first conv cut to the channels path p's
    pyramid pooling keeps (pid = p % 2: its half of the backbone's channels and of each level's)."""
    c = frame_net.psp.conv1[0].in_channels
    head = frame_net.head.state_dict()
    w = head["conv5.0.weight"]
    for p in range(model.cfg.num_paths):
        pid = p % 2
        getattr(model, f"pretrained{p + 1}").load_state_dict(frame_net.pretrained.state_dict())
        getattr(model, f"psp{p + 1}").load_state_dict(frame_net.psp.state_dict())
        keep = list(range(pid * c // 2, (pid + 1) * c // 2))
        for level in range(4):
            start = c + level * c // 4 + pid * c // 8
            keep += list(range(start, start + c // 8))
        getattr(model, f"head{p + 1}").load_state_dict({**head, "conv5.0.weight": w[:, keep].clone()})


def pretrain_frame_net(model: TDNet, normalise: Normalise, data, s: "Settings", quiet: bool) -> tuple[FramePSPNet, dict]:
    """Train the per-frame PSPNet-18 on single frames (person-weighted cross-entropy), `s.pretrain_steps`;
    returns it in eval mode and the stage's report."""
    net = FramePSPNet(model)
    report = fit_single_frames(net, lambda img: net(normalise(img).contiguous()), _ce, data, s.pretrain_steps,
                               s.pretrain_batch, s.lr, "per-frame pspnet", quiet)
    return net.eval(), report


def _gapped(clips, length: int, max_gap: int, rng: np.random.Generator):
    """Clips of 1 + (length - 1) * max_gap frames -> `length` frames each, consecutive ones 1..max_gap
    apart, counted back from the last (the official loader: f3 = f4 - randint(1, interval), ...). TDNet
    reads frames and labels only: a synthetic frame's one-step flow is kept as it is."""
    out = []
    for c in clips:
        idx = [len(c[0]) - 1]
        for _ in range(length - 1):
            idx.insert(0, idx[0] - int(rng.integers(1, max_gap + 1)))
        out.append(tuple(None if part is None else [part[i] for i in idx] for part in c))
    return out


def _kl(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """KL(softmax(teacher) || softmax(student)) per pixel, mean (the official KLDive_loss, temperature 1)."""
    return F.kl_div(F.log_softmax(student, 1), F.log_softmax(teacher, 1), log_target=True, reduction="none").sum(1).mean()


def _add_maps(hq: int, wq: int, hs: int, ws: int, step: int) -> torch.Tensor:
    """[hq*wq, hs*ws] one-hot: each query position takes the stored position over it (query grid
    `step` times finer), the 'Add' aggregation's fixed 'attention' (no motion compensation)."""
    iy = torch.clamp((torch.arange(hq) + step // 2) // step, max=hs - 1)
    ix = torch.clamp((torch.arange(wq) + step // 2) // step, max=ws - 1)
    idx = (iy[:, None] * ws + ix[None, :]).flatten()
    return F.one_hot(idx, hs * ws).float()


def propagate_add(model: TDNet, p: int, stored: list[torch.Tensor], z_shape) -> torch.Tensor:
    """The 'Add' ablation (paper Fig. 6a): model.propagate with each attention map replaced by
    the same-position map (the stored frames' values added where they lie, no alignment); the
    Attention modules' 1x1 convs (phi) are kept."""
    chain = model.attention_chain(p)
    h, w = int(z_shape[-2]), int(z_shape[-1])
    hs, ws = -(-h // 4), -(-w // 4)
    same = _add_maps(hs, ws, hs, ws, 1)
    up = _add_maps(h, w, hs, ws, 4)

    def phi(name, attn, v):
        conv = getattr(model, name).fc[0].conv
        return F.linear(torch.matmul(attn, v), conv.weight.flatten(1), conv.bias)

    v = stored[1]
    for step, name in enumerate(chain[:-1]):
        v = phi(name, same, v) + stored[4 + 3 * step]
    out = phi(chain[-1], up, v)
    return out.permute(0, 2, 1).reshape(out.shape[0], -1, h, w)


def clip_logits(model: TDNet, normalise: Normalise, frames: list[torch.Tensor], offset: int,
                aggregation: str = "apm"):
    """Run a clip of queue_length + 1 frames round robin from path `offset`; returns (full logits,
    the last path's own logits) of the last frame."""
    n = model.cfg.num_paths
    stored = []
    for j, image in enumerate(frames[:-1]):
        p = (offset + j) % n
        z = model.features(p, normalise(image).contiguous())
        q, k, v = model.encode_stored(p, z)
        stored += [k, v] if j == 0 else [q, k, v]
    p = (offset + len(frames) - 1) % n
    z = model.features(p, normalise(frames[-1]).contiguous())
    q_cur, v_cur = model.encode_current(p, z)
    shape = tuple(int(d) for d in z.shape)
    if aggregation == "add":
        v_prop = propagate_add(model, p, stored, shape)
    else:
        v_prop = model.propagate(p, *stored, q_cur, shape)
    return model.head(p, v_cur + v_prop), model.head(p, v_cur)


class AttentionMaps:
    """Forward hooks that keep every attention map (softmax(q k^T / 8), before its dropout) in call order."""

    def __init__(self, model: TDNet):
        self.maps: list[torch.Tensor] = []
        self._handles = [m.attn_dropout.register_forward_hook(lambda mod, i, o: self.maps.append(i[0]))
                         for name, m in model.named_children() if name.startswith("atn")]

    def close(self):
        for h in self._handles:
            h.remove()


def attention_label_loss(maps: list[torch.Tensor], labels: list[torch.Tensor]) -> torch.Tensor:
    """-log(attention mass on stored positions of the query position's class), mean over the
    labelled query positions with such a position. maps: the chain's attention maps in order
    ([B, Pq, Ps]); labels: the clip's label maps [B, H, W] (255 = ignore)."""
    total, count = maps[0].new_zeros(()), 0
    for i, attn in enumerate(maps):
        src = labels[i][:, ::32, ::32].flatten(1)
        last = i == len(maps) - 1
        tgt = (labels[i + 1][:, ::8, ::8] if last else labels[i + 1][:, ::32, ::32]).flatten(1)
        match = (tgt[:, :, None] == src[:, None, :]) & (src != IGNORE)[:, None, :]
        ok = match.any(-1) & (tgt != IGNORE)
        if ok.any():
            mass = (attn * match).sum(-1).clamp_min(1e-6)
            total = total - torch.log(mass)[ok].mean()
            count += 1
    return total / max(count, 1)


def train(out_dir, s: Settings, video=None, exclude=(100, 160), quiet: bool = False) -> dict:
    """Train and write out_dir/{tdnet_small.pth, tdnet_small.json}."""
    from vss_edge.checkpoints import save_torch_atomic

    run = start_run(out_dir, s, video, exclude, quiet)
    data = run.data
    cfg = demo_weights.tdnet_config(s.height, s.width)
    model = TDNet(cfg).train()
    normalise = Normalise(cfg.normalisation, channel_order="RGB")
    teacher = None
    if s.pretrain_steps:
        teacher, run.report["per_frame_pspnet"] = pretrain_frame_net(model, normalise, data, s, quiet)
        start_paths_from(model, teacher)
        for prm in teacher.parameters():
            prm.requires_grad_(False)
    opt = torch.optim.Adam(model.parameters(), lr=s.lr, weight_decay=5e-4)
    sched = schedule(opt, s.steps)
    rng = np.random.default_rng(s.seed + 2)
    length = cfg.queue_length + 1
    hooks = AttentionMaps(model) if s.attention_weight and s.aggregation == "apm" else None
    t0, losses, atn_losses = time.perf_counter(), [], []
    try:
        for step in range(1, s.steps + 1):
            clips = data.clips(s.batch, length if s.max_gap == 1 else 1 + (length - 1) * s.max_gap)
            if s.max_gap > 1:
                clips = _gapped(clips, length, s.max_gap, rng)
            frames = [to_tensors([c[0][j] for c in clips]) for j in range(length)]
            labels = [torch.from_numpy(np.stack([c[1][j] for c in clips]).astype(np.int64)) for j in range(length)]
            target = labels[-1]
            if hooks:
                hooks.maps.clear()
            full, own = clip_logits(model, normalise, frames, int(rng.integers(cfg.num_paths)), s.aggregation)
            ce = _ce(full, target)
            loss = ce + s.grouped_weight * _ce(own, target) if s.grouped_weight else ce
            if teacher is not None and s.distill_weight:
                with torch.no_grad():
                    t_logits = teacher(normalise(frames[-1]).contiguous())
                loss = loss + s.distill_weight * _kl(full, t_logits)
            if hooks:
                la = attention_label_loss(hooks.maps, labels)
                loss = loss + s.attention_weight * la
                atn_losses.append(float(la.detach()))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(ce.detach()))
            log_progress("tdnet", step, s.steps, float(np.mean(losses[-50:])), t0, quiet)
            if not quiet and atn_losses and step % 50 == 0:
                print(f"    attention loss {np.mean(atn_losses[-50:]):.3f}", flush=True)
    finally:
        if hooks:
            hooks.close()
    model.eval()
    path = run.out_dir / demo_weights.TDNET_CHECKPOINT.name
    save_torch_atomic(model.state_dict(), path)
    run.report["tdnet"] = {"steps": s.steps, "seconds": time.perf_counter() - t0,
                           "final_ce": float(np.mean(losses[-50:])) if losses else None}
    return finish_run(run, "tdnet_small.json", [path])


@torch.no_grad()
def path_scores(model: TDNet, sequences, aggregation: str = "apm") -> dict:
    """Score a TDNet model in PyTorch as `vss-edge eval` scores its bundle (evaluation.evaluate_round_robin):
    frame t runs path t mod num_paths from each sequence's start, the first queue_length frames
    (warm-up) are not scored, and per path the confusion matrices give its mIoU; beside it each
    path alone (head(LayerNorm(V_cur)), no propagation). `aggregation` 'add' scores the Add
    ablation (`propagate_add`) instead of attention propagation.

    sequences: evaluation.LabelledSequence (BGR uint8 frames, uint8 labels or None; resized as the
    runtime does). Returns {"method": {...}, "single_path": {...}}, each {"mean", "min", "by_path"}."""
    import cv2

    from vss_edge.calibration.metrics import confusion, miou

    model.eval()
    cfg = model.cfg
    n, k = cfg.num_paths, cfg.num_classes
    normalise = Normalise(cfg.normalisation, channel_order="RGB")
    cms = {who: [np.zeros((k, k), np.int64) for _ in range(n)] for who in ("method", "single_path")}

    def labels_of(logits, shape):
        up = F.interpolate(logits, size=(cfg.height, cfg.width), mode="bilinear", align_corners=True)
        lab = up.argmax(1)[0].numpy().astype(np.uint8)
        return lab if lab.shape == shape else cv2.resize(lab, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)

    for seq in sequences:
        fifo = []
        for t, (frame, gt) in enumerate(zip(seq.frames, seq.labels)):
            p = t % n
            if frame.shape[:2] != (cfg.height, cfg.width):
                frame = cv2.resize(frame, (cfg.width, cfg.height), interpolation=cv2.INTER_LINEAR)
            z = model.features(p, normalise(torch.from_numpy(frame[None].copy())).contiguous())
            q_cur, v_cur = model.encode_current(p, z)
            if len(fifo) == cfg.queue_length and gt is not None:
                stored = [x for j, qkv in enumerate(fifo) for x in (qkv[1:] if j == 0 else qkv)]
                shape = tuple(int(d) for d in z.shape)
                v_prop = (propagate_add(model, p, stored, shape) if aggregation == "add"
                          else model.propagate(p, *stored, q_cur, shape))
                cms["method"][p] += confusion(gt, labels_of(model.head(p, v_cur + v_prop), gt.shape), k)
                cms["single_path"][p] += confusion(gt, labels_of(model.head(p, v_cur), gt.shape), k)
            fifo = (fifo + [model.encode_stored(p, z)])[-cfg.queue_length:]
    out = {}
    for who, per_path in cms.items():
        by_path = [miou(cm) for cm in per_path]
        out[who] = {"mean": float(np.mean(by_path)), "min": float(min(by_path)), "by_path": by_path}
    return out
