"""The accuracy check (calibration.check / calibration.report): metrics are computed, not constant."""
from __future__ import annotations

import json
import math
import shutil

import cv2
import numpy as np
import pytest

from vss_edge import runtime
from vss_edge.calibration.check import (check_compatible, compare_graphs, compare_pipelines, output_metrics,
                               record_feeds, run_check)
from vss_edge.calibration.report import to_json, to_markdown, write_reports
from vss_edge.runtime.errors import VssEdgeError
from vss_edge.runtime.manifest import MANIFEST_NAME, load_manifest, sha256_file

N_FRAMES = 12  # interval 5: key frames 0, 5, 10; distances 0..4


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def frames(sample_frames):
    return sample_frames[:N_FRAMES]


@pytest.fixture(scope="module")
def damaged_bundle(gsvnet_bundle, tmp_path_factory):
    """A copy of the bundle whose propagation graph's first Conv weight got heavy noise (hash updated)."""
    import onnx
    from onnx import numpy_helper

    out = tmp_path_factory.mktemp("damaged") / "gsvnet"
    shutil.copytree(gsvnet_bundle, out)
    path = out / "propagation.onnx"
    model = onnx.load(str(path))
    inits = {t.name: t for t in model.graph.initializer}
    conv = next(n for n in model.graph.node if n.op_type == "Conv" and n.input[1] in inits)
    tensor = inits[conv.input[1]]
    w = numpy_helper.to_array(tensor)
    rng = np.random.default_rng(0)
    damaged = (w + rng.normal(0.0, 2.0 * float(np.abs(w).mean()) + 1e-3, w.shape)).astype(w.dtype)
    tensor.CopyFrom(numpy_helper.from_array(damaged, tensor.name))
    onnx.save(model, str(path))
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    manifest["graphs"]["propagation"]["sha256"] = sha256_file(path)
    (out / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2))
    return out


def _load(bundle):
    return runtime.load(bundle, device="cpu")


@pytest.fixture(scope="module")
def self_check(gsvnet_bundle, frames):
    ref, cand = _load(gsvnet_bundle), _load(gsvnet_bundle)
    feeds = record_feeds(ref, frames)
    return compare_graphs(ref, cand, feeds), compare_pipelines(ref, cand, frames)


@pytest.fixture(scope="module")
def damaged_check(gsvnet_bundle, damaged_bundle, frames):
    ref, cand = _load(gsvnet_bundle), _load(damaged_bundle)
    feeds = record_feeds(ref, frames)
    return compare_graphs(ref, cand, feeds), compare_pipelines(ref, cand, frames)


# ---------------------------------------------------------------- output_metrics

def test_output_metrics_equal_arrays():
    a = np.linspace(-1, 1, 1000, dtype=np.float32).reshape(10, 100)
    m = output_metrics(a, a.copy())
    assert m["sqnr_db"] == math.inf and m["cosine"] == pytest.approx(1.0) and m["max_abs"] == 0.0


def test_output_metrics_known_noise():
    rng = np.random.default_rng(1)
    ref = rng.normal(size=10000)
    noise = rng.normal(size=10000)
    noise *= np.sqrt(np.sum(ref ** 2) / np.sum(noise ** 2) / 10 ** (30 / 10))  # exactly 30 dB
    m = output_metrics(ref.astype(np.float64), ref + noise)
    assert m["sqnr_db"] == pytest.approx(30.0, abs=0.01)
    assert m["max_abs"] == pytest.approx(np.abs(noise).max())
    assert 0.99 < m["cosine"] < 1.0
    # a constant scale: 0.5 x ref -> SQNR 10 log10(1/0.25) = 6.02 dB, cosine exactly 1
    half = output_metrics(ref, 0.5 * ref)
    assert half["sqnr_db"] == pytest.approx(10 * math.log10(4), abs=0.01) and half["cosine"] == pytest.approx(1.0)
    assert output_metrics(ref, -ref)["cosine"] == pytest.approx(-1.0)


def test_output_metrics_labels_and_zero_reference():
    a = np.zeros((4, 5), np.uint8)
    b = a.copy()
    b[0, :2] = 3
    m = output_metrics(a, b)
    assert m["kind"] == "int" and m["agreement"] == pytest.approx(18 / 20) and m["max_abs"] == 3
    z = np.zeros(8, np.float32)
    assert output_metrics(z, z)["sqnr_db"] == math.inf and output_metrics(z, z)["cosine"] == 1.0
    assert output_metrics(z, z + 1)["sqnr_db"] == -math.inf
    with pytest.raises(ValueError):
        output_metrics(z, np.zeros(9, np.float32))


# ---------------------------------------------------------------- reference vs itself

def test_reference_vs_itself_is_exact(self_check):
    graphs, e2e = self_check
    assert set(graphs) == {"keyframe", "flow", "propagation"}
    assert graphs["keyframe"]["samples"] == 3 and graphs["propagation"]["samples"] == N_FRAMES - 3
    for g in graphs.values():
        for o in g["outputs"].values():
            assert o["identical"]
            if o["kind"] == "float":
                assert o["sqnr_db_mean"] == math.inf and o["sqnr_db_min"] == math.inf
                assert o["cosine_mean"] == pytest.approx(1.0)
            else:
                assert o["agreement_mean"] == 1.0
    assert e2e["agreement"]["miou"] == 1.0 and e2e["agreement"]["pixel_agreement"] == 1.0
    assert e2e["grouping"]["by"] == "distance_from_key"
    assert [r["group"] for r in e2e["by_group"]] == [0, 1, 2, 3, 4]
    assert all(r["miou"] == 1.0 for r in e2e["by_group"])
    assert sum(r["frames"] for r in e2e["by_group"]) == N_FRAMES and e2e["key_frames"] == 3
    present = [c for c in e2e["per_class"] if c["iou"] is not None]
    assert present and all(c["iou"] == 1.0 for c in present)
    tc = e2e["temporal_consistency"]
    assert 0.0 < tc["reference"] <= 1.0 and tc["difference"] == 0.0
    assert e2e["ground_truth"] is None
    assert e2e["speed"]["frame"]["reference"]["mean_ms"] > 0 and e2e["speed"]["frame"]["ratio_mean"] > 0


# ---------------------------------------------------------------- damaged candidate

def test_damaged_candidate_shows_a_drop(damaged_check):
    graphs, e2e = damaged_check
    prop = graphs["propagation"]["outputs"]["logits"]
    assert math.isfinite(prop["sqnr_db_mean"]) and math.isfinite(prop["sqnr_db_min"])
    assert prop["cosine_mean"] < 1.0 and prop["max_abs"] > 0 and not prop["identical"]
    assert graphs["keyframe"]["outputs"]["logits"]["sqnr_db_min"] == math.inf
    assert graphs["flow"]["outputs"]["flow"]["sqnr_db_min"] == math.inf  # reference inputs: no compounding
    by = {r["group"]: r for r in e2e["by_group"]}
    assert by[0]["miou"] == 1.0  # key frames run the unchanged keyframe graph
    assert all(by[d]["miou"] < 1.0 for d in by if d >= 1)
    assert e2e["agreement"]["miou"] < 1.0 and e2e["agreement"]["pixel_agreement"] < 1.0
    assert e2e["temporal_consistency"]["difference"] != 0.0
    assert any(c["iou"] is not None and c["iou"] < 1.0 for c in e2e["per_class"])
    assert all(f["miou"] == 1.0 for f in e2e["per_frame"] if f["is_key"])


def test_identical_means_bit_identical(gsvnet_bundle, frames, tmp_path):
    """`identical` (what turns a null SQNR into 'inf' in the reports) is exact equality: a candidate
    whose propagation head differs by one part in 10^4 in one weight is not identical, though its
    outputs differ by far less than any tolerance would allow (measured max |error| 7.4e-6, SQNR 102 dB)."""
    import onnx
    from onnx import numpy_helper

    nudged = tmp_path / "nudged"
    shutil.copytree(gsvnet_bundle, nudged)
    path = nudged / "propagation.onnx"
    model = onnx.load(str(path))
    inits = {t.name: t for t in model.graph.initializer}
    conv = next(n for n in model.graph.node if n.op_type == "Conv" and n.input[1] in inits)
    w = numpy_helper.to_array(inits[conv.input[1]])
    inits[conv.input[1]].CopyFrom(numpy_helper.from_array((w * (1 + 1e-4)).astype(w.dtype), conv.input[1]))
    onnx.save(model, str(path))
    manifest = json.loads((nudged / MANIFEST_NAME).read_text())
    manifest["graphs"]["propagation"]["sha256"] = sha256_file(path)
    (nudged / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2))
    ref = _load(gsvnet_bundle)
    graphs = compare_graphs(ref, _load(nudged), record_feeds(ref, frames[:7]))
    logits = graphs["propagation"]["outputs"]["logits"]
    assert 0.0 < logits["max_abs"] < 1e-4, logits
    assert logits["identical"] is False and math.isfinite(logits["sqnr_db_min"]) and logits["sqnr_db_min"] > 80
    assert graphs["keyframe"]["outputs"]["logits"]["identical"] is True


# ---------------------------------------------------------------- bad input

def test_mismatched_resolution_is_a_clear_error(gsvnet_bundle, tmp_path):
    from vss_edge.exporters.gsvnet import export_gsvnet
    from vss_edge.configs import GSVNetConfig

    other = export_gsvnet(tmp_path / "small", GSVNetConfig(height=64, width=128), verify_frames=2)
    with pytest.raises(VssEdgeError, match=r"candidate is 128x64 but reference is 256x128"):
        check_compatible(load_manifest(gsvnet_bundle), load_manifest(other))
    with pytest.raises(VssEdgeError, match="128x64"):
        run_check(gsvnet_bundle, other, tmp_path / "no-video-needed.mp4")  # fails before reading the video


def test_mismatched_method_and_graphs(gsvnet_bundle, tmp_path):
    fake = tmp_path / "fake"
    shutil.copytree(gsvnet_bundle, fake)
    manifest = json.loads((fake / MANIFEST_NAME).read_text())
    manifest["method"] = "tdnet"
    (fake / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(VssEdgeError, match="candidate is tdnet but reference is gsvnet"):
        check_compatible(load_manifest(gsvnet_bundle), load_manifest(fake))
    manifest["method"] = "gsvnet"
    manifest["graphs"]["propagation"]["outputs"][0]["name"] = "refined"
    manifest["scheduler"]["params"]["interval"] = 3
    (fake / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(VssEdgeError, match=r"graph 'propagation' outputs.*refined") as e:
        check_compatible(load_manifest(gsvnet_bundle), load_manifest(fake, verify_hashes=False))
    assert "interval" in str(e.value)


# ---------------------------------------------------------------- ground truth

def test_ground_truth_from_reference_labels(gsvnet_bundle, damaged_bundle, frames, tmp_path):
    ref = _load(gsvnet_bundle)
    labels = tmp_path / "labels"
    labels.mkdir()
    for i, frame in enumerate(frames):
        if i % 2 == 0:  # sparse ground truth: frames without a map are skipped
            gt = ref.step(frame).labels.copy()
            gt[:4, :] = 255  # ignored pixels
            cv2.imwrite(str(labels / f"{i:06d}.png"), gt)
        else:
            ref.step(frame)
    e2e = compare_pipelines(ref, _load(damaged_bundle), frames, labels_dir=labels)
    gt = e2e["ground_truth"]
    assert gt["frames"] == (N_FRAMES + 1) // 2
    assert gt["reference"]["miou"] == 1.0 and gt["reference"]["pixel_accuracy"] == 1.0
    assert gt["candidate"]["miou"] < 1.0 and gt["miou_difference"] < 0
    with pytest.raises(VssEdgeError, match="no label map"):
        compare_pipelines(ref, ref, frames[:2], labels_dir=labels, first_index=1001)
    cv2.imwrite(str(labels / "000000.png"), np.full((8, 8), 40, np.uint8))
    with pytest.raises(VssEdgeError, match="class id"):
        compare_pipelines(ref, ref, frames[:1], labels_dir=labels)


# ---------------------------------------------------------------- reports

def test_reports(damaged_check, gsvnet_bundle, damaged_bundle, tmp_path):
    graphs, e2e = damaged_check
    check = {"reference": {"bundle": str(gsvnet_bundle), "method": "gsvnet", "height": 128, "width": 256,
                           "device": "cpu", "graphs": {}},
             "candidate": {"bundle": str(damaged_bundle), "method": "gsvnet", "height": 128, "width": 256,
                           "device": "cpu", "graphs": {}},
             "video": "sample.mp4", "frame_range": [0, N_FRAMES], "conventions": {}, "graphs": graphs,
             "end_to_end": e2e}
    md = to_markdown(check)
    for heading in ("## Per graph", "## End to end", "| distance from key frame |", "## Per-class IoU", "## Speed"):
        assert heading in md
    assert "| keyframe | fp32 -> fp32 | logits |" in md and "| inf | inf |" in md
    paths = write_reports(check, tmp_path / "out.json")
    data = json.loads(open(paths["json"]).read(), parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    assert data["graphs"]["keyframe"]["outputs"]["logits"]["sqnr_db_mean"] is None  # inf -> null
    assert data["graphs"]["keyframe"]["outputs"]["logits"]["identical"] is True
    assert isinstance(data["graphs"]["propagation"]["outputs"]["logits"]["sqnr_db_mean"], float)
    assert open(paths["markdown"]).read() == md
    assert to_markdown(data) == md  # the report reads back from its own JSON (null + identical -> inf)
    img = cv2.imread(paths["plot"])
    assert img is not None and img.shape[0] >= 300 and img.shape[1] >= 500
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 10 and img.std() > 5  # drawn, not blank
    folder = write_reports(check, tmp_path / "reports")
    assert all(open(p, "rb").read() for p in folder.values())
    json.loads(to_json({"x": float("nan"), "y": np.float32(np.inf), "z": np.int64(3)}))


def test_run_check_end_to_end(gsvnet_bundle, damaged_bundle, tmp_path):
    from vss_edge.runtime.sources import sample_clip_path

    check = run_check(gsvnet_bundle, damaged_bundle, sample_clip_path(), start=5, stop=12, graph_samples=2)
    assert set(check) == {"reference", "candidate", "video", "frame_range", "conventions", "graphs", "end_to_end"}
    assert check["frame_range"] == [5, 12] and check["end_to_end"]["frames"] == 7
    assert check["end_to_end"]["per_frame"][0] == {**check["end_to_end"]["per_frame"][0], "index": 5, "is_key": True}
    assert all(g["samples"] <= 2 for g in check["graphs"].values())
    assert check["end_to_end"]["agreement"]["miou"] < 1.0
    json.loads(to_json(check))


def test_check_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys; sys.modules['torch'] = None\n"
            "import vss_edge.calibration.check, vss_edge.calibration.report\n")
    subprocess.run([sys.executable, "-c", code], check=True)
