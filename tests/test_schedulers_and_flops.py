"""Scheduler decisions and the FLOP counter, checked against hand-computed values."""

import pytest
import torch
from onnx import TensorProto, helper

from vss_edge.exporters.flops import count_gflops
from vss_edge.runtime.errors import VssEdgeError
from vss_edge.runtime.schedulers import FixedInterval, FrameInfo, build_scheduler


def test_fixed_interval_counts_from_the_last_key_frame():
    s = FixedInterval(3)
    decisions, since = [], 0
    for i in range(8):
        key = i == 0 or s.is_key(FrameInfo(i, since))
        decisions.append(key)
        since = 1 if key else since + 1
    assert decisions == [True, False, False, True, False, False, True, False]


def test_build_scheduler_from_manifest_entry_with_override():
    assert build_scheduler({"name": "fixed_interval", "params": {"interval": 5}}).interval == 5
    assert build_scheduler({"name": "fixed_interval", "params": {"interval": 5}}, interval=2).interval == 2
    with pytest.raises(VssEdgeError, match="unknown scheduler"):
        build_scheduler({"name": "nope"})
    with pytest.raises(VssEdgeError, match="interval must be >= 1"):
        FixedInterval(0)


def test_flops_of_a_conv_and_a_matmul():
    # Conv 3->8, 3x3, on 1x3x16x16 with padding 1: MACs = 8*16*16 * 3*3*3
    w = helper.make_tensor("w", TensorProto.FLOAT, [8, 3, 3, 3], [0.0] * 216)
    m = helper.make_tensor("m", TensorProto.FLOAT, [16, 4], [0.0] * 64)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1]),
         helper.make_node("MatMul", ["y", "m"], ["z"])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)], [w, m])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    conv_macs = 8 * 16 * 16 * 27
    matmul_macs = 1 * 8 * 16 * 4 * 16  # [1,8,16,16] @ [16,4]
    assert count_gflops(model) == pytest.approx(2 * (conv_macs + matmul_macs) / 1e9)


def test_static_adaptive_pool_equals_pytorch():
    from vss_edge.models.common import adaptive_avg_pool2d_static

    x = torch.randn(2, 3, 12, 21)
    for size in [(8, 16), (4, 8), (5, 7), (12, 21)]:
        expected = torch.nn.functional.adaptive_avg_pool2d(x, size)
        assert torch.allclose(adaptive_avg_pool2d_static(x, size), expected, atol=1e-6)
