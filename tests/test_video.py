"""vss_edge.video: the sample clip, sources and their errors, atomic outputs, overlay."""

from __future__ import annotations

import itertools
import json

import cv2
import numpy as np
import pytest

from vss_edge.runtime.errors import SourceError, VssEdgeError
from vss_edge.video import (
    AtomicVideoWriter,
    open_source,
    overlay,
    sample_clip_path,
    write_image_atomic,
    write_text_atomic,
)


def _first_frames(n: int) -> list[np.ndarray]:
    with open_source(sample_clip_path()) as src:
        return list(itertools.islice(src, n))


def _decoded_frame_count(path) -> int:
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


# --- sources ----------------------------------------------------------------------


def test_sample_clip_yields_60_frames():
    path = sample_clip_path()
    assert path.is_file()
    assert path.stat().st_size < 2_000_000
    with open_source(path) as src:
        assert src.size == (768, 576)
        assert src.fps == pytest.approx(10.0)
        assert src.frame_count == 60
        frames = list(src)
    assert len(frames) == 60
    for f in frames:
        assert f.shape == (576, 768, 3) and f.dtype == np.uint8 and f.flags.c_contiguous
    assert not np.array_equal(frames[0], frames[-1])  # people walk


def test_source_is_single_pass():
    with open_source(str(sample_clip_path())) as src:
        next(iter(src))
        with pytest.raises(RuntimeError, match="only once"):
            iter(src)


def test_image_folder_round_trip(tmp_path):
    frames = _first_frames(3)
    for i, f in enumerate(frames):
        cv2.imwrite(str(tmp_path / f"{i:03d}.png"), f)
    cv2.imwrite(str(tmp_path / "003.png"), cv2.cvtColor(frames[0], cv2.COLOR_BGR2GRAY))  # grey -> BGR
    (tmp_path / "notes.txt").write_text("not an image")
    with open_source(tmp_path) as src:
        assert src.frame_count == 4 and src.size == (768, 576) and src.fps == 25.0
        got = list(src)
    assert len(got) == 4
    for a, b in zip(frames, got[:3]):
        np.testing.assert_array_equal(a, b)  # PNG is lossless
    assert got[3].shape == (576, 768, 3) and got[3].dtype == np.uint8
    assert np.array_equal(got[3][..., 0], got[3][..., 2])


def test_image_folder_size_mismatch_names_file(tmp_path):
    frame = _first_frames(1)[0]
    cv2.imwrite(str(tmp_path / "a.png"), frame)
    cv2.imwrite(str(tmp_path / "b.png"), frame[:100, :100])
    with open_source(tmp_path) as src:
        with pytest.raises(SourceError, match=r"b\.png.*same size"):
            list(src)


def test_missing_path():
    with pytest.raises(SourceError, match="does not exist"):
        open_source("/nonexistent/clip.mp4")


def test_empty_file(tmp_path):
    p = tmp_path / "empty.mp4"
    p.write_bytes(b"")
    with pytest.raises(SourceError, match=r"empty\.mp4.*empty \(0 bytes\)"):
        open_source(p)


def test_random_bytes_avi(tmp_path):
    p = tmp_path / "noise.avi"
    p.write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    with pytest.raises(SourceError, match=r"noise\.avi.*(corrupt|not a video)"):
        open_source(p)


def test_text_file_named_mp4(tmp_path):
    p = tmp_path / "readme.mp4"
    p.write_text("this is not a video\n" * 20)
    with pytest.raises(SourceError, match=r"readme\.mp4.*(corrupt|not a video)"):
        open_source(str(p))


def test_video_with_zero_frames(tmp_path):
    p = tmp_path / "zero.avi"
    w = cv2.VideoWriter(str(p), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    w.release()
    with pytest.raises(SourceError, match=r"zero\.avi.*(no frames|corrupt)"):
        open_source(p)


def test_empty_folder(tmp_path):
    with pytest.raises(SourceError, match="contains no images"):
        open_source(tmp_path)


def test_folder_with_corrupt_png(tmp_path):
    cv2.imwrite(str(tmp_path / "000.png"), _first_frames(1)[0])
    (tmp_path / "001.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 50)
    with open_source(tmp_path) as src:
        with pytest.raises(SourceError, match=r"001\.png.*corrupt"):
            list(src)
    only_bad = tmp_path / "only_bad"
    only_bad.mkdir()
    (only_bad / "x.png").write_bytes(b"garbage")
    with pytest.raises(SourceError, match=r"x\.png.*corrupt"):
        open_source(only_bad)


@pytest.mark.parametrize("index", [97, "97"])
def test_missing_camera(index):
    with pytest.raises(SourceError, match="cannot open camera 97"):
        open_source(index)


# --- atomic outputs ---------------------------------------------------------------


@pytest.mark.parametrize("ext", [".mp4", ".avi"])
def test_atomic_video_writer_clean_run(tmp_path, ext):
    frames = _first_frames(5)
    out = tmp_path / f"out{ext}"
    with AtomicVideoWriter(out, 10.0, (768, 576)) as w:
        for f in frames:
            w.write(f)
        assert not out.exists()  # only the hidden temp file so far
    assert w.frames_written == 5
    assert [p.name for p in tmp_path.iterdir()] == [out.name]
    assert _decoded_frame_count(out) == 5
    with open_source(out) as src:
        assert src.size == (768, 576)


def test_atomic_video_writer_exception_leaves_nothing(tmp_path):
    out = tmp_path / "out.mp4"
    with pytest.raises(KeyError):
        with AtomicVideoWriter(out, 10.0, (768, 576)) as w:
            w.write(_first_frames(1)[0])
            raise KeyError("boom")
    assert list(tmp_path.iterdir()) == []


def test_atomic_video_writer_exception_keeps_previous_file(tmp_path):
    out = tmp_path / "out.avi"
    out.write_bytes(b"previous result")
    with pytest.raises(KeyError):
        with AtomicVideoWriter(out, 10.0, (768, 576)) as w:
            w.write(_first_frames(1)[0])
            raise KeyError("boom")
    assert out.read_bytes() == b"previous result"
    assert [p.name for p in tmp_path.iterdir()] == ["out.avi"]


def test_atomic_video_writer_rejects_bad_input(tmp_path):
    with pytest.raises(VssEdgeError, match="extension"):
        AtomicVideoWriter(tmp_path / "out.mkv", 10.0, (64, 48))
    with pytest.raises(VssEdgeError, match="does not exist"):
        with AtomicVideoWriter(tmp_path / "missing" / "out.mp4", 10.0, (64, 48)):
            pass
    with pytest.raises(ValueError, match="shape"):
        with AtomicVideoWriter(tmp_path / "out.mp4", 10.0, (64, 48)) as w:
            w.write(np.zeros((48, 65, 3), np.uint8))
    with pytest.raises(VssEdgeError, match="no frames"):
        with AtomicVideoWriter(tmp_path / "out.mp4", 10.0, (64, 48)):
            pass
    assert list(tmp_path.iterdir()) == []


def test_write_image_and_text_atomic(tmp_path):
    img = np.arange(48 * 64 * 3, dtype=np.uint8).reshape(48, 64, 3)
    write_image_atomic(tmp_path / "a.png", img)
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "a.png")), img)
    write_text_atomic(tmp_path / "r.json", json.dumps({"fps": 10.0}))
    write_text_atomic(tmp_path / "r.json", json.dumps({"fps": 12.5}))
    assert json.loads((tmp_path / "r.json").read_text()) == {"fps": 12.5}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "r.json"]
    with pytest.raises(VssEdgeError, match="cannot write"):
        write_text_atomic(tmp_path / "missing" / "r.json", "{}")


# --- overlay ----------------------------------------------------------------------


def test_overlay():
    frame = np.full((576, 768, 3), 100, np.uint8)
    labels = np.zeros((576, 768), np.uint8)
    labels[100:200, 300:400] = 2
    palette = [[100, 100, 100], [0, 255, 0], [255, 0, 0]]  # RGB; label 0 = the frame's own grey
    out = overlay(frame, labels, palette, alpha=0.5)
    assert out.shape == frame.shape and out.dtype == np.uint8
    changed = np.any(out != frame, axis=2)
    np.testing.assert_array_equal(changed, labels == 2)
    assert tuple(out[150, 350]) == (50, 50, 178)  # BGR: red blended over grey (177.5 rounds up)
    np.testing.assert_array_equal(overlay(frame, labels, palette, alpha=0.0), frame)


def test_overlay_rejects_out_of_range_labels():
    frame = np.zeros((4, 5, 3), np.uint8)
    labels = np.full((4, 5), 3, np.uint8)
    with pytest.raises(ValueError, match="label 3"):
        overlay(frame, labels, np.zeros((3, 3), np.uint8))
    with pytest.raises(ValueError, match="shape"):
        overlay(frame, labels[:3], np.zeros((4, 3), np.uint8))
