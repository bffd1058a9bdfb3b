"""vss-edge eval: mIoU vs key-frame interval with the copy baseline; trained methods beat copy."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from vss_edge import demo_weights
from vss_edge.cli import main
from vss_edge.evaluation import (
    HELD_OUT_SEED,
    LabelledSequence,
    evaluate,
    parse_intervals,
    parse_seeds,
    static_background,
    synthetic_classes,
    synthetic_sequences,
)

needs_weights = pytest.mark.skipif(not demo_weights.available(), reason="trained demo weights not committed")


# trained_gsvnet (the demo's bundle) and trained_stmg are conftest's session fixtures.


@pytest.fixture(scope="module")
def held_out():
    """Three held-out synthetic clips of 15 frames at the demo resolution (5 classes)."""
    return synthetic_sequences(demo_weights.HEIGHT, demo_weights.WIDTH, demo_weights.SYNTHETIC_CLASSES,
                               seeds=[HELD_OUT_SEED + 10, HELD_OUT_SEED + 11, HELD_OUT_SEED + 12], frames=15)


# --- the protocol, on a fake pipeline whose errors are known ---------------------------


class _Program:
    scheduler_needs = "is_key"


class _FakePipe:
    """Key frames return the truth; each propagated frame shifts it one more pixel right."""

    class_names = ("a", "b")

    def __init__(self, truth):
        from vss_edge.runtime.schedulers import FixedInterval

        self.truth, self.program, self.scheduler = truth, _Program(), FixedInterval(1)
        self.manifest = None
        self.reset()

    def reset(self):
        self.t, self.since = 0, 0

    def step(self, frame):
        from vss_edge.runtime.schedulers import FrameInfo

        key = self.t == 0 or self.scheduler.is_key(FrameInfo(self.t, self.since))
        self.since = 1 if key else self.since + 1
        labels = np.roll(self.truth[self.t], self.since - 1, axis=1)
        self.t += 1

        class R:
            pass

        r = R()
        r.labels, r.is_key = labels, key
        return r


def test_protocol_positions_mean_min_and_copy():
    truth = [np.zeros((4, 8), np.uint8) for _ in range(6)]
    for t, lab in enumerate(truth):
        lab[:, t:t + 3] = 1  # a bar moving right one pixel a frame
    seq = LabelledSequence("fake", [np.zeros((4, 8, 3), np.uint8)] * 6, truth)
    res = evaluate(_FakePipe(truth), [seq], [1, 3])
    one, three = res["intervals"]
    assert one["method"]["by_position"] == [1.0] and one["copy"]["mean"] == 1.0
    assert three["frames_by_position"] == [2, 2, 2]
    assert three["method"]["by_position"][0] == 1.0 and three["copy"]["by_position"][0] == 1.0
    assert three["method"]["min"] == min(three["method"]["by_position"])
    assert three["method"]["mean"] == pytest.approx(np.mean(three["method"]["by_position"]))
    # copy holds the key frame's bar, which the true bar leaves one pixel a frame: worse with distance
    c = three["copy"]["by_position"]
    assert c[0] > c[1] > c[2]


def test_parse_intervals_and_seeds():
    assert parse_intervals("1-5") == [1, 2, 3, 4, 5]
    assert parse_intervals("5,1,2") == [1, 2, 5]
    assert parse_seeds("1000-1002,7") == [1000, 1001, 1002, 7]


def test_static_background_and_class_inference():
    bg = static_background()
    assert bg.dtype == np.uint8 and bg.ndim == 3
    assert synthetic_classes(demo_weights.class_names()) == demo_weights.SYNTHETIC_CLASSES
    assert synthetic_classes(["road", "sidewalk"]) == 0
    assert min(parse_seeds("1000-1003")) >= HELD_OUT_SEED


# --- trained methods beat copy ----------------------------------------------------------


@pytest.mark.parametrize("method", ["gsvnet", "stmg", "mpvss"])
def test_trained_method_beats_copy_at_interval_5_on_held_out_synthetic_video(method, request, tmp_path, held_out):
    from vss_edge import runtime

    assert demo_weights.available(method), f"trained {method} weights are not committed"
    if method == "gsvnet":
        bundle = request.getfixturevalue("trained_gsvnet")
    elif method == "stmg":
        bundle = request.getfixturevalue("trained_stmg")[1]
    else:
        from vss_edge.exporters.mpvss import export_mpvss

        bundle = export_mpvss(tmp_path / method, demo_weights.mpvss_config(),
                              checkpoint=str(demo_weights.MPVSS_CHECKPOINT), verify_frames=2)
    pipe = runtime.load(bundle, device="cpu", threads=1)
    row = evaluate(pipe, held_out, [5])["intervals"][0]
    method_score, copy = row["method"], row["copy"]
    assert method_score["by_position"][0] == copy["by_position"][0]  # the key frame itself is the same
    assert method_score["mean"] > copy["mean"] + 0.01, (method_score, copy)
    assert method_score["min"] > copy["min"], (method_score, copy)
    assert method_score["by_position"][0] > 0.7  # the keyframe net learnt the synthetic classes
    # ahead of copy at every distance from the key frame, one frame after included (MPVSS, README's
    # 4 clips x 30 frames: 83.9 vs 82.8 one frame after; the weights trained with half the flow
    # iterations were 2.1 points behind there)
    behind = [(d, m, c) for d, (m, c) in enumerate(zip(method_score["by_position"], copy["by_position"])) if d and m <= c]
    assert not behind, behind


class _ScaledFlow:
    """The flow graph's session with its flow output multiplied by `factor` (-1: flipped, 0: none)."""

    def __init__(self, session, factor: float):
        self.session, self.factor = session, factor

    def __getattr__(self, name):
        return getattr(self.session, name)

    def run(self, feeds, host_outputs=()):
        out = self.session.run(feeds, host_outputs)
        out["flow"] = (self.factor * np.asarray(out["flow"])).astype(np.float32)
        return out


def test_trained_gsvnet_needs_its_flow_the_right_way_round(trained_gsvnet, held_out):
    """The trained GSVNet scores clearly below itself when its flow is flipped or zeroed: the warp
    uses the flow, in the direction the flow net learnt. Measured at interval 5 on these clips
    (mIoU mean / min over the positions): real 93.6 / 91.5, flipped 90.4 / 83.8, zeroed 92.8 / 89.5,
    copy 87.8 / 78.5 (README's 4 clips x 30 frames: 80.7 / 73.4, 75.8 / 62.7, 80.4 / 72.4). The bars
    are half the measured margins. A wrong sign in the warp itself flips the comparison."""
    from vss_edge import runtime

    pipe = runtime.load(trained_gsvnet, device="cpu", threads=1)
    scores = {}
    for name, factor in (("real", 1.0), ("flipped", -1.0), ("zeroed", 0.0)):
        with pipe.wrapped_sessions(lambda graph, session: _ScaledFlow(session, factor) if graph == "flow" else session):
            scores[name] = evaluate(pipe, held_out, [5])["intervals"][0]["method"]
    real, flipped, zeroed = scores["real"], scores["flipped"], scores["zeroed"]
    assert real["by_position"][0] == flipped["by_position"][0] == zeroed["by_position"][0]  # same key frames
    assert real["mean"] > flipped["mean"] + 0.016 and real["min"] > flipped["min"] + 0.038, scores  # +0.033, +0.077
    assert real["mean"] > zeroed["mean"] + 0.004 and real["min"] > zeroed["min"] + 0.010, scores  # +0.008, +0.020


@pytest.fixture(scope="module")
def trained_tdnet(tmp_path_factory):
    from vss_edge.exporters.tdnet import export_tdnet

    return export_tdnet(tmp_path_factory.mktemp("trained") / "tdnet", demo_weights.tdnet_config(),
                        checkpoint=str(demo_weights.TDNET_CHECKPOINT))


@pytest.mark.skipif(not demo_weights.available("tdnet"), reason="trained TDNet weights not committed")
def test_trained_tdnet_attention_propagation_beats_each_path_alone(trained_tdnet):
    """TDNet has no key frames: eval scores it by path, beside each sub-network alone (no attention
    propagation, its analogue of copy). The paper's claim: the distributed paths recover accuracy
    through attention over the stored frames. Measured on these clips: round robin 75.3 (per path
    75.0 / 76.1 / 73.2 / 77.0), alone 72.1 (71.2 / 73.2 / 69.6 / 74.3); README's 4 clips x 30
    frames: +4.0 points. The bar is the issue's 3 points; weights trained without the attention aid
    score the same with and without propagation (39.8 / 39.6 there)."""
    from vss_edge import runtime

    pipe = runtime.load(trained_tdnet, device="cpu", threads=1)
    seqs = synthetic_sequences(pipe.manifest.height, pipe.manifest.width, demo_weights.SYNTHETIC_CLASSES,
                               seeds=[HELD_OUT_SEED + 10, HELD_OUT_SEED + 11], frames=11)
    rr = evaluate(pipe, seqs, [5])["round_robin"]
    assert rr["frames_by_path"] == [4, 4, 4, 4]  # 2 clips x 8 scored frames, warm-up skipped
    method, alone = rr["method"], rr["single_path"]
    assert method["mean"] >= alone["mean"] + 0.03, rr
    assert method["min"] > alone["min"], rr
    assert all(m >= a for m, a in zip(method["by_position"], alone["by_position"])), rr  # every path gains


@needs_weights
def test_eval_cli_synthetic_table_and_json(trained_gsvnet, tmp_path, capsys):
    out = tmp_path / "eval.json"
    rc = main(["-q", "eval", str(trained_gsvnet), "--synthetic", "--seeds", "1000", "--frames", "6",
               "--intervals", "1-3", "--json", str(out), "--threads", "1"])
    text = capsys.readouterr().out
    assert rc == 0
    assert "| interval | mean | min | copy mean | copy min |" in text and text.count("\n| ") >= 4
    result = json.loads(out.read_text())
    assert [r["interval"] for r in result["intervals"]] == [1, 2, 3]
    assert result["source"]["synthetic_classes"] == demo_weights.SYNTHETIC_CLASSES
    assert not list(tmp_path.glob(".*tmp"))  # written atomically


@needs_weights
def test_eval_cli_video_and_labels_matches_synthetic(trained_gsvnet, tmp_path, capsys):
    """The same frames as an image folder + label PNGs give the same numbers as --synthetic."""
    seq = synthetic_sequences(demo_weights.HEIGHT, demo_weights.WIDTH, demo_weights.SYNTHETIC_CLASSES,
                              seeds=[1000], frames=6)[0]
    frames, labels = tmp_path / "frames", tmp_path / "labels"
    frames.mkdir()
    labels.mkdir()
    for i, (img, lab) in enumerate(zip(seq.frames, seq.labels)):
        cv2.imwrite(str(frames / f"{i:06d}.png"), img)
        cv2.imwrite(str(labels / f"{i:06d}.png"), lab)
    common = ["--intervals", "2", "--threads", "1"]
    assert main(["-q", "eval", str(trained_gsvnet), "--synthetic", "--seeds", "1000", "--frames", "6",
                 "--json", str(tmp_path / "s.json")] + common) == 0
    assert main(["-q", "eval", str(trained_gsvnet), "--video", str(frames), "--labels", str(labels),
                 "--json", str(tmp_path / "v.json")] + common) == 0
    synthetic = json.loads((tmp_path / "s.json").read_text())["intervals"][0]
    video = json.loads((tmp_path / "v.json").read_text())["intervals"][0]
    for who in ("method", "copy"):  # the same pixels, the same arithmetic: equal, not close
        assert video[who] == synthetic[who]
    (labels / "000002.png").unlink()  # a frame without labels runs but is not scored
    assert main(["-q", "eval", str(trained_gsvnet), "--video", str(frames), "--labels", str(labels),
                 "--json", str(tmp_path / "v.json")] + common) == 0
    assert json.loads((tmp_path / "v.json").read_text())["intervals"][0]["frames_scored"] == 5
    capsys.readouterr()


def test_eval_cli_error_paths(gsvnet_bundle, tmp_path, capsys):
    b = str(gsvnet_bundle)
    cases = [
        ([b], "either --synthetic or --video"),
        ([b, "--synthetic", "--video", "x.mp4", "--labels", str(tmp_path)], "either --synthetic or --video"),
        ([b, "--video", "x.mp4"], "--video needs --labels"),
        ([b, "--labels", str(tmp_path)], "--labels needs --video"),
        ([b, "--synthetic", "--intervals", "0-3"], "--intervals"),
        ([b, "--synthetic", "--intervals", "abc"], "--intervals"),
        ([b, "--synthetic", "--seeds", "x"], "--seeds"),
        ([b, "--synthetic"], "--synthetic-classes"),  # Cityscapes names are not the synthetic classes
        ([b, "--synthetic", "--synthetic-classes", "40"], "only 19 classes"),
        ([str(tmp_path / "nope"), "--synthetic"], "nope"),
        ([b, "--video", str(tmp_path / "missing.mp4"), "--labels", str(tmp_path)], "missing.mp4"),
        ([b, "--synthetic", "--json", str(tmp_path / "no" / "r.json")], "does not exist"),
    ]
    (tmp_path / "empty_labels").mkdir()
    from vss_edge.runtime.sources import sample_clip_path

    cases.append(([b, "--video", str(sample_clip_path()), "--labels", str(tmp_path / "empty_labels")],
                  "no label map matches"))
    cases.append(([b, "--video", str(sample_clip_path()), "--labels", str(tmp_path / "not_a_dir")],
                  "is not a folder"))
    for argv, message in cases:
        rc = main(["-q", "eval"] + argv)
        err = capsys.readouterr().err
        assert rc == 2, (argv, err)
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, (argv, err)
