"""Key-frame schedulers: decide, for each frame, whether the keyframe net runs (torch-free).

A key-frame scheduler (GSVNet, and any method with key frames) is any object with
    reset() -> None
    is_key(frame: FrameInfo) -> bool
A path scheduler (TDNet: which sub-network runs this frame) has reset() and
    path(frame: FrameInfo) -> int
FrameInfo carries the frame index since reset, the frames since the last key frame
and the signals the program exposes (e.g. a distortion score); schedulers that need
a signal the method does not provide should say so at construction.
The pipeline always makes the first frame (and any frame without propagation state)
a key frame, whatever the scheduler says.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from runtime.errors import VssEdgeError


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

    def reset(self) -> None:
        pass

    def path(self, frame: FrameInfo) -> int:
        return frame.index % self.paths

    def __repr__(self) -> str:
        return f"RoundRobin(paths={self.paths})"


SCHEDULERS = {FixedInterval.name: FixedInterval, RoundRobin.name: RoundRobin}


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
