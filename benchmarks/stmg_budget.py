"""STMG's compute budget: the speed-accuracy curve, without a re-export (CPU EP).

Run from the repository root (the export extra, i.e. torch, must be installed):

    python benchmarks/stmg_budget.py [--threads 2 --interval 5 --big-intervals 5,10 --seeds 1000-1003 --frames 60
                                      --big-height 512 --big-width 1024 --out benchmarks/results/stmg_budget_cpu.md]

All in one process, side by side:

* Accuracy side: the committed trained STMG (DDRNet-23-slim, stem width 8, 288x384) runs each
  budget (keep_threshold, max_blocks: runtime.programs.stmg) at a fixed key-frame interval on
  held-out synthetic clips with exact labels (vss_edge.evaluation, seeds >= HELD_OUT_SEED);
  the table gives the mean mIoU over the interval's positions, the copy baseline (key labels
  held) and the mean number of blocks a non-key frame ran; its FPS on the sample clip beside.
* Speed side: DDRNet-39 at BIG_HEIGHTxBIG_WIDTH (seeded random weights: speed does not depend
  on them), max_blocks from all 17 down to 0, at the same interval, against DDRNet-39 on every
  frame (interval 1 of the same bundle: the key-frame net alone). "x DDRNet every frame" is
  the speed-up the paper reports (+47.5% at its operating point). Random mask generators keep
  arbitrary blocks, so only max_blocks is meaningful here. The key-frame rate is the budget's
  third knob: the speed side runs each of --big-intervals, and the accuracy side the trained
  STMG at those intervals with the budgets that reach them (max_blocks), so that a speed-up on
  the big net can be read against the mIoU it costs on the small one.
* A PNG of the accuracy side (mIoU vs FPS) beside the markdown (--out with .png).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run from a checkout without installing

import numpy as np  # noqa: E402

from benchmarks._common import CpuMonitor, clip_frames, fmt, log, measure, publish, report_header  # noqa: E402

WARMUP = 2
# (label, budget) on the trained small STMG (6 prunable blocks; exported threshold 0.5)
SMALL_BUDGETS = [("as exported", {}), ("keep_threshold 0.6", {"keep_threshold": 0.6}),
                 ("keep_threshold 0.8", {"keep_threshold": 0.8}), ("keep_threshold 0.95", {"keep_threshold": 0.95}),
                 ("max_blocks 3", {"max_blocks": 3}), ("max_blocks 1", {"max_blocks": 1}),
                 ("max_blocks 0", {"max_blocks": 0})]
BIG_MAX_BLOCKS = (17, 8, 4, 0)
SMALL_MAX_BLOCKS = (None, 3, 1, 0)  # the trained STMG's budgets at each of --big-intervals (6 blocks)


def timed_fps(pipe, frames) -> tuple[float, float]:
    """(FPS over frames after warm-up, mean blocks per non-key frame) of one fresh pass."""
    pipe.reset()
    total, kept, non_key = 0.0, 0, 0
    for i, frame in enumerate(frames):
        t0 = time.perf_counter()
        result = pipe.step(frame)
        if i >= WARMUP:
            total += time.perf_counter() - t0
        if not result.is_key:
            kept += int(np.count_nonzero(pipe.program.last_keep))
            non_key += 1
    return (len(frames) - WARMUP) / total, (kept / non_key if non_key else float("nan"))


def plot(rows, path: Path) -> None:
    """mIoU (y) against FPS (x) of the accuracy side, one labelled point per budget."""
    import cv2

    from vss_edge.runtime.outputs import write_image_atomic

    w, h, m = 760, 460, 70
    img = np.full((h, w, 3), 255, np.uint8)
    fps = np.array([r["fps"] for r in rows])
    miou = np.array([r["miou"] for r in rows]) * 100
    x0, x1 = fps.min() * 0.95, fps.max() * 1.05
    y0, y1 = max(0.0, miou.min() - 5), min(100.0, miou.max() + 5)

    def at(f, v):
        return int(m + (f - x0) / (x1 - x0) * (w - 2 * m)), int(h - m - (v - y0) / (y1 - y0) * (h - 2 * m))

    cv2.rectangle(img, (m, m), (w - m, h - m), (0, 0, 0), 1)
    order = np.argsort(fps)
    cv2.polylines(img, [np.array([at(fps[i], miou[i]) for i in order], np.int32)], False, (180, 120, 40), 2)
    for r, f, v in zip(rows, fps, miou):
        cv2.circle(img, at(f, v), 4, (40, 40, 200), -1)
        cv2.putText(img, r["budget"], (at(f, v)[0] + 6, at(f, v)[1] - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 0), 1)
    for f in np.linspace(x0, x1, 5):
        cv2.putText(img, f"{f:.1f}", (at(f, y0)[0] - 12, h - m + 18), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
    for v in np.linspace(y0, y1, 5):
        cv2.putText(img, f"{v:.1f}", (m - 45, at(x0, v)[1] + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
    cv2.putText(img, "FPS (sample clip)", (w // 2 - 60, h - 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1)
    cv2.putText(img, "mIoU % (held-out synthetic)", (10, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1)
    write_image_atomic(path, img)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--interval", type=int, default=5, help="key-frame interval of the accuracy-vs-budget table")
    p.add_argument("--big-intervals", default="5,10", help="key-frame intervals of the speed side (comma-separated)")
    p.add_argument("--seeds", default="1000-1003", help="held-out synthetic clips")
    p.add_argument("--frames", type=int, default=60, help="sample-clip frames per speed run, warm-up included")
    p.add_argument("--big-height", type=int, default=512)
    p.add_argument("--big-width", type=int, default=1024)
    p.add_argument("--bundle-dir", help="where bundles are exported (default: a temporary folder)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "stmg_budget_cpu.md"))
    args = p.parse_args(argv)
    start = time.perf_counter()

    from vss_edge import demo_weights, runtime
    from vss_edge.configs import STMGConfig
    from vss_edge.evaluation import evaluate, parse_seeds, synthetic_classes, synthetic_sequences
    from vss_edge.exporters.stmg import export_stmg

    monitor = CpuMonitor()
    frames = clip_frames(args.frames)
    with tempfile.TemporaryDirectory(prefix="stmg_budget_") as tmp:
        root = Path(args.bundle_dir or tmp)
        small = root / "stmg_trained"
        if not (small / "manifest.json").is_file():
            export_stmg(small, demo_weights.stmg_config(), checkpoint=str(demo_weights.STMG_CHECKPOINT), verify_frames=2)
        big = root / f"stmg_ddrnet39_{args.big_height}x{args.big_width}"
        if not (big / "manifest.json").is_file():
            log(f"exporting DDRNet-39 STMG at {args.big_height}x{args.big_width}")
            export_stmg(big, STMGConfig(height=args.big_height, width=args.big_width, backbone="ddrnet39"),
                        verify_frames=2)
        m = runtime.load_manifest(small)
        sequences = synthetic_sequences(m.height, m.width, synthetic_classes(m.class_names),
                                        parse_seeds(args.seeds))
        rows = []
        for name, budget in SMALL_BUDGETS:
            pipe = runtime.load(small, device="cpu", threads=args.threads, interval=args.interval, budget=budget)
            result = measure(lambda: evaluate(pipe, sequences, [args.interval]), 0, monitor, name)
            row = result["intervals"][0]
            kept = pipe.program.budget_report()["mean_kept_blocks"]  # over the evaluation's non-key frames
            fps, _ = measure(lambda: timed_fps(pipe, frames), 0, monitor, name)
            rows.append({"budget": name, "miou": row["method"]["mean"], "copy": row["copy"]["mean"],
                         "kept": kept, "fps": fps})
            log(f"small {name}: mIoU {100 * rows[-1]['miou']:.1f}, {fps:.1f} FPS, {rows[-1]['kept']:.2f} blocks")
        key_every = runtime.load(small, device="cpu", threads=args.threads, interval=1)
        small_base, _ = measure(lambda: timed_fps(key_every, frames), 0, monitor, "small every frame")
        intervals = [int(i) for i in args.big_intervals.split(",")]
        curve = []  # the trained STMG's mIoU at each interval and max_blocks
        for interval in intervals:
            for n in SMALL_MAX_BLOCKS:
                pipe = runtime.load(small, device="cpu", threads=args.threads, interval=interval,
                                    budget={} if n is None else {"max_blocks": n})
                row = measure(lambda: evaluate(pipe, sequences, [interval]), 0, monitor, f"small {interval}/{n}")
                curve.append({"interval": interval, "max_blocks": n, "miou": row["intervals"][0]["method"]["mean"],
                              "copy": row["intervals"][0]["copy"]["mean"]})

        big_rows = []
        every = runtime.load(big, device="cpu", threads=args.threads, interval=1)
        big_base, _ = measure(lambda: timed_fps(every, frames), 0, monitor, "DDRNet-39 every frame")
        for interval in intervals:
            for n in BIG_MAX_BLOCKS:
                pipe = runtime.load(big, device="cpu", threads=args.threads, interval=interval,
                                    budget={"max_blocks": n})
                fps, kept = measure(lambda: timed_fps(pipe, frames), 0, monitor, f"{interval}/max_blocks {n}")
                big_rows.append({"interval": interval, "max_blocks": n, "fps": fps, "kept": kept})
                log(f"DDRNet-39 interval {interval} max_blocks {n}: {fps:.2f} FPS ({fps / big_base:.2f}x)")

    lines = [f"### Trained STMG (DDRNet-23-slim, 288x384), interval {args.interval}: accuracy vs speed", "",
             "| budget | mean blocks per non-key frame (of 6) | mIoU (held-out synthetic) | copy baseline | FPS | "
             "x DDRNet every frame |", "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['budget']} | {fmt(r['kept'], '.2f')} | {100 * r['miou']:.1f} | {100 * r['copy']:.1f} | "
                     f"{r['fps']:.1f} | {r['fps'] / small_base:.2f}x |")
    lines += ["", f"DDRNet-23-slim (the key-frame net) on every frame: {small_base:.1f} FPS.", "",
              f"### DDRNet-39 STMG, {args.big_height}x{args.big_width}: speed per key-frame interval and max_blocks, "
              f"beside the trained STMG's mIoU at the same interval and share of blocks", "",
              "| interval | max_blocks (of 17) | mean blocks per non-key frame | FPS | x DDRNet-39 every frame | "
              "trained STMG at this interval, max_blocks (of 6) | its mIoU (held-out synthetic) | its copy baseline |",
              "|---:|---:|---:|---:|---:|---|---:|---:|"]
    small_of = {17: None, 8: 3, 4: 1, 0: 0}  # the same share of the blocks on the 6-block small net
    for r in big_rows:
        c = next(c for c in curve if c["interval"] == r["interval"] and c["max_blocks"] == small_of[r["max_blocks"]])
        lines.append(f"| {r['interval']} | {r['max_blocks']} | {r['kept']:.2f} | {r['fps']:.2f} | "
                     f"{r['fps'] / big_base:.2f}x | {'as exported' if c['max_blocks'] is None else c['max_blocks']} | "
                     f"{100 * c['miou']:.1f} | {100 * c['copy']:.1f} |")
    lines += ["", f"DDRNet-39 on every frame (interval 1 of the same bundle): {big_base:.2f} FPS. The trained "
              f"STMG on every frame (interval 1) scores the key-frame net's mIoU: the interval-1 row of "
              f"README's eval table.", ""]
    png = Path(args.out).with_suffix(".png")
    plot(rows, png)
    lines += [f"Plot: `{png.name}` (mIoU vs FPS of the trained STMG's budgets).", ""]
    header = report_header("STMG compute budget on the CPU", args.threads,
                           [f"interval {args.interval} (fixed; speed side: {args.big_intervals}), {args.frames} "
                            f"sample-clip frames per speed run "
                            f"(first {WARMUP} warm-up), held-out synthetic seeds {args.seeds}",
                            f"command: `python benchmarks/stmg_budget.py {' '.join(sys.argv[1:])}`".rstrip()],
                           monitor)
    return publish(header, "\n".join(lines), args.out, time.perf_counter() - start)


if __name__ == "__main__":
    sys.exit(main())
