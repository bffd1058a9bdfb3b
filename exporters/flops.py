"""GFLOPs of a static ONNX graph, counted from its shapes.

Counts 2 x multiply-accumulates of Conv, ConvTranspose, MatMul and Gemm (the ops
that dominate these networks); element-wise ops, resizes and GridSample are not
counted, as the papers' FLOP figures do not count them either.
"""
from __future__ import annotations

import math

import onnx
from onnx import numpy_helper, shape_inference


def _graphs(graph: onnx.GraphProto):
    """graph and, recursively, the subgraphs of its If/Loop nodes."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _graphs(attr.g)


def _shapes(inferred: onnx.ModelProto) -> dict[str, list[int]]:
    shapes = {}
    for graph in _graphs(inferred.graph):
        for vi in list(graph.value_info) + list(graph.input) + list(graph.output):
            dims = vi.type.tensor_type.shape.dim
            if dims and all(d.HasField("dim_value") for d in dims):
                shapes[vi.name] = [d.dim_value for d in dims]
        for init in graph.initializer:
            shapes[init.name] = list(numpy_helper.to_array(init).shape)
        for node in graph.node:
            if node.op_type == "Constant":
                for attr in node.attribute:
                    if attr.name == "value":
                        shapes[node.output[0]] = list(attr.t.dims)
    return shapes


def count_gflops(model: onnx.ModelProto) -> float:
    """Total GFLOPs (2 x MACs) of Conv/ConvTranspose/MatMul/Gemm for one run of the graph.

    Nodes inside If branches are all counted: for a gated graph (exporters.gating) that is
    the cost with every block kept.
    """
    inferred = shape_inference.infer_shapes(model, data_prop=True)  # sizes computed in-graph too
    shapes = _shapes(inferred)
    macs = 0
    for node in (n for g in _graphs(inferred.graph) for n in g.node):
        try:
            if node.op_type == "Conv":
                w = shapes[node.input[1]]  # [Cout, Cin/g, k...]
                out = shapes[node.output[0]]  # [N, Cout, spatial...]
                macs += math.prod(out) * math.prod(w[1:])
            elif node.op_type == "ConvTranspose":
                w = shapes[node.input[1]]  # [Cin, Cout/g, k...]
                x = shapes[node.input[0]]
                macs += math.prod(x) * math.prod(w[1:])
            elif node.op_type in ("MatMul", "Gemm"):
                a = shapes[node.input[0]]
                out = shapes[node.output[0]]
                k = a[-1] if not (node.op_type == "Gemm" and _attr(node, "transA")) else a[0]
                macs += math.prod(out) * k
        except KeyError:
            continue  # shape unknown: not countable statically
    return 2.0 * macs / 1e9


def _attr(node: onnx.NodeProto, name: str) -> int:
    for a in node.attribute:
        if a.name == name:
            return a.i
    return 0


def gated_block_gflops(model: onnx.ModelProto) -> list[float]:
    """GFLOPs inside each If node's then-branch, in graph order: what each gated block of a
    partial graph (exporters.gating) costs when kept."""
    inferred = shape_inference.infer_shapes(model, data_prop=True)
    gates = [n for n in inferred.graph.node if n.op_type == "If"]
    result = []
    for gate in gates:
        branch = next(a.g for a in gate.attribute if a.name == "then_branch")
        sub = onnx.ModelProto()
        sub.CopyFrom(inferred)
        del sub.graph.node[:]
        sub.graph.node.extend(branch.node)
        del sub.graph.output[:]
        sub.graph.output.extend(branch.output)
        result.append(count_gflops(sub))
    return result
