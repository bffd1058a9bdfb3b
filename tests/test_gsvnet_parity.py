"""ONNX vs PyTorch on real video: per graph, and the whole pipeline frame by frame."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from vss_edge import runtime
from vss_edge.exporters.gsvnet import example_inputs
from vss_edge.exporters.onnx_export import compare_outputs
from vss_edge.runtime.schedulers import FixedInterval
from vss_edge.reference import GSVNetReference

IO = {
    "keyframe": (["image"], ["logits", "labels", "image_small"]),
    "flow": (["image", "prev_image_small"], ["flow", "image_small"]),
    "propagation": (["prev_logits", "image_small", "flow"], ["logits", "labels"]),
}


@pytest.mark.parametrize("graph", ["keyframe", "flow", "propagation"])
def test_each_graph_matches_pytorch_on_real_frames(graph, gsvnet_model, gsvnet_bundle):
    # Frames 20.. of the clip: not the frames the exporter verified on.
    from vss_edge.video import open_source, sample_clip_path

    with open_source(sample_clip_path()) as src:
        frames = [f for i, f in enumerate(src) if 20 <= i < 26]
    from vss_edge.runtime.preprocess import to_graph_input

    cfg = gsvnet_model.cfg
    tensors = [torch.from_numpy(to_graph_input(f, cfg.height, cfg.width)) for f in frames]
    examples = example_inputs(gsvnet_model, tensors)[graph]
    module = gsvnet_model.graphs()[graph]
    session = ort.InferenceSession(str(gsvnet_bundle / f"{graph}.onnx"), providers=["CPUExecutionProvider"])
    inputs, outputs = IO[graph]
    for ex in examples:
        with torch.no_grad():
            expected = [t.numpy() for t in module(*ex)]
        got = session.run(outputs, {n: t.numpy() for n, t in zip(inputs, ex)})
        for name, g, e in zip(outputs, got, expected):
            err, ok = compare_outputs(g, e)
            assert ok, f"{graph}.{name}: error {err}"


def test_pipeline_labels_equal_reference_on_40_frames(gsvnet_model, gsvnet_bundle, sample_frames):
    pipe = runtime.load(gsvnet_bundle, device="cpu", interval=5)
    reference = GSVNetReference(gsvnet_model, FixedInterval(5))
    frames = sample_frames[:40]
    keys = []
    for i, frame in enumerate(frames):
        result = pipe.step(frame)
        ref_labels, ref_key = reference.step(frame)
        assert result.is_key == ref_key
        assert result.labels.shape == frame.shape[:2] and result.labels.dtype == np.uint8
        agreement = float(np.mean(result.labels == ref_labels))
        assert agreement >= 0.999, f"frame {i}: only {agreement:.4%} of pixels agree"
        keys.append(result.is_key)
    assert keys[:6] == [True, False, False, False, False, True]
    # The labels are not trivially constant: several classes appear.
    assert len(np.unique(result.labels)) > 1


def test_io_binding_path_gives_the_same_labels(gsvnet_bundle, sample_frames):
    plain = runtime.load(gsvnet_bundle, device="cpu")
    bound = runtime.load(gsvnet_bundle, device="cpu", io_binding=True)
    for frame in sample_frames[:7]:
        assert np.array_equal(plain.step(frame).labels, bound.step(frame).labels)


def test_interval_override_and_reset(gsvnet_bundle, sample_frames):
    pipe = runtime.load(gsvnet_bundle, device="cpu", interval=2)
    assert [pipe.step(f).is_key for f in sample_frames[:5]] == [True, False, True, False, True]
    pipe.reset()
    first = pipe.step(sample_frames[0])
    assert first.is_key and first.index == 0
    assert set(first.timings_ms) == {"keyframe"}
    second = pipe.step(sample_frames[1])
    assert set(second.timings_ms) == {"flow", "propagation"}


def test_custom_scheduler_protocol(gsvnet_bundle, sample_frames):
    class EveryThird:
        def reset(self):
            pass

        def is_key(self, frame):
            return frame.index % 3 == 0

    pipe = runtime.load(gsvnet_bundle, device="cpu", scheduler=EveryThird())
    assert [pipe.step(f).is_key for f in sample_frames[:7]] == [True, False, False, True, False, False, True]


def test_export_verifies_on_real_frames(gsvnet_bundle):
    import json

    manifest = json.loads((gsvnet_bundle / "manifest.json").read_text())
    assert set(manifest["graphs"]) == {"keyframe", "flow", "propagation"}
    for g in manifest["graphs"].values():
        assert g["verified_max_error"], "the exporter must record its verification"
    assert manifest["provenance"]["ir_version"] <= 8


def test_bisenet_keyframe_net_with_other_classes_and_label_scale(tmp_path, sample_frames):
    from vss_edge.exporters.gsvnet import build_model, export_gsvnet
    from vss_edge.configs import GSVNetConfig

    cfg = GSVNetConfig(height=64, width=128, keyframe_net="bisenet", num_classes=5, label_scale=0.5)
    model, _ = build_model(cfg, seed=1)
    bundle = export_gsvnet(tmp_path / "bisenet", cfg, seed=1)
    pipe = runtime.load(bundle, device="cpu", interval=3)
    reference = GSVNetReference(model, FixedInterval(3))
    for i, frame in enumerate(sample_frames[:12]):
        result = pipe.step(frame)
        ref_labels, _ = reference.step(frame)
        assert result.labels.max() < 5
        assert float(np.mean(result.labels == ref_labels)) >= 0.999, f"frame {i}"
