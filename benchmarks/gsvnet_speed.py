"""GSVNet speed on the CPU: key-frame interval, graph latencies, ONNX Runtime vs PyTorch.

Run from the repository root (the export extra, i.e. torch, must be installed):

    python benchmarks/gsvnet_speed.py [--height 512 --width 1024 --threads 2 --frames 60
                                       --repeat 1 --out benchmarks/results/gsvnet_cpu.md
                                       --bundle-dir DIR --quiet-wait 0]

What it does, all in ONE process and ONE run so that ratios are meaningful on a noisy
machine (absolute numbers drift from run to run; ratios measured side by side do not):

* Exports three GSVNet bundles (SwiftNet keyframe net, seeded random weights, seed 0) at
  HEIGHTxWIDTH into --bundle-dir, or reuses them when a valid bundle of exactly that
  config is already there: labels at full resolution (label_scale 1, as the official
  evaluation) computed in the graphs (label_path graph: bilinear resize + argmax) or on
  the host (label_path host: runtime.labels, the same labels), and label_scale 0.25
  (labels at 1/4, resized nearest by the runtime). The host bundle runs twice: with a
  pool of threads per session (the default) and with ONNX Runtime's one process-wide
  pool (thread_pool='shared'; its sessions are opened after all the others, as ORT
  requires). These are the VARIANTS; the first is the baseline of every "x" column.
* Runs each bundle with the torch-free runtime (ONNX Runtime CPU EP, --threads intra-op
  threads) on the shipped sample clip (768x576 frames, resized by the runtime), with a
  fixed key-frame interval of 1, 2, 3, 4 and 5. Interval 1 makes every frame a key
  frame: that is the per-frame keyframe net, the baseline of every speed-up. The first 2
  frames of every run are warm-up and not counted. Frames are decoded once, before any
  timing, so decoding is not measured; everything Pipeline.step does is (resize in,
  graphs, labels back to the frame's size).
* Runs the keyframe graph's PyTorch module (same seed, hence the same weights) in eager
  mode under torch.no_grad() with torch.set_num_threads(--threads), and the bundle's
  keyframe ONNX Runtime session, on the same real frames (preprocessed as the runtime
  does), alternating in blocks of 5 frames.
* Repetitions (--repeat) run everything again; the order of intervals and bundles is
  rotated each time and the two engines alternate in short blocks, so drift of the
  machine hits every configuration alike. Statistics pool all repetitions; with
  --repeat > 1 the FPS range over repetitions shows the run-to-run noise.

How to read the tables (printed to stdout and written to --out, atomically):

* "Pipeline vs key-frame interval": FPS = measured frames / summed per-frame wall time.
  "x interval 1" is the speed-up over the same bundle at interval 1 (the per-frame
  keyframe net). Goal of the issue: interval 5 >= 3x (the paper: 2.25x on a GPU).
  "outside ORT" is the share of wall time not spent inside ONNX Runtime session runs
  (preprocessing, orchestration, label resize back to the frame); goal < 5%.
* "Graphs at interval 5": mean latency per graph call, and the graph's GFLOPs from the
  manifest. Our GFLOPs are 2 x multiply-accumulates (MACs); the paper's "GFLOPs" are
  MACs (58.5 keyframe, 2.8 non-key, at 1024x2048), so compare the GMACs column, scaled
  by the pixel count when the resolution differs. Non-key / key latency should be well
  under 0.15 (the paper's MAC ratio is 2.8 / 58.5 = 0.048); latency ratios exceed MAC
  ratios because resizes, argmax and GridSample cost time but no counted MACs.
* "ONNX Runtime vs PyTorch eager": the keyframe graph alone, same inputs, same weights;
  "torch / ORT" > 1 means ONNX Runtime is faster. Label agreement checks that both
  really compute the same thing.
* "other processes' CPU": the share of all cores' time that other processes (and the
  hypervisor, "steal") took while that block ran, from /proc/stat. Anything above a few
  percent means the numbers of that row are pessimistic. On a shared machine pass
  --quiet-wait 30: each block then waits for a quiet machine and a disturbed block is
  measured again (at most twice).
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run from a checkout without installing

import numpy as np  # noqa: E402

from benchmarks._common import (CpuMonitor, fmt, cpu_load, clip_frames, code_version, ensure_bundle,  # noqa: E402
                                cpu_model, disturbance, log, measure, publish)

INTERVALS = (1, 2, 3, 4, 5)
# variant -> (label_scale, label_path, thread_pool)
VARIANTS = {
    "graph labels": (1.0, "graph", "per_session"),
    "host labels": (1.0, "host", "per_session"),
    "host labels, shared pool": (1.0, "host", "shared"),
    "graph labels at 1/4": (0.25, "graph", "per_session"),
}
BASELINE = "graph labels"
VARIANTS_ORDER = tuple(VARIANTS)
WARMUP = 2
SEED = 0
PAPER_GMACS = {"keyframe": 58.5, "non-key": 2.8}  # GSVNet paper (SwiftNet-R18 at 0.75), 1024x2048
PAPER_PIXELS = 1024 * 2048


# --- setup ------------------------------------------------------------------------------


def gsvnet_bundle(bundle_dir: Path, cfg) -> Path:
    from vss_edge.exporters.gsvnet import export_gsvnet

    path = bundle_dir / f"gsvnet_{cfg.height}x{cfg.width}_label{cfg.label_scale:g}_{cfg.label_path}"
    return ensure_bundle(path, cfg, "gsvnet", export_gsvnet, SEED)


# --- measurements ---------------------------------------------------------------------------


def run_pipeline(manifest, sessions, interval: int, frames) -> tuple[list, float]:
    """FrameResults after warm-up for one pass over frames at a fixed interval; and its wall s."""
    from vss_edge.runtime import FixedInterval, Pipeline

    pipe = Pipeline(manifest, sessions, FixedInterval(interval))  # shares the warm sessions
    results = []
    t0 = time.perf_counter()
    for frame in frames:
        result = pipe.step(frame)
        result.labels = None
        results.append(result)
    return results[WARMUP:], time.perf_counter() - t0


def graphs_alone(manifest, sessions, frames, calls: int = 6) -> dict[str, float]:
    """Mean ms per call of each graph run alone, back to back on the feeds it got in the pipeline
    (interval 5), to set against its mean inside the pipeline (where the small graphs' pools
    sleep between calls)."""
    from vss_edge.runtime import FixedInterval, Pipeline

    feeds: dict[str, list] = {}

    class Recording:
        def __init__(self, name, session):
            self.name, self.session = name, session

        def __getattr__(self, attr):
            return getattr(self.session, attr)

        def run(self, inputs, host_outputs=()):
            feeds.setdefault(self.name, []).append(dict(inputs))
            return self.session.run(inputs, host_outputs)

    pipe = Pipeline(manifest, sessions, FixedInterval(5))
    with pipe.wrapped_sessions(lambda name, session: Recording(name, session)):
        for frame in frames[:WARMUP + 10]:
            pipe.step(frame)
    alone = {}
    for name, recorded in feeds.items():
        session, samples = sessions[name], recorded[-calls:]
        session.run(samples[0])  # warm
        t0 = time.perf_counter()
        for feed in samples:
            session.run(feed)
        alone[name] = (time.perf_counter() - t0) * 1000.0 / len(samples)
    return alone


def run_engines(torch_graph, ort_session, inputs, rep: int, block: int = 5) -> dict:
    """Keyframe graph in PyTorch eager vs ONNX Runtime on the same inputs; ms after warm-up.

    The engines alternate in blocks of `block` frames (which engine starts alternates too):
    often enough that drift hits both alike, seldom enough that one engine's idle, still
    spinning worker threads rarely overlap the other's timed calls.
    """
    import torch

    def run(engine: str, image: np.ndarray) -> np.ndarray:
        if engine == "torch":
            with torch.no_grad():
                return torch_graph(torch.from_numpy(image))[1].numpy()
        return ort_session.run({"image": image}, ("labels",))["labels"]

    times = {"torch": [], "ort": []}
    agreement = []
    for b, first in enumerate(range(0, len(inputs), block)):
        chunk = list(enumerate(inputs[first:first + block], start=first))
        labels = {}
        for engine in (("torch", "ort") if (b + rep) % 2 == 0 else ("ort", "torch")):
            for i, image in chunk:
                t0 = time.perf_counter()
                labels[engine, i] = run(engine, image)
                if i >= WARMUP:
                    times[engine].append((time.perf_counter() - t0) * 1000.0)
        agreement += [float(np.mean(labels["torch", i] == labels["ort", i])) for i, _ in chunk if i >= WARMUP]
    return {**times, "agreement": agreement}


# --- tables -----------------------------------------------------------------------------------


def pipeline_table(ls: str, summaries: dict, fps_reps: dict, base_fps: float, repeat: int,
                   monitors: dict) -> list[str]:
    cols = ["interval", "frames (key)", "FPS"]
    if repeat > 1:
        cols.append("FPS min-max over reps")
    cols += ["x interval 1", f"x {BASELINE} interval 1", "mean ms", "p50 ms", "p99 ms",
             "key ms", "non-key ms", "non-key / key", "outside ORT", "other processes' CPU"]
    lines = [f"### Pipeline vs key-frame interval, {ls}", "",
             "| " + " | ".join(cols) + " |", "|" + "---:|" * len(cols)]
    fps1 = summaries[1]["fps"]
    for interval in INTERVALS:
        s = summaries[interval]
        row = [str(interval), f"{s['frames']} ({s['key_frames']})", f"{s['fps']:.2f}"]
        if repeat > 1:
            row.append(f"{min(fps_reps[interval]):.2f}-{max(fps_reps[interval]):.2f}")
        row += [f"{s['fps'] / fps1:.2f}x", f"{s['fps'] / base_fps:.2f}x", fmt(s["frame"]["mean_ms"]),
                fmt(s["frame"]["p50_ms"]), fmt(s["frame"]["p99_ms"]), fmt(s["key_frame"].get("mean_ms")),
                fmt(s["non_key_frame"].get("mean_ms")), fmt(s["non_key_over_key"], ".3f"),
                f"{100 * s['outside_ort_share']:.1f}%", cpu_load(monitors[interval])]
        lines.append("| " + " | ".join(row) + " |")
    return lines + [""]


def graphs_table(summaries_i5: dict, pixels: int, alone: dict) -> list[str]:
    scale = pixels / PAPER_PIXELS
    lines = ["### Graphs at interval 5 (mean latency per call; alone: the same graph run back to back on "
             "the feeds it got in the pipeline)", "",
             "| variant | graph | role | calls | mean ms | p50 ms | p99 ms | alone ms | in pipeline / alone "
             f"| GFLOPs (2 x MACs) | GMACs | paper GMACs at 1024x2048 (x{scale:g} for this resolution) |",
             "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for ls, s in summaries_i5.items():
        for name, g in s["graphs"].items():
            gflops = g.get("gflops")
            paper = {"keyframe": f"{PAPER_GMACS['keyframe']} ({PAPER_GMACS['keyframe'] * scale:.1f})",
                     "flow": f"{PAPER_GMACS['non-key']} for flow + propagation "
                             f"({PAPER_GMACS['non-key'] * scale:.2f})"}.get(name, "")
            solo = alone.get(ls, {}).get(name)
            ratio = g["mean_ms"] / solo if solo and g.get("mean_ms") else None
            lines.append(f"| {ls} | {name} | {g['role']} | {g['count']} | {fmt(g.get('mean_ms'))} | "
                         f"{fmt(g.get('p50_ms'), '.1f')} | {fmt(g.get('p99_ms'))} | {fmt(solo)} | "
                         f"{fmt(ratio, '.2f')} | {fmt(gflops, '.2f')} | "
                         f"{fmt(gflops / 2 if gflops is not None else None, '.2f')} | {paper} |")
    return lines + [""]


def ratios_lines(summaries_i5: dict) -> list[str]:
    lines = ["| variant | non-key / key latency (goal < 0.15) | (flow + propagation) / keyframe MACs "
             f"(paper {PAPER_GMACS['non-key'] / PAPER_GMACS['keyframe']:.3f}) |", "|---:|---:|---:|"]
    for ls, s in summaries_i5.items():
        g = s["graphs"]
        try:
            macs = (g["flow"]["gflops"] + g["propagation"]["gflops"]) / g["keyframe"]["gflops"]
        except (KeyError, TypeError):
            macs = None
        lines.append(f"| {ls} | {fmt(s['non_key_over_key'], '.3f')} | {fmt(macs, '.3f')} |")
    return lines + [""]


def engines_table(engines: dict, threads: int, monitor: CpuMonitor) -> list[str]:
    t, o = np.asarray(engines["torch"]), np.asarray(engines["ort"])
    agree = np.asarray(engines["agreement"])
    lines = [f"### Keyframe graph: ONNX Runtime vs PyTorch eager ({threads} threads, label_scale 1)", "",
             "| engine | calls | mean ms | p50 ms | p99 ms | max ms |", "|---|---:|---:|---:|---:|---:|"]
    for name, a in (("PyTorch eager (no_grad)", t), ("ONNX Runtime CPU EP", o)):
        lines.append(f"| {name} | {a.size} | {a.mean():.1f} | {np.percentile(a, 50):.1f} | "
                     f"{np.percentile(a, 99):.1f} | {a.max():.1f} |")
    lines += ["", f"torch / ORT mean latency: {t.mean() / o.mean():.2f}x (> 1: ONNX Runtime faster); "
                  f"label agreement torch vs ORT: mean {100 * agree.mean():.3f}%, min {100 * agree.min():.3f}%; "
                  f"other processes' CPU meanwhile: {cpu_load(monitor)}", ""]
    return lines


def goals_table(summaries: dict, engines: dict) -> list[str]:
    lines = ["### Goals", "", "| goal | " + " | ".join(summaries) + " |", "|---|" + "---:|" * len(summaries)]

    def row(name, values):
        lines.append(f"| {name} | " + " | ".join(values) + " |")

    def mark(ok):
        return "met" if ok else "NOT met"

    row("interval 5 >= 3x interval 1 (same bundle)",
        [f"{s[5]['fps'] / s[1]['fps']:.2f}x, {mark(s[5]['fps'] / s[1]['fps'] >= 3)}" for s in summaries.values()])
    base = summaries[BASELINE][1]["fps"]
    row(f"interval 5 >= 3x {BASELINE} interval 1",
        [f"{s[5]['fps'] / base:.2f}x, {mark(s[5]['fps'] / base >= 3)}" for s in summaries.values()])
    row("non-key / key latency < 0.15 (interval 5)",
        [f"{fmt(r, '.3f')}, {mark(r is not None and r < 0.15)}"
         for r in (s[5]["non_key_over_key"] for s in summaries.values())])
    row("outside ORT < 5% (worst interval)",
        [f"{100 * max(x['outside_ort_share'] for x in s.values()):.1f}%, "
         f"{mark(max(x['outside_ort_share'] for x in s.values()) < 0.05)}" for s in summaries.values()])
    ratio = np.mean(engines["torch"]) / np.mean(engines["ort"])
    lines.append(f"| ONNX Runtime faster than PyTorch eager (keyframe graph, {BASELINE}) | {ratio:.2f}x, "
                 f"{mark(ratio > 1)} |" + " - |" * (len(summaries) - 1))
    return lines + [""]


# --- main ---------------------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--height", type=int, default=512)
    p.add_argument("--width", type=int, default=1024)
    p.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads and torch threads")
    p.add_argument("--frames", type=int, default=60, help="frames per run, warm-up included (clip cycled)")
    p.add_argument("--repeat", type=int, default=1, help="repetitions of every measurement, interleaved")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "gsvnet_cpu.md"))
    p.add_argument("--bundle-dir", help="where bundles are exported / reused (default: a temporary folder)")
    p.add_argument("--quiet-wait", type=float, default=0.0, metavar="S",
                   help="before each measured block, wait up to S seconds for other processes to use "
                        "< 10%% of the CPU, and measure a disturbed block again (at most twice); "
                        "default 0: no waiting, the tables report the other processes' share anyway")
    args = p.parse_args(argv)
    least = max(INTERVALS) + WARMUP  # every run must measure key and non-key frames
    if args.frames < least or args.repeat < 1 or args.threads < 1:
        p.error(f"--frames must be >= {least}, --repeat and --threads >= 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    code = code_version()  # before anything is imported: the code that is measured
    import onnxruntime
    import torch

    from vss_edge import runtime
    from vss_edge.exporters.gsvnet import build_model
    from vss_edge.runtime.preprocess import to_graph_input
    from vss_edge.runtime.profiling import summarize
    from vss_edge.runtime.session import open_sessions
    from vss_edge.configs import GSVNetConfig

    torch.set_num_threads(args.threads)
    cfgs = {v: GSVNetConfig(height=args.height, width=args.width, label_scale=ls, label_path=lp)
            for v, (ls, lp, _) in VARIANTS.items()}

    with tempfile.TemporaryDirectory(prefix="gsvnet_speed_") as tmp:
        bundle_dir = Path(args.bundle_dir) if args.bundle_dir else Path(tmp)
        bundle_dir.mkdir(parents=True, exist_ok=True)
        bundles = {ls: gsvnet_bundle(bundle_dir, cfg) for ls, cfg in cfgs.items()}
        export_s = time.perf_counter() - start

        frames = clip_frames(args.frames)
        manifests = {v: runtime.load_manifest(b) for v, b in bundles.items()}
        order = sorted(VARIANTS, key=lambda v: VARIANTS[v][2] == "shared")  # ORT: per-session pools first
        sessions = {v: open_sessions(manifests[v], device="cpu", threads=args.threads, thread_pool=VARIANTS[v][2])
                    for v in order}
        model, _ = build_model(cfgs[BASELINE], seed=SEED)
        torch_keyframe = model.graphs()["keyframe"].eval()
        inputs = [to_graph_input(f, args.height, args.width) for f in frames]

        pooled = {ls: {i: [] for i in INTERVALS} for ls in VARIANTS_ORDER}
        monitors = {ls: {i: CpuMonitor() for i in INTERVALS} for ls in VARIANTS_ORDER}
        engines_monitor = CpuMonitor()
        fps_reps = {ls: {i: [] for i in INTERVALS} for ls in VARIANTS_ORDER}
        engines = {"torch": [], "ort": [], "agreement": []}
        for rep in range(args.repeat):
            order = INTERVALS[rep % len(INTERVALS):] + INTERVALS[:rep % len(INTERVALS)]
            for k, interval in enumerate(order):
                scales = VARIANTS_ORDER if (rep + k) % 2 == 0 else VARIANTS_ORDER[::-1]  # alternate the order
                for ls in scales:
                    results, wall = measure(lambda: run_pipeline(manifests[ls], sessions[ls], interval, frames),
                                            args.quiet_wait, monitors[ls][interval],
                                            f"{ls}, interval {interval}")
                    s = summarize(results, manifests[ls])
                    pooled[ls][interval] += results
                    fps_reps[ls][interval].append(s["fps"])
                    log(f"rep {rep + 1}/{args.repeat} {ls}, interval {interval}: "
                        f"{s['fps']:.2f} FPS ({wall:.1f} s)")
                if k == len(order) // 2:  # engines in the middle of the repetition
                    t0 = time.perf_counter()
                    e = measure(lambda: run_engines(torch_keyframe, sessions[BASELINE]["keyframe"], inputs, rep),
                                args.quiet_wait, engines_monitor, "keyframe torch vs ORT")
                    for key in engines:
                        engines[key] += e[key]
                    log(f"rep {rep + 1}/{args.repeat} keyframe torch {np.mean(e['torch']):.1f} ms, "
                        f"ORT {np.mean(e['ort']):.1f} ms ({time.perf_counter() - t0:.1f} s)")

        alone = {ls: graphs_alone(manifests[ls], sessions[ls], frames) for ls in VARIANTS_ORDER}

    everything = CpuMonitor()
    for m in [engines_monitor] + [m for per in monitors.values() for m in per.values()]:
        everything.add(m)
    summaries = {ls: {i: summarize(pooled[ls][i], manifests[ls]) for i in INTERVALS} for ls in VARIANTS_ORDER}
    base_fps = summaries[BASELINE][1]["fps"]
    total_s = time.perf_counter() - start

    body = []
    for ls in VARIANTS_ORDER:
        body += pipeline_table(ls, summaries[ls], fps_reps[ls], base_fps, args.repeat, monitors[ls])
    summaries_i5 = {ls: summaries[ls][5] for ls in VARIANTS_ORDER}
    body += graphs_table(summaries_i5, args.height * args.width, alone)
    body += ratios_lines(summaries_i5)
    body += engines_table(engines, args.threads, engines_monitor)
    body += goals_table(summaries, engines)
    text = "\n".join(body)

    import cv2

    header = [
        f"# GSVNet CPU speed, {args.height}x{args.width}", "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}",
        f"- CPU: {cpu_model()}, {os.cpu_count()} logical cores",
        f"- threads: {args.threads} (ONNX Runtime intra-op, CPU EP; torch.set_num_threads for PyTorch; "
        f"OpenCV default: {cv2.getNumThreads()})",
        f"- onnxruntime {onnxruntime.__version__}, torch {torch.__version__}, numpy {np.__version__}, "
        f"opencv {cv2.__version__}, Python {platform.python_version()}",
        f"- input: sample clip (768x576) resized by the runtime to {args.width}x{args.height}; "
        f"{args.frames} frames per run, first {WARMUP} warm-up; {args.repeat} repetition(s), interleaved",
        f"- code: {code}",
        f"- weights: seeded random (seed {SEED}); speed does not depend on the weights",
        disturbance(everything),
        f"- run time: {total_s / 60:.1f} min (export / bundle check {export_s:.0f} s); "
        f"command: `python benchmarks/gsvnet_speed.py {' '.join(sys.argv[1:])}`".rstrip(), "",
    ]
    return publish(header, text, args.out, total_s)


if __name__ == "__main__":
    sys.exit(main())
