"""Frames in and out: video files, image folders and cameras; crash-safe outputs; overlays.

Frames are always numpy arrays of shape (H, W, 3), dtype uint8, BGR channel
order (OpenCV's convention), C-contiguous. Label maps are (H, W) integer arrays
of class indices. Only numpy, OpenCV and the standard library are used.

Reading: ``open_source`` turns a video path, an image folder or a camera index
into a ``FrameSource``. Anything a user can get wrong (missing path, corrupt or
empty file, folder without images, absent camera) raises ``SourceError`` with a
one-line message naming the source and the problem.

Writing: ``AtomicVideoWriter``, ``write_image_atomic`` and ``write_text_atomic``
write to a hidden temporary file in the target folder (``.NAME.XXXXXXXX.tmp.EXT``)
and rename it into place only once it is complete and, for a video, verified
(decoded back: every frame written is there, at its size), so a crash, a kill,
a full disk or an exception never leaves a half-written output and never damages
a previous file at the same path. Failures to write raise ``OutputError`` (a
``VssEdgeError``) naming the file and the cause (disk full, read-only, permission).
``remove_stale_temporaries`` deletes the temporary files of killed runs;
``locked_folder`` keeps two runs from writing one folder at once.
"""

from __future__ import annotations

import contextlib
import math
import os
import pathlib
import re
import secrets
from collections.abc import Iterator

import cv2
import numpy as np

from vss_edge.runtime.errors import OutputError, SourceError, VssEdgeError

try:
    import fcntl
except ImportError:  # not POSIX: folders are not locked
    fcntl = None

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")
DEFAULT_FPS = 25.0  # image folders, and videos that report no frame rate
CAMERA_FPS = 30.0  # cameras that report no frame rate
# extension -> (fourcc, OpenCV backend). MPEG-4 Part 2 goes through FFmpeg, which can only
# write even sizes (OpenCV drops the last odd column/row); Motion JPEG AVI goes through
# OpenCV's own encoder, which keeps any size.
_VIDEO_CODECS = {".mp4": ("mp4v", cv2.CAP_FFMPEG), ".avi": ("MJPG", cv2.CAP_OPENCV_MJPEG)}
# A finished video is decoded back frame by frame up to this many frames x pixels (about 2 s
# at 768x576: decoding MPEG-4 there takes 1.9 ms a frame, a quarter of encoding it); longer
# ones are checked by their index's frame count and by decoding the last frame, so that
# finishing after SIGTERM stays well inside docker's 10 s grace period. (A write that fails
# in the middle is sticky in FFmpeg: the index written at the end fails with it.)
FULL_DECODE_PIXELS = 440_000_000


def sample_clip_path() -> pathlib.Path:
    """Path of the shipped sample clip: 60 frames of 768x576 at 10 fps (see vss_edge/data/README.md)."""
    return pathlib.Path(__file__).resolve().parent / "data" / "sample.mp4"


@contextlib.contextmanager
def _quiet_opencv() -> Iterator[None]:
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
    with _quiet_opencv():
        image = cv2.imdecode(data, cv2.IMREAD_COLOR)  # always 8-bit, 3-channel BGR
    if image is None:
        raise SourceError(f"cannot decode image '{path}': file corrupt or not an image")
    return _as_bgr(image)


def _open_video(path: pathlib.Path, name: str) -> FrameSource:
    if path.stat().st_size == 0:
        raise SourceError(f"cannot decode video '{name}': the file is empty (0 bytes)")
    with _quiet_opencv():
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
    with _quiet_opencv():
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
    return _CaptureSource(name, cap, fps, None, _as_bgr(first))


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


# --- crash-safe outputs -------------------------------------------------------------

# The hidden temporary names our writers use, and nothing else: '.NAME.<8 hex>.tmp.EXT'.
_TEMP_NAME = re.compile(r"\.(?P<stem>.+)\.[0-9a-f]{8}\.tmp(?P<suffix>\.[A-Za-z0-9]+)?")
LOCK_NAME = ".vss-edge.lock"


def _temp_path(path: pathlib.Path) -> pathlib.Path:
    """A fresh hidden name in path's folder, keeping path's extension (OpenCV picks formats by it)."""
    return path.with_name(f".{path.stem}.{secrets.token_hex(4)}.tmp{path.suffix}")


def is_temporary(path: str | os.PathLike) -> bool:
    """Whether path's name is one of our writers' hidden temporary names."""
    return _TEMP_NAME.fullmatch(pathlib.Path(path).name) is not None


def _unlink_quietly(path: pathlib.Path | None) -> None:
    """Remove a file we made, if it is there and removable (a read-only folder must not turn a
    clean error into a traceback)."""
    if path is None:
        return
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


def remove_stale_temporaries(folder: str | os.PathLike) -> int:
    """Delete the temporary files that killed runs left in folder (our names only); returns how many.

    Call it only while holding ``locked_folder(folder)``, so no live writer's file is touched.
    """
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for entry in entries:
        if entry.is_file(follow_symlinks=False) and _TEMP_NAME.fullmatch(entry.name):
            try:
                os.unlink(entry.path)
                removed += 1
            except OSError:
                pass
    return removed


def _output_error(path: pathlib.Path, e: OSError, what: str = "write") -> OutputError:
    return OutputError(f"cannot {what} '{path}': {e.strerror or e}")


def free_bytes(folder: str | os.PathLike) -> int | None:
    """Bytes this process may still write on folder's filesystem (root may use the reserved blocks); None if unknown."""
    try:
        st = os.statvfs(folder)
    except (OSError, AttributeError):
        return None
    blocks = st.f_bfree if hasattr(os, "geteuid") and os.geteuid() == 0 else st.f_bavail
    return blocks * st.f_frsize


def _disk_full(folder: pathlib.Path) -> bool:
    """True when not one block is left: what a failed write leaves behind (it fills the disk up to 0)."""
    free = free_bytes(folder)
    return free is not None and free == 0


def _fsync_dir(folder: pathlib.Path) -> None:
    """Make a rename in folder durable where the platform allows it (best effort)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_bytes_atomic(path: pathlib.Path, data: bytes) -> None:
    tmp = _temp_path(path)
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        _unlink_quietly(tmp)
        raise _output_error(path, e) from None
    except BaseException:
        _unlink_quietly(tmp)
        raise
    _fsync_dir(path.parent)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write text (UTF-8, newlines as given) to path, all or nothing; OutputError if it cannot."""
    _write_bytes_atomic(pathlib.Path(path), text.encode("utf-8"))


def write_image_atomic(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write an image to path, all or nothing; the format comes from the extension (use .png).

    image: a uint8 (or, for PNG, uint16) array of shape (H, W) grey, (H, W, 3)
    BGR or (H, W, 4) BGRA, as for cv2.imwrite. ValueError if OpenCV cannot
    encode it in that format; OutputError if the file cannot be written.
    """
    path = pathlib.Path(path)
    image = np.asarray(image)
    try:
        ok, buf = cv2.imencode(path.suffix, image)
    except cv2.error as e:
        ok, detail = False, f": {e}"
    else:
        detail = ""
    if not ok:
        raise ValueError(f"cannot encode a {image.dtype} array of shape {image.shape} as '{path.suffix}'{detail}")
    _write_bytes_atomic(path, buf.tobytes())


def check_writable_folder(folder: str | os.PathLike, what: str) -> None:
    """VssEdgeError unless folder exists and a file can be created in it (tried: as root,
    permission bits say nothing, and a read-only mount only shows when written)."""
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise VssEdgeError(f"{what}: folder '{folder}' does not exist")
    probe = _temp_path(folder / "write-test")
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    except OSError as e:
        raise OutputError(f"{what}: cannot write in folder '{folder}': {e.strerror or e}") from None
    _unlink_quietly(probe)


@contextlib.contextmanager
def locked_folder(folder: str | os.PathLike) -> Iterator[pathlib.Path]:
    """Hold an exclusive lock on an output folder (a hidden lock file in it) for the block.

    A second holder, in this process or another, gets VssEdgeError naming the folder and the
    holder's pid. The kernel drops the lock when its process dies, even by SIGKILL, so a
    killed run never blocks the next one; while we hold it, temporary files in the folder are
    nobody's but ours and the killed runs'. The lock file is removed on exit. OutputError if
    the folder cannot be written.
    """
    folder = pathlib.Path(folder)
    lock = folder / LOCK_NAME
    if fcntl is None:
        yield folder
        return
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise OutputError(f"cannot write in output folder '{folder}': {e.strerror or e}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            os.close(fd)
            raise VssEdgeError(f"output folder '{folder}' is in use by another vss-edge run"
                               + (f" (pid {holder})" if holder else "") + "; choose another --out") from None
        except OSError:  # a filesystem without locks (some network mounts): go on unlocked
            break
        try:  # the file we locked may have been removed by the holder we waited for: lock the new one
            same = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
    except OSError:
        pass  # the pid is only for the message of a second run
    try:
        yield folder
    finally:
        _unlink_quietly(lock)  # before closing: nobody can lock it between the two
        os.close(fd)


class AtomicVideoWriter:
    """Write a video that appears at ``path`` only once complete and verified.

    ``path`` must end in .mp4 (MPEG-4 Part 2, 'mp4v', through FFmpeg: even width and height
    only) or .avi (Motion JPEG, OpenCV's own encoder: any size); ``fps`` > 0; ``size`` =
    (width, height). Use as a context manager: on entry a hidden temporary file is opened in
    path's folder; ``write`` appends frames; a clean exit releases the encoder, decodes the
    file back (every frame written must be there, at ``size``) and only then renames it onto
    ``path`` (replacing any old file); an exception inside the ``with``, or a file that fails
    the check, deletes it and leaves ``path`` as it was.

    Failures raise OutputError naming the cause: the folder cannot be written (read-only,
    permission) at entry; a frame the encoder reports unwritten, or a full disk (not one block
    left: what a failed write leaves), at ``write``; an empty or incomplete file at the end.
    OpenCV's and FFmpeg's own warnings are kept quiet (set OPENCV_FFMPEG_LOGLEVEL=-8 before
    cv2 first opens a video to silence FFmpeg's; the CLI does).
    """

    def __init__(self, path: str | os.PathLike, fps: float, size: tuple[int, int]):
        self.path = pathlib.Path(path)
        codec = _VIDEO_CODECS.get(self.path.suffix.lower())
        if codec is None:
            raise VssEdgeError(
                f"cannot write video '{self.path}': extension must be one of {', '.join(_VIDEO_CODECS)}"
            )
        if not (math.isfinite(fps) and fps > 0):
            raise ValueError(f"fps must be a positive number, got {fps}")
        width, height = (int(v) for v in size)
        if width <= 0 or height <= 0:
            raise ValueError(f"size must be (width, height) > 0, got {size}")
        if codec[1] == cv2.CAP_FFMPEG and (width % 2 or height % 2):
            raise VssEdgeError(f"cannot write video '{self.path}' at {width}x{height}: MPEG-4 through FFmpeg needs "
                               f"an even width and height (OpenCV would drop the last column or row); use .avi")
        self.fps = float(fps)
        self.size = (width, height)
        self._codec, self._backend = codec
        self._tmp: pathlib.Path | None = None
        self._writer: cv2.VideoWriter | None = None
        self._frames_written = 0
        self.verified = False

    @property
    def frames_written(self) -> int:
        """Frames the encoder accepted so far; after a clean exit, the frames verified in the file."""
        return self._frames_written

    def __enter__(self) -> AtomicVideoWriter:
        if self._writer is not None or self._tmp is not None:
            raise RuntimeError("AtomicVideoWriter is already open")
        if not self.path.parent.is_dir():
            raise VssEdgeError(f"cannot write video '{self.path}': folder '{self.path.parent}' does not exist")
        tmp = _temp_path(self.path)
        try:  # create it ourselves first: OpenCV would only say "not opened", never why
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        except OSError as e:
            raise _output_error(self.path, e, "write video") from None
        self._tmp = tmp
        with _quiet_opencv():
            writer = cv2.VideoWriter(str(tmp), self._backend, cv2.VideoWriter_fourcc(*self._codec), self.fps,
                                     self.size)
        if not writer.isOpened():
            writer.release()
            self._discard()
            cause = f": the disk is full ({self._where_full()})" if _disk_full(self.path.parent) else ""
            raise OutputError(
                f"cannot open a video writer for '{self.path}' (codec {self._codec}, "
                f"{self.size[0]}x{self.size[1]} @ {self.fps:g} fps){cause}"
            )
        self._writer = writer
        return self

    def write(self, frame_bgr: np.ndarray) -> None:
        """Append one frame: a uint8 array of shape (height, width, 3), BGR, at the writer's size.

        ValueError otherwise (OpenCV would drop a wrongly sized frame silently). OutputError
        when the encoder says the frame was not written (OpenCV >= 5 tells) or the disk is full.
        """
        if self._writer is None:
            raise RuntimeError("AtomicVideoWriter.write called outside its 'with' block")
        if (
            not isinstance(frame_bgr, np.ndarray)
            or frame_bgr.dtype != np.uint8
            or frame_bgr.shape != (self.size[1], self.size[0], 3)
        ):
            got = (
                f"{frame_bgr.dtype} {frame_bgr.shape}"
                if isinstance(frame_bgr, np.ndarray)
                else type(frame_bgr).__name__
            )
            raise ValueError(f"frame must be uint8 of shape ({self.size[1]}, {self.size[0]}, 3), got {got}")
        with _quiet_opencv():  # "Failed to write frame", once a frame, on a full disk
            ok = self._writer.write(frame_bgr)
        if _disk_full(self.path.parent):
            raise OutputError(f"cannot write video '{self.path}': the disk is full ({self._where_full()}); "
                              f"stopped at frame {self._frames_written + 1}")
        if ok is False:  # OpenCV 4 returns None whatever happened; 5 returns False on failure
            raise OutputError(f"cannot write video '{self.path}': the encoder could not write frame "
                              f"{self._frames_written + 1} (codec {self._codec})")
        self._frames_written += 1

    def _where_full(self) -> str:
        free = free_bytes(self.path.parent)
        return f"{'?' if free is None else free} bytes free on the filesystem of '{self.path.parent}'"

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.discard()
        else:
            self.finish()

    def _release(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            with _quiet_opencv():
                writer.release()

    def discard(self) -> None:
        """Close the encoder and delete the temporary file; ``path`` stays as it was. Idempotent."""
        self._release()
        self._discard()

    def finish(self) -> None:
        """Close the encoder, verify the file and rename it onto ``path`` (what a clean exit does).

        OutputError (the temporary file deleted, ``path`` as it was) if the file is not complete.
        """
        self._release()
        if self._tmp is None:
            raise RuntimeError("AtomicVideoWriter.finish called without an open writer")
        try:
            if self._frames_written == 0:
                raise VssEdgeError(f"no frames were written to '{self.path}'; not creating an empty video")
            problem = _check_video(self._tmp, self._frames_written, self.size)
            if problem:
                cause = f"the disk is full ({self._where_full()})" if _disk_full(self.path.parent) else \
                    f"codec {self._codec}"
                raise OutputError(f"cannot finish video '{self.path}': the written file {problem} ({cause})")
            with open(self._tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(self._tmp, self.path)
            self._tmp = None
            self.verified = True
        except OSError as e:
            raise _output_error(self.path, e, "finish video") from None
        finally:
            self._discard()
        _fsync_dir(self.path.parent)

    def _discard(self) -> None:
        _unlink_quietly(self._tmp)
        self._tmp = None


def _check_video(path: pathlib.Path, frames: int, size: tuple[int, int]) -> str | None:
    """What is wrong with a finished video file that should hold `frames` frames of `size`, or None."""
    try:
        if path.stat().st_size == 0:
            return "is empty"
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    with _quiet_opencv():
        cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
        try:
            if not cap.isOpened():
                return f"does not decode (0 of the {frames} frames written)"
            got = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
            if got != size:
                return f"has frames of {got[0]}x{got[1]}, not {size[0]}x{size[1]}"
            if frames * size[0] * size[1] <= FULL_DECODE_PIXELS:
                decoded = 0
                while cap.grab():
                    decoded += 1
                if decoded != frames:
                    return f"decodes to {decoded} of the {frames} frames written"
                return None
            indexed = cap.get(cv2.CAP_PROP_FRAME_COUNT)
            if indexed != frames:
                return f"indexes {indexed:g} of the {frames} frames written"
            cap.set(cv2.CAP_PROP_POS_FRAMES, frames - 1)
            if not cap.grab() or cap.grab():
                return f"does not decode its last frame ({frames})"
            return None
        finally:
            cap.release()


# --- visualisation ------------------------------------------------------------------


def overlay(frame_bgr: np.ndarray, labels: np.ndarray, palette_rgb, alpha: float = 0.5) -> np.ndarray:
    """Blend each pixel's class colour over a frame.

    frame_bgr: uint8 (H, W, 3) BGR. labels: integer (normally uint8) (H, W) class
    indices, each in [0, K). palette_rgb: (K, 3) RGB colours in [0, 255], an
    array or nested list. alpha: weight of the colour, in [0, 1].
    Returns a new uint8 (H, W, 3) BGR frame: round((1 - alpha) * frame + alpha * colour).
    Raises ValueError on wrong shapes or dtypes, or a label >= K.
    """
    frame = np.asarray(frame_bgr)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"frame must be a uint8 (H, W, 3) array, got {frame.dtype} {frame.shape}")
    labels = np.asarray(labels)
    if labels.shape != frame.shape[:2] or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"labels must be an integer array of shape {frame.shape[:2]}, got {labels.dtype} {labels.shape}"
        )
    palette = np.asarray(palette_rgb)
    if palette.ndim != 2 or palette.shape[1] != 3 or len(palette) == 0 or not np.issubdtype(palette.dtype, np.integer):
        raise ValueError(f"palette must be a (K, 3) integer array of RGB colours, got {palette.dtype} {palette.shape}")
    if palette.min() < 0 or palette.max() > 255:
        raise ValueError("palette colours must be in [0, 255]")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if labels.size:
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high >= len(palette):
            bad = high if high >= len(palette) else low
            raise ValueError(f"label {bad} is out of range for a palette of {len(palette)} colours")
    palette_bgr = np.ascontiguousarray(palette[:, ::-1], dtype=np.uint8)
    colours = palette_bgr[labels]
    return cv2.addWeighted(frame, 1.0 - alpha, colours, alpha, 0.0)
