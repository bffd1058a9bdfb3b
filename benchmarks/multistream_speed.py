"""Several cameras on one machine: per-tick latency with key frames staggered vs aligned, memory of
streams on shared sessions vs separate pipelines, throughput of N streams vs one.

Run from the repository root:

    python benchmarks/multistream_speed.py [--height 512 --width 1024 --streams 4 --threads 2
                                            --workers 1,2 --interval 5 --ticks 60 --repeat 1
                                            --bundle-dir DIR --quiet-wait 0 --out F]
    python benchmarks/multistream_speed.py --quick     # a tiny run proving the script works (demo bundle)

What it does:

* Exports (or reuses, in --bundle-dir) a GSVNet bundle at HEIGHTxWIDTH with seeded weights (seed 0,
  host labels: the default), and decodes the sample clip once; stream s reads it from frame
  s * 60 / STREAMS on (the clip at STREAMS start offsets, looping), so the streams see different
  frames on a tick.
* Per-tick latency: `load_streams(bundle, STREAMS, policy, workers)` with a fixed key-frame interval
  --interval, for each policy (staggered, aligned) and each --workers count; ONNX Runtime has
  --threads intra-op threads per session. A tick is one step_all over every stream's next frame;
  its latency is step_all's wall time. The first --interval ticks are warm-up (the first tick is
  every stream's first frame, a key frame whatever the policy: its time is shown apart), then
  --ticks ticks are measured. Reported: mean, p50, p99, max, max / mean (goal: staggered <= 1.3,
  aligned about 2.5+), the most key frames on one tick, and the throughput (frames of every
  stream over the summed tick time). Blocks are interleaved (policies and worker counts rotated
  every repetition) so that drift hits every configuration alike.
* One stream alone (`load`, same interval and threads) on the first stream's frames: its FPS is
  the baseline of "x one stream" (N streams' throughput / one stream's).
* Memory: separate processes (RSS cannot be compared inside one), each imports the runtime, opens
  the bundle as told, runs --rss-ticks ticks (so ONNX Runtime's arenas have grown) and reports its
  peak RSS (getrusage ru_maxrss) and its RSS after the imports: one pipeline, STREAMS streams on one
  MultiStream (shared sessions, the first --workers count), STREAMS separate pipelines
  (`load` per camera: what one did before, the graphs loaded STREAMS times). Goal: shared <= 1.3x
  one pipeline.
* Each timed row says how much CPU other processes took meanwhile (benchmarks/_common.py).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run from a checkout without installing

import numpy as np  # noqa: E402

from benchmarks._common import (CpuMonitor, clip_frames, cpu_load, ensure_bundle, log, measure,  # noqa: E402
                                publish, report_header, report_path)

SEED = 0
POLICIES = ("staggered", "aligned")
RSS_KINDS = ("one pipeline", "shared sessions", "separate pipelines")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--height", type=int, default=512)
    p.add_argument("--width", type=int, default=1024)
    p.add_argument("--streams", type=int, default=4)
    p.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads per session")
    p.add_argument("--workers", default="1,2", help="worker-thread counts to measure, comma-separated")
    p.add_argument("--interval", type=int, default=5, help="fixed key-frame interval")
    p.add_argument("--ticks", type=int, default=60, help="ticks measured per block, after --interval warm-up ticks")
    p.add_argument("--repeat", type=int, default=1, help="interleaved repetitions of every block")
    p.add_argument("--rss-ticks", type=int, default=10, help="ticks each memory process runs")
    p.add_argument("--bundle-dir", help="where the bundle is exported or reused (default: a temporary folder)")
    p.add_argument("--bundle", help="use this bundle as it is (no export)")
    p.add_argument("--quiet-wait", type=float, default=0.0,
                   help="wait up to S s for a quiet machine before each block; re-measure a disturbed one")
    p.add_argument("--out", help="report (default benchmarks/results/multistream_cpu.md; --quick: a temporary file)")
    p.add_argument("--quick", action="store_true",
                   help="the shipped demo bundle (288x384), 8 ticks, 3 memory ticks: proves the script runs")
    p.add_argument("--rss-child", choices=RSS_KINDS, help=argparse.SUPPRESS)  # one memory measurement (internal)
    args = p.parse_args(argv)
    args.workers = tuple(int(w) for w in args.workers.split(","))
    if args.quick:
        args.ticks, args.rss_ticks = 8, 3
    return args


def stream_frames(clip: list, streams: int, ticks: int) -> list[list]:
    """frames[t][s]: stream s's frame on tick t (the clip from s * len / streams on, looping)."""
    return [[clip[(s * len(clip) // streams + t) % len(clip)] for s in range(streams)] for t in range(ticks)]


def rss_kb(field: str = "VmRSS") -> int:
    """This process's resident set now (VmRSS) or at its peak (VmHWM), in kB (/proc/self/status)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def rss_child(args) -> int:
    """One memory measurement in this process; prints {"before_kb", "after_kb", "peak_kb"} as JSON: RSS
    once the runtime is imported and the frames decoded, RSS after opening the bundle and running
    the ticks, and the peak (VmHWM)."""
    from vss_edge import runtime

    ticks = stream_frames(clip_frames(60), args.streams, args.rss_ticks)
    before_kb = rss_kb()
    options = dict(threads=args.threads, interval=args.interval)
    if args.rss_child == "one pipeline":
        pipe = runtime.load(args.bundle, **options)
        for tick in ticks:
            pipe.step(tick[0])
    elif args.rss_child == "shared sessions":
        multi = runtime.load_streams(args.bundle, args.streams, workers=args.workers[0], **options)
        for tick in ticks:
            multi.step_all(tick)
    else:
        pipes = [runtime.load(args.bundle, **options) for _ in range(args.streams)]
        for tick in ticks:
            for pipe, frame in zip(pipes, tick):
                pipe.step(frame)
    print(json.dumps({"before_kb": before_kb, "after_kb": rss_kb(), "peak_kb": rss_kb("VmHWM")}))
    return 0


def measure_rss(args, kind: str) -> dict:
    cmd = [sys.executable, __file__, "--rss-child", kind, "--bundle", str(args.bundle), "--streams", str(args.streams),
           "--threads", str(args.threads), "--workers", ",".join(map(str, args.workers)),
           "--interval", str(args.interval), "--rss-ticks", str(args.rss_ticks)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=1800)
    if proc.returncode:
        raise RuntimeError(f"memory process '{kind}' failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_ticks(multi, ticks: list, warmup: int) -> dict:
    """Tick latencies (ms) after `warmup` ticks, the first tick's, and key frames per measured tick."""
    times, keys, first = [], [], None
    for t, frames in enumerate(ticks):
        start = time.perf_counter()
        results = multi.step_all(frames)
        ms = (time.perf_counter() - start) * 1000.0
        if t == 0:
            first = ms
        if t >= warmup:
            times.append(ms)
            keys.append(sum(r.is_key for r in results))
    return {"times": times, "keys": keys, "first": first}


def run_one(pipe, frames: list, warmup: int) -> list[float]:
    times = []
    for t, frame in enumerate(frames):
        start = time.perf_counter()
        pipe.step(frame)
        if t >= warmup:
            times.append((time.perf_counter() - start) * 1000.0)
    return times


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.rss_child:
        return rss_child(args)
    from vss_edge import runtime
    from vss_edge.demo_weights import DEMO_BUNDLE

    start = time.perf_counter()
    if args.bundle:
        bundle = Path(args.bundle)
    elif args.quick:
        bundle = DEMO_BUNDLE
    else:
        from vss_edge.configs import GSVNetConfig
        from vss_edge.exporters.gsvnet import export_gsvnet

        folder = Path(args.bundle_dir or tempfile.mkdtemp(prefix="multistream_"))
        cfg = GSVNetConfig(height=args.height, width=args.width)
        bundle = ensure_bundle(folder / f"gsvnet_{cfg.height}x{cfg.width}", cfg, "gsvnet", export_gsvnet, SEED)
    args.bundle = bundle
    manifest = runtime.load_manifest(bundle)
    warmup, n = args.interval, args.streams
    ticks = stream_frames(clip_frames(60), n, warmup + args.ticks)
    monitor = CpuMonitor()

    log("warm-up: one untimed block (the process's first sessions and pages)")
    with runtime.load_streams(bundle, n, workers=max(args.workers), threads=args.threads,
                              interval=args.interval) as multi:
        run_ticks(multi, ticks[:2 * warmup], warmup)
    configs = [(policy, workers) for workers in args.workers for policy in POLICIES]
    blocks: dict = {c: {"times": [], "keys": [], "first": [], "monitor": CpuMonitor()} for c in configs}
    alone = {"times": [], "monitor": CpuMonitor()}
    for r in range(args.repeat):
        order = configs[r % len(configs):] + configs[:r % len(configs)]
        for policy, workers in order:
            log(f"repetition {r + 1}: {n} streams, {policy}, {workers} worker(s)")
            with runtime.load_streams(bundle, n, policy=policy, workers=workers, threads=args.threads,
                                      interval=args.interval) as multi:
                got = measure(lambda: run_ticks(multi, ticks, warmup), args.quiet_wait,
                              blocks[(policy, workers)]["monitor"], f"{policy}, {workers} workers")
            block = blocks[(policy, workers)]
            block["times"] += got["times"]
            block["keys"] += got["keys"]
            block["first"].append(got["first"])
        log(f"repetition {r + 1}: one stream")
        pipe = runtime.load(bundle, threads=args.threads, interval=args.interval)
        alone["times"] += measure(lambda: run_one(pipe, [t[0] for t in ticks], warmup), args.quiet_wait,
                                  alone["monitor"], "one stream")
    for block in [*blocks.values(), alone]:
        monitor.add(block["monitor"])

    one_fps = 1000.0 * len(alone["times"]) / sum(alone["times"])
    lines = [f"## Per-tick latency: {n} streams, interval {args.interval}, {args.threads} ONNX Runtime threads per "
             f"session", "",
             "| policy | workers | ticks | mean ms | p50 ms | p99 ms | max ms | max / mean | most key frames on a tick "
             "| first tick ms (fresh sessions) | throughput FPS | x one stream | other processes' CPU |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for (policy, workers), block in blocks.items():
        t = np.asarray(block["times"])
        fps = 1000.0 * n * len(t) / t.sum()
        lines.append(f"| {policy} | {workers} | {len(t)} | {t.mean():.1f} | {np.percentile(t, 50):.1f} | "
                     f"{np.percentile(t, 99):.1f} | {t.max():.1f} | {t.max() / t.mean():.2f} | {max(block['keys'])} | "
                     f"{np.mean(block['first']):.1f} | {fps:.2f} | {fps / one_fps:.2f} | {cpu_load(block['monitor'])} |")
    a = np.asarray(alone["times"])
    lines += ["", f"One stream alone (`load`, same interval and threads): {len(a)} frames, mean {a.mean():.1f} ms, "
                  f"max {a.max():.1f} ms, {one_fps:.2f} FPS (other processes' CPU {cpu_load(alone['monitor'])}).", ""]

    log("memory: one process per configuration")
    rss = {kind: measure_rss(args, kind) for kind in RSS_KINDS}
    one = rss["one pipeline"]
    one_growth = one["after_kb"] - one["before_kb"]
    lines += [f"## Memory: RSS of a process that opens the bundle and runs {args.rss_ticks} ticks", "",
              "\"growth\": RSS after opening and running minus RSS before opening (the runtime imported, the "
              "frames decoded): what the pipelines cost; \"process\": the whole process's RSS after.", "",
              "| configuration | growth MB | x one pipeline | process MB | x one pipeline | peak MB |",
              "|---|---:|---:|---:|---:|---:|"]
    for kind, label in zip(RSS_KINDS, ("one pipeline", f"{n} streams, shared sessions (MultiStream, "
                                                        f"{args.workers[0]} worker(s))",
                                       f"{n} separate pipelines (one `load` each)")):
        r = rss[kind]
        growth = r["after_kb"] - r["before_kb"]
        lines.append(f"| {label} | {growth / 1024:.0f} | {growth / one_growth:.2f} | {r['after_kb'] / 1024:.0f} | "
                     f"{r['after_kb'] / one['after_kb']:.2f} | {r['peak_kb'] / 1024:.0f} |")
    lines.append("")

    header = report_header(
        f"{n} streams on one machine: GSVNet {manifest.height}x{manifest.width}", args.threads,
        [f"bundle {bundle} (seeded weights, host labels)" if not args.quick else f"bundle {bundle} (--quick)",
         f"the sample clip at {n} start offsets, {args.ticks} measured ticks after {warmup} warm-up ticks, "
         f"{args.repeat} repetition(s)"], monitor)
    return publish(header, "\n".join(lines) + "\n", report_path(args.out, args.quick, "multistream"),
                   time.perf_counter() - start)


if __name__ == "__main__":
    sys.exit(main())
