"""STMG speed on the CPU: non-key latency vs dropped blocks, pipeline FPS vs the full
DDRNet on every frame, and the mask generator's share of frame time.

Run from the repository root (the export extra, i.e. torch, must be installed):

    python benchmarks/stmg_speed.py [--backbone ddrnet39 --height 512 --width 1024 --threads 2
                                     --frames 30 --repeat 2 --out benchmarks/results/stmg_cpu.md
                                     --bundle-dir DIR --quiet-wait 0]

Everything runs in ONE process and ONE run, interleaved, so ratios are meaningful on a
noisy machine:

* Exports an STMG bundle (seeded random weights, seed 0) at HEIGHTxWIDTH into
  --bundle-dir, or reuses a valid one of exactly that config.
* "Non-key latency vs dropped blocks": the partial graph (the non-key backbone whose
  prunable blocks are ONNX `If` nodes) on real frames with n = 0..K blocks dropped (the
  blocks in a fixed shuffled order, seed 0, so every stage loses blocks), each n measured
  --calls times per repetition, n in rotating order. GFLOPs are those of the blocks kept
  (per-block cost from the graph). A least-squares line ms = a + b n gives the per-block
  saving and R^2 (1 = exactly linear). "non-key frame" adds the mask generator and the
  aggregation graph (their means over all calls), "/ key frame" divides by mask + keyframe.
* "Pipeline on the real clip": --frames frames of the sample clip (first 2 of each run are
  warm-up), every configuration run back to back in rotating order per repetition:
  DDRNet every frame (the keyframe graph alone: the baseline, no mask generator), and
  the STMG pipeline with the distortion-aware scheduler (Algorithm 1) and the fixed
  interval 2 of the paper's Table 4, each with the generator's keep masks (random
  weights: whatever they choose, see "dropped") and with forced masks dropping half or
  all of the prunable blocks. "x DDRNet" = FPS / baseline FPS (goal >= 1.5, paper +47.5%
  on DDRNet-39 on a GPU). "mask share" = mask generator time / frame time.
* "other processes' CPU": the share of all cores' time other processes took during that
  block (from /proc/stat); on a shared machine pass --quiet-wait 30.
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

from benchmarks._common import (CpuMonitor, fmt, cpu_load, clip_frames, ensure_bundle, log, measure,  # noqa: E402
                                publish, report_header)

SEED = 0
GOAL = 1.5
PAPER = "paper (RTX 2080 Ti, 1024x2048): DDRNet-39 22.1 FPS -> STMG 32.6 FPS (+47.5%); DDRNet-23-slim 108.2 -> 116.0 (+7.2%)"


def ensure_stmg(bundle_dir: Path, cfg) -> Path:
    from vss_edge.exporters.stmg import export_stmg

    path = bundle_dir / f"stmg_{cfg.backbone}_{cfg.height}x{cfg.width}_label{cfg.label_scale:g}"
    return ensure_bundle(path, cfg, "stmg", export_stmg, SEED)


class DDRNetEveryFrame:
    """The keyframe graph alone on every frame, timed as Pipeline.step times a frame."""

    def __init__(self, pipe):
        self.pipe = pipe

    def reset(self):
        pass

    def step(self, frame):
        from vss_edge.runtime import FrameResult
        from vss_edge.runtime.preprocess import labels_to_frame, to_graph_input
        from vss_edge.runtime.session import timed

        start = time.perf_counter()
        m = self.pipe.manifest
        out, ms = timed(self.pipe.sessions["keyframe"].run, {"image": to_graph_input(frame, m.height, m.width)})
        labels = labels_to_frame(out["labels"], frame.shape)
        return FrameResult(0, labels, True, {"keyframe": ms}, (time.perf_counter() - start) * 1000.0)


def block_latency(pipe, images, order, calls, repeat, quiet_wait, monitor):
    """{n dropped: [ms per partial call]}, plus mean ms of the mask, aggregation and keyframe graphs."""
    from vss_edge.runtime.session import timed

    k = len(order)
    partial = {n: [] for n in range(k + 1)}
    other = {"mask": [], "aggregation": [], "keyframe": []}
    s = pipe.sessions
    enc = np.zeros(s["mask"].spec.inputs[1].shape, np.float32)
    masks = s["mask"].run({"image": images[0], "prev_encoding": enc})
    feats = s["keyframe"].run({"image": images[0]})["features"]
    for rep in range(repeat):
        ns = list(range(k + 1))
        shift = rep * 7 % (k + 1)
        for n in ns[shift:] + ns[:shift]:
            keep = np.ones(k, dtype=bool)
            keep[order[:n]] = False

            def block():
                for c in range(calls):
                    partial[n].append(timed(s["partial"].run, {"image": images[c % len(images)], "keep": keep})[1])
            measure(block, quiet_wait, monitor, f"partial, {n} dropped")
        for c in range(calls):
            image = images[c % len(images)]
            other["mask"].append(timed(s["mask"].run, {"image": image, "prev_encoding": masks["encoding"]})[1])
            cur = s["partial"].run({"image": image, "keep": np.ones(k, dtype=bool)})["features"]
            other["aggregation"].append(timed(s["aggregation"].run, {
                "current_features": cur, "prev_features": feats, "spatial_mask": masks["spatial_mask"]})[1])
            other["keyframe"].append(timed(s["keyframe"].run, {"image": image})[1])
    return partial, {g: float(np.mean(v)) for g, v in other.items()}


def run_configs(bundle, threads, frames, repeat, quiet_wait, k):
    from vss_edge import runtime

    half = np.arange(k) % 2 == 1  # drop every other block: about half of them, in every stage
    configs = {
        "DDRNet every frame (keyframe graph)": ("baseline", None, None),
        "STMG, distortion, generator's masks": ("distortion", None, None),
        "STMG, distortion, half dropped": ("distortion", None, half),
        "STMG, distortion, all dropped": ("distortion", None, np.zeros(k, dtype=bool)),
        "STMG, interval 2, generator's masks": (None, 2, None),
        "STMG, interval 2, half dropped": (None, 2, half),
    }
    pipes = {}
    for name, (scheduler, interval, keep) in configs.items():
        pipe = runtime.load(bundle, device="cpu", threads=threads,
                            scheduler="distortion" if scheduler == "baseline" else scheduler, interval=interval)
        pipe.program.force_keep(keep)
        pipes[name] = DDRNetEveryFrame(pipe) if scheduler == "baseline" else pipe
    results = {name: [] for name in configs}
    dropped = {name: [] for name in configs}
    monitors = {name: CpuMonitor() for name in configs}
    names = list(configs)
    for rep in range(repeat):
        for name in names[rep % len(names):] + names[:rep % len(names)]:
            pipe = pipes[name]
            pipe.reset()

            def block():
                out = []
                for f in frames:
                    r = pipe.step(f)
                    out.append(r)
                    if not r.is_key and hasattr(pipe, "program"):
                        dropped[name].append(int(k - np.sum(pipe.program.last_keep)))
                return out[2:]
            results[name] += measure(block, quiet_wait, monitors[name], name)
    return results, dropped, monitors


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", choices=("ddrnet23_slim", "ddrnet39"), default="ddrnet39")
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--calls", type=int, default=4, help="partial-graph calls per dropped-block count")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--quiet-wait", type=float, default=0.0)
    parser.add_argument("--bundle-dir", default=os.path.join(tempfile.gettempdir(), "vss_edge_bench"))
    parser.add_argument("--trained", action="store_true",
                        help="the committed trained demo weights (vss_edge/data/weights: DDRNet-23-slim small "
                             "configuration at its training size) instead of seeded random ones; --backbone, "
                             "--height and --width are then ignored")
    parser.add_argument("--out", default=None,
                        help="default benchmarks/results/stmg_cpu.md (stmg_trained_cpu.md with --trained)")
    args = parser.parse_args(argv)
    args.out = args.out or str(ROOT / "benchmarks" / "results" / ("stmg_trained_cpu.md" if args.trained else "stmg_cpu.md"))
    t_start = time.perf_counter()

    import onnx

    from vss_edge import runtime
    from vss_edge.exporters.flops import gated_block_gflops
    from vss_edge.runtime.preprocess import to_graph_input
    from vss_edge.configs import STMGConfig

    if args.trained:
        from vss_edge.exporters.stmg import export_stmg
        from vss_edge import demo_weights

        cfg = demo_weights.stmg_config()
        bundle = Path(args.bundle_dir) / "stmg_trained_small"
        log(f"exporting the trained STMG demo weights to {bundle}")
        export_stmg(bundle, cfg, checkpoint=str(demo_weights.STMG_CHECKPOINT))
        weights = f"the committed trained demo weights ({demo_weights.STMG_CHECKPOINT.name})"
    else:
        cfg = STMGConfig(height=args.height, width=args.width, backbone=args.backbone)
        bundle = ensure_stmg(Path(args.bundle_dir), cfg)
        weights = f"seeded random weights (seed {SEED})"
    manifest = runtime.load_manifest(bundle)
    per_block = gated_block_gflops(onnx.load(str(bundle / "partial.onnx")))
    k = len(per_block)
    order = [int(i) for i in np.random.default_rng(SEED).permutation(k)]
    frames = clip_frames(args.frames)
    images = [to_graph_input(f, cfg.height, cfg.width) for f in frames[:4]]

    log("non-key latency vs dropped blocks")
    lat_monitor = CpuMonitor()
    pipe = runtime.load(bundle, device="cpu", threads=args.threads)
    partial, means = block_latency(pipe, images, order, args.calls, args.repeat, args.quiet_wait, lat_monitor)
    log("pipelines on the real clip")
    results, dropped, monitors = run_configs(bundle, args.threads, frames, args.repeat, args.quiet_wait, k)
    total_monitor = CpuMonitor()
    total_monitor.add(lat_monitor)
    for m in monitors.values():
        total_monitor.add(m)

    g = {n: s.gflops for n, s in manifest.graphs.items()}
    full_partial = g["partial"]
    lines = ["## Non-key latency vs dropped blocks", "",
             f"Partial graph (the non-key {cfg.backbone} backbone, {k} prunable blocks as ONNX If), "
             f"{args.calls} calls x {args.repeat} repetitions per row; blocks dropped in the order {order}.", "",
             "| dropped | GFLOPs kept | partial ms (mean) | p50 | non-key frame ms | / key frame |",
             "|---:|---:|---:|---:|---:|---:|"]
    key_ms = means["mask"] + means["keyframe"]
    xs, ys = [], []
    for n in range(k + 1):
        kept = full_partial - sum(per_block[i] for i in order[:n])
        ms = float(np.mean(partial[n]))
        nonkey = means["mask"] + ms + means["aggregation"]
        xs.append(n)
        ys.append(ms)
        lines.append(f"| {n} | {kept:.2f} | {ms:.1f} | {np.median(partial[n]):.1f} | {nonkey:.1f} | {nonkey / key_ms:.3f} |")
    slope, intercept = np.polyfit(xs, ys, 1)
    fit = np.polyval([slope, intercept], xs)
    r2 = 1.0 - np.sum((np.array(ys) - fit) ** 2) / np.sum((np.array(ys) - np.mean(ys)) ** 2)
    predicted = float(np.mean(per_block)) * float(np.mean(partial[0])) / full_partial
    lines += ["", f"- linear fit: partial ms = {intercept:.1f} - {-slope:.2f} x dropped, R^2 = {r2:.3f}",
              f"- a block is {np.mean(per_block):.2f} GFLOPs on average ({min(per_block):.2f}-{max(per_block):.2f}): "
              f"{predicted:.2f} ms at the whole graph's ms per GFLOP; measured saving {-slope:.2f} ms per dropped block",
              f"- means per call: keyframe {means['keyframe']:.1f} ms, mask generator {means['mask']:.1f} ms, "
              f"aggregation + head {means['aggregation']:.1f} ms",
              f"- GFLOPs (2 x MACs): keyframe {g['keyframe']:.2f}, partial (all kept) {full_partial:.2f}, "
              f"mask {g['mask']:.2f}, aggregation {g['aggregation']:.2f}",
              f"- other processes' CPU during these blocks: {cpu_load(lat_monitor)}", ""]

    base = results["DDRNet every frame (keyframe graph)"]
    base_fps = len(base) / (sum(r.total_ms for r in base) / 1000.0)
    lines += ["## Pipeline on the real clip", "",
              "| configuration | FPS | x DDRNet | key frames | dropped (non-key mean) | mask share | "
              "non-key / key ms | other processes' CPU |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, rs in results.items():
        wall = sum(r.total_ms for r in rs)
        fps = len(rs) / (wall / 1000.0)
        keys = sum(r.is_key for r in rs)
        mask_share = sum(r.timings_ms.get("mask", 0.0) for r in rs) / wall
        key = [r.total_ms for r in rs if r.is_key]
        nonkey = [r.total_ms for r in rs if not r.is_key]
        ratio = np.mean(nonkey) / np.mean(key) if key and nonkey else None
        drop = np.mean(dropped[name]) if dropped[name] else None
        lines.append(f"| {name} | {fps:.2f} | {fps / base_fps:.2f} | {keys}/{len(rs)} | {fmt(drop)} | "
                     f"{100 * mask_share:.1f}% | {fmt(ratio, '.3f')} | {cpu_load(monitors[name])} |")
    lines += ["", f"- goal: STMG >= {GOAL}x the full DDRNet on every frame; {PAPER}", ""]

    header = report_header(f"STMG ({cfg.backbone}) on the CPU, {cfg.height}x{cfg.width}", args.threads, [
        f"{weights}; {args.frames} frames of the sample clip per run (2 warm-up), {args.repeat} repetitions"],
        total_monitor)
    return publish(header, "\n".join(lines), args.out, time.perf_counter() - t_start)


if __name__ == "__main__":
    sys.exit(main())
