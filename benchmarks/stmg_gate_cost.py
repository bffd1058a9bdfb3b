"""What STMG's ONNX `If` gates cost: the partial graph with every block kept vs the same
graph with the gates inlined (exporters.gating.ungate), and where the time goes.

Run from the repository root (the export extra, i.e. torch, must be installed):

    python benchmarks/stmg_gate_cost.py [--backbone ddrnet39 --height 512 --width 1024 --threads 2
                                         --calls 8 --repeat 3 --out benchmarks/results/stmg_gates_cpu.md]

One process, interleaved A/B calls on the same real frames, at ORT_ENABLE_ALL (as the runtime
opens FP32 graphs). The op profile (ORT's profiler, one extra session each) counts the Conv
kernels that run inside If branches: ONNX Runtime's NCHWc layout pass rewrites the
top-level graph only, so convolutions inside a branch run in plain NCHW.
"""
from __future__ import annotations

import argparse
import collections
import json
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

from benchmarks._common import CpuMonitor, clip_frames, measure, publish, report_header  # noqa: E402
from benchmarks.stmg_speed import SEED, ensure_stmg  # noqa: E402


def _session(model_bytes: bytes, threads: int, profile_prefix: str | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


def op_profile(model_bytes: bytes, feeds: dict, threads: int, tmp: str) -> dict[str, tuple[float, float]]:
    """op type -> (kernel calls per run, ms per run) over 3 profiled runs (after one warm-up)."""
    session = _session(model_bytes, threads, os.path.join(tmp, "profile"))
    session.run(None, feeds)
    for _ in range(3):
        session.run(None, feeds)
    events = json.loads(Path(session.end_profiling()).read_text())
    calls, us = collections.Counter(), collections.Counter()
    for e in events[len(events) // 4:]:  # drop most of the warm-up's events (a quarter: 1 run of 4)
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            calls[e["args"]["op_name"]] += 1
            us[e["args"]["op_name"]] += e["dur"]
    return {op: (calls[op] / 3, us[op] / 3000) for op in us}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", choices=("ddrnet23_slim", "ddrnet39"), default="ddrnet39")
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calls", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quiet-wait", type=float, default=0.0)
    parser.add_argument("--bundle-dir", default=os.path.join(tempfile.gettempdir(), "vss_edge_bench"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "stmg_gates_cpu.md"))
    args = parser.parse_args(argv)
    t_start = time.perf_counter()

    import onnx

    from vss_edge.exporters.gating import ungate
    from vss_edge.runtime.preprocess import to_graph_input
    from vss_edge.configs import STMGConfig

    cfg = STMGConfig(height=args.height, width=args.width, backbone=args.backbone)
    bundle = ensure_stmg(Path(args.bundle_dir), cfg)
    gated = onnx.load(str(bundle / "partial.onnx"))
    variants = {"gated, every block kept": gated.SerializeToString(), "gates inlined": ungate(gated).SerializeToString()}
    images = [to_graph_input(f, cfg.height, cfg.width) for f in clip_frames(4)]
    keep = np.ones(cfg.num_blocks, dtype=bool)

    def feeds(name, image):
        return {"image": image, "keep": keep} if name.startswith("gated") else {"image": image}

    sessions = {name: _session(b, args.threads) for name, b in variants.items()}
    ms = {name: [] for name in variants}
    monitor = CpuMonitor()
    for rep in range(args.repeat):
        for name in (list(variants) if rep % 2 == 0 else list(variants)[::-1]):
            def block():
                for c in range(args.calls):
                    t0 = time.perf_counter()
                    sessions[name].run(None, feeds(name, images[c % len(images)]))
                    ms[name].append((time.perf_counter() - t0) * 1000.0)
            measure(block, args.quiet_wait, monitor, name)

    base = float(np.mean(ms["gates inlined"]))
    lines = ["## Partial graph, every block kept", "",
             f"{args.calls} calls x {args.repeat} repetitions each, interleaved.", "",
             "| graph | mean ms | p50 | / gates inlined |", "|---|---:|---:|---:|"]
    for name, v in ms.items():
        lines.append(f"| {name} | {np.mean(v):.1f} | {np.median(v):.1f} | {np.mean(v) / base:.3f} |")
    lines += ["", "## Op profile (ms per run)", "", "| op | gated: calls | gated: ms | inlined: calls | inlined: ms |",
              "|---|---:|---:|---:|---:|"]
    with tempfile.TemporaryDirectory() as tmp:
        profiles = {name: op_profile(b, feeds(name, images[0]), args.threads, tmp) for name, b in variants.items()}
    ops = sorted(set().union(*profiles.values()), key=lambda op: -max(p.get(op, (0, 0))[1] for p in profiles.values()))
    for op in ops[:10]:
        cells = [f"{p[op][0]:.0f} | {p[op][1]:.1f}" if op in p else "- | -" for p in profiles.values()]
        lines.append(f"| {op} | " + " | ".join(cells) + " |")
    lines += ["", "- `If` time includes the kernels of the branch taken (they are also listed under their own op: "
              "FusedConv = NCHW conv+activation inside a branch; Conv at top level runs NCHWc after the layout pass)", ""]
    header = report_header(f"STMG ({cfg.backbone}) gate cost on the CPU, {cfg.height}x{cfg.width}", args.threads,
                           [f"seeded random weights (seed {SEED})"], monitor)
    return publish(header, "\n".join(lines), args.out, time.perf_counter() - t_start)


if __name__ == "__main__":
    sys.exit(main())
