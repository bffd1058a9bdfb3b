"""Where in a graph INT8 loses accuracy: the error each node adds (torch-free).

Contract: `node_errors(prepared_fp32, int8_graph, samples)` runs the FP32 graph as it was
quantised (calibration.int8.prepare_for_int8: the same node and tensor names) and the INT8 QDQ
graph, both with every intermediate tensor made an output (ONNX Runtime's QDQ debugging helpers,
onnxruntime.quantization.qdq_loss_debug; optimisations off, so the QDQ graph computes its int8
arithmetic exactly, in float) on up to `max_samples` recorded feeds, and returns one row per node
of the FP32 graph whose output both graphs have, the largest added error first:

    {"node", "op", "fused": the nodes before it whose outputs the INT8 graph does not have (the
     quantiser folded them together, e.g. a Conv and its Relu; their error counts here), "output",
     "quantized_output": whether the INT8 graph rounds it (Q/DQ),
     "readers": the nodes that read it,
     "sqnr_db": SQNR of what the INT8 graph passes on (after its Q/DQ) against the FP32 value,
     "input_sqnr_db": the worst SQNR among what the node reads (after their Q/DQ; for an If gate,
     what its branches read from outside too),
     "added_db": min(input_sqnr_db, CAP_DB) - min(sqnr_db, CAP_DB): how much accuracy this node
     (its int8 weights and the rounding of its output) costs by itself}

SQNR is calibration.metrics' (dB against the FP32 values, higher is better; inf when exact, and
exact inputs count as CAP_DB). The node-level budget (calibration.budget) keeps the worst nodes in
float, with the readers of their outputs, so that those outputs are not rounded either.
"""
from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np

from vss_edge.calibration.graph_analysis import node_reads
from vss_edge.calibration.metrics import output_metrics

CAP_DB = 60.0  # SQNR above this is as good as exact here
_DQ_OUTPUT = "_DequantizeLinear_Output"  # how ONNX Runtime's QDQ quantiser names a dequantised tensor


def _activations(model_path: Path, samples: list[dict], work: Path, name: str) -> dict[str, list[np.ndarray]]:
    from onnxruntime.quantization.qdq_loss_debug import collect_activations, modify_model_output_intermediate_tensors

    augmented = work / f"{name}.augmented.onnx"
    modify_model_output_intermediate_tensors(str(model_path), str(augmented))
    return collect_activations(str(augmented), iter([dict(s) for s in samples]))


def _sqnr(reference: list[np.ndarray], candidate: list[np.ndarray]) -> float:
    """Pooled SQNR (dB) over the samples; nan when the shapes differ."""
    ref = np.concatenate([np.asarray(r, dtype=np.float64).ravel() for r in reference])
    cand = np.concatenate([np.asarray(c, dtype=np.float64).ravel() for c in candidate])
    if ref.shape != cand.shape:
        return math.nan
    return output_metrics(ref, cand)["sqnr_db"]


def node_errors(prepared_fp32: str | Path, int8_graph: str | Path, samples: list[dict],
                max_samples: int = 3) -> list[dict]:
    """Rows (see the module docstring), the largest added error first."""
    import onnx

    samples = samples[:max_samples]
    nodes = [n for n in onnx.load(str(prepared_fp32), load_external_data=False).graph.node if n.op_type != "Constant"]
    readers: dict[str, list[str]] = {}
    for node in nodes:
        for i in node.input:
            readers.setdefault(i, []).append(node.name)
    with tempfile.TemporaryDirectory(prefix=".vss-node-errors-") as tmp:
        work = Path(tmp)
        qdq = _activations(Path(int8_graph), samples, work, "int8")
        fp32 = _activations(Path(prepared_fp32), samples, work, "fp32")

    def passed_on(tensor: str) -> tuple[float, bool] | None:
        """(SQNR of what the INT8 graph's readers of `tensor` get, whether that is a rounded copy)."""
        if tensor not in fp32:
            return None
        if tensor + _DQ_OUTPUT in qdq:
            return _sqnr(fp32[tensor], qdq[tensor + _DQ_OUTPUT]), True
        if tensor in qdq:
            return _sqnr(fp32[tensor], qdq[tensor]), False
        return None

    producer = {o: n for n in nodes for o in n.output}

    def reads(tensor: str, fused: list) -> float:
        """SQNR of what a reader of `tensor` gets; through producers the QDQ graph fused away (their
        outputs are not in it: a Conv whose Relu the quantiser folded), collected in `fused`."""
        known = passed_on(tensor)
        if known is not None:
            return known[0]
        p = producer.get(tensor)
        if p is None:  # a graph input or an initializer: exact
            return math.inf
        fused.append(p.name)
        return min((reads(i, fused) for i in p.input if i), default=math.inf)

    rows = []
    for node in nodes:
        out = passed_on(node.output[0]) if node.output else None
        if out is None or math.isnan(out[0]):
            continue
        fused: list[str] = []
        inputs = [x for x in (reads(i, fused) for i in node_reads(node) if i) if not math.isnan(x)]
        worst_in = min(inputs, default=math.inf)
        rows.append({"node": node.name, "op": node.op_type, "fused": fused, "output": node.output[0],
                     "quantized_output": out[1], "readers": readers.get(node.output[0], []), "sqnr_db": out[0],
                     "input_sqnr_db": worst_in, "added_db": min(worst_in, CAP_DB) - min(out[0], CAP_DB)})
    rows.sort(key=lambda r: -r["added_db"])
    return rows
