"""Gate residual blocks of a traced ONNX graph: block k runs only when keep[k] is true.

torch.onnx traces every block (tracing cannot keep Python control flow, and TorchScript
modules cannot be mixed into a trace in this PyTorch), so the gating is added on the ONNX
graph: the nodes of each block (found by the module scope torch.onnx writes into node
names, e.g. "/model.nonkey.layer1.1/conv1/Conv") move into the then-branch of an ONNX `If`
whose else-branch is Identity(block input). ONNX Runtime runs only the branch taken, so a
dropped block costs nothing but the If itself. A block must read one activation (its
input; weights and constants are outer-scope values the branch may read) and produce one
value read outside it (its output).
"""
from __future__ import annotations

import re

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper, shape_inference

from vss_edge.exporters.onnx_export import ExportError


def _block_nodes(graph: onnx.GraphProto, scope: str) -> list[int]:
    pattern = re.compile(r"(^|[/.])" + re.escape(scope) + "/")
    return [i for i, n in enumerate(graph.node) if pattern.search(n.name)]


def _constant_values(graph: onnx.GraphProto) -> set[str]:
    """Initializers and values computed from them alone (Constant nodes, the Identity nodes
    torch.onnx writes for de-duplicated initializers...): outer-scope values a branch may read."""
    constants = {i.name for i in graph.initializer}
    for n in graph.node:  # topological order
        if all(not x or x in constants for x in n.input):
            constants.update(n.output)
    return constants


def _resolve_identities(graph: onnx.GraphProto) -> None:
    """Point readers of Identity(initializer) at the initializer and drop those Identity nodes
    (torch.onnx writes them for de-duplicated weights; inside If branches ONNX Runtime
    cannot rename them away and warns)."""
    initializers = {i.name for i in graph.initializer}
    outputs = {o.name for o in graph.output}
    alias = {n.output[0]: n.input[0] for n in graph.node
             if n.op_type == "Identity" and n.input[0] in initializers and n.output[0] not in outputs}
    keep = [n for n in graph.node if not (n.op_type == "Identity" and n.output[0] in alias)]
    for n in keep:
        for j, x in enumerate(n.input):
            if x in alias:
                n.input[j] = alias[x]
    del graph.node[:]
    graph.node.extend(keep)


def gate_blocks(model: onnx.ModelProto, scopes: list[str], keep_input: str = "keep") -> onnx.ModelProto:
    """Return a copy of model with each block in `scopes` wrapped in If(keep[k]).

    Adds the graph input `keep_input`: bool [len(scopes)]. Raises ExportError when a scope
    matches no node, or a block does not have exactly one activation input and one output.
    """
    model = shape_inference.infer_shapes(model)
    graph = model.graph
    _resolve_identities(graph)
    types = {v.name: v.type for v in list(graph.value_info) + list(graph.output) + list(graph.input)}
    constants = _constant_values(graph)

    gated = []  # (first node index, node indices, If node, Gather node)
    for k, scope in enumerate(scopes):
        indices = _block_nodes(graph, scope)
        if not indices:
            raise ExportError(f"gating: no node of block '{scope}' in the traced graph")
        nodes = [graph.node[i] for i in indices]
        produced = {o for n in nodes for o in n.output}
        activations = sorted({x for n in nodes for x in n.input if x and x not in produced and x not in constants})
        index_set = set(indices)
        read_outside = {x for i, n in enumerate(graph.node) if i not in index_set for x in n.input}
        read_outside |= {o.name for o in graph.output}
        outputs = sorted(produced & read_outside)
        if len(activations) != 1 or len(outputs) != 1:
            raise ExportError(f"gating: block '{scope}' reads {activations} and exposes {outputs}; "
                              "expected one input and one output")
        (x,), (y,) = activations, outputs
        if y not in types:
            raise ExportError(f"gating: no type known for the output '{y}' of block '{scope}'")
        then_nodes = []
        for n in nodes:
            copy = onnx.NodeProto()
            copy.CopyFrom(n)
            for j, o in enumerate(copy.output):
                if o == y:
                    copy.output[j] = f"{y}__kept"
            for j, i in enumerate(copy.input):
                if i == y:
                    copy.input[j] = f"{y}__kept"
            then_nodes.append(copy)
        then_branch = helper.make_graph(then_nodes, f"block{k}_kept", [],
                                        [onnx.ValueInfoProto(name=f"{y}__kept", type=types[y])])
        else_branch = helper.make_graph([helper.make_node("Identity", [x], [f"{y}__skipped"])], f"block{k}_skipped",
                                        [], [onnx.ValueInfoProto(name=f"{y}__skipped", type=types[y])])
        index_name = f"{keep_input}__index{k}"
        graph.initializer.append(numpy_helper.from_array(np.array(k, dtype=np.int64), index_name))
        flag = f"{keep_input}__{k}"
        gather = helper.make_node("Gather", [keep_input, index_name], [flag], name=f"/gate{k}/Gather")
        gate = helper.make_node("If", [flag], [y], name=f"/gate{k}/If", then_branch=then_branch,
                                else_branch=else_branch)
        gated.append((indices[0], index_set, gate, gather))

    removed = set().union(*(s for _, s, _, _ in gated))
    starts = {first: (gate, gather) for first, _, gate, gather in gated}
    new_nodes = []
    for i, n in enumerate(graph.node):
        if i in starts:
            gate, gather = starts[i]
            new_nodes += [gather, gate]
        if i not in removed:
            new_nodes.append(n)
    del graph.node[:]
    graph.node.extend(new_nodes)
    graph.input.append(helper.make_tensor_value_info(keep_input, TensorProto.BOOL, [len(scopes)]))
    del graph.value_info[:]  # stale after the rewrite; ONNX Runtime infers its own
    onnx.checker.check_model(model, full_check=True)
    return model



def ungate(model: onnx.ModelProto, keep_input: str = "keep") -> onnx.ModelProto:
    """The inverse of gate_blocks with every block kept: a copy of model with each If gate
    replaced by its then-branch's nodes, and the Gather nodes and the `keep_input` input
    removed. Same outputs as the gated graph with keep all true; used to measure what the
    gates themselves cost."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    flags = {n.output[0] for n in graph.node if n.op_type == "Gather" and n.input[0] == keep_input}
    nodes = []
    for n in graph.node:
        if n.op_type == "Gather" and n.output[0] in flags:
            continue
        if n.op_type == "If" and n.input[0] in flags:
            branch = next(a.g for a in n.attribute if a.name == "then_branch")
            kept, y = branch.output[0].name, n.output[0]
            for inner in branch.node:
                copy = onnx.NodeProto()
                copy.CopyFrom(inner)
                copy.output[:] = [y if o == kept else o for o in copy.output]
                copy.input[:] = [y if x == kept else x for x in copy.input]
                nodes.append(copy)
            continue
        nodes.append(n)
    del graph.node[:]
    graph.node.extend(nodes)
    inputs = [i for i in graph.input if i.name != keep_input]
    del graph.input[:]
    graph.input.extend(inputs)
    index_names = {f"{keep_input}__index{k}" for k in range(len(flags))}
    initializers = [i for i in graph.initializer if i.name not in index_names]
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    onnx.checker.check_model(out, full_check=True)
    return out
