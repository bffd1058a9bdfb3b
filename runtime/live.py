"""Live sources: decode on a thread of its own, hand over only the newest frame, count every drop (torch-free).

A camera does not wait for the model. `LiveFrames(source)` reads a FrameSource on its own thread
as fast as it delivers (a camera paces itself; a video file or image folder is paced at its
frame rate, as a camera of that rate would deliver it) and keeps only the newest frame: `take()`
returns it, and a frame that a newer one replaces before it was taken is dropped and counted,
never silently. Counts add up: frames_captured == frames_taken + frames_dropped once closed (a
frame still waiting at close counts as dropped).

Each LiveFrame carries `captured_at`, the time.perf_counter() at which the decoder handed it
over (what the driver buffered before that is not seen), so capture-to-labels latency is
`labels_at - captured_at`.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LiveFrame:
    frame: np.ndarray  # BGR uint8 (H, W, 3)
    number: int  # 0-based position among the frames the source delivered
    captured_at: float  # time.perf_counter() when the decoder handed it over


class LiveFrames:
    """The newest frame of a FrameSource decoded on its own thread.

    pace: deliver a file's or folder's frames at source.fps (default: unless the source is a
    camera, which paces itself); False decodes as fast as it can. take(timeout) -> LiveFrame or
    None (nothing new within timeout, or the source has ended: see `ended`). A decoding error
    (SourceError...) is raised by take() once the frames before it were taken or dropped.
    close() stops the thread (and is idempotent); the caller closes the source after it.
    """

    def __init__(self, source, pace: bool | None = None):
        self.source = source
        self.pace = (not getattr(source, "is_camera", False)) if pace is None else bool(pace)
        self.frames_captured = 0
        self.frames_taken = 0
        self.frames_dropped = 0
        self._newest: LiveFrame | None = None
        self._finished = False  # the reader has stopped: end of source, an error, or close()
        self._error: BaseException | None = None
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name=f"vss-edge-live {source.name}", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        start = time.perf_counter()
        try:
            for number, frame in enumerate(self.source):
                if self.pace:  # when a camera of this rate would have delivered frame `number`
                    if self._stop.wait(max(0.0, start + number / self.source.fps - time.perf_counter())):
                        return
                if self._stop.is_set():
                    return
                with self._changed:
                    if self._newest is not None:
                        self.frames_dropped += 1
                    self._newest = LiveFrame(frame, number, time.perf_counter())
                    self.frames_captured += 1
                    self._changed.notify_all()
        except BaseException as e:  # noqa: BLE001  handed to the taker
            with self._changed:
                self._error = e
        finally:
            with self._changed:
                self._finished = True
                self._changed.notify_all()

    @property
    def ended(self) -> bool:
        """The source will deliver nothing more and every frame was taken or dropped (no error pending)."""
        with self._changed:
            return self._finished and self._newest is None and self._error is None

    def take(self, timeout: float | None = None) -> LiveFrame | None:
        """The newest frame not taken yet, waiting up to timeout seconds (None: until there is one
        or the source ends); None if there is none."""
        with self._changed:
            self._changed.wait_for(lambda: self._newest is not None or self._finished, timeout)
            if self._newest is None:
                if self._error is not None:
                    error, self._error = self._error, None
                    raise error
                return None
            frame, self._newest = self._newest, None
            self.frames_taken += 1
            return frame

    def close(self) -> None:
        """Stop reading (after the frame being decoded); a frame still waiting counts as dropped."""
        self._stop.set()
        self._thread.join()
        with self._changed:
            if self._newest is not None:
                self._newest = None
                self.frames_dropped += 1

    def __enter__(self) -> LiveFrames:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
