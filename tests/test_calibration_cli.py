"""calibrate / check through the CLI: a quantized bundle runs unchanged; the split is enforced."""
from __future__ import annotations

import json

import cv2
import pytest

from oracle import decoded_frames
from vss_edge.cli import main
from vss_edge.runtime.sources import sample_clip_path

CLIP = str(sample_clip_path())


@pytest.fixture(scope="module")
def int8_bundle(gsvnet_bundle, tmp_path_factory):
    out = tmp_path_factory.mktemp("int8") / "int8"
    assert main(["-q", "calibrate", str(gsvnet_bundle), CLIP, "--precision", "int8", "--out", str(out),
                 "--calibration-frames", "0:20", "--evaluation-frames", "40:60", "--keep-slower", "--quantize-flow"]) == 0
    return out


def test_int8_bundle_runs_through_the_same_cli(int8_bundle, tmp_path):
    manifest = json.loads((int8_bundle / "manifest.json").read_text())
    assert {g["precision"] for g in manifest["graphs"].values()} == {"int8"}
    assert manifest["graphs"]["keyframe"]["calibration"]["frames"] == "0:20"
    out = tmp_path / "run"
    assert main(["-q", "run", str(int8_bundle), CLIP, "--out", str(out), "--max-frames", "8"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames_read"] == summary["frames_written"] == 8
    assert decoded_frames(out / "overlay.mp4") == 8  # counted in the video itself


def test_check_writes_json_markdown_and_plot(gsvnet_bundle, int8_bundle, tmp_path, capsys):
    report = tmp_path / "check.json"
    assert main(["-q", "check", str(gsvnet_bundle), str(int8_bundle), CLIP, "--frames", "40:60",
                 "--json", str(report)]) == 0
    assert "mIoU agreement" in capsys.readouterr().out
    result = json.loads(report.read_text())
    assert 0.0 < result["end_to_end"]["agreement"]["pixel_agreement"] < 1.0  # computed, not constant
    assert (tmp_path / "check.md").exists()
    assert cv2.imread(str(tmp_path / "check_agreement.png")) is not None


def test_check_refuses_the_calibration_frames(gsvnet_bundle, int8_bundle, capsys):
    assert main(["check", str(gsvnet_bundle), str(int8_bundle), CLIP, "--frames", "10:30"]) == 2
    err = capsys.readouterr().err
    assert "calibrated on frames 0:20" in err and "Traceback" not in err


def test_calibrate_refuses_overlapping_frames(gsvnet_bundle, tmp_path, capsys):
    assert main(["calibrate", str(gsvnet_bundle), CLIP, "--precision", "int8", "--out", str(tmp_path / "x"),
                 "--calibration-frames", "0:30", "--evaluation-frames", "20:40"]) == 2
    assert "overlap" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_check_refuses_another_method(gsvnet_bundle, tdnet_small, capsys):
    assert main(["check", str(gsvnet_bundle), str(tdnet_small[1]), CLIP]) == 2
    assert "tdnet" in capsys.readouterr().err


def test_budget_keeps_the_most_sensitive_graph_in_float(gsvnet_bundle, tmp_path):
    """--max-drop 0.05: all-INT8 misses it, so graphs go back to FP32 from the most sensitive down
    until the drop fits. Measured: all INT8 0.207; alone keyframe 0.146, propagation 0.138, flow
    0.0032; keyframe kept -> 0.134, keyframe + propagation kept -> 0.0032 (exit 0)."""
    report_path = tmp_path / "report.json"
    out = tmp_path / "budget"
    assert main(["-q", "calibrate", str(gsvnet_bundle), CLIP, "--precision", "int8", "--out", str(out),
                 "--calibration-frames", "0:20", "--evaluation-frames", "40:60", "--max-drop", "0.05", "--keep-slower", "--quantize-flow",
                 "--budget-level", "graph", "--json", str(report_path)]) == 0
    budget = json.loads(report_path.read_text())["budget"]
    steps, ranked = budget["steps"], budget["sensitivity"]
    assert steps[0]["kept_float"] == [] and steps[0]["drop"] > 0.05  # the budget had work to do
    assert budget["drop"] == steps[-1]["drop"] <= 0.05
    assert all(a["drop"] > 0.05 for a in steps[:-1])  # it stopped at the first set that fits
    assert [s["drop_alone"] for s in ranked] == sorted((s["drop_alone"] for s in ranked), reverse=True)
    assert {s["graph"] for s in ranked} == {"keyframe", "flow", "propagation"}
    kept = [k["graph"] for k in budget["kept_float"]]
    assert 1 <= len(kept) < 3 and kept == [s["graph"] for s in ranked][:len(kept)]
    assert [s["kept_float"] for s in steps] == [kept[:i] for i in range(len(kept) + 1)]
    manifest = json.loads((out / "manifest.json").read_text())
    assert {g: manifest["graphs"][g]["precision"] for g in manifest["graphs"]} == {
        g: "fp32" if g in kept else "int8" for g in ("keyframe", "flow", "propagation")}


def test_fp16_bundle_runs(gsvnet_bundle, tmp_path, capsys):
    out = tmp_path / "fp16"
    assert main(["-q", "calibrate", str(gsvnet_bundle), CLIP, "--precision", "fp16", "--out", str(out)]) == 0
    assert "CUDA" in capsys.readouterr().err  # the CPU warning
    assert main(["-q", "run", str(out), CLIP, "--out", str(tmp_path / "run"), "--max-frames", "4"]) == 0


def test_budget_level_without_max_drop_is_refused(gsvnet_bundle, tmp_path, capsys):
    assert main(["calibrate", str(gsvnet_bundle), CLIP, "--precision", "int8", "--out", str(tmp_path / "x"),
                 "--budget-level", "graph"]) == 2
    err = capsys.readouterr().err
    assert "--budget-level" in err and "--max-drop" in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()
