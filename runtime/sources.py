"""Frames in: video files, image folders and cameras, as BGR uint8 frames (torch-free).

Frames are always numpy arrays of shape (H, W, 3), dtype uint8, BGR channel
order (OpenCV's convention), C-contiguous. Only numpy, OpenCV and the standard
library are used.

``open_source`` turns a video path, an image folder or a camera index into a
``FrameSource``. Anything a user can get wrong (missing path, corrupt or empty
file, folder without images, absent camera) raises ``SourceError`` with a
one-line message naming the source and the problem.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import math
import os
import pathlib
from collections.abc import Iterator

import cv2
import numpy as np

from vss_edge.runtime.errors import SourceError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")
DEFAULT_FPS = 25.0  # image folders, and videos that report no frame rate
CAMERA_FPS = 30.0  # cameras that report no frame rate


def sample_clip_path() -> pathlib.Path:
    """Path of the shipped sample clip: 60 frames of 768x576 at 10 fps (see vss_edge/data/README.md)."""
    return pathlib.Path(str(importlib.resources.files("vss_edge") / "data" / "sample.mp4"))


@contextlib.contextmanager
def quiet_opencv() -> Iterator[None]:
    """Silence OpenCV's own log while probing a source; the SourceError we raise says what failed.

    (FFmpeg's messages, e.g. "moov atom not found", bypass OpenCV's log and still reach stderr.)
    """
    # OpenCV 5 has cv2.utils.logging; 4.x (>= 4.8, the lowest tested) has cv2.get/setLogLevel. 0 = silent.
    log = getattr(getattr(cv2, "utils", None), "logging", None) or cv2
    previous = log.getLogLevel()
    log.setLogLevel(0)
    try:
        yield
    finally:
        log.setLogLevel(previous)


def _as_bgr(image: np.ndarray) -> np.ndarray:
    """Return a contiguous (H, W, 3) uint8 BGR view/copy of a decoded grey, BGR or BGRA image."""
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    elif image.shape[2] == 1:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    elif image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.dtype != np.uint8:
        raise SourceError(f"decoded frame has dtype {image.dtype}, expected uint8")
    return np.ascontiguousarray(image)


class FrameSource:
    """A single-pass stream of BGR uint8 frames of shape (H, W, 3), all the size of the first.

    Use ``open_source`` to make one. Iterate it once (a second ``iter()`` raises
    RuntimeError); ``close()`` it or use it as a context manager.

    Attributes:
        name: the source as given (a path, or "camera N").
        fps: frames per second (> 0); a fallback when the source does not say.
        frame_count: number of frames, or None when unknown (cameras, some
            streams). For videos it is the container's figure: a damaged file can
            yield fewer.
        size: (width, height) of the first frame.
        is_camera: frames come at the device's pace (a camera), not as fast as they are read.
    """

    def __init__(self, name: str, fps: float, frame_count: int | None, first: np.ndarray):
        self.name = name
        self.fps = float(fps)
        self.frame_count = frame_count
        self.size = (int(first.shape[1]), int(first.shape[0]))
        self._first: np.ndarray | None = first
        self._started = False
        self.frames_read = 0
        self.ended_early: str | None = None  # set when a stream ends well before its frame_count
        self.is_camera = False

    def _rest(self) -> Iterator[np.ndarray]:
        """Frames after the first, already checked to be BGR uint8 at ``size``."""
        raise NotImplementedError

    def __iter__(self) -> Iterator[np.ndarray]:
        if self._started:
            raise RuntimeError(f"{self.name}: a FrameSource can be iterated only once; open it again")
        self._started = True
        return self._frames()

    def _frames(self) -> Iterator[np.ndarray]:
        first, self._first = self._first, None
        if first is None:  # closed before iteration
            return
        self.frames_read = 1
        yield first
        for frame in self._rest():
            self.frames_read += 1
            yield frame

    def close(self) -> None:
        """Release the underlying file or device; idempotent."""
        self._first = None

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        w, h = self.size
        return f"<{type(self).__name__} {self.name!r} {w}x{h} @ {self.fps:g} fps, {self.frame_count} frames>"


class _CaptureSource(FrameSource):
    """A video file or a camera read through cv2.VideoCapture."""

    def __init__(self, name: str, cap: cv2.VideoCapture, fps: float, frame_count: int | None, first: np.ndarray):
        super().__init__(name, fps, frame_count, first)
        self._cap = cap

    def _rest(self) -> Iterator[np.ndarray]:
        index = 1
        while self._cap is not None:
            ok, frame = self._cap.read()
            if not ok or frame is None:  # end of stream, or the first frame that fails to decode
                self._check_end(index)
                return
            frame = _as_bgr(frame)
            if (frame.shape[1], frame.shape[0]) != self.size:
                raise SourceError(
                    f"{self.name}: frame {index} is {frame.shape[1]}x{frame.shape[0]}, "
                    f"but the first frame is {self.size[0]}x{self.size[1]}"
                )
            yield frame
            index += 1

    def _check_end(self, decoded: int) -> None:
        """Note a stream that ends more than 1% (at least 2 frames) before the count its header gives.

        (FFmpeg's count of some containers is an estimate from the duration, off by a frame or two.)
        """
        claimed = self.frame_count
        if claimed and claimed - decoded > max(1, claimed // 100):
            self.ended_early = (f"'{self.name}' ended after {decoded} frames, but its header says {claimed} "
                                f"(a truncated or damaged file?)")

    def close(self) -> None:
        super().close()
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class _FolderSource(FrameSource):
    """Images in a folder, in order of file name."""

    def __init__(self, name: str, files: list[pathlib.Path], first: np.ndarray):
        super().__init__(name, DEFAULT_FPS, len(files), first)
        self._files = files[1:]

    def _rest(self) -> Iterator[np.ndarray]:
        i = 0
        while i < len(self._files):  # close() empties the list
            path = self._files[i]
            i += 1
            frame = _read_image(path)
            if (frame.shape[1], frame.shape[0]) != self.size:
                raise SourceError(
                    f"image '{path}' is {frame.shape[1]}x{frame.shape[0]}, but the first image in "
                    f"'{self.name}' is {self.size[0]}x{self.size[1]}; all images must have the same size"
                )
            yield frame

    def close(self) -> None:
        super().close()
        self._files = []


def _read_image(path: pathlib.Path) -> np.ndarray:
    """Decode one image file to BGR uint8 (grey and BGRA are converted); SourceError if it cannot be."""
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as e:
        raise SourceError(f"cannot read image '{path}': {e.strerror or e}") from None
    if data.size == 0:
        raise SourceError(f"cannot decode image '{path}': the file is empty (0 bytes)")
    with quiet_opencv():
        image = cv2.imdecode(data, cv2.IMREAD_COLOR)  # always 8-bit, 3-channel BGR
    if image is None:
        raise SourceError(f"cannot decode image '{path}': file corrupt or not an image")
    return _as_bgr(image)


def _open_video(path: pathlib.Path, name: str) -> FrameSource:
    if path.stat().st_size == 0:
        raise SourceError(f"cannot decode video '{name}': the file is empty (0 bytes)")
    with quiet_opencv():
        cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        cap.release()
        raise SourceError(
            f"cannot open video '{name}': file corrupt, not a video, or a format this OpenCV cannot read"
        )
    reported = cap.get(cv2.CAP_PROP_FRAME_COUNT)
    ok, first = cap.read()
    if not ok or first is None:
        cap.release()
        if reported == 0:
            raise SourceError(f"cannot read video '{name}': it contains no frames")
        raise SourceError(f"cannot decode video '{name}': no frame could be read (file corrupt or not a video)")
    fps = cap.get(cv2.CAP_PROP_FPS)
    if not (math.isfinite(fps) and 0 < fps <= 1000):  # 0, NaN or a time base mistaken for a rate
        fps = DEFAULT_FPS
    frame_count = int(reported) if math.isfinite(reported) and reported >= 1 else None
    return _CaptureSource(name, cap, fps, frame_count, _as_bgr(first))


def _open_folder(path: pathlib.Path, name: str) -> FrameSource:
    try:
        files = sorted(
            (p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")),
            key=lambda p: p.name,
        )
    except OSError as e:
        raise SourceError(f"cannot list image folder '{name}': {e.strerror or e}") from None
    files = [p for p in files if p.is_file()]
    if not files:
        raise SourceError(f"image folder '{name}' contains no images ({', '.join(IMAGE_EXTENSIONS)})")
    return _FolderSource(name, files, _read_image(files[0]))


def _open_camera(index: int) -> FrameSource:
    name = f"camera {index}"
    with quiet_opencv():
        cap = cv2.VideoCapture(index)
    if not cap.isOpened():
        cap.release()
        raise SourceError(f"cannot open {name}: no camera with that index, or it is in use or not permitted")
    ok, first = cap.read()
    if not ok or first is None:
        cap.release()
        raise SourceError(f"cannot read {name}: it opened but returned no frame")
    fps = cap.get(cv2.CAP_PROP_FPS)
    if not (math.isfinite(fps) and 0 < fps <= 1000):
        fps = CAMERA_FPS
    source = _CaptureSource(name, cap, fps, None, _as_bgr(first))
    source.is_camera = True
    return source


def open_source(source: str | os.PathLike | int) -> FrameSource:
    """Open a video file, a folder of images or a camera as a ``FrameSource``.

    source:
        - an int >= 0, or a str of digits only ("0"): a camera index. To open a
          file whose name is all digits, pass a path such as "./0".
        - a folder: its .png/.jpg/.jpeg/.bmp files (any case; hidden files
          skipped), sorted by file name, at DEFAULT_FPS. Every image must have
          the size of the first.
        - any other path: a video file readable by OpenCV (FFmpeg).

    The first frame is decoded here, so a source that opens without error has at
    least one frame. Raises SourceError (one line, naming the source) when the
    path does not exist, a video cannot be opened or its first frame decoded, a
    video has no frames, a folder has no images or an image in it cannot be
    decoded (possibly only when it is reached), or a camera cannot be opened.
    """
    if isinstance(source, bool) or not isinstance(source, (str, os.PathLike, int)):
        raise TypeError(f"source must be a path or a camera index, not {type(source).__name__}")
    if isinstance(source, int):
        if source < 0:
            raise SourceError(f"camera index must be >= 0, got {source}")
        return _open_camera(source)
    if isinstance(source, str) and source.isdigit() and source.isascii():
        return _open_camera(int(source))
    name = os.fspath(source)
    if isinstance(name, bytes):
        name = os.fsdecode(name)
    path = pathlib.Path(name)
    if not path.exists():
        raise SourceError(f"source '{name}' does not exist")
    if path.is_dir():
        return _open_folder(path, name)
    try:
        return _open_video(path, name)
    except OSError as e:
        raise SourceError(f"cannot read video '{name}': {e.strerror or e}") from None


def read_frames(video, start: int = 0, stop: int | None = None) -> list[np.ndarray]:
    """Frames start..stop-1 (video frame indices) of a video file or image folder, in memory.

    SourceError (besides open_source's) if the range is empty or the source ends before `start`.
    """
    if start < 0 or (stop is not None and stop <= start):
        raise SourceError(f"frame range {start}:{'' if stop is None else stop} is empty")
    frames = []
    with open_source(video) as source:
        for i, frame in enumerate(source):
            if stop is not None and i >= stop:
                break
            if i >= start:
                frames.append(frame)
    if not frames:
        raise SourceError(f"'{video}' has no frames in range {start}:{'' if stop is None else stop}")
    return frames
