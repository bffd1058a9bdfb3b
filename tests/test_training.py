"""Training smoke tests: the command runs, writes loadable official-layout checkpoints; pseudo-labels;
the training package stays out of `import vss_edge`."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from vss_edge import demo_weights


def test_training_command_writes_checkpoints_the_exporter_loads(tmp_path):
    from vss_edge.runtime.sources import sample_clip_path

    out = tmp_path / "w"
    done = subprocess.run(
        [sys.executable, "-m", "vss_edge.training", "gsvnet", "--out", str(out), "--height", "64", "--width", "96",
         "--keyframe-steps", "2", "--flow-steps", "2", "--propagation-steps", "2", "--batch", "2",
         "--synthetic-videos", "2", "--video", str(sample_clip_path()), "--exclude", "0:20", "-q"],
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "trained gsvnet" in done.stdout
    report = json.loads((out / "gsvnet_small.json").read_text())
    assert report["keyframe"]["steps"] == 2 and report["propagation"]["steps"] == 2
    assert report["excluded_frames"] == [0, 20]

    from vss_edge.exporters.gsvnet import build_model

    model, weights = build_model(demo_weights.gsvnet_config(64, 96), checkpoint=str(out / "gsvnet_small.tar"),
                                 keyframe_checkpoint=str(out / "gsvnet_small_swiftnet.pth"))
    assert weights["keyframe"]["file"] == "gsvnet_small_swiftnet.pth"
    from vss_edge.checkpoints import read_checkpoint

    tar = read_checkpoint(out / "gsvnet_small.tar")
    assert set(tar) >= {"state_dict", "state_dict_of", "args"} and tar["args"].method == "gsvnet"
    assert all(k.startswith("grm.") for k in tar["state_dict"])


def test_stmg_training_command_writes_a_checkpoint_the_exporter_loads(tmp_path):
    out = tmp_path / "w"
    done = subprocess.run(
        [sys.executable, "-m", "vss_edge.training", "stmg", "--out", str(out), "--height", "64", "--width", "96",
         "--keyframe-steps", "2", "--nonkey-steps", "2", "--batch", "2", "--synthetic-videos", "2",
         "--video", "none", "-q"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads((out / "stmg_small.json").read_text())
    assert report["nonkey"]["steps"] == 2 and 0 < report["nonkey"]["final_mean_keep_probability"] < 1

    from vss_edge.exporters.stmg import build_model

    build_model(demo_weights.stmg_config(64, 96), checkpoint=str(out / "stmg_small.pth"))


def test_tdnet_training_command_writes_a_checkpoint_the_exporter_loads(tmp_path):
    out = tmp_path / "w"
    done = subprocess.run(
        [sys.executable, "-m", "vss_edge.training", "tdnet", "--out", str(out), "--height", "64", "--width", "96",
         "--steps", "2", "--batch", "2", "--pretrain-steps", "2", "--pretrain-batch", "2", "--synthetic-videos", "2",
         "--video", "none", "-q"],
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads((out / "tdnet_small.json").read_text())
    assert report["tdnet"]["steps"] == 2 and report["per_frame_pspnet"]["steps"] == 2

    from vss_edge.exporters.tdnet import build_model

    build_model(demo_weights.tdnet_config(64, 96), checkpoint=str(out / "tdnet_small.pth"))


def test_mpvss_training_command_writes_a_checkpoint_the_exporter_loads(tmp_path, capsys):
    from vss_edge.runtime.sources import sample_clip_path

    out = tmp_path / "w"
    done = subprocess.run(
        [sys.executable, "-m", "vss_edge.training", "mpvss", "--out", str(out), "--height", "64", "--width", "96",
         "--keyframe-steps", "2", "--flow-steps", "2", "--batch", "2", "--synthetic-videos", "2",
         "--video", str(sample_clip_path()), "--exclude", "0:20", "-q"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads((out / "mpvss_small.json").read_text())
    assert report["keyframe"]["steps"] == 2 and report["flow"]["steps"] == 2
    assert report["flow"]["final_aux_flow_l1"] is not None

    from vss_edge.exporters.mpvss import build_model

    model, weights = build_model(demo_weights.mpvss_config(64, 96), checkpoint=str(out / "mpvss_small.pth"))
    assert weights["motion"]["file"] == "mpvss_small.pth"
    from vss_edge.cli import main  # the export CLI takes it with the demo widths

    assert main(["-q", "export", "mpvss", "--out", str(tmp_path / "b"), "--height", "64", "--width", "96",
                 "--classes", str(demo_weights.NUM_CLASSES), "--variant", "small", "--backbone-width", "8",
                 "--motion-width", "8", "--checkpoint", str(out / "mpvss_small.pth"), "--no-simplify"]) == 0
    assert (tmp_path / "b" / "manifest.json").is_file()
    capsys.readouterr()


def test_set_loss_matches_queries_to_the_classes_present():
    import torch

    from vss_edge.training.mpvss import _targets, composed_flow, set_loss

    labels = torch.zeros(1, 8, 8, dtype=torch.long)
    labels[0, :, 4:] = 2
    labels[0, 0, 0] = 255
    targets, valid = _targets(labels, (8, 8), 3)
    assert targets[0][0].tolist() == [0, 2] and valid[0, 0, 0] == 0
    good_masks = torch.full((1, 4, 8, 8), -9.0)
    good_masks[0, 3, :, :4] = 9.0
    good_masks[0, 1, :, 4:] = 9.0
    good_cls = torch.full((1, 4, 4), -9.0)
    good_cls[0, :, -1] = 9.0
    good_cls[0, 3, 0], good_cls[0, 3, -1], good_cls[0, 1, 2], good_cls[0, 1, -1] = 9.0, -9.0, 9.0, -9.0
    good = set_loss(good_cls, good_masks, targets, valid)
    assert good < 0.01  # queries 3 and 1 are matched to classes 0 and 2 whatever their order
    assert set_loss(good_cls, good_masks.flip(-1), targets, valid) > 1.0
    # composing one-step backward flows: two steps of +1 px are +2 px
    f = [np.ones((6, 6, 2), np.float32)] * 2
    flow, ok = composed_flow(f, [np.ones((6, 6), bool)] * 2)
    assert np.allclose(flow[1:4, 1:4], 2.0)
    assert ok[:5, :5].all() and not ok[:, 5].any()  # the second step leaves the frame there


def test_soft_gates_interpolate_between_dropping_and_keeping_blocks():
    import torch

    from vss_edge.models.stmg.ddrnet import DDRNet

    torch.manual_seed(0)
    net = DDRNet("ddrnet23_slim", 3, planes=4).eval()
    x = torch.randn(1, 3, 64, 64)
    k = len(net.prunable_blocks())
    with torch.no_grad():
        assert torch.allclose(net.features(x, gates=torch.ones(1, k)), net.features(x), atol=1e-6)
        assert torch.allclose(net.features(x, gates=torch.zeros(1, k)), net.features(x, keep=[False] * k), atol=1e-6)


def test_training_command_missing_video_is_a_one_line_error(tmp_path):
    done = subprocess.run([sys.executable, "-m", "vss_edge.training", "gsvnet", "--out", str(tmp_path),
                           "--video", str(tmp_path / "none.avi")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "no such file" in done.stderr and "Traceback" not in done.stderr


def test_training_command_setting_out_of_range_is_a_one_line_error(tmp_path):
    for flag, value, words in (("--max-gap", "0", "max_gap"), ("--aggregation", "sum", "aggregation must be one of")):
        done = subprocess.run([sys.executable, "-m", "vss_edge.training", "tdnet", "--out", str(tmp_path), flag, value,
                               "--video", "none"], capture_output=True, text=True, timeout=120)
        assert done.returncode == 2 and words in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert not any(tmp_path.iterdir())  # refused before anything was written


def test_distillation_is_the_teachers_kl_zero_when_the_student_agrees():
    import torch

    from vss_edge.training.tdnet import _kl

    teacher = torch.randn(2, 6, 4, 5)
    assert float(_kl(teacher + 3.0, teacher)) == pytest.approx(0.0, abs=1e-6)  # softmax ignores a shift
    p, q = teacher.softmax(1), (-teacher).softmax(1)
    assert float(_kl(-teacher, teacher)) == pytest.approx(float((p * (p / q).log()).sum(1).mean()), rel=1e-5)


def test_pseudo_labels_mark_moving_blobs_and_ignore_their_border():
    from vss_edge.training.data import IGNORE, pseudo_labels

    bg = np.full((60, 80, 3), 100, np.uint8)
    frame = bg.copy()
    frame[20:45, 30:42] = 200  # a "person"
    frame[5, 5] = 200  # a speck
    lab = pseudo_labels(frame, bg, person=5)
    assert lab[32, 36] == 5 and lab[2, 70] == 0
    assert lab[20, 36] == IGNORE or lab[19, 36] == IGNORE  # the border band
    assert (lab == 5).sum() > 150 and lab[5, 5] in (0, IGNORE)


def test_training_seeds_stay_below_the_held_out_ones():
    from vss_edge.training.data import SyntheticPool

    with pytest.raises(ValueError, match="held out"):
        SyntheticPool(64, 96, 5, count=10, seed0=995)


def test_import_vss_edge_does_not_import_training():
    code = "import sys, vss_edge, vss_edge.cli, vss_edge.evaluation, vss_edge.demo_weights; " \
           "assert not any(m.startswith('vss_edge.training') or m == 'torch' for m in sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.skipif(not demo_weights.available("tdnet"), reason="trained TDNet weights not committed")
def test_committed_tdnet_checkpoint_is_small_and_loads():
    from vss_edge.exporters.tdnet import build_model

    assert demo_weights.TDNET_CHECKPOINT.stat().st_size < 5e6
    build_model(demo_weights.tdnet_config(), checkpoint=str(demo_weights.TDNET_CHECKPOINT))


@pytest.mark.skipif(not demo_weights.available("mpvss"), reason="trained MPVSS weights not committed")
def test_committed_mpvss_checkpoint_is_small_and_loads():
    from vss_edge.exporters.mpvss import build_model

    assert demo_weights.MPVSS_CHECKPOINT.stat().st_size < 5e6
    build_model(demo_weights.mpvss_config(), checkpoint=str(demo_weights.MPVSS_CHECKPOINT))


@pytest.mark.skipif(not demo_weights.available("stmg"), reason="trained STMG weights not committed")
def test_committed_stmg_checkpoint_is_small_and_loads():
    from vss_edge.exporters.stmg import build_model

    assert demo_weights.STMG_CHECKPOINT.stat().st_size < 5e6
    build_model(demo_weights.stmg_config(), checkpoint=str(demo_weights.STMG_CHECKPOINT))


@pytest.mark.skipif(not demo_weights.available(), reason="trained demo weights not committed")
def test_committed_checkpoints_are_small_and_load():
    from vss_edge.exporters.gsvnet import build_model

    for p in (demo_weights.GSVNET_KEYFRAME, demo_weights.GSVNET_PROPAGATION):
        assert p.stat().st_size < 5e6, p
    build_model(demo_weights.gsvnet_config(), checkpoint=str(demo_weights.GSVNET_PROPAGATION),
                keyframe_checkpoint=str(demo_weights.GSVNET_KEYFRAME))


@pytest.mark.skipif(not demo_weights.available(), reason="trained demo weights not committed")
def test_export_cli_takes_the_trained_checkpoints_and_names_a_width_mismatch(tmp_path, capsys):
    from vss_edge.cli import main

    weights = ["--checkpoint", str(demo_weights.GSVNET_PROPAGATION),
               "--keyframe-checkpoint", str(demo_weights.GSVNET_KEYFRAME)]
    small = ["--height", "64", "--width", "96", "--classes", str(demo_weights.NUM_CLASSES), "--no-simplify"]
    assert main(["-q", "export", "gsvnet", "--out", str(tmp_path / "wrong")] + small + weights) == 2
    assert "pass --keyframe-width 16" in capsys.readouterr().err
    assert main(["-q", "export", "gsvnet", "--out", str(tmp_path / "b"), "--keyframe-width", "16"]
                + small + weights) == 0
    assert (tmp_path / "b" / "manifest.json").is_file()


# --- TDNet's ablation: attention propagation (APM) vs plain addition --------------------------


def test_attention_label_loss_is_lower_when_attention_lands_on_the_same_class():
    """The attention aid: -log(attention mass on stored positions of the query's class)."""
    import torch

    from vss_edge.training.tdnet import attention_label_loss

    labels = [torch.zeros(1, 64, 64, dtype=torch.long) for _ in range(3)]
    for lab in labels:
        lab[:, :, 32:] = 1  # right half class 1; the 1/32 grid is 2 x 2, the 1/8 grid 8 x 8
    src = labels[0][:, ::32, ::32].flatten(1)  # [1, 4]: 0 1 0 1
    same = (labels[1][:, ::32, ::32].flatten(1)[:, :, None] == src[:, None, :]).float()  # [1, 4, 4]
    last_same = (labels[2][:, ::8, ::8].flatten(1)[:, :, None] == src[:, None, :]).float()  # [1, 64, 4]
    right = [same / same.sum(-1, keepdim=True), last_same / last_same.sum(-1, keepdim=True)]
    uniform = [torch.full((1, 4, 4), 0.25), torch.full((1, 64, 4), 0.25)]
    assert float(attention_label_loss(right, labels)) == pytest.approx(0.0, abs=1e-6)
    assert float(attention_label_loss(uniform, labels)) == pytest.approx(np.log(2), rel=1e-5)


def test_tdnet_path_scores_equal_vss_edge_eval_and_the_add_variant_runs(tmp_path):
    """The ablation script scores in PyTorch (`path_scores`) what `vss-edge eval` scores on the
    exported bundle: the same mIoU per path, round robin and alone (committed weights at 64x96).
    The Add variant (same-position 'attention', Fig. 6a) runs on the same model and gives labels of
    the same shape; a wrong --aggregation is refused."""
    from vss_edge import runtime
    from vss_edge.evaluation import evaluate_round_robin, synthetic_sequences
    from vss_edge.exporters.tdnet import build_model, export_tdnet
    from vss_edge.training.tdnet import Settings, path_scores, train

    cfg = demo_weights.tdnet_config(64, 96)
    seqs = synthetic_sequences(64, 96, demo_weights.SYNTHETIC_CLASSES, seeds=[1000], frames=9)
    bundle = export_tdnet(tmp_path / "b", cfg, checkpoint=str(demo_weights.TDNET_CHECKPOINT), verify_frames=1)
    onnx_scores = evaluate_round_robin(runtime.load(bundle, device="cpu", threads=1), seqs)["round_robin"]
    model, _ = build_model(cfg, checkpoint=str(demo_weights.TDNET_CHECKPOINT))
    torch_scores = path_scores(model, seqs)
    for who in ("method", "single_path"):
        assert torch_scores[who]["by_path"] == pytest.approx(onnx_scores[who]["by_position"], abs=0.01), who
    add = path_scores(model, seqs, "add")
    assert add["single_path"] == torch_scores["single_path"] and 0 <= add["method"]["mean"] <= 1
    with pytest.raises(ValueError, match="aggregation must be one of"):
        train(tmp_path / "w", Settings(aggregation="sum"), video=None, quiet=True)


def test_tdnet_paths_started_from_a_per_frame_pspnet_split_its_head_exactly():
    """Official `pretrained_init`: every path takes the per-frame PSPNet's backbone and pyramid
    pooling, and the two pyramid halves (pid 0, 1) through their heads' first convs sum to the
    per-frame head's first conv on every channel: the decomposition TDNet distributes."""
    import torch

    from vss_edge.models.tdnet.model import TDNet
    from vss_edge.training.tdnet import FramePSPNet, _gapped, start_paths_from

    torch.manual_seed(0)
    model = TDNet(demo_weights.tdnet_config(64, 96)).eval()
    frame_net = FramePSPNet(model).eval()
    start_paths_from(model, frame_net)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        full = frame_net.head.conv5[0](frame_net.psp(frame_net.pretrained(x)))
        for a, b in ((0, 1), (2, 3), (0, 3)):
            halves = [getattr(model, f"head{p + 1}").conv5[0](model.features(p, x)) for p in (a, b)]
            assert torch.allclose(halves[0] + halves[1], full, atol=1e-5)
    rng = np.random.default_rng(0)
    clip = (list(range(7)), list(range(10, 17)), None, None)
    for frames, labels, flows, _ in _gapped([clip] * 20, 4, 2, rng):
        steps = np.diff(frames)
        assert frames[-1] == 6 and len(frames) == 4 and set(steps) <= {1, 2} and flows is None
        assert labels == [f + 10 for f in frames]
