"""A whole FP32 bundle made INT8 or FP16: `calibrate_bundle` and its options (torch-free).

Contract: `calibrate_bundle(bundle, video, out, config)` never changes the FP32 bundle,
writes `out` completely or not at all, records each converted graph's calibration in
the new manifest, and returns (out, report) with a JSON-serialisable report. Its
options are one frozen `CalibrationConfig` (in the manner of ONNX Runtime's quantize()
and StaticQuantConfig), checked when it is made: a bad option or an overlapping
calibration / evaluation split is a VssEdgeError before any work is done. `Precision`
and `CalibrationMethod` are the accepted values (str enums; the CLI reads its choices
from them). This module only orchestrates: one graph's INT8 quantisation is
calibration/int8.py, FP16 conversion calibration/fp16.py, what stays float
calibration/graph_analysis.py, the CPU check runtime/cpu.py. Importing it imports
neither onnx nor torch.

`calibrate_bundle` does the whole thing for a bundle and writes a new bundle that the
same runtime runs unchanged (calibration.derived.write_derived_bundle).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from vss_edge.calibration.collect import FrameRange, check_disjoint, collect_inputs
from vss_edge.runtime.cpu import cpu_int8_support, cpu_record, int8_speed_warning
from vss_edge.calibration.fp16 import DEFAULT_FP16_BLOCK, FP16_CPU_WARNING, convert_graph_fp16
from vss_edge.calibration.graph_analysis import DEFAULT_KEEP_FLOAT
from vss_edge.calibration.int8 import INT8_CUDA_NOTE, METHODS, quantize_graph_int8
from vss_edge.runtime.errors import VssEdgeError


class _StrEnum(str, Enum):
    """A str enum whose str() and format() are its value (enum.StrEnum needs Python 3.11; we support 3.10)."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


class Precision(_StrEnum):
    """What `calibrate_bundle` makes of an FP32 bundle."""

    INT8 = "int8"
    FP16 = "fp16"


class CalibrationMethod(_StrEnum):
    """How INT8 activation ranges are calibrated (calibration.int8.METHODS, in the same order)."""

    MINMAX = "minmax"
    ENTROPY = "entropy"
    PERCENTILE = "percentile"


# Graph roles CalibrationConfig.keep_float_roles leaves FP32 by default. Decisions: STMG's mask generator
# decides which blocks run and which frames are key. Motion: the flow nets (GSVNet's FlowLight, MPVSS's
# query flows) regress geometry; an error in a flow moves every pixel warped by it and compounds over the
# propagated frames. Measured on the trained weights (sample clip, calibrated on 0:30, checked on 30:60,
# every other graph INT8): mIoU agreement GSVNet 0.980 -> 0.991, MPVSS 0.974 -> 0.993 with the flow net
# FP32, whose INT8 buys little (GSVNet's flow graph: 1.24x on a VNNI CPU).
DECISION_ROLES = ("mask_generator",)
MOTION_ROLES = ("flow_net",)
DEFAULT_FLOAT_ROLES = DECISION_ROLES + MOTION_ROLES
# An INT8 graph pays only where these run int8; one without any (MPVSS's propagation: its warp and the
# class merge) only adds Q/DQ rounding, and it timed 0.96x FP32 (R50, 480x853)
INT8_COMPUTE = {"Conv", "ConvTranspose", "MatMul", "Gemm"}


@dataclass(frozen=True, kw_only=True)
class CalibrationConfig:
    """The options of `calibrate_bundle` (and `calibration.budget.calibrate_within_budget`).

    precision: Precision or its value ("int8", "fp16").
    method: INT8 calibration method, CalibrationMethod or its value (ignored for fp16).
    calibration_frames: frames the FP32 pipeline is recorded on for INT8, a FrameRange or
        "A:B" (None: 0:30). evaluation_frames: the frames accuracy will be measured on,
        if known (FrameRange, "A:B" or None); they must not overlap calibration_frames.
    graphs: the graphs to convert (None: all); keep_float_graphs: graphs left FP32.
    per_channel: per-output-channel INT8 weights (False: per tensor).
    keep_float_ops: op types left in float in INT8 graphs (graph_analysis.DEFAULT_KEEP_FLOAT).
    fp16_block: op types left FP32 in FP16 graphs (fp16.DEFAULT_FP16_BLOCK).
    max_samples: see calibration.int8.quantize_graph_int8.
    reduce_range: 7-bit INT8 weights; None (auto): on where this CPU has no fast int8 dot product
        (no VNNI / AMX / Arm dot product), following ONNX Runtime's guidance: there the u8s8 kernels'
        pairwise int16 sums saturate (measured on an AVX2 CPU, trained weights: mIoU agreement
        GSVNet 0.924 -> 0.987, MPVSS 0.603 -> 0.987).
    keep_float_roles: graph roles left FP32 (default DEFAULT_FLOAT_ROLES: STMG's mask generator, which
        decides which blocks run and which frames are key: INT8 flipped 17% of its keep decisions and 33 of
        120 key-frame decisions, a flipped decision costs more than any numeric drift; and the flow nets,
        whose errors move every warped pixel: see MOTION_ROLES).
    keep_float_nodes: (graph, node) pairs left float inside INT8 graphs, node names as
        calibration.int8.prepare_for_int8 names them (the node-level budget chooses these).
    keep_slower: keep an INT8 graph that ran slower than its FP32 graph on this machine
        (measured at calibration; False: that graph stays FP32, said in the report's warnings).
    interval: key-frame interval while recording (None: the manifest's scheduler).
    device, threads: where and with how many ONNX Runtime threads the FP32 pipeline records.

    Values are normalised when the config is made (enums, FrameRange, tuples), so a config
    is hashable and compares by value; `dataclasses.replace` makes a checked variant.
    """

    precision: Precision | str = Precision.INT8
    method: CalibrationMethod | str = CalibrationMethod.MINMAX
    calibration_frames: FrameRange | str | None = FrameRange(0, 30)
    evaluation_frames: FrameRange | str | None = None
    graphs: tuple[str, ...] | None = None
    keep_float_graphs: tuple[str, ...] = ()
    per_channel: bool = True
    keep_float_ops: tuple[str, ...] = DEFAULT_KEEP_FLOAT
    fp16_block: tuple[str, ...] = DEFAULT_FP16_BLOCK
    max_samples: int | None = None
    reduce_range: bool | None = None
    keep_float_roles: tuple[str, ...] = DEFAULT_FLOAT_ROLES
    keep_float_nodes: tuple[tuple[str, str], ...] = ()
    keep_slower: bool = False
    interval: int | None = None
    device: str = "cpu"
    threads: int | None = None

    def __post_init__(self):
        def set_(name, value):
            object.__setattr__(self, name, value)

        try:
            set_("precision", Precision(self.precision))
        except (ValueError, TypeError):
            raise VssEdgeError(f"precision must be int8 or fp16, got {self.precision!r}") from None
        try:
            set_("method", CalibrationMethod(self.method))
        except (ValueError, TypeError):
            raise VssEdgeError(f"calibration method must be one of {', '.join(METHODS)}, got {self.method!r}") from None
        set_("calibration_frames", FrameRange.parse(
            self.calibration_frames if self.calibration_frames is not None else FrameRange(0, 30)))
        if self.evaluation_frames is not None:
            set_("evaluation_frames", FrameRange.parse(self.evaluation_frames))
            check_disjoint(self.calibration_frames, self.evaluation_frames)
        if self.graphs is not None:
            set_("graphs", tuple(self.graphs))
        for name in ("keep_float_graphs", "keep_float_ops", "fp16_block", "keep_float_roles"):
            set_(name, tuple(getattr(self, name)))
        set_("keep_float_nodes", tuple(sorted((str(g), str(n)) for g, n in self.keep_float_nodes)))


def _video_record(video) -> dict:
    from vss_edge.runtime.manifest import sha256_file

    path = Path(os.fspath(video)) if isinstance(video, (str, os.PathLike)) else None
    record = {"video": path.name if path is not None else str(video)}
    if path is not None and path.is_file():
        record["video_sha256"] = sha256_file(path)
    return record


def calibrate_bundle(bundle: str | Path, video, out: str | Path,
                     config: CalibrationConfig | None = None) -> tuple[Path, dict]:
    """Write an INT8 or FP16 version of an FP32 bundle to `out`; returns (out, report).

    config: the options (None: CalibrationConfig(), i.e. INT8, minmax, frames 0:30).
    int8: record every graph's inputs with the FP32 pipeline and its real scheduler
    over `config.calibration_frames` of `video`, quantise each selected graph
    (`config.graphs`, None = all) except those in config.keep_float_graphs, which stay FP32.
    fp16: convert each selected graph (no video is read; `video` may be None).
    The report: {precision, graphs: name -> {precision, record}, warnings, seconds}.
    """
    from vss_edge.calibration.derived import write_derived_bundle
    from vss_edge.runtime.manifest import MANIFEST_NAME, load_manifest, sha256_file

    if config is None:
        config = CalibrationConfig()
    elif not isinstance(config, CalibrationConfig):
        raise TypeError(f"calibrate_bundle(bundle, video, out, config): config must be a CalibrationConfig, "
                        f"got {type(config).__name__}")
    precision = config.precision.value
    start = time.perf_counter()
    manifest = load_manifest(bundle)
    not_fp32 = sorted(n for n, g in manifest.graphs.items() if g.precision != "fp32")
    if not_fp32:
        raise VssEdgeError(f"bundle '{bundle}' is not an FP32 bundle (graphs {', '.join(not_fp32)} are "
                           f"{manifest.graphs[not_fp32[0]].precision}); calibrate the FP32 export")
    keep_float_graphs = config.keep_float_graphs
    selected = list(manifest.graphs) if config.graphs is None else list(config.graphs)
    unknown = sorted(set(selected) - set(manifest.graphs)) + sorted(set(keep_float_graphs) - set(manifest.graphs))
    if unknown:
        raise VssEdgeError(f"bundle '{bundle}' has no graph(s) {', '.join(unknown)} "
                           f"(it has {', '.join(manifest.graphs)})")
    by_role = [g for g in selected if manifest.graphs[g].role in config.keep_float_roles and precision == "int8"]
    selected = [g for g in selected if g not in set(keep_float_graphs) | set(by_role)]
    source_sha = sha256_file(Path(bundle) / MANIFEST_NAME)
    base = {"source_manifest_sha256": source_sha}
    warnings = []
    report = {"precision": precision, "source": str(bundle), "graphs": {}, "warnings": warnings}
    files = {}
    work = Path(tempfile.mkdtemp(prefix=".vss-calib-"))
    try:
        if precision == "int8":
            if video is None:
                raise VssEdgeError("int8 calibration needs a calibration video (frames the FP32 pipeline runs on)")
            frames = config.calibration_frames
            warning = int8_speed_warning()
            if warning:
                warnings.append(warning)
            reduce_range = config.reduce_range
            if reduce_range is None:
                reduce_range = not cpu_int8_support()["vnni"]
            for name in by_role:
                why = ("it makes the method's discrete decisions" if manifest.graphs[name].role in DECISION_ROLES
                       else "its errors move every warped pixel" if manifest.graphs[name].role in MOTION_ROLES
                       else "asked for")
                warnings.append(f"graph '{name}' ({manifest.graphs[name].role}) stays FP32: {why} (keep_float_roles)")
            warnings.append(INT8_CUDA_NOTE)
            recorded = collect_inputs(bundle, video, frames, interval=config.interval, device=config.device,
                                      threads=config.threads)
            source = {**_video_record(video), "frames": str(frames), "interval": config.interval or
                      manifest.scheduler.get("params", {}).get("interval"), "tuned_on": cpu_record(), **base}
            for name in selected:
                path = work / f"{name}.int8.onnx"
                record = quantize_graph_int8(manifest.graph_path(name), path, recorded[name],
                                             method=config.method.value, per_channel=config.per_channel,
                                             nodes_to_exclude=[n for g, n in config.keep_float_nodes if g == name],
                                             keep_float_ops=config.keep_float_ops, max_samples=config.max_samples,
                                             reduce_range=reduce_range, threads=config.threads)
                record = {**source, **record}
                if not config.keep_slower and not set(record["quantized_op_types"]) & INT8_COMPUTE:
                    warnings.append(f"graph '{name}': no Conv, MatMul or Gemm in it could run int8 (what it does "
                                    f"stays float), so it stays FP32")
                    continue
                int8_ms, fp32_ms = min(record["session"]["ms"].values()), record["session"]["fp32_ms"]
                if not config.keep_slower and fp32_ms is not None and int8_ms >= fp32_ms:
                    warnings.append(f"graph '{name}': INT8 ran slower than FP32 on this CPU ({int8_ms:.2f} vs "
                                    f"{fp32_ms:.2f} ms per run), so it stays FP32 (keep_slower / --keep-slower "
                                    f"keeps it INT8)")
                    continue
                files[name] = (path, "int8", record)
        else:
            warnings.append(FP16_CPU_WARNING)
            for name in selected:
                path = work / f"{name}.fp16.onnx"
                record = {**base, **convert_graph_fp16(manifest.graph_path(name), path,
                                                       op_block_list=config.fp16_block)}
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
