"""Outputs on a full disk and on a read-only filesystem: an error that names the cause, exit 2,
one line, no traceback, no OpenCV warnings, and a previous good file left untouched.

The full disk is a small tmpfs and the read-only folder a tmpfs remounted read-only (root ignores
permission bits); both need mount(8) and the right to mount, and skip with the reason otherwise.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import cv2
import numpy as np
import pytest

from vss_edge.runtime.errors import OutputError
from vss_edge.runtime.sources import sample_clip_path
from vss_edge.runtime.outputs import AtomicVideoWriter, write_text_atomic

REPO = Path(__file__).resolve().parent.parent
CLIP = str(sample_clip_path())  # 60 frames of 768x576: about 18 kB a frame in MPEG-4


def _mount(target: Path, *options: str) -> None:
    done = subprocess.run(["mount", *options, str(target)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {done.stderr.strip()}")


@pytest.fixture
def small_fs(tmp_path):
    """small_fs(size, readonly=False, prepare=None) -> a fresh tmpfs of that size (prepare(root) runs
    before it is made read-only); unmounted afterwards."""
    if shutil.which("mount") is None:
        pytest.skip("mount(8) is not installed")
    mounted = []

    def make(size: str = "1m", readonly: bool = False, prepare=None) -> Path:
        root = tmp_path / f"fs{len(mounted)}"
        root.mkdir()
        _mount(root, "-t", "tmpfs", "-o", f"size={size}", "tmpfs")
        mounted.append(root)
        if prepare is not None:
            prepare(root)
        if readonly:
            _mount(root, "-o", "remount,ro")
        return root

    yield make
    for root in reversed(mounted):
        subprocess.run(["umount", "-l", str(root)], capture_output=True)


def run_cli(*argv: str) -> subprocess.CompletedProcess:
    """`python -m vss_edge -q ...` as a user runs it (stderr as the terminal shows it, OpenCV's included)."""
    return subprocess.run([sys.executable, "-m", "vss_edge", "-q", *argv], cwd=REPO, capture_output=True,
                          text=True, timeout=300)


def one_error_line(proc: subprocess.CompletedProcess, verb: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr and "WARN" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"vss-edge {verb}: error: "), proc.stderr
    return lines[0]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*"))


def decoded_frames(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.grab():
        n += 1
    cap.release()
    return n


def fill(root: Path, leave: int) -> None:
    """Fill root's filesystem up to `leave` bytes free."""
    st = os.statvfs(root)
    size = st.f_bfree * st.f_frsize - leave
    if size > 0:
        with open(root / f"filler-{uuid.uuid4().hex}", "wb") as f:
            f.write(b"\0" * size)


# --- a full disk ---------------------------------------------------------------------------


def test_full_disk_mid_run_is_an_error_and_keeps_the_previous_video(gsvnet_bundle, small_fs):
    """The issue's case: --out on a nearly full disk. Before: exit 0, a video of 0 frames over the good one."""
    root = small_fs("1m")
    out = root / "out"
    first = run_cli("run", str(gsvnet_bundle), CLIP, "--out", str(out), "--max-frames", "5", "--threads", "1")
    assert first.returncode == 0, first.stderr
    good = digest(out / "overlay.mp4")
    proc = run_cli("run", str(gsvnet_bundle), CLIP, "--out", str(out), "--save-labels", "--threads", "1")
    line = one_error_line(proc, "run")
    assert "overlay.mp4" in line and "disk is full" in line and "was left as it was" in line
    assert digest(out / "overlay.mp4") == good and decoded_frames(out / "overlay.mp4") == 5
    summary = json.loads((out / "summary.json").read_text())  # the video's space was freed: it fits
    assert summary["frames_written"] == 0 and summary["outputs"]["video"] is None
    assert "disk is full" in summary["error"]
    assert 0 < summary["frames_read"] < 60
    assert summary["labels_written"] == summary["frames_read"] == len(list((out / "labels").glob("*.png")))
    assert hidden(out) == []


@pytest.mark.parametrize("leave", [0, 8192])
def test_full_disk_from_the_start_names_the_video_and_the_cause(gsvnet_bundle, small_fs, leave):
    """No space (or a few kB): the first cause, the video's, comes first; nothing half-written is left."""
    root = small_fs("1m")
    out = root / "out"
    out.mkdir()
    fill(root, leave=leave)
    proc = run_cli("run", str(gsvnet_bundle), CLIP, "--out", str(out), "--threads", "1")
    line = one_error_line(proc, "run")
    assert line.startswith("vss-edge run: error: cannot ") and "overlay.mp4" in line.split(";")[0]
    assert "disk is full" in line
    assert not (out / "overlay.mp4").exists() and hidden(out) == []
    if (out / "summary.json").exists():
        summary = json.loads((out / "summary.json").read_text())
        assert summary["frames_written"] == 0 and "disk is full" in summary["error"]


def test_writer_on_a_full_disk_raises_and_leaves_the_old_file(small_fs, sample_frames):
    root = small_fs("600k")
    path = root / "video.mp4"
    path.write_bytes(b"the previous good video")
    with pytest.raises(OutputError, match=r"video\.mp4.*disk is full"):
        with AtomicVideoWriter(path, 10.0, (768, 576)) as w:
            for i in range(200):
                w.write(sample_frames[i % 60])
    assert path.read_bytes() == b"the previous good video"
    assert sorted(p.name for p in root.iterdir()) == ["video.mp4"]


def test_writer_catches_frames_the_encoder_dropped_silently(tmp_path, sample_frames, monkeypatch):
    """OpenCV 4 returns nothing from write(): a frame dropped without a word is caught when the
    finished file is decoded back."""
    path = tmp_path / "out.mp4"
    path.write_bytes(b"the previous good video")
    with pytest.raises(OutputError, match=r"out\.mp4.*decodes to 3 of the 6 frames written"):
        with AtomicVideoWriter(path, 10.0, (768, 576)) as w:
            real = w._writer
            for i, frame in enumerate(sample_frames[:6]):
                if i % 2:
                    monkeypatch.setattr(w, "_writer", type("Silent", (), {"write": lambda self, f: None})())
                else:
                    monkeypatch.setattr(w, "_writer", real)
                w.write(frame)
            monkeypatch.setattr(w, "_writer", real)
    assert path.read_bytes() == b"the previous good video"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]


def test_text_on_a_full_disk(small_fs):
    root = small_fs("64k")
    (root / "r.json").write_text("{}")
    fill(root, leave=0)
    with pytest.raises(OutputError, match=r"r\.json.*No space left"):
        write_text_atomic(root / "r.json", json.dumps({"x": "y" * 100_000}))
    assert (root / "r.json").read_text() == "{}"
    assert hidden(root) == []


# --- a read-only filesystem ------------------------------------------------------------------


def _with_out(root: Path) -> None:
    (root / "out").mkdir()
    (root / "out" / "summary.json").write_text("{}")


def test_run_into_a_read_only_folder(gsvnet_bundle, small_fs):
    root = small_fs("1m", readonly=True, prepare=_with_out)
    for extra in ([], ["--save-labels"]):
        proc = run_cli("run", str(gsvnet_bundle), CLIP, "--out", str(root / "out"), "--max-frames", "2", *extra)
        line = one_error_line(proc, "run")
        assert str(root / "out") in line and "Read-only file system" in line
    proc = run_cli("run", str(gsvnet_bundle), CLIP, "--out", str(root / "new"), "--max-frames", "2")
    assert "cannot create output folder" in one_error_line(proc, "run")
    assert (root / "out" / "summary.json").read_text() == "{}"


def test_profile_json_into_a_read_only_folder_fails_before_running(gsvnet_bundle, small_fs):
    root = small_fs("1m", readonly=True, prepare=_with_out)
    proc = run_cli("profile", str(gsvnet_bundle), CLIP, "--json", str(root / "out" / "p.json"), "--max-frames", "3")
    line = one_error_line(proc, "profile")
    assert "p.json" in line and "Read-only file system" in line
    assert proc.stdout == ""  # refused before a frame was run


def test_export_into_a_read_only_folder(small_fs):
    root = small_fs("1m", readonly=True, prepare=_with_out)
    proc = run_cli("export", "gsvnet", "--out", str(root / "bundle"), "--height", "64", "--width", "128")
    line = one_error_line(proc, "export")
    assert "bundle" in line and "Read-only file system" in line


def test_writers_in_a_read_only_folder_raise_one_clear_error(small_fs):
    root = small_fs("1m", readonly=True, prepare=_with_out)
    with pytest.raises(OutputError, match="Read-only file system"):
        write_text_atomic(root / "out" / "summary.json", "{}")
    with pytest.raises(OutputError, match=r"overlay\.mp4.*Read-only file system"):
        with AtomicVideoWriter(root / "out" / "overlay.mp4", 10.0, (64, 48)) as w:
            w.write(np.zeros((48, 64, 3), np.uint8))
