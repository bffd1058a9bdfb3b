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

from vss_edge.calibration.graph_analysis import check_runs, gather_warps, graph_io, name_nodes, node_reads

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


def _skip_float16_round_trips(model: onnx.ModelProto, float32_initializers: dict) -> int:
    """Make the FP32 nodes read FP32 values; returns how many inputs were rewired.

    ONNX Runtime's converter types every float tensor float16, so a blocked (FP32) node's output
    is cast to float16 and back to float32 before the next blocked node reads it, and an
    initializer that a float16 node also reads becomes float16 and is cast back for the FP32
    ones: a warp's point chain, all FP32 nodes, still rounded its coordinates to float16 between
    every two ops (MPVSS at 288x384: flat indices above 4096 in steps of 4, past the map's end).
    Each Cast to float32 of a Cast to float16 of a float32 value reads that value instead (it
    becomes an exact float32 -> float32 Cast, which ONNX Runtime removes); each Cast to float32
    of such an initializer reads a float32 copy of the source's value. Unused casts and
    initializers are dropped.
    """
    from onnx import TensorProto, numpy_helper

    graph = model.graph
    float32 = {v.name for v in [*graph.input, *graph.value_info, *graph.output]
               if v.type.tensor_type.elem_type == TensorProto.FLOAT}
    float32 |= {i.name for i in graph.initializer if i.data_type == TensorProto.FLOAT}
    producer = {o: n for n in graph.node for o in n.output}
    initializers = {i.name: i for i in graph.initializer}

    def cast_to(node, dtype) -> bool:
        return node.op_type == "Cast" and any(a.name == "to" and a.i == dtype for a in node.attribute)

    rewired, copies = 0, {}
    for node in graph.node:
        if not cast_to(node, TensorProto.FLOAT):
            continue
        source, before = node.input[0], producer.get(node.input[0])
        if before is not None and cast_to(before, TensorProto.FLOAT16) and before.input[0] in float32:
            node.input[0] = before.input[0]
            rewired += 1
        elif (source in initializers and initializers[source].data_type == TensorProto.FLOAT16
              and source in float32_initializers):
            if source not in copies:
                copies[source] = numpy_helper.from_array(float32_initializers[source], f"{source}_float32")
            node.input[0] = copies[source].name
            rewired += 1
    graph.initializer.extend(copies.values())
    while True:  # drop what nothing reads any more
        read = {i for n in graph.node for i in node_reads(n)} | {o.name for o in graph.output}
        unused = [n for n in graph.node if n.op_type == "Cast" and not any(o in read for o in n.output)]
        if not unused:
            break
        for n in unused:
            graph.node.remove(n)
    read = {i for n in graph.node for i in node_reads(n)}
    for init in [i for i in graph.initializer if i.name not in read]:
        graph.initializer.remove(init)
    return rewired


def convert_graph_fp16(model_path: str | Path, out_path: str | Path, op_block_list=DEFAULT_FP16_BLOCK) -> dict:
    """Convert one graph to FP16 with float32 I/O kept; returns a small record.

    op_block_list: op types left in FP32 (added to onnxruntime's own block list); the nodes of
    warps written as gathers (graph_analysis.gather_warps) stay FP32 too.
    uint8 frames in and uint8 labels out are untouched; float inputs and outputs
    stay float32 (casts at the edges). The result is checked to load and run on
    the CPU EP with the source graph's input/output names, shapes and dtypes.
    """
    import onnx
    from onnx import numpy_helper
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
    float32_initializers = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer
                            if i.data_type == onnx.TensorProto.FLOAT}
    model = convert_float_to_float16(model, keep_io_types=True, op_block_list=block, node_block_list=warps)
    _drop_duplicate_nodes(model)
    rewired = _skip_float16_round_trips(model, float32_initializers)
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
        "float16_round_trips_skipped": rewired,
        "casts_added": Counter(n.op_type for n in model.graph.node)["Cast"] - present.get("Cast", 0),
        "seconds": round(time.perf_counter() - start, 2),
    }
