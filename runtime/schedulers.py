"""Key-frame schedulers: decide, for each frame, whether the keyframe net runs (torch-free).

A key-frame scheduler (GSVNet, and any method with key frames) is any object with
    reset() -> None
    is_key(frame: FrameInfo) -> bool
A path scheduler (TDNet: which sub-network runs this frame) has reset() and
    path(frame: FrameInfo) -> int
FrameInfo carries the frame index since reset, the frames since the last key frame
and the signals the program exposes (e.g. a distortion score); schedulers that need
a signal the method does not provide should say so at construction.
A scheduler that reads a signal names it in `signals_needed` (e.g. ("distortion",));
the program computes only the signals some scheduler asks for.
The pipeline always makes the first frame (and any frame without propagation state)
a key frame, whatever the scheduler says.
A scheduler whose decisions depend only on FrameInfo.index and .since_key and repeat every N
frames (fixed_interval, round_robin) says so with `period = N`: the staggered multi-stream
policy (runtime.multistream) shifts such a scheduler's phase per stream. One that decides from
the frames' content (distortion) has no period: no phase can move its key frames.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from vss_edge.runtime.errors import VssEdgeError


@dataclass(frozen=True)
class FrameInfo:
    index: int  # frames since reset, from 0
    since_key: int  # frames since the last key frame (1 right after one)
    signals: dict = field(default_factory=dict)


class Scheduler(Protocol):
    def reset(self) -> None: ...

    def is_key(self, frame: FrameInfo) -> bool: ...


class FixedInterval:
    """A key frame every `interval` frames: frames 0, N, 2N, ... (GSVNet, MPVSS)."""

    name = "fixed_interval"

    def __init__(self, interval: int = 5):
        if int(interval) < 1:
            raise VssEdgeError(f"interval must be >= 1, got {interval}")
        self.interval = int(interval)

    @property
    def period(self) -> int:
        return self.interval

    def reset(self) -> None:
        pass

    def is_key(self, frame: FrameInfo) -> bool:
        return frame.since_key >= self.interval

    def __repr__(self) -> str:
        return f"FixedInterval(interval={self.interval})"


class RoundRobin:
    """Frame i runs sub-network i mod `paths` (TDNet)."""

    name = "round_robin"

    def __init__(self, paths: int = 4):
        if int(paths) < 1:
            raise VssEdgeError(f"paths must be >= 1, got {paths}")
        self.paths = int(paths)

    @property
    def period(self) -> int:
        return self.paths

    def reset(self) -> None:
        pass

    def path(self, frame: FrameInfo) -> int:
        return frame.index % self.paths

    def __repr__(self) -> str:
        return f"RoundRobin(paths={self.paths})"


class DistortionAware:
    """STMG's distortion-aware key-frame selection (Rhee et al. 2022, Algorithm 1).

    Reads frame.signals["distortion"] (a scalar >= 0: STMG's mean spatial mask, or the
    runtime's frame difference for methods without a mask generator). Frame 0 is a key
    frame; the threshold starts at frame 1's distortion (so frame 1 is non-key, gamma_2 of
    that first step being 1). Then frame i is a key frame iff its distortion exceeds the
    threshold; the threshold becomes gamma_key * d_i after a key frame (no two key frames
    in a row unless the distortion doubles) and gamma_nonkey * d_i after a non-key frame.

    floor: distortions at or below it count as 0. Our choice, not in the paper: Algorithm 1
    assumes an unchanged frame gives exactly 0, float arithmetic gives ~1e-7 that would
    compare as "more distorted" than 0.95 x itself on a repeated frame.
    """

    name = "distortion"
    signals_needed = ("distortion",)

    def __init__(self, gamma_key: float = 2.0, gamma_nonkey: float = 0.95, floor: float = 1e-4):
        if gamma_key <= 0 or gamma_nonkey <= 0 or floor < 0:
            raise VssEdgeError(f"distortion scheduler: gammas must be > 0 and floor >= 0, got "
                               f"gamma_key={gamma_key}, gamma_nonkey={gamma_nonkey}, floor={floor}")
        self.gamma_key, self.gamma_nonkey, self.floor = float(gamma_key), float(gamma_nonkey), float(floor)
        self.threshold: float | None = None

    def reset(self) -> None:
        self.threshold = None

    def is_key(self, frame: FrameInfo) -> bool:
        if "distortion" not in frame.signals:
            raise VssEdgeError("the distortion scheduler needs a 'distortion' signal, which this program did not give")
        d = float(frame.signals["distortion"])
        d = 0.0 if d <= self.floor else d
        if frame.index == 0:
            return True
        if self.threshold is None:  # sigma <- |m_sp;1|; frame 1 is non-key (gamma_2;1 = 1)
            self.threshold = d
            return False
        if d > self.threshold:
            self.threshold = self.gamma_key * d
            return True
        self.threshold = self.gamma_nonkey * d
        return False

    def __repr__(self) -> str:
        return f"DistortionAware(gamma_key={self.gamma_key}, gamma_nonkey={self.gamma_nonkey}, floor={self.floor})"


SCHEDULERS = {FixedInterval.name: FixedInterval, RoundRobin.name: RoundRobin, DistortionAware.name: DistortionAware}


def build_scheduler(spec: dict, **overrides) -> Scheduler:
    """Scheduler from a manifest entry {name, params}, with parameters overridden by keyword."""
    name = spec.get("name")
    if name not in SCHEDULERS:
        raise VssEdgeError(f"unknown scheduler {name!r} (known: {', '.join(SCHEDULERS)})")
    params = {**spec.get("params", {}), **{k: v for k, v in overrides.items() if v is not None}}
    try:
        return SCHEDULERS[name](**params)
    except (TypeError, ValueError) as e:
        raise VssEdgeError(f"scheduler {name!r}: bad parameters {params} ({e})") from None


def choose_scheduler(default: dict, name: str | None = None, interval: int | None = None) -> Scheduler:
    """The scheduler a user asked for, over a bundle's default entry {name, params}.

    name: a scheduler name (None: the bundle's). interval: a fixed key-frame interval; alone
    on a bundle whose default is another key-frame scheduler it selects fixed_interval.
    The bundle's parameters apply only when the bundle's own scheduler is chosen.
    """
    if name is None:
        name = FixedInterval.name if interval is not None and default.get("name") == DistortionAware.name \
            else default.get("name")
    if interval is not None and name != FixedInterval.name:
        raise VssEdgeError(f"--interval applies to the fixed_interval scheduler, not {name!r}")
    spec = default if name == default.get("name") else {"name": name, "params": {}}
    return build_scheduler(spec, interval=interval)
