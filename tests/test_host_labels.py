"""label_path='host': the graphs end at their scores and the runtime computes the labels
(runtime.labels). For every method, on the trained weights and real frames, the labels equal the
faithful in-graph resize + argmax of the same weights (measured: 0 differing pixels of 24 frames
for each of the four), the host graphs hold no label tail, and a tampered "labels" entry is refused.
"""
from __future__ import annotations

import json

import cv2
import numpy as np
import onnx
import pytest
from oracle import recording_label_grids

from vss_edge import demo_weights
from vss_edge import runtime
from vss_edge.methods import method_spec
from vss_edge.runtime.errors import BundleError
from vss_edge.runtime.preprocess import labels_to_frame

pytest.importorskip("torch")

# method -> (config maker, size, checkpoints): the committed trained weights, at a size that exports quickly.
CASES = {
    "gsvnet": (demo_weights.gsvnet_config, (192, 256), {"checkpoint": demo_weights.GSVNET_PROPAGATION,
                                                        "keyframe_checkpoint": demo_weights.GSVNET_KEYFRAME}),
    "tdnet": (demo_weights.tdnet_config, (144, 192), {"checkpoint": demo_weights.TDNET_CHECKPOINT}),
    "stmg": (demo_weights.stmg_config, (192, 256), {"checkpoint": demo_weights.STMG_CHECKPOINT}),
    "mpvss": (demo_weights.mpvss_config, (135, 180), {"checkpoint": demo_weights.MPVSS_CHECKPOINT}),
}
FRAMES = 24  # GSVNet / MPVSS: key frames 0, 5, ...; STMG: its own scheduler; TDNet: every path 6 times
MAX_DIFFERING = 1e-4  # the bar: >= 99.99% of pixels equal (the rest exact ties)


def _export(method: str, label_path: str, root):
    config, (h, w), checkpoints = CASES[method]
    cfg = config(h, w, label_path=label_path)
    return method_spec(method).export(root / f"{method}-{label_path}", cfg, verify_frames=2,
                                      **{k: str(v) for k, v in checkpoints.items()})


@pytest.mark.parametrize("method", list(CASES))
def test_host_labels_equal_the_graph_labels_on_real_frames(method, tmp_path, sample_frames):
    graph, host = _export(method, "graph", tmp_path), _export(method, "host", tmp_path)
    manifest = json.loads((host / "manifest.json").read_text())
    assert manifest["labels"]["computed"] == "host"
    faithful_graphs = json.loads((graph / "manifest.json").read_text())["graphs"]
    for name, entry in manifest["graphs"].items():
        assert "labels" not in [o["name"] for o in entry["outputs"]], name
        if "labels" in [o["name"] for o in faithful_graphs[name]["outputs"]]:  # the tail is gone, the rest kept
            ops = [[n.op_type for n in onnx.load(str(root / e["file"])).graph.node]
                   for root, e in ((graph, faithful_graphs[name]), (host, entry))]
            assert ops[0].count("ArgMax") == ops[1].count("ArgMax") + 1, name
            assert ops[0].count("Resize") >= ops[1].count("Resize") + (method != "mpvss"), name
    faithful, fast = runtime.load(graph, device="cpu"), runtime.load(host, device="cpu")
    differing = 0
    for frame in sample_frames[:FRAMES]:
        a, b = faithful.step(frame), fast.step(frame)
        assert (a.is_key, a.path) == (b.is_key, b.path)
        differing += int((a.labels != b.labels).sum())
    assert differing <= MAX_DIFFERING * FRAMES * sample_frames[0].shape[0] * sample_frames[0].shape[1]


def test_a_host_bundle_without_a_valid_labels_entry_is_refused(tmp_path):
    bundle = _export("gsvnet", "host", tmp_path)
    path = bundle / "manifest.json"
    raw = json.loads(path.read_text())
    for broken, message in ((dict(raw["labels"], kind="median"), "kind"),
                            (dict(raw["labels"], size=[0, 3]), "'size'"),
                            (dict(raw["labels"], align_corners="yes"), "align_corners")):
        path.write_text(json.dumps({**raw, "labels": broken}))
        with pytest.raises(BundleError, match=message):
            runtime.load(bundle, device="cpu")
    path.write_text(json.dumps({**raw, "labels": {"computed": "graph"}}))  # the graphs have no labels output
    with pytest.raises(BundleError, match=r"'labels'\] missing|labels.*missing"):
        runtime.load(bundle, device="cpu")


def test_mpvss_copy_keeps_the_host_labels_of_its_key_frame(tmp_path, sample_frames):
    """The 'copy' baseline with host labels: every non-key frame repeats its key frame's labels."""
    config, (h, w), checkpoints = CASES["mpvss"]
    bundle = method_spec("mpvss").export(tmp_path / "copy", config(h, w, propagation="copy", label_path="host"),
                                         verify_frames=2, checkpoint=str(checkpoints["checkpoint"]))
    pipe = runtime.load(bundle, device="cpu", interval=3)
    labels = [pipe.step(f).labels for f in sample_frames[:6]]
    assert np.array_equal(labels[0], labels[2]) and np.array_equal(labels[3], labels[5])
    assert not np.array_equal(labels[0], labels[3])


def test_bundles_without_a_labels_entry_compute_labels_in_their_graphs(tmp_path, sample_frames):
    """Bundles exported before label_path have no "labels" entry: their graphs output the labels."""
    bundle = _export("gsvnet", "graph", tmp_path)
    path = bundle / "manifest.json"
    raw = json.loads(path.read_text())
    assert raw.pop("labels") == {"computed": "graph"}
    path.write_text(json.dumps(raw))
    pipe = runtime.load(bundle, device="cpu")
    assert not pipe.manifest.labels_on_host
    assert pipe.step(sample_frames[0]).labels.shape == sample_frames[0].shape[:2]


@pytest.mark.parametrize("method, propagation", [("gsvnet", None), ("mpvss", "copy")])
def test_host_labels_come_at_each_frames_size_as_the_resize_of_the_label_grid(method, propagation, tmp_path,
                                                                             sample_frames):
    """The host computes the labels at the frame's size directly (only the pixels the nearest resize
    keeps): exactly the resized label grid, frame by frame, when the frames change size too (MPVSS's
    copy recomputes its key frame's labels at the new size)."""
    config, (h, w), checkpoints = CASES[method]
    extra = {} if propagation is None else {"propagation": propagation}
    bundle = method_spec(method).export(tmp_path / method, config(h, w, label_path="host", **extra), verify_frames=2,
                                        **{k: str(v) for k, v in checkpoints.items()})
    sized, grid = runtime.load(bundle, device="cpu", interval=3), runtime.load(bundle, device="cpu", interval=3)
    frames = [f if i % 2 else cv2.resize(f, (301, 217)) for i, f in enumerate(sample_frames[:8])]
    grids = {}
    with recording_label_grids(grid, grids):
        for i, frame in enumerate(frames):
            got, expected = sized.step(frame), grid.step(frame)
            assert grids["labels"].shape == (h, w) and got.labels.shape == frame.shape[:2]
            assert np.array_equal(got.labels, labels_to_frame(grids["labels"], frame.shape)), f"frame {i}"
            assert np.array_equal(got.labels, expected.labels), f"frame {i}"
