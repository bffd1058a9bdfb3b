"""Many streams on one set of sessions (runtime.multistream), key frames staggered across them, live
sources (runtime.live) and `run` / `profile` with several sources (vss_edge.source_runs).

Real frames: the sample clip, each stream starting at its own offset, so a stream that read
another's state would give other labels. Bundles: the shipped GSVNet demo bundle (288x384) and the
small STMG, TDNet and MPVSS exports of the other tests.
"""
from __future__ import annotations

import copy
import json
import math
import os
import signal
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from vss_edge import runtime
from vss_edge.cli import main
from vss_edge.demo_weights import DEMO_BUNDLE
from vss_edge.runtime.errors import FrameError, VssEdgeError
from vss_edge.runtime.live import LiveFrames
from vss_edge.runtime.multistream import Aligned, Staggered
from vss_edge.runtime.outputs import AtomicVideoWriter
from vss_edge.runtime.schedulers import DistortionAware, FixedInterval, FrameInfo, RoundRobin
from vss_edge.runtime.sources import FrameSource, sample_clip_path
from vss_edge.source_runs import stream_folders

CLIP = str(sample_clip_path())
STREAMS, TICKS = 3, 8
OFFSETS = (0, 17, 34)  # where each stream starts in the 60-frame clip


@pytest.fixture(scope="module")
def mpvss_tiny(tmp_path_factory):
    from vss_edge.configs import MPVSSConfig
    from vss_edge.exporters.mpvss import export_mpvss

    cfg = MPVSSConfig(height=64, width=96, variant="small", num_classes=6, backbone_width=8, motion_width=8)
    return export_mpvss(tmp_path_factory.mktemp("mpvss") / "tiny", cfg, seed=0, verify_frames=1, simplify=False)


@pytest.fixture
def bundles(request):
    """method -> (bundle, scheduler every stream starts from)."""
    def get(method):
        if method == "gsvnet":
            return DEMO_BUNDLE, FixedInterval(4)
        if method == "stmg":
            return request.getfixturevalue("stmg_bundle"), FixedInterval(3)
        if method == "tdnet":
            return request.getfixturevalue("tdnet_small")[1], RoundRobin(4)
        return request.getfixturevalue("mpvss_tiny"), FixedInterval(5)
    return get


def stream_frames(frames, stream: int, ticks: int = TICKS):
    return [frames[(OFFSETS[stream] + t) % len(frames)] for t in range(ticks)]


@pytest.mark.parametrize("method", ["gsvnet", "stmg", "tdnet", "mpvss"])
def test_shared_sessions_give_each_stream_the_labels_it_gives_alone(method, bundles, sample_frames):
    """3 streams on 3 threads, staggered, vs 3 pipelines of their own run one after another: the same
    labels frame by frame, and the graphs are opened once."""
    bundle, scheduler = bundles(method)
    with runtime.load_streams(bundle, STREAMS, scheduler=copy.deepcopy(scheduler), workers=STREAMS, threads=1) as multi:
        assert multi.workers == STREAMS and isinstance(multi.policy, Staggered)
        for name, session in multi.sessions.items():
            assert all(pipe.sessions[name] is session for pipe in multi.pipelines)
        ticks = [multi.step_all([stream_frames(sample_frames, s)[t] for s in range(STREAMS)]) for t in range(TICKS)]
    for s in range(STREAMS):
        alone = runtime.load(bundle, threads=1,
                             scheduler=Staggered().stream_scheduler(copy.deepcopy(scheduler), s, STREAMS))
        for t, frame in enumerate(stream_frames(sample_frames, s)):
            expected, got = alone.step(frame), ticks[t][s]
            assert (got.index, got.is_key, got.path) == (expected.index, expected.is_key, expected.path)
            np.testing.assert_array_equal(got.labels, expected.labels, err_msg=f"stream {s}, frame {t}")
    if method == "tdnet":  # the paths are staggered: 3 streams, 4 paths, never two on one path
        assert all(len({r.path for r in tick}) == STREAMS for tick in ticks)
    else:
        assert sum(r.is_key for r in ticks[0]) == STREAMS  # every stream starts on a key frame
        assert all(sum(r.is_key for r in tick) <= 1 for tick in ticks[1:])


def test_a_content_driven_scheduler_runs_aligned_per_stream(stmg_bundle, sample_frames):
    """STMG's distortion scheduler keeps its own state per stream (aligned: staggered cannot move it)."""
    with pytest.raises(VssEdgeError, match="no phase can move"):
        runtime.load_streams(stmg_bundle, 2, policy="staggered", threads=1)
    with runtime.load_streams(stmg_bundle, 2, workers=2, threads=1) as multi:  # default: aligned here
        assert isinstance(multi.policy, Aligned)
        ticks = [multi.step_all([stream_frames(sample_frames, s)[t] for s in range(2)]) for t in range(8)]
    for s in range(2):
        alone = runtime.load(stmg_bundle, threads=1)
        for t, frame in enumerate(stream_frames(sample_frames, s, 8)):
            expected = alone.step(frame)
            assert ticks[t][s].is_key == expected.is_key
            np.testing.assert_array_equal(ticks[t][s].labels, expected.labels)


def simulated_key_ticks(policy, streams: int, interval: int, ticks: int) -> list[int]:
    """Key frames per tick of `streams` streams, each deciding as Pipeline does (the first frame a key
    frame, since_key 1 after one), through the policy's scheduler."""
    schedulers = [policy.stream_scheduler(FixedInterval(interval), s, streams) for s in range(streams)]
    since = [0] * streams
    counts = []
    for t in range(ticks):
        keys = 0
        for s, scheduler in enumerate(schedulers):
            key = t == 0 or scheduler.is_key(FrameInfo(t, since[s]))
            since[s] = 1 if key else since[s] + 1
            keys += key
        counts.append(keys)
    return counts


@pytest.mark.parametrize("streams", [1, 2, 3, 4, 5, 7, 8, 13])
@pytest.mark.parametrize("interval", [1, 2, 3, 5, 8])
def test_staggered_puts_at_most_ceil_n_over_k_key_frames_on_a_tick_and_aligned_puts_n(streams, interval):
    staggered = simulated_key_ticks(Staggered(), streams, interval, 40)
    assert staggered[0] == streams  # the start: no state to propagate from
    assert max(staggered[1:]) <= math.ceil(streams / interval)
    aligned = simulated_key_ticks(Aligned(), streams, interval, 40)
    assert [t for t, n in enumerate(aligned) if n] == list(range(0, 40, interval))
    assert all(n in (0, streams) for n in aligned)
    # no stream waits longer than the interval for a key frame; the staggered ones only shorter at first
    assert sum(staggered) >= sum(aligned)


def test_staggered_key_frames_on_real_streams(sample_frames):
    """4 streams, interval 3: at most ceil(4/3) = 2 key frames a tick after the first; aligned: 4 every 3."""
    counts = {}
    for policy in ("staggered", "aligned"):
        with runtime.load_streams(DEMO_BUNDLE, 4, policy=policy, interval=3, threads=1, workers=2) as multi:
            counts[policy] = [sum(r.is_key for r in multi.step_all([sample_frames[t + 9 * s] for s in range(4)]))
                              for t in range(10)]
    assert counts["staggered"] == [4, 1, 1, 2, 1, 1, 2, 1, 1, 2]  # leads 0, 0, 1, 2: keys on ticks 3, 3, 2, 1 (mod 3)
    assert counts["aligned"] == [4, 0, 0, 4, 0, 0, 4, 0, 0, 4]


def test_step_all_is_all_or_nothing(sample_frames):
    """A bad frame in one stream: without return_exceptions every stream is as before the tick (stepping
    again equals a run that never failed); with it, the others' results stand."""
    tiny = np.zeros((1, 1, 3), np.uint8)
    frames = [[sample_frames[t + 20 * s] for s in range(3)] for t in range(6)]
    with runtime.load_streams(DEMO_BUNDLE, 3, interval=2, threads=1, workers=3) as clean, \
            runtime.load_streams(DEMO_BUNDLE, 3, interval=2, threads=1, workers=3) as failing:
        for t in range(6):
            if t == 3:
                with pytest.raises(FrameError):
                    failing.step_all([frames[t][0], tiny, frames[t][2]])
            expected, got = clean.step_all(frames[t]), failing.step_all(frames[t])
            for e, g in zip(expected, got):
                assert (g.index, g.is_key) == (e.index, e.is_key)
                np.testing.assert_array_equal(g.labels, e.labels)
        results = failing.step_all([frames[0][0], tiny, None], return_exceptions=True)
        assert results[0].index == 6 and isinstance(results[1], FrameError) and results[2] is None
        assert failing.step(1, frames[0][1]).index == 6  # stream 1 did not move
        with pytest.raises(VssEdgeError, match="one frame"):
            failing.step_all(frames[0][:2])


class MemorySource(FrameSource):
    """Frames from memory as fast as they are asked for (a source far faster than the model)."""

    def __init__(self, frames, fps: float = 1000.0):
        super().__init__("memory", fps, len(frames), frames[0])
        self._more = frames[1:]

    def _rest(self):
        yield from self._more


def test_live_frames_keep_only_the_newest_and_count_every_drop(sample_frames):
    frames = [sample_frames[i % 60] for i in range(600)]
    pipe = runtime.load(DEMO_BUNDLE, threads=1)
    taken = []
    with LiveFrames(MemorySource(frames), pace=False) as live:
        while (got := live.take(timeout=5)) is not None:
            pipe.step(got.frame)
            taken.append(got.number)
        assert live.ended
    assert live.frames_captured == 600 and taken[-1] == 599  # the last frame is never dropped at the end
    assert taken == sorted(set(taken)) and live.frames_dropped > 0
    assert live.frames_captured == live.frames_taken + live.frames_dropped == len(taken) + live.frames_dropped


def write_video(path: Path, frames, fps: float) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (frames[0].shape[1], frames[0].shape[0]))
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def frames_in(path: Path) -> int:
    cap, n = cv2.VideoCapture(str(path)), 0
    while cap.grab():
        n += 1
    cap.release()
    return n


def test_live_run_drops_frames_of_a_source_faster_than_the_model_and_the_counts_add_up(sample_frames, tmp_path):
    """A 500 fps clip played live: the run segments the newest frame each time; captured = processed +
    dropped, and the video has exactly the processed frames."""
    fast = write_video(tmp_path / "fast.mp4", sample_frames * 2, 500)
    out = tmp_path / "out"
    assert main(["-q", "run", str(DEMO_BUNDLE), str(fast), "--out", str(out), "--live", "--threads", "1"]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["live"] and s["frames_captured"] == 120 and s["frames_dropped"] > 0
    assert s["frames_captured"] == s["frames_processed"] + s["frames_dropped"]
    assert s["frames_processed"] == s["frames_read"] == s["frames_written"] == frames_in(out / "overlay.mp4")
    lat = s["capture_to_labels"]
    assert lat["count"] == s["frames_processed"] and 0 < lat["p50_ms"] <= lat["p99_ms"] <= lat["max_ms"]


@pytest.fixture
def three_sources(sample_frames, tmp_path):
    """A video (the sample clip), an image folder of 7 frames and a second clip.mp4 elsewhere (same stem)."""
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(7):
        cv2.imwrite(str(folder / f"{i:03d}.png"), cv2.resize(sample_frames[i], (320, 240)))
    other = tmp_path / "b"
    other.mkdir()
    clip = write_video(other / "sample.mp4", [cv2.resize(f, (160, 128)) for f in sample_frames[:25]], 10)
    return [CLIP, str(folder), str(clip)]


def test_run_several_sources_frames_in_equal_frames_out_per_stream(three_sources, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["-q", "run", str(DEMO_BUNDLE), *three_sources, "--out", str(out), "--save-labels",
                 "--threads", "1", "--interval", "3"]) == 0
    folders = ["sample-1", "frames", "sample-3"]
    assert sorted(p.name for p in out.iterdir()) == sorted(folders + ["summary.json"])
    top = json.loads((out / "summary.json").read_text())
    assert top["streams"] == 3 and top["failed"] == 0 and top["policy"] == "staggered" and not top["interrupted"]
    for folder, frames, entry in zip(folders, (60, 7, 25), top["per_stream"]):
        s = json.loads((out / folder / "summary.json").read_text())
        assert entry["folder"] == folder and entry["frames_read"] == frames
        assert s["frames_read"] == s["frames_written"] == s["labels_written"] == frames
        assert frames_in(out / folder / "overlay.mp4") == frames
        assert sorted(p.name for p in (out / folder / "labels").iterdir()) == [f"{i:06d}.png" for i in range(frames)]
    assert top["frames"] == 92 and top["ticks"] == 60
    assert top["tick"]["key_frames_per_tick"]["max"] == 1  # ceil(3 / 3), after the first tick
    printed = capsys.readouterr().out
    assert "3 streams (0 failed), 92 frames in 60 ticks" in printed


def test_one_bad_source_among_good_ones(three_sources, sample_frames, tmp_path, capsys):
    """Missing, corrupt part-way and cut short: each reported, none stops the others; exit 2."""
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    for i in range(6):
        cv2.imwrite(str(corrupt / f"{i:03d}.png"), cv2.resize(sample_frames[i], (160, 120)))
    (corrupt / "003.png").write_bytes(b"not a png")
    cut = tmp_path / "cut.avi"
    writer = cv2.VideoWriter(str(cut), cv2.VideoWriter_fourcc(*"MJPG"), 10, (160, 120))
    for i in range(100):
        writer.write(cv2.resize(sample_frames[i % 60], (160, 120)))
    writer.release()
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size * 3 // 10])
    out = tmp_path / "out"
    sources = [three_sources[0], str(tmp_path / "missing.mp4"), str(corrupt), str(cut)]
    assert main(["-q", "run", str(DEMO_BUNDLE), *sources, "--out", str(out), "--threads", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    top = json.loads((out / "summary.json").read_text())
    good, missing, bad, short = top["per_stream"]
    assert good["error"] is None and good["frames_read"] == 60 and frames_in(out / "sample" / "overlay.mp4") == 60
    assert "does not exist" in missing["error"] and missing["folder"] is None and not (out / "missing").exists()
    assert "003.png" in bad["error"] and bad["frames_read"] == 3 and frames_in(out / "corrupt" / "overlay.mp4") == 3
    assert short["error"] is None and 0 < short["frames_read"] < 50 and "truncated" in short["warnings"][0]
    assert top["failed"] == 2
    assert len([line for line in err if "error:" in line]) == 2 and any("warning: " in line for line in err)
    assert all("Traceback" not in line for line in err)


def test_stream_folders_are_named_after_their_sources_and_unique():
    assert stream_folders(["a/clip.mp4", "b/clip.mp4", "c.mp4", "0", "imgs/", "x y.avi", "b/CLIP.avi"]) == \
        ["clip-1", "clip-2", "c", "camera0", "imgs", "x_y", "CLIP-7"]


def test_a_signal_stops_every_stream_after_the_tick_being_written(three_sources, tmp_path, monkeypatch, capsys):
    """SIGINT while a frame is written (in-process, deterministic): exit 130, every stream's video,
    labels and summary agree, and the run's summary says interrupted."""
    real = AtomicVideoWriter.write

    def write(self, frame):
        real(self, frame)
        if self.frames_written == 4 and "frames" in str(self.path):
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(AtomicVideoWriter, "write", write)
    out = tmp_path / "out"
    assert main(["run", str(DEMO_BUNDLE), *three_sources, "--out", str(out), "--save-labels", "--threads", "1"]) == 130
    top = json.loads((out / "summary.json").read_text())
    assert top["interrupted"] and top["signal"] == "SIGINT" and top["failed"] == 0
    for entry in top["per_stream"]:
        s = json.loads((out / entry["folder"] / "summary.json").read_text())
        assert s["frames_read"] == s["labels_written"] == frames_in(out / entry["folder"] / "overlay.mp4") == 4
        assert s["interrupted"]
    assert "(interrupted)" in capsys.readouterr().out


def test_profile_several_sources_prints_streams_and_ticks(tmp_path, capsys):
    report = tmp_path / "p.json"
    assert main(["-q", "profile", str(DEMO_BUNDLE), CLIP, CLIP, "--max-frames", "8", "--threads", "1",
                 "--policy", "aligned", "--interval", "4", "--json", str(report)]) == 0
    printed = capsys.readouterr().out
    assert "2 streams, key frames aligned" in printed and "| ticks | mean ms |" in printed
    s = json.loads(report.read_text())
    assert s["frames"] == 16 and s["tick"]["count"] == 6 and s["tick"]["key_frames_per_tick"]["max"] == 2
    assert main(["-q", "profile", str(DEMO_BUNDLE), CLIP, CLIP, "--timeline", str(tmp_path / "t.png")]) == 2
