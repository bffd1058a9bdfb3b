"""What every trainer shares: common settings, the run's set-up and report, batches of mixed
synthetic / real clips, uint8 frames to tensors, the learning-rate schedule, the person-weighted
cross-entropy and progress lines."""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vss_edge import demo_weights
from vss_edge.training.data import IGNORE, RealVideo, SyntheticPool

PERSON_WEIGHT = 4.0  # people cover ~1.6% of the real frames: weigh their pixels up


@dataclass
class TrainingSettings:
    """What every trainer's Settings has; a trainer adds its steps and loss weights (and may
    change a default by declaring the field again). Each field is a --flag of
    `python -m vss_edge.training METHOD`."""

    height: int = demo_weights.HEIGHT
    width: int = demo_weights.WIDTH
    batch: int = 8
    lr: float = 2e-3
    real_fraction: float = 0.5  # share of each batch from the real video (when there is one)
    seed: int = 0
    threads: int = 1
    synthetic_videos: int = 64


def to_tensors(images, labels=None):
    """uint8 BGR frames [H, W, 3] -> uint8 [B, H, W, 3] (and labels -> int64 [B, H, W])."""
    img = torch.from_numpy(np.stack(images))
    if labels is None:
        return img
    return img, torch.from_numpy(np.stack(labels).astype(np.int64))


class Batches:
    """Mixed synthetic / real clips of a given length.

    settings: any trainer's Settings (height, width, seed, synthetic_videos, real_fraction).
    """

    def __init__(self, settings, real: RealVideo | None):
        self.s = settings
        self.rng = np.random.default_rng(settings.seed)
        self.pool = SyntheticPool(settings.height, settings.width, demo_weights.SYNTHETIC_CLASSES,
                                  count=settings.synthetic_videos, seed0=0)
        self.real = real

    def clips(self, n: int, length: int, real_ok: bool = True):
        """n clips: lists of (images [length], labels [length], flows or None, valids or None)."""
        out = []
        n_real = int(round(n * self.s.real_fraction)) if (self.real is not None and real_ok) else 0
        for i in range(n):
            if i < n_real:
                imgs, labs = self.real.clip(self.rng, length)
                if self.rng.random() < 0.5:
                    imgs, labs = [np.ascontiguousarray(a[:, ::-1]) for a in imgs], [np.ascontiguousarray(a[:, ::-1]) for a in labs]
                out.append((imgs, labs, None, None))
            else:
                fr = self.pool.clip(self.rng, length)
                out.append(([f.image for f in fr], [f.labels for f in fr], [f.flow for f in fr], [f.valid for f in fr]))
        return out


def schedule(opt, total: int):
    """Linear warm-up over the first 5% of the steps, then cosine decay to 0."""
    warm = max(1, total // 20)
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: min(1.0, (i + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(i, total) / max(total, 1))))


def fit_single_frames(net: torch.nn.Module, logits_of, loss_of, data: Batches, steps: int, batch: int, lr: float,
                      stage: str, quiet: bool) -> dict:
    """Train a per-frame segmenter on single frames of `data`: Adam (weight decay 5e-4), `schedule`,
    loss_of(logits_of(uint8 images [B, H, W, 3]), int64 labels [B, H, W]) per step. net: the module
    whose parameters learn (set to train mode here). Returns the stage's report (steps, seconds,
    final loss: the mean of the last 50)."""
    net.train()
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=5e-4)
    sched = schedule(opt, steps)
    t0, losses = time.perf_counter(), []
    for step in range(1, steps + 1):
        clips = data.clips(batch, 1)
        img, lab = to_tensors([c[0][0] for c in clips], [c[1][0] for c in clips])
        loss = loss_of(logits_of(img), lab)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        log_progress(stage, step, steps, float(np.mean(losses[-50:])), t0, quiet)
    return {"steps": steps, "seconds": time.perf_counter() - t0,
            "final_loss": float(np.mean(losses[-50:])) if losses else None}


def person_weighted_ce(logits: torch.Tensor, labels: torch.Tensor, align_corners: bool) -> torch.Tensor:
    """Cross-entropy of logits [B, C, h, w], resized bilinearly to the labels [B, H, W] (with the
    method's align_corners), person pixels weighted PERSON_WEIGHT, IGNORE pixels left out."""
    up = F.interpolate(logits, size=tuple(labels.shape[-2:]), mode="bilinear", align_corners=align_corners)
    weight = torch.ones(up.shape[1])
    weight[demo_weights.PERSON] = PERSON_WEIGHT
    return F.cross_entropy(up, labels, weight=weight, ignore_index=IGNORE)


def log_progress(stage: str, step: int, total: int, loss: float, t0: float, quiet: bool) -> None:
    """A progress line every 50 steps and at the end (unless quiet)."""
    if not quiet and (step % 50 == 0 or step == total):
        print(f"  {stage} {step}/{total} loss {loss:.3f} ({time.perf_counter() - t0:.0f} s)", flush=True)


@dataclass
class Run:
    """One training run: where it writes, its batches, its report so far, when it started."""

    out_dir: Path
    data: Batches
    report: dict
    started: float


def start_run(out_dir, s: TrainingSettings, video=None, exclude=(100, 160), quiet: bool = False) -> Run:
    """Seed torch, set its threads, create out_dir, load the real video's pseudo-labelled frames
    (outside `exclude`) if `video` is given, and start the report with the settings."""
    torch.set_num_threads(s.threads)
    torch.manual_seed(s.seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    real = None
    if video is not None:
        real = RealVideo(video, s.height, s.width, demo_weights.PERSON, exclude=exclude)
        if not quiet:
            print(f"real video {video}: {len(real.frames)} frames (excluded {exclude}), person pixels "
                  f"{(real.labels == demo_weights.PERSON).mean():.1%}", flush=True)
    report = {"settings": asdict(s), "video": None if video is None else str(video),
              "excluded_frames": list(exclude) if exclude else None, "torch_threads": s.threads}
    return Run(out_dir, Batches(s, real), report, started)


def finish_run(run: Run, report_name: str, checkpoints: list[Path]) -> dict:
    """Add the total time and the checkpoints' sizes to the report, write it atomically as
    out_dir/report_name (JSON) and return it."""
    from vss_edge.runtime.outputs import write_text_atomic

    run.report["total_seconds"] = time.perf_counter() - run.started
    run.report["checkpoints"] = {p.name: p.stat().st_size for p in checkpoints}
    write_text_atomic(run.out_dir / report_name, json.dumps(run.report, indent=2) + "\n")
    return run.report
