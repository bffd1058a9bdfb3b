"""Pipeline: preprocess -> scheduler -> program -> postprocess, one call per frame (torch-free)."""
from __future__ import annotations

import contextlib
import dataclasses
import time
import types
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from vss_edge.runtime.errors import BundleError, VssEdgeError
from vss_edge.runtime.manifest import Manifest, check_program_fit
from vss_edge.runtime.preprocess import labels_to_frame, to_graph_input
from vss_edge.runtime.programs import program_for
from vss_edge.runtime.schedulers import FrameInfo, Scheduler
from vss_edge.runtime.session import GraphSession, describe_backends, timed


@dataclass
class FrameResult:
    """What Pipeline.step returns for one frame.

    labels: uint8 [h, w] class indices at the input frame's size.
    timings_ms: graph name -> milliseconds spent in ONNX Runtime for this frame.
    total_ms: wall time of the whole step (preprocess, graphs, postprocess).
    path: the sub-network path that ran, for path methods (TDNet); None for key-frame methods.
    """

    index: int
    labels: np.ndarray
    is_key: bool
    timings_ms: dict[str, float] = field(default_factory=dict)
    total_ms: float = 0.0
    path: int | None = None


class Pipeline:
    """Runs a bundle frame by frame. Build it with `runtime.load(bundle)`.

    step(frame): frame is a BGR uint8 numpy array (H, W, 3) of any size (at least 8x8); it
    is resized to the bundle resolution if needed, and labels come back at the frame's size.
    Anything else raises FrameError before any state changes. step is all-or-nothing: if
    anything raises inside it (the scheduler, a graph, Ctrl-C), the program, the scheduler and
    the frame counters are put back as they were before the call (see `_snapshot`), so the
    same frame can be stepped again and the results equal a pipeline that never failed.
    Raises BundleError at construction if the bundle lacks a graph its method needs, or a
    graph's role, inputs or outputs are not what the method's program feeds and reads.
    program: the method's Program instance (default: its registered one, built from the
    manifest); pass one to run a variant of the algorithm (benchmarks wrap one this way).
    """

    def __init__(self, manifest: Manifest, sessions: dict[str, GraphSession], scheduler: Scheduler,
                 program=None):
        self.manifest = manifest
        self.sessions = sessions
        self.scheduler = scheduler
        self.program = program if program is not None else program_for(manifest.method)(manifest)
        missing = [g for g in self.program.graphs if g not in sessions]
        if missing:
            raise BundleError(f"bundle '{manifest.root}': method '{manifest.method}' needs graph(s) "
                              f"{', '.join(missing)}, which the manifest does not list")
        check_program_fit(manifest, self.program)
        needs = self.program.scheduler_needs
        if not callable(getattr(scheduler, needs, None)) or not callable(getattr(scheduler, "reset", None)):
            raise VssEdgeError(f"scheduler {scheduler!r} does not fit method '{manifest.method}': "
                               f"it needs reset() and {needs}(frame_info)")
        self._signals_needed = tuple(getattr(scheduler, "signals_needed", ()))
        self.device = next(iter(sessions.values())).device
        self.reset()

    def backends(self) -> dict:
        """What runs each graph: runtime.session.describe_backends (recorded in run summaries)."""
        return describe_backends(self.sessions)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.manifest.class_names

    @property
    def palette(self) -> np.ndarray:
        """uint8 [num_classes, 3] RGB colours."""
        return np.asarray(self.manifest.palette, dtype=np.uint8)

    def reset(self) -> None:
        """Forget all state: the next frame has index 0 (and is a key frame, for key-frame methods)."""
        self.program.reset()
        self.scheduler.reset()
        self._index = 0
        self._since_key = 0

    def step(self, frame: np.ndarray) -> FrameResult:
        start = time.perf_counter()
        image = to_graph_input(frame, self.manifest.height, self.manifest.width)
        saved = self.snapshot()
        try:
            return self._step(frame, image, start)
        except BaseException:
            self.restore(saved)
            raise

    def snapshot(self) -> object:
        """What `restore` needs to put the program, the scheduler and the frame counters back as
        they are now (what step does when it raises; MultiStream.step_all undoes a whole tick with
        it). Cheap: copies of attribute dicts, no arrays (see `_snapshot`)."""
        return _snapshot(self.program, self.scheduler, skip=(self,)), (self._index, self._since_key)

    def restore(self, snapshot: object) -> None:
        """Put the state back as it was when `snapshot()` made `snapshot`."""
        saved, counters = snapshot
        _restore(saved)
        self._index, self._since_key = counters

    def _step(self, frame: np.ndarray, image: np.ndarray, start: float) -> FrameResult:
        timings: dict[str, float] = {}

        def run(name: str, feeds: dict, host_outputs: tuple[str, ...]) -> dict:
            out, ms = timed(self.sessions[name].run, feeds, host_outputs)
            timings[name] = timings.get(name, 0.0) + ms
            return out

        signals = self.program.signals(image, self._signals_needed, run)
        info = FrameInfo(self._index, self._since_key, signals)
        decision = self.program.decide(self.scheduler, info)
        is_key = decision is True
        path = None if isinstance(decision, bool) else int(decision)
        self.program.label_size = frame.shape[:2]  # host labels come at the frame's size directly
        labels = labels_to_frame(self.program.step(image, decision, run), frame.shape)
        result = FrameResult(self._index, labels, is_key, timings, (time.perf_counter() - start) * 1000.0, path)
        self._index += 1
        self._since_key = 1 if is_key else self._since_key + 1
        return result

    @contextlib.contextmanager
    def wrapped_sessions(self, wrap):
        """Within the block, every graph runs through wrap(name, session): an object with the
        session's contract, run(feeds, host_outputs) -> outputs (Polygraphy-style composition:
        record the feeds, time a graph, compare with another backend). The sessions are put
        back when the block ends, however it ends."""
        original = dict(self.sessions)
        try:
            for name, session in original.items():
                self.sessions[name] = wrap(name, session)
            yield self
        finally:
            self.sessions.clear()
            self.sessions.update(original)

    def run(self, frames: Iterable[np.ndarray]) -> Iterator[FrameResult]:
        """step() over an iterable of frames (a vss_edge.runtime.sources source, a list...)."""
        for frame in frames:
            yield self.step(frame)


# --- all-or-nothing steps --------------------------------------------------------------
#
# One mechanism for every method: before a step, copy the attribute dicts of the program and
# the scheduler and of the objects they hold directly (the frame-difference signal...); if
# the step raises, put them back. This is exact because programs and schedulers *replace*
# their state values on each frame (self.state = {...}, self.history = self.history + [...],
# self.threshold = ...) and never mutate them in place; a user scheduler that mutates a list
# in place is restored only as far as its attributes go. Two levels deep, so a scheduler
# holding a large object (a logger, the pipeline itself) costs nothing per frame.

_SNAPSHOT_DEPTH = 2


def _has_state(obj) -> bool:
    """Whether obj is an instance whose attributes may change (not a class, module, function or frozen dataclass)."""
    if isinstance(obj, (type, types.ModuleType, types.FunctionType, types.MethodType, types.BuiltinFunctionType)):
        return False
    if not isinstance(getattr(obj, "__dict__", None), dict):
        return False
    return not (dataclasses.is_dataclass(obj) and obj.__dataclass_params__.frozen)


def _snapshot(*roots, skip=()) -> list[tuple[object, dict]]:
    """(object, copy of its attribute dict) for the roots and the objects they hold, _SNAPSHOT_DEPTH deep."""
    saved, seen = [], {id(o) for o in skip}
    level = list(roots)
    for _ in range(_SNAPSHOT_DEPTH):
        below = []
        for obj in level:
            if id(obj) in seen or not _has_state(obj):
                continue
            seen.add(id(obj))
            attrs = dict(vars(obj))
            saved.append((obj, attrs))
            below.extend(attrs.values())
        level = below
    return saved


def _restore(saved: list[tuple[object, dict]]) -> None:
    for obj, attrs in saved:
        current = vars(obj)
        current.clear()
        current.update(attrs)
