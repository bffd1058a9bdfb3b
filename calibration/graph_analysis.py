"""What stays float in an INT8 graph, and what the graphs hold (torch-free; shared by int8 and fp16).

Contract: `float_only_nodes` names the nodes of an ONNX graph that must not be quantised
(name -> reason) and never changes the graph; `name_nodes` gives every node a unique
name (the only function here that edits a graph). `graph_io` describes a graph's real
inputs and outputs (name, shape, dtype), `check_runs` raises VssEdgeError unless a
converted graph keeps the FP32 graph's I/O, loads on the CPU EP and runs to finite
outputs, and `op_counts` counts the Q/DQ nodes and the op types that run on quantised
activations. onnx and onnxruntime are imported only inside the functions that use them:
importing this module (calibration.quantize's CalibrationConfig, which the CLI imports at
start-up, defaults to DEFAULT_KEEP_FLOAT) needs the runtime's dependencies alone.

Left in float, by default:
- op types in DEFAULT_KEEP_FLOAT: warps (GridSample, AffineGrid), Resize, Softmax,
  ArgMax/ArgMin, TopK, normalisations not folded into a conv (no int8 kernel), and AveragePool
  (quantised, it would keep its input's scale, too coarse for the narrower range of an average);
- the nodes that compute a warp's sampling grid (e.g. flow -> Div -> Transpose -> Mul
  -> Add -> GridSample): a quantised grid moves every sampled pixel;
- a warp written as index gathers (vss_edge.models.sampling: sample points -> Floor -> corner
  indices -> Gather / GatherElements, times bilinear weights, summed; `gather_warps`): the same
  reasons as GridSample, and the weights come from the points' fractions;
- nodes that work on discrete values (class indices from ArgMax cast to float, masks
  from Equal/Not...) or whose result is compared exactly (Equal, Less, ...): GSVNet's
  label-boundary detector is a Conv over the label map followed by Equal, and an 8-bit
  label map would break the comparison;
- 1x1 convolutions over at most 4 input channels (the frame's normalisation, which
  calibration.int8_rewrites turns into one): a 3-channel QLinearConv over the full frame took
  15.4 ms where the float Conv takes ~2 (GSVNet's keyframe graph, 512x1024);
- convolutions over more than two spatial axes (Conv3d: 5-D weights, e.g. GSVNet's unfold of
  3x3 neighbourhoods): the CPU EP has no fast int8 kernel for them (36.9 ms as QLinearConv vs
  2.9 ms in float, GSVNet's propagation at 512x1024);
- ops after the last int8 Conv / MatMul / Gemm on their path (a quantised op there only rounds);
- a MatMul / Gemm that reads a Softmax (attention: 8-bit probabilities lose the small weights);
- a Relu / Clip whose output an If / Loop branch reads (the quantiser would fold it into its
  producer and the branch would read the value before the activation: STMG's gated blocks);
- whatever ONNX Runtime cannot quantize anyway (Cast, Sub, Div, ReduceSum, Equal...).
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from vss_edge.runtime.errors import VssEdgeError
from vss_edge.runtime.session import ORT_DTYPES

if TYPE_CHECKING:
    import onnx

# Op types kept in float by default (as well as what ONNX Runtime cannot quantize anyway).
# Normalisations: the CPU EP has no int8 kernel for them (they run in float between DQ and Q), so
# quantising their scale only adds error; and ORT 1.31 breaks on them: its per-channel axis (1) does not
# fit BatchNormalization's rank-1 scale, and its int32-bias check raises on a LayerNormalization with a
# 2-D scale (TDNet's attention).
# AveragePool: ONNX Runtime's quantiser gives its output its input's scale (QDQDirect8BitOp), but an
# average spans a narrower range than what it averages, so its int8 steps are coarse: on STMG's trained
# DDRNet the DAPPM poolings lost 9-10 dB of SQNR each (logits 31.2 -> 34.0 dB with them float); they
# run on 1/64-resolution maps, where float costs nothing.
DEFAULT_KEEP_FLOAT = ("GridSample", "AffineGrid", "Softmax", "Resize", "ArgMax", "ArgMin", "TopK",
                      "BatchNormalization", "LayerNormalization", "InstanceNormalization", "GroupNormalization",
                      "AveragePool")

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
_GATHERS = {"Gather", "GatherElements"}
# Ops a gather warp's sample points, corner indices and bilinear weights are computed with.
_POINT_CHAIN = _GRID_CHAIN | {"Floor", "Min", "Max", "And", "Not", "GreaterOrEqual", "LessOrEqual", "Greater", "Less",
                              "IsNaN", "Where"}  # (a NaN point read as outside: models.sampling)
_WEIGHTED = {"Conv", "ConvTranspose", "MatMul", "Gemm"}
_SHAPE_ONLY = {"Unsqueeze", "Squeeze", "Reshape", "Flatten", "Transpose", "Identity"}
# Quantisable ops that may compute a divisor from a float value (walked back from a Div's second input)
_DIVISOR_CHAIN = _SHAPE_ONLY | {"Add", "Mul", "Clip", "Relu"}
# Activations ONNX Runtime's QDQ quantiser removes, folding them into the Q/DQ of what they read
_REMOVABLE_ACTIVATIONS = {"Relu", "Clip"}


def ort_quantizable() -> set[str]:
    """The op types ONNX Runtime's quantiser quantises (QOperator or QDQ)."""
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    return set(QLinearOpsRegistry) | set(QDQRegistry)


def subgraph_reads(node) -> set[str]:
    """Names a node's subgraphs (If / Loop / Scan branches) read from the enclosing graphs: ONNX lets a
    branch use any outer tensor or initializer by name, so these count as the node's inputs."""
    reads: set[str] = set()
    for attr in node.attribute:
        subgraphs = ([attr.g] if attr.HasField("g") else []) + list(attr.graphs)
        for sub in subgraphs:
            made = {i.name for i in sub.initializer} | {i.name for i in sub.input}
            for n in sub.node:
                reads.update(i for i in list(n.input) + sorted(subgraph_reads(n)) if i and i not in made)
                made.update(n.output)
    return reads


def node_reads(node) -> list[str]:
    """Everything a node reads: its inputs and what its subgraphs read from outside."""
    return list(node.input) + sorted(subgraph_reads(node))


def _in_channels(node, weight_dims: dict) -> int:
    """A Conv's input channels (weight [Co, Ci / group, ...] times group); a large number if unknown."""
    dims = weight_dims.get(node.input[1]) if len(node.input) > 1 else None
    if dims is None or len(dims) < 2:
        return 1 << 30
    return dims[1] * next((a.i for a in node.attribute if a.name == "group"), 1)


def name_nodes(model: onnx.ModelProto) -> None:
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
    """Nodes to keep in float, name -> reason: op types in keep_float_ops, warp grids, discrete values,
    divisors, what is compared exactly, and convolutions int8 makes slower (with the shape ops feeding them)."""
    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    keep = set(keep_float_ops)
    reasons: dict[str, str] = {}
    weight_dims = {i.name: tuple(i.dims) for i in graph.initializer}
    for n in graph.node:
        if n.op_type in keep:
            reasons[n.name] = f"op type {n.op_type}"
        elif n.op_type in ("Conv", "ConvTranspose") and len(weight_dims.get(n.input[1], ())) > 4:
            reasons[n.name] = f"{len(weight_dims[n.input[1]]) - 2}-D {n.op_type}: no fast int8 kernel on the CPU EP"
        elif n.op_type == "Conv" and _in_channels(n, weight_dims) <= 4 and weight_dims[n.input[1]][2:] == (1, 1):
            reasons[n.name] = "a 1x1 Conv over <= 4 channels (the frame's normalisation): int8 is slower there"
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
    for name, why in gather_warps(model).items():
        reasons.setdefault(name, why)
    # discrete values (class indices, masks) and anything compared exactly
    discrete = set()
    for n in graph.node:  # graph.node is topologically sorted
        ins = [i for i in n.input if i]
        if n.op_type in _DISCRETE_SOURCES or (n.op_type in _DISCRETE_PASS and ins and ins[0] in discrete):
            discrete.update(n.output)
            continue
        if any(i in discrete for i in ins) and n.name not in reasons:
            reasons[n.name] = "works on discrete values (class indices or a mask)"
    _attention_weights(graph, consumers, reasons)
    # A float Conv/MatMul between a DequantizeLinear and a QuantizeLinear is quantised anyway by ONNX
    # Runtime at load (its WeightBiasQuantization pass gives the float weight a Q/DQ pair), so the
    # shape ops that feed it stay float too: its input then comes from a float op, not a DQ.
    for n in list(graph.node):
        if n.op_type in _WEIGHTED and n.name in reasons:
            p = producer.get(n.input[0])
            while p is not None and p.op_type in _SHAPE_ONLY and p.name not in reasons:
                reasons[p.name] = f"keeps the input of float {n.op_type} '{n.name}' float"
                p = producer.get(p.input[0])
    # A divisor: quantised, a small positive sum (x / (sum(x) + eps)) can round to 0 and the quotient is inf
    for n in graph.node:
        if n.op_type == "Div" and len(n.input) > 1:
            stack = [n.input[1]]
            while stack:
                p = producer.get(stack.pop())
                if p is None or p.name in reasons or p.op_type not in _DIVISOR_CHAIN:
                    continue
                reasons[p.name] = f"computes the divisor of Div '{n.name}' (quantised, it can round to 0)"
                stack.extend(i for i in p.input if i)
    _activations_branches_read(graph, reasons)
    _after_the_last_int8_op(graph, producer, reasons)
    for n in graph.node:
        if n.op_type in _COMPARISONS:
            for i in n.input:
                p = producer.get(i)
                if p is not None and p.name not in reasons and p.op_type != "Constant":
                    reasons[p.name] = f"its result is compared exactly by {n.op_type} '{n.name}'"
    return reasons


def gather_warps(model: onnx.ModelProto) -> dict[str, str]:
    """The nodes of every warp written as index gathers, name -> reason (float_only_nodes keeps them
    float; calibration.fp16 keeps them FP32: in float16 a pixel coordinate of 200 moves in steps of 1/8).

    A warp gather is a Gather / GatherElements whose indices come from a Floor of computed points
    (not a constant table, not ArgMax / TopK indices). Its nodes: the chain computing the points and
    indices, the Muls that weight what it gathers (and the chains computing those weights), the Adds
    summing the weighted corners, and the shape ops between them.
    """
    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    found: dict[str, str] = {}

    def chain(start: str) -> list:
        """The point-chain ops that compute `start`."""
        nodes, stack, seen = [], [start], set()
        while stack:
            p = producer.get(stack.pop())
            if p is None or p.name in seen or p.op_type not in _POINT_CHAIN:
                continue
            seen.add(p.name)
            nodes.append(p)
            stack.extend(i for i in p.input if i)
        return nodes

    def mark(nodes: list, why: str) -> None:
        for p in nodes:
            found.setdefault(p.name, why)

    kind: dict[str, tuple[str, str]] = {}  # a warp's tensor -> (corner | weighted | sum, the warp's gather)
    for n in graph.node:  # topologically sorted: a warp's values are seen in the order they are made
        ins = [kind.get(i) for i in n.input if i]
        if n.op_type in _GATHERS and len(n.input) > 1 and producer.get(n.input[1]) is not None:
            points = chain(n.input[1])
            if any(p.op_type == "Floor" for p in points):  # else indices from a table, ArgMax or TopK
                mark(points, f"computes the sample points of warp {n.op_type} '{n.name}'")
                found[n.name] = "a warp (a gather at computed sample points): its values stay float"
                kind[n.output[0]] = ("corner", n.name)
            continue
        known = [k for k in ins if k is not None]
        if not known:
            continue
        warp = known[0][1]
        if n.op_type in _SHAPE_ONLY:
            made = known[0][0]
        elif n.op_type == "Mul" and known[0][0] == "corner" and len(known) == 1:
            made = "weighted"
            for other in n.input:
                if other not in kind:
                    mark(chain(other), f"computes the bilinear weights of warp '{warp}'")
        elif n.op_type == "Add" and len(known) == len(ins) == 2 and {k[0] for k in known} <= {"weighted", "sum"}:
            made = "sum"
        else:
            continue
        found[n.name] = f"weights or sums the bilinear corners of warp '{warp}'"
        kind[n.output[0]] = (made, warp)
    return found


def _attention_weights(graph, consumers: dict, reasons: dict) -> None:
    """A MatMul / Gemm that reads a Softmax (through shape ops) stays float: 8-bit probabilities round
    the small weights of a peaked softmax away (MPVSS's query self-attention probabilities: 4.9 dB SQNR)."""
    for n in graph.node:
        if n.op_type != "Softmax":
            continue
        stack = [n.output[0]]
        while stack:
            for reader in consumers.get(stack.pop(), []):
                if reader.op_type in _SHAPE_ONLY:
                    stack.append(reader.output[0])
                elif reader.op_type in ("MatMul", "Gemm") and reader.name not in reasons:
                    reasons[reader.name] = f"weights values by the probabilities of Softmax '{n.name}'"


def _activations_branches_read(graph, reasons: dict) -> None:
    """A Relu / Clip whose output an If / Loop branch reads stays float. ONNX Runtime's QDQ quantiser
    removes such an activation after a quantised op and gives that op the activation's output name;
    main-graph readers see it through a Q/DQ that clamps like the activation, but a branch is not
    rewired and would read the value before it, negatives included (STMG's gated blocks)."""
    branch_reads = set().union(*(subgraph_reads(n) for n in graph.node))
    for n in graph.node:
        if n.op_type in _REMOVABLE_ACTIVATIONS and n.output[0] in branch_reads and n.name not in reasons:
            reasons[n.name] = ("an If / Loop branch reads its output (quantised, ONNX Runtime would fold it away "
                               "and the branch would read the value before it)")


def _after_the_last_int8_op(graph, producer: dict, reasons: dict) -> None:
    """An op that is not weighted and whose output reaches no int8 Conv / MatMul / Gemm through other
    quantised ops stays float: int8 gains nothing there (its output is dequantised for float readers at
    once) and only rounds (GSVNet's guided sum, Concat -> Mul -> ReduceSum, rounded the guidance
    weights: propagation logits 37.2 -> 42.0 dB with it float)."""
    quantizable = ort_quantizable()
    feeds_int8: set[str] = set()
    stack = [n for n in graph.node if n.op_type in _WEIGHTED and n.name not in reasons]
    while stack:
        for i in node_reads(stack.pop()):
            p = producer.get(i)
            if (p is not None and p.name not in feeds_int8 and p.name not in reasons
                    and p.op_type in quantizable and p.op_type not in _WEIGHTED):
                feeds_int8.add(p.name)
                stack.append(p)
    for n in graph.node:
        if (n.op_type in quantizable and n.op_type not in _WEIGHTED and n.name not in reasons
                and n.name not in feeds_int8):
            reasons[n.name] = "after the last int8 Conv / MatMul on its path: int8 would only round it"


def graph_io(model: onnx.ModelProto) -> tuple[list, list]:
    """([(name, shape, dtype name)] of the real inputs (initializers left out), the same of the outputs)."""
    import onnx

    def describe(values):
        out = []
        for v in values:
            t = v.type.tensor_type
            out.append((v.name, tuple(d.dim_value for d in t.shape.dim),
                        onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name))
        return out

    inits = {i.name for i in model.graph.initializer}
    return describe([v for v in model.graph.input if v.name not in inits]), describe(model.graph.output)


def check_runs(path: Path, source_io: tuple[list, list], sample: dict | None = None) -> None:
    """The converted graph loads on the CPU EP, has the source graph's I/O, and (given a sample) runs."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(path), load_external_data=False)
    if graph_io(model) != source_io:
        raise VssEdgeError(f"'{path}': inputs/outputs {graph_io(model)} differ from the FP32 graph's {source_io}")
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    if sample is None:
        rng = np.random.default_rng(0)
        sample = {}
        for i in session.get_inputs():
            dtype = np.dtype(ORT_DTYPES[i.type])
            if dtype == np.uint8:
                sample[i.name] = rng.integers(0, 256, i.shape, dtype=np.uint8)
            else:
                sample[i.name] = rng.standard_normal(i.shape).astype(dtype)
    for name, value in zip([o.name for o in session.get_outputs()], session.run(None, sample)):
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            raise VssEdgeError(f"'{path}': output '{name}' is not finite on a calibration sample")


def op_counts(model: onnx.ModelProto, quantizable: set[str], excluded: set[str]) -> dict:
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
