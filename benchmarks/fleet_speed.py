"""`vss-edge fleet run` on Ray: throughput with 1 vs 2 workers, overhead against plain `run`, Ray's start-up.

Run from the repository root (the fleet extra installed: `pip install -e .[dev]`):

    python benchmarks/fleet_speed.py [--clips 8 --frames 60 --repeat 1 --bundle B --quiet-wait 0 --out F]
    python benchmarks/fleet_speed.py --quick     # a tiny run proving the script works

What it does:

* Writes --clips clips of --frames frames each, cut from the sample clip at its size (768x576,
  MPEG-4, each from its own offset, looping), into a temporary folder. The bundle is the shipped
  demo bundle (GSVNet 288x384, trained weights) unless --bundle.
* Ray start-up: `ray.init` of a local runtime with this machine's CPUs (what `fleet` does without
  --ray-address) until it answers, and its `ray.shutdown`, --repeat times.
* Fleets, on one local Ray runtime started once (its start-up is the row above): `run_fleet` over
  every clip into a fresh --out (overlay videos and summaries, as `fleet run` writes them) with
  1 worker x 1 thread, 2 workers x 1 thread and 1 worker x 2 threads. Wall time from the call to
  the report written, so it includes the workers' start (a process each: imports, sessions).
  Reported: frames / wall (throughput), x the 1 x 1 fleet, and the workers' busy share (the
  videos' summed time over workers x wall: the rest is starting and waiting).
* Plain `run` over the same clips in this process, no Ray: the bundle loaded once, then
  `run_source` per clip (what each fleet worker does), with 1 and 2 threads; and `vss-edge run`
  per clip as a new process each (what a shell loop does). The fleet's overhead is its wall time
  over the plain in-process run's with the same threads.
* Blocks are interleaved (repetitions rotate the order) and each row says how much CPU other
  processes took meanwhile (benchmarks/_common.py; the processes below this one, Ray's and
  `vss-edge run`'s, count as this run's).
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run from a checkout without installing

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks._common import (CpuMonitor, clip_frames, cpu_load, log, measure, publish, report_header,  # noqa: E402
                                report_path)

FLEETS = ((1, 1), (2, 1), (1, 2))  # (workers, threads)
PLAIN_THREADS = (1, 2)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clips", type=int, default=8)
    p.add_argument("--frames", type=int, default=60, help="frames per clip")
    p.add_argument("--repeat", type=int, default=1, help="interleaved repetitions of every block")
    p.add_argument("--bundle", help="bundle to run (default: the shipped demo bundle)")
    p.add_argument("--quiet-wait", type=float, default=0.0,
                   help="wait up to S s for a quiet machine before each block; re-measure a disturbed one")
    p.add_argument("--out", help="report (default benchmarks/results/fleet_cpu.md; --quick: a temporary file)")
    p.add_argument("--quick", action="store_true", help="4 clips of 12 frames: proves the script runs")
    args = p.parse_args(argv)
    if args.quick:
        args.clips, args.frames = 4, 12
    return args


def write_clips(folder: Path, clips: int, frames: int) -> list[str]:
    source = clip_frames(60)
    h, w = source[0].shape[:2]
    paths = []
    for c in range(clips):
        path = folder / f"clip{c}.mp4"
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (w, h))
        for t in range(frames):
            writer.write(source[(c * 7 + t) % len(source)])
        writer.release()
        paths.append(str(path))
    return paths


def ray_startup(cpus: int) -> tuple[float, float]:
    """(seconds until a local runtime answers, seconds to shut it down)."""
    import ray

    start = time.perf_counter()
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
             object_store_memory=128 * 1024 * 1024)
    ray.cluster_resources()
    up = time.perf_counter() - start
    start = time.perf_counter()
    ray.shutdown()
    return up, time.perf_counter() - start


def fleet_once(bundle, clips, out: Path, workers: int, threads: int) -> dict:
    from vss_edge.fleet import FleetTask, list_videos, run_fleet

    shutil.rmtree(out, ignore_errors=True)
    task = FleetTask("run", (str(bundle),), str(out), {"threads": threads}, {"save_labels": False})
    start = time.perf_counter()
    report = run_fleet(task, list_videos(clips), workers=workers, threads=threads, quiet=True)
    wall = time.perf_counter() - start
    assert report["counts"]["done"] == len(clips), report["counts"]
    busy = sum(e["wall_s"] for e in report["per_video"])
    return {"wall": wall, "frames": report["frames"], "busy": busy / (workers * wall)}


def plain_once(bundle, clips, out: Path, threads: int) -> dict:
    from vss_edge import runtime
    from vss_edge.runtime.sources import open_source
    from vss_edge.source_runs import run_source

    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    pipe = runtime.load(bundle, threads=threads)
    frames = 0
    for clip in clips:
        pipe.reset()
        with open_source(clip) as source:
            frames += run_source(pipe, source, out / Path(clip).stem, False, None, quiet=True)["frames_read"]
    return {"wall": time.perf_counter() - start, "frames": frames, "busy": None}


def cli_once(bundle, clips, out: Path, threads: int) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    for clip in clips:
        subprocess.run([sys.executable, "-m", "vss_edge", "-q", "run", str(bundle), clip, "--out",
                        str(out / Path(clip).stem), "--threads", str(threads)], check=True, cwd=ROOT,
                       stdout=subprocess.DEVNULL)
    return {"wall": time.perf_counter() - start, "frames": None, "busy": None}


def main(argv=None) -> int:
    args = parse_args(argv)
    import ray

    from vss_edge import runtime
    from vss_edge.demo_weights import DEMO_BUNDLE
    from vss_edge.runtime.session import usable_cpus

    start = time.perf_counter()
    bundle = Path(args.bundle) if args.bundle else DEMO_BUNDLE
    manifest = runtime.load_manifest(bundle)
    cpus = usable_cpus()
    work = Path(tempfile.mkdtemp(prefix="fleet_speed_"))
    try:
        clips = write_clips(work, args.clips, args.frames)
        total_frames = args.clips * args.frames
        monitor = CpuMonitor(tree=True)  # Ray's workers and `vss-edge run`'s processes are this run's own
        startups, shutdowns, startup_monitor = [], [], CpuMonitor(tree=True)
        for r in range(args.repeat):
            log(f"repetition {r + 1}: Ray start-up")
            up, down = measure(lambda: ray_startup(cpus), args.quiet_wait, startup_monitor, "ray start-up")
            startups.append(up)
            shutdowns.append(down)
        monitor.add(startup_monitor)

        blocks = [("fleet", w, t) for w, t in FLEETS] + [("plain", 1, t) for t in PLAIN_THREADS] + [("cli", 1, 1)]
        results = {b: {"wall": [], "busy": [], "monitor": CpuMonitor(tree=True)} for b in blocks}
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
                 object_store_memory=128 * 1024 * 1024)
        try:
            log("warm-up: one untimed fleet and plain run (page cache, first sessions)")
            fleet_once(bundle, clips, work / "warm", 1, 1)
            plain_once(bundle, clips, work / "warm", 1)
            for r in range(args.repeat):
                order = blocks[r % len(blocks):] + blocks[:r % len(blocks)]
                for kind, workers, threads in order:
                    log(f"repetition {r + 1}: {kind}, {workers} worker(s) x {threads} thread(s)")
                    once = {"fleet": lambda: fleet_once(bundle, clips, work / "out", workers, threads),
                            "plain": lambda: plain_once(bundle, clips, work / "out", threads),
                            "cli": lambda: cli_once(bundle, clips, work / "out", threads)}[kind]
                    block = results[(kind, workers, threads)]
                    got = measure(once, args.quiet_wait, block["monitor"], f"{kind} {workers}x{threads}")
                    block["wall"].append(got["wall"])
                    block["busy"].append(got["busy"])
        finally:
            ray.shutdown()
        for block in results.values():
            monitor.add(block["monitor"])
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def fps(key):
        return total_frames / float(np.mean(results[key]["wall"]))

    base = fps(("fleet", 1, 1))
    labels = {"fleet": "`fleet run` (Ray, in-process runtime already up)", "plain": "plain `run_source` loop, "
              "no Ray (bundle loaded once)", "cli": "`vss-edge run` per clip (a process each)"}
    lines = [f"## {args.clips} clips x {args.frames} frames ({total_frames} frames, 768x576 in, overlay videos out)",
             "",
             "| how | workers x threads | wall s (mean) | FPS | x fleet 1 x 1 | fleet / plain (same threads) "
             "| workers busy | other processes' CPU |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    for key in blocks:
        kind, workers, threads = key
        block = results[key]
        wall = float(np.mean(block["wall"]))
        plain_key = ("plain", 1, threads)
        overhead = (f"{wall / float(np.mean(results[plain_key]['wall'])):.2f}"
                    if kind == "fleet" and workers == 1 and plain_key in results else "-")
        busy = f"{100 * float(np.mean(block['busy'])):.0f}%" if kind == "fleet" else "-"
        lines.append(f"| {labels[kind]} | {workers} x {threads} | {wall:.2f} | {fps(key):.1f} | "
                     f"{fps(key) / base:.2f} | {overhead} | {busy} | {cpu_load(block['monitor'])} |")
    overhead = np.mean(results[("fleet", 1, 1)]["wall"]) / np.mean(results[("plain", 1, 1)]["wall"])
    lines += ["", f"2 workers / 1 worker (1 thread each): **{fps(('fleet', 2, 1)) / base:.2f}x** the throughput; "
                  f"fleet of 1 worker / plain run (1 thread): **{overhead:.2f}x** the wall time.", "",
              "## Ray start-up (a local runtime, as `fleet` without --ray-address)", "",
              "| | mean s | min s | max s |", "|---|---:|---:|---:|",
              f"| `ray.init` until it answers ({cpus} CPUs) | {np.mean(startups):.2f} | {min(startups):.2f} | "
              f"{max(startups):.2f} |",
              f"| `ray.shutdown` | {np.mean(shutdowns):.2f} | {min(shutdowns):.2f} | {max(shutdowns):.2f} |", "",
              f"Other processes' CPU during the start-ups: {cpu_load(startup_monitor)}.", ""]
    import ray as ray_module

    header = report_header(
        f"Fleet run on Ray: {manifest.method} {manifest.height}x{manifest.width}", "1 or 2 (per row)",
        [f"bundle {bundle}" + (" (--quick)" if args.quick else ""), f"ray {ray_module.__version__}, {cpus} CPUs given "
         f"to the local runtime; {args.repeat} repetition(s), blocks interleaved"], monitor)
    return publish(header, "\n".join(lines) + "\n", report_path(args.out, args.quick, "fleet"),
                   time.perf_counter() - start)


if __name__ == "__main__":
    sys.exit(main())
