"""INT8 / FP16 bundles: collection with the real scheduler, ORT static QDQ quantisation, FP16 conversion,
derived bundles the unchanged runtime runs (small random-weight GSVNet bundle, real frames)."""
from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys

import numpy as np
import onnx
import pytest

from vss_edge import runtime
from vss_edge.calibration.collect import FrameRange, check_disjoint, collect_inputs
from vss_edge.calibration.derived import write_derived_bundle
from vss_edge.runtime.cpu import cpu_int8_support, int8_speed_warning
from vss_edge.calibration.fp16 import FP16_CPU_WARNING
from vss_edge.calibration.int8 import METHODS, quantize_graph_int8
from vss_edge.calibration.quantize import CalibrationConfig, CalibrationMethod, Precision, calibrate_bundle
from vss_edge.runtime.errors import VssEdgeError
from vss_edge.runtime.manifest import MANIFEST_NAME, load_manifest, sha256_file
from vss_edge.runtime.sources import sample_clip_path

CALIBRATION = FrameRange(0, 20)
EVALUATION = FrameRange(30, 40)


@pytest.fixture(scope="module")
def recorded(gsvnet_bundle):
    return collect_inputs(gsvnet_bundle, sample_clip_path(), "0:12", interval=5)


@pytest.fixture(scope="module")
def int8_bundle(gsvnet_bundle, tmp_path_factory):
    return calibrate_bundle(gsvnet_bundle, sample_clip_path(), tmp_path_factory.mktemp("int8") / "gsvnet-int8",
                            CalibrationConfig(precision="int8", method="minmax", calibration_frames=CALIBRATION,
                                              evaluation_frames=EVALUATION, keep_slower=True,
                                              keep_float_roles=()))  # every graph INT8, the flow net too


def _labels(bundle, frames):
    pipe = runtime.load(bundle, device="cpu")
    return [pipe.step(f).labels for f in frames]


# --- collection ----------------------------------------------------------------------------


def test_collect_records_key_and_non_key_frames(gsvnet_bundle, recorded):
    # 12 frames at interval 5: key frames 0, 5, 10; the other 9 run flow + propagation
    assert {k: len(v) for k, v in recorded.items()} == {"keyframe": 3, "flow": 9, "propagation": 9}
    manifest = load_manifest(gsvnet_bundle)
    for name, runs in recorded.items():
        spec = {t.name: (t.shape, t.dtype) for t in manifest.graphs[name].inputs}
        for feeds in runs:
            assert {k: (v.shape, v.dtype.name) for k, v in feeds.items()} == spec
            assert all(isinstance(v, np.ndarray) for v in feeds.values())
    # the recurrent state is really recorded: propagation sees the logits of the previous frame
    assert not np.array_equal(recorded["propagation"][0]["prev_logits"], recorded["propagation"][1]["prev_logits"])


def test_collect_refuses_a_range_that_misses_a_graph(gsvnet_bundle):
    with pytest.raises(VssEdgeError, match=r"never ran graph\(s\) flow, propagation.*more calibration frames"):
        collect_inputs(gsvnet_bundle, sample_clip_path(), "0:1")


def test_collect_refuses_frames_past_the_end(gsvnet_bundle):
    with pytest.raises(VssEdgeError, match="has only 60 frames"):
        collect_inputs(gsvnet_bundle, sample_clip_path(), "50:70")


def test_frame_ranges_and_disjoint_split(gsvnet_bundle, tmp_path):
    assert FrameRange.parse("0:30") == FrameRange(0, 30) and str(FrameRange(3, 9)) == "3:9"
    for bad in ("30", "5:5", "9:3", "a:b", "-1:4"):
        with pytest.raises(VssEdgeError):
            FrameRange.parse(bad)
    with pytest.raises(VssEdgeError, match="calibration frames 0:30 overlap evaluation frames 20:40"):
        check_disjoint(FrameRange(0, 30), FrameRange(20, 40))
    check_disjoint(FrameRange(0, 30), FrameRange(30, 60))
    check_disjoint("30:60", "0:30")
    with pytest.raises(VssEdgeError, match="overlap"):  # enforced before any work is done
        calibrate_bundle(gsvnet_bundle, sample_clip_path(), tmp_path / "x",
                         CalibrationConfig(calibration_frames="0:30", evaluation_frames="20:40"))
    assert not (tmp_path / "x").exists()


# --- INT8 ----------------------------------------------------------------------------------


def test_int8_bundle_runs_unchanged_and_records_its_calibration(gsvnet_bundle, int8_bundle, sample_frames, capsys):
    out, report = int8_bundle
    manifest = load_manifest(out)
    source_sha = sha256_file(gsvnet_bundle / MANIFEST_NAME)
    assert manifest.provenance["derived_from"]["manifest_sha256"] == source_sha
    for name, spec in manifest.graphs.items():
        assert spec.precision == "int8" and spec.file == f"{name}.int8.onnx"
        cal = spec.calibration
        assert cal["video"] == "sample.mp4" and cal["frames"] == "0:20" and cal["method"] == "minmax"
        assert cal["source_manifest_sha256"] == source_sha and cal["per_channel"] is True
        assert type(cal["method"]) is str and type(report["precision"]) is str  # values, not enum members
        assert cal["quantized_nodes"] > 0 and cal["samples"] == {"keyframe": 4}.get(name, 16)
        assert report["graphs"][name]["precision"] == "int8"
        ops = {n.op_type for n in onnx.load(str(manifest.graph_path(name))).graph.node}
        assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert "VNNI" in report["warnings"][0] or int8_speed_warning() is None

    frames = sample_frames[EVALUATION.start:EVALUATION.stop]
    reference, quantized = _labels(gsvnet_bundle, frames), _labels(out, frames)
    assert all(q.shape == f.shape[:2] and q.dtype == np.uint8 for q, f in zip(quantized, frames))
    agreement = float(np.mean([(a == b).mean() for a, b in zip(reference, quantized)]))
    with capsys.disabled():
        print(f"\nint8 (minmax) vs fp32 label agreement on frames {EVALUATION}: {agreement:.4f}; quantized nodes "
              + ", ".join(f"{n}={report['graphs'][n]['record']['quantized_nodes']}" for n in manifest.graphs))
    assert agreement >= 0.96  # measured 0.9711 (minmax, per-channel, this 2-core AVX2 CPU without VNNI)


def test_int8_keeps_warps_and_discrete_values_in_float(int8_bundle):
    """The warp (GSVNet's bilinear sampling, written as gathers at computed points: models.sampling)
    stays float end to end: its sample points, corner indices and weights from the flow, the gathered
    values, their weighted sum."""
    out, report = int8_bundle
    model = onnx.load(str(out / "propagation.int8.onnx"))
    producer = {o: n for n in model.graph.node for o in n.output}
    record = report["graphs"]["propagation"]["record"]
    reasons = record["excluded_nodes"]
    warps = [n for n in model.graph.node if reasons.get(n.name, "").startswith("a warp")]
    assert len(warps) == 4  # the four bilinear corners
    for node in warps:
        sources = {producer[i].op_type if i in producer else "graph input" for i in node.input}
        assert not sources & {"QuantizeLinear", "DequantizeLinear"}, sources
        # everything upstream of the warp (the points from the flow, the previous logits) stays float
        upstream, stack = [], list(node.input)
        while stack:
            p = producer.get(stack.pop())
            if p is not None:
                upstream.append(p.op_type)
                stack.extend(p.input)
        assert {"Add", "Div", "Floor"} <= set(upstream), upstream
        assert not set(upstream) & {"QuantizeLinear", "DequantizeLinear"}, upstream
    corners = [n for n in model.graph.node if reasons.get(n.name, "").startswith("weights or sums")]
    assert sum(n.op_type == "Mul" for n in corners) == 4 and sum(n.op_type == "Add" for n in corners) == 3
    for node in corners:
        assert all(producer[i].op_type != "DequantizeLinear" for i in node.input if i in producer)
    assert "ArgMax" in record["excluded_op_types"]
    # the label-boundary detector (Conv over the label map, then Equal) stays exact
    assert record["excluded_nodes"]["/gsv/Conv"].startswith("works on discrete values")
    for node in model.graph.node:
        if node.op_type in ("ArgMax", "Equal"):
            assert all(producer[i].op_type != "DequantizeLinear" for i in node.input if i in producer)


def _cosine_and_sqnr(reference: np.ndarray, candidate: np.ndarray) -> tuple[float, float]:
    r, c = reference.astype(np.float64).ravel(), candidate.astype(np.float64).ravel()
    cosine = float(r @ c / (np.linalg.norm(r) * np.linalg.norm(c)))
    return cosine, float(10 * np.log10(np.sum(r ** 2) / np.sum((r - c) ** 2)))


def _activation_scales(path) -> dict[str, float]:
    """The scale of each QuantizeLinear of a QDQ graph, by the tensor it quantises."""
    from onnx import numpy_helper

    model = onnx.load(str(path))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    return {n.input[0]: float(np.asarray(inits[n.input[1]]).ravel()[0]) for n in model.graph.node
            if n.op_type == "QuantizeLinear" and n.input[1] in inits}


@pytest.fixture(scope="module")
def flow_by_method(gsvnet_bundle, recorded, tmp_path_factory):
    """The flow graph quantised with each calibration method on the same 4 recorded inputs."""
    source = load_manifest(gsvnet_bundle).graph_path("flow")
    out, records = tmp_path_factory.mktemp("methods"), {}
    for method in ("minmax", "entropy", "percentile"):
        records[method] = quantize_graph_int8(source, out / f"flow.{method}.onnx", recorded["flow"], method=method,
                                              max_samples=4)
    return source, out, records


def test_entropy_and_percentile_give_graphs_close_to_fp32(flow_by_method, recorded):
    """Each method's graph against the FP32 one on a recorded input. Measured (all three
    methods alike): flow cosine 0.9847, SQNR 14.9 dB (the random net's flow is tiny: 0.014 px);
    image_small SQNR 47.3 dB."""
    import onnxruntime as ort

    source, out, records = flow_by_method
    feeds = recorded["flow"][-1]
    expected = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"]).run(None, feeds)
    for method, record in records.items():
        assert record["method"] == method and record["samples"] == 4 and record["quantized_nodes"] > 0
        got = ort.InferenceSession(str(out / f"flow.{method}.onnx"), providers=["CPUExecutionProvider"]).run(None, feeds)
        (flow_cos, flow_db), (_, small_db) = (_cosine_and_sqnr(e, g) for e, g in zip(expected, got))
        assert flow_cos >= 0.98 and flow_db >= 13.0, (method, flow_cos, flow_db)
        assert small_db >= 45.0, (method, small_db)
    with pytest.raises(VssEdgeError, match="minmax, entropy, percentile"):
        quantize_graph_int8(source, out / "x.onnx", recorded["flow"], method="kl")


def test_percentile_calibrates_other_ranges_than_minmax(flow_by_method):
    """The method is really applied: percentile (99.999th) clips every activation range a little
    (measured: all 23 scales differ from minmax's, e.g. 0.021547 vs 0.021562)."""
    _, out, _ = flow_by_method
    minmax, percentile = _activation_scales(out / "flow.minmax.onnx"), _activation_scales(out / "flow.percentile.onnx")
    assert minmax.keys() == percentile.keys() and len(minmax) > 10
    assert all(percentile[t] != minmax[t] for t in minmax)


@pytest.mark.xfail(strict=True, reason="onnxruntime 1.31's quantize_static cannot pass num_bins to the entropy "
                   "calibrator: 128 histogram bins = 128 quantized bins leaves one candidate threshold, the "
                   "full range, so 'entropy' gives exactly minmax's scales (measured: 23 of 23 equal)")
def test_entropy_calibrates_other_ranges_than_minmax(flow_by_method):
    _, out, _ = flow_by_method
    minmax, entropy = _activation_scales(out / "flow.minmax.onnx"), _activation_scales(out / "flow.entropy.onnx")
    assert any(entropy[t] != minmax[t] for t in minmax)


def test_keep_float_graphs_stay_fp32(gsvnet_bundle, tmp_path):
    out, report = calibrate_bundle(gsvnet_bundle, sample_clip_path(), tmp_path / "mixed", CalibrationConfig(
        precision="int8", calibration_frames="0:10", keep_float_graphs=("keyframe",), keep_slower=True,
        keep_float_roles=()))
    source, derived = load_manifest(gsvnet_bundle), load_manifest(out)
    assert derived.graphs["keyframe"].precision == "fp32" and derived.graphs["keyframe"].calibration is None
    assert derived.graphs["keyframe"].sha256 == source.graphs["keyframe"].sha256
    assert sha256_file(derived.graph_path("keyframe")) == source.graphs["keyframe"].sha256
    assert [derived.graphs[g].precision for g in ("flow", "propagation")] == ["int8", "int8"]
    assert report["graphs"]["keyframe"] == {"precision": "fp32", "record": None}


# --- FP16 ----------------------------------------------------------------------------------


def test_fp16_bundle_runs_on_the_cpu_with_the_same_io(gsvnet_bundle, tmp_path, sample_frames, capsys):
    out, report = calibrate_bundle(gsvnet_bundle, None, tmp_path / "gsvnet-fp16", CalibrationConfig(precision="fp16"))
    assert report["warnings"] == [FP16_CPU_WARNING]
    source, derived = load_manifest(gsvnet_bundle), load_manifest(out)
    for name, spec in derived.graphs.items():
        assert spec.precision == "fp16" and spec.file == f"{name}.fp16.onnx"
        assert (spec.inputs, spec.outputs) == (source.graphs[name].inputs, source.graphs[name].outputs)
        assert "GridSample" in spec.calibration["op_block_list"]
        # the warp (gathers at points computed from the flow) stays FP32: float16 points move by 1/8 pixel
        assert (spec.calibration["blocked_warp_nodes"] > 0) == (name == "propagation")
    pipe = runtime.load(out, device="cpu")  # checks the graphs' real I/O against the manifest
    # uint8 frame in, float32 state (and uint8 labels when the graphs compute them): exactly as declared
    assert [(i.name, i.type) for i in pipe.sessions["keyframe"].session.get_inputs()] == [("image", "tensor(uint8)")]
    labels = {} if source.labels_on_host else {"labels": "tensor(uint8)"}
    assert {o.name: o.type for o in pipe.sessions["propagation"].session.get_outputs()} == {
        "logits": "tensor(float)", **labels}
    frames = sample_frames[EVALUATION.start:EVALUATION.stop]
    reference, half = _labels(gsvnet_bundle, frames), _labels(out, frames)
    agreement = float(np.mean([(a == b).mean() for a, b in zip(reference, half)]))
    with capsys.disabled():
        print(f"\nfp16 vs fp32 label agreement on frames {EVALUATION}: {agreement:.4f}")
    assert agreement >= 0.998  # measured 0.9991


def _float16_upstream_of_warp_indices(model: onnx.ModelProto) -> dict[str, list[str]]:
    """Per warp gather (indices computed through a Floor): the float16 casts upstream of its indices."""
    producer = {o: n for n in model.graph.node for o in n.output}
    found = {}
    for gather in (n for n in model.graph.node if n.op_type in ("Gather", "GatherElements")):
        upstream, stack, seen = [], [gather.input[1]], set()
        while stack:
            p = producer.get(stack.pop())
            if p is not None and p.name not in seen:
                seen.add(p.name)
                upstream.append(p)
                if p.op_type != "Shape":  # (a shape does not depend on the values' precision)
                    stack.extend(i for i in p.input if i)
        if any(p.op_type == "Floor" for p in upstream):
            found[gather.name] = [p.name for p in upstream if p.op_type == "Cast" and any(
                a.name == "to" and a.i == onnx.TensorProto.FLOAT16 for a in p.attribute)]
    return found


@pytest.mark.parametrize("method", ["gsvnet", "mpvss"])
def test_fp16_keeps_every_warps_points_float32_from_the_flow_on(method, gsvnet_bundle, tmp_path):
    """A warp's sample points computed in float16 round coordinates of 200 to 1/8 pixel, and a flat
    index (y * w + x) above 2048 to even numbers: past the map's end at the last row (MPVSS at
    288x384 failed: 'GatherElements op: Out of range value in index tensor', its NaN guard's
    Where / IsNaN had cut the point chain). Nothing upstream of a warp's indices is float16."""
    from vss_edge.calibration.fp16 import convert_graph_fp16

    if method == "gsvnet":
        source = gsvnet_bundle / "propagation.onnx"
    else:
        from vss_edge.configs import MPVSSConfig
        from vss_edge.exporters.mpvss import export_mpvss

        source = export_mpvss(tmp_path / "mpvss", MPVSSConfig(height=120, width=213, variant="small", num_classes=19),
                              seed=0, verify_frames=0, simplify=False) / "propagation.onnx"
    record = convert_graph_fp16(source, tmp_path / "propagation.fp16.onnx")
    warps = _float16_upstream_of_warp_indices(onnx.load(str(tmp_path / "propagation.fp16.onnx")))
    assert warps and record["blocked_warp_nodes"] > 0
    assert all(casts == [] for casts in warps.values()), warps


# --- CPU flags, derived-bundle safety, torch-free ----------------------------------------------


def test_cpu_int8_support_reads_the_flags(tmp_path):
    vnni = tmp_path / "vnni"
    vnni.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_vnni\n")
    avx2 = tmp_path / "avx2"
    avx2.write_text("processor\t: 0\nflags\t\t: fpu sse avx avx2 fma\n")
    assert cpu_int8_support(vnni)["vnni"] and int8_speed_warning(vnni) is None
    info = cpu_int8_support(avx2)
    assert info["avx2"] and not info["vnni"] and not info["avx512f"]
    assert "no VNNI" in int8_speed_warning(avx2)
    assert "cannot read" in int8_speed_warning(tmp_path / "missing")
    assert set(cpu_int8_support()) >= {"avx2", "avx512f", "avx512_vnni", "avx_vnni", "vnni"}


def test_derived_bundle_never_overwrites_a_non_bundle(gsvnet_bundle, tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(VssEdgeError, match="not a vss-edge bundle"):
        write_derived_bundle(gsvnet_bundle, precious, {})
    assert (precious / "notes.txt").read_text() == "keep me"
    with pytest.raises(VssEdgeError, match="is the source bundle"):
        write_derived_bundle(gsvnet_bundle, gsvnet_bundle, {})
    with pytest.raises(VssEdgeError, match="no graph 'nope'"):
        write_derived_bundle(gsvnet_bundle, tmp_path / "y", {"nope": (gsvnet_bundle / MANIFEST_NAME, "int8", {})})
    with pytest.raises(VssEdgeError, match="must name video, frames, method"):
        write_derived_bundle(gsvnet_bundle, tmp_path / "z", {"flow": (gsvnet_bundle / "flow.onnx", "int8", {})})
    copy = write_derived_bundle(gsvnet_bundle, tmp_path / "copy", {})  # nothing replaced: a plain copy
    assert json.loads((copy / MANIFEST_NAME).read_text())["graphs"] == json.loads(
        (gsvnet_bundle / MANIFEST_NAME).read_text())["graphs"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left behind


def test_calibration_runs_without_torch(gsvnet_bundle, tmp_path):
    code = (
        "import sys\n"
        "sys.modules['torch'] = None  # any import of torch now fails\n"
        "from vss_edge.calibration.quantize import CalibrationConfig, calibrate_bundle\n"
        "from vss_edge.runtime.sources import sample_clip_path\n"
        f"out, report = calibrate_bundle(r'{gsvnet_bundle}', sample_clip_path(), r'{tmp_path / 'b'}', "
        "CalibrationConfig(calibration_frames='0:7', graphs=['flow'], keep_slower=True, keep_float_roles=()))\n"
        "assert report['graphs']['flow']['precision'] == 'int8', report\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- options -------------------------------------------------------------------------------


def test_calibration_config_checks_and_normalises_its_options(tmp_path):
    config = CalibrationConfig(precision="fp16", method="percentile", calibration_frames="0:10",
                               evaluation_frames="10:20", graphs=["flow"], keep_float_ops=["Resize"])
    assert config.precision is Precision.FP16 and config.method is CalibrationMethod.PERCENTILE
    assert (config.calibration_frames, config.evaluation_frames) == (FrameRange(0, 10), FrameRange(10, 20))
    assert config.graphs == ("flow",) and config.keep_float_ops == ("Resize",)
    assert hash(config) == hash(CalibrationConfig(precision=Precision.FP16, method="percentile",
                                                  calibration_frames=FrameRange(0, 10), evaluation_frames="10:20",
                                                  graphs=("flow",), keep_float_ops=("Resize",)))
    assert CalibrationConfig(calibration_frames=None).calibration_frames == FrameRange(0, 30)
    assert f"{Precision.INT8}/{CalibrationMethod.ENTROPY}" == "int8/entropy" and str(Precision.FP16) == "fp16"
    assert tuple(m.value for m in CalibrationMethod) == METHODS
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.precision = "int8"
    with pytest.raises(VssEdgeError, match=r"^precision must be int8 or fp16, got 'int4'$"):
        CalibrationConfig(precision="int4")
    with pytest.raises(VssEdgeError, match=r"^calibration method must be one of minmax, entropy, percentile, "
                                           r"got 'kl'$"):
        CalibrationConfig(method="kl")
    with pytest.raises(VssEdgeError, match="calibration frames 0:30 overlap evaluation frames 20:40"):
        dataclasses.replace(CalibrationConfig(evaluation_frames="30:60"), evaluation_frames="20:40")
    with pytest.raises(VssEdgeError, match="must look like A:B"):
        CalibrationConfig(calibration_frames="30")
    with pytest.raises(TypeError, match="must be a CalibrationConfig, got str"):
        calibrate_bundle(tmp_path, None, tmp_path / "x", "int8")  # the old positional precision
    with pytest.raises(TypeError):
        CalibrationConfig("int8")  # keyword-only


def test_the_cli_reads_its_choices_from_the_enums(capsys):
    from vss_edge.cli import build_parser

    for option, enum in (("--precision", Precision), ("--method", CalibrationMethod)):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["calibrate", "b", "v", "--out", "o", "--precision", "int8", option, "x"])
        err = capsys.readouterr().err  # the choices are the plain values, in the enum's order
        expected = r"invalid choice: '?x'? \(choose from " + ", ".join(f"'?{e.value}'?" for e in enum) + r"\)"
        assert re.search(expected, err), err
    args = build_parser().parse_args(["calibrate", "b", "v", "--out", "o", "--precision", "fp16"])
    assert (args.precision, args.method) == ("fp16", "minmax") and type(args.method) is str


def test_budget_takes_a_config_and_chooses_the_float_graphs_itself(tmp_path):
    from vss_edge.calibration.budget import calibrate_within_budget

    for config in (CalibrationConfig(graphs=["flow"]), CalibrationConfig(keep_float_graphs=["flow"])):
        with pytest.raises(VssEdgeError, match="leave graphs, keep_float_graphs and keep_float_nodes unset"):
            calibrate_within_budget(tmp_path, None, tmp_path / "x", 0.05, config)
    with pytest.raises(TypeError, match="must be a CalibrationConfig"):
        calibrate_within_budget(tmp_path, None, tmp_path / "x", 0.05, "int8")


def test_calibration_options_import_without_onnx():
    """The CLI imports CalibrationConfig and the enums at start-up: that must not need onnx (nor torch)."""
    code = ("import sys\nsys.modules['torch'] = None\nsys.modules['onnx'] = None\n"
            "import vss_edge.calibration.quantize, vss_edge.calibration.int8, vss_edge.calibration.fp16\n"
            "from vss_edge.calibration import CalibrationConfig, Precision\n"
            "assert CalibrationConfig(precision=Precision.FP16).precision == 'fp16'\n")
    subprocess.run([sys.executable, "-c", code], check=True)
