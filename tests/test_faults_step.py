"""Pipeline.step is all-or-nothing: a step that raises half-way (a user scheduler, a graph, Ctrl-C)
leaves the program, the scheduler and the counters as they were, so stepping the same frame again
gives exactly what a pipeline that never failed gives."""
from __future__ import annotations

import numpy as np
import pytest

from vss_edge import runtime
from vss_edge.runtime.schedulers import DistortionAware


class Flaky:
    """A distortion-aware scheduler that raises once, at one frame index, before deciding."""

    signals_needed = ("distortion",)

    def __init__(self, fail_at: int | None):
        # mutated in place: a failed step restores attributes, not what a kept object holds
        self.inner, self.fail, self.seen = DistortionAware(), {"at": fail_at}, []

    def reset(self):
        self.inner.reset()

    def is_key(self, info):
        if info.index == self.fail["at"]:
            self.fail["at"] = None
            raise RuntimeError("scheduler bug, once")
        self.seen.append((info.index, info.since_key, round(info.signals["distortion"], 9)))
        return self.inner.is_key(info)


def fail_graph_once(pipe, graph: str, at_call: int, exc: BaseException):
    """Make pipe.sessions[graph].run raise exc on its at_call-th call (0-based), once."""
    session = pipe.sessions[graph]
    real, calls = session.run, [0]

    def run(feeds, host_outputs=()):
        calls[0] += 1
        if calls[0] - 1 == at_call:
            raise exc
        return real(feeds, host_outputs)

    session.run = run


def program_state(pipe) -> dict:
    """The program's state values (arrays compared exactly) and the scheduler's, and the counters."""
    def plain(value):
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, list):
            return [plain(v) for v in value]
        return np.asarray(value).copy() if isinstance(value, np.ndarray) else value

    fixed = ("manifest", "frame_difference", "label_tail")  # configuration, not state carried between frames
    state = {k: plain(v) for k, v in vars(pipe.program).items() if k not in fixed}
    fd = getattr(pipe.program, "frame_difference", None)
    state["frame_difference"] = None if fd is None or fd.previous is None else fd.previous.copy()
    state["counters"] = (pipe._index, pipe._since_key)
    return state


def assert_same(a, b, path="state"):
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            assert_same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        assert np.array_equal(np.asarray(a), np.asarray(b)), path
    else:
        assert a == b, path


def run_with_retry(pipe, frames) -> list:
    """Step every frame; a frame whose step raises is stepped again. Returns (index, is_key, labels)."""
    out = []
    for frame in frames:
        for _ in range(2):
            try:
                r = pipe.step(frame)
                break
            except (RuntimeError, KeyboardInterrupt):
                continue
        out.append((r.index, r.is_key, r.labels))
    return out


def compare(failing, fresh, frames):
    got, want = run_with_retry(failing, frames), run_with_retry(fresh, frames)
    for (i, k, labels), (j, l, expected) in zip(got, want):
        assert (i, k) == (j, l)
        np.testing.assert_array_equal(labels, expected)
    assert_same(program_state(failing), program_state(fresh))


def test_a_scheduler_that_raises_once_leaves_no_trace(gsvnet_bundle, sample_frames):
    """Before: the frame difference had already advanced, so the retried frame saw distortion 0."""
    failing = runtime.load(gsvnet_bundle, device="cpu", threads=1, scheduler=Flaky(fail_at=3))
    fresh = runtime.load(gsvnet_bundle, device="cpu", threads=1, scheduler=Flaky(fail_at=None))
    compare(failing, fresh, sample_frames[:10])
    assert failing.scheduler.seen == fresh.scheduler.seen
    assert failing.scheduler.inner.threshold == fresh.scheduler.inner.threshold


@pytest.mark.parametrize("exc", [RuntimeError("graph failed"), KeyboardInterrupt()], ids=["error", "ctrl-c"])
def test_a_graph_that_fails_half_way_through_a_frame_leaves_no_trace(gsvnet_bundle, sample_frames, exc):
    """The flow graph has run (and the scheduler has moved its threshold) when propagation fails."""
    failing = runtime.load(gsvnet_bundle, device="cpu", threads=1, scheduler=Flaky(fail_at=None))
    fresh = runtime.load(gsvnet_bundle, device="cpu", threads=1, scheduler=Flaky(fail_at=None))
    fail_graph_once(failing, "propagation", at_call=2, exc=exc)
    compare(failing, fresh, sample_frames[:10])
    # before: the retried frame was compared with itself (distortion 0) and the threshold moved twice.
    # The failed attempt saw what its retry saw (seen is appended in place, so it has both).
    seen = failing.scheduler.seen
    assert len(seen) == len(fresh.scheduler.seen) + 1
    assert list(dict.fromkeys(seen)) == fresh.scheduler.seen


def test_stmg_mask_generator_state_is_restored(stmg_bundle, sample_frames):
    """STMG's mask generator runs before the decision and keeps its encoding: a failed aggregation
    must not leave the frame's encoding as the 'previous frame' of its own retry."""
    failing = runtime.load(stmg_bundle, device="cpu", threads=1, interval=3)
    fresh = runtime.load(stmg_bundle, device="cpu", threads=1, interval=3)
    fail_graph_once(failing, "aggregation", at_call=1, exc=RuntimeError("graph failed"))
    compare(failing, fresh, sample_frames[:8])


def test_a_failed_step_does_not_advance_the_counters(gsvnet_bundle, sample_frames):
    pipe = runtime.load(gsvnet_bundle, device="cpu", threads=1, scheduler=Flaky(fail_at=2))
    pipe.step(sample_frames[0])
    pipe.step(sample_frames[1])
    with pytest.raises(RuntimeError, match="once"):
        pipe.step(sample_frames[2])
    assert (pipe._index, pipe._since_key) == (2, 2)
    assert pipe.step(sample_frames[2]).index == 2
