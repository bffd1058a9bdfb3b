"""What INT8 and FP16 buy and cost on this machine, for a GSVNet bundle.

Exports (or reuses) an FP32 GSVNet bundle, calibrates an INT8 (minmax, frames 0:30 of
the sample clip) and an FP16 version, then, side by side in one run:
1. per graph: mean latency of the FP32, INT8 and FP16 graph on the same recorded real
   inputs, in the runtime's own sessions (CPU EP, --threads), alternated in blocks;
2. the whole pipeline at interval 5 on frames 30:60 (never calibrated on): FPS of each;
3. accuracy: mIoU and pixel agreement of INT8 / FP16 labels with FP32 on frames 30:60.
The pipeline table also has "int8-keyframe": only the keyframe graph in INT8.
Weights are seeded random unless --bundle is an export of real weights, so the
agreement figures say how far the numerics move, not what a trained model loses.

    python benchmarks/calibration_speed.py [--height 512 --width 1024 --threads 2]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import CpuMonitor, fmt, code_version, cpu_model, ensure_bundle, log, measure  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--height", type=int, default=512)
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bundle-dir", default=None, help="where bundles are exported / reused")
    ap.add_argument("--rounds", type=int, default=3, help="alternating timing rounds per graph")
    ap.add_argument("--quiet-wait", type=float, default=0.0)
    ap.add_argument("--out", default="benchmarks/results/calibration_cpu.md")
    args = ap.parse_args()

    from vss_edge import runtime
    from vss_edge.calibration.check import compare_pipelines
    from vss_edge.runtime.sources import read_frames
    from vss_edge.calibration.collect import FrameRange, collect_inputs
    from vss_edge.runtime.cpu import int8_speed_warning
    from vss_edge.calibration.quantize import CalibrationConfig, calibrate_bundle
    from vss_edge.exporters.gsvnet import export_gsvnet
    from vss_edge.configs import GSVNetConfig
    from vss_edge.runtime.sources import sample_clip_path
    from vss_edge.runtime.outputs import write_text_atomic

    started = time.perf_counter()
    video = sample_clip_path()
    root = Path(args.bundle_dir or tempfile.mkdtemp(prefix="vss-calib-bench-"))
    cfg = GSVNetConfig(height=args.height, width=args.width)
    fp32 = root / f"gsvnet_{args.height}x{args.width}"
    ensure_bundle(fp32, cfg, "gsvnet", export_gsvnet, 0)
    bundles = {"fp32": fp32}
    for precision in ("int8", "fp16"):
        log(f"calibrating {precision}")
        bundles[precision], _ = calibrate_bundle(fp32, video, root / f"{fp32.name}.{precision}", CalibrationConfig(
            precision=precision, calibration_frames="0:30", evaluation_frames="30:60"))
    # Mixed: only the keyframe graph in INT8 (the small per-frame graphs gain nothing from QDQ here).
    bundles["int8-keyframe"], _ = calibrate_bundle(fp32, video, root / f"{fp32.name}.int8-keyframe", CalibrationConfig(
        precision="int8", calibration_frames="0:30", evaluation_frames="30:60",
        keep_float_graphs=("flow", "propagation")))

    # 1. Per graph on the same recorded inputs (reference FP32 inputs, frames 0:30).
    feeds = collect_inputs(fp32, video, FrameRange(0, 30), threads=args.threads)
    times: dict[tuple[str, str], list[float]] = {}
    monitor = CpuMonitor()
    manifests = {p: runtime.load_manifest(b) for p, b in bundles.items() if p != "int8-keyframe"}
    pipelines = {p: runtime.load(bundles[p], device="cpu", threads=args.threads) for p in manifests}
    for graph in manifests["fp32"].graphs:
        # The runtime's own sessions: the settings it picks per precision are part of what is measured.
        sessions = {p: pipelines[p].sessions[graph].session for p in manifests}
        samples = feeds[graph][:8]
        for s in sessions.values():
            s.run(None, samples[0])  # warm-up
        for _ in range(args.rounds):
            for precision, session in sessions.items():
                def block():
                    out = []
                    for feed in samples:
                        t0 = time.perf_counter()
                        session.run(None, feed)
                        out.append((time.perf_counter() - t0) * 1000)
                    return out
                times.setdefault((graph, precision), []).extend(
                    measure(block, args.quiet_wait, monitor, f"{graph} {precision}"))

    # 2 + 3. Pipelines at interval 5 on frames 30:60, each against FP32.
    frames = read_frames(video, 30, 60)
    ref = runtime.load(fp32, device="cpu", threads=args.threads)
    pipes = {p: runtime.load(b, device="cpu", threads=args.threads) for p, b in bundles.items() if p != "fp32"}
    end_to_end = {p: measure(lambda p=p: compare_pipelines(ref, pipe, frames), args.quiet_wait, monitor, p)
                  for p, pipe in pipes.items()}

    lines = [f"# INT8 / FP16 vs FP32, GSVNet {args.height}x{args.width}", "",
             f"- date: {datetime.now(timezone.utc).isoformat(timespec='seconds')}",
             f"- CPU: {cpu_model()}; {int8_speed_warning() or 'VNNI present'}",
             f"- threads: {args.threads} (ONNX Runtime CPU EP); code: {code_version()}",
             "- calibration: minmax, frames 0:30 of the sample clip; evaluation frames 30:60",
             "- weights: seeded random (seed 0): agreement shows numeric drift, not trained accuracy",
             f"- other processes' CPU during the timings: {100 * monitor.share('other'):.0f}%",
             f"- run time: {(time.perf_counter() - started) / 60:.1f} min", "",
             "## Per graph, same real inputs (mean ms per call)", "",
             "| graph | FP32 | INT8 | FP16 | INT8 speed-up | FP16 speed-up |", "|---|---:|---:|---:|---:|---:|"]
    for graph in manifests["fp32"].graphs:
        m = {p: float(np.mean(times[(graph, p)])) for p in manifests}
        lines.append(f"| {graph} | {m['fp32']:.1f} | {m['int8']:.1f} | {m['fp16']:.1f} | "
                     f"{m['fp32'] / m['int8']:.2f}x | {m['fp32'] / m['fp16']:.2f}x |")
    lines += ["", "## Pipeline at interval 5, frames 30:60", "",
              "| precision | mean frame ms | FPS | speed-up | mIoU agreement with FP32 | pixel agreement | "
              "agreement at distance 4 (mIoU) |", "|---|---:|---:|---:|---:|---:|---:|"]
    ref_ms = float(np.mean([r["speed"]["frame"]["reference"]["mean_ms"] for r in end_to_end.values()]))
    lines.append(f"| fp32 | {ref_ms:.1f} | {1000 / ref_ms:.2f} | 1.00x | 1 | 1 | 1 |")
    for p, result in end_to_end.items():
        speed = result["speed"]["frame"]
        far = [g for g in result["by_group"] if g["group"] == 4]
        lines.append(f"| {p} | {speed['candidate']['mean_ms']:.1f} | {1000 / speed['candidate']['mean_ms']:.2f} | "
                     f"{ref_ms / speed['candidate']['mean_ms']:.2f}x | {fmt(result['agreement']['miou'], '.4f')} | "
                     f"{fmt(result['agreement']['pixel_agreement'], '.4f')} | {fmt(far[0]['miou'] if far else None, '.4f')} |")
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out, text)


if __name__ == "__main__":
    main()
