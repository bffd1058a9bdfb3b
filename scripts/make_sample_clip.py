"""Derive the sample clip shipped in vss_edge/data/ from OpenCV's vtest.avi.

Usage (from anywhere):
    python scripts/make_sample_clip.py [SOURCE]

SOURCE defaults to ../shared/data/vtest.avi relative to the repository root;
an explicit SOURCE is taken relative to the current directory. vtest.avi is
OpenCV sample data (samples/data/vtest.avi in the OpenCV repository): 768x576,
10 fps, 795 frames, a street scene with walking people.

The clip is frames 100-159 of vtest.avi (0-based, both ends included: 60
consecutive frames, 6 s at 10 fps), at the native 768x576, encoded as MPEG-4
Part 2 ('mp4v') in vss_edge/data/sample.mp4, about 0.9 MB. H.264 ('avc1') cannot
be encoded by the OpenCV wheel used here, and MJPG in .avi would be ~4.5 MB.

The clip is written to a hidden temporary file next to the target, decoded
back and checked (exactly 60 frames of 768x576, under 2 MB) and only then
renamed into place, so a failed run leaves any previous clip untouched.
Uses only OpenCV and the standard library.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys

import cv2

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_SOURCE = "../shared/data/vtest.avi"  # relative to REPO_ROOT
TARGET = REPO_ROOT / "vss_edge" / "data" / "sample.mp4"

FIRST_FRAME = 100  # 0-based index into vtest.avi
NUM_FRAMES = 60
SIZE = (768, 576)  # width, height
FPS = 10.0
MAX_BYTES = 2_000_000


def _count_frames(path: pathlib.Path) -> int:
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        return 0
    n = 0
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                return n
            if (frame.shape[1], frame.shape[0]) != SIZE:
                raise SystemExit(f"error: decoded frame {n} has size {frame.shape[1]}x{frame.shape[0]}")
            n += 1
    finally:
        cap.release()


def make_clip(source: pathlib.Path, target: pathlib.Path = TARGET) -> None:
    cap = cv2.VideoCapture(str(source))
    if not cap.isOpened():
        raise SystemExit(f"error: cannot open source video '{source}'")
    frames = []
    try:
        index = 0
        while len(frames) < NUM_FRAMES:
            ok, frame = cap.read()
            if not ok:
                raise SystemExit(
                    f"error: '{source}' ended at frame {index}; need frames "
                    f"{FIRST_FRAME}-{FIRST_FRAME + NUM_FRAMES - 1}"
                )
            if index >= FIRST_FRAME:
                if (frame.shape[1], frame.shape[0]) != SIZE:
                    raise SystemExit(
                        f"error: '{source}' is {frame.shape[1]}x{frame.shape[0]}, expected "
                        f"{SIZE[0]}x{SIZE[1]} (is it OpenCV's vtest.avi?)"
                    )
                frames.append(frame)
            index += 1
    finally:
        cap.release()

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.stem}.{os.getpid()}.tmp{target.suffix}")
    try:
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), FPS, SIZE)
        if not writer.isOpened():
            raise SystemExit(f"error: cannot open an mp4v VideoWriter for '{tmp}'")
        for frame in frames:
            writer.write(frame)
        writer.release()

        decoded = _count_frames(tmp)
        if decoded != NUM_FRAMES:
            raise SystemExit(f"error: the written clip decodes to {decoded} frames, expected {NUM_FRAMES}")
        size = tmp.stat().st_size
        if size >= MAX_BYTES:
            raise SystemExit(f"error: the written clip is {size} bytes, expected < {MAX_BYTES}")
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    print(
        f"wrote {target} ({size} bytes, {NUM_FRAMES} frames {FIRST_FRAME}-{FIRST_FRAME + NUM_FRAMES - 1} "
        f"of {source.name}, {SIZE[0]}x{SIZE[1]} @ {FPS:g} fps)"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "source",
        nargs="?",
        default=None,
        help=f"path to vtest.avi (default: {DEFAULT_SOURCE} relative to the repository root)",
    )
    args = parser.parse_args(argv)
    source = REPO_ROOT / DEFAULT_SOURCE if args.source is None else pathlib.Path(args.source)
    if not source.is_file():
        raise SystemExit(f"error: source video '{source}' does not exist")
    make_clip(source)


if __name__ == "__main__":
    sys.exit(main())
