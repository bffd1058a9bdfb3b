"""The shared export step: PyTorch module -> checked, verified, static ONNX graph.

For each graph: torch.onnx.export (TorchScript exporter, static shapes), cap the IR
version, onnx.checker, verify against PyTorch on the real example inputs, then try
onnxsim and keep its result only if it still verifies. Nothing is written to the
final path unless verification passed.
"""
from __future__ import annotations

import io
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort
import torch

from vss_edge.exporters.flops import count_gflops
from vss_edge.runtime.errors import VssEdgeError
from vss_edge.runtime.manifest import TensorSpec
from vss_edge.runtime.preprocess import to_graph_input
from vss_edge.runtime.session import ORT_DTYPES

OPSET = 17  # GridSample needs >= 16, LayerNormalization 17
# onnx may write an IR version newer than the installed (or the robot's) ONNX Runtime
# reads; IR 8 is what opset 17 needs and ONNX Runtime >= 1.11 reads it.
IR_VERSION = 8
FLOAT_RTOL = 1e-3  # max |onnx - torch| relative to max |torch|, per output
LABEL_AGREEMENT = 0.999  # fraction of equal pixels for integer (label) outputs


class ExportError(VssEdgeError):
    """An exported graph does not reproduce its PyTorch module."""


@dataclass
class ExportedGraph:
    name: str
    model: onnx.ModelProto
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    gflops: float
    simplified: bool
    verification: dict  # output name -> worst error over the examples


def _ort_session(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _specs(values) -> list[TensorSpec]:
    return [TensorSpec(v.name, tuple(v.shape), ORT_DTYPES.get(v.type, v.type)) for v in values]


def compare_outputs(actual: np.ndarray, expected: np.ndarray) -> tuple[float, bool]:
    """(error, ok): relative max error for floats, disagreement fraction for integers."""
    if actual.shape != expected.shape:
        return float("inf"), False
    if np.issubdtype(expected.dtype, np.integer):
        disagreement = float(np.mean(actual != expected))
        return disagreement, disagreement <= 1.0 - LABEL_AGREEMENT
    scale = max(float(np.max(np.abs(expected))), 1e-6)
    err = float(np.max(np.abs(actual.astype(np.float64) - expected))) / scale
    return err, err <= FLOAT_RTOL


def verify(model: onnx.ModelProto, examples: list[dict], expected: list[dict]) -> tuple[dict, list[str]]:
    """Run model on each example feed; returns (worst error per output, failures)."""
    session = _ort_session(model)
    worst: dict[str, float] = {}
    failures = []
    for i, (feeds, ref) in enumerate(zip(examples, expected)):
        names = list(ref)
        for name, got in zip(names, session.run(names, feeds)):
            err, ok = compare_outputs(got, ref[name])
            worst[name] = max(worst.get(name, 0.0), err)
            if not ok:
                failures.append(f"example {i}, output '{name}': error {err:.3g}")
    return worst, failures


def _finish(model: onnx.ModelProto) -> onnx.ModelProto:
    model.ir_version = min(model.ir_version, IR_VERSION)
    onnx.checker.check_model(model, full_check=True)
    return model


def export_graph(name: str, module: torch.nn.Module, examples: list[tuple[torch.Tensor, ...]],
                 input_names: list[str], output_names: list[str], simplify: bool = True,
                 transform: Callable[[onnx.ModelProto], onnx.ModelProto] | None = None) -> ExportedGraph:
    """Export module (eval mode) and verify it on every example input tuple.

    examples: real inputs (from real frames), the first also used for tracing.
    transform: a rewrite of the traced graph (e.g. exporters.gating), applied before
    verification, so the verified graph is the rewritten one.
    Raises ExportError if the exported (or simplified) graph does not match.
    """
    module.eval()
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, examples[0], buffer, input_names=input_names, output_names=output_names,
            opset_version=OPSET, dynamo=False, do_constant_folding=True,
        )
        expected = []
        for ex in examples:
            outs = module(*ex)
            outs = outs if isinstance(outs, tuple) else (outs,)
            expected.append({n: o.numpy() for n, o in zip(output_names, outs)})
    feeds = [{n: t.numpy() for n, t in zip(input_names, ex)} for ex in examples]
    model = _finish(onnx.load_from_string(buffer.getvalue()))
    if transform is not None:
        model = _finish(transform(model))
    worst, failures = verify(model, feeds, expected)
    if failures:
        raise ExportError(f"graph '{name}' does not match PyTorch after export: " + "; ".join(failures[:3]))
    simplified = False
    if simplify:
        try:
            import onnxsim

            candidate, _ = onnxsim.simplify(model, check_n=0)
            candidate = _finish(candidate)
            cand_worst, cand_failures = verify(candidate, feeds, expected)
            if not cand_failures:
                model, worst, simplified = candidate, cand_worst, True
        except Exception as e:  # onnxsim is an optimisation; the unsimplified graph stands
            warnings.warn(f"onnxsim could not simplify graph '{name}': {e}")
    session = _ort_session(model)
    dynamic = [f"{v.name} {v.shape}" for v in list(session.get_inputs()) + list(session.get_outputs())
               if not all(isinstance(d, int) for d in v.shape)]
    if dynamic:  # a bundle's graphs are static: the manifest, calibration and the runtime rely on it
        raise ExportError(f"graph '{name}' has inputs or outputs of unknown size after export: {', '.join(dynamic)}")
    return ExportedGraph(
        name=name, model=model, inputs=_specs(session.get_inputs()), outputs=_specs(session.get_outputs()),
        gflops=round(count_gflops(model), 4), simplified=simplified, verification=worst,
    )


def drop_outputs(graph: ExportedGraph, names: set[str]) -> ExportedGraph:
    """The exported graph without the outputs `names` and every node only they needed.

    The rest is the verified graph itself (the same nodes, the same values), so its
    verification stands; GFLOPs and the output specs are recomputed. Used for host labels:
    the label tail (resize + argmax) leaves the graph and the scores stay.
    """
    model = onnx.ModelProto()
    model.CopyFrom(graph.model)
    g = model.graph
    kept_outputs = [o for o in g.output if o.name not in names]
    del g.output[:]
    g.output.extend(kept_outputs)
    needed = {o.name for o in g.output}
    kept = []
    for node in reversed(list(g.node)):  # topological order: a node's consumers come after it
        if any(out in needed for out in node.output):
            kept.append(node)
            needed.update(i for i in node.input if i)
    del g.node[:]
    g.node.extend(reversed(kept))
    initializers = [init for init in g.initializer if init.name in needed]
    del g.initializer[:]
    g.initializer.extend(initializers)
    values = [v for v in g.value_info if v.name in needed]
    del g.value_info[:]
    g.value_info.extend(values)
    onnx.checker.check_model(model)
    session = _ort_session(model)
    return ExportedGraph(
        name=graph.name, model=model, inputs=_specs(session.get_inputs()), outputs=_specs(session.get_outputs()),
        gflops=round(count_gflops(model), 4), simplified=graph.simplified,
        verification={k: v for k, v in graph.verification.items() if k not in names},
    )


def save_model(model: onnx.ModelProto, path: str | os.PathLike) -> None:
    onnx.save_model(model, str(path))


def real_frames(height: int, width: int, video: str | None, count: int) -> list[torch.Tensor]:
    """The first `count` frames of video (default: the sample clip) as uint8 [1,H,W,3] tensors."""
    from vss_edge.runtime.sources import open_source, sample_clip_path

    frames = []
    with open_source(video or sample_clip_path()) as source:
        for frame in source:
            frames.append(torch.from_numpy(to_graph_input(frame, height, width)))
            if len(frames) == count:
                break
    return frames
