"""Exact graph rewrites that let an INT8 graph keep ONNX Runtime's int8 NHWC layout (torch-free).

ONNX Runtime's CPU EP runs a QDQ graph's convolutions as NHWC QLinearConv. Any float op between
them that the NHWC pass does not know breaks the layout: Transposes go in around it, and the op
itself runs on NHWC data in a way it was not written for (the in-graph normalisation's Sub and Div
broadcast over a 3-wide innermost axis run ~10x slower; a BatchNormalization that no Conv absorbs,
as in the pre-activation blocks of SwiftNet and DDRNet, runs in float between a DQ and a Q with two
Transposes). Each rewrite here replaces such ops by an ordinary 1x1 Conv, which every layout pass
and the quantiser know, computing the same values (up to float rounding: the products are
regrouped):

- `fold_channel_affine`: a chain of elementwise Mul / Add / Sub / Div by per-channel constants on
  an NCHW tensor (the normalisation (x * scale - mean) / std), or a BatchNormalization (inference),
  -> one depthwise 1x1 Conv (weight a_c, bias b_c: y = a_c x + b_c).
- `fold_channel_flip`: a Slice that reverses the channel axis (BGR <-> RGB) of a 1x1 Conv's output
  -> a 1x1 Conv with the output channels reversed, reading the same input.

One more rewrite keeps an INT8 graph correct on OpenVINO (2026.4's CPU plugin):

- `fold_padded_average_pool`: an AveragePool that counts its zero padding (count_include_pad=1,
  pads > 0; PyTorch's AvgPool2d default, as in DDRNet's DAPPM) -> a depthwise Conv with weights
  1/(kh*kw), the same kernel, strides and pads. OpenVINO's low-precision pass moves the
  DequantizeLinear's zero-point subtraction past such a pool, so the padding counts as -zero_point
  * scale instead of 0: its output comes out short by zero_point * scale * (padded share of the
  window), which on DDRNet's 1/64-resolution pyramid (windows mostly padding) took STMG's INT8
  key-frame graph to 9 dB SQNR. A Conv's padding it handles right; ONNX Runtime runs both the same.

Contract: `rewrite_for_int8(model)` edits the ModelProto in place (the FP32 file on disk is never
touched: calibration.int8 rewrites its own copy before quantising) and returns what it changed,
{"channel_affine": n, "batch_norm": n, "channel_flip": n, "padded_average_pool": n}. It only rewrites patterns whose
constants it can read (initializers or Constant nodes) and whose shapes are known (4-D, channel
count from the constant or the BN), and never changes the graph's inputs or outputs.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from vss_edge.calibration.graph_analysis import node_reads

if TYPE_CHECKING:
    import onnx

_AFFINE_OPS = ("Mul", "Add", "Sub", "Div")


class _Graph:
    """Index of a graph: producers, consumers and constant values, kept up to date by the rewrites."""

    def __init__(self, model: onnx.ModelProto):
        from onnx import numpy_helper

        self.model, self.graph = model, model.graph
        self.consts = {i.name: numpy_helper.to_array(i) for i in self.graph.initializer}
        for n in self.graph.node:
            if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
                self.consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
        self.outputs = {o.name for o in self.graph.output}
        self.shapes = {}  # tensor -> static shape, where shape inference or the graph's I/O says
        for v in list(self.graph.value_info) + list(self.graph.input) + list(self.graph.output):
            dims = v.type.tensor_type.shape.dim
            if v.type.tensor_type.HasField("shape") and all(d.HasField("dim_value") for d in dims):
                self.shapes[v.name] = tuple(d.dim_value for d in dims)
        self.used = {n.name for n in self.graph.node} | set(self.consts)
        self.refresh()

    def refresh(self) -> None:
        self.producer = {o: n for n in self.graph.node for o in n.output}
        self.consumers: dict[str, list] = {}
        for n in self.graph.node:
            for i in node_reads(n):
                self.consumers.setdefault(i, []).append(n)

    def channels(self, tensor: str) -> int | None:
        """The channel count of a 4-D (NCHW) tensor, None when it is not known to be 4-D."""
        shape = self.shapes.get(tensor)
        return shape[1] if shape is not None and len(shape) == 4 else None

    def only_consumer(self, tensor: str):
        users = self.consumers.get(tensor, [])
        return users[0] if len(users) == 1 and tensor not in self.outputs else None

    def fresh(self, base: str) -> str:
        name, k = base, 0
        while name in self.used:
            k += 1
            name = f"{base}_{k}"
        self.used.add(name)
        return name

    def add_conv(self, x: str, weight: np.ndarray, bias: np.ndarray, out: str, group: int, name: str):
        """A 1x1 Conv out = conv(x, weight [Co, Ci/group, 1, 1], bias [Co]) (float32 initializers)."""
        from onnx import helper, numpy_helper

        w_name, b_name = self.fresh(f"{name}_weight"), self.fresh(f"{name}_bias")
        self.graph.initializer.extend([numpy_helper.from_array(weight.astype(np.float32), w_name),
                                       numpy_helper.from_array(bias.astype(np.float32), b_name)])
        return helper.make_node("Conv", [x, w_name, b_name], [out], name=self.fresh(name), group=group,
                                kernel_shape=[1, 1], strides=[1, 1], pads=[0, 0, 0, 0], dilations=[1, 1])


def _per_channel(value: np.ndarray | None) -> np.ndarray | None:
    """A constant that broadcasts per channel over NCHW ([C,1,1], [1,C,1,1] or a scalar) -> float64 [C]
    (a scalar: [1]); None for anything else."""
    if value is None or value.dtype.kind != "f":
        return None
    v = np.asarray(value, dtype=np.float64)
    if v.size == 1:
        return v.reshape(1)
    shape = v.shape
    if len(shape) == 3 and shape[1:] == (1, 1):
        return v.reshape(-1)
    if len(shape) == 4 and shape[0] == 1 and shape[2:] == (1, 1):
        return v.reshape(-1)
    return None


def _affine_step(g: _Graph, node, x: str):
    """(a, b) with node(x) = a * x + b per channel, or None when node is not such a step on x."""
    if node.op_type not in _AFFINE_OPS or len(node.input) != 2 or x not in node.input:
        return None
    other = node.input[1] if node.input[0] == x else node.input[0]
    c = _per_channel(g.consts.get(other))
    if c is None:
        return None
    one, zero = np.ones_like(c), np.zeros_like(c)
    if node.op_type == "Mul":
        return c, zero
    if node.op_type == "Add":
        return one, c
    if node.op_type == "Sub":
        return (one, -c) if node.input[0] == x else (-one, c)
    return (1.0 / c, zero) if node.input[0] == x else None  # Div: only x / c is affine


def fold_channel_affine(model: onnx.ModelProto) -> dict:
    """Per-channel affine chains and BatchNormalizations -> depthwise 1x1 Convs; returns counts."""
    g = _Graph(model)
    counts = {"channel_affine": 0, "batch_norm": 0}
    replaced, new_nodes = set(), {}
    for node in list(g.graph.node):
        if node.name in replaced:
            continue
        if node.op_type == "BatchNormalization" and len(node.output) == 1 and all(
                i in g.consts for i in node.input[1:5]):
            scale, bias, mean, var = (np.asarray(g.consts[i], dtype=np.float64) for i in node.input[1:5])
            eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
            a = scale / np.sqrt(var + eps)
            chain, x, out, b = [node], node.input[0], node.output[0], bias - a * mean
            kind = "batch_norm"
        else:
            x = next((i for i in node.input if i not in g.consts), None)
            step = _affine_step(g, node, x) if x is not None else None
            if step is None or g.channels(x) is None:
                continue  # (nodes are in topological order: a chain is met at its head first)
            a, b = step
            chain, out = [node], node.output[0]
            while True:  # extend along single consumers
                nxt = g.only_consumer(out)
                step = _affine_step(g, nxt, out) if nxt is not None else None
                if step is None:
                    break
                a, b = step[0] * a, step[0] * b + step[1]
                chain.append(nxt)
                out = nxt.output[0]
            if a.size == 1 and b.size == 1:
                continue  # scalars only: an elementwise op, nothing NHWC-hostile
            kind = "channel_affine"
        channels = g.channels(x)
        if channels is None or a.size not in (1, channels) or b.size not in (1, channels):
            continue
        counts[kind] += 1
        a, b = np.broadcast_to(a, channels), np.broadcast_to(b, channels)
        conv = g.add_conv(x, a.reshape(channels, 1, 1, 1), b, out, group=channels,
                          name=f"{chain[0].name}_as_conv")
        replaced.update(n.name for n in chain)
        new_nodes[chain[-1].name] = conv
    _splice(g, replaced, new_nodes)
    return counts


def _is_channel_flip(g: _Graph, node, channels: int) -> bool:
    """A Slice reversing axis 1 whole (starts -1 or C-1, step -1, ends past the front)."""
    if node.op_type != "Slice" or len(node.input) < 5:
        return False
    starts, ends, axes, steps = (g.consts.get(i) for i in node.input[1:5])
    if any(v is None or v.size != 1 for v in (starts, ends, axes, steps)):
        return False
    start, end, axis, step = (int(np.asarray(v).reshape(-1)[0]) for v in (starts, ends, axes, steps))
    return axis == 1 and step == -1 and start in (-1, channels - 1) and end <= -channels - 1


def fold_channel_flip(model: onnx.ModelProto) -> int:
    """Slices reversing the channels of a 1x1 Conv's output -> a 1x1 Conv with reversed channels."""
    g = _Graph(model)
    replaced, new_nodes = set(), {}
    for node in list(g.graph.node):
        conv = g.producer.get(node.input[0]) if node.op_type == "Slice" else None
        if conv is None or conv.op_type != "Conv" or len(conv.input) != 3:
            continue
        weight, bias = g.consts.get(conv.input[1]), g.consts.get(conv.input[2])
        if weight is None or bias is None or weight.shape[2:] != (1, 1):
            continue
        attrs = {a.name: a for a in conv.attribute}
        if any(list(attrs[k].ints) not in ([1, 1], [0, 0, 0, 0]) for k in ("strides", "pads", "dilations")
               if k in attrs):
            continue
        channels, group = weight.shape[0], attrs["group"].i if "group" in attrs else 1
        if not _is_channel_flip(g, node, channels):
            continue
        if group == 1:
            full = weight.reshape(channels, -1)
        elif group == channels and weight.shape[1] == 1:
            full = np.diag(weight.reshape(-1))
        else:
            continue
        flipped = full[::-1].reshape(channels, -1, 1, 1)
        replaced.add(node.name)
        new_nodes[node.name] = g.add_conv(conv.input[0], flipped, bias[::-1], node.output[0], group=1,
                                          name=f"{node.name}_as_conv")
    _splice(g, replaced, new_nodes)
    return len(replaced)


def fold_padded_average_pool(model: onnx.ModelProto) -> int:
    """AveragePools with count_include_pad=1 and non-zero pads -> depthwise Convs (weights 1/area)."""
    from onnx import helper, numpy_helper

    g = _Graph(model)
    replaced, new_nodes = set(), {}
    for node in list(g.graph.node):
        if node.op_type != "AveragePool":
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        kernel, pads = list(attrs.get("kernel_shape", [])), list(attrs.get("pads", []))
        channels = g.channels(node.input[0])
        if (attrs.get("count_include_pad", 0) != 1 or not any(pads) or len(kernel) != 2 or channels is None
                or attrs.get("ceil_mode", 0) != 0 or attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET")
                or any(d != 1 for d in attrs.get("dilations", [1, 1]))):
            continue  # (ceil_mode's partial windows divide by their clipped size: not a fixed-weight Conv)
        weight = np.full((channels, 1, *kernel), 1.0 / (kernel[0] * kernel[1]), dtype=np.float32)
        w_name = g.fresh(f"{node.name}_as_conv_weight")
        g.graph.initializer.append(numpy_helper.from_array(weight, w_name))
        replaced.add(node.name)
        new_nodes[node.name] = helper.make_node(
            "Conv", [node.input[0], w_name], [node.output[0]], name=g.fresh(f"{node.name}_as_conv"),
            group=channels, kernel_shape=kernel, strides=list(attrs.get("strides", [1, 1])), pads=pads,
            dilations=[1, 1])
    _splice(g, replaced, new_nodes)
    return len(replaced)


def _splice(g: _Graph, replaced: set, new_nodes: dict) -> None:
    """Drop the replaced nodes, put each new node where the last node it replaces was (the order
    stays topological: its input is produced before the chain's head), and unused constants."""
    if not replaced:
        return
    nodes = []
    for n in g.graph.node:
        if n.name in new_nodes:
            nodes.append(new_nodes[n.name])
        if n.name not in replaced:
            nodes.append(n)
    del g.graph.node[:]
    g.graph.node.extend(nodes)
    used = {i for n in g.graph.node for i in node_reads(n)} | g.outputs
    keep = [i for i in g.graph.initializer if i.name in used]
    del g.graph.initializer[:]
    g.graph.initializer.extend(keep)
    nodes = [n for n in g.graph.node if n.op_type != "Constant" or n.output[0] in used]
    del g.graph.node[:]
    g.graph.node.extend(nodes)


def rewrite_for_int8(model: onnx.ModelProto) -> dict:
    """All rewrites, in order (affine chains first: the flip folds into the Conv they become)."""
    counts = fold_channel_affine(model)
    counts["channel_flip"] = fold_channel_flip(model)
    counts["padded_average_pool"] = fold_padded_average_pool(model)
    return counts


def drop_float_to_float_qdq(model: onnx.ModelProto, float_nodes: set[str]) -> int:
    """Let float nodes read a float node's output directly, not through the QuantizeLinear ->
    DequantizeLinear pair ONNX Runtime's quantiser put on it for its quantised readers (after
    quantisation; a pair left with no reader is removed). Returns the float inputs rewired.

    Such a pair only rounds the values, and in front of a float Conv it makes ONNX Runtime quantise
    that Conv anyway at load (its WeightBiasQuantization pass fuses DQ -> Conv -> Q with the float
    weight): GSVNet's 3-D unfold Conv, kept float for speed, then ran as a 37 ms QLinearConv.
    """
    g = _Graph(model)
    rewired = 0
    for q in list(g.graph.node):
        source = g.producer.get(q.input[0]) if q.op_type == "QuantizeLinear" else None
        if source is None or source.name not in float_nodes:
            continue
        for dq in g.consumers.get(q.output[0], []):
            if dq.op_type != "DequantizeLinear":
                continue
            for reader in g.consumers.get(dq.output[0], []):
                if reader.name in float_nodes:
                    for i, name in enumerate(reader.input):
                        if name == dq.output[0]:
                            reader.input[i] = q.input[0]
                            rewired += 1
    if rewired:
        _drop_unread_qdq(g)
    return rewired


# Ops that only move or relabel values: an output read through them is still the value computed before them.
_LAYOUT_OPS = ("Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Identity")


def _layout_tail(g: _Graph, name: str):
    """The first node of the chain of layout ops (_LAYOUT_OPS, each the only reader of what it reads
    next) that ends in graph output `name`, or None when `name` is not made by one."""
    first, node = None, g.producer.get(name)
    while node is not None and node.op_type in _LAYOUT_OPS and node.input:
        first = node
        src = node.input[0]
        before = g.producer.get(src)
        if before is None or before.op_type not in _LAYOUT_OPS or len(g.consumers.get(src, [])) != 1 \
                or src in g.outputs:
            break
        node = before
    if first is not None and (g.consumers.get(name) or any(
            len(g.consumers.get(o, [])) > 1 for o in first.output)):
        return None  # read inside the graph too: left as it is
    return first


def unround_outputs(model: onnx.ModelProto) -> list[str]:
    """Let each graph output leave the graph as the float value it was computed as, not through the
    QuantizeLinear -> DequantizeLinear pair ONNX Runtime's quantiser put on it (after quantisation;
    readers inside the graph keep reading the rounded copy). Returns the outputs changed. An output
    made by layout ops only (Reshape, Transpose...: MPVSS's class and mask logits) from a rounded
    value reads that value unrounded instead.

    Rounding an output to 8 bits buys no speed (nothing after it in the graph runs int8) and costs
    accuracy where it counts most: MPVSS's flows (8-bit steps of the flow range move every warped
    mask), the logits labels come from, and state such as STMG's features, which the next frame
    quantises again at its own first reader. The op that computed the output keeps its int8 inputs and weights and runs in
    float (its output is no longer quantised).
    """
    g = _Graph(model)
    changed = []
    for name in [o.name for o in model.graph.output]:
        first = _layout_tail(g, name)
        if first is not None:
            dq = g.producer.get(first.input[0])
            q = g.producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            if q is not None and q.op_type == "QuantizeLinear" and g.producer.get(q.input[0]) is not None \
                    and q.input[0] not in g.outputs:
                first.input[0] = q.input[0]
                g.refresh()
                changed.append(name)
            continue
        dq = g.producer.get(name)
        q = g.producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
        if q is None or q.op_type != "QuantizeLinear":
            continue
        value = q.input[0]
        source = g.producer.get(value)
        readers = g.consumers.get(value, []) + g.consumers.get(name, [])
        if source is None or value in g.outputs or any(name not in r.input and value not in r.input for r in readers):
            continue  # a graph input, another output, or read from inside a branch: left as it is
        rounded = f"{name}_rounded"
        while rounded in g.producer or rounded in g.consumers or rounded in g.consts:
            rounded += "_"
        for reader in g.consumers.get(name, []):  # readers inside the graph keep the rounded copy
            reader.input[:] = [rounded if i == name else i for i in reader.input]
        dq.output[0] = rounded
        for reader in g.consumers.get(value, []):
            reader.input[:] = [name if i == value else i for i in reader.input]
        source.output[:] = [name if o == value else o for o in source.output]
        g.refresh()
        changed.append(name)
    if changed:
        _drop_unread_qdq(g)
    return changed


def _drop_unread_qdq(g: _Graph) -> None:
    """Remove DequantizeLinear nodes nothing reads, then QuantizeLinear nodes nothing reads."""
    for op in ("DequantizeLinear", "QuantizeLinear"):
        g.refresh()
        kept = [n for n in g.graph.node
                if n.op_type != op or g.consumers.get(n.output[0]) or n.output[0] in g.outputs]
        del g.graph.node[:]
        g.graph.node.extend(kept)
    used = {i for n in g.graph.node for i in node_reads(n)}
    keep = [i for i in g.graph.initializer if i.name in used]
    del g.graph.initializer[:]
    g.graph.initializer.extend(keep)


def per_tensor_left_constants(model: onnx.ModelProto) -> list[str]:
    """Quantise per tensor, not per channel, each constant a MatMul reads as its left operand (after
    quantisation). Returns the MatMuls changed.

    ONNX Runtime's quantiser takes any constant MatMul input for a weight and, with per_channel,
    gives it one scale per slice of axis 1: for MPVSS's first mask prediction, the initial query
    embeddings [1, Q, C] times the mask features, that is one scale per query (rows of the product).
    OpenVINO 2026.4's CPU plugin cannot compile that (it takes a constant's scales as the product's
    columns: "Check 'any_of(scale.size(), OC, 1U)' failed" in dnnl_postops_composer). One symmetric
    int8 scale for the whole constant (its largest magnitude / 127) compiles on both backends and
    keeps ONNX Runtime's QLinearMatMul.
    """
    from onnx import helper, numpy_helper

    g = _Graph(model)
    changed = []
    for node in list(g.graph.node):
        dq = g.producer.get(node.input[0]) if node.op_type == "MatMul" else None
        if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in g.consts or len(dq.input) < 2:
            continue
        q, scale = g.consts[dq.input[0]], g.consts.get(dq.input[1])
        zero = g.consts.get(dq.input[2]) if len(dq.input) > 2 and dq.input[2] else np.zeros(1, dtype=np.int8)
        if (scale is None or zero is None or scale.size <= 1 or q.dtype != np.int8
                or len(g.consumers.get(dq.output[0], [])) != 1):
            continue
        axis = next((a.i for a in dq.attribute if a.name == "axis"), 1) % q.ndim
        shape = [1] * q.ndim
        shape[axis] = -1
        value = (q.astype(np.float64) - zero.reshape(shape if zero.size > 1 else ())) * scale.reshape(shape)
        step = max(float(np.abs(value).max()) / 127.0, np.finfo(np.float32).tiny)
        base = dq.input[0]
        names = [g.fresh(f"{base}_per_tensor"), g.fresh(f"{base}_per_tensor_scale"), g.fresh(f"{base}_per_tensor_zero")]
        g.graph.initializer.extend([
            numpy_helper.from_array(np.clip(np.round(value / step), -127, 127).astype(np.int8), names[0]),
            numpy_helper.from_array(np.float32(step), names[1]), numpy_helper.from_array(np.int8(0), names[2])])
        dq.input[:] = names
        kept = [a for a in dq.attribute if a.name != "axis"]
        del dq.attribute[:]
        dq.attribute.extend(kept)
        changed.append(node.name)
    if changed:
        _drop_unread_qdq(g)
    return changed
