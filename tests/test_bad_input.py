"""Bad bundles and bad frames: each gives one clear VssEdgeError subclass naming the problem.

Never a raw onnxruntime, json or KeyError exception. Every damaged bundle is a copy of
the shared `gsvnet_bundle` fixture in tmp_path; the fixture itself is never touched.
"""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from vss_edge import runtime
from vss_edge.runtime import BundleError, FrameError
from vss_edge.runtime.manifest import FORMAT_VERSION, sha256_file


@pytest.fixture
def bundle_copy(gsvnet_bundle, tmp_path):
    """A private copy of the test bundle, free to damage."""
    return shutil.copytree(gsvnet_bundle, tmp_path / "bundle")


def edit_manifest(bundle, change) -> None:
    path = bundle / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest, indent=2))


def rehash(bundle, graph: str) -> None:
    """Recompute one graph's sha256 in the manifest, so the hash check passes."""
    def change(m):
        m["graphs"][graph]["sha256"] = sha256_file(bundle / m["graphs"][graph]["file"])

    edit_manifest(bundle, change)


def load_error(bundle, cls=BundleError):
    """The error runtime.load raises for bundle: exactly `cls`, one line."""
    with pytest.raises(cls) as info:
        runtime.load(bundle, device="cpu")
    assert type(info.value) is cls
    assert "\n" not in str(info.value)
    return str(info.value)


# --- bundles -------------------------------------------------------------------------------


def test_bundle_path_does_not_exist(tmp_path):
    msg = load_error(tmp_path / "nope")
    assert "nope" in msg and "does not exist" in msg


def test_bundle_is_a_file(tmp_path):
    path = tmp_path / "bundle.onnx"
    path.write_bytes(b"not a folder")
    msg = load_error(path)
    assert "bundle.onnx" in msg and "not a directory" in msg


def test_bundle_without_manifest(bundle_copy):
    (bundle_copy / "manifest.json").unlink()
    msg = load_error(bundle_copy)
    assert "no manifest.json" in msg


def test_manifest_not_json(bundle_copy):
    (bundle_copy / "manifest.json").write_text("{ this is not json")
    msg = load_error(bundle_copy)
    assert "manifest.json" in msg and "not valid JSON" in msg


def test_manifest_binary_garbage(bundle_copy):
    (bundle_copy / "manifest.json").write_bytes(b"\xff\xfe\x00\x81garbage")
    msg = load_error(bundle_copy)
    assert "not valid JSON" in msg


def test_manifest_wrong_format(bundle_copy):
    edit_manifest(bundle_copy, lambda m: m.update(format="onnx-zoo"))
    msg = load_error(bundle_copy)
    assert "not a vss-edge bundle manifest" in msg and "format" in msg


def test_manifest_json_but_not_an_object(bundle_copy):
    (bundle_copy / "manifest.json").write_text("[1, 2, 3]")
    assert "not a vss-edge bundle manifest" in load_error(bundle_copy)


def test_unknown_format_version_says_which_version_is_read(bundle_copy):
    edit_manifest(bundle_copy, lambda m: m.update(format_version=99))
    msg = load_error(bundle_copy)
    assert "format_version 99" in msg
    assert f"reads version {FORMAT_VERSION}" in msg


def test_graph_file_missing(bundle_copy):
    (bundle_copy / "flow.onnx").unlink()
    msg = load_error(bundle_copy)
    assert "flow.onnx" in msg and "missing" in msg


def test_graph_file_is_a_folder(bundle_copy):
    (bundle_copy / "flow.onnx").unlink()
    (bundle_copy / "flow.onnx").mkdir()
    msg = load_error(bundle_copy)
    assert "flow.onnx" in msg and "not a file" in msg


def test_graph_file_one_byte_changed(bundle_copy):
    path = bundle_copy / "propagation.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    msg = load_error(bundle_copy)
    assert "propagation.onnx" in msg and "sha256" in msg


def test_declared_input_shape_edited_is_caught_by_session_check(bundle_copy):
    """Manifest edited, hash recomputed (it passes): only the session I/O check can catch it."""
    def change(m):
        for t in m["graphs"]["flow"]["inputs"]:
            if t["name"] == "prev_image_small":
                t["shape"] = [1, 3, 8, 16]

    edit_manifest(bundle_copy, change)
    rehash(bundle_copy, "flow")
    msg = load_error(bundle_copy)
    assert "flow.onnx" in msg and "inputs" in msg and "do not match the manifest" in msg
    assert "prev_image_small" in msg


def test_graph_input_edited_and_rehashed_is_caught_by_session_check(bundle_copy):
    """The graph file itself is edited (a dynamic batch dim) and re-hashed: ORT loads it, the I/O check does not."""
    import onnx

    path = bundle_copy / "flow.onnx"
    model = onnx.load(path)
    (inp,) = [i for i in model.graph.input if i.name == "prev_image_small"]
    inp.type.tensor_type.shape.dim[0].dim_param = "batch"
    onnx.save(model, path)
    rehash(bundle_copy, "flow")
    msg = load_error(bundle_copy)
    assert "flow.onnx" in msg and "do not match the manifest" in msg and "batch" in msg


def test_state_shape_edited_is_inconsistent(bundle_copy):
    def change(m):
        for t in m["state"]:
            if t["name"] == "image_small":
                t["shape"] = [1, 3, 8, 16]

    edit_manifest(bundle_copy, change)
    msg = load_error(bundle_copy)
    assert "state 'image_small'" in msg and "[1, 3, 8, 16]" in msg


def test_input_resolution_edited_is_inconsistent(bundle_copy):
    edit_manifest(bundle_copy, lambda m: m["input"].update(height=64))
    msg = load_error(bundle_copy)
    assert "frame input 'image'" in msg and "64x256" in msg


def test_graph_file_garbage_with_matching_hash(bundle_copy):
    (bundle_copy / "keyframe.onnx").write_bytes(os.urandom(4096))
    rehash(bundle_copy, "keyframe")
    msg = load_error(bundle_copy)
    assert "keyframe.onnx" in msg and "cannot be loaded by ONNX Runtime" in msg


def test_unknown_method(bundle_copy):
    edit_manifest(bundle_copy, lambda m: m.update(method="segformer"))  # (mpvss is known now)
    msg = load_error(bundle_copy)
    assert "segformer" in msg and "gsvnet" in msg and "mpvss" in msg  # names the method and the known ones


def test_graph_the_method_needs_is_not_listed(bundle_copy):
    edit_manifest(bundle_copy, lambda m: m["graphs"].pop("propagation"))
    msg = load_error(bundle_copy)
    assert "propagation" in msg and "gsvnet" in msg


def test_bad_palette(bundle_copy):
    edit_manifest(bundle_copy, lambda m: m["classes"]["palette"].__setitem__(0, "red"))
    assert "classes.palette[0]" in load_error(bundle_copy)


# --- frames --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pipe(gsvnet_bundle):
    return runtime.load(gsvnet_bundle, device="cpu", threads=1)


@pytest.mark.parametrize("frame, phrases", [
    ([[[0, 0, 0]] * 16] * 16, ["numpy array", "list"]),
    (np.zeros((64, 64, 3), np.float32), ["dtype", "uint8", "float32"]),
    (np.zeros((64, 64), np.uint8), ["shape", "(64, 64)"]),
    (np.zeros((64, 64, 4), np.uint8), ["3 channels", "got 4", "(64, 64, 4)"]),
    (np.zeros((1, 1, 3), np.uint8), ["too small", "1x1", "(1, 1, 3)"]),
], ids=["list", "float32", "grayscale-2d", "4-channel", "1x1"])
def test_bad_frame(pipe, frame, phrases):
    with pytest.raises(FrameError) as info:
        pipe.step(frame)
    assert type(info.value) is FrameError
    for phrase in phrases:
        assert phrase in str(info.value)


def test_bad_frame_leaves_pipeline_usable(pipe, sample_frames):
    pipe.reset()
    pipe.step(sample_frames[0])
    with pytest.raises(FrameError):
        pipe.step(np.zeros((64, 64), np.uint8))
    result = pipe.step(sample_frames[1])
    assert result.index == 1 and not result.is_key


@pytest.mark.parametrize("size", [(576, 768), (100, 50), (128, 256)])
def test_frames_of_any_size_give_labels_at_frame_size(pipe, sample_frames, size):
    import cv2

    h, w = size
    pipe.reset()
    for i, frame in enumerate(sample_frames[:3]):  # a key frame, then propagated ones
        frame = cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA)
        result = pipe.step(frame)
        assert result.is_key == (i == 0)
        assert result.labels.shape == (h, w) and result.labels.dtype == np.uint8
        assert int(result.labels.max()) < len(pipe.class_names)


# --- graphs that do not fit what the method's program feeds them ---------------------------


@pytest.mark.parametrize("a, b", [("flow", "propagation"), ("keyframe", "flow")])
def test_swapped_graph_entries_are_refused_at_load(bundle_copy, a, b):
    """Each entry still matches its own file (hash, session I/O): before, the first frame died in ONNX Runtime."""
    def swap(m):
        m["graphs"][a], m["graphs"][b] = m["graphs"][b], m["graphs"][a]

    edit_manifest(bundle_copy, swap)
    msg = load_error(bundle_copy)
    assert f"graph '{a}' ({b}.onnx)" in msg and "role" in msg and "swapped" in msg


def test_graph_role_edited(bundle_copy):
    edit_manifest(bundle_copy, lambda m: m["graphs"]["flow"].update(role="keyframe_net"))
    msg = load_error(bundle_copy)
    assert "graph 'flow'" in msg and "'keyframe_net'" in msg and "flow_net" in msg


def _rename_in_graph(bundle, graph: str, old: str, new: str, kind: str) -> None:
    """Rename a graph input or output in the .onnx file and in the manifest, and re-hash: every
    check on the file itself passes."""
    import onnx

    path = bundle / f"{graph}.onnx"
    model = onnx.load(path)
    for value in (model.graph.input if kind == "inputs" else model.graph.output):
        if value.name == old:
            value.name = new
    for node in model.graph.node:
        node.input[:] = [new if n == old else n for n in node.input]
        node.output[:] = [new if n == old else n for n in node.output]
    onnx.save(model, path)

    def change(m):
        for t in m["graphs"][graph][kind]:
            if t["name"] == old:
                t["name"] = new

    edit_manifest(bundle, change)
    rehash(bundle, graph)


def test_graph_input_the_program_feeds_is_renamed(bundle_copy):
    _rename_in_graph(bundle_copy, "flow", "prev_image_small", "previous_small", "inputs")
    msg = load_error(bundle_copy)
    assert "graph 'flow' (flow.onnx)" in msg and "previous_small" in msg and "prev_image_small" in msg


def test_graph_output_the_program_reads_is_renamed(bundle_copy):
    _rename_in_graph(bundle_copy, "propagation", "logits", "refined", "outputs")
    msg = load_error(bundle_copy)
    assert "graph 'propagation'" in msg and "['logits'] missing" in msg


def test_palette_and_names_shorter_than_the_classes(bundle_copy):
    """Names and palette agree with each other but not with the 19 classes: before, the overlay died."""
    def shorten(m):
        m["classes"]["names"].pop()
        m["classes"]["palette"].pop()

    edit_manifest(bundle_copy, shorten)
    msg = load_error(bundle_copy)
    assert "18 entries" in msg and "19 classes" in msg and "config.num_classes" in msg


def test_class_count_edited_to_match_a_short_palette(bundle_copy):
    def shorten(m):
        m["classes"]["names"].pop()
        m["classes"]["palette"].pop()
        m["config"]["num_classes"] = 18

    edit_manifest(bundle_copy, shorten)
    msg = load_error(bundle_copy)
    assert "output 'logits'" in msg and "19" in msg and "num_classes 18" in msg
