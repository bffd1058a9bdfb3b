"""One graph converted to FP16 with ONNX Runtime's converter (torch-free).

Contract: `convert_graph_fp16` reads an FP32 .onnx file and writes an FP16 graph with the
same input and output names, shapes and dtypes (float I/O stays float32, uint8 stays
uint8) that loads and runs on the CPU EP (checked before it returns; the file appears
atomically, or not at all), and returns a JSON-serialisable record; the source file is
never changed. It needs no calibration data. onnx and onnxruntime are imported when a
graph is converted, not when this module is.

FP16 (`convert_graph_fp16`): onnxruntime.transformers.float16 with float I/O kept
(keep_io_types) and a block list; meant for the CUDA provider. The CPU EP runs it, but
has FP16 kernels for few ops and inserts casts around the rest, so it is usually slower.
"""
from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from vss_edge.calibration.graph_analysis import check_runs, gather_warps, graph_io, name_nodes

if TYPE_CHECKING:
    import onnx

# FP16 block list on top of onnxruntime's own DEFAULT_OP_BLOCK_LIST (always kept).
DEFAULT_FP16_BLOCK = ("GridSample", "AffineGrid", "ArgMax", "ArgMin", "Softmax")
FP16_CPU_WARNING = "FP16 is meant for the CUDA provider; on the CPU EP it is usually slower than FP32"


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

    op_block_list: op types left in FP32 (added to onnxruntime's own block list); the nodes of
    warps written as gathers (graph_analysis.gather_warps) stay FP32 too.
    uint8 frames in and uint8 labels out are untouched; float inputs and outputs
    stay float32 (casts at the edges). The result is checked to load and run on
    the CPU EP with the source graph's input/output names, shapes and dtypes.
    """
    import onnx
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    model_path, out_path = Path(model_path), Path(out_path)
    start = time.perf_counter()
    source = onnx.load(str(model_path))
    source_io = graph_io(source)
    block = sorted(set(DEFAULT_OP_BLOCK_LIST) | set(op_block_list))
    model = onnx.ModelProto()
    model.CopyFrom(source)
    _constants_to_initializers(model)
    name_nodes(model)
    warps = sorted(gather_warps(model))  # a warp's sample points in float16 move by up to 1/8 pixel
    model = convert_float_to_float16(model, keep_io_types=True, op_block_list=block, node_block_list=warps)
    _drop_duplicate_nodes(model)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.tmp")
    try:
        onnx.save(model, str(tmp))
        check_runs(tmp, source_io)
        os.replace(tmp, out_path)
    finally:
        tmp.unlink(missing_ok=True)
    present = Counter(n.op_type for n in source.graph.node)
    return {
        "precision": "fp16", "method": "onnxruntime.transformers.float16.convert_float_to_float16",
        "keep_io_types": True, "op_block_list": sorted(set(op_block_list)),
        "blocked_op_types": sorted(t for t in present if t in set(block)),
        "blocked_warp_nodes": len(warps),
        "casts_added": Counter(n.op_type for n in model.graph.node)["Cast"] - present.get("Cast", 0),
        "seconds": round(time.perf_counter() - start, 2),
    }
