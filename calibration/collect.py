"""Record what each graph of a bundle really sees, for INT8 calibration (torch-free).

`collect_inputs` runs the FP32 bundle with the runtime's own pipeline and scheduler
over a range of calibration frames and records every graph run's feeds. Because
the real scheduler decides key and non-key frames, the keyframe net is calibrated
on key frames and the flow net and propagation head on the non-key frames, with
the recurrent state (previous logits, previous 1/8 image) they get in deployment,
not on synthetic inputs.

Calibration frames must never be evaluation frames: `FrameRange` names a
half-open range of frame indices "A:B" and `check_disjoint` refuses overlapping
calibration and evaluation ranges. Every entry point that takes both calls it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vss_edge.runtime.errors import VssEdgeError
from vss_edge.runtime.recording import record_feeds  # noqa: F401  (calibration's entry point for it)

_RANGE = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")


@dataclass(frozen=True)
class FrameRange:
    """Frames start, start+1, ..., stop-1 of a video (0-based, half-open like a Python slice)."""

    start: int
    stop: int

    def __post_init__(self):
        for name in ("start", "stop"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise VssEdgeError(f"frame range {name} must be an integer, got {value!r}")
        if self.start < 0:
            raise VssEdgeError(f"frame range {self}: start must be >= 0")
        if self.stop <= self.start:
            raise VssEdgeError(f"frame range {self}: stop must be greater than start (the range is empty)")

    @classmethod
    def parse(cls, text: str | FrameRange) -> FrameRange:
        """'A:B' -> FrameRange(A, B); a FrameRange is returned as it is."""
        if isinstance(text, FrameRange):
            return text
        match = _RANGE.match(str(text))
        if not match:
            raise VssEdgeError(f"frame range must look like A:B (e.g. 0:30, frames 0..29), got {text!r}")
        return cls(int(match.group(1)), int(match.group(2)))

    def __len__(self) -> int:
        return self.stop - self.start

    def __str__(self) -> str:
        return f"{self.start}:{self.stop}"

    def overlaps(self, other: FrameRange) -> bool:
        return self.start < other.stop and other.start < self.stop


def check_disjoint(calibration: FrameRange | str, evaluation: FrameRange | str) -> None:
    """Raise VssEdgeError if calibration and evaluation frames share any frame."""
    calibration, evaluation = FrameRange.parse(calibration), FrameRange.parse(evaluation)
    if calibration.overlaps(evaluation):
        raise VssEdgeError(f"calibration frames {calibration} overlap evaluation frames {evaluation}; "
                           f"calibrate and evaluate on different frames")


def collect_inputs(bundle: str | Path, video, frames: FrameRange | str, interval: int | None = None,
                   device: str = "cpu", threads: int | None = None) -> dict[str, list[dict[str, np.ndarray]]]:
    """Run the FP32 bundle over frames[start:stop] of `video`; return graph name -> list of feed dicts.

    bundle: an FP32 bundle folder. video: anything vss_edge.runtime.sources.open_source takes
    (a video file, an image folder). frames: FrameRange or "A:B". interval: key-frame
    interval overriding the manifest's scheduler (None: the manifest's).

    The pipeline is the runtime's own (runtime.load) with its real scheduler, started
    fresh, so the first frame of the range is a key frame and later frames are key or
    non-key as in deployment: key and non-key frames are both represented, and each
    graph is recorded with the inputs it really gets (for GSVNet: keyframe on key
    frames; flow and propagation on non-key frames, with the recurrent state).
    Feeds are copied to host numpy arrays (OrtValues from the GPU included), one dict
    per graph run, in frame order.

    Raises VssEdgeError if the video has fewer frames than the range asks for, or if
    some graph of the bundle received no input (e.g. a range shorter than the key-frame
    interval never runs the non-key graphs).
    """
    from vss_edge import runtime
    from vss_edge.runtime.sources import open_source

    frames = FrameRange.parse(frames)
    pipe = runtime.load(bundle, device=device, threads=threads, interval=interval)
    with open_source(video) as source:
        name = source.name
        chosen = [f for i, f in zip(range(frames.stop), source) if i >= frames.start]
    if len(chosen) < len(frames):
        raise VssEdgeError(f"calibration video '{name}' has only {frames.start + len(chosen)} frames; "
                           f"calibration frames {frames} need {frames.stop}")
    recorded = record_feeds(pipe, chosen)
    empty = [g for g, runs in recorded.items() if not runs]
    if empty:
        raise VssEdgeError(
            f"calibration frames {frames} never ran graph(s) {', '.join(empty)} of bundle '{bundle}' "
            f"(scheduler {pipe.scheduler!r}); use more calibration frames, e.g. at least two key-frame intervals"
        )
    return recorded
