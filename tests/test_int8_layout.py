"""INT8 graphs that keep ONNX Runtime's int8 layout: exact rewrites, what stays float and why, the
optimisation level and the FP32 fallback measured at calibration, and the CPU a graph was tuned on."""
from __future__ import annotations

import json
import logging

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization.shape_inference import quant_pre_process

from int8_graphs import left_constant_matmul_graph, pooling_graph

from vss_edge import runtime
from vss_edge.calibration import int8 as int8_module
from vss_edge.calibration.collect import collect_inputs
from vss_edge.calibration.derived import write_derived_bundle
from vss_edge.calibration.graph_analysis import float_only_nodes
from vss_edge.calibration.int8 import quantize_graph_int8
from vss_edge.calibration.int8_rewrites import rewrite_for_int8
from vss_edge.calibration.quantize import CalibrationConfig, calibrate_bundle
from vss_edge.runtime import cpu as runtime_cpu
from vss_edge.runtime.errors import BundleError, VssEdgeError
from vss_edge.runtime.manifest import MANIFEST_NAME, load_manifest
from vss_edge.runtime.sources import sample_clip_path

VNNI = "processor\t: 0\nmodel name\t: Test CPU with VNNI\nflags\t\t: fpu sse avx2 avx512f avx512_vnni\n"
AVX2 = "processor\t: 0\nmodel name\t: Test CPU, AVX2 only\nflags\t\t: fpu sse avx avx2 fma\n"


def _normalising_graph() -> onnx.ModelProto:
    """uint8 NHWC frame -> Transpose -> Cast -> Mul(1/255) -> Sub(mean) -> Div(std) -> [Slice flip -> rgb,
    BN(Add(x, x)) -> bn]: the in-graph normalisation, a channel flip and an unfused BatchNormalization."""
    c = lambda name, value: numpy_helper.from_array(np.asarray(value, dtype=np.float32), name)  # noqa: E731
    i64 = lambda name, value: numpy_helper.from_array(np.asarray(value, dtype=np.int64), name)  # noqa: E731
    inits = [c("scale", 1 / 255), c("mean", np.array([0.406, 0.456, 0.485]).reshape(1, 3, 1, 1)),
             c("std", np.array([0.225, 0.224, 0.229]).reshape(1, 3, 1, 1)),
             i64("s", [-1]), i64("e", [-(2 ** 62)]), i64("ax", [1]), i64("st", [-1]),
             c("g", [1.5, 0.5, 2.0]), c("b", [0.1, -0.2, 0.3]), c("m", [0.2, 0.0, -0.1]), c("v", [0.8, 1.2, 0.5])]
    nodes = [helper.make_node("Transpose", ["image"], ["t"], perm=[0, 3, 1, 2], name="t"),
             helper.make_node("Cast", ["t"], ["f"], to=TensorProto.FLOAT, name="cast"),
             helper.make_node("Mul", ["f", "scale"], ["x1"], name="mul"),
             helper.make_node("Sub", ["x1", "mean"], ["x2"], name="sub"),
             helper.make_node("Div", ["x2", "std"], ["norm"], name="div"),
             helper.make_node("Slice", ["norm", "s", "e", "ax", "st"], ["rgb"], name="flip"),
             helper.make_node("Add", ["norm", "norm"], ["twice"], name="add"),
             helper.make_node("BatchNormalization", ["twice", "g", "b", "m", "v"], ["bn"], name="bn", epsilon=1e-5)]
    graph = helper.make_graph(nodes, "norm", [helper.make_tensor_value_info("image", TensorProto.UINT8, [1, 8, 8, 3])],
                              [helper.make_tensor_value_info("rgb", TensorProto.FLOAT, [1, 3, 8, 8]),
                               helper.make_tensor_value_info("bn", TensorProto.FLOAT, [1, 3, 8, 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return onnx.shape_inference.infer_shapes(model)


def _run(model: onnx.ModelProto, feed: dict) -> list[np.ndarray]:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)


def test_rewrites_turn_the_normalisation_flip_and_batch_norm_into_1x1_convs_with_the_same_values():
    model = _normalising_graph()
    frame = {"image": np.random.default_rng(0).integers(0, 256, (1, 8, 8, 3), dtype=np.uint8)}
    before = _run(model, frame)
    counts = rewrite_for_int8(model)
    assert counts == {"channel_affine": 1, "batch_norm": 1, "channel_flip": 1, "padded_average_pool": 0}
    onnx.checker.check_model(model)
    ops = [n.op_type for n in model.graph.node]
    assert not {"Mul", "Sub", "Div", "Slice", "BatchNormalization"} & set(ops) and ops.count("Conv") == 3
    # the same values, up to the regrouped products' rounding; and against numpy, channel by channel
    for a, b in zip(before, _run(model, frame)):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-6)
    x = frame["image"][0].transpose(2, 0, 1).astype(np.float64)
    norm = (x / 255 - np.array([0.406, 0.456, 0.485])[:, None, None]) / np.array([0.225, 0.224, 0.229])[:, None, None]
    np.testing.assert_allclose(_run(model, frame)[0][0], norm[::-1], rtol=1e-5, atol=1e-5)


def test_rewrites_leave_what_they_cannot_prove_alone():
    model = _normalising_graph()
    for n in model.graph.node:  # a Div of a constant by the tensor is not affine in it
        if n.op_type == "Div":
            n.input[:] = ["std", "x2"]
    del model.graph.value_info[:]  # and without shapes nothing is known to be NCHW
    counts = rewrite_for_int8(model)
    assert counts == {"channel_affine": 0, "batch_norm": 0, "channel_flip": 0, "padded_average_pool": 0}


def test_a_pool_counting_its_padding_becomes_a_depthwise_conv_with_the_same_values():
    """(OpenVINO reads a quantised one wrong: tests/test_openvino.py); one that does not count its
    padding, or rounds its window count up, is left alone."""
    x = {"x": np.random.default_rng(0).standard_normal((1, 4, 5, 6)).astype(np.float32)}
    model = pooling_graph()
    before = _run(model, x)
    assert rewrite_for_int8(model)["padded_average_pool"] == 1
    onnx.checker.check_model(model)
    (conv,) = model.graph.node
    assert conv.op_type == "Conv" and {a.name: helper.get_attribute_value(a) for a in conv.attribute}["group"] == 4
    np.testing.assert_allclose(_run(model, x)[0], before[0], rtol=1e-6, atol=1e-6)
    for kept in (pooling_graph(count_include_pad=0), pooling_graph(ceil_mode=1)):
        assert rewrite_for_int8(kept)["padded_average_pool"] == 0
        assert [n.op_type for n in kept.graph.node] == ["AveragePool"]


def test_what_int8_leaves_float_for_speed_and_why(gsvnet_bundle, tmp_path):
    """The frame's 3-channel normalisation conv, 3-D convs and the shape ops feeding a float conv
    stay float; ordinary convs (and the depthwise BN convs) are quantised."""
    for graph in ("keyframe", "propagation"):
        prepared = tmp_path / f"{graph}.pre.onnx"
        quant_pre_process(str(gsvnet_bundle / f"{graph}.onnx"), str(prepared), skip_symbolic_shape=True)
        model = onnx.load(str(prepared))
        rewrite_for_int8(model)
        reasons = float_only_nodes(model)
        convs = [n for n in model.graph.node if n.op_type == "Conv"]
        if graph == "keyframe":
            assert any("<= 4 channels" in reasons.get(n.name, "") for n in convs)
            depthwise = [n for n in convs if n.name.endswith("_as_conv") and "BatchNormalization" in n.name]
            assert all(n.name not in reasons for n in depthwise)
        assert sum(n.name not in reasons for n in convs) >= len(convs) - 3
    # a 3-D Conv (GSVNet's official ideal-delay bank, when it is not a bank of shifts) has no fast int8
    # kernel, and the shape op feeding it stays float with it
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 9, 4, 8, 8])
    weights = [numpy_helper.from_array(np.ones((9, 1, 1, 3, 3), np.float32), "bank"),
               numpy_helper.from_array(np.array([1], np.int64), "axis")]
    nodes = [helper.make_node("Unsqueeze", ["x", "axis"], ["x5"], name="unsqueeze"),
             helper.make_node("Conv", ["x5", "bank"], ["y"], pads=[0, 1, 1, 0, 1, 1], name="unfold")]
    reasons = float_only_nodes(helper.make_model(helper.make_graph(nodes, "g", [x], [y], weights)))
    assert reasons["unfold"].startswith("3-D Conv") and reasons["unsqueeze"].startswith("keeps the input of float Conv")


def test_a_float_conv_reads_float_not_a_dequantised_copy(gsvnet_bundle, tmp_path):
    """After quantisation no float Conv reads a DequantizeLinear (ONNX Runtime would quantise it at load)."""
    recorded = collect_inputs(gsvnet_bundle, sample_clip_path(), "0:6", interval=5)
    record = quantize_graph_int8(gsvnet_bundle / "propagation.onnx", tmp_path / "p.onnx", recorded["propagation"])
    model = onnx.load(str(tmp_path / "p.onnx"))
    producer = {o: n for n in model.graph.node for o in n.output}
    float_convs = [n for n in model.graph.node if n.op_type == "Conv" and n.name in record["excluded_nodes"]]
    assert float_convs
    for n in float_convs:
        assert producer[n.input[0]].op_type != "DequantizeLinear", n.name
    assert set(record["session"]) == {"optimization", "ms", "fp32_ms"}
    assert record["session"]["optimization"] in ("all", "extended") and record["session"]["fp32_ms"] > 0


def test_a_divisor_stays_float_so_no_quotient_is_inf(gsvnet_bundle, tmp_path):
    """GSVNet's guidance weights are d / (sum(d) + eps): a quantised divisor rounds a small sum to 0.
    With the quotient's readers left float (as the accuracy budget does) nothing hid the inf any more;
    now the divisor's chain is float and the graph is finite."""
    model = onnx.load(str(gsvnet_bundle / "propagation.onnx"))
    producer = {o: n for n in model.graph.node for o in n.output}
    divs = [n for n in model.graph.node if n.op_type == "Div" and n.input[1] in producer
            and producer[n.input[1]].op_type == "Add"]
    assert divs
    readers = sorted({r.name for d in divs for r in model.graph.node if d.output[0] in r.input})
    recorded = collect_inputs(gsvnet_bundle, sample_clip_path(), "0:6", interval=5)
    record = quantize_graph_int8(gsvnet_bundle / "propagation.onnx", tmp_path / "p.onnx", recorded["propagation"],
                                 nodes_to_exclude=readers)  # check_runs inside raises on a non-finite output
    for d in divs:
        assert "divisor" in record["excluded_nodes"][producer[d.input[1]].name]


def test_an_int8_graph_slower_than_fp32_stays_fp32_unless_asked(gsvnet_bundle, tmp_path, monkeypatch):
    real = int8_module.faster_optimization

    def fp32_faster(path, samples, threads=None, rounds=3, fp32_path=None):
        measured = real(path, samples[:1], threads, rounds=1, fp32_path=fp32_path)
        return {**measured, "fp32_ms": min(measured["ms"].values()) / 2}

    monkeypatch.setattr(int8_module, "faster_optimization", fp32_faster)
    config = CalibrationConfig(calibration_frames="0:6", graphs=("propagation",))
    out, report = calibrate_bundle(gsvnet_bundle, sample_clip_path(), tmp_path / "auto", config)
    assert load_manifest(out).graphs["propagation"].precision == "fp32"
    assert any("graph 'propagation': INT8 ran slower than FP32" in w for w in report["warnings"])
    out, _ = calibrate_bundle(gsvnet_bundle, sample_clip_path(), tmp_path / "kept",
                              CalibrationConfig(calibration_frames="0:6", graphs=("propagation",), keep_slower=True))
    graph = load_manifest(out).graphs["propagation"]
    assert graph.precision == "int8" and graph.optimization in ("all", "extended")
    assert graph.optimization == graph.calibration["session"]["optimization"]
    assert graph.calibration["tuned_on"]["cpu"] == runtime_cpu.cpu_model()


def test_calibration_times_its_sessions_with_no_worker_left_spinning(gsvnet_bundle, monkeypatch):
    """faster_optimization times 3 sessions in turn; a worker left spinning after one's run slows the
    next (measured: GSVNet propagation 17-25 ms per level instead of 7-11, the chosen level flipping)."""
    from vss_edge.runtime import session as session_module

    opened = []
    real = session_module.session_options

    def recording(*args, **options):
        opened.append(real(*args, **options))
        return opened[-1]

    def entry(options, key):
        try:
            return options.get_session_config_entry(key)
        except Exception:  # not set
            return None

    monkeypatch.setattr(session_module, "session_options", recording)
    graph = gsvnet_bundle / "flow.onnx"
    feeds = {i.name: np.zeros([d if isinstance(d, int) else 1 for d in i.shape], np.float32)
             if "float" in i.type else np.zeros([d if isinstance(d, int) else 1 for d in i.shape], np.uint8)
             for i in ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"]).get_inputs()}
    measured = int8_module.faster_optimization(graph, [feeds], threads=2, rounds=1, fp32_path=graph)
    assert len(opened) == 3 and set(measured["ms"]) == {"all", "extended"}
    for options in opened:
        assert (entry(options, "session.force_spinning_stop") == "1"
                or entry(options, "session.intra_op.allow_spinning") == "0")


def _fake_int8_bundle(gsvnet_bundle, out, tuned_on: dict, optimization: str | None = "all"):
    """The FP32 flow graph relabelled int8 with a record saying where it was tuned (the warning's input)."""
    record = {"video": "x.avi", "frames": "0:6", "method": "minmax", "tuned_on": tuned_on}
    if optimization:
        record["session"] = {"optimization": optimization, "ms": {}, "fp32_ms": None}
    return write_derived_bundle(gsvnet_bundle, out, {"flow": (gsvnet_bundle / "flow.onnx", "int8", record)})


def test_a_graph_tuned_for_vnni_warns_on_a_cpu_without_it(gsvnet_bundle, tmp_path, monkeypatch, caplog):
    vnni, avx2 = tmp_path / "vnni", tmp_path / "avx2"
    vnni.write_text(VNNI)
    avx2.write_text(AVX2)
    bundle = _fake_int8_bundle(gsvnet_bundle, tmp_path / "b", runtime_cpu.cpu_record(vnni))
    manifest = load_manifest(bundle)
    assert runtime_cpu.tuning_warnings(manifest, vnni) == []
    [warning] = runtime_cpu.tuning_warnings(manifest, avx2)
    assert "flow" in warning and "Test CPU with VNNI" in warning and "Test CPU, AVX2 only" in warning
    assert "may lose accuracy" in warning  # calibrated with 8-bit weights (no reduce_range in its record)
    assert runtime_cpu.tuning_warnings(load_manifest(gsvnet_bundle), avx2) == []  # FP32: nothing to say
    plain = _fake_int8_bundle(gsvnet_bundle, tmp_path / "c", runtime_cpu.cpu_record(avx2))
    assert runtime_cpu.tuning_warnings(load_manifest(plain), avx2) == []
    monkeypatch.setattr(runtime_cpu, "CPUINFO", str(avx2))
    with caplog.at_level(logging.WARNING, logger="vss_edge"):
        runtime.load(bundle, device="cpu")
    assert any("calibrated on a CPU with VNNI" in r.getMessage() for r in caplog.records)


def test_the_manifest_optimization_level_is_checked_and_used(gsvnet_bundle, tmp_path):
    bundle = _fake_int8_bundle(gsvnet_bundle, tmp_path / "b", {"cpu": "x", "vnni": False}, optimization="all")
    pipe = runtime.load(bundle, device="cpu")
    assert pipe.sessions["flow"].session.get_session_options().graph_optimization_level == \
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    old = _fake_int8_bundle(gsvnet_bundle, tmp_path / "old", {"cpu": "x", "vnni": False}, optimization=None)
    assert runtime.load(old, device="cpu").sessions["flow"].session.get_session_options().graph_optimization_level \
        == ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED  # INT8 from before the measurement: as it always ran
    raw = json.loads((bundle / MANIFEST_NAME).read_text())
    raw["graphs"]["flow"]["optimization"] = "fastest"
    (bundle / MANIFEST_NAME).write_text(json.dumps(raw))
    with pytest.raises(BundleError, match="optimization must be one of all, extended"):
        load_manifest(bundle)


def test_graphs_with_if_gates_quantise_inside_their_branches(stmg_bundle, tmp_path):
    """STMG's partial graph gates its blocks with ONNX If nodes (calibration.int8_gates): quantised as
    selects, it is gated again with every block's convolutions, their Q/DQ and their weights'
    DequantizeLinear inside the branch (where ONNX Runtime fuses them into QLinearConv); the selects
    give the gated graph's outputs for any keep vector, and the INT8 graph follows FP32 with blocks
    kept and dropped."""
    from vss_edge.calibration.int8_gates import selecting

    source = onnx.load(str(stmg_bundle / "partial.onnx"))
    recorded = collect_inputs(stmg_bundle, sample_clip_path(), "0:6")
    feeds = recorded["partial"]
    n_gates = sum(n.op_type == "If" for n in source.graph.node)
    onnx.save(selecting(source), str(tmp_path / "select.onnx"))
    gated, select = (ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
                     for p in (stmg_bundle / "partial.onnx", tmp_path / "select.onnx"))
    keeps = [np.ones(n_gates, bool), np.zeros(n_gates, bool), np.arange(n_gates) % 2 == 0]
    for keep in keeps:
        feed = dict(feeds[0], keep=keep)
        a, b = gated.run(None, feed)[0], select.run(None, feed)[0]  # the same maths, other kernels (NCHWc outside If)
        assert np.abs(a - b).max() <= 1e-5 * np.abs(a).max()

    record = quantize_graph_int8(stmg_bundle / "partial.onnx", tmp_path / "partial.int8.onnx", feeds)
    model = onnx.load(str(tmp_path / "partial.int8.onnx"))
    assert record["quantized_ops"] > 0 and not any(n.op_type == "Where" for n in model.graph.node)
    gates = [n for n in model.graph.node if n.op_type == "If"]
    weights = {i.name for i in model.graph.initializer}
    assert len(gates) == n_gates
    for gate in gates:
        branch = next(a.g for a in gate.attribute if a.name == "then_branch")
        ops = [n.op_type for n in branch.node]
        assert "Conv" in ops and "QuantizeLinear" in ops, gate.name
        convs = [n for n in branch.node if n.op_type == "Conv"]
        made_inside = {o for n in branch.node for o in n.output}
        assert all(c.input[0] in made_inside and c.input[1] in made_inside for c in convs), gate.name
        assert any(n.op_type == "DequantizeLinear" and n.input[0] in weights for n in branch.node), gate.name
    int8 = ort.InferenceSession(str(tmp_path / "partial.int8.onnx"), providers=["CPUExecutionProvider"])
    # seeded weights: measured 28.7 dB with the recorded keep vector, 26.9 with every block dropped (the
    # If-blind quantisation before it: 29.9 and 27.0, its gated blocks in float)
    for keep, floor in ((feeds[0]["keep"], 25.0), (keeps[1], 22.0)):
        feed = dict(feeds[0], keep=keep)
        ref, got = gated.run(None, feed)[0], int8.run(None, feed)[0]
        sqnr = 10 * np.log10(np.sum(ref ** 2) / np.sum((ref - got) ** 2))
        assert sqnr > floor, (keep, sqnr)


def _gated_block_graph() -> onnx.ModelProto:
    """x [1,4,8,8] -> Conv -> Relu -> If(keep){Conv(relu) | Identity(relu)} -> y: a gated block that
    reads the Relu before it by name from inside its branches, as STMG's partial graph does."""
    rng = np.random.default_rng(0)
    w = lambda name, *shape: numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)  # noqa: E731
    then = helper.make_graph([helper.make_node("Conv", ["r", "w2", "b2"], ["kept"], pads=[1, 1, 1, 1])], "then", [],
                             [helper.make_tensor_value_info("kept", TensorProto.FLOAT, [1, 4, 8, 8])])
    skip = helper.make_graph([helper.make_node("Identity", ["r"], ["skipped"])], "else", [],
                             [helper.make_tensor_value_info("skipped", TensorProto.FLOAT, [1, 4, 8, 8])])
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("If", ["keep"], ["g"], then_branch=then, else_branch=skip, name="gate"),
             helper.make_node("Conv", ["g", "w3", "b3"], ["y"], name="head")]
    graph = helper.make_graph(
        nodes, "gated", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8]),
                         helper.make_tensor_value_info("keep", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
        [w("w1", 4, 4, 3, 3), w("b1", 4), w("w2", 4, 4, 3, 3), w("b2", 4), w("w3", 4, 4, 1, 1), w("b3", 4)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_an_activation_a_gated_branch_reads_stays_float_so_the_branch_reads_it(tmp_path):
    """ONNX Runtime's QDQ quantiser removes a Relu after a quantised op and gives the op the Relu's output
    name; a branch reading that name then got the values before the Relu, negatives included (STMG's
    trained partial graph: features 14.1 dB SQNR against FP32 with the blocks kept, 25.4 dB with the rule;
    end to end STMG's INT8 mIoU agreement went 0.973 -> 0.989 on vtest)."""
    model = _gated_block_graph()
    assert float_only_nodes(model)["relu"].startswith("an If / Loop branch reads its output")
    onnx.save(model, str(tmp_path / "gated.onnx"))
    rng = np.random.default_rng(1)
    samples = [{"x": rng.standard_normal((1, 4, 8, 8)).astype(np.float32), "keep": np.array(k)}
               for k in (True, False) * 4]
    quantize_graph_int8(tmp_path / "gated.onnx", tmp_path / "gated.int8.onnx", samples, pre_process=False)
    fp32, int8 = (ort.InferenceSession(str(tmp_path / name), providers=["CPUExecutionProvider"])
                  for name in ("gated.onnx", "gated.int8.onnx"))
    for keep in (True, False):
        feed = dict(samples[0], keep=np.array(keep))
        ref, got = fp32.run(None, feed)[0], int8.run(None, feed)[0]
        sqnr = 10 * np.log10(np.sum(ref ** 2) / np.sum((ref - got) ** 2))
        assert sqnr > 25.0, f"keep={keep}: INT8 output {sqnr:.1f} dB from FP32"


def test_outputs_leave_unrounded_and_nothing_after_the_last_int8_op_is_quantised(gsvnet_bundle, tmp_path):
    """An output rounded to 8 bits buys no speed and costs accuracy (MPVSS's flows, every method's
    logits and state), and an op after the last int8 Conv only rounds (GSVNet's guided sum: the
    propagation logits of the trained weights 37.2 -> 42.0 dB with it float)."""
    recorded = collect_inputs(gsvnet_bundle, sample_clip_path(), "0:6")
    flow = quantize_graph_int8(gsvnet_bundle / "flow.onnx", tmp_path / "f.int8.onnx", recorded["flow"])
    assert flow["float_outputs"] == ["image_small"]  # the quantiser had rounded the state GSVNet carries
    record = quantize_graph_int8(gsvnet_bundle / "propagation.onnx", tmp_path / "p.int8.onnx", recorded["propagation"])
    for name in ("f.int8.onnx", "p.int8.onnx"):
        model = onnx.load(str(tmp_path / name))
        producer = {o: n for n in model.graph.node for o in n.output}
        assert all(producer[o.name].op_type not in ("DequantizeLinear", "QuantizeLinear") for o in model.graph.output)
    reasons = record["excluded_nodes"]
    tail = [n for n, why in reasons.items() if why.startswith("after the last int8")]
    assert any("Mul" in n for n in tail) and any("Add" in n for n in tail), tail
    mul = next(n for n in model.graph.node if n.name == next(t for t in tail if "Mul" in t))
    assert all(producer[i].op_type != "DequantizeLinear" for i in mul.input if i in producer)


def test_a_graph_with_no_int8_compute_stays_fp32(gsvnet_bundle, tmp_path, monkeypatch):
    """A graph none of whose Convs / MatMuls / Gemms could be quantised only gains Q/DQ rounding
    (MPVSS's propagation: its warp and the class merge, 0.96x FP32 at R50 480x853): it stays FP32."""
    from vss_edge.calibration import quantize as quantize_module

    real = quantize_module.quantize_graph_int8

    def no_int8_compute_in_propagation(source, out, *args, **kwargs):
        record = real(source, out, *args, **kwargs)
        return {**record, "quantized_op_types": {}} if "propagation" in str(source) else record

    monkeypatch.setattr(quantize_module, "quantize_graph_int8", no_int8_compute_in_propagation)
    out, report = calibrate_bundle(gsvnet_bundle, sample_clip_path(), tmp_path / "x",
                                   CalibrationConfig(calibration_frames="0:6", graphs=("propagation",)))
    assert load_manifest(out).graphs["propagation"].precision == "fp32"
    assert any("graph 'propagation': no Conv, MatMul or Gemm" in w for w in report["warnings"])


def test_a_per_channel_left_constant_of_a_matmul_is_quantised_per_tensor_within_half_a_step():
    from vss_edge.calibration.int8_rewrites import per_tensor_left_constants

    model = left_constant_matmul_graph()
    consts = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    before = (consts["w"].astype(np.float64) - consts["w_z"][:, None]) * consts["w_s"][:, None]
    assert per_tensor_left_constants(model) == ["matmul"]
    onnx.checker.check_model(model)
    dq = next(n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.output[0] == "w_dq")
    consts = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    w, step = consts[dq.input[0]], consts[dq.input[1]]
    assert step.size == 1 and not any(a.name == "axis" for a in dq.attribute)
    assert np.abs(w * float(step) - before).max() <= float(step) / 2 + 1e-9
    assert "w_s" not in consts  # the per-row scales are gone
    assert per_tensor_left_constants(model) == []  # a per-tensor constant, and a right-hand one, stay


def test_a_gate_not_in_the_exporters_form_is_refused_by_name(stmg_bundle, tmp_path):
    """A tampered gated graph (a skip branch that is not Identity(block input)) gets one clear error."""
    model = onnx.load(str(stmg_bundle / "partial.onnx"))
    gate = next(n for n in model.graph.node if n.op_type == "If")
    skip = next(a.g for a in gate.attribute if a.name == "else_branch")
    skip.node[0].op_type = "Neg"
    onnx.save(model, str(tmp_path / "tampered.onnx"))
    feeds = collect_inputs(stmg_bundle, sample_clip_path(), "0:6")["partial"]
    with pytest.raises(VssEdgeError, match=r"cannot quantise the gates of 'tampered.onnx'.*Neg"):
        quantize_graph_int8(tmp_path / "tampered.onnx", tmp_path / "t.int8.onnx", feeds)


def test_an_output_made_by_layout_ops_from_a_rounded_value_leaves_unrounded():
    """MPVSS's class and mask logits leave the key-frame graph through a Reshape after their
    Gemm / MatMul: that output reads the op's float value, not its 8-bit rounding. A value the
    graph also reads inside stays as it is."""
    from vss_edge.calibration.int8_rewrites import unround_outputs

    def qdq(x, out):
        return [helper.make_node("QuantizeLinear", [x, "s", "z"], [out + "_q"]),
                helper.make_node("DequantizeLinear", [out + "_q", "s", "z"], [out])]

    consts = [numpy_helper.from_array(np.array(0.05, np.float32), "s"), numpy_helper.from_array(np.array(128, np.uint8), "z"),
              numpy_helper.from_array(np.array([1, 16], np.int64), "shape"),
              numpy_helper.from_array(np.eye(4, dtype=np.float32) * 1.01, "w")]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]), *qdq("m", "m_dq"),
             helper.make_node("Reshape", ["m_dq", "shape"], ["flat"]), helper.make_node("Transpose", ["flat"], ["y"], perm=[1, 0]),
             helper.make_node("Relu", ["x"], ["r"]), *qdq("r", "r_dq"), helper.make_node("Reshape", ["r_dq", "shape"], ["z_out"]),
             helper.make_node("Neg", ["z_out"], ["n"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 4])],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in
                               (("y", [16, 1]), ("z_out", [1, 16]), ("n", [1, 16]))], consts)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    assert unround_outputs(model) == ["y"]
    x = np.random.default_rng(0).standard_normal((4, 4)).astype(np.float32)
    y, z, _ = _run(model, {"x": x})
    np.testing.assert_array_equal(y, (x @ (np.eye(4, dtype=np.float32) * 1.01)).reshape(1, 16).T)
    assert not np.array_equal(z, np.maximum(x, 0).reshape(1, 16))  # read inside the graph too: still rounded
