"""Many streams (cameras) on one set of graph sessions, key frames spread across them (torch-free).

A `MultiStream` holds one `Pipeline` per stream. The pipelines share the bundle's GraphSession
objects (ONNX Runtime's `run` is thread-safe, so the graphs are loaded once however many streams
there are); what is per stream is only the program state, the scheduler and the frame counters,
so each stream gives exactly the labels it would give alone.

    multi = vss_edge.load_streams("bundle/", streams=4)        # policy "staggered"
    results = multi.step_all([frame0, frame1, frame2, frame3])  # one tick: list of FrameResult
    multi.step(2, frame)                                        # one stream alone

A cross-stream key-frame policy turns the one scheduler asked for into each stream's own:

| policy | what each stream gets | key frames on one tick (interval K, N streams) |
|---|---|---|
| `aligned` | the scheduler as it is | all N every K ticks (today's behaviour) |
| `staggered` | the scheduler shifted by a phase (stream s: s * K // N frames) | at most ceil(N / K), from the second tick on |

The first frame of every stream is a key frame whatever any policy says (there is no state to
propagate from), so the first tick has N. The staggered phase then makes stream s's first
interval shorter (never longer than K: no frame is further from its key frame than the
scheduler allows), and its key frames fall on ticks K - s * K // N (mod K) from then on. The
per-stream scheduler stays the decider: the policy changes only what it sees, through
`PhaseShifted`. That works for schedulers whose decisions repeat with a `period` (fixed_interval:
K; round_robin: TDNet's P paths, so the streams on one tick run different paths, at most
ceil(N / P) on the same one); a scheduler that decides from the frames' content (distortion) has
no phase to move, and `staggered` refuses it (`aligned` takes it). Stream s's phase restarts when
that stream is reset alone.
"""
from __future__ import annotations

import concurrent.futures
import copy
import dataclasses
from collections.abc import Sequence

import numpy as np

from vss_edge.runtime.errors import VssEdgeError
from vss_edge.runtime.pipeline import FrameResult, Pipeline
from vss_edge.runtime.schedulers import FrameInfo, Scheduler
from vss_edge.runtime.session import GraphSession, usable_cpus


class PhaseShifted:
    """`inner` as it would decide had its stream started `lead` frames earlier: it sees
    FrameInfo.index + lead always, and .since_key + lead until the first key frame it decides.
    Base of the two kinds below (a key-frame and a path scheduler); signals pass through."""

    def __init__(self, inner: Scheduler, lead: int):
        if int(lead) < 0:
            raise VssEdgeError(f"a phase lead must be >= 0, got {lead}")
        self.inner, self.lead = inner, int(lead)
        self.signals_needed = tuple(getattr(inner, "signals_needed", ()))
        self.shift = self.lead  # added to since_key until the first key frame this scheduler decides

    def reset(self) -> None:
        self.inner.reset()
        self.shift = self.lead

    def shifted(self, frame: FrameInfo) -> FrameInfo:
        return dataclasses.replace(frame, index=frame.index + self.lead, since_key=frame.since_key + self.shift)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.inner!r}, lead={self.lead})"


class PhaseShiftedKeyFrames(PhaseShifted):
    def is_key(self, frame: FrameInfo) -> bool:
        key = bool(self.inner.is_key(self.shifted(frame)))
        if key:
            self.shift = 0
        return key


class PhaseShiftedPaths(PhaseShifted):
    def path(self, frame: FrameInfo) -> int:
        return self.inner.path(self.shifted(frame))


class Aligned:
    """Every stream runs the scheduler as it is: periodic key frames land on the same ticks."""

    name = "aligned"

    def stream_scheduler(self, scheduler: Scheduler, stream: int, streams: int) -> Scheduler:
        return scheduler

    def __repr__(self) -> str:
        return "Aligned()"


class Staggered:
    """Stream s of N runs its periodic scheduler (period K) `s * K // N` frames ahead, so at most
    ceil(N / K) streams share a key frame (or a TDNet path) on a tick after the first one.
    VssEdgeError for a scheduler without a `period` (it decides from content: no phase to move)."""

    name = "staggered"

    def stream_scheduler(self, scheduler: Scheduler, stream: int, streams: int) -> Scheduler:
        period = getattr(scheduler, "period", None)
        if not isinstance(period, int) or period < 1:
            raise VssEdgeError(
                f"the staggered policy shifts the phase of a periodic scheduler (fixed_interval, round_robin: a "
                f"'period'); {scheduler!r} decides from the frames' content, which no phase can move: use the "
                f"aligned policy, or a fixed interval")
        lead = stream * period // streams
        if callable(getattr(scheduler, "path", None)):
            return PhaseShiftedPaths(scheduler, lead)
        return PhaseShiftedKeyFrames(scheduler, lead)

    def __repr__(self) -> str:
        return "Staggered()"


POLICIES = {Aligned.name: Aligned, Staggered.name: Staggered}


def choose_policy(policy, scheduler: Scheduler):
    """A policy object from a name, an object with stream_scheduler(scheduler, stream, streams), or
    None: staggered where the scheduler has a period, else aligned."""
    if policy is None:
        policy = Staggered.name if getattr(scheduler, "period", None) else Aligned.name
    if isinstance(policy, str):
        if policy not in POLICIES:
            raise VssEdgeError(f"unknown key-frame policy {policy!r} (known: {', '.join(POLICIES)})")
        return POLICIES[policy]()
    if not callable(getattr(policy, "stream_scheduler", None)):
        raise VssEdgeError(f"policy {policy!r} has no stream_scheduler(scheduler, stream, streams)")
    return policy


def _copy(scheduler: Scheduler) -> Scheduler:
    try:
        return copy.deepcopy(scheduler)
    except Exception as e:  # noqa: BLE001  a lock, a file, a session held by a user scheduler
        raise VssEdgeError(f"scheduler {scheduler!r} cannot be copied for each stream (copy.deepcopy: {e})") from None


class MultiStream:
    """N streams of one bundle on one set of graph sessions.

    scheduler: the one scheduler asked for; each stream gets its own copy (copy.deepcopy), made
    the stream's own by the policy (name, object or None: see choose_policy). workers: threads
    step_all runs the streams on (default: min(streams, the CPUs this process may use); 1 runs
    them one after another on the caller's thread). pipelines[s]: stream s's Pipeline.
    Use it as a context manager, or close() it, to stop the worker threads.
    """

    def __init__(self, manifest, sessions: dict[str, GraphSession], scheduler: Scheduler, streams: int,
                 policy=None, workers: int | None = None):
        if isinstance(streams, bool) or not isinstance(streams, int) or streams < 1:
            raise VssEdgeError(f"streams must be a positive integer, got {streams!r}")
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
            raise VssEdgeError(f"workers must be a positive integer, got {workers!r}")
        self.manifest = manifest
        self.sessions = sessions
        self.policy = choose_policy(policy, scheduler)
        self.pipelines = [Pipeline(manifest, dict(sessions),  # own dict: wrapped_sessions stays per stream
                                   self.policy.stream_scheduler(_copy(scheduler), s, streams))
                          for s in range(streams)]
        self.workers = min(streams, workers or usable_cpus())
        self.device = self.pipelines[0].device
        self._pool = None if self.workers == 1 else concurrent.futures.ThreadPoolExecutor(
            self.workers, thread_name_prefix="vss-edge-stream")

    @property
    def streams(self) -> int:
        return len(self.pipelines)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.manifest.class_names

    @property
    def palette(self) -> np.ndarray:
        """uint8 [num_classes, 3] RGB colours."""
        return self.pipelines[0].palette

    def reset(self, stream: int | None = None) -> None:
        """Start a new sequence on one stream, or on all (None)."""
        for pipe in self.pipelines if stream is None else [self.pipelines[self._check(stream)]]:
            pipe.reset()

    def step(self, stream: int, frame: np.ndarray) -> FrameResult:
        """Stream `stream`'s Pipeline.step(frame): all-or-nothing for that stream. Streams may be
        stepped from different threads at once; one stream from two threads at once may not."""
        return self.pipelines[self._check(stream)].step(frame)

    def step_all(self, frames: Sequence[np.ndarray | None], return_exceptions: bool = False) \
            -> list[FrameResult | Exception | None]:
        """One tick: frames[s] is stream s's next frame, or None (no frame this tick: result None).

        The streams run on the worker threads; results come back in stream order. A tick is
        all-or-nothing: if a stream's step raises, the others finish theirs, every stream is put
        back as before the call and the first exception (in stream order) is raised. With
        return_exceptions, a failing stream's slot holds its exception instead (that stream is as
        before the call, the others' results stand), as asyncio.gather does. A KeyboardInterrupt
        (Ctrl-C while waiting, or raised in a step) always undoes the whole tick and is raised once
        the steps under way have finished.
        """
        if len(frames) != self.streams:
            raise VssEdgeError(f"step_all takes one frame (or None) per stream: {self.streams}, got {len(frames)}")
        jobs = [(s, frame) for s, frame in enumerate(frames) if frame is not None]
        saved = {s: self.pipelines[s].snapshot() for s, _ in jobs}
        outcomes, interrupt = self._run(jobs)
        stop = interrupt or next((o for o in outcomes if isinstance(o, BaseException)
                                  and not isinstance(o, Exception)), None)
        failed = next((o for o in outcomes if isinstance(o, Exception)), None)
        if stop is not None or (failed is not None and not return_exceptions):
            for s, _ in jobs:
                self.pipelines[s].restore(saved[s])
            raise stop or failed
        results: list = [None] * self.streams
        for (s, _), outcome in zip(jobs, outcomes):
            results[s] = outcome
        return results

    def _run(self, jobs) -> tuple[list, BaseException | None]:
        """(each job's FrameResult or exception, a KeyboardInterrupt that came while waiting)."""
        if self._pool is None or len(jobs) < 2:
            outcomes = []
            for s, frame in jobs:
                try:
                    outcomes.append(self.pipelines[s].step(frame))
                except BaseException as e:  # noqa: BLE001  (sorted out by step_all)
                    outcomes.append(e)
                    if not isinstance(e, Exception):
                        break  # a stop: the streams after it do not start
            return outcomes + [None] * (len(jobs) - len(outcomes)), None
        futures = [self._pool.submit(self.pipelines[s].step, frame) for s, frame in jobs]
        interrupt = None
        while True:
            try:
                concurrent.futures.wait(futures)
                break
            except BaseException as e:  # noqa: BLE001  Ctrl-C while waiting: the steps under way finish first
                interrupt = interrupt or e
        return [f.exception() or f.result() for f in futures], interrupt

    def _check(self, stream: int) -> int:
        if isinstance(stream, bool) or not isinstance(stream, int) or not 0 <= stream < self.streams:
            raise VssEdgeError(f"stream must be 0 .. {self.streams - 1}, got {stream!r}")
        return stream

    def close(self) -> None:
        """Stop the worker threads (after the steps under way); idempotent."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __enter__(self) -> MultiStream:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"MultiStream({self.manifest.method}, streams={self.streams}, policy={self.policy!r}, "
                f"workers={self.workers}, device={self.device!r})")
