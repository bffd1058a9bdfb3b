"""The host label step against the full-resolution label tail it replaces, on real score maps.

    python benchmarks/label_tail_speed.py [--methods gsvnet,mpvss --frames 6 --rounds 5
                                           --bundle-dir DIR --quick --out benchmarks/results/label_tail_cpu.md]

Every method turns low-resolution scores into full-resolution labels on every frame. The faithful
tail resizes all C score maps (MPVSS: all N masks, then its class-weighted sum of their sigmoids)
and takes the argmax per pixel; `runtime.labels` computes only the cells on a class boundary
exactly (MPVSS: above runtime.labels.DENSE_SHARE of the cells it resizes every mask, as the full
tail does). How much that saves depends on how many pixels lie in such cells, so each method runs on
trained weights at the demo size (few boundaries) and on seeded weights at the speed size (random
scores: boundaries nearly everywhere, the worst case).

Per bundle: the key-frame graph's scores on frames 30.. of the sample clip (--frames of them), then
per frame the host step (`label_tail(manifest.labels)`) and the full tail (the same bilinear
weights as dense interpolation matrices: every class map resized with two matrix products), timed
alternately over --rounds rounds; the median ms of each, the share of pixels in exact cells, and
the share of pixels on which the two give the same label (they differ only where two classes tie to
float rounding). --quick: small seeded sizes.
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

from benchmarks._common import (CpuMonitor, ensure_bundle, ensure_trained_bundle, log, measure,  # noqa: E402
                                publish, report_header)
from benchmarks.calibration_speed import speed_setup, trained_setup  # noqa: E402

METHODS = ("gsvnet", "mpvss")  # the two label kinds: logits (GSVNet, STMG, TDNet) and masks (MPVSS)
SEED = 0


def full_tail(step, kind: str):
    """The faithful tail with the host step's own geometry: f(outputs) -> uint8 [H, W]."""
    from vss_edge.runtime.labels import interpolation_matrix

    wy = interpolation_matrix(step.rows, int(step.rows.count.size))
    wx = interpolation_matrix(step.cols, int(step.cols.count.size)).T.copy()
    if kind == "logits":
        return lambda out: (wy @ np.asarray(out[0], np.float32)[0] @ wx).argmax(0).astype(np.uint8)

    def masks(out):
        c = np.asarray(out[0], np.float32)[0]
        e = np.exp(c - c.max(-1, keepdims=True))
        probs = (e / e.sum(-1, keepdims=True))[:, :-1]  # [N, K]
        resized = wy @ np.asarray(out[1], np.float32)[0] @ wx  # [N, H, W]
        n, h, w = resized.shape
        sig = 1.0 / (1.0 + np.exp(-resized.reshape(n, -1)))
        return (probs.T @ sig).argmax(0).astype(np.uint8).reshape(h, w)
    return masks


def score_maps(bundle: Path, kind: str, frames: list) -> list:
    """The key-frame graph's score outputs on each frame (what the host step reads)."""
    from vss_edge import runtime

    pipe = runtime.load(bundle, device="cpu", threads=2)
    names = ("logits",) if kind == "logits" else ("class_logits", "mask_logits")
    session = pipe.sessions["keyframe"]
    out = []
    for frame in frames:
        result = session.run({"image": frame_input(pipe, frame)})
        out.append(tuple(result[n] for n in names))
    return out


def frame_input(pipe, frame: np.ndarray) -> np.ndarray:
    """uint8 [1, H, W, 3] at the graph's input size (the key-frame graph takes the frame as it is)."""
    import cv2

    _, h, w, _ = pipe.manifest.graphs["keyframe"].inputs[0].shape
    return cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA)[None]


def time_bundle(bundle: Path, frames: list, rounds: int, monitor) -> dict:
    from vss_edge.runtime.labels import label_tail
    from vss_edge.runtime.manifest import load_manifest

    spec = load_manifest(bundle).labels
    kind = spec["kind"]
    step = label_tail(spec)
    outputs = score_maps(bundle, kind, frames)
    full = full_tail(step, kind)
    times = {"host": [], "full": []}
    equal, exact_share = [], []

    def block():
        for _ in range(rounds):
            for out in outputs:
                for way, fn in (("host", step), ("full", full)):
                    t0 = time.perf_counter()
                    fn(*out) if way == "host" else fn(out)
                    times[way].append((time.perf_counter() - t0) * 1000.0)

    step(*outputs[0]), full(outputs[0])  # warm-up
    measure(block, 0.0, monitor, str(bundle.name))
    for out in outputs:
        a, b = step(*out), full(out)
        exact_share.append(step.boundary_share)
        equal.append(float((a == b).mean()))
    return {"kind": kind, "scores": spec["scores_size"], "size": spec["size"],
            "host_ms": float(np.median(times["host"])), "full_ms": float(np.median(times["full"])),
            "exact_share": float(np.mean(exact_share)), "equal": float(np.min(equal))}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--frames", type=int, default=6)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--bundle-dir", default=os.path.join(tempfile.gettempdir(), "vss_edge_bench"))
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "label_tail_cpu.md"))
    args = p.parse_args(argv)
    from vss_edge.runtime.sources import read_frames, sample_clip_path

    start, monitor = time.perf_counter(), CpuMonitor()
    root = Path(args.bundle_dir)
    frames = list(read_frames(sample_clip_path(), 30, 30 + args.frames))
    rows = []
    for method in args.methods.split(","):
        cfg, weights, export = trained_setup(method)
        bundles = [("trained", ensure_trained_bundle(root / f"{method}_trained_{cfg.height}x{cfg.width}", cfg, method,
                                                     export, weights))]
        cfg, _, name, export = speed_setup(method, args.quick)
        bundles.append(("seeded", ensure_bundle(root / name, cfg, method, export, SEED)))
        for weights_kind, bundle in bundles:
            log(f"{method} ({weights_kind}): timing")
            r = time_bundle(bundle, frames, args.rounds, monitor)
            rows.append(f"| {method} | {weights_kind} | {r['kind']} | {r['scores'][0]}x{r['scores'][1]} -> "
                        f"{r['size'][0]}x{r['size'][1]} | {100 * r['exact_share']:.1f}% | {r['host_ms']:.1f} | "
                        f"{r['full_ms']:.1f} | **{r['full_ms'] / r['host_ms']:.1f}x** | {r['equal']:.6f} |")
    header = report_header("Host label step vs the full-resolution label tail", 1, [
        f"the key-frame graph's scores on frames 30:{30 + args.frames} of the sample clip; median ms per frame over "
        f"{args.rounds} alternating rounds; numpy on the host (its BLAS threads)",
        f"command: `python benchmarks/label_tail_speed.py {' '.join(argv if argv is not None else sys.argv[1:])}`"],
        monitor)
    text = "\n".join(["| method | weights | kind | scores -> labels | pixels in exact cells | host step ms | "
                      "full tail ms | saved | same labels (worst frame) |",
                      "|---|---|---|---|---:|---:|---:|---:|---:|", *rows]) + "\n"
    return publish(header, text, args.out, time.perf_counter() - start)


if __name__ == "__main__":
    sys.exit(main())
