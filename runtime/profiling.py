"""Latency statistics over FrameResults, as a dict (JSON) and a markdown table (torch-free)."""
from __future__ import annotations

import numpy as np


def _stats(values) -> dict:
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        return {"count": 0}
    return {"count": int(a.size), "mean_ms": float(a.mean()), "p50_ms": float(np.percentile(a, 50)),
            "p99_ms": float(np.percentile(a, 99)), "max_ms": float(a.max())}


def summarize(results, manifest, warmup: int = 0) -> dict:
    """Summary of per-frame timings, skipping the first `warmup` frames.

    Per graph: latency stats and GFLOPs (from the manifest); per frame kind (key,
    non-key): latency stats; overall: FPS, max latency, and the share of wall time
    spent outside ONNX Runtime (preprocessing, orchestration, postprocessing).
    """
    measured = list(results)[warmup:]
    graphs = {}
    for name, spec in manifest.graphs.items():
        times = [r.timings_ms[name] for r in measured if name in r.timings_ms]
        graphs[name] = {**_stats(times), "gflops": spec.gflops, "role": spec.role, "precision": spec.precision}
    total = [r.total_ms for r in measured]
    in_ort = sum(sum(r.timings_ms.values()) for r in measured)
    key = _stats([r.total_ms for r in measured if r.is_key])
    nonkey = _stats([r.total_ms for r in measured if not r.is_key])
    wall = float(np.sum(total)) if total else 0.0
    return {
        "method": manifest.method,
        "resolution": [manifest.height, manifest.width],
        "frames": len(measured),
        "warmup_frames_skipped": warmup,
        "key_frames": sum(r.is_key for r in measured),
        "fps": len(measured) / (wall / 1000.0) if wall else 0.0,
        "frame": _stats(total),
        "key_frame": key,
        "non_key_frame": nonkey,
        "non_key_over_key": (nonkey["mean_ms"] / key["mean_ms"]) if key.get("count") and nonkey.get("count") else None,
        "outside_ort_share": (1.0 - in_ort / wall) if wall else 0.0,
        "graphs": graphs,
    }


def _fmt(value, spec=".1f") -> str:
    return "-" if value is None else format(value, spec)


def to_markdown(summary: dict) -> str:
    """Human-readable tables for a summary from `summarize`."""
    lines = [
        f"# {summary['method']} at {summary['resolution'][0]}x{summary['resolution'][1]}: "
        f"{summary['frames']} frames ({summary['key_frames']} key), {summary['fps']:.2f} FPS",
        "",
        "| graph | role | GFLOPs | calls | mean ms | p50 ms | p99 ms | max ms |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, g in summary["graphs"].items():
        lines.append(f"| {name} | {g['role']} | {_fmt(g.get('gflops'), '.2f')} | {g['count']} | "
                     f"{_fmt(g.get('mean_ms'))} | {_fmt(g.get('p50_ms'))} | {_fmt(g.get('p99_ms'))} | "
                     f"{_fmt(g.get('max_ms'))} |")
    lines += ["", "| frames | count | mean ms | p50 ms | p99 ms | max ms |", "|---|---:|---:|---:|---:|---:|"]
    for label, key in (("key", "key_frame"), ("non-key", "non_key_frame"), ("all", "frame")):
        s = summary[key]
        lines.append(f"| {label} | {s['count']} | {_fmt(s.get('mean_ms'))} | {_fmt(s.get('p50_ms'))} | "
                     f"{_fmt(s.get('p99_ms'))} | {_fmt(s.get('max_ms'))} |")
    lines += ["", f"non-key / key latency: {_fmt(summary['non_key_over_key'], '.3f')}; "
                  f"time outside ONNX Runtime: {100 * summary['outside_ort_share']:.1f}%",
              "GFLOPs = 2 x multiply-accumulates of Conv/MatMul/Gemm (the papers' 'GFLOPs' count MACs: half)"]
    return "\n".join(lines) + "\n"
