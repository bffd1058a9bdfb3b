"""OpenVINO as a second backend: the same labels as ONNX Runtime at f32 for every method, bf16's cost
reported by `check`, the choice recorded in summaries, state carried across a change of backend,
`auto` within its floor, one line without the package, and the INT8 pattern that crashes OpenVINO."""
from __future__ import annotations

import json
import logging
import shutil
import sys

import numpy as np
import pytest

from int8_graphs import left_constant_matmul_graph, padded_pool_qdq_graph

from vss_edge import demo_weights, runtime
from vss_edge.cli import main
from vss_edge.runtime.errors import VssEdgeError
from vss_edge.runtime.sources import sample_clip_path

pytest.importorskip("openvino")  # the dev extra has it; a runtime-only install skips these

DEMO = str(demo_weights.DEMO_BUNDLE)
FRAMES = 12  # key and non-key frames at interval 5 (and every TDNet path three times)


@pytest.fixture(scope="module")
def mpvss_small(tmp_path_factory):
    """A seeded MPVSS (variant small) at 120x213, the query-based flow."""
    from vss_edge.configs import MPVSSConfig
    from vss_edge.exporters.mpvss import export_mpvss

    return export_mpvss(tmp_path_factory.mktemp("mpvss_ov") / "bundle",
                        MPVSSConfig(height=120, width=213, variant="small", num_classes=19), seed=0,
                        verify_frames=1, simplify=False)


@pytest.fixture(scope="module")
def bundles(request, mpvss_small):
    """method -> a bundle: the trained GSVNet and STMG demo weights, seeded TDNet and MPVSS."""
    return {"gsvnet": request.getfixturevalue("trained_gsvnet"), "stmg": request.getfixturevalue("trained_stmg")[1],
            "tdnet": request.getfixturevalue("tdnet_small")[1], "mpvss": mpvss_small}


def _agreement(a: list, b: list) -> float:
    return sum(int(np.count_nonzero(x == y)) for x, y in zip(a, b)) / sum(x.size for x in a)


def _labels(pipe, frames) -> list:
    pipe.reset()
    return [pipe.step(f).labels for f in frames]


@pytest.mark.parametrize("method", ["gsvnet", "stmg", "tdnet", "mpvss"])
def test_openvino_f32_gives_onnxruntime_fp32_labels(method, bundles, sample_frames):
    bundle = bundles[method]
    ort_pipe = runtime.load(bundle, device="cpu", threads=2)
    ov_pipe = runtime.load(bundle, backend="openvino", threads=2)
    assert {s.precision for s in ov_pipe.sessions.values()} == {"f32"}  # never a silent bf16
    frames = sample_frames[20:20 + FRAMES]
    agreement = _agreement(_labels(ort_pipe, frames), _labels(ov_pipe, frames))
    print(f"{method}: OpenVINO f32 pixel agreement with ONNX Runtime FP32 {agreement:.6f}")
    assert agreement >= 0.9999  # measured 1.0 for all four on the trained 288x384 bundles


@pytest.mark.parametrize("method", ["gsvnet", "stmg", "tdnet", "mpvss"])
def test_state_survives_a_change_of_backend(method, bundles, sample_frames):
    """Frames 0..3 on ONNX Runtime, 4..7 on OpenVINO (the program's state handed over as it is), 8..11
    on ONNX Runtime again: the labels of ONNX Runtime alone (key frames at 0, 5, 10: the switches land
    inside intervals, where the recurrent state matters)."""
    bundle = bundles[method]
    ort_pipe = runtime.load(bundle, device="cpu", threads=2, interval=5 if method != "tdnet" else None)
    ov_sessions = runtime.load(bundle, backend="openvino", threads=2).sessions
    frames = sample_frames[20:20 + FRAMES]
    alone = _labels(ort_pipe, frames)
    ort_pipe.reset()
    mixed = [ort_pipe.step(f).labels for f in frames[:4]]
    with ort_pipe.wrapped_sessions(lambda name, session: ov_sessions[name]):
        mixed += [ort_pipe.step(f).labels for f in frames[4:8]]
    mixed += [ort_pipe.step(f).labels for f in frames[8:]]
    assert _agreement(alone, mixed) >= 0.9999


def test_check_reports_what_bf16_costs(tmp_path):
    out = tmp_path / "check.json"
    assert main(["-q", "check", DEMO, DEMO, str(sample_clip_path()), "--frames", "30:40", "--threads", "2",
                 "--candidate-backend", "openvino", "--candidate-precision", "bf16", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["reference"]["backend"] == "onnxruntime f32"
    assert result["candidate"]["backend"] == "openvino bf16"
    assert result["graphs"]["keyframe"]["candidate_backend"] == "openvino bf16"
    miou = result["end_to_end"]["agreement"]["miou"]
    print(f"demo bundle, bf16 vs FP32: mIoU agreement {miou:.4f}")
    assert 0.98 <= miou <= 1.0  # measured 0.9968 on frames 30:45
    assert "(openvino bf16)" in out.with_suffix(".md").read_text()


def test_backend_is_recorded_in_run_and_profile_summaries(tmp_path, capsys):
    clip = str(sample_clip_path())
    assert main(["-q", "run", DEMO, clip, "--out", str(tmp_path / "run"), "--backend", "openvino",
                 "--precision", "bf16", "--max-frames", "6", "--threads", "2"]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["backends"]["backend"] == "openvino bf16"
    assert summary["backends"]["graphs"]["keyframe"] == {"backend": "openvino", "precision": "bf16",
                                                         "graph_precision": "fp32", "provider": "OpenVINO CPU (bf16)"}
    assert "(openvino bf16)" in capsys.readouterr().out
    assert main(["-q", "profile", DEMO, clip, "--json", str(tmp_path / "p.json"), "--max-frames", "6",
                 "--threads", "2"]) == 0
    assert json.loads((tmp_path / "p.json").read_text())["backends"]["backend"] == "onnxruntime f32"


def test_the_log_line_names_the_precision(caplog):
    with caplog.at_level(logging.INFO, logger="vss_edge"):
        runtime.load(DEMO, backend="openvino", threads=1)
    lines = [r.getMessage() for r in caplog.records if "running on OpenVINO" in r.getMessage()]
    assert len(lines) == 1 and "precision f32 (the bundle's FP32 kept" in lines[0], lines


def test_without_openvino_the_choice_fails_in_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if it were not installed
    with pytest.raises(VssEdgeError, match=r"pip install 'vss-edge\[openvino\]'"):
        runtime.load(DEMO, backend="openvino")
    code = main(["run", DEMO, str(sample_clip_path()), "--out", str(tmp_path / "o"), "--backend", "openvino"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err == ["vss-edge run: error: backend 'openvino' needs the openvino package, which is not installed "
                   "here: pip install 'vss-edge[openvino]'"]


def test_backend_options_are_checked():
    with pytest.raises(VssEdgeError, match="precision bf16 needs backend 'openvino'"):
        runtime.load(DEMO, precision="bf16")
    with pytest.raises(VssEdgeError, match="runs on the CPU"):
        runtime.load(DEMO, backend="openvino", device="cuda")
    with pytest.raises(VssEdgeError, match="agreement floor must be"):
        runtime.load(DEMO, backend="auto", agreement_floor=1.5)


def test_auto_chooses_within_its_floor_and_caches_beside_the_bundle(tmp_path, caplog):
    from vss_edge.runtime.backend_choice import cache_path

    bundle = shutil.copytree(DEMO, tmp_path / "demo")
    with caplog.at_level(logging.INFO, logger="vss_edge"):
        pipe = runtime.load(bundle, backend="auto", precision="bf16", agreement_floor=0.99, threads=2)
    record = pipe.backends()
    assert record["backend"].startswith("auto: ")
    for name, graph in record["graphs"].items():
        choice = graph["auto"]
        assert set(choice["measured_ms"]) == {"onnxruntime f32", "openvino f32", "openvino bf16"}, name
        assert choice["floor"] == 0.99 and choice["cached"] is False
        if (graph["backend"], graph["precision"]) != ("onnxruntime", "f32"):
            assert choice["agreement"][f"{graph['backend']} {graph['precision']}"] >= 0.99
    assert cache_path(bundle).is_file() and [p.name for p in bundle.glob("*.json")] == ["manifest.json"]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="vss_edge"):
        again = runtime.load(bundle, backend="auto", precision="bf16", agreement_floor=0.99, threads=2)
    assert any("cached in" in r.getMessage() and "measured now" not in r.getMessage() for r in caplog.records)
    assert {n: (g["backend"], g["precision"]) for n, g in again.backends()["graphs"].items()} == \
        {n: (g["backend"], g["precision"]) for n, g in record["graphs"].items()}


def test_auto_without_openvino_runs_onnxruntime(monkeypatch, tmp_path, caplog):
    monkeypatch.setitem(sys.modules, "openvino", None)
    bundle = shutil.copytree(DEMO, tmp_path / "demo")
    with caplog.at_level(logging.INFO, logger="vss_edge"):
        pipe = runtime.load(bundle, backend="auto", threads=1)
    assert pipe.backends()["backend"] == "auto: onnxruntime f32"
    assert any("openvino is not installed" in r.getMessage() for r in caplog.records)


def crash_pattern_graph():
    """The smallest graph OpenVINO 2026.4.1's CPU plugin crashes on (SIGSEGV in compile_model; ONNX
    Runtime runs it): Concat of two dequantized tensors, then two QuantizeLinear -> DequantizeLinear
    pairs in a row. ONNX Runtime's quantize_static writes it around an unfused BatchNormalization after
    a Concat (Concat -> Q/DQ -> BatchNormalization -> Q/DQ crashes too; a Relu between the pairs does not)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    init, nodes = [], []

    def qdq(x, name, scale):
        init.extend([numpy_helper.from_array(np.float32(scale), name + "_s"),
                     numpy_helper.from_array(np.uint8(128), name + "_z")])
        nodes.append(helper.make_node("QuantizeLinear", [x, name + "_s", name + "_z"], [name + "_q"]))
        nodes.append(helper.make_node("DequantizeLinear", [name + "_q", name + "_s", name + "_z"], [name + "_dq"]))
        return name + "_dq"

    nodes.append(helper.make_node("Concat", [qdq("x", "a", 0.05), qdq("y", "b", 0.02)], ["cat"], axis=1))
    out = qdq(qdq("cat", "c", 0.05), "d", 0.05)
    nodes.append(helper.make_node("Identity", [out], ["out"]))
    shape = [1, 8, 16, 16]
    graph = helper.make_graph(nodes, "concat_qdq_qdq", [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape)
                                                        for n in ("x", "y")],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 16, 16, 16])], init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    return model


def test_an_openvino_crash_on_an_int8_graph_is_an_error_not_a_dead_process(tmp_path):
    """probe_compile compiles in a child process: the crash (on 2026.4.1) is a message naming the signal."""
    import onnx
    import onnxruntime as ort

    from vss_edge.runtime.manifest import sha256_file
    from vss_edge.runtime.openvino_session import openvino_version, probe_compile

    path = tmp_path / "crash.onnx"
    onnx.save(crash_pattern_graph(), path)
    feeds = {n: np.random.default_rng(0).random((1, 8, 16, 16), dtype=np.float32) for n in ("x", "y")}
    ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)  # valid ONNX
    spec = type("Spec", (), {"sha256": sha256_file(path)})()
    problem = probe_compile(path, spec, "f32")
    print(f"OpenVINO {openvino_version()} on Concat -> QDQ -> QDQ: {problem or 'compiles'}")
    assert problem is None or "crashed compiling it (SIGSEGV)" in problem  # and this process lives on


def test_openvino_counts_a_quantised_pools_padding_wrong_and_the_rewritten_conv_right(tmp_path):
    """OpenVINO 2026.4.1 moves the zero-point subtraction past a padded AveragePool (count_include_pad=1),
    so its padding counts as -zero_point * scale, not 0: the output is short by zero_point * scale *
    (padded share of the window). calibrate's rewrite (a depthwise Conv of weights 1/25) is read right."""
    import onnx
    import onnxruntime as ort

    from vss_edge.runtime.openvino_session import core, openvino_version

    x = {"x": np.random.default_rng(0).normal(0.5, 1.0, (1, 4, 5, 6)).astype(np.float32)}
    errors = {}
    for rewritten in (False, True):
        path = tmp_path / f"pool_{rewritten}.onnx"
        onnx.save(padded_pool_qdq_graph(rewritten), path)
        want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, x)[0]
        got = core().compile_model(core().read_model(str(path)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(x)[0]
        errors[rewritten] = float(np.abs(got - want).max())
    print(f"OpenVINO {openvino_version()}, quantised padded AveragePool: max error {errors[False]:.3f} "
          f"(zero_point * scale = 2.78); as a depthwise Conv: {errors[True]:.3f}")
    assert errors[True] <= 0.02 + 1e-6  # one quantisation step at most


def test_stmg_int8_keeps_its_labels_on_openvino(trained_stmg, tmp_path):
    """The trained STMG calibrated by vss-edge: OpenVINO runs its INT8 graphs with ONNX Runtime's
    labels (the pooling pyramid of its DDRNet was the padded-pool case above: 0.547 mIoU agreement
    with FP32 before the rewrite)."""
    from vss_edge.calibration.check import compare_pipelines
    from vss_edge.calibration.quantize import CalibrationConfig, calibrate_bundle
    from vss_edge.runtime.sources import read_frames

    fp32 = trained_stmg[1]
    config = CalibrationConfig(precision="int8", calibration_frames="0:30", evaluation_frames="30:60",
                               keep_slower=True, threads=2)
    int8, _ = calibrate_bundle(fp32, sample_clip_path(), tmp_path / "int8", config)
    frames = list(read_frames(sample_clip_path(), 30, 60))
    ort_int8 = runtime.load(int8, device="cpu", threads=2)
    ov_int8 = runtime.load(int8, backend="openvino", threads=2)
    agreement = _agreement(_labels(ort_int8, frames), _labels(ov_int8, frames))
    miou = compare_pipelines(runtime.load(fp32, device="cpu", threads=2), ov_int8, frames,
                             first_index=30)["agreement"]["miou"]
    print(f"stmg INT8 on OpenVINO: pixel agreement with ONNX Runtime INT8 {agreement:.5f}, mIoU agreement "
          f"with FP32 {miou:.4f}")
    assert agreement >= 0.999 and miou >= 0.985


def test_a_per_row_quantised_left_constant_does_not_compile_on_openvino_and_per_tensor_does(tmp_path):
    """OpenVINO 2026.4.1 rejects the per-row scales ('any_of(scale.size(), OC, 1U)'); calibrate
    quantises such a constant per tensor (calibration.int8_rewrites.per_tensor_left_constants),
    which compiles and gives ONNX Runtime's values."""
    import onnx
    import onnxruntime as ort

    from vss_edge.calibration.int8_rewrites import per_tensor_left_constants
    from vss_edge.runtime.manifest import sha256_file
    from vss_edge.runtime.openvino_session import core, openvino_version, probe_compile

    x = {"x": np.random.default_rng(1).normal(0, 1, (1, 8, 16)).astype(np.float32)}
    model = left_constant_matmul_graph()
    problems = {}
    for fixed in (False, True):
        if fixed:
            assert per_tensor_left_constants(model) == ["matmul"]
        path = tmp_path / f"matmul_{fixed}.onnx"
        onnx.save(model, path)
        problems[fixed] = probe_compile(path, type("Spec", (), {"sha256": sha256_file(path)})(), "f32")
    print(f"OpenVINO {openvino_version()}, per-row quantised left constant: {problems[False] or 'compiles'}")
    assert problems[True] is None
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, x)[0]
    got = core().compile_model(core().read_model(str(path)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(x)[0]
    np.testing.assert_allclose(got, want, atol=0.5 + 1e-6)  # one output quantisation step


def test_auto_moves_graphs_back_when_the_pipeline_is_not_faster_together(tmp_path, monkeypatch):
    """Graphs faster alone on OpenVINO, a pipeline slower with them there (two thread pools sharing the
    cores): auto moves them back, the least gaining first, and says why."""
    from vss_edge.runtime import backend_choice

    real_run = backend_choice._run_pipeline

    def slower_when_mixed(manifest, sessions, frames):
        labels, ms = real_run(manifest, sessions, frames)
        return labels, 100.0 if any(s.backend == "openvino" for s in sessions.values()) else 50.0

    monkeypatch.setattr(backend_choice, "_time", lambda session, feeds: 1.0 if session.backend == "openvino" else 2.0)
    monkeypatch.setattr(backend_choice, "_run_pipeline", slower_when_mixed)
    bundle = shutil.copytree(DEMO, tmp_path / "demo")
    graphs = runtime.load(bundle, backend="auto", threads=2).backends()["graphs"]
    assert {(g["backend"], g["precision"]) for g in graphs.values()} == {("onnxruntime", "f32")}
    notes = [g["auto"].get("note", "") for g in graphs.values()]
    assert any("not faster than onnxruntime f32 alone (50.0 ms)" in n for n in notes), notes
