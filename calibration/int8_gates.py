"""INT8 for graphs whose blocks run under If gates (STMG's partial graph: block k runs only when keep[k]).

ONNX Runtime's quantiser does not enter If branches, and ONNX Runtime fuses DequantizeLinear -> Conv
-> QuantizeLinear into QLinearConv only when all three are in one graph (measured: a gated 3x3 conv
runs in float, 22 ms, when its weight's DequantizeLinear is outside the branch, and as QLinearConv,
6.6 ms, when it is inside). So a gated graph is quantised in three steps:

1. `selecting`: each gate's then-branch is inlined, computed always, and a Where(keep[k], block
   output, block input) picks what the If would have given: the same outputs as the gated graph for
   every keep vector, so the recorded feeds (keep included) calibrate every tensor over the values
   deployment gives it (a dropped block's output is its input);
2. the usual QDQ quantisation of that graph, the Where nodes left in float;
3. `gated_again`: each Where becomes an If again. Its then-branch takes the nodes only the block
   output needs (the block's convolutions, their Q/DQ pairs, its weights' DequantizeLinear) and a
   copy of each DequantizeLinear outside it that the branch reads, so every convolution's DQ -> Conv
   -> Q lies in one graph; its else-branch passes the block input on.

Gates are recognised as the exporter writes them (exporters.gating.gate_blocks): If(Gather(keep, k)).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnx

SELECT = "/Where"  # suffix of the select node that stands for gate k while quantising: "/gate{k}/Where"


def gate_flags(graph: onnx.GraphProto, keep_input: str = "keep") -> set[str]:
    """Outputs of the Gather(keep_input, k) nodes: the conditions of the gates."""
    return {n.output[0] for n in graph.node if n.op_type == "Gather" and n.input[0] == keep_input}


def is_gated(model: onnx.ModelProto, keep_input: str = "keep") -> bool:
    """Whether the graph has If gates on `keep_input`."""
    flags = gate_flags(model.graph, keep_input)
    return any(n.op_type == "If" and n.input[0] in flags for n in model.graph.node)


def _branch(node: onnx.NodeProto, name: str) -> onnx.GraphProto:
    return next(a.g for a in node.attribute if a.name == name)


def selecting(model: onnx.ModelProto, keep_input: str = "keep") -> onnx.ModelProto:
    """A copy of the gated model whose gates compute their block always and select with Where.
    ValueError for a gate not in the exporter's form (exporters.gating.gate_blocks)."""
    import onnx
    from onnx import helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    flags = gate_flags(graph, keep_input)
    nodes = []
    for n in graph.node:
        if not (n.op_type == "If" and n.input[0] in flags):
            nodes.append(n)
            continue
        kept, skipped = _branch(n, "then_branch"), _branch(n, "else_branch")
        if len(skipped.node) != 1 or skipped.node[0].op_type != "Identity" or len(kept.output) != 1:
            raise ValueError(f"gate '{n.name}': expected the exporter's form (one output; the skip branch "
                             f"Identity(block input)), got {[m.op_type for m in skipped.node]}")
        (identity,) = skipped.node
        block_output = f"{n.output[0]}__block"
        for inner in kept.node:
            copy = onnx.NodeProto()
            copy.CopyFrom(inner)
            copy.output[:] = [block_output if o == kept.output[0].name else o for o in copy.output]
            copy.input[:] = [block_output if x == kept.output[0].name else x for x in copy.input]
            nodes.append(copy)
        gate = n.name[:-len("/If")] if n.name.endswith("/If") else n.name
        nodes.append(helper.make_node("Where", [n.input[0], block_output, identity.input[0]], [n.output[0]],
                                      name=gate + SELECT))
    del graph.node[:]
    graph.node.extend(nodes)
    return out


def select_nodes(model: onnx.ModelProto, keep_input: str = "keep") -> list[str]:
    """Names of the Where nodes `selecting` wrote (to leave in float)."""
    flags = gate_flags(model.graph, keep_input)
    return [n.name for n in model.graph.node if n.op_type == "Where" and n.input[0] in flags
            and n.name.endswith(SELECT)]


def gated_again(model: onnx.ModelProto, keep_input: str = "keep") -> onnx.ModelProto:
    """The quantised selecting graph with each select Where turned back into an If (module docstring).

    The then-branch holds the nodes whose outputs only the block output needs, found backwards from
    it, and copies of the outside DequantizeLinear nodes they read; the graph keeps its inputs,
    outputs and initializers. Raises ValueError if a select node's block output comes from nothing
    it could move (the block would be empty).
    """
    import onnx
    from onnx import TensorProto, helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    flags = gate_flags(graph, keep_input)
    values = {v.name: v.type for v in list(graph.value_info) + list(graph.output) + list(graph.input)}
    readers: dict[str, list[int]] = {}
    for i, n in enumerate(graph.node):
        for x in n.input:
            readers.setdefault(x, []).append(i)
    producer = {o: i for i, n in enumerate(graph.node) for o in n.output}
    graph_outputs = {o.name for o in graph.output}
    moved: set[int] = set()
    replaced: dict[int, onnx.NodeProto] = {}
    for w, n in enumerate(graph.node):
        if not (n.op_type == "Where" and n.input[0] in flags and n.name.endswith(SELECT)):
            continue
        flag, block_output, block_input = n.input
        branch = {producer[block_output]} if block_output in producer else set()
        for i in range(max(branch, default=-1) - 1, -1, -1):  # backwards: a node all of whose readers are in it
            outs = [o for o in graph.node[i].output if o]
            reads = [r for o in outs for r in readers.get(o, [])]
            if reads and all(r in branch for r in reads) and not any(o in graph_outputs for o in outs):
                branch.add(i)
        if not branch:
            raise ValueError(f"gate '{n.name}': no node computes its block output '{block_output}'")
        inner = [graph.node[i] for i in sorted(branch)]
        made = {o for m in inner for o in m.output}
        copies = []
        for x in sorted({x for m in inner for x in m.input if x and x not in made}):
            p = producer.get(x)
            if p is not None and graph.node[p].op_type == "DequantizeLinear":  # dequantise inside the branch too
                copy = onnx.NodeProto()
                copy.CopyFrom(graph.node[p])
                copy.name, copy.output[0] = f"{copy.name}__in{w}", f"{x}__in{w}"
                copies.append((x, copy))
        rename = {x: c.output[0] for x, c in copies}
        then_nodes = [c for _, c in copies]
        for m in inner:
            copy = onnx.NodeProto()
            copy.CopyFrom(m)
            copy.input[:] = [rename.get(x, x) for x in copy.input]
            then_nodes.append(copy)
        result = n.output[0]
        kind = values.get(result) or values.get(block_input) or helper.make_tensor_type_proto(TensorProto.FLOAT, None)
        then_branch = helper.make_graph(then_nodes, f"{n.name}_kept", [],
                                        [onnx.ValueInfoProto(name=block_output, type=kind)])
        else_branch = helper.make_graph([helper.make_node("Identity", [block_input], [f"{result}__skipped"])],
                                        f"{n.name}_skipped", [],
                                        [onnx.ValueInfoProto(name=f"{result}__skipped", type=kind)])
        name = n.name[:-len(SELECT)] + "/If"
        replaced[w] = helper.make_node("If", [flag], [result], name=name, then_branch=then_branch,
                                       else_branch=else_branch)
        moved |= branch
    nodes = [replaced.get(i, n) for i, n in enumerate(graph.node) if i not in moved]
    del graph.node[:]
    graph.node.extend(nodes)
    return out
