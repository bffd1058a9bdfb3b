"""Record the feeds each graph of a running pipeline gets (torch-free).

`record_feeds(pipe, frames)` runs a pipeline through `Pipeline.wrapped_sessions` with every graph
session wrapped in a `RecordingSession`. On the runtime floor because `backend="auto"` times each
backend on the inputs the graphs really get (runtime.backend_choice); calibration collects its
inputs (calibration.collect) and `check` compares graphs with it.
"""
from __future__ import annotations

import numpy as np


def to_host(value) -> np.ndarray:
    """A feed as an owned host numpy array (an OrtValue on the GPU is copied back)."""
    if not isinstance(value, np.ndarray):
        value = value.numpy()
    return np.array(value, copy=True)


class RecordingSession:
    """Stands in for a GraphSession: records each run's feeds (up to `limit`), then runs the real one."""

    def __init__(self, session, sink: list, limit: int | None = None):
        self._session, self._sink, self._limit = session, sink, limit

    def run(self, feeds: dict, host_outputs: tuple[str, ...] = ()) -> dict:
        if self._limit is None or len(self._sink) < self._limit:
            self._sink.append({name: to_host(value) for name, value in feeds.items()})
        return self._session.run(feeds, host_outputs)

    def __getattr__(self, name):  # spec, name, device, provider... of the real session
        return getattr(self._session, name)


def record_feeds(pipe, frames, limit_per_graph: int | None = None) -> dict[str, list[dict[str, np.ndarray]]]:
    """Run `pipe` (reset before and after) over frames; return graph -> recorded feed dicts.

    Feeds are host numpy copies, one dict per graph run in frame order, at most
    limit_per_graph per graph (None: all). The pipeline's sessions are restored after.
    """
    recorded: dict[str, list[dict[str, np.ndarray]]] = {name: [] for name in pipe.sessions}
    pipe.reset()
    try:
        with pipe.wrapped_sessions(lambda name, s: RecordingSession(s, recorded[name], limit_per_graph)):
            for frame in frames:
                pipe.step(frame)
    finally:
        pipe.reset()
    return recorded
