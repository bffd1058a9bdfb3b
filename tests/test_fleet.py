"""vss-edge fleet on Ray: per-video outputs equal the single-video verbs', a re-run skips what is
complete (verified) and redoes the rest, a bad video does not stop the others, a killed worker's
video is retried to the same output, a signal leaves complete videos complete.

One local Ray runtime with 2 CPUs for the whole module (started once: ~5 s); the fleets join it.
Clips: short cuts of the sample clip at 256x192, run by the shipped demo bundle (GSVNet 288x384).
"""
from __future__ import annotations

import csv
import json
import os
import signal
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from vss_edge.cli import main
from vss_edge.demo_weights import DEMO_BUNDLE
from vss_edge.fleet import (KILL_ENV, STAMP, FleetTask, list_videos, plan_workers, run_fleet)
from vss_edge.runtime.errors import VssEdgeError
from vss_edge.stop_signals import StopSignals

ray = pytest.importorskip("ray", reason="the fleet extra (ray) is not installed: pip install -e '.[dev]'")

SIZE = (256, 192)  # width, height: even (MPEG-4)
FRAMES = 14
FLEET = ["--workers", "2", "--threads", "1"]


@pytest.fixture(scope="module", autouse=True)
def ray_runtime():
    """One local Ray runtime (2 CPUs) for the module; the fleets use it as it is. The signal
    handlers ray.init sets are put back, so the rest of the session sees its own."""
    saved = {sig: signal.getsignal(sig) for sig in StopSignals.SIGNALS}
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=128 * 1024 * 1024,
             logging_level="ERROR")
    for sig, handler in saved.items():
        signal.signal(sig, handler)
    yield
    ray.shutdown()
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def write_clip(path: Path, frames) -> str:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, SIZE)
    for frame in frames:
        writer.write(cv2.resize(frame, SIZE))
    writer.release()
    return str(path)


def decoded(path: Path) -> list[np.ndarray]:
    cap, frames = cv2.VideoCapture(str(path)), []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


@pytest.fixture(scope="module")
def clips(sample_frames, tmp_path_factory) -> list[str]:
    """Four 14-frame clips from different parts of the sample clip, and a label folder for each
    (labels/<clip>/NNNNNN.png: the frame's bright pixels as class 1)."""
    root = tmp_path_factory.mktemp("clips")
    paths = []
    for i in range(4):
        frames = sample_frames[i * 11: i * 11 + FRAMES]
        paths.append(write_clip(root / f"clip{i}.mp4", frames))
        labels = root / "labels" / f"clip{i}"
        labels.mkdir(parents=True)
        for t, frame in enumerate(frames):
            grey = cv2.cvtColor(cv2.resize(frame, SIZE), cv2.COLOR_BGR2GRAY)
            cv2.imwrite(str(labels / f"{t:06d}.png"), (grey > 110).astype(np.uint8))
    return paths


@pytest.fixture(scope="module")
def alone(clips, tmp_path_factory) -> dict[str, Path]:
    """`vss-edge run` on each clip alone (--interval 3 --save-labels --threads 1): its folder."""
    root = tmp_path_factory.mktemp("alone")
    out = {}
    for clip in clips:
        name = Path(clip).stem
        assert main(["-q", "run", str(DEMO_BUNDLE), clip, "--out", str(root / name), "--save-labels",
                     "--interval", "3", "--threads", "1"]) == 0
        out[name] = root / name
    return out


def assert_same_run(fleet_folder: Path, alone_folder: Path) -> None:
    """Label PNGs byte for byte, the overlay frame for frame, the summary's counts."""
    pngs = sorted(p.name for p in (alone_folder / "labels").iterdir())
    assert sorted(p.name for p in (fleet_folder / "labels").iterdir()) == pngs and len(pngs) == FRAMES
    for name in pngs:
        assert (fleet_folder / "labels" / name).read_bytes() == (alone_folder / "labels" / name).read_bytes()
    ours, theirs = decoded(fleet_folder / "overlay.mp4"), decoded(alone_folder / "overlay.mp4")
    assert len(ours) == len(theirs) == FRAMES and all(np.array_equal(a, b) for a, b in zip(ours, theirs))
    a, b = (json.loads((f / "summary.json").read_text()) for f in (fleet_folder, alone_folder))
    for key in ("frames_read", "frames_written", "labels_written", "key_frames", "scheduler", "interrupted", "error"):
        assert a[key] == b[key], key


def report(out: Path) -> dict:
    return json.loads((out / "fleet.json").read_text())


def statuses(r: dict) -> dict[str, str]:
    return {e["folder"]: e["status"] for e in r["per_video"]}


# ---------------------------------------------------------------- equal to the single-video verbs


def test_fleet_run_equals_run_on_each_video_alone(clips, alone, tmp_path):
    out = tmp_path / "fleet"
    assert main(["-q", "fleet", "run", str(DEMO_BUNDLE), *clips[:3], "--out", str(out), "--save-labels",
                 "--interval", "3", *FLEET]) == 0
    r = report(out)
    assert r["counts"]["done"] == 3 and r["frames"] == 3 * FRAMES and r["key_frames"] == 3 * 5
    assert r["workers"]["workers"] == 2 and r["workers"]["threads"] == 1
    for clip in clips[:3]:
        assert_same_run(out / Path(clip).stem, alone[Path(clip).stem])
    # 3 videos on 2 workers: one worker process did two, on the sessions it loaded for the first
    pids = [e["worker_pid"] for e in r["per_video"]]
    assert len(set(pids)) == 2
    md = (out / "fleet.md").read_text()
    assert "3 done, 0 skipped" in md and "| clip0 | done | 14 | 5 |" in md


def test_fleet_eval_equals_eval_alone_with_labels_root(clips, tmp_path):
    labels_root = Path(clips[0]).parent / "labels"
    out = tmp_path / "fleet"
    assert main(["-q", "fleet", "eval", str(DEMO_BUNDLE), *clips[:2], "--out", str(out), "--labels-root",
                 str(labels_root), "--intervals", "1-3", *FLEET]) == 0
    r = report(out)
    assert r["counts"]["done"] == 2 and [row["interval"] for row in r["accuracy"]] == [1, 2, 3]
    for clip in clips[:2]:
        name = Path(clip).stem
        single = tmp_path / f"{name}.json"
        assert main(["-q", "eval", str(DEMO_BUNDLE), "--video", clip, "--labels", str(labels_root / name),
                     "--intervals", "1-3", "--threads", "1", "--json", str(single)]) == 0
        ours, theirs = (json.loads(p.read_text()) for p in (out / name / "eval.json", single))
        assert ours.pop("bundle") and theirs.pop("bundle")  # resolved by the fleet, as given alone
        assert ours == theirs
        assert (out / name / "eval.md").read_text().startswith("gsvnet 288x384")
    means = [e["miou"][1]["mean"] for e in r["per_video"]]
    assert r["accuracy"][1]["mean"] == pytest.approx(sum(means) / 2)


@pytest.fixture(scope="module")
def fp16_bundle(tmp_path_factory):
    """The demo bundle in FP16, calibrated on the sample clip (not one of the fleet's clips)."""
    from vss_edge.runtime.sources import sample_clip_path

    out = tmp_path_factory.mktemp("fp16") / "bundle"
    assert main(["-q", "calibrate", str(DEMO_BUNDLE), str(sample_clip_path()), "--precision", "fp16", "--out",
                 str(out), "--calibration-frames", "0:5", "--evaluation-frames", "5:10"]) == 0
    return out


def test_fleet_check_equals_check_alone_from_a_manifest(clips, fp16_bundle, tmp_path):
    """A manifest names the videos and, for one, its labels: per video the check's JSON, markdown
    and plot as `check --json` writes them (speed aside)."""
    manifest = tmp_path / "videos.csv"
    with manifest.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["video", "labels"])
        w.writerow([os.path.relpath(clips[0], tmp_path), os.path.relpath(Path(clips[0]).parent / "labels" / "clip0",
                                                                       tmp_path)])
        w.writerow([clips[1], ""])
    out = tmp_path / "fleet"
    assert main(["-q", "fleet", "check", str(DEMO_BUNDLE), str(fp16_bundle), str(manifest), "--out", str(out),
                 "--frames", "0:10", *FLEET]) == 0
    r = report(out)
    assert r["counts"]["done"] == 2 and r["accuracy"]["videos"] == 2 and r["accuracy"]["ground_truth"]["videos"] == 1
    for clip, labels in ((clips[0], Path(clips[0]).parent / "labels" / "clip0"), (clips[1], None)):
        name = Path(clip).stem
        single = tmp_path / name / "check.json"
        single.parent.mkdir()
        assert main(["-q", "check", str(DEMO_BUNDLE), str(fp16_bundle), clip, "--frames", "0:10", "--threads", "1",
                     "--json", str(single)] + (["--labels", str(labels)] if labels else [])) == 0
        assert sorted(p.name for p in (out / name).iterdir()) == [STAMP, "check.json", "check.md",
                                                                  "check_agreement.png"]
        ours, theirs = (json.loads(p.read_text()) for p in (out / name / "check.json", single))
        for result in (ours, theirs):
            result["end_to_end"].pop("speed")
            for side in ("reference", "candidate"):
                result[side].pop("bundle")
        # labels, agreement, ground truth: exact; per-graph SQNR etc. to the last bits of a float sum
        # (numpy's reductions round by the arrays' alignment: 57.66979189267666 vs ...667 seen)
        graphs = ours.pop("graphs"), theirs.pop("graphs")
        assert ours == theirs
        flat = [{f"{g}/{o}/{k}": v for g, graph in side.items() for o, out in graph["outputs"].items()
                 for k, v in out.items()} for side in graphs]
        assert flat[0].keys() == flat[1].keys()
        for key, value in flat[0].items():
            assert value == (pytest.approx(flat[1][key], rel=1e-9) if type(value) is float else flat[1][key]), key
        entry = next(e for e in r["per_video"] if e["folder"] == name)
        assert entry["agreement"]["miou"] == theirs["end_to_end"]["agreement"]["miou"]


# ---------------------------------------------------------------- nothing lost, nothing done twice


def test_a_rerun_skips_complete_videos_and_redoes_half_written_ones(clips, alone, tmp_path):
    out = tmp_path / "fleet"

    def fleet(interval: int = 3) -> int:
        return main(["-q", "fleet", "run", str(DEMO_BUNDLE), *clips[:3], "--out", str(out), "--save-labels",
                     "--interval", str(interval), *FLEET])

    assert fleet() == 0
    (out / "clip0" / "summary.json").unlink()  # killed between the video and the summary
    video = out / "clip1" / "overlay.mp4"
    video.write_bytes(video.read_bytes()[: video.stat().st_size // 2])  # a cut copy
    assert fleet() == 0
    assert statuses(report(out)) == {"clip0": "done", "clip1": "done", "clip2": "skipped"}
    for clip in clips[:3]:
        assert_same_run(out / Path(clip).stem, alone[Path(clip).stem])
    assert fleet() == 0
    assert set(statuses(report(out)).values()) == {"skipped"}
    assert fleet(interval=4) == 0  # another job: nothing is taken as done
    assert set(statuses(report(out)).values()) == {"done"}


def test_one_corrupt_video_among_good_ones_is_reported_and_the_others_complete(clips, sample_frames, tmp_path, capsys):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video" * 100)
    frames_dir = tmp_path / "frames"  # an image folder whose 4th image is corrupt: fails part-way
    frames_dir.mkdir()
    for i in range(6):
        cv2.imwrite(str(frames_dir / f"{i:03d}.png"), cv2.resize(sample_frames[i], SIZE))
    (frames_dir / "003.png").write_bytes(b"not a png")
    listing = tmp_path / "videos.txt"
    listing.write_text(f"# good, bad, corrupt part-way, good\n{clips[0]}\nbad.mp4\nframes\n\n{clips[1]}\n")
    out = tmp_path / "fleet"
    assert main(["-q", "fleet", "run", str(DEMO_BUNDLE), str(listing), "--out", str(out), *FLEET]) == 2
    r = report(out)
    assert statuses(r) == {"clip0": "done", "bad": "failed", "frames": "failed", "clip1": "done"}
    errors = {e["folder"]: e["error"] for e in r["per_video"]}
    assert "bad.mp4" in errors["bad"] and "003.png" in errors["frames"]
    assert len(decoded(out / "clip1" / "overlay.mp4")) == FRAMES and not (out / "frames" / STAMP).exists()
    err = capsys.readouterr().err
    assert err.count("vss-edge fleet run: error:") == 2 and "Traceback" not in err
    assert "## Not done" in (out / "fleet.md").read_text()


def test_a_worker_killed_mid_video_is_retried_to_the_output_of_a_clean_run(clips, alone, tmp_path, monkeypatch):
    monkeypatch.setenv(KILL_ENV, "clip1:5")  # its first attempt's worker SIGKILLs itself after frame 5
    out = tmp_path / "fleet"
    assert main(["-q", "fleet", "run", str(DEMO_BUNDLE), *clips[:3], "--out", str(out), "--save-labels",
                 "--interval", "3", *FLEET]) == 0
    r = report(out)
    assert statuses(r) == {"clip0": "done", "clip1": "done", "clip2": "done"}
    assert [e["attempts"] for e in r["per_video"]] == [1, 2, 1]
    assert [(d["folder"], d["attempt"]) for d in r["worker_deaths"]] == [("clip1", 1)]
    for clip in clips[:3]:
        assert_same_run(out / Path(clip).stem, alone[Path(clip).stem])
    assert not [p for p in (out / "clip1").iterdir() if ".tmp" in p.name]  # the killed attempt's files are gone


def test_a_video_whose_worker_dies_every_time_fails_after_the_retries(clips, tmp_path, monkeypatch):
    monkeypatch.setenv(KILL_ENV, "clip0:2")  # the hook kills a first attempt only: here there is no other
    task = FleetTask("run", (str(DEMO_BUNDLE),), str(tmp_path / "fleet"), {"threads": 1}, {"max_frames": 4})
    r = run_fleet(task, list_videos(clips[:2]), workers=2, quiet=True, retries=0)
    assert statuses(r) == {"clip0": "failed", "clip1": "done"}
    assert "worker died on each of 1 attempts" in r["per_video"][0]["error"]


def test_a_video_that_finishes_as_the_fleet_stops_is_reported_as_it_ended(clips, tmp_path):
    """The stop's race: a worker killed just after its video's stamp was written (or its answer
    sent) has done that video: the report says done (the next run skips it), not interrupted."""
    from vss_edge.fleet.engine import _settled
    from vss_edge.fleet.work import FleetWorker, VideoJob

    task = FleetTask("run", (str(DEMO_BUNDLE),), str(tmp_path), {"threads": 1}, {"max_frames": 4})
    finished, cut = VideoJob(0, clips[0], None, "clip0"), VideoJob(1, clips[1], None, "clip1")
    answer = FleetWorker(task).process(finished)
    assert answer["status"] == "done"

    class KilledWorkers:  # ray.get on the call of a killed actor: its answer if it came, else the actor's death
        @staticmethod
        def get(ref, timeout):
            if ref == "answered":
                return dict(answer)
            raise RuntimeError("The actor died unexpectedly before finishing this task.")

    assert _settled(KilledWorkers, "answered", task, finished)["status"] == "done"
    lost = _settled(KilledWorkers, "lost", task, finished)  # the stamp written, the answer lost
    assert lost["status"] == "done" and lost["frames"] == 4 and lost["attempts"] == 1
    assert _settled(KilledWorkers, "lost", task, cut)["status"] == "interrupted"  # no stamp


def test_a_signal_leaves_complete_videos_complete_and_the_report_says_what_was_not_done(clips, sample_frames,
                                                                                       tmp_path):
    more = [write_clip(tmp_path / f"more{i}.mp4", sample_frames[i * 5: i * 5 + 30]) for i in range(5)]
    out = tmp_path / "fleet"
    task = FleetTask("run", (str(DEMO_BUNDLE),), str(out), {"threads": 1, "interval": 3}, {"save_labels": True})
    videos = list_videos(more)

    def interrupt_during_the_second_video():
        deadline = time.monotonic() + 60
        while not (out / "more1").exists() and time.monotonic() < deadline:
            time.sleep(0.002)
        os.kill(os.getpid(), signal.SIGINT)

    with StopSignals(record_only=True):  # a signal that lands after the fleet is only recorded
        threading.Thread(target=interrupt_during_the_second_video, daemon=True).start()
        r = run_fleet(task, videos, workers=1, quiet=True)
    assert r["stopped_by"] == "SIGINT"
    first = statuses(r)
    assert first["more0"] == "done" and first["more1"] in ("done", "interrupted")  # (interrupted where timely)
    assert "done" not in (first["more3"], first["more4"])
    assert set(first.values()) <= {"done", "interrupted", "not_started"}
    assert list(first.values()).count("interrupted") <= 1
    md = (out / "fleet.md").read_text()
    assert "stopped by SIGINT" in md and "not_started" in md
    r = run_fleet(task, videos, workers=2, quiet=True)
    again = statuses(r)
    assert all(again[f] == ("skipped" if s == "done" else "done") for f, s in first.items())
    for name in again:
        assert len(decoded(out / name / "overlay.mp4")) == 30
        assert len(list((out / name / "labels").iterdir())) == 30


# ---------------------------------------------------------------- inputs, plan, without Ray


def test_videos_from_folders_lists_and_manifests_with_their_labels(tmp_path):
    (tmp_path / "day1").mkdir()
    (tmp_path / "day2" / ".hidden").mkdir(parents=True)
    for path in ("day1/cam0.mp4", "day2/cam0.MP4", "day2/cam1.avi", "day2/notes.txt", "day2/.hidden/x.mp4"):
        (tmp_path / path).write_bytes(b"")
    videos = list_videos([str(tmp_path / "day1"), str(tmp_path / "day2"), str(tmp_path / "day1" / "cam0.mp4")],
                         labels_root=str(tmp_path))
    assert [(Path(v.source).relative_to(tmp_path).as_posix(), v.folder) for v in videos] == [
        ("day1/cam0.mp4", "cam0-1"), ("day2/cam0.MP4", "cam0-2"), ("day2/cam1.avi", "cam1")]
    assert videos[2].labels == str(tmp_path / "cam1")
    (tmp_path / "m.tsv").write_text("Video\tlabels\textra\nday2/cam1.avi\tgt/cam1\tx\n\n")
    [v] = list_videos([str(tmp_path / "m.tsv")], labels_needed=True)
    assert (v.source, v.labels, v.folder) == (str(tmp_path / "day2/cam1.avi"), str(tmp_path / "gt/cam1"), "cam1")
    with pytest.raises(VssEdgeError, match="have no labels.*--labels-root"):
        list_videos([str(tmp_path / "day1")], labels_needed=True)
    (tmp_path / "bad.csv").write_text("path\nx.mp4\n")
    with pytest.raises(VssEdgeError, match="'video' column"):
        list_videos([str(tmp_path / "bad.csv")])
    with pytest.raises(VssEdgeError, match="does not exist"):
        list_videos([str(tmp_path / "missing.txt")])


@pytest.mark.parametrize("cpus, node, videos, workers, threads, expected", [
    (2, 2, 8, None, None, (2, 1, 1.0, False)),      # a worker per CPU
    (2, 2, 1, None, None, (1, 2, 2.0, False)),      # one video: its worker gets the CPUs
    (16, 16, 8, None, 4, (4, 4, 4.0, False)),       # threads given: workers from the CPUs
    (16, 16, 100, 2, None, (2, 8, 8.0, False)),     # workers given: threads from the CPUs
    (2, 2, 8, 4, 1, (4, 1, 0.5, True)),             # both asked beyond the CPUs: as asked, each placed
    (1600, 16, 5000, None, None, (1600, 1, 1.0, False)),  # 100 nodes of 16
])
def test_workers_times_threads_stay_within_the_cpus_unless_asked(cpus, node, videos, workers, threads, expected):
    p = plan_workers(cpus, node, videos, workers, threads)
    assert (p.workers, p.threads, p.cpus_per_worker, p.oversubscribed) == expected
    assert p.oversubscribed or p.workers * p.threads <= cpus


def test_without_ray_the_verb_says_how_to_install_it(monkeypatch, tmp_path, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    assert main(["fleet", "run", str(DEMO_BUNDLE), "x.mp4", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["vss-edge fleet: error: fleet runs on Ray, which is not installed here: "
                   "pip install 'vss-edge[fleet]'"]
