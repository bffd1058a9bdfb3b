"""mIoU against ground truth as a function of the key-frame interval (torch-free).

`vss-edge eval BUNDLE [--synthetic | --video V --labels DIR] [--intervals 1-5] [--json F]`
is `evaluate_bundle` + `to_markdown`.

Protocol (GSVNet's Tables 4 and A5, MPVSS's Fig. 3): for each interval N the bundle runs
every sequence from a reset with a fixed key-frame interval N (key frames 0, N, 2N, ...);
each frame is scored at its position p = frames since the last key frame (0 = the key frame
itself). Per position, the confusion matrices of all frames at p (all sequences) are summed
and give that position's mIoU; the table reports their **mean** over p = 0..N-1 (GSVNet's
"average mIoU": the pairs (20 - i, 20), i = 0..l-1) and their **minimum** (the worst
position, normally the farthest from the key frame). The **copy** baseline beside it holds
the key frame's labels for the rest of the interval (the same bundle's keyframe net: the
labels it gives at interval 1), so method - copy is what propagation buys.

mIoU convention: `calibration.check` (IoU over the summed confusion matrix; mean over the
classes present in the ground truth or the prediction; 255 in a label map = ignore).

Sources:
- synthetic (`synthetic_sequences`): `vss_edge.synthetic` clips with exact labels, one per
  seed, at the bundle's resolution, over a people-free background (the per-pixel median of
  the shipped sample clip, `static_background`), with the bundle's first K classes being the
  synthetic ones (K inferred from the class names, or given). Training uses seeds below
  `HELD_OUT_SEED`; evaluation's default seeds are at or above it.
- a video and a folder of label PNGs named by frame index (000000.png, uint8 class ids, 255 =
  ignore), as `vss-edge check --labels` reads them; frames without a label map run (the
  propagation needs them) but are not scored.
Only key-frame methods (a scheduler with is_key: GSVNet, STMG, MPVSS) have an interval. A
round-robin method (TDNet) is scored by path instead (`evaluate_round_robin`), beside its paths
run alone (no attention propagation), its analogue of the copy baseline.
"""
from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vss_edge.calibration.metrics import CONVENTIONS, IGNORE, confusion, load_label_map, miou
from vss_edge.runtime.errors import VssEdgeError

HELD_OUT_SEED = 1000  # training draws synthetic seeds below this; evaluation at or above it
DEFAULT_SEEDS = (1000, 1001, 1002, 1003)
DEFAULT_FRAMES = 30


@dataclass
class LabelledSequence:
    """A clip to score: BGR uint8 frames and, per frame, a uint8 label map (255 = ignore) or None."""

    name: str
    frames: list[np.ndarray]
    labels: list[np.ndarray | None]


# ---------------------------------------------------------------- sources

def parse_intervals(text: str) -> list[int]:
    """'1-5' -> [1, 2, 3, 4, 5]; '1,2,5' -> [1, 2, 5]; '3' -> [3]. VssEdgeError otherwise."""
    out: set[int] = set()
    for part in str(text).split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not m:
            raise VssEdgeError(f"--intervals must look like 1-5 or 1,2,5 (positive integers), got {text!r}")
        a, b = int(m.group(1)), int(m.group(2) or m.group(1))
        if a < 1 or b < a:
            raise VssEdgeError(f"--intervals: {part.strip()!r} is not a range of positive integers A-B with A <= B")
        out.update(range(a, b + 1))
    if max(out) > 100:
        raise VssEdgeError(f"--intervals: {max(out)} is too long an interval (at most 100)")
    return sorted(out)


def parse_seeds(text: str) -> list[int]:
    """Seeds as '1000-1003' or '1000,1005'; non-negative integers."""
    out: list[int] = []
    for part in str(text).split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not m or int(m.group(2) or m.group(1)) < int(m.group(1)):
            raise VssEdgeError(f"--seeds must look like 1000-1003 or 1000,1005 (non-negative integers), got {text!r}")
        out.extend(range(int(m.group(1)), int(m.group(2) or m.group(1)) + 1))
    if len(out) > 1000:
        raise VssEdgeError(f"--seeds: {len(out)} seeds is too many (at most 1000)")
    return list(dict.fromkeys(out))


@functools.lru_cache(maxsize=1)
def static_background() -> np.ndarray:
    """The per-pixel median of the shipped sample clip (BGR uint8, read-only): the street
    without its walking people, so synthetic 'background' pixels hold no person."""
    from vss_edge.runtime.sources import open_source, sample_clip_path

    with open_source(sample_clip_path()) as source:
        frames = np.stack(list(source))
    bg = np.ascontiguousarray(np.median(frames, axis=0).astype(np.uint8))
    bg.setflags(write=False)
    return bg


def synthetic_classes(class_names: Sequence[str]) -> int:
    """How many leading bundle classes are the synthetic ones (names as vss_edge.synthetic gives them); 0 if < 2."""
    from vss_edge.synthetic import MAX_CLASSES, SyntheticConfig, class_names as synthetic_names

    reference = synthetic_names(SyntheticConfig(num_classes=MAX_CLASSES))
    k = 0
    while k < min(len(class_names), len(reference)) and class_names[k] == reference[k]:
        k += 1
    return k if k >= 2 else 0


def synthetic_sequences(height: int, width: int, num_classes: int, seeds: Iterable[int],
                        frames: int = DEFAULT_FRAMES, **config) -> list[LabelledSequence]:
    """One synthetic clip per seed (exact labels), over `static_background()`."""
    from vss_edge.synthetic import SyntheticConfig, SyntheticVideo

    try:
        cfg = SyntheticConfig(height=height, width=width, num_classes=num_classes, **config)
    except (TypeError, ValueError) as e:
        raise VssEdgeError(f"synthetic video: {e}") from None
    out = []
    for seed in seeds:
        clip = list(SyntheticVideo(cfg, seed=seed, backgrounds=[static_background()]).frames(frames))
        out.append(LabelledSequence(f"synthetic seed {seed}", [f.image for f in clip], [f.labels for f in clip]))
    return out


def video_sequence(video, labels_dir, num_classes: int, start: int = 0, stop: int | None = None) -> LabelledSequence:
    """Frames start..stop-1 of a video (or image folder) with the label PNGs of labels_dir."""
    from vss_edge.runtime.sources import read_frames

    labels_dir = Path(labels_dir)
    if not labels_dir.is_dir():
        raise VssEdgeError(f"--labels '{labels_dir}' is not a folder")
    frames = read_frames(video, start, stop)
    labels = [load_label_map(labels_dir, start + i, num_classes) for i in range(len(frames))]
    if not any(lab is not None for lab in labels):
        raise VssEdgeError(f"--labels '{labels_dir}': no label map matches the frames read (expected names "
                           f"{start:06d}.png .. {start + len(frames) - 1:06d}.png)")
    return LabelledSequence(str(video), frames, labels)


# ---------------------------------------------------------------- scoring

def _score(pred: np.ndarray, gt: np.ndarray, k: int) -> np.ndarray:
    if pred.shape != gt.shape:
        import cv2

        pred = cv2.resize(pred, (gt.shape[1], gt.shape[0]), interpolation=cv2.INTER_NEAREST)
    return confusion(gt, pred, k)


def _summary(position_cms: list[np.ndarray], position_frames: list[int]) -> dict:
    by_position = [miou(cm) if n else None for cm, n in zip(position_cms, position_frames)]
    scored = [v for v in by_position if v is not None]
    return {"mean": float(np.mean(scored)) if scored else None, "min": min(scored) if scored else None,
            "by_position": by_position, "overall": miou(sum(position_cms))}


def evaluate(pipe, sequences: Sequence[LabelledSequence], intervals: Sequence[int], progress=None) -> dict:
    """Score `pipe` (a runtime Pipeline of a key-frame method) at each interval, with the copy baseline.

    Returns {"intervals": [{"interval", "frames_scored", "method": {mean, min, by_position,
    overall}, "copy": {...}}], "keyframe_every_frame": mIoU at interval 1, "classes", "sequences"}.
    """
    from vss_edge.runtime.schedulers import FixedInterval

    if not sequences:
        raise VssEdgeError("nothing to evaluate: no sequences")
    if pipe.program.scheduler_needs == "path":
        return evaluate_round_robin(pipe, sequences, progress)
    if pipe.program.scheduler_needs != "is_key":
        raise VssEdgeError(f"method '{pipe.manifest.method}' has neither key frames nor paths to evaluate")
    k = len(pipe.class_names)
    saved = pipe.scheduler
    try:
        # key-frame labels on every frame: interval 1, and the copy baseline's source
        key_labels = []
        pipe.scheduler = FixedInterval(1)
        for seq in sequences:
            pipe.reset()
            key_labels.append([pipe.step(f).labels for f in seq.frames])
            if progress:
                progress()
        rows = []
        for n in intervals:
            cms = {who: [np.zeros((k, k), np.int64) for _ in range(n)] for who in ("method", "copy")}
            counts = [0] * n
            pipe.scheduler = FixedInterval(n)
            for seq, keys in zip(sequences, key_labels):
                pipe.reset()
                held = None
                for t, (frame, gt) in enumerate(zip(seq.frames, seq.labels)):
                    labels = keys[t] if n == 1 else None
                    if labels is None:
                        r = pipe.step(frame)
                        labels, is_key = r.labels, r.is_key
                    else:
                        is_key = True
                    if is_key:
                        held, since = keys[t], 0
                    else:
                        since += 1
                    if gt is None:
                        continue
                    counts[since] += 1
                    cms["method"][since] += _score(labels, gt, k)
                    cms["copy"][since] += _score(held, gt, k)
                if progress:
                    progress()
            rows.append({"interval": n, "frames_scored": sum(counts), "frames_by_position": counts,
                         "method": _summary(cms["method"], counts), "copy": _summary(cms["copy"], counts)})
    finally:
        pipe.scheduler = saved
        pipe.reset()
    return {"intervals": rows, "classes": list(pipe.class_names),
            "sequences": [{"name": s.name, "frames": len(s.frames),
                           "labelled": sum(lab is not None for lab in s.labels)} for s in sequences]}


def evaluate_round_robin(pipe, sequences: Sequence[LabelledSequence], progress=None) -> dict:
    """TDNet-like methods (no key frames; frame t runs path t mod N with attention over the stored
    frames): mIoU by path, mean and min over the paths, beside the same paths run alone (the stored
    frames forgotten before each frame: the official warm-up output, no propagation). The first
    queue-length frames of each sequence (the warm-up, where both are the same) are not scored."""
    k = len(pipe.class_names)
    n = len(pipe.program.graphs)
    warmup = int(getattr(pipe.program, "length", 0))
    cms = {who: [np.zeros((k, k), np.int64) for _ in range(n)] for who in ("method", "single_path")}
    counts = [0] * n
    try:
        for seq in sequences:
            outputs = {}
            for who in ("method", "single_path"):
                pipe.reset()
                labels = []
                for frame in seq.frames:
                    if who == "single_path":
                        pipe.program.reset()  # forget the stored frames: this path alone
                    r = pipe.step(frame)
                    labels.append((r.path, r.labels))
                outputs[who] = labels
            for t, gt in enumerate(seq.labels):
                if gt is None or t < warmup:
                    continue
                path = outputs["method"][t][0]
                counts[path] += 1
                for who in cms:
                    cms[who][path] += _score(outputs[who][t][1], gt, k)
            if progress:
                progress()
    finally:
        pipe.reset()
    return {"round_robin": {"paths": n, "warmup_frames_skipped": warmup, "frames_scored": sum(counts),
                            "frames_by_path": counts, "method": _summary(cms["method"], counts),
                            "single_path": _summary(cms["single_path"], counts)},
            "intervals": [], "classes": list(pipe.class_names),
            "sequences": [{"name": s.name, "frames": len(s.frames),
                           "labelled": sum(lab is not None for lab in s.labels)} for s in sequences]}


def evaluate_bundle(bundle, *, synthetic: bool = False, video=None, labels_dir=None, intervals=(1, 2, 3, 4, 5),
                    seeds=DEFAULT_SEEDS, frames: int = DEFAULT_FRAMES, synthetic_classes_: int | None = None,
                    start: int = 0, stop: int | None = None, threads: int | None = None, device: str = "auto",
                    progress=None, backend: str = "onnxruntime", precision: str | None = None,
                    agreement_floor: float | None = None) -> dict:
    """Load a bundle and evaluate it on synthetic clips (synthetic=True) or on video + labels_dir
    (backend, precision, agreement_floor: runtime.load's)."""
    from vss_edge import runtime

    if not synthetic and video is None and labels_dir is not None:
        raise VssEdgeError("--labels needs --video V")
    if synthetic == (video is not None):
        raise VssEdgeError("give either --synthetic or --video V --labels DIR")
    if video is not None and labels_dir is None:
        raise VssEdgeError("--video needs --labels DIR (ground-truth PNGs named by frame index)")
    if synthetic and frames < 2:
        raise VssEdgeError(f"--frames must be at least 2, got {frames}")
    pipe = runtime.load(bundle, device=device, threads=threads, backend=backend, precision=precision,
                        agreement_floor=agreement_floor)
    return evaluate_pipeline(pipe, synthetic=synthetic, video=video, labels_dir=labels_dir, intervals=intervals,
                             seeds=seeds, frames=frames, synthetic_classes_=synthetic_classes_, start=start,
                             stop=stop, progress=progress)


def evaluate_pipeline(pipe, *, synthetic: bool = False, video=None, labels_dir=None, intervals=(1, 2, 3, 4, 5),
                      seeds=DEFAULT_SEEDS, frames: int = DEFAULT_FRAMES, synthetic_classes_: int | None = None,
                      start: int = 0, stop: int | None = None, progress=None) -> dict:
    """evaluate_bundle on a loaded Pipeline (a fleet's worker keeps one across videos): the same
    result; the pipeline is reset before and after."""
    m = pipe.manifest
    k = len(m.class_names)
    if synthetic:
        s = synthetic_classes_ or synthetic_classes(m.class_names)
        if s < 2:
            raise VssEdgeError(f"bundle '{m.root}': its class names are not the synthetic video's "
                               "(background, red stripes, ...): pass --synthetic-classes K to score its first K "
                               "classes against the synthetic ones")
        if s > k:
            raise VssEdgeError(f"--synthetic-classes {s}: the bundle has only {k} classes")
        sequences = synthetic_sequences(m.height, m.width, s, seeds, frames)
        source = {"kind": "synthetic", "seeds": list(seeds), "frames_per_clip": frames, "height": m.height,
                  "width": m.width, "synthetic_classes": s, "background": "median of the sample clip"}
    else:
        sequences = [video_sequence(video, labels_dir, k, start, stop)]
        source = {"kind": "video", "video": str(video), "labels": str(labels_dir), "first_frame": start}
    result = evaluate(pipe, sequences, intervals, progress)
    result.update(bundle=str(m.root), method=m.method, height=m.height, width=m.width, device=pipe.device,
                  backends=pipe.backends(), source=source, conventions={
                      "miou": CONVENTIONS["miou"], "ignore": IGNORE,
                      "position": "frames since the last key frame (0 = the key frame); key frames 0, N, 2N, ...",
                      "mean": "mean over positions 0..N-1 of each position's mIoU (GSVNet's average mIoU)",
                      "min": "lowest position mIoU (GSVNet's minimum mIoU)",
                      "copy": "the key frame's labels held until the next key frame"})
    return result


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def to_markdown(result: dict) -> str:
    src = result["source"]
    where = (f"synthetic, seeds {src['seeds'][0]}..{src['seeds'][-1]} ({len(src['seeds'])} clips x "
             f"{src['frames_per_clip']} frames, {src['synthetic_classes']} classes)"
             if src["kind"] == "synthetic" else f"{src['video']} with labels {src['labels']}")
    rr = result.get("round_robin")
    if rr:
        me, sp = rr["method"], rr["single_path"]
        lines = [f"{result['method']} {result['height']}x{result['width']} ({result['bundle']}) on {where}: "
                 f"mIoU % by sub-network path (round robin over {rr['paths']}; no key frames, so no interval)", "",
                 "| | mean | min | by path |", "|---|---:|---:|---|",
                 f"| round robin, attention over stored frames | {_pct(me['mean'])} | {_pct(me['min'])} | "
                 + " / ".join(_pct(v) for v in me["by_position"]) + " |",
                 f"| each path alone (no propagation) | {_pct(sp['mean'])} | {_pct(sp['min'])} | "
                 + " / ".join(_pct(v) for v in sp["by_position"]) + " |", "",
                 f"mean / min: over the paths; the first {rr['warmup_frames_skipped']} frames of each clip "
                 "(warm-up, the same for both) are not scored."]
        return "\n".join(lines) + "\n"
    lines = [f"{result['method']} {result['height']}x{result['width']} ({result['bundle']}) on {where}: "
             "mIoU % vs key-frame interval", "",
             "| interval | mean | min | copy mean | copy min | mean - copy | by position (0 = key) |",
             "|---:|---:|---:|---:|---:|---:|---|"]
    for row in result["intervals"]:
        me, co = row["method"], row["copy"]
        gain = None if me["mean"] is None or co["mean"] is None else me["mean"] - co["mean"]
        gain_text = "-" if gain is None else f"{100 * gain:+.1f}"
        pos = " / ".join(_pct(v) for v in me["by_position"])
        lines.append(f"| {row['interval']} | {_pct(me['mean'])} | {_pct(me['min'])} | {_pct(co['mean'])} | "
                     f"{_pct(co['min'])} | {gain_text} | {pos} |")
    lines.append("")
    lines.append("mean / min: over the positions in the interval (GSVNet's average / minimum mIoU); copy: the key "
                 "frame's labels held.")
    return "\n".join(lines) + "\n"
