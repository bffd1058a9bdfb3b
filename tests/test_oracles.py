"""Independent oracles for the warps: a known translation moves a map by the right amount in
the right direction, in each method's own convention (METHODS.md), computed by hand in numpy
(tests/oracle.py), never by the model code the parity tests share with the reference."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from oracle import bilinear_sample, gsvnet_sample_points, mpvss_expected

# --------------------------------------------------------------------------- GSVNet


def _gsvnet_warp(logits: np.ndarray, flow: np.ndarray) -> np.ndarray:
    from vss_edge.models.gsvnet.propagation import warp

    with torch.no_grad():
        return warp(torch.from_numpy(logits), torch.from_numpy(flow)).numpy()


def _constant_flow(u: float, v: float, h: int, w: int, n: int = 1) -> np.ndarray:
    flow = np.empty((n, 2, h, w), np.float32)
    flow[:, 0], flow[:, 1] = u, v
    return flow


def test_gsvnet_warp_of_a_whole_pixel_flow_is_a_shift():
    """Flow (8, -4) in GSVNet's units is (2, -1) pixels at 1/8 (flow / 4): output (y, x) is the
    previous map at (y - 1, x + 2); what comes from outside the map is 0 (zeros padding)."""
    h, w = 12, 20
    prev = np.random.default_rng(0).normal(size=(1, 3, h, w)).astype(np.float32)
    got = _gsvnet_warp(prev, _constant_flow(8.0, -4.0, h, w))
    expected = np.zeros_like(prev)
    expected[:, :, 1:, :w - 2] = prev[:, :, :h - 1, 2:]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)  # measured max 1.9e-6 (float32 grid)


def test_gsvnet_warp_direction_an_object_that_moved_left():
    """An object at column 10 of the previous frame that moved 2 columns left (to 8) has, at its
    new place, a backward flow pointing back to where it was: +2 pixels, +8 in GSVNet's units.
    Warping the previous map with it puts the object at column 8."""
    h, w = 8, 24
    prev = np.zeros((1, 1, h, w), np.float32)
    prev[0, 0, 3, 10] = 1.0
    got = _gsvnet_warp(prev, _constant_flow(8.0, 0.0, h, w))[0, 0]
    assert np.unravel_index(np.argmax(got), got.shape) == (3, 8)
    assert got[3, 8] == pytest.approx(1.0, abs=1e-5) and np.abs(got).sum() == pytest.approx(1.0, abs=1e-4)
    down = _gsvnet_warp(prev, _constant_flow(0.0, -8.0, h, w))[0, 0]  # came from 2 rows above: moved down
    assert np.unravel_index(np.argmax(down), down.shape) == (5, 10)


@pytest.mark.parametrize("u, v", [(2.0, 6.0), (-5.0, 1.0), (30.0, -13.0)])
def test_gsvnet_warp_of_a_fractional_flow_is_bilinear_with_zero_padding(u, v):
    h, w = 10, 14
    prev = np.random.default_rng(1).normal(size=(1, 4, h, w)).astype(np.float32)
    got = _gsvnet_warp(prev, _constant_flow(u, v, h, w))
    xs, ys = gsvnet_sample_points(h, w, u, v)
    expected = bilinear_sample(prev[0], xs, ys, "zeros")[None]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)  # measured max 2.4e-6


def test_gsvnet_warp_follows_a_varying_flow_field():
    """Per-pixel flow (not constant): each output pixel reads its own displaced point."""
    h, w = 9, 13
    rng = np.random.default_rng(2)
    prev = rng.normal(size=(1, 2, h, w)).astype(np.float32)
    flow = rng.uniform(-12, 12, size=(1, 2, h, w)).astype(np.float32)
    got = _gsvnet_warp(prev, flow)
    ys, xs = np.mgrid[0:h, 0:w]
    expected = bilinear_sample(prev[0], xs + flow[0, 0] / 4, ys + flow[0, 1] / 4, "zeros")[None]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def _warp_subgraph(path, inputs: list[str]) -> ort.InferenceSession:
    """The bundle graph cut down to its warp: from `inputs` to the warped map, which is what the
    edge map's ArgMax reads (the graph's first ArgMax; a label tail's comes last)."""
    model = onnx.load(str(path))
    node = next(n for n in model.graph.node if n.op_type == "ArgMax")
    sub = onnx.utils.Extractor(model).extract_model(inputs, [node.input[0]])
    return ort.InferenceSession(sub.SerializeToString(), providers=["CPUExecutionProvider"])


def test_the_gsvnet_bundles_warp_is_the_official_one(gsvnet_bundle):
    """The exported propagation graph's own warp (cut out of the bundle file) against the
    hand-computed warp: what ONNX Runtime runs on the robot, not only the PyTorch model."""
    session = _warp_subgraph(gsvnet_bundle / "propagation.onnx", ["prev_logits", "flow"])
    (shape_logits,) = [i.shape for i in session.get_inputs() if i.name == "prev_logits"]
    _, c, h, w = shape_logits
    prev = np.random.default_rng(3).normal(size=(1, c, h, w)).astype(np.float32)
    for u, v in ((8.0, -4.0), (-6.0, 10.0)):
        (got,) = session.run(None, {"prev_logits": prev, "flow": _constant_flow(u, v, h, w)})
        xs, ys = gsvnet_sample_points(h, w, u, v)
        np.testing.assert_allclose(got, bilinear_sample(prev[0], xs, ys, "zeros")[None], rtol=0, atol=1e-5)


# --------------------------------------------------------------------------- MPVSS


def _mpvss_warp(masks: np.ndarray, flow: np.ndarray) -> np.ndarray:
    from vss_edge.models.mpvss.motion import warp_masks

    with torch.no_grad():
        return warp_masks(torch.from_numpy(masks), torch.from_numpy(flow)).numpy()


def test_mpvss_warp_per_query_flows_in_the_official_convention():
    """Three masks, three flows (right, down, diagonal), given at half the masks' resolution as
    the flow graph gives them (1/8 vs 1/4): each mask moves by twice its flow, normalised by W
    and H with border padding."""
    h, w = 16, 24
    masks = np.random.default_rng(4).normal(size=(1, 3, h, w)).astype(np.float32)
    uv = [(1.5, 0.0), (0.0, -2.0), (-3.25, 1.75)]
    flow = np.stack([_constant_flow(u, v, h // 2, w // 2)[0] for u, v in uv])
    got = _mpvss_warp(masks, flow)
    np.testing.assert_allclose(got, mpvss_expected(masks, uv, 2.0), rtol=0, atol=1e-5)  # measured 2.9e-6


def test_mpvss_warp_direction_and_the_zero_flow_shrink():
    """A mask column at x = 12 of a 24-wide key mask. Output column x reads (x + u) * 23 / 24, so
    a backward flow of u = +2 pixels (the content came from 2 to the right: it moved left) puts
    the column at 12 * 24 / 23 - 2 = 10.52, between columns 10 and 11; a zero flow is not quite
    the identity: the column lands at 12.52, between 12 and 13."""
    h, w = 6, 24
    masks = np.zeros((1, 1, h, w), np.float32)
    masks[0, 0, :, 12] = 1.0
    moved = _mpvss_warp(masks, _constant_flow(1.0, 0.0, h // 2, w // 2))[0, 0, 0]  # 1 at 1/8 = 2 at 1/4
    assert set(np.argsort(moved)[-2:]) == {10, 11} and moved[:9].max() == 0 and moved[13:].max() == 0
    still = _mpvss_warp(masks, _constant_flow(0.0, 0.0, h // 2, w // 2))[0, 0, 0]
    assert set(np.argsort(still)[-2:]) == {12, 13} and np.argmax(still) == 13


def test_mpvss_single_flow_warps_every_mask_alike():
    """The optical-flow baseline: one [1, 2, h, w] flow for all N masks."""
    h, w = 8, 12
    masks = np.random.default_rng(5).normal(size=(1, 4, h, w)).astype(np.float32)
    got = _mpvss_warp(masks, _constant_flow(-0.75, 1.25, h // 2, w // 2))
    np.testing.assert_allclose(got, mpvss_expected(masks, [(-0.75, 1.25)] * 4, 2.0), rtol=0, atol=1e-5)


# --------------------------------------------------------------------------- the warps' two samplers


@pytest.mark.parametrize("padding", ["zeros", "border"])
@pytest.mark.parametrize("per_map", [False, True])
def test_gather_sampling_is_grid_samples_bilinear(padding, per_map):
    """models.sampling (the graphs' and the reference's warp) against the hand-computed bilinear
    sample, and against F.grid_sample (the official op, what training runs): points inside, on the
    border, up to 3 pixels outside and far outside."""
    import torch.nn.functional as F

    from vss_edge.models.sampling import bilinear_sample as gather_sample

    c, h, w = 3, 7, 11
    rng = np.random.default_rng(6)
    maps = rng.normal(size=(1, c, h, w)).astype(np.float32)
    shape = (c, 5, 9) if per_map else (5, 9)
    x = rng.uniform(-3.0, w + 2.0, size=shape).astype(np.float32)
    y = rng.uniform(-3.0, h + 2.0, size=shape).astype(np.float32)
    x.reshape(-1)[:4] = [0.0, w - 1.0, -50.0, w + 50.0]
    y.reshape(-1)[:4] = [h - 1.0, 0.0, 2.5, -40.0]
    with torch.no_grad():
        got = gather_sample(torch.from_numpy(maps), torch.from_numpy(x), torch.from_numpy(y), padding).numpy()
        grid = torch.from_numpy(np.stack((x / (w - 1) * 2 - 1, y / (h - 1) * 2 - 1), -1))
        if per_map:
            official = F.grid_sample(torch.from_numpy(maps).reshape(c, 1, h, w), grid, mode="bilinear",
                                     padding_mode=padding, align_corners=True).reshape(1, c, *shape[1:]).numpy()
        else:
            official = F.grid_sample(torch.from_numpy(maps), grid[None], mode="bilinear", padding_mode=padding,
                                     align_corners=True).numpy()
    if per_map:
        expected = np.stack([bilinear_sample(maps[0, i:i + 1], x[i], y[i], padding)[0] for i in range(c)])[None]
    else:
        expected = bilinear_sample(maps[0], x, y, padding)[None]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    np.testing.assert_allclose(got, official, rtol=0, atol=1e-5)


def test_a_nan_flow_reads_as_outside_and_the_warp_graph_still_runs(tmp_path):
    """A NaN in the flow (a broken flow net) must not stop the graph: ONNX's Gather cannot take the
    index NaN casts to. The point reads as outside the map: 0 with GSVNet's zeros padding."""
    from vss_edge.models.gsvnet.propagation import warp

    class Warp(torch.nn.Module):
        def forward(self, logits, flow):
            return warp(logits, flow)

    h, w = 6, 8
    prev = np.random.default_rng(7).normal(size=(1, 2, h, w)).astype(np.float32)
    flow = _constant_flow(4.0, 0.0, h, w)
    flow[0, :, 2, 3] = np.nan
    path = tmp_path / "warp.onnx"
    torch.onnx.export(Warp(), (torch.from_numpy(prev), torch.from_numpy(flow)), str(path), opset_version=17,
                      dynamo=False, input_names=["prev_logits", "flow"])
    (got,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"prev_logits": prev, "flow": flow})
    assert np.isfinite(got).all() and np.all(got[0, :, 2, 3] == 0.0)
    with torch.no_grad():
        np.testing.assert_allclose(got, warp(torch.from_numpy(prev), torch.from_numpy(flow)).numpy(), atol=1e-6)
