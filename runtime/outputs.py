"""Frames and files out, crash-safe: atomic writes, verified videos, folder locks, overlays (torch-free).

``AtomicVideoWriter``, ``write_image_atomic``, ``write_text_atomic`` and
``write_bytes_atomic`` write to a hidden temporary file in the target folder
(``.NAME.XXXXXXXX.tmp.EXT``) and rename it into place only once it is complete and,
for a video, verified (decoded back: every frame written is there, at its size), so
a crash, a kill, a full disk or an exception never leaves a half-written output and
never damages a previous file at the same path. Failures to write raise
``OutputError`` (a ``VssEdgeError``) naming the file and the cause (disk full,
read-only, permission). ``remove_stale_temporaries`` deletes the temporary files of
killed runs; ``locked_folder`` keeps two runs from writing one folder at once.
``overlay`` blends label colours over a frame (what the overlay video shows).
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

from vss_edge.runtime.errors import OutputError, VssEdgeError
from vss_edge.runtime.sources import quiet_opencv

try:
    import fcntl
except ImportError:  # not POSIX: folders are not locked
    fcntl = None

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


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write bytes to path, all or nothing (fsynced, then renamed into place); OutputError if it cannot."""
    path = pathlib.Path(path)
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
    write_bytes_atomic(pathlib.Path(path), text.encode("utf-8"))


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
    write_bytes_atomic(path, buf.tobytes())


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
        with quiet_opencv():
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
        with quiet_opencv():  # "Failed to write frame", once a frame, on a full disk
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
            with quiet_opencv():
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
            problem = video_problem(self._tmp, self._frames_written, self.size)
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


def video_problem(path: str | os.PathLike, frames: int, size: tuple[int, int]) -> str | None:
    """What is wrong with a finished video file that should hold `frames` frames of `size` (width,
    height), or None: how AtomicVideoWriter verifies a video before it takes its name, and how a
    resumed fleet verifies one it would skip."""
    path = pathlib.Path(path)
    try:
        if path.stat().st_size == 0:
            return "is empty"
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    with quiet_opencv():
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
