"""README claims that no other test checks: `vss-edge demo` end to end; the bundle is written only
when every graph matches, and onnxsim's result only if it still matches; ONNX Runtime's labels are
PyTorch eager's; the provider log line; a corrupt checkpoint through the CLI; the session check on
graph outputs."""
from __future__ import annotations

import json
import logging
import shutil
import sys
import types

import numpy as np
import onnx
import pytest
import torch

from oracle import decoded_frames
from vss_edge import demo_weights, runtime
from vss_edge.cli import main
from vss_edge.configs import GSVNetConfig
from vss_edge.exporters import onnx_export
from vss_edge.exporters.gsvnet import export_gsvnet
from vss_edge.runtime.manifest import load_manifest, sha256_file

TINY = GSVNetConfig(height=64, width=128)

# --------------------------------------------------------------------------- vss-edge demo


def test_demo_exports_the_trained_bundle_and_writes_a_60_frame_overlay(demo_run):
    """README "Two commands": `vss-edge demo --out out/demo` exports a GSVNet bundle (the trained
    weights), segments the sample clip and writes an overlay video (conftest's `demo_run` ran it)."""
    manifest = load_manifest(demo_run / "bundle")
    assert manifest.method == "gsvnet" and (manifest.height, manifest.width) == (demo_weights.HEIGHT, demo_weights.WIDTH)
    assert demo_weights.exported_in(manifest)  # the committed weights, not random ones
    assert decoded_frames(demo_run / "overlay.mp4") == 60  # every frame of the sample clip, decoded back


# --------------------------------------------------------------------------- export: written only when it matches


def _listing(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_no_bundle_is_written_when_one_graph_does_not_match(tmp_path, monkeypatch):
    """The propagation graph (the last one exported) fails verification: export raises, and nothing
    at all is left in the output's folder (no bundle, no half bundle, no temporary folder)."""
    real_verify = onnx_export.verify

    def verify_failing_propagation(model, examples, expected):
        worst, failures = real_verify(model, examples, expected)
        if "prev_logits" in examples[0]:
            failures = failures + ["example 0, output 'labels': error 0.5"]
        return worst, failures

    monkeypatch.setattr(onnx_export, "verify", verify_failing_propagation)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(onnx_export.ExportError, match="graph 'propagation' does not match PyTorch"):
        export_gsvnet(out / "bundle", TINY, verify_frames=2, simplify=False)
    assert _listing(out) == []


def test_a_failed_export_leaves_an_existing_bundle_as_it_was(gsvnet_bundle, tmp_path, monkeypatch):
    target = tmp_path / "bundle"
    shutil.copytree(gsvnet_bundle, target)
    before = {p: sha256_file(target / p) for p in _listing(target)}
    monkeypatch.setattr(onnx_export, "verify", lambda model, examples, expected: ({}, ["example 0: error 1"]))
    with pytest.raises(onnx_export.ExportError):
        export_gsvnet(target, TINY, verify_frames=2, simplify=False)
    assert {p: sha256_file(target / p) for p in _listing(target)} == before
    assert _listing(tmp_path) == ["bundle"] + [f"bundle/{p}" for p in before]


def _fake_onnxsim(simplify) -> types.ModuleType:
    module = types.ModuleType("onnxsim")
    module.simplify = simplify
    module.__version__ = "fake"
    return module


def test_onnxsim_failing_keeps_the_unsimplified_graphs(tmp_path, monkeypatch):
    def boom(model, check_n=0):
        raise RuntimeError("boom")

    monkeypatch.setitem(sys.modules, "onnxsim", _fake_onnxsim(boom))
    with pytest.warns(UserWarning, match="onnxsim could not simplify graph 'keyframe': boom"):
        bundle = export_gsvnet(tmp_path / "bundle", TINY, verify_frames=2)
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert {g["simplified_with_onnxsim"] for g in manifest["graphs"].values()} == {False}
    frame = np.zeros((64, 128, 3), np.uint8)
    assert runtime.load(bundle, device="cpu").step(frame).labels.shape == (64, 128)


def test_onnxsim_result_is_kept_only_if_it_still_matches(tmp_path, monkeypatch):
    """A 'simplifier' that marks every graph it returns, and breaks the keyframe graph (its first
    convolution's weights doubled): the flow and propagation graphs are the marked ones, the
    keyframe graph is the unsimplified export."""
    from onnx import numpy_helper

    def simplify(model, check_n=0):
        out = onnx.ModelProto()
        out.CopyFrom(model)
        out.doc_string = "fake-simplified"
        if any(i.name == "image" for i in out.graph.input) and len(out.graph.input) == 1:  # the keyframe graph
            inits = {t.name: t for t in out.graph.initializer}
            conv = next(n for n in out.graph.node if n.op_type == "Conv" and n.input[1] in inits)
            w = numpy_helper.to_array(inits[conv.input[1]])
            inits[conv.input[1]].CopyFrom(numpy_helper.from_array(2 * w, conv.input[1]))
        return out, True

    monkeypatch.setitem(sys.modules, "onnxsim", _fake_onnxsim(simplify))
    bundle = export_gsvnet(tmp_path / "bundle", TINY, verify_frames=2)
    manifest = json.loads((bundle / "manifest.json").read_text())
    simplified = {n: g["simplified_with_onnxsim"] for n, g in manifest["graphs"].items()}
    assert simplified == {"keyframe": False, "flow": True, "propagation": True}
    docs = {n: onnx.load(str(bundle / f"{n}.onnx")).doc_string for n in simplified}
    assert docs["flow"] == docs["propagation"] == "fake-simplified" and docs["keyframe"] != "fake-simplified"
    assert max(manifest["graphs"]["keyframe"]["verified_max_error"].values()) <= 1e-3


# --------------------------------------------------------------------------- ORT vs PyTorch eager


@pytest.fixture(scope="module")
def trained_gsvnet_graph_labels(tmp_path_factory):
    """The committed GSVNet demo weights at 288x384 exported with label_path 'graph': the keyframe
    graph the README's figure measured (benchmarks/gsvnet_speed.py, "graph labels"), which ends in
    the bilinear resize + argmax and outputs the labels itself."""
    return export_gsvnet(tmp_path_factory.mktemp("trained_graph_labels") / "gsvnet",
                         demo_weights.gsvnet_config(label_path="graph"),
                         checkpoint=str(demo_weights.GSVNET_PROPAGATION),
                         keyframe_checkpoint=str(demo_weights.GSVNET_KEYFRAME), verify_frames=2)


@pytest.mark.parametrize("label_path", ["graph", "host"])
def test_keyframe_graph_labels_are_pytorch_eagers(label_path, trained_gsvnet, trained_gsvnet_model, sample_frames,
                                                  request):
    """README "ONNX Runtime vs PyTorch eager, GSVNet keyframe graph: labels identical", on every
    fourth frame of the real clip with the trained weights: ONNX Runtime's labels equal PyTorch
    eager's (the keyframe module's in-graph resize + argmax), pixel for pixel, with no tie allowance.
    'graph': the figure's graph (label_path 'graph'), its "labels" output; 'host': the default bundle
    (`vss-edge demo`'s), whose keyframe graph ends at its logits, labelled on the host as its
    manifest's "labels" entry says (runtime.labels). Measured: identical on all 15 frames, both ways."""
    import onnxruntime as ort

    from vss_edge.runtime.labels import label_tail
    from vss_edge.runtime.preprocess import to_graph_input

    bundle = request.getfixturevalue("trained_gsvnet_graph_labels") if label_path == "graph" else trained_gsvnet
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["labels"]["computed"] == label_path, manifest["labels"]
    tail = label_tail(manifest["labels"])  # None: the graph outputs the labels
    output = "labels" if tail is None else "logits"
    session = ort.InferenceSession(str(bundle / "keyframe.onnx"), providers=["CPUExecutionProvider"])
    assert ("labels" in [o.name for o in session.get_outputs()]) == (tail is None)
    graph = trained_gsvnet_model.graphs()["keyframe"]
    for i, frame in enumerate(sample_frames[::4]):
        image = to_graph_input(frame, demo_weights.HEIGHT, demo_weights.WIDTH)
        (got,) = session.run([output], {"image": image})
        if tail is not None:
            got = tail(got)[None]
        with torch.no_grad():
            expected = graph(torch.from_numpy(image))[1].numpy()
        assert got.shape == expected.shape and got.dtype == expected.dtype == np.uint8, (got.shape, got.dtype)
        assert np.array_equal(got, expected), f"frame {4 * i}: {np.count_nonzero(got != expected)} labels differ"
        assert len(np.unique(expected)) > 1


# --------------------------------------------------------------------------- provider log line


def _provider_lines(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "vss_edge" and "running on" in r.getMessage()]


def test_one_log_line_says_which_provider_runs_and_why(gsvnet_bundle, caplog):
    """README: "One log line says which execution provider runs and why" (the line may go on to
    say more, e.g. which thread pools)."""
    from vss_edge.runtime.providers import cuda_unavailable_reason

    caplog.set_level(logging.INFO, logger="vss_edge")
    runtime.load(gsvnet_bundle, device="cpu")
    (line,) = _provider_lines(caplog)
    assert line.startswith("vss-edge: running on CPUExecutionProvider (CPU requested"), line
    caplog.clear()
    pipe = runtime.load(gsvnet_bundle, device="auto")
    (line,) = _provider_lines(caplog)
    reason = cuda_unavailable_reason()
    if reason is not None:  # no CUDA build or no GPU (this machine): CPU, and why not CUDA
        assert line.startswith(f"vss-edge: running on CPUExecutionProvider (CUDA: {reason}"), line
    elif pipe.device == "cuda":
        assert line.startswith("vss-edge: running on CUDAExecutionProvider"), line
    else:  # a GPU whose CUDA provider did not load
        assert line.startswith("vss-edge: running on CPUExecutionProvider (CUDA: the CUDA provider did not load"), line


# --------------------------------------------------------------------------- corrupt checkpoints


def _truncated(source, path):
    data = source.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


CORRUPT = [
    ("gsvnet", "--checkpoint", demo_weights.GSVNET_PROPAGATION, ["--height", "64", "--width", "128"]),
    ("gsvnet", "--keyframe-checkpoint", demo_weights.GSVNET_KEYFRAME, ["--height", "64", "--width", "128"]),
    ("stmg", "--checkpoint", demo_weights.STMG_CHECKPOINT, ["--height", "64", "--width", "128"]),
    ("stmg", "--ddrnet-checkpoint", demo_weights.STMG_CHECKPOINT, ["--height", "64", "--width", "128"]),
    ("tdnet", "--checkpoint", demo_weights.TDNET_CHECKPOINT, ["--height", "64", "--width", "96"]),
    ("mpvss", "--checkpoint", demo_weights.MPVSS_CHECKPOINT, ["--variant", "small", "--height", "64", "--width", "96"]),
    ("mpvss", "--mask2former-checkpoint", None, ["--variant", "small", "--height", "64", "--width", "96"]),
]


@pytest.mark.parametrize("method, flag, source, size", CORRUPT, ids=[f"{m}{f}" for m, f, _, _ in CORRUPT])
def test_a_corrupt_checkpoint_is_one_line_and_exit_2(method, flag, source, size, tmp_path, capsys):
    """A checkpoint that exists but is cut in half (or, for the Mask2Former .pkl, not a pickle):
    one line naming the file, exit 2, no traceback, nothing exported."""
    if source is None:
        bad = tmp_path / "m2f.pkl"
        bad.write_bytes(b"\x80\x04\x95" + bytes(range(256)) * 8)
    else:
        bad = _truncated(source, tmp_path / f"cut{source.suffix}")
    out = tmp_path / "bundle"
    assert main(["-q", "export", method, "--out", str(out), *size, flag, str(bad)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and bad.name in err and "Traceback" not in err, err
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == [bad.name]


# --------------------------------------------------------------------------- session check on outputs


def test_a_graph_whose_outputs_differ_from_the_manifest_is_refused(gsvnet_bundle, tmp_path):
    """The flow graph file gets a third output (an intermediate value) and its hash is updated in
    the manifest, so hashes and the manifest's own consistency pass: the session's check of the
    graph's real outputs against the manifest refuses it, naming the file."""
    bundle = tmp_path / "bundle"
    shutil.copytree(gsvnet_bundle, bundle)
    path = bundle / "flow.onnx"
    model = onnx.load(str(path))
    inner = next(n for n in model.graph.node if n.op_type == "Conv").output[0]
    model.graph.output.append(onnx.helper.make_empty_tensor_value_info(inner))
    onnx.save(model, str(path))
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["graphs"]["flow"]["sha256"] = sha256_file(path)
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2))
    with pytest.raises(runtime.BundleError, match=r"flow\.onnx.*outputs.*do not match the manifest") as e:
        runtime.load(bundle, device="cpu")
    assert inner in str(e.value)
