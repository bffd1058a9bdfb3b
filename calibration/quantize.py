"""INT8 (ONNX Runtime static QDQ quantization) and FP16 versions of a bundle's graphs (torch-free).

INT8 (`quantize_graph_int8`): onnxruntime.quantization.quantize_static in QDQ format,
activations QUInt8 (asymmetric), weights QInt8 (symmetric, per output channel by
default), calibrated on the inputs `calibration.collect.collect_inputs` recorded from
the FP32 pipeline (minmax, entropy or percentile). Left in float, by default:
- op types in DEFAULT_KEEP_FLOAT: warps (GridSample, AffineGrid), Resize, Softmax,
  ArgMax/ArgMin, TopK, and normalisations not folded into a conv (no int8 kernel);
- the nodes that compute a warp's sampling grid (e.g. flow -> Div -> Transpose -> Mul
  -> Add -> GridSample): a quantised grid moves every sampled pixel;
- nodes that work on discrete values (class indices from ArgMax cast to float, masks
  from Equal/Not...) or whose result is compared exactly (Equal, Less, ...): GSVNet's
  label-boundary detector is a Conv over the label map followed by Equal, and an 8-bit
  label map would break the comparison;
- whatever ONNX Runtime cannot quantize anyway (Cast, Sub, Div, ReduceSum, Equal...).

The histogram calibrators (entropy, percentile) keep every intermediate tensor of
every sample in memory before building histograms, so they are capped at
HISTOGRAM_MAX_SAMPLES samples per graph (evenly spread over the recording); minmax
keeps only each tensor's per-sample min and max, so it uses all samples.

Without VNNI (AVX-512 VNNI / AVX-VNNI) or the Arm dot-product instructions, INT8
convolutions on the CPU EP gain little over FP32: `int8_speed_warning`. INT8 QDQ
graphs are meant for the CPU EP (or TensorRT); the CUDA provider has few int8
kernels and runs most ops in float between the Q/DQ nodes.

FP16 (`convert_graph_fp16`): onnxruntime.transformers.float16 with float I/O kept
(keep_io_types) and a block list; meant for the CUDA provider. The CPU EP runs it, but
has FP16 kernels for few ops and inserts casts around the rest, so it is usually slower.

`calibrate_bundle` does the whole thing for a bundle and writes a new bundle that the
same runtime runs unchanged (calibration.derived.write_derived_bundle).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import onnx

from vss_edge.runtime.errors import VssEdgeError

METHODS = ("minmax", "entropy", "percentile")
# Op types kept in float by default (as well as what ONNX Runtime cannot quantize anyway).
# Normalisations: the CPU EP has no int8 kernel for them (they run in float between DQ and Q), so
# quantising their scale only adds error; and ORT 1.31 breaks on them: its per-channel axis (1) does not
# fit BatchNormalization's rank-1 scale, and its int32-bias check raises on a LayerNormalization with a
# 2-D scale (TDNet's attention).
DEFAULT_KEEP_FLOAT = ("GridSample", "AffineGrid", "Softmax", "Resize", "ArgMax", "ArgMin", "TopK",
                      "BatchNormalization", "LayerNormalization", "InstanceNormalization", "GroupNormalization")
# FP16 block list on top of onnxruntime's own DEFAULT_OP_BLOCK_LIST (always kept).
DEFAULT_FP16_BLOCK = ("GridSample", "AffineGrid", "ArgMax", "ArgMin", "Softmax")
HISTOGRAM_MAX_SAMPLES = 16

_COMPARISONS = {"Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual"}
_DISCRETE_SOURCES = {"ArgMax", "ArgMin", "Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual", "Not",
                     "And", "Or", "Xor", "IsNaN", "IsInf", "Sign", "Round", "Floor", "Ceil", "NonZero", "TopK"}
# Ops a discrete value passes through unchanged in kind (still integers / a mask afterwards).
_DISCRETE_PASS = {"Cast", "Reshape", "Unsqueeze", "Squeeze", "Transpose", "Flatten", "Identity", "Slice", "Gather",
                  "Concat", "Split", "Pad", "MaxPool", "Expand", "Tile", "Resize"}
# Ops a warp grid is computed with, walking back from GridSample's grid input.
_GRID_CHAIN = {"Add", "Sub", "Mul", "Div", "Neg", "Transpose", "Reshape", "Unsqueeze", "Squeeze", "Concat",
               "Slice", "Split", "Cast", "Clip", "Identity", "Flatten", "Expand", "Tile", "Gather", "Resize"}
_WARPS = {"GridSample", "AffineGrid"}
_ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(uint8)": "uint8",
              "tensor(int8)": "int8", "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(bool)": "bool"}


# --- CPU support ---------------------------------------------------------------------------


def cpu_int8_support(cpuinfo: str | Path = "/proc/cpuinfo") -> dict:
    """Which INT8-relevant instruction sets the CPU reports (read from /proc/cpuinfo flags).

    Returns {avx2, avx512f, avx512_vnni, avx_vnni, amx_int8, arm_dotprod, vnni, known}:
    `vnni` is True when some fast int8 dot product exists (x86 VNNI/AMX or Arm asimddp);
    `known` is False when cpuinfo could not be read.
    """
    flags: set[str] = set()
    try:
        text = Path(cpuinfo).read_text(errors="replace")
        known = True
    except OSError:
        text, known = "", False
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    info = {name: name in flags for name in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")}
    info["arm_dotprod"] = "asimddp" in flags
    info["vnni"] = info["avx512_vnni"] or info["avx_vnni"] or info["amx_int8"] or info["arm_dotprod"]
    info["known"] = known and bool(flags)
    return info


def int8_speed_warning(cpuinfo: str | Path = "/proc/cpuinfo") -> str | None:
    """A warning when INT8 will gain little or nothing on this CPU; None when it has fast int8 dot products."""
    info = cpu_int8_support(cpuinfo)
    if not info["known"]:
        return "cannot read the CPU flags: INT8 may be no faster than FP32 on this CPU (it needs VNNI to pay off)"
    if info["vnni"]:
        return None
    if not info["avx2"]:
        return ("this CPU has no VNNI (AVX-512 VNNI / AVX-VNNI) and no AVX2: INT8 kernels will be no faster "
                "than FP32 here, and likely slower")
    have = "AVX-512" if info["avx512f"] else "AVX2"
    return (f"this CPU has no VNNI (AVX-512 VNNI / AVX-VNNI; it has {have}): INT8 kernels run on the {have} "
            f"u8s8 path, so expect little speed-up over FP32 (far less than on a VNNI CPU; measure it), and "
            f"u8s8 products can saturate (try reduce_range if accuracy drops)")


INT8_CUDA_NOTE = ("INT8 (QDQ) graphs are meant for the CPU EP (or TensorRT); do not expect the CUDA provider "
                  "to run them faster than FP16: it has few int8 kernels and runs most ops in float between "
                  "QuantizeLinear/DequantizeLinear")
FP16_CPU_WARNING = "FP16 is meant for the CUDA provider; on the CPU EP it is usually slower than FP32"


# --- graph analysis --------------------------------------------------------------------------


def _name_nodes(model: onnx.ModelProto) -> None:
    """Give every node a unique name (nodes_to_exclude matches names)."""
    used = {n.name for n in model.graph.node if n.name}
    for i, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_vss_{i}"
            while name in used:
                name += "_"
            node.name = name
            used.add(name)


def float_only_nodes(model: onnx.ModelProto, keep_float_ops=DEFAULT_KEEP_FLOAT) -> dict[str, str]:
    """Nodes to keep in float, name -> reason: op types in keep_float_ops, warp grids, discrete values."""
    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    keep = set(keep_float_ops)
    reasons: dict[str, str] = {}
    for n in graph.node:
        if n.op_type in keep:
            reasons[n.name] = f"op type {n.op_type}"
    # the computation of each warp's sampling grid
    for n in graph.node:
        if n.op_type not in _WARPS:
            continue
        stack = [n.input[1]] if n.op_type == "GridSample" and len(n.input) > 1 else list(n.input[:1])
        while stack:
            p = producer.get(stack.pop())
            if p is None or p.name in reasons or p.op_type not in _GRID_CHAIN | {"Constant"}:
                continue
            if p.op_type != "Constant":
                reasons[p.name] = f"computes the sampling grid of {n.op_type} '{n.name}'"
            stack.extend(i for i in p.input if i)
    # discrete values (class indices, masks) and anything compared exactly
    discrete = set()
    for n in graph.node:  # graph.node is topologically sorted
        ins = [i for i in n.input if i]
        if n.op_type in _DISCRETE_SOURCES or (n.op_type in _DISCRETE_PASS and ins and ins[0] in discrete):
            discrete.update(n.output)
            continue
        if any(i in discrete for i in ins) and n.name not in reasons:
            reasons[n.name] = "works on discrete values (class indices or a mask)"
    for n in graph.node:
        if n.op_type in _COMPARISONS:
            for i in n.input:
                p = producer.get(i)
                if p is not None and p.name not in reasons and p.op_type != "Constant":
                    reasons[p.name] = f"its result is compared exactly by {n.op_type} '{n.name}'"
    return reasons


def _io(model: onnx.ModelProto) -> tuple[list, list]:
    def describe(values):
        out = []
        for v in values:
            t = v.type.tensor_type
            out.append((v.name, tuple(d.dim_value for d in t.shape.dim),
                        onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name))
        return out

    inits = {i.name for i in model.graph.initializer}
    return describe([v for v in model.graph.input if v.name not in inits]), describe(model.graph.output)


def _check_runs(path: Path, source_io: tuple[list, list], sample: dict | None = None) -> None:
    """The converted graph loads on the CPU EP, has the source graph's I/O, and (given a sample) runs."""
    import onnxruntime as ort

    model = onnx.load(str(path), load_external_data=False)
    if _io(model) != source_io:
        raise VssEdgeError(f"'{path}': inputs/outputs {_io(model)} differ from the FP32 graph's {source_io}")
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    if sample is None:
        rng = np.random.default_rng(0)
        sample = {}
        for i in session.get_inputs():
            dtype = np.dtype(_ORT_TYPES[i.type])
            if dtype == np.uint8:
                sample[i.name] = rng.integers(0, 256, i.shape, dtype=np.uint8)
            else:
                sample[i.name] = rng.standard_normal(i.shape).astype(dtype)
    for name, value in zip([o.name for o in session.get_outputs()], session.run(None, sample)):
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            raise VssEdgeError(f"'{path}': output '{name}' is not finite on a calibration sample")


def _op_counts(model: onnx.ModelProto, quantizable: set[str], excluded: set[str]) -> dict:
    """QuantizeLinear / DequantizeLinear counts and the op types that run on quantised activations.

    A node counts as quantised when ORT quantises its type, it was not excluded, and
    it reads a DequantizeLinear of an activation (so ORT can fuse it into an int8 kernel).
    """
    graph = model.graph
    counts = Counter(n.op_type for n in graph.node)
    inits = {i.name for i in graph.initializer}
    dq_of_activation = {o for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] not in inits
                        for o in n.output}
    quantized = Counter(n.op_type for n in graph.node
                        if n.op_type in quantizable and n.name not in excluded
                        and any(i in dq_of_activation for i in n.input))
    return {"QuantizeLinear": counts.get("QuantizeLinear", 0), "DequantizeLinear": counts.get("DequantizeLinear", 0),
            "quantized_op_types": dict(sorted(quantized.items()))}


# --- INT8 ------------------------------------------------------------------------------------


class _Reader:
    """onnxruntime CalibrationDataReader over recorded feed dicts."""

    def __init__(self, samples: list[dict], input_names: list[str]):
        self.samples = [{k: s[k] for k in input_names} for s in samples]
        self.start, self.end = 0, len(self.samples)
        self.pos = 0

    def get_next(self):
        if self.pos >= self.end:
            return None
        self.pos += 1
        return self.samples[self.pos - 1]

    def __len__(self):
        return len(self.samples)

    def set_range(self, start_index: int, end_index: int):
        self.start, self.end, self.pos = start_index, min(end_index, len(self.samples)), start_index

    def rewind(self):
        self.pos = self.start


def _even_subset(items: list, count: int | None) -> list:
    if count is None or len(items) <= count:
        return list(items)
    picks = np.unique(np.linspace(0, len(items) - 1, count).round().astype(int))
    return [items[i] for i in picks]


def _ort_quantizable() -> set[str]:
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    return set(QLinearOpsRegistry) | set(QDQRegistry)


def quantize_graph_int8(model_path: str | Path, out_path: str | Path, inputs: list[dict], method: str = "minmax",
                        per_channel: bool = True, keep_float_ops=DEFAULT_KEEP_FLOAT, nodes_to_exclude=(),
                        max_samples: int | None = None, reduce_range: bool = False,
                        pre_process: bool = True) -> dict:
    """Statically quantise one graph to INT8 (QDQ) with ONNX Runtime; returns a small record.

    inputs: recorded feed dicts (calibration.collect.collect_inputs()[graph]).
    method: 'minmax', 'entropy' or 'percentile' (99.999th percentile, asymmetric).
    per_channel: per-output-channel weight scales. keep_float_ops: op types left in
    float (see the module docstring; warp grids and discrete-value nodes are always
    left in float too). nodes_to_exclude: more node names to leave in float.
    max_samples: cap on calibration samples (None: all for minmax,
    HISTOGRAM_MAX_SAMPLES for entropy/percentile, which hold every sample's
    activations in memory). reduce_range: 7-bit weights, for CPUs without VNNI
    where u8s8 products can saturate.
    pre_process: run onnxruntime's quant_pre_process (shape inference and basic
    graph optimisation) first; skipped, and said in the record, if it fails.

    The result keeps the graph's input and output names, shapes and dtypes; it is
    checked to load and run on the CPU EP before this returns.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if method not in METHODS:
        raise VssEdgeError(f"calibration method must be one of {', '.join(METHODS)}, got {method!r}")
    if not inputs:
        raise VssEdgeError(f"no calibration inputs for '{model_path}'")
    model_path, out_path = Path(model_path), Path(out_path)
    start = time.perf_counter()
    source = onnx.load(str(model_path))
    source_io = _io(source)
    input_names = [name for name, _, _ in source_io[0]]
    missing = [n for n in input_names if n not in inputs[0]]
    if missing:
        raise VssEdgeError(f"calibration inputs for '{model_path.name}' lack {missing}")
    if max_samples is None and method != "minmax":
        max_samples = HISTOGRAM_MAX_SAMPLES
    samples = _even_subset(inputs, max_samples)

    work = Path(tempfile.mkdtemp(prefix=".vss-quant-", dir=out_path.parent if out_path.parent.is_dir() else None))
    try:
        prepared, pre_note = work / "pre.onnx", "quant_pre_process" if pre_process else "not run"
        if pre_process:
            from onnxruntime.quantization.shape_inference import quant_pre_process

            try:  # shapes are static: symbolic shape inference is slow and adds nothing
                quant_pre_process(str(model_path), str(prepared), skip_symbolic_shape=True)
                if _io(onnx.load(str(prepared), load_external_data=False)) != source_io:
                    raise ValueError("it changed the graph's inputs or outputs")
            except Exception as e:  # noqa: BLE001 - any failure: quantise the graph as exported
                pre_note = f"skipped: {type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
                prepared.unlink(missing_ok=True)
        if not prepared.exists():
            shutil.copyfile(model_path, prepared)
        model = onnx.load(str(prepared))
        _name_nodes(model)
        reasons = float_only_nodes(model, keep_float_ops)
        known = {n.name for n in model.graph.node}
        for name in nodes_to_exclude:
            if name not in known:
                raise VssEdgeError(f"nodes_to_exclude: graph '{model_path.name}' has no node named {name!r}")
            reasons.setdefault(name, "asked for")
        onnx.save(model, str(prepared))
        quantizable = _ort_quantizable()
        op_types = sorted(quantizable - set(keep_float_ops))
        calib = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                 "percentile": CalibrationMethod.Percentile}[method]
        extra = {"ActivationSymmetric": False, "WeightSymmetric": True, "CalibTensorRangeSymmetric": False}
        # No CalibMaxIntermediateOutputs: in onnxruntime 1.31 MinMaxCalibrater.collect_data drops every full
        # chunk without merging it ("No data is collected" when the count is a multiple). minmax keeps only
        # per-tensor ReduceMin/ReduceMax results per sample anyway, so memory is small without it.
        if method == "percentile":
            extra["CalibPercentile"] = 99.999
        try:
            quantize_static(
                str(prepared), str(work / "int8.onnx"), _Reader(samples, input_names),
                quant_format=QuantFormat.QDQ, op_types_to_quantize=op_types, per_channel=per_channel,
                reduce_range=reduce_range, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                nodes_to_exclude=sorted(reasons), calibrate_method=calib, extra_options=extra,
            )
        except Exception as e:  # noqa: BLE001 - onnxruntime's quantiser raises anything on graphs it mishandles
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise VssEdgeError(
                f"ONNX Runtime could not quantise '{model_path.name}' ({type(e).__name__}: {first}); leave the graph "
                f"in float (keep_float_graphs) or exclude the offending op types or nodes") from e
        quantized = onnx.load(str(work / "int8.onnx"))
        _check_runs(work / "int8.onnx", source_io, samples[0])
        out_path.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(work / "int8.onnx"), str(out_path))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    present = Counter(n.op_type for n in model.graph.node)
    counts = _op_counts(quantized, set(op_types), set(reasons))
    return {
        "precision": "int8", "method": method, "per_channel": bool(per_channel), "reduce_range": bool(reduce_range),
        "format": "QDQ", "activations": "QUInt8 asymmetric", "weights": "QInt8 symmetric",
        "samples": len(samples), "samples_recorded": len(inputs), "pre_process": pre_note,
        "excluded_op_types": sorted(set(keep_float_ops) & set(present)),
        "excluded_nodes": dict(sorted(reasons.items())),
        "left_float_by_ort": sorted(t for t in present if t not in quantizable and t not in keep_float_ops),
        "quantized_nodes": counts["QuantizeLinear"],  # QuantizeLinear nodes inserted
        "dequantize_nodes": counts["DequantizeLinear"],
        "quantized_ops": sum(counts["quantized_op_types"].values()),
        "quantized_op_types": counts["quantized_op_types"],
        "seconds": round(time.perf_counter() - start, 2),
    }


# --- FP16 ------------------------------------------------------------------------------------


def _constants_to_initializers(model: onnx.ModelProto) -> None:
    """Turn Constant nodes into initializers (same values, same names).

    The FP16 converter casts every Constant node's tensor to float16, including the
    scales of Resize (which must stay float32: it then inserts one Cast per consumer,
    all with the same node name, which ONNX Runtime rejects, and an fp16 scale can
    change the output size). Initializers are converted only where a float16 node
    uses them, so Resize scales stay float32.
    """
    from onnx import numpy_helper

    graph = model.graph
    keep = []
    for node in graph.node:
        value = None
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and len(node.attribute) == 1:
            attr = node.attribute[0]
            if attr.name == "value":
                value = numpy_helper.to_array(attr.t)
            elif attr.name == "value_float":
                value = np.array(attr.f, dtype=np.float32)
            elif attr.name == "value_floats":
                value = np.array(list(attr.floats), dtype=np.float32)
            elif attr.name == "value_int":
                value = np.array(attr.i, dtype=np.int64)
            elif attr.name == "value_ints":
                value = np.array(list(attr.ints), dtype=np.int64)
        if value is None:
            keep.append(node)
        else:
            graph.initializer.append(numpy_helper.from_array(value, node.output[0]))
    del graph.node[:]
    graph.node.extend(keep)


def _drop_duplicate_nodes(model: onnx.ModelProto) -> None:
    """Remove nodes that are exact copies of an earlier node (same name, inputs, outputs, attributes)."""
    seen, keep = set(), []
    for node in model.graph.node:
        key = node.SerializeToString(deterministic=True)
        if key not in seen:
            seen.add(key)
            keep.append(node)
    del model.graph.node[:]
    model.graph.node.extend(keep)


def convert_graph_fp16(model_path: str | Path, out_path: str | Path, op_block_list=DEFAULT_FP16_BLOCK) -> dict:
    """Convert one graph to FP16 with float32 I/O kept; returns a small record.

    op_block_list: op types left in FP32 (added to onnxruntime's own block list).
    uint8 frames in and uint8 labels out are untouched; float inputs and outputs
    stay float32 (casts at the edges). The result is checked to load and run on
    the CPU EP with the source graph's input/output names, shapes and dtypes.
    """
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    model_path, out_path = Path(model_path), Path(out_path)
    start = time.perf_counter()
    source = onnx.load(str(model_path))
    source_io = _io(source)
    block = sorted(set(DEFAULT_OP_BLOCK_LIST) | set(op_block_list))
    model = onnx.ModelProto()
    model.CopyFrom(source)
    _constants_to_initializers(model)
    model = convert_float_to_float16(model, keep_io_types=True, op_block_list=block)
    _drop_duplicate_nodes(model)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.tmp")
    try:
        onnx.save(model, str(tmp))
        _check_runs(tmp, source_io)
        os.replace(tmp, out_path)
    finally:
        tmp.unlink(missing_ok=True)
    present = Counter(n.op_type for n in source.graph.node)
    return {
        "precision": "fp16", "method": "onnxruntime.transformers.float16.convert_float_to_float16",
        "keep_io_types": True, "op_block_list": sorted(set(op_block_list)),
        "blocked_op_types": sorted(t for t in present if t in set(block)),
        "casts_added": Counter(n.op_type for n in model.graph.node)["Cast"] - present.get("Cast", 0),
        "seconds": round(time.perf_counter() - start, 2),
    }


# --- a whole bundle --------------------------------------------------------------------------


def _video_record(video) -> dict:
    from vss_edge.runtime.manifest import sha256_file

    path = Path(os.fspath(video)) if isinstance(video, (str, os.PathLike)) else None
    record = {"video": path.name if path is not None else str(video)}
    if path is not None and path.is_file():
        record["video_sha256"] = sha256_file(path)
    return record


def calibrate_bundle(bundle: str | Path, video, out: str | Path, precision: str = "int8", method: str = "minmax",
                     calibration_frames=None, graphs=None, per_channel: bool = True, keep_float_graphs=(),
                     *, evaluation_frames=None, interval: int | None = None, keep_float_ops=DEFAULT_KEEP_FLOAT,
                     fp16_block=DEFAULT_FP16_BLOCK, max_samples: int | None = None, reduce_range: bool = False,
                     device: str = "cpu", threads: int | None = None) -> tuple[Path, dict]:
    """Write an INT8 or FP16 version of an FP32 bundle to `out`; returns (out, report).

    int8: record every graph's inputs with the FP32 pipeline and its real scheduler
    over `calibration_frames` (default 0:30) of `video`, quantise each selected graph
    (`graphs`, None = all) except those in keep_float_graphs, which stay FP32.
    fp16: convert each selected graph (no video is read; `video` may be None).
    evaluation_frames: if given, must not overlap calibration_frames.
    The report: {precision, graphs: name -> {precision, record}, warnings, seconds}.
    """
    from vss_edge.calibration.collect import FrameRange, check_disjoint, collect_inputs
    from vss_edge.calibration.derived import write_derived_bundle
    from vss_edge.runtime.manifest import MANIFEST_NAME, load_manifest, sha256_file

    if precision not in ("int8", "fp16"):
        raise VssEdgeError(f"precision must be int8 or fp16, got {precision!r}")
    start = time.perf_counter()
    manifest = load_manifest(bundle)
    not_fp32 = sorted(n for n, g in manifest.graphs.items() if g.precision != "fp32")
    if not_fp32:
        raise VssEdgeError(f"bundle '{bundle}' is not an FP32 bundle (graphs {', '.join(not_fp32)} are "
                           f"{manifest.graphs[not_fp32[0]].precision}); calibrate the FP32 export")
    selected = list(manifest.graphs) if graphs is None else list(graphs)
    unknown = sorted(set(selected) - set(manifest.graphs)) + sorted(set(keep_float_graphs) - set(manifest.graphs))
    if unknown:
        raise VssEdgeError(f"bundle '{bundle}' has no graph(s) {', '.join(unknown)} "
                           f"(it has {', '.join(manifest.graphs)})")
    selected = [g for g in selected if g not in set(keep_float_graphs)]
    source_sha = sha256_file(Path(bundle) / MANIFEST_NAME)
    base = {"source_manifest_sha256": source_sha}
    warnings = []
    report = {"precision": precision, "source": str(bundle), "graphs": {}, "warnings": warnings}
    files = {}
    work = Path(tempfile.mkdtemp(prefix=".vss-calib-"))
    try:
        if precision == "int8":
            if method not in METHODS:
                raise VssEdgeError(f"calibration method must be one of {', '.join(METHODS)}, got {method!r}")
            if video is None:
                raise VssEdgeError("int8 calibration needs a calibration video (frames the FP32 pipeline runs on)")
            frames = FrameRange.parse(calibration_frames if calibration_frames is not None else FrameRange(0, 30))
            if evaluation_frames is not None:
                check_disjoint(frames, evaluation_frames)
            warning = int8_speed_warning()
            if warning:
                warnings.append(warning)
            warnings.append(INT8_CUDA_NOTE)
            recorded = collect_inputs(bundle, video, frames, interval=interval, device=device, threads=threads)
            source = {**_video_record(video), "frames": str(frames), "interval": interval or
                      manifest.scheduler.get("params", {}).get("interval"), **base}
            for name in selected:
                path = work / f"{name}.int8.onnx"
                record = quantize_graph_int8(manifest.graph_path(name), path, recorded[name], method=method,
                                             per_channel=per_channel, keep_float_ops=keep_float_ops,
                                             max_samples=max_samples, reduce_range=reduce_range)
                record = {**source, **record}
                files[name] = (path, "int8", record)
        else:
            warnings.append(FP16_CPU_WARNING)
            for name in selected:
                path = work / f"{name}.fp16.onnx"
                record = {**base, **convert_graph_fp16(manifest.graph_path(name), path, op_block_list=fp16_block)}
                files[name] = (path, "fp16", record)
        out = write_derived_bundle(bundle, out, files)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for name in manifest.graphs:
        if name in files:
            report["graphs"][name] = {"precision": files[name][1], "record": files[name][2]}
        else:
            report["graphs"][name] = {"precision": "fp32", "record": None}
    report["seconds"] = round(time.perf_counter() - start, 2)
    json.dumps(report)  # the report must be JSON-serialisable (the CLI prints it)
    return out, report
