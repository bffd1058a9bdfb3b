"""Bounded-memory running statistics: a camera that runs for days must not grow `run` or `profile`.

Measured (README): RSS of a 10,000-frame `run` grew linearly before (+2.2%), now stays flat.
"""
from __future__ import annotations

import tracemalloc
from types import SimpleNamespace

import numpy as np
import pytest

from vss_edge.runtime.profiling import LatencyStats, RunStats, summarize


def fake_manifest():
    graph = SimpleNamespace(gflops=1.0, role="keyframe_net", precision="fp32")
    return SimpleNamespace(graphs={"keyframe": graph, "flow": graph}, method="gsvnet", height=8, width=8)


def result(i: int, rng) -> SimpleNamespace:
    key = i % 5 == 0
    ms = float(rng.gamma(4.0, 2.0))
    return SimpleNamespace(is_key=key, total_ms=ms + 1.0, timings_ms={"keyframe" if key else "flow": ms})


def test_short_runs_give_exactly_the_old_figures():
    rng = np.random.default_rng(0)
    results = [result(i, rng) for i in range(500)]
    s = summarize(results, fake_manifest(), warmup=3)
    totals = np.array([r.total_ms for r in results[3:]])
    assert s["frames"] == 497 and s["warmup_frames_skipped"] == 3
    assert s["frame"] == {"count": 497, "mean_ms": pytest.approx(totals.mean()), "p50_ms": np.percentile(totals, 50),
                          "p99_ms": np.percentile(totals, 99), "max_ms": totals.max()}
    assert s["fps"] == pytest.approx(497 / (totals.sum() / 1000))
    assert s["throughput_fps"] is None  # a finished list has no wall clock


def test_statistics_stay_bounded_and_close_over_a_long_run():
    rng = np.random.default_rng(1)
    values = rng.gamma(4.0, 2.0, 200_000)
    stats = LatencyStats(capacity=10_000)
    tracemalloc.start()
    for v in values[:100_000]:
        stats.add(v)
    half, _ = tracemalloc.get_traced_memory()
    for v in values[100_000:]:
        stats.add(v)
    full, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert full - half < 4096  # nothing kept per value
    d = stats.to_dict()
    assert d["count"] == 200_000 and d["max_ms"] == values.max()
    assert d["mean_ms"] == pytest.approx(values.mean(), rel=1e-9)
    for p in (50, 99):  # a uniform sample of 10,000: within 3 standard errors of the rank
        delta = 3 * 100 * np.sqrt(p / 100 * (1 - p / 100) / 10_000)  # 1.5 points at p50, 0.3 at p99
        low, high = np.percentile(values, [p - delta, p + delta])
        assert low <= d[f"p{p}_ms"] <= high


def test_run_stats_memory_does_not_grow_with_frames():
    rng = np.random.default_rng(2)
    stats = RunStats(fake_manifest())
    for i in range(30_000):  # fill the reservoirs first
        stats.add(result(i, rng))
    tracemalloc.start()
    before, _ = tracemalloc.get_traced_memory()
    for i in range(30_000, 60_000):
        stats.add(result(i, rng))
    after, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert after - before < 16_384
    s = stats.summary()
    assert s["frames"] == 60_000 and s["key_frames"] == 12_000 and s["throughput_fps"] > 0
