"""Small QDQ graphs for the INT8 rewrites and the OpenVINO patterns they work around (onnx only)."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from vss_edge.calibration.int8_rewrites import fold_padded_average_pool


def pooling_graph(count_include_pad: int = 1, ceil_mode: int = 0) -> onnx.ModelProto:
    """x [1, 4, 5, 6] -> AveragePool 5x5, stride 2, pads 2 (DDRNet's DAPPM at 1/64 resolution) -> y."""
    pool = helper.make_node("AveragePool", ["x"], ["y"], name="pool", kernel_shape=[5, 5], strides=[2, 2],
                            pads=[2, 2, 2, 2], count_include_pad=count_include_pad, ceil_mode=ceil_mode)
    graph = helper.make_graph([pool], "pool", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 5, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return onnx.shape_inference.infer_shapes(model)


def padded_pool_qdq_graph(rewritten: bool) -> onnx.ModelProto:
    """x -> Q/DQ (zero point 139) -> AveragePool 5x5 / 2, pads 2, count_include_pad=1 -> Q/DQ -> y on a
    [1, 4, 5, 6] tensor (DDRNet's DAPPM at 1/64 resolution), or with the pool as the depthwise Conv
    calibration.int8_rewrites makes of it."""

    model = pooling_graph()
    if rewritten:
        fold_padded_average_pool(model)
    graph = model.graph
    (op,) = graph.node
    graph.initializer.extend([numpy_helper.from_array(np.float32(0.02), "s"),
                              numpy_helper.from_array(np.uint8(139), "z")])
    op.input[0], op.output[0] = "x_dq", "p"
    graph.node.insert(0, helper.make_node("QuantizeLinear", ["x", "s", "z"], ["x_q"]))
    graph.node.insert(1, helper.make_node("DequantizeLinear", ["x_q", "s", "z"], ["x_dq"]))
    graph.node.extend([helper.make_node("QuantizeLinear", ["p", "s", "z"], ["p_q"]),
                       helper.make_node("DequantizeLinear", ["p_q", "s", "z"], ["y"])])
    del graph.value_info[:]
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 3, 3]))
    onnx.checker.check_model(model)
    return model


def left_constant_matmul_graph() -> onnx.ModelProto:
    """DQ(int8 constant [1, 4, 8], one scale per row: axis 1) @ Q/DQ(x [1, 8, 16]) -> Q/DQ -> y: what
    ONNX Runtime's quantiser writes, per channel, for MPVSS's initial query embeddings times the mask
    features."""
    rng = np.random.default_rng(0)
    init = [numpy_helper.from_array(rng.integers(-127, 128, (1, 4, 8)).astype(np.int8), "w"),
            numpy_helper.from_array(np.array([0.01, 0.02, 0.05, 0.1], np.float32), "w_s"),
            numpy_helper.from_array(np.zeros(4, np.int8), "w_z"),
            numpy_helper.from_array(np.float32(0.02), "s"), numpy_helper.from_array(np.uint8(128), "z"),
            numpy_helper.from_array(np.float32(0.5), "ys"), numpy_helper.from_array(np.uint8(128), "yz")]
    nodes = [helper.make_node("DequantizeLinear", ["w", "w_s", "w_z"], ["w_dq"], name="w_dq", axis=1),
             helper.make_node("QuantizeLinear", ["x", "s", "z"], ["x_q"], name="x_q"),
             helper.make_node("DequantizeLinear", ["x_q", "s", "z"], ["x_dq"], name="x_dq"),
             helper.make_node("MatMul", ["w_dq", "x_dq"], ["p"], name="matmul"),
             helper.make_node("QuantizeLinear", ["p", "ys", "yz"], ["p_q"], name="p_q"),
             helper.make_node("DequantizeLinear", ["p_q", "ys", "yz"], ["y"], name="p_dq")]
    graph = helper.make_graph(nodes, "left_constant_matmul",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 16])], init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    return model
