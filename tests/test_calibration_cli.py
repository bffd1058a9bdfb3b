"""calibrate / check through the CLI: a quantized bundle runs unchanged; the split is enforced."""
from __future__ import annotations

import json

import cv2
import pytest

from vss_edge.cli import main
from vss_edge.video import sample_clip_path

CLIP = str(sample_clip_path())


@pytest.fixture(scope="module")
def int8_bundle(gsvnet_bundle, tmp_path_factory):
    out = tmp_path_factory.mktemp("int8") / "int8"
    assert main(["-q", "calibrate", str(gsvnet_bundle), CLIP, "--precision", "int8", "--out", str(out),
                 "--calibration-frames", "0:20", "--evaluation-frames", "40:60"]) == 0
    return out


def test_int8_bundle_runs_through_the_same_cli(int8_bundle, tmp_path):
    manifest = json.loads((int8_bundle / "manifest.json").read_text())
    assert {g["precision"] for g in manifest["graphs"].values()} == {"int8"}
    assert manifest["graphs"]["keyframe"]["calibration"]["frames"] == "0:20"
    out = tmp_path / "run"
    assert main(["-q", "run", str(int8_bundle), CLIP, "--out", str(out), "--max-frames", "8"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames_read"] == summary["frames_written"] == 8


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


def test_check_refuses_another_method(gsvnet_bundle, tmp_path, capsys):
    from vss_edge.exporters.tdnet import export_tdnet
    from vss_edge.configs import TDNetConfig

    other = export_tdnet(tmp_path / "td", TDNetConfig(height=64, width=96))
    assert main(["check", str(gsvnet_bundle), str(other), CLIP]) == 2
    assert "tdnet" in capsys.readouterr().err


def test_budget_keeps_the_most_sensitive_graph_in_float(gsvnet_bundle, tmp_path):
    report_path = tmp_path / "report.json"
    out = tmp_path / "budget"
    # A drop no INT8 graph set can meet except by keeping graphs FP32: the ranking decides which.
    assert main(["-q", "calibrate", str(gsvnet_bundle), CLIP, "--precision", "int8", "--out", str(out),
                 "--calibration-frames", "0:20", "--evaluation-frames", "40:60", "--max-drop", "0.05",
                 "--json", str(report_path)]) in (0, 2)
    if report_path.exists():
        budget = json.loads(report_path.read_text())["budget"]
        assert budget["drop"] <= 0.05
        ranked = [s["drop_alone"] for s in budget["sensitivity"]]
        assert ranked == sorted(ranked, reverse=True)
        kept = [k["graph"] for k in budget["kept_float"]]
        assert kept == [s["graph"] for s in budget["sensitivity"]][:len(kept)]
        manifest = json.loads((out / "manifest.json").read_text())
        assert all(manifest["graphs"][g]["precision"] == "fp32" for g in kept)


def test_fp16_bundle_runs(gsvnet_bundle, tmp_path, capsys):
    out = tmp_path / "fp16"
    assert main(["-q", "calibrate", str(gsvnet_bundle), CLIP, "--precision", "fp16", "--out", str(out)]) == 0
    assert "CUDA" in capsys.readouterr().err  # the CPU warning
    assert main(["-q", "run", str(out), CLIP, "--out", str(tmp_path / "run"), "--max-frames", "4"]) == 0
