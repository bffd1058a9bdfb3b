"""The command line: outputs of run/profile/export, user errors (exit 2, one line), Ctrl-C, crash safety.

Calls `vss_edge.cli.main` in-process (fast) and, for the exit code and the absence of a
traceback as a user sees them, `python -m vss_edge` in a subprocess.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from vss_edge import runtime
from vss_edge.runtime.pipeline import Pipeline
from vss_edge.cli import main
from vss_edge.runtime.sources import sample_clip_path

REPO = Path(__file__).resolve().parent.parent
CLIP = str(sample_clip_path())  # 60 frames, 768x576


def count_frames(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), path
    n = 0
    while True:
        ok, _ = cap.read()
        if not ok:
            break
        n += 1
    cap.release()
    return n


def read_summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def temp_files(folder: Path) -> list[Path]:
    """Leftovers of the atomic writers: hidden '.NAME.XXXX.tmp.EXT' files."""
    return [p for p in folder.rglob("*") if p.name.startswith(".") or ".tmp" in p.name]


def user_error(capsys, argv: list[str], *phrases: str) -> str:
    """main(argv) must exit 2 with one stderr line 'vss-edge VERB: error: ...' containing phrases."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"vss-edge {argv[0]}: error: "), err
    assert "Traceback" not in err
    for phrase in phrases:
        assert phrase in lines[0], (phrase, lines[0])
    return lines[0]


@pytest.fixture
def stop_at_frame(monkeypatch):
    """stop_at_frame(exc): Pipeline.step raises exc on the 5th frame (index 4)."""
    def install(exc: BaseException, index: int = 4):
        original = Pipeline.step

        def step(self, frame):
            if self._index == index:
                raise exc
            return original(self, frame)

        monkeypatch.setattr(Pipeline, "step", step)

    return install


@pytest.fixture(scope="module")
def full_run(gsvnet_bundle, tmp_path_factory):
    """One run over the whole clip with labels, shared by the checks on its outputs."""
    out = tmp_path_factory.mktemp("run") / "out"
    code = main(["run", str(gsvnet_bundle), CLIP, "--out", str(out), "--save-labels", "--threads", "1"])
    return code, out


# --- run -----------------------------------------------------------------------------------


def test_run_exit_code_and_summary(full_run):
    code, out = full_run
    assert code == 0
    s = read_summary(out)
    assert s["frames_read"] == s["frames_written"] == 60
    assert s["key_frames"] == 12  # default interval 5
    assert s["interrupted"] is False
    assert s["outputs"]["video"] == str(out / "overlay.mp4")
    assert temp_files(out) == []


def test_run_overlay_has_every_frame(full_run):
    _, out = full_run
    assert count_frames(out / "overlay.mp4") == 60
    cap = cv2.VideoCapture(str(out / "overlay.mp4"))
    size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    cap.release()
    assert size == (768, 576)


def test_run_saves_one_label_png_per_frame_at_frame_size(full_run):
    _, out = full_run
    pngs = sorted((out / "labels").glob("*.png"))
    assert [p.name for p in pngs] == [f"{i:06d}.png" for i in range(60)]
    for p in (pngs[0], pngs[1], pngs[-1]):  # a key frame and propagated ones
        labels = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
        assert labels.shape == (576, 768) and labels.dtype.name == "uint8"
        assert int(labels.max()) < 19


def test_run_interval_override(gsvnet_bundle, tmp_path, capsys):
    assert main(["-q", "run", str(gsvnet_bundle), CLIP, "--out", str(tmp_path), "--interval", "3",
                 "--threads", "1"]) == 0
    s = read_summary(tmp_path)
    assert s["frames_read"] == s["frames_written"] == 60 and s["key_frames"] == 20
    assert "60 frames (20 key)" in capsys.readouterr().out


def test_run_max_frames(gsvnet_bundle, tmp_path):
    assert main(["-q", "run", str(gsvnet_bundle), CLIP, "--out", str(tmp_path), "--max-frames", "7",
                 "--threads", "1"]) == 0
    s = read_summary(tmp_path)
    assert s["frames_read"] == s["frames_written"] == 7 and s["key_frames"] == 2
    assert count_frames(tmp_path / "overlay.mp4") == 7


# --- profile -------------------------------------------------------------------------------


def test_profile_table_and_json(gsvnet_bundle, tmp_path, capsys):
    report = tmp_path / "profile.json"
    assert main(["-q", "profile", str(gsvnet_bundle), CLIP, "--json", str(report), "--max-frames", "12",
                 "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "| graph | role |" in out
    for graph in ("keyframe", "flow", "propagation"):
        assert f"| {graph} |" in out
    s = json.loads(report.read_text())
    assert s["frames"] == 10 and s["warmup_frames_skipped"] == 2
    for graph in ("keyframe", "flow", "propagation"):
        stats = s["graphs"][graph]
        assert stats["count"] > 0
        assert 0 < stats["p50_ms"] <= stats["p99_ms"] and stats["mean_ms"] > 0
    assert s["fps"] > 0
    assert s["non_key_over_key"] > 0
    assert 0 <= s["outside_ort_share"] < 1


def test_profile_rejects_negative_warmup(gsvnet_bundle, capsys):
    with pytest.raises(SystemExit) as info:
        main(["profile", str(gsvnet_bundle), CLIP, "--warmup", "-1"])
    assert info.value.code == 2
    assert "--warmup" in capsys.readouterr().err


def test_profile_json_into_missing_folder_fails_before_running(gsvnet_bundle, tmp_path, capsys):
    user_error(capsys, ["profile", str(gsvnet_bundle), CLIP, "--json", str(tmp_path / "no" / "p.json")],
               "does not exist")


# --- export --------------------------------------------------------------------------------


def test_export_small_bundle_loads(tmp_path, capsys):
    out = tmp_path / "bundle"
    assert main(["-q", "export", "gsvnet", "--out", str(out), "--height", "64", "--width", "128",
                 "--classes", "5"]) == 0
    assert "| keyframe |" in capsys.readouterr().out
    pipe = runtime.load(out, device="cpu")
    assert (pipe.manifest.height, pipe.manifest.width) == (64, 128)
    assert len(pipe.class_names) == 5


def test_export_height_not_multiple_of_32(tmp_path, capsys):
    user_error(capsys, ["export", "gsvnet", "--out", str(tmp_path / "b"), "--height", "100"],
               "multiples of 32", "100")
    assert not (tmp_path / "b").exists()


def test_export_missing_checkpoint(tmp_path, capsys):
    user_error(capsys, ["export", "gsvnet", "--out", str(tmp_path / "b"), "--height", "64", "--width", "128",
                        "--checkpoint", str(tmp_path / "missing.tar")], "missing.tar", "not found")
    assert not (tmp_path / "b").exists()


# --- user errors ---------------------------------------------------------------------------


@pytest.fixture
def tampered_bundle(gsvnet_bundle, tmp_path):
    """A copy whose flow graph lost one bit."""
    bundle = shutil.copytree(gsvnet_bundle, tmp_path / "tampered")
    data = bytearray((bundle / "flow.onnx").read_bytes())
    data[len(data) // 3] ^= 0x10
    (bundle / "flow.onnx").write_bytes(bytes(data))
    return bundle


@pytest.fixture
def corrupt_video(tmp_path):
    path = tmp_path / "corrupt.avi"
    path.write_bytes(os.urandom(64 * 1024))
    return path


def test_run_missing_bundle(tmp_path, capsys):
    user_error(capsys, ["run", str(tmp_path / "nobundle"), CLIP, "--out", str(tmp_path / "o")],
               "nobundle", "does not exist")


def test_run_missing_video(gsvnet_bundle, tmp_path, capsys):
    user_error(capsys, ["run", str(gsvnet_bundle), str(tmp_path / "none.mp4"), "--out", str(tmp_path / "o")],
               "none.mp4", "does not exist")


def test_run_corrupt_video(gsvnet_bundle, corrupt_video, tmp_path, capsys):
    user_error(capsys, ["run", str(gsvnet_bundle), str(corrupt_video), "--out", str(tmp_path / "o")],
               "corrupt.avi")
    assert not (tmp_path / "o").exists()


def test_run_missing_camera(gsvnet_bundle, tmp_path, capsys):
    user_error(capsys, ["run", str(gsvnet_bundle), "97", "--out", str(tmp_path / "o")], "camera 97")


def test_run_tampered_bundle(tampered_bundle, tmp_path, capsys):
    user_error(capsys, ["run", str(tampered_bundle), CLIP, "--out", str(tmp_path / "o")], "flow.onnx", "sha256")


def test_run_out_is_a_file(gsvnet_bundle, tmp_path, capsys):
    out = tmp_path / "file"
    out.write_text("keep me")
    user_error(capsys, ["run", str(gsvnet_bundle), CLIP, "--out", str(out), "--max-frames", "2"], str(out))
    assert out.read_text() == "keep me"


@pytest.mark.parametrize("value", ["0", "-2", "x"])
def test_run_interval_must_be_positive(gsvnet_bundle, tmp_path, capsys, value):
    with pytest.raises(SystemExit) as info:
        main(["run", str(gsvnet_bundle), CLIP, "--out", str(tmp_path), "--interval", value])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "--interval" in err and "positive integer" in err and "Traceback" not in err


@pytest.mark.parametrize("case", ["corrupt-video", "tampered-bundle"])
def test_user_error_in_a_real_process(gsvnet_bundle, corrupt_video, tmp_path, case):
    """As a user runs it (no -q): exit 2, one stderr line, no traceback."""
    if case == "corrupt-video":
        argv = ["run", str(gsvnet_bundle), str(corrupt_video), "--out", str(tmp_path / "o")]
    else:  # passes the hash check; the session I/O check catches it
        bundle = shutil.copytree(gsvnet_bundle, tmp_path / "tampered")
        manifest = json.loads((bundle / "manifest.json").read_text())
        manifest["graphs"]["flow"]["inputs"][1]["shape"] = [1, 3, 8, 16]
        (bundle / "manifest.json").write_text(json.dumps(manifest))
        argv = ["run", str(bundle), CLIP, "--out", str(tmp_path / "o")]
    proc = subprocess.run([sys.executable, "-m", "vss_edge", *argv], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vss-edge run: error: "), proc.stderr
    assert ("corrupt.avi" if case == "corrupt-video" else "flow.onnx") in lines[0]
    assert not (tmp_path / "o").exists()


# --- crash safety and Ctrl-C ---------------------------------------------------------------


def test_bug_mid_run_keeps_previous_outputs(gsvnet_bundle, tmp_path, stop_at_frame):
    out = tmp_path / "out"
    assert main(["-q", "run", str(gsvnet_bundle), CLIP, "--out", str(out), "--max-frames", "3", "--threads", "1"]) == 0
    before = {name: digest(out / name) for name in ("overlay.mp4", "summary.json")}
    stop_at_frame(RuntimeError("boom"))
    with pytest.raises(RuntimeError, match="boom"):  # a bug, not a user error: it propagates
        main(["-q", "run", str(gsvnet_bundle), CLIP, "--out", str(out), "--save-labels", "--threads", "1"])
    assert {name: digest(out / name) for name in before} == before
    assert count_frames(out / "overlay.mp4") == 3
    assert temp_files(out) == []


def test_ctrl_c_mid_run_keeps_frames_done(gsvnet_bundle, tmp_path, stop_at_frame, capsys):
    out = tmp_path / "out"
    stop_at_frame(KeyboardInterrupt())
    assert main(["run", str(gsvnet_bundle), CLIP, "--out", str(out), "--save-labels", "--threads", "1"]) == 130
    s = read_summary(out)
    assert s["interrupted"] is True
    assert s["frames_read"] == s["frames_written"] == 4
    assert count_frames(out / "overlay.mp4") == 4
    assert len(list((out / "labels").glob("*.png"))) == 4
    assert temp_files(out) == []
    assert "(interrupted)" in capsys.readouterr().out


def test_ctrl_c_before_first_frame(gsvnet_bundle, tmp_path, stop_at_frame, capsys):
    out = tmp_path / "out"
    stop_at_frame(KeyboardInterrupt(), index=0)
    assert main(["run", str(gsvnet_bundle), CLIP, "--out", str(out)]) == 130
    assert "vss-edge run: interrupted" in capsys.readouterr().err
    assert not (out / "overlay.mp4").exists() and temp_files(out) == []


def test_source_failing_part_way_keeps_the_frames_before_it(gsvnet_bundle, sample_frames, tmp_path, capsys):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, frame in enumerate(sample_frames[:6]):
        cv2.imwrite(str(folder / f"{i:03d}.png"), frame)
    (folder / "004.png").write_bytes(b"not a png")  # the 5th image is unreadable
    out = tmp_path / "out"
    message = user_error(capsys, ["run", str(gsvnet_bundle), str(folder), "--out", str(out)], "004.png",
                         "the 4 frames before it")
    assert "overlay.mp4" in message
    assert count_frames(out / "overlay.mp4") == 4
    summary = read_summary(out)
    assert summary["frames_read"] == summary["frames_written"] == 4
    assert "004.png" in summary["error"]
    assert temp_files(out) == []


# --- first frame, early end, re-used --out, odd sizes, speed ---------------------------------


def test_run_1x1_source_is_refused_before_any_output(gsvnet_bundle, tmp_path, capsys):
    """Before: 'cannot open a video writer ... is the folder writable?' (the writer opened first)."""
    folder = tmp_path / "tiny"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"{i:03d}.png"), np.zeros((1, 1, 3), np.uint8))
    out = tmp_path / "out"
    user_error(capsys, ["run", str(gsvnet_bundle), str(folder), "--out", str(out)], "tiny", "too small", "1x1",
               "8x8")
    assert not out.exists()


def test_run_warns_when_a_stream_ends_before_its_header_says(gsvnet_bundle, sample_frames, tmp_path, capsys):
    path = tmp_path / "cut.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (256, 128))
    for i in range(40):
        writer.write(cv2.resize(sample_frames[i], (256, 128)))
    writer.release()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 4])  # the header still says 40 frames
    out = tmp_path / "out"
    assert main(["-q", "run", str(gsvnet_bundle), str(path), "--out", str(out), "--threads", "1"]) == 0
    s = read_summary(out)
    assert 0 < s["frames_read"] < 20
    assert s["warnings"] == [f"'{path}' ended after {s['frames_read']} frames, but its header says 40 "
                             f"(a truncated or damaged file?)"]
    assert f"warning: '{path}' ended after" in capsys.readouterr().err
    assert main(["-q", "run", str(gsvnet_bundle), CLIP, "--out", str(out), "--max-frames", "3",
                 "--threads", "1"]) == 0
    assert read_summary(out)["warnings"] == []  # stopping by --max-frames is no early end


def test_rerun_into_the_same_out_leaves_only_this_runs_labels(gsvnet_bundle, tmp_path):
    out = tmp_path / "out"
    run = ["-q", "run", str(gsvnet_bundle), CLIP, "--out", str(out), "--threads", "1"]
    assert main(run + ["--save-labels", "--max-frames", "9"]) == 0
    (out / "labels" / "notes.txt").write_text("not a label: kept")
    assert main(run + ["--save-labels", "--max-frames", "4"]) == 0
    s = read_summary(out)
    assert sorted(p.name for p in (out / "labels").glob("*.png")) == [f"{i:06d}.png" for i in range(4)]
    assert s["labels_written"] == 4 and s["stale_files_removed"] == 5
    assert main(run + ["--max-frames", "2"]) == 0  # no --save-labels: the old labels go too
    assert sorted(p.name for p in (out / "labels").iterdir()) == ["notes.txt"]
    assert read_summary(out)["labels_written"] == 0 and "labels" not in read_summary(out)["outputs"]


def test_odd_sized_source_keeps_its_size(gsvnet_bundle, sample_frames, tmp_path):
    """MPEG-4 through FFmpeg drops the last odd row/column: an odd source gets overlay.avi (Motion JPEG)."""
    folder = tmp_path / "odd"
    folder.mkdir()
    for i in range(5):
        cv2.imwrite(str(folder / f"{i:03d}.png"), cv2.resize(sample_frames[i], (101, 75)))
    out = tmp_path / "out"
    assert main(["-q", "run", str(gsvnet_bundle), CLIP, "--out", str(out), "--max-frames", "2", "--threads", "1"]) == 0
    assert main(["-q", "run", str(gsvnet_bundle), str(folder), "--out", str(out), "--save-labels",
                 "--threads", "1"]) == 0
    s = read_summary(out)
    assert s["outputs"]["video"] == str(out / "overlay.avi")
    assert not (out / "overlay.mp4").exists()  # the earlier run's video, in the other format, went
    cap = cv2.VideoCapture(str(out / "overlay.avi"))
    assert (cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (101, 75)
    ok, frame = cap.read()
    cap.release()
    assert ok and frame.shape == (75, 101, 3)
    assert count_frames(out / "overlay.avi") == s["frames_written"] == 5
    assert cv2.imread(str(out / "labels" / "000004.png"), cv2.IMREAD_UNCHANGED).shape == (75, 101)


def test_run_reports_pipeline_fps_and_end_to_end_throughput(full_run, gsvnet_bundle, tmp_path, capsys):
    _, out = full_run
    s = read_summary(out)
    assert 0 < s["throughput_fps"] < s["fps"]  # reading, drawing and writing cost time too
    assert main(["-q", "run", str(gsvnet_bundle), CLIP, "--out", str(tmp_path), "--max-frames", "3",
                 "--threads", "1"]) == 0
    line = capsys.readouterr().out
    assert "FPS in the pipeline" in line and "FPS end to end" in line


def test_profile_reports_end_to_end_throughput(gsvnet_bundle, tmp_path, capsys):
    report = tmp_path / "p.json"
    assert main(["-q", "profile", str(gsvnet_bundle), CLIP, "--json", str(report), "--max-frames", "6",
                 "--threads", "1"]) == 0
    s = json.loads(report.read_text())
    assert s["frames"] == 4 and 0 < s["throughput_fps"] <= s["fps"] * 1.05
    assert "FPS end to end" in capsys.readouterr().out
