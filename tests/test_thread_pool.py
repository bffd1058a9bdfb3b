"""One ONNX Runtime thread pool shared by every graph (load(thread_pool='shared')): the same labels
as per-session pools. In subprocesses: the pool is process-wide and, once made, permanent."""
from __future__ import annotations

import subprocess
import sys

from vss_edge import demo_weights

CODE = f"""
import logging, sys, numpy as np, vss_edge
from vss_edge.runtime.sources import open_source, sample_clip_path
logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
with open_source(sample_clip_path()) as s:
    frames = list(s)[:20]
own = vss_edge.load(r"{demo_weights.DEMO_BUNDLE}", device="cpu", threads=2)
shared = vss_edge.load(r"{demo_weights.DEMO_BUNDLE}", device="cpu", threads=2, thread_pool="shared")
later = vss_edge.load(r"{demo_weights.DEMO_BUNDLE}", device="cpu", threads=1)  # must join the pool
assert all(s.shared_pool for s in shared.sessions.values()) and all(s.shared_pool for s in later.sessions.values())
assert not any(s.shared_pool for s in own.sessions.values())
for f in frames:
    a, b, c = own.step(f), shared.step(f), later.step(f)
    assert a.is_key == b.is_key == c.is_key
    assert np.array_equal(a.labels, b.labels) and np.array_equal(a.labels, c.labels)
print("same labels")
"""


def test_shared_pool_gives_the_same_labels_and_later_sessions_join_it():
    done = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert lines[-1] == "same labels"
    assert "per-session thread pools" in lines[0] and "the process-wide pool of 2 threads" in lines[1]
    assert "threads=1 does not resize it" in lines[2]


def test_the_cli_takes_the_thread_pool(tmp_path):
    from vss_edge.cli import main

    assert main(["-q", "run", str(demo_weights.DEMO_BUNDLE), str(demo_weights.DEMO_BUNDLE.parent / "sample.mp4"),
                 "--out", str(tmp_path), "--max-frames", "3", "--thread-pool", "per_session"]) == 0
