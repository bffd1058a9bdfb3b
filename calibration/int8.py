"""One graph statically quantised to INT8 with ONNX Runtime (QDQ; torch-free).

Contract: `quantize_graph_int8` reads an FP32 .onnx file and the feed dicts recorded for
it, writes an INT8 QDQ graph with the same input and output names, shapes and dtypes
that loads and runs on the CPU EP (checked before it returns), and returns a
JSON-serialisable record of what was done; the source file is never changed, and any
failure (including ONNX Runtime's quantiser raising) is a VssEdgeError that leaves no
output file and no temporary folder. What stays float is decided by
calibration.graph_analysis.float_only_nodes. onnx and onnxruntime are imported when a
graph is quantised, not when this module is.

INT8 (`quantize_graph_int8`): onnxruntime.quantization.quantize_static in QDQ format,
activations QUInt8 (asymmetric), weights QInt8 (symmetric, per output channel by
default), calibrated on the inputs `calibration.collect.collect_inputs` recorded from
the FP32 pipeline (minmax, entropy or percentile). The nodes left in float are listed in
calibration/graph_analysis.py.

The histogram calibrators (entropy, percentile) keep every intermediate tensor of
every sample in memory before building histograms, so they are capped at
HISTOGRAM_MAX_SAMPLES samples per graph (evenly spread over the recording); minmax
keeps only each tensor's per-sample min and max, so it uses all samples.

INT8 QDQ graphs are meant for the CPU EP (or TensorRT); the CUDA provider has few int8
kernels and runs most ops in float between the Q/DQ nodes (INT8_CUDA_NOTE).
"""
from __future__ import annotations

import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

from vss_edge.calibration.graph_analysis import (
    DEFAULT_KEEP_FLOAT,
    ort_quantizable,
    check_runs,
    float_only_nodes,
    graph_io,
    name_nodes,
    op_counts,
)
from vss_edge.calibration.int8_gates import gated_again, is_gated, select_nodes, selecting
from vss_edge.calibration.int8_rewrites import (drop_float_to_float_qdq, per_tensor_left_constants, rewrite_for_int8,
                                                unround_outputs)
from vss_edge.runtime.errors import VssEdgeError

METHODS = ("minmax", "entropy", "percentile")
HISTOGRAM_MAX_SAMPLES = 16

INT8_CUDA_NOTE = ("INT8 (QDQ) graphs are meant for the CPU EP (or TensorRT); do not expect the CUDA provider "
                  "to run them faster than FP16: it has few int8 kernels and runs most ops in float between "
                  "QuantizeLinear/DequantizeLinear")


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


def prepare_for_int8(model_path: str | Path, prepared: str | Path, pre_process: bool = True,
                     layout_rewrites: bool = True):
    """The FP32 graph as it is quantised: ONNX Runtime's quant_pre_process (shape inference, basic
    optimisation; skipped if it fails or changes the graph's I/O), the layout rewrites
    (calibration.int8_rewrites) and unique node names. Deterministic, so node names are stable
    between calibrations (nodes_to_exclude and the node-level budget name these nodes).

    Writes `prepared` and returns (model, pre_process note, rewrite counts).
    """
    import onnx

    model_path, prepared = Path(model_path), Path(prepared)
    source_io = graph_io(onnx.load(str(model_path), load_external_data=False))
    pre_note = "quant_pre_process" if pre_process else "not run"
    if pre_process:
        from onnxruntime.quantization.shape_inference import quant_pre_process

        try:  # shapes are static: symbolic shape inference is slow and adds nothing
            quant_pre_process(str(model_path), str(prepared), skip_symbolic_shape=True)
            if graph_io(onnx.load(str(prepared), load_external_data=False)) != source_io:
                raise ValueError("it changed the graph's inputs or outputs")
        except Exception as e:  # noqa: BLE001 - any failure: quantise the graph as exported
            pre_note = f"skipped: {type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
            prepared.unlink(missing_ok=True)
    if not prepared.exists():
        shutil.copyfile(model_path, prepared)
    model = onnx.load(str(prepared))
    rewrites = rewrite_for_int8(model) if layout_rewrites else {}
    name_nodes(model)
    onnx.save(model, str(prepared))
    return model, pre_note, rewrites


def faster_optimization(path: str | Path, samples: list[dict], threads: int | None = None,
                        rounds: int = 3, fp32_path: str | Path | None = None) -> dict:
    """Time a graph opened at each ONNX Runtime optimisation level (runtime.manifest.OPTIMIZATIONS)
    on up to 2 recorded samples, alternating levels over `rounds` rounds, on this machine
    (fp32_path: the FP32 graph as the runtime opens it, timed in the same rounds).

    Returns {"optimization": the faster level, "ms": {level: median ms per run}, "fp32_ms": the
    FP32 graph's median (None without fp32_path)}. Which level wins depends on the CPU and on what
    stays float between the int8 convolutions (the NHWC pass's Transposes around a float op can
    cost more than the layout gains), so it is measured, not assumed. The sessions are opened as
    the runtime opens them (session_options: workers spin within a run and stop at its end): a
    worker left spinning after one session's run would compete with the next session timed, on a
    2-core CPU enough to double the times and flip the choice from round to round.
    """
    import onnxruntime as ort

    from vss_edge.runtime.manifest import OPTIMIZATIONS
    from vss_edge.runtime.session import session_options

    def open_session(graph, level="all"):
        return ort.InferenceSession(str(graph), session_options(threads, quiet=True, optimization=level),
                                    providers=["CPUExecutionProvider"])

    sessions = {level: open_session(path, level) for level in OPTIMIZATIONS}
    if fp32_path is not None:
        sessions["fp32"] = open_session(fp32_path)
    feeds = samples[:2]
    times: dict[str, list[float]] = {level: [] for level in sessions}
    for session in sessions.values():
        session.run(None, feeds[0])  # warm-up
    for _ in range(rounds):
        for level, session in sessions.items():
            for feed in feeds:
                t0 = time.perf_counter()
                session.run(None, feed)
                times[level].append((time.perf_counter() - t0) * 1000.0)
    ms = {level: round(float(np.median(t)), 2) for level, t in times.items()}
    fp32_ms = ms.pop("fp32", None)
    return {"optimization": min(ms, key=ms.get), "ms": ms, "fp32_ms": fp32_ms}


def _gates(rewrite, model, model_path: Path):
    """rewrite(model) (calibration.int8_gates), its ValueError as a VssEdgeError naming the graph."""
    try:
        return rewrite(model)
    except ValueError as e:
        raise VssEdgeError(f"cannot quantise the gates of '{Path(model_path).name}': {e}") from e


def quantize_graph_int8(model_path: str | Path, out_path: str | Path, inputs: list[dict], method: str = "minmax",
                        per_channel: bool = True, keep_float_ops=DEFAULT_KEEP_FLOAT, nodes_to_exclude=(),
                        max_samples: int | None = None, reduce_range: bool = False,
                        pre_process: bool = True, layout_rewrites: bool = True,
                        threads: int | None = None) -> dict:
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
    layout_rewrites: replace the float ops that break the int8 NHWC layout by exact
    1x1 Convs first (calibration.int8_rewrites; needs the shapes pre_process infers).
    threads: intra-op threads for timing the optimisation levels (`faster_optimization`).

    The result keeps the graph's input and output names, shapes and dtypes; it is
    checked to load and run on the CPU EP before this returns. The record's "session" says
    which ONNX Runtime optimisation level ran it faster here (the bundle's manifest entry
    takes it as "optimization").
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if method not in METHODS:
        raise VssEdgeError(f"calibration method must be one of {', '.join(METHODS)}, got {method!r}")
    if not inputs:
        raise VssEdgeError(f"no calibration inputs for '{model_path}'")
    model_path, out_path = Path(model_path), Path(out_path)
    start = time.perf_counter()
    source = onnx.load(str(model_path))
    source_io = graph_io(source)
    input_names = [name for name, _, _ in source_io[0]]
    missing = [n for n in input_names if n not in inputs[0]]
    if missing:
        raise VssEdgeError(f"calibration inputs for '{model_path.name}' lack {missing}")
    if max_samples is None and method != "minmax":
        max_samples = HISTOGRAM_MAX_SAMPLES
    samples = _even_subset(inputs, max_samples)

    work = Path(tempfile.mkdtemp(prefix=".vss-quant-", dir=out_path.parent if out_path.parent.is_dir() else None))
    try:
        gated = is_gated(source)
        if gated:  # If-gated blocks: quantised as selects, gated again after (calibration.int8_gates)
            onnx.save(_gates(selecting, source, model_path), str(work / "select.onnx"))
        prepared = work / "pre.onnx"
        model, pre_note, rewrites = prepare_for_int8(work / "select.onnx" if gated else model_path, prepared,
                                                     pre_process, layout_rewrites)
        reasons = float_only_nodes(model, keep_float_ops)
        for name in select_nodes(model):
            reasons[name] = "a gate's select: it becomes the If again"
        known = {n.name for n in model.graph.node}
        for name in nodes_to_exclude:
            if name not in known:
                raise VssEdgeError(f"nodes_to_exclude: graph '{model_path.name}' has no node named {name!r}")
            reasons.setdefault(name, "asked for")
        quantizable = ort_quantizable()
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
        rewired = drop_float_to_float_qdq(quantized, set(reasons))
        unrounded = unround_outputs(quantized)
        per_tensor = per_tensor_left_constants(quantized)
        if rewired or unrounded or per_tensor or gated:
            onnx.save(_gates(gated_again, quantized, model_path) if gated else quantized, str(work / "int8.onnx"))
        check_runs(work / "int8.onnx", source_io, samples[0])
        session = faster_optimization(work / "int8.onnx", samples, threads, fp32_path=model_path)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(work / "int8.onnx"), str(out_path))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    present = Counter(n.op_type for n in model.graph.node)
    counts = op_counts(quantized, set(op_types), set(reasons))
    return {
        "precision": "int8", "method": method, "per_channel": bool(per_channel), "reduce_range": bool(reduce_range),
        "format": "QDQ", "activations": "QUInt8 asymmetric", "weights": "QInt8 symmetric",
        "samples": len(samples), "samples_recorded": len(inputs), "pre_process": pre_note,
        "layout_rewrites": rewrites, "session": session, "float_outputs": unrounded,
        "per_tensor_left_constants": per_tensor,
        "excluded_op_types": sorted(set(keep_float_ops) & set(present)),
        "excluded_nodes": dict(sorted(reasons.items())),
        "left_float_by_ort": sorted(t for t in present if t not in quantizable and t not in keep_float_ops),
        "quantized_nodes": counts["QuantizeLinear"],  # QuantizeLinear nodes inserted
        "dequantize_nodes": counts["DequantizeLinear"],
        "quantized_ops": sum(counts["quantized_op_types"].values()),
        "quantized_op_types": counts["quantized_op_types"],
        "seconds": round(time.perf_counter() - start, 2),
    }
