"""TDNet: ONNX pipeline vs the PyTorch reference on real video, per path and frame by frame."""
from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

from vss_edge import runtime
from vss_edge.exporters.onnx_export import compare_outputs, real_frames
from vss_edge.exporters.tdnet import build_model, example_inputs, export_tdnet
from vss_edge.runtime.errors import VssEdgeError
from vss_edge.runtime.schedulers import FixedInterval, RoundRobin
from vss_edge.configs import TDNetConfig
from vss_edge.models.tdnet.graphs import OUTPUTS, input_names, path_graphs
from vss_edge.reference import TDNetReference

SMALL = dict(height=96, width=160, variant="td4_psp18")  # feature size not divisible by 6: exact pooling used


@pytest.fixture(scope="module")
def td4(tmp_path_factory):
    cfg = TDNetConfig(**SMALL)
    model, _ = build_model(cfg, seed=3)
    bundle = export_tdnet(tmp_path_factory.mktemp("tdnet") / "td4", cfg, seed=3)
    return model, bundle


def test_each_path_graph_matches_pytorch_on_later_frames(td4):
    model, bundle = td4
    frames = real_frames(model.cfg.height, model.cfg.width, None, 20)[12:20]  # not the export's frames
    examples = example_inputs(model, frames)
    for name, module in path_graphs(model).items():
        session = ort.InferenceSession(str(bundle / f"{name}.onnx"), providers=["CPUExecutionProvider"])
        for args in examples[name]:
            with torch.no_grad():
                expected = [t.numpy() for t in module(*args)]
            got = session.run(OUTPUTS, {n: t.numpy() for n, t in zip(input_names(model.cfg.queue_length), args)})
            for out, g, e in zip(OUTPUTS, got, expected):
                err, ok = compare_outputs(g, e)
                assert ok, f"{name}.{out}: error {err}"


def test_pipeline_equals_reference_including_warm_up(td4, sample_frames):
    model, bundle = td4
    pipe = runtime.load(bundle, device="cpu")
    reference = TDNetReference(model, RoundRobin(4))
    for i, frame in enumerate(sample_frames[:24]):
        result = pipe.step(frame)
        ref_labels, path = reference.step(frame)
        assert path == i % 4 and set(result.timings_ms) == {f"path{path}"}
        assert not result.is_key
        agreement = float(np.mean(result.labels == ref_labels))
        assert agreement >= 0.999, f"frame {i} (path {path}): {agreement:.4%}"


def test_reset_starts_the_warm_up_again(td4, sample_frames):
    model, bundle = td4
    pipe = runtime.load(bundle, device="cpu")
    first = [pipe.step(f).labels for f in sample_frames[:5]]
    pipe.reset()
    again = [pipe.step(f).labels for f in sample_frames[:5]]
    assert all(np.array_equal(a, b) for a, b in zip(first, again))


def test_manifest_describes_paths_and_state(td4):
    _, bundle = td4
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["method"] == "tdnet"
    assert sorted(manifest["graphs"]) == ["path0", "path1", "path2", "path3"]
    assert {g["role"] for g in manifest["graphs"].values()} == {"path_net"}
    assert manifest["scheduler"] == {"name": "round_robin", "params": {"paths": 4}}
    assert [s["name"] for s in manifest["state"]] == ["q", "k", "v"]


def test_key_frame_scheduler_does_not_fit_tdnet(td4):
    _, bundle = td4
    with pytest.raises(VssEdgeError, match="needs reset\\(\\) and path"):
        runtime.load(bundle, device="cpu", scheduler=FixedInterval(5))


def test_td2_psp50_two_paths(tmp_path, sample_frames):
    cfg = TDNetConfig(height=64, width=96, variant="td2_psp50", num_classes=7)
    model, _ = build_model(cfg, seed=5)
    bundle = export_tdnet(tmp_path / "td2", cfg, seed=5)
    pipe = runtime.load(bundle, device="cpu")
    reference = TDNetReference(model, RoundRobin(2))
    for i, frame in enumerate(sample_frames[:6]):
        result = pipe.step(frame)
        ref_labels, _ = reference.step(frame)
        assert float(np.mean(result.labels == ref_labels)) >= 0.999, f"frame {i}"


def test_export_at_the_official_769x1537(tmp_path, sample_frames):
    """The paper's resolution: LayerNorm [97, 193] as in the official model; runs in the runtime."""
    cfg = TDNetConfig(height=769, width=1537, variant="td4_psp18")
    bundle = export_tdnet(tmp_path / "td4_full", cfg, seed=0)
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert {s["name"]: s["shape"] for s in manifest["state"]} == {
        "q": [1, 25 * 49, 64], "k": [1, 25 * 49, 64], "v": [1, 25 * 49, 512]}
    logits = [o for o in manifest["graphs"]["path0"]["outputs"] if o["name"] == "logits"][0]
    assert logits["shape"] == [1, 19, 97, 193]
    pipe = runtime.load(bundle, device="cpu")
    result = pipe.step(sample_frames[0])
    assert result.labels.shape == (576, 768)


def test_state_shape_mismatch_is_refused(td4, tmp_path):
    import shutil

    from vss_edge.runtime.errors import BundleError

    _, bundle = td4
    bad = tmp_path / "bad"
    shutil.copytree(bundle, bad)
    manifest = json.loads((bad / "manifest.json").read_text())
    manifest["state"][2]["shape"][1] += 1  # v: one stored position more than the graphs produce
    (bad / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="state"):
        runtime.load(bad, device="cpu")


def test_cli_run_and_profile_work_unchanged(td4, tmp_path, capsys):
    from vss_edge.cli import main
    from vss_edge.video import sample_clip_path

    _, bundle = td4
    out = tmp_path / "run"
    assert main(["-q", "run", str(bundle), str(sample_clip_path()), "--out", str(out), "--max-frames", "6"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames_read"] == summary["frames_written"] == 6 and summary["key_frames"] == 0
    assert main(["-q", "profile", str(bundle), str(sample_clip_path()), "--max-frames", "8"]) == 0
    table = capsys.readouterr().out
    assert all(f"| path{p} |" in table for p in range(4))
