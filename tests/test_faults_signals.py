"""SIGTERM, repeated SIGINT and SIGKILL during `run`: frames in the video == frames in the summary ==
label PNGs, whenever the signals come; killed runs leave no final file half-written, and their
temporary files are removed by the next run in the same --out.

The random-timing tests run `python -m vss_edge run` in a subprocess on a 240-frame clip at the test
bundle's size (about 5 s of work), and signal it at seeded random moments once its first label PNG
is there (before that it is still importing, where Python's default handlers apply).
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest

from vss_edge.cli import main
from vss_edge.runtime.errors import VssEdgeError
from vss_edge.runtime.sources import sample_clip_path
from vss_edge.runtime.outputs import AtomicVideoWriter, is_temporary, locked_folder

REPO = Path(__file__).resolve().parent.parent
CLIP = str(sample_clip_path())


@pytest.fixture(scope="module")
def long_clip(sample_frames, tmp_path_factory):
    """240 frames at 256x128 (the test bundle's size: no resize), the sample clip back and forth."""
    path = tmp_path_factory.mktemp("clips") / "long.mp4"
    small = [cv2.resize(f, (256, 128), interpolation=cv2.INTER_AREA) for f in sample_frames]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, (256, 128))
    for i in range(240):
        k = i % 120
        writer.write(small[k if k < 60 else 119 - k])
    writer.release()
    return path


def decoded_frames(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.grab():
        n += 1
    cap.release()
    return n


def start_run(bundle, source, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "vss_edge", "-q", "run", str(bundle), str(source), "--out",
                             str(out), "--save-labels", "--threads", "1", *extra],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_labels(proc: subprocess.Popen, out: Path, count: int = 1, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while len([p for p in (out / "labels").glob("*.png") if not is_temporary(p)]) < count:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the run wrote no label PNG in time"
        time.sleep(0.005)


def assert_consistent(out: Path) -> dict:
    """The three counts agree and nothing temporary is left."""
    summary = json.loads((out / "summary.json").read_text())
    pngs = sorted(p.name for p in (out / "labels").glob("*.png"))
    n = summary["frames_read"]
    assert summary["frames_written"] == summary["frames"] == summary["labels_written"] == n
    assert decoded_frames(out / "overlay.mp4") == n
    assert pngs == [f"{i:06d}.png" for i in range(n)]
    assert sorted(p.name for p in out.rglob(".*")) == []
    return summary


@pytest.mark.parametrize("sig, repeats", [(signal.SIGTERM, 1), (signal.SIGTERM, 3), (signal.SIGINT, 1),
                                          (signal.SIGINT, 4)], ids=["term", "term-x3", "int", "int-x4"])
def test_signals_at_random_moments_keep_the_outputs_consistent(gsvnet_bundle, long_clip, tmp_path, sig, repeats):
    rng = random.Random(f"{sig}-{repeats}")
    for trial in range(3):
        out = tmp_path / f"out{trial}"
        proc = start_run(gsvnet_bundle, long_clip, out)
        # a random moment of the run, counted in frames (a fast CPU ran the whole clip within a sleep of 1.5 s)
        wait_for_labels(proc, out, count=rng.randint(1, 160))
        time.sleep(rng.uniform(0.0, 0.02))
        for _ in range(repeats):  # the later ones land in the same frame, or while finishing
            proc.send_signal(sig)
            time.sleep(rng.uniform(0.0, 0.15))
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 128 + sig, (proc.returncode, stderr)
        assert "Traceback" not in stderr and stderr == "", stderr
        summary = assert_consistent(out)
        assert summary["interrupted"] is True and summary["signal"] == signal.Signals(sig).name
        assert 0 < summary["frames_read"] < 240
        assert "(interrupted)" in stdout


def test_sigterm_before_the_run_starts_writing_is_143_and_leaves_nothing(gsvnet_bundle, tmp_path):
    """Caught while the bundle loads: like Ctrl-C there, exit 143 and one line."""
    code = ("import os, signal, sys\n"
            "import vss_edge.runtime as rt\n"
            "real = rt.load\n"
            "def load(*a, **k):\n"
            "    os.kill(os.getpid(), signal.SIGTERM)\n"
            "    return real(*a, **k)\n"
            "rt.load = load\n"
            "from vss_edge.cli import main\n"
            f"sys.exit(main(['-q', 'run', r'{gsvnet_bundle}', r'{CLIP}', '--out', r'{tmp_path / 'o'}']))\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 143, proc.stderr
    assert proc.stderr.strip() == "vss-edge run: interrupted"
    assert not (tmp_path / "o").exists()


def test_sigkill_leaves_no_half_written_final_file_and_the_next_run_cleans_up(gsvnet_bundle, long_clip, tmp_path):
    out = tmp_path / "out"
    proc = start_run(gsvnet_bundle, long_clip, out)
    wait_for_labels(proc, out, count=8)
    proc.kill()
    proc.communicate()
    assert not (out / "overlay.mp4").exists() and not (out / "summary.json").exists()
    finals = [p for p in (out / "labels").glob("*.png") if not is_temporary(p)]  # (pathlib's * matches .names)
    assert finals
    for png in finals:  # each label file is whole (atomic rename)
        assert cv2.imread(str(png), cv2.IMREAD_UNCHANGED).shape == (128, 256)
    leftovers = [p for p in out.rglob(".*") if is_temporary(p)]
    assert any(p.name.startswith(".overlay.") for p in leftovers)  # the video it was writing
    (out / "labels" / ".000003.0badf00d.tmp.png").write_bytes(b"half")  # as if killed mid-PNG
    (out / "notes.tmp").write_text("not ours: kept")
    (out / ".keep-me").write_text("not our name pattern: kept")
    assert main(["-q", "run", str(gsvnet_bundle), str(long_clip), "--out", str(out), "--save-labels",
                 "--max-frames", "4", "--threads", "1"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames_read"] == 4 and decoded_frames(out / "overlay.mp4") == 4
    assert sorted(p.name for p in (out / "labels").iterdir()) == [f"{i:06d}.png" for i in range(4)]
    assert sorted(p.name for p in out.iterdir()) == [".keep-me", "labels", "notes.tmp", "overlay.mp4",
                                                     "summary.json"]
    assert summary["stale_files_removed"] >= len(leftovers) + 1


def test_a_signal_inside_one_frames_outputs_does_not_split_them(gsvnet_bundle, tmp_path, monkeypatch, capsys):
    """Ctrl-C between a frame's video write and its label PNG (in-process, deterministic). Before: the
    video had one frame more than the summary."""
    out = tmp_path / "out"
    real = AtomicVideoWriter.write

    def write(self, frame):
        real(self, frame)
        if self.frames_written == 4:
            os.kill(os.getpid(), signal.SIGINT)  # Python runs the handler right here

    monkeypatch.setattr(AtomicVideoWriter, "write", write)
    assert main(["run", str(gsvnet_bundle), CLIP, "--out", str(out), "--save-labels", "--threads", "1"]) == 130
    summary = assert_consistent(out)
    assert summary["frames_read"] == 4 and summary["signal"] == "SIGINT"
    assert "(interrupted)" in capsys.readouterr().out


def test_two_runs_cannot_share_an_output_folder(gsvnet_bundle, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    with locked_folder(out):
        assert main(["-q", "run", str(gsvnet_bundle), CLIP, "--out", str(out), "--max-frames", "2"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "in use by another vss-edge run" in err[0] and f"pid {os.getpid()}" in err[0]
        with pytest.raises(VssEdgeError, match="in use"):
            with locked_folder(out):
                pass
    assert not any(out.iterdir())  # the lock file goes with the lock
    with locked_folder(out):  # and can be taken again
        pass
