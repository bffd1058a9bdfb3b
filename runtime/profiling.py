"""Latency statistics over FrameResults, as a dict (JSON) and a markdown table (torch-free).

`RunStats` takes one FrameResult at a time and keeps bounded memory, so a camera can run
for days: counts, sums and maxima are exact; percentiles are exact up to RESERVOIR values
per statistic and then come from a uniform random sample of them (reservoir sampling,
Vitter's Algorithm R, seeded: the same run gives the same figures). `summarize(results)`
is the same over a finished list.
"""
from __future__ import annotations

import math
import random
import time

import numpy as np

# Values kept per statistic (80 kB each). The p99 of a uniform sample of 10,000 has a rank standard
# error of sqrt(0.99 * 0.01 / 10000) = 0.1 percentile points.
RESERVOIR = 10_000


class LatencyStats:
    """Streaming count, mean, max and p50/p99 of latencies in milliseconds, in bounded memory."""

    def __init__(self, capacity: int = RESERVOIR, seed: int = 0):
        self.capacity = int(capacity)
        self.count = 0
        self.total = 0.0
        self.max = -math.inf
        self._sample = np.empty(self.capacity, dtype=np.float64)  # pages are touched only as it fills
        self._rng = random.Random(seed)

    def add(self, ms: float) -> None:
        ms = float(ms)
        self.count += 1
        self.total += ms
        self.max = max(self.max, ms)
        if self.count <= self.capacity:
            self._sample[self.count - 1] = ms
        else:  # keep each of the `count` values seen with probability capacity / count
            j = self._rng.randrange(self.count)
            if j < self.capacity:
                self._sample[j] = ms

    def to_dict(self) -> dict:
        """{count, mean_ms, p50_ms, p99_ms, max_ms}; the figures are None when nothing was added."""
        if self.count == 0:
            return {"count": 0, "mean_ms": None, "p50_ms": None, "p99_ms": None, "max_ms": None}
        kept = self._sample[:min(self.count, self.capacity)]
        return {"count": self.count, "mean_ms": self.total / self.count, "p50_ms": float(np.percentile(kept, 50)),
                "p99_ms": float(np.percentile(kept, 99)), "max_ms": self.max}


def latency_stats(values_ms) -> dict:
    """LatencyStats(...).to_dict() of a finished sequence of latencies in milliseconds."""
    stats = LatencyStats()
    for ms in values_ms:
        stats.add(ms)
    return stats.to_dict()


class RunStats:
    """What `summarize` reports, accumulated frame by frame in bounded memory.

    add(result) skips the first `warmup` results. Besides the pipeline's own FPS (frames over
    the time spent in Pipeline.step) it measures the end-to-end throughput: measured frames
    over the wall time from construction (or the end of the warm-up) to the last add(), so
    it includes reading, drawing and writing frames. timed=False (a finished list) leaves
    the throughput out (None).
    """

    def __init__(self, manifest, warmup: int = 0, timed: bool = True):
        self.manifest = manifest
        self.warmup = int(warmup)
        self.timed = timed
        self.seen = 0
        self.frames = 0
        self.key_frames = 0
        self.in_ort_ms = 0.0
        self.graphs = {name: LatencyStats() for name in manifest.graphs}
        self.frame, self.key, self.non_key = LatencyStats(), LatencyStats(), LatencyStats()
        self._start = self._last = time.perf_counter()

    def add(self, result) -> None:
        self.seen += 1
        now = time.perf_counter()
        if self.seen <= self.warmup:
            self._start = self._last = now
            return
        self._last = now
        self.frames += 1
        self.key_frames += bool(result.is_key)
        for name, ms in result.timings_ms.items():
            if name in self.graphs:
                self.graphs[name].add(ms)
            self.in_ort_ms += ms
        self.frame.add(result.total_ms)
        (self.key if result.is_key else self.non_key).add(result.total_ms)

    def summary(self) -> dict:
        graphs = {}
        for name, spec in self.manifest.graphs.items():
            graphs[name] = {**self.graphs[name].to_dict(), "gflops": spec.gflops, "role": spec.role,
                            "precision": spec.precision}
        key, nonkey = self.key.to_dict(), self.non_key.to_dict()
        wall_ms = self.frame.total
        elapsed = self._last - self._start
        throughput = self.frames / elapsed if self.timed and self.frames and elapsed > 0 else None
        return {
            "method": self.manifest.method,
            "resolution": [self.manifest.height, self.manifest.width],
            "frames": self.frames,
            "warmup_frames_skipped": min(self.warmup, self.seen),
            "key_frames": self.key_frames,
            "fps": self.frames / (wall_ms / 1000.0) if wall_ms else 0.0,
            "throughput_fps": throughput,
            "frame": self.frame.to_dict(),
            "key_frame": key,
            "non_key_frame": nonkey,
            "non_key_over_key": (nonkey["mean_ms"] / key["mean_ms"]) if key["count"] and nonkey["count"] else None,
            "outside_ort_share": (1.0 - self.in_ort_ms / wall_ms) if wall_ms else 0.0,
            "graphs": graphs,
        }


def summarize(results, manifest, warmup: int = 0) -> dict:
    """Summary of per-frame timings, skipping the first `warmup` frames.

    Per graph: latency stats and GFLOPs (from the manifest); per frame kind (key,
    non-key): latency stats; overall: FPS, max latency, and the share of wall time
    spent outside ONNX Runtime (preprocessing, orchestration, postprocessing).
    """
    stats = RunStats(manifest, warmup, timed=False)
    for result in results:
        stats.add(result)
    return stats.summary()


def _fmt(value, spec=".1f") -> str:
    return "-" if value is None else format(value, spec)


def to_markdown(summary: dict) -> str:
    """Human-readable tables for a summary from `summarize`."""
    throughput = summary.get("throughput_fps")
    lines = [
        f"# {summary['method']} at {summary['resolution'][0]}x{summary['resolution'][1]}: "
        f"{summary['frames']} frames ({summary['key_frames']} key), {summary['fps']:.2f} FPS"
        + (f" in the pipeline, {throughput:.2f} FPS end to end (reading frames included)" if throughput else ""),
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
