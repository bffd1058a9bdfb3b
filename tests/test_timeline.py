"""`profile`'s per-frame latency timeline: runtime.timeline.Timeline (bounded memory, what it draws)
and the CLI's --timeline (beside --json by default, refused before running when unwritable)."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from vss_edge import demo_weights
from vss_edge.cli import main
from vss_edge.runtime.pipeline import FrameResult, Pipeline
from vss_edge.runtime.sources import sample_clip_path
from vss_edge.runtime.timeline import BOTTOM, HOST, KEY, PALETTE, SIZE, TOP, Timeline

BUNDLE, CLIP = str(demo_weights.DEMO_BUNDLE), str(sample_clip_path())
GRAPHS = ("keyframe", "flow", "propagation")
LABELS = np.zeros((1, 1), np.uint8)


def frame(index: int, is_key: bool, total_ms: float, **timings_ms) -> FrameResult:
    return FrameResult(index, LABELS, is_key, dict(timings_ms), total_ms)


def mask(img: np.ndarray, colours) -> np.ndarray:
    """Pixels of exactly one of these BGR colours."""
    return np.any([np.all(img == np.array(c, np.uint8), axis=-1) for c in colours], axis=0)


def runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) of each run of True in a 1-d boolean array."""
    edges = np.diff(np.concatenate([[0], flags.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)))


def bars(img: np.ndarray, graphs: int = len(GRAPHS)) -> tuple[list[tuple[int, int]], np.ndarray]:
    """The bars (column runs touching the axis) and each column's bar height in pixels."""
    plot = mask(img[TOP:img.shape[0] - BOTTOM], list(PALETTE[:graphs]) + [HOST])
    return runs(plot[-1]), plot.sum(axis=0)


# --- the CLI -------------------------------------------------------------------------------


def test_profile_json_writes_the_timeline_png_beside_it(tmp_path, capsys):
    report = tmp_path / "p.json"
    assert main(["-q", "profile", BUNDLE, CLIP, "--max-frames", "8", "--json", str(report), "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert f"timeline written to {tmp_path / 'p.png'}" in out
    img = cv2.imdecode(np.frombuffer((tmp_path / "p.png").read_bytes(), np.uint8), cv2.IMREAD_COLOR)
    assert img is not None and img.shape == (SIZE[1], SIZE[0], 3)
    assert len(bars(img)[0]) == json.loads(report.read_text())["frames"] == 6  # 8 frames, 2 of warm-up
    assert mask(img[img.shape[0] - BOTTOM:], [KEY]).any()  # the sample clip's key frames 5 (and 0, warm-up)


def test_profile_timeline_alone(tmp_path, capsys):
    png = tmp_path / "t.png"
    assert main(["-q", "profile", BUNDLE, CLIP, "--max-frames", "4", "--warmup", "0", "--timeline", str(png),
                 "--threads", "1"]) == 0
    assert cv2.imread(str(png)).shape == (SIZE[1], SIZE[0], 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.png"]  # no JSON, no temporary file left
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"timeline written to {png}"


@pytest.mark.parametrize("where", ["missing", "file"])
def test_unwritable_timeline_folder_fails_before_running(tmp_path, capsys, monkeypatch, where):
    def never(self, frame):
        raise AssertionError("the pipeline ran")

    monkeypatch.setattr(Pipeline, "step", never)
    (tmp_path / "file").write_text("not a folder")
    png = tmp_path / where / "t.png"
    assert main(["profile", BUNDLE, CLIP, "--json", str(tmp_path / "p.json"), "--timeline", str(png)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vss-edge profile: error: --timeline"), lines
    assert "does not exist" in lines[0] and "Traceback" not in lines[0]
    assert not (tmp_path / "p.json").exists()


def test_timeline_onto_the_json_file_is_refused(tmp_path, capsys):
    report = str(tmp_path / "p.json")
    assert main(["profile", BUNDLE, CLIP, "--json", report, "--timeline", report]) == 2
    assert "would overwrite --json" in capsys.readouterr().err


# --- Timeline ------------------------------------------------------------------------------


def test_key_frames_are_marked_under_their_bars_only():
    t = Timeline(GRAPHS)
    for i in range(20):
        t.add(frame(i, True, 40.0, keyframe=35.0) if i % 5 == 0 else frame(i, False, 10.0, flow=2.0, propagation=6.0))
    img = t.render("synthetic")
    h = img.shape[0]
    assert not mask(img[TOP:h - BOTTOM], [KEY]).any()  # the marks are under the axis, not in the plot
    marked = runs(mask(img[h - BOTTOM + 4:h - BOTTOM + 12], [KEY]).any(axis=0))
    assert len(marked) == 4  # frames 0, 5, 10, 15
    found, height = bars(img)
    assert len(found) == 20
    tall = [height[(a + b) // 2] for a, b in found]
    assert max(tall) > 3.5 * min(tall)  # 40 ms against 10 ms
    for (a, b), ms in zip(found, tall):  # marked exactly where the tall (key) bars stand
        is_marked = any(ka <= (a + b) // 2 < kb for ka, kb in marked)
        assert is_marked == (ms == max(tall)), (a, b, ms)


def test_bar_height_grows_with_total_and_splits_by_graph():
    t = Timeline(GRAPHS)
    for i in range(10):
        total = 5.0 * (i + 1)
        t.add(frame(i, False, total, flow=0.2 * total, propagation=0.6 * total))  # host: 20%
    img = t.render("synthetic")
    found, height = bars(img)
    heights = [height[(a + b) // 2] for a, b in found]
    assert len(heights) == 10 and all(x < y for x, y in zip(heights, heights[1:])), heights
    column = img[TOP:img.shape[0] - BOTTOM, (found[-1][0] + found[-1][1]) // 2][None]
    shares = [mask(column, [c]).sum() / heights[-1] for c in (PALETTE[1], PALETTE[2], HOST)]
    assert shares == pytest.approx([0.2, 0.6, 0.2], abs=0.02)
    assert not mask(column, [PALETTE[0]]).any()  # no keyframe time: no keyframe colour


@pytest.mark.parametrize("capacity", [7, 50])
def test_memory_is_bounded_and_the_whole_run_is_covered(capacity):
    t = Timeline(GRAPHS, warmup=3, capacity=capacity)
    n, spike = 10 * capacity + 3, 10 * capacity // 2 + 1  # the spike: not a kept frame
    for i in range(n):
        t.add(frame(i, i % 4 == 0, 100.0 if i == spike else 10.0, propagation=8.0))
    assert t.frames == n - 3 and 0 < t.count <= capacity and t.stride > 1
    assert t.index.size == capacity and t.ms.shape[0] == capacity  # preallocated, never grown
    kept = t.index[:t.count]
    assert np.array_equal(kept, 3 + t.stride * np.arange(t.count))  # every stride-th measured frame
    assert t.last_index == n - 1 and kept[-1] <= n - 1 < kept[-1] + t.stride  # the last frame is covered
    assert spike not in kept and t.peak[:t.count].max() == 100.0  # thinning keeps the spike's time
    assert t.keys[:t.count].sum() == sum(i % 4 == 0 for i in range(3, n))  # and every key frame
    img = cv2.imdecode(np.frombuffer(t.to_png("long run"), np.uint8), cv2.IMREAD_COLOR)
    assert img.shape == (SIZE[1], SIZE[0], 3)


def test_warmup_frames_are_skipped():
    t = Timeline(GRAPHS, warmup=2)
    for i in range(5):
        t.add(frame(i, i == 0, 10.0))
    assert (t.seen, t.frames, t.count, t.index[0], t.keys[:t.count].sum()) == (5, 3, 3, 2, 0)
    assert t.render("").shape == (SIZE[1], SIZE[0], 3) and Timeline(GRAPHS).render("empty").any()
