"""runtime.sources and runtime.outputs: the sample clip, sources and their errors, atomic outputs, overlay."""

from __future__ import annotations

import itertools
import json

import cv2
import numpy as np
import pytest

from vss_edge.runtime.errors import OutputError, SourceError, VssEdgeError
from vss_edge.runtime.sources import open_source, sample_clip_path
from vss_edge.runtime.outputs import (
    AtomicVideoWriter,
    is_temporary,
    overlay,
    remove_stale_temporaries,
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


# --- verified, odd-sized and interrupted outputs ---------------------------------------------


def test_mp4_refuses_an_odd_size_that_avi_keeps(tmp_path):
    frames = [np.full((75, 101, 3), 40 * i, np.uint8) for i in range(3)]
    with pytest.raises(VssEdgeError, match=r"101x75.*even width and height.*\.avi"):
        AtomicVideoWriter(tmp_path / "out.mp4", 10.0, (101, 75))
    with AtomicVideoWriter(tmp_path / "out.avi", 10.0, (101, 75)) as w:
        for f in frames:
            w.write(f)
    assert w.verified and w.frames_written == 3
    with open_source(tmp_path / "out.avi") as src:
        assert src.size == (101, 75) and len(list(src)) == 3


def test_finished_video_is_checked_before_it_takes_its_name(tmp_path, monkeypatch):
    """A file that does not decode back to every frame written never replaces the old one."""
    import vss_edge.runtime.outputs as outputs

    out = tmp_path / "out.mp4"
    out.write_bytes(b"previous result")
    monkeypatch.setattr(outputs, "FULL_DECODE_PIXELS", 0)  # the long-video check: index count + last frame
    frames = _first_frames(3)
    with AtomicVideoWriter(out, 10.0, (768, 576)) as w:
        for f in frames:
            w.write(f)
    assert w.verified and _decoded_frame_count(out) == 3
    out.write_bytes(b"previous result")

    class Damaging:  # the encoder's file loses its end when it is closed (a failing disk, say)
        def __init__(self, writer):
            self.writer = writer

        def write(self, frame):
            return self.writer.write(frame)

        def release(self):
            self.writer.release()
            tmp = next(p for p in tmp_path.iterdir() if p.name.startswith(".out."))
            tmp.write_bytes(tmp.read_bytes()[: tmp.stat().st_size // 2])

    for pixels in (0, 10 ** 12):  # both checks: the long-video one and decoding every frame
        monkeypatch.setattr(outputs, "FULL_DECODE_PIXELS", pixels)
        with pytest.raises(OutputError, match=r"cannot finish video .*out\.mp4.*(not decode|decodes to|indexes)"):
            with AtomicVideoWriter(out, 10.0, (768, 576)) as w:
                for f in frames:
                    w.write(f)
                w._writer = Damaging(w._writer)
        assert out.read_bytes() == b"previous result"
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]


def test_source_that_ends_before_its_header_count(tmp_path):
    path = tmp_path / "cut.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (160, 120))
    rng = np.random.default_rng(0)
    for _ in range(100):
        writer.write(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8))
    writer.release()
    with open_source(path) as src:
        assert len(list(src)) == 100 and src.ended_early is None and src.frames_read == 100
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 3 // 10])
    with open_source(path) as src:
        n = len(list(src))
        assert src.frame_count == 100 and 0 < n < 50 and src.frames_read == n
        assert src.ended_early == f"'{path}' ended after {n} frames, but its header says 100 " \
                                  f"(a truncated or damaged file?)"


def test_stale_temporaries_are_ours_only(tmp_path):
    ours = [".overlay.0123abcd.tmp.mp4", ".summary.deadbeef.tmp.json", ".000012.00ff00ff.tmp.png"]
    others = ["overlay.mp4", ".overlay.mp4", ".overlay.xyz.tmp.mp4", "notes.tmp", ".0123abcd.tmp"]
    for name in ours + others:
        (tmp_path / name).write_bytes(b"x")
    assert all(is_temporary(tmp_path / n) for n in ours) and not any(is_temporary(tmp_path / n) for n in others)
    assert remove_stale_temporaries(tmp_path) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(others)
