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


class TickStats:
    """Per-tick figures of a multi-stream run (runtime.multistream), in bounded memory.

    add(results, tick_ms): one tick's FrameResults (None for a stream without a frame) and the
    wall time of its step_all. The first `skip` ticks are left out (the start: every stream's
    first frame is a key frame, whatever the policy); of the others: tick latency statistics,
    max / mean, how many ticks had k key frames (exact), and for path methods (TDNet) how many
    had at most m streams on one path.
    """

    def __init__(self, skip: int = 1):
        self.skip = int(skip)
        self.seen = 0
        self.all_ms = 0.0  # summed over every tick, the skipped ones too
        self.tick = LatencyStats()
        self.key_frames: dict[int, int] = {}  # key frames on a tick -> ticks
        self.same_path: dict[int, int] = {}  # most streams on one path on a tick -> ticks

    def add(self, results, tick_ms: float) -> None:
        self.seen += 1
        self.all_ms += float(tick_ms)
        if self.seen <= self.skip:
            return
        done = [r for r in results if r is not None]
        self.tick.add(tick_ms)
        keys = sum(bool(r.is_key) for r in done)
        self.key_frames[keys] = self.key_frames.get(keys, 0) + 1
        paths = [r.path for r in done if r.path is not None]
        if paths:
            most = max(paths.count(p) for p in set(paths))
            self.same_path[most] = self.same_path.get(most, 0) + 1

    def summary(self) -> dict:
        tick = self.tick.to_dict()
        return {**tick, "ticks_skipped": min(self.skip, self.seen),
                "max_over_mean": tick["max_ms"] / tick["mean_ms"] if tick["count"] and tick["mean_ms"] else None,
                "key_frames_per_tick": {"max": max(self.key_frames, default=None),
                                        "ticks": {str(k): n for k, n in sorted(self.key_frames.items())}},
                "most_streams_on_one_path": None if not self.same_path else {
                    "max": max(self.same_path), "ticks": {str(k): n for k, n in sorted(self.same_path.items())}}}


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
        + (f" in the pipeline, {throughput:.2f} FPS end to end (reading frames included)" if throughput else "")
        + (f" on {summary['backends']['backend']}" if summary.get("backends") else ""),
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


def streams_to_markdown(summary: dict) -> str:
    """Tables for a multi-stream summary (vss_edge.source_runs.streams_summary): one row per stream
    (with live counts and capture-to-labels latency where live), then the ticks."""
    live = summary.get("live")
    through = summary.get("throughput_fps")
    lines = [
        f"# {summary['method']} at {summary['resolution'][0]}x{summary['resolution'][1]}: {summary['streams']} "
        f"streams, key frames {summary['policy']}, {summary['workers']} worker thread(s) on {summary['device']}: "
        f"{summary['frames']} frames ({summary['key_frames']} key) in {summary['ticks']} ticks, {summary['fps']:.2f} "
        f"FPS in the pipeline (all streams)" + (f", {through:.2f} FPS end to end" if through else ""),
        "",
        "| stream | frames | key | FPS | mean ms | p99 ms | max ms |" + (" captured | dropped | capture to labels "
                                                                      "p50 / p99 / max ms |" if live else "")
        + " error |",
        "|---|---:|---:|---:|---:|---:|---:|" + ("---:|---:|---:|" if live else "") + "---|",
    ]
    for s in summary["per_stream"]:
        frame = s.get("frame") or {}
        row = (f"| {s['source']} | {s.get('frames_read', 0)} | {_fmt(s.get('key_frames'), 'd')} | "
               f"{_fmt(s.get('fps'), '.2f')} | {_fmt(frame.get('mean_ms'))} | {_fmt(frame.get('p99_ms'))} | "
               f"{_fmt(frame.get('max_ms'))} |")
        if live:
            lat = s.get("capture_to_labels") or {}
            row += (f" {_fmt(s.get('frames_captured'), 'd')} | {_fmt(s.get('frames_dropped'), 'd')} | "
                    f"{_fmt(lat.get('p50_ms'))} / {_fmt(lat.get('p99_ms'))} / {_fmt(lat.get('max_ms'))} |")
        lines.append(row + f" {s['error'] or ''} |")
    t = summary["tick"]
    keys = t["key_frames_per_tick"]
    paths = t.get("most_streams_on_one_path")
    lines += ["", "| ticks | mean ms | p50 ms | p99 ms | max ms | max / mean | most key frames on a tick |"
              + (" most streams on one path |" if paths else ""),
              "|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if paths else ""),
              f"| {t['count']} | {_fmt(t['mean_ms'])} | {_fmt(t['p50_ms'])} | {_fmt(t['p99_ms'])} | {_fmt(t['max_ms'])} | "
              f"{_fmt(t['max_over_mean'], '.2f')} | {_fmt(keys['max'], 'd')} |" + (f" {paths['max']} |" if paths else ""),
              "", f"A tick: one step_all, every stream's next frame at once. The first {t['ticks_skipped']} tick(s) "
                  f"are left out of the tick figures (the first: every stream starts on a key frame)."]
    return "\n".join(lines) + "\n"
