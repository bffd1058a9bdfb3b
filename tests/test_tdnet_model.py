"""TDNet models: official key layout, checkpoint round trip, LayerNorm resizing, the
per-frame chaining of the official forward, and per-path ONNX export."""
from __future__ import annotations

import json
import pathlib

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from vss_edge.runtime.errors import CheckpointError
from vss_edge.configs import TDNetConfig
from vss_edge.models.tdnet.checkpoints import load_tdnet_checkpoint, save_official_tdnet_checkpoint
from vss_edge.models.tdnet.model import TDNet, resize_layer_norms

KEYS = pathlib.Path(__file__).parent / "data" / "official_keys"
SMALL = dict(height=64, width=128)  # features 8x16, stored keys/values 2x4


def perturbed(model: nn.Module, seed: int) -> nn.Module:
    """Random BN statistics/affines, biases and LayerNorm maps, so nothing is an identity."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, t in model.state_dict().items():
            if not t.dtype.is_floating_point:
                continue
            if key.endswith("running_var"):
                t.copy_(0.5 + torch.rand(t.shape, generator=g))
            elif key.endswith(("running_mean", "bias")):
                t.copy_(0.1 * torch.randn(t.shape, generator=g))
            elif key.endswith("ln.weight") or t.dim() == 1:
                t.copy_(1.0 + 0.2 * torch.randn(t.shape, generator=g))
    return model.eval()


def build(variant: str, seed: int = 0, **size) -> TDNet:
    torch.manual_seed(seed)
    return perturbed(TDNet(TDNetConfig(variant=variant, **(size or SMALL))), seed)


def to_input(frame: np.ndarray, cfg: TDNetConfig) -> torch.Tensor:
    """BGR uint8 frame -> the official input: cv2 bilinear resize, RGB, /255, ImageNet mean/std."""
    norm = cfg.normalisation
    rgb = cv2.resize(frame, (cfg.width, cfg.height), interpolation=cv2.INTER_LINEAR)[:, :, ::-1]
    x = (rgb.astype(np.float32) * norm["scale"] - np.float32(norm["mean_rgb"])) / np.float32(norm["std_rgb"])
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1))[None])


@pytest.fixture(scope="module")
def frames():
    from vss_edge.runtime.sources import open_source, sample_clip_path

    with open_source(sample_clip_path()) as source:
        return [f for _, f in zip(range(8), source)]


@pytest.fixture(scope="module")
def td4():
    return build("td4_psp18")


@pytest.fixture(scope="module")
def td2():
    return build("td2_psp50", seed=1)


def stored_args(queue):
    """The FIFO of (q, k, v) flattened oldest first, without the oldest q."""
    return [queue[0][1], queue[0][2]] + [t for entry in queue[1:] for t in entry]


# --- config and layout -----------------------------------------------------------


def test_config_sizes():
    cfg = TDNetConfig()
    assert (cfg.height, cfg.width, cfg.num_paths, cfg.queue_length) == (769, 1537, 4, 3)
    assert cfg.feature_size == (97, 193) and cfg.stored_size == (25, 49) and cfg.label_size == (769, 1537)
    assert TDNetConfig(512, 1024, variant="td2_psp50").feature_size == (64, 128)
    assert TDNetConfig(variant="td2_psp50").num_paths == 2
    assert TDNetConfig(65, 100).feature_size == (9, 13)
    assert cfg.normalisation["mean_rgb"] == [0.485, 0.456, 0.406] and len(cfg.class_names) == 19
    for bad in (dict(height=63), dict(variant="td3"), dict(num_classes=0)):
        with pytest.raises(ValueError):
            TDNetConfig(**bad)


@pytest.mark.parametrize("variant", ["td4_psp18", "td2_psp50"])
def test_state_dict_equals_official_keys(variant):
    with torch.device("meta"):
        model = TDNet(TDNetConfig(variant=variant))
    got = {k: list(v.shape) for k, v in model.state_dict().items()}
    official = json.loads((KEYS / f"{variant}.json").read_text())
    assert list(got) == list(official)
    assert got == official


@pytest.mark.parametrize("variant", ["td4_psp18", "td2_psp50"])
def test_shapes_follow_the_config(variant, td4, td2, frames):
    model = td4 if variant == "td4_psp18" else td2
    cfg = model.cfg
    h, w = cfg.feature_size
    hs, ws = cfg.stored_size
    with torch.no_grad():
        z = model.features(0, to_input(frames[0], cfg))
        q, v = model.encode_current(0, z)
        sq, sk, sv = model.encode_stored(0, z)
        queue = [(sq, sk, sv)] * cfg.queue_length
        prop = model.propagate(0, *stored_args(queue), q, z.shape)
        logits = model.head(0, v + prop)
    assert z.shape == (1, 512 if variant == "td4_psp18" else 2048, h, w)
    assert q.shape == (1, h * w, 64) and v.shape == (1, 512, h, w)
    assert sq.shape == sk.shape == (1, hs * ws, 64) and sv.shape == (1, hs * ws, 512)
    assert prop.shape == v.shape and logits.shape == (1, 19, h, w)
    with pytest.raises(TypeError, match="stored tensors"):  # a queue one frame too long
        model.propagate(0, *stored_args(queue + [(sq, sk, sv)]), q, z.shape)


# --- checkpoints -----------------------------------------------------------------


def test_official_layout_round_trip(td4, frames, tmp_path):
    path = tmp_path / "td4-psp18.pkl"
    save_official_tdnet_checkpoint(td4, path)
    saved = torch.load(path, weights_only=True)
    assert list(saved) == list(td4.state_dict())  # a bare state_dict, official key order
    fresh = TDNet(TDNetConfig(**SMALL)).eval()
    assert load_tdnet_checkpoint(fresh, path) is None
    x = to_input(frames[3], td4.cfg)
    with torch.no_grad():
        for p in range(4):
            outs = []
            for m in (td4, fresh):
                z = m.features(p, x)
                q, v = m.encode_current(p, z)
                st = m.encode_stored(p, z)
                prop = m.propagate(p, *stored_args([st] * 3), q, z.shape)
                outs.append([z, q, v, *st, prop, m.head(p, v + prop)])
            assert all(torch.equal(a, b) for a, b in zip(*outs))


def test_official_size_checkpoint_loads_with_resized_layer_norm(td4, tmp_path):
    # An official checkpoint: the small model's weights with 97x193 LayerNorm maps
    # (nothing else in TDNet depends on the input size).
    sd = td4.state_dict()
    g = torch.Generator().manual_seed(5)
    official = {k: (torch.randn(97, 193, generator=g) if k.startswith("layer_norm") else v) for k, v in sd.items()}
    official["layer_norm2.ln.weight"] = torch.full((97, 193), 0.75)
    torch.save({"module." + k: v for k, v in official.items()}, tmp_path / "official.pkl")  # DataParallel keys

    small = TDNet(TDNetConfig(**SMALL)).eval()
    note = load_tdnet_checkpoint(small, tmp_path / "official.pkl")
    assert "LayerNorm" in note and "97x193" in note and "8x16" in note
    ln = small.layer_norm1.ln
    assert tuple(ln.normalized_shape) == (8, 16) and ln.weight.shape == (8, 16)
    big = official["layer_norm1.ln.weight"]
    # align_corners=True keeps the corners and resamples bilinearly in between.
    for (i, j), (bi, bj) in {(0, 0): (0, 0), (7, 15): (96, 192), (0, 15): (0, 192)}.items():
        assert ln.weight[i, j].item() == pytest.approx(big[bi, bj].item(), abs=1e-6)
    expected = F.interpolate(big[None, None], size=(8, 16), mode="bilinear", align_corners=True)[0, 0]
    assert torch.allclose(ln.weight, expected)
    assert torch.allclose(small.layer_norm2.ln.weight, torch.full((8, 16), 0.75))
    assert torch.equal(small.head1.conv5[0].weight, td4.head1.conv5[0].weight)

    # The same helper resizes a module in place, and the official size itself needs no note.
    resize_layer_norms(small, (97, 193))
    assert small.layer_norm1.ln.weight.shape == (97, 193)
    full = TDNet(TDNetConfig()).eval()
    assert load_tdnet_checkpoint(full, tmp_path / "official.pkl") is None


def test_checkpoint_of_the_other_variant_is_refused(td2, tmp_path):
    save_official_tdnet_checkpoint(td2, tmp_path / "td2.pkl")
    with pytest.raises(CheckpointError, match="td2_psp50 checkpoint but the model is td4_psp18"):
        load_tdnet_checkpoint(TDNet(TDNetConfig(**SMALL)), tmp_path / "td2.pkl")
    sd = td2.state_dict()
    sd.pop("head2.conv5.4.bias")
    torch.save({"model_state": sd}, tmp_path / "broken.pkl")
    with pytest.raises(CheckpointError, match="1 missing keys"):
        load_tdnet_checkpoint(TDNet(TDNetConfig(variant="td2_psp50", **SMALL)), tmp_path / "broken.pkl")


# --- the official per-frame forward ----------------------------------------------

# atn modules per path, oldest stored frame first (official forward_path1..4 / 1..2)
OFFICIAL_ATTENTION = {
    "td4_psp18": [["atn1_2", "atn1_3", "atn1_4"], ["atn2_3", "atn2_4", "atn2_1"],
                  ["atn3_4", "atn3_1", "atn3_2"], ["atn4_1", "atn4_2", "atn4_3"]],
    "td2_psp50": [["atn1"], ["atn2"]],
}


class OfficialForward:
    """The official td4_psp18 / td2_psp50 forward_path{p}, written against the submodules."""

    def __init__(self, model: TDNet):
        self.m = model
        self.Q, self.K, self.V = [], [], []

    def __call__(self, img: torch.Tensor, pos_id: int) -> torch.Tensor:
        m, n = self.m, pos_id + 1
        z = getattr(m, f"psp{n}")(getattr(m, f"pretrained{n}")(img))
        enc = getattr(m, f"enc{n}")
        q_cur, v_cur = enc.current(z)
        size = (z.shape[2], z.shape[3])
        atn = [getattr(m, a) for a in OFFICIAL_ATTENTION[m.cfg.variant][pos_id]]
        if len(self.Q) < m.cfg.queue_length:
            v = v_cur
        elif m.cfg.variant == "td4_psp18":
            v2 = atn[0](self.K[0], self.V[0], self.Q[1])
            v3 = atn[1](self.K[1], v2 + self.V[1], self.Q[2])
            v = atn[2](self.K[2], v3 + self.V[2], q_cur, size=size) + v_cur
        else:
            v = atn[0](self.K[0], self.V[0], q_cur, size=size) + v_cur
        out = getattr(m, f"head{n}")(getattr(m, f"layer_norm{n}")(v))
        q, k, val = enc.stored(z)
        self.Q, self.K, self.V = ([*lst, t][-m.cfg.queue_length:] for lst, t in
                                  ((self.Q, q), (self.K, k), (self.V, val)))
        return out


def run_methods(model: TDNet, xs: list[torch.Tensor]) -> list[torch.Tensor]:
    """The same frames through features/encode_current/propagate/head/encode_stored."""
    queue, outs = [], []
    for i, x in enumerate(xs):
        p = i % model.cfg.num_paths
        z = model.features(p, x)
        q, v = model.encode_current(p, z)
        if len(queue) == model.cfg.queue_length:
            v = v + model.propagate(p, *stored_args(queue), q, z.shape)
        outs.append(model.head(p, v))
        queue = [*queue, model.encode_stored(p, z)][-model.cfg.queue_length:]
    return outs


@pytest.mark.parametrize("variant,count", [("td4_psp18", 6), ("td2_psp50", 4)])
def test_methods_chain_like_the_official_forward(variant, count, td4, td2, frames):
    model = td4 if variant == "td4_psp18" else td2
    xs = [to_input(f, model.cfg) for f in frames[:count]]
    reference = OfficialForward(model)
    with torch.no_grad():
        expected = [reference(x, i % model.cfg.num_paths) for i, x in enumerate(xs)]
        got = run_methods(model, xs)
    for i, (a, b) in enumerate(zip(got, expected)):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-5), f"frame {i}"
    # The attention actually contributes once the queue is full.
    p = (count - 1) % model.cfg.num_paths
    with torch.no_grad():
        without = model.head(p, model.encode_current(p, model.features(p, xs[-1]))[1])
    assert not torch.allclose(without, got[-1], rtol=1e-3, atol=1e-3)


# --- ONNX export -----------------------------------------------------------------


class PathGraph(nn.Module):
    """One path with a full queue: (x, *stored) -> (logits, q, k, v to store)."""

    def __init__(self, model: TDNet, p: int):
        super().__init__()
        self.model, self.p = model, p

    def forward(self, x, *stored):
        m, p = self.model, self.p
        z = m.features(p, x)
        q, v = m.encode_current(p, z)
        logits = m.head(p, v + m.propagate(p, *stored, q, z.shape))
        return (logits, *m.encode_stored(p, z))


@pytest.mark.parametrize("variant", ["td4_psp18", "td2_psp50"])
def test_each_path_exports_and_onnxruntime_matches(variant, td4, td2, frames, tmp_path):
    model = td4 if variant == "td4_psp18" else td2
    cfg = model.cfg
    xs = [to_input(f, cfg) for f in frames[:cfg.queue_length + cfg.num_paths]]
    with torch.no_grad():
        queue = [model.encode_stored(i % cfg.num_paths, model.features(i % cfg.num_paths, x))
                 for i, x in enumerate(xs[:cfg.queue_length])]
    for p in range(cfg.num_paths):
        x = xs[cfg.queue_length + p]
        inputs = (x, *stored_args(queue))
        names = ["image"] + [f"stored{i}" for i in range(len(inputs) - 1)]
        graph = PathGraph(model, p).eval()
        path = tmp_path / f"{variant}_path{p}.onnx"
        torch.onnx.export(graph, inputs, str(path), dynamo=False, opset_version=17,
                          input_names=names, output_names=["logits", "q", "k", "v"])
        with torch.no_grad():
            expected = [t.numpy() for t in graph(*inputs)]
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = session.run(None, {n: t.numpy() for n, t in zip(names, inputs)})
        for name, g, e in zip(["logits", "q", "k", "v"], got, expected):
            assert g.shape == e.shape
            err = float(np.abs(g - e).max() / max(np.abs(e).max(), 1e-12))
            assert err < 1e-3, f"{variant} path {p} {name}: relative error {err:.2e}"
        ops = {node.op_type for node in onnx.load(str(path)).graph.node}
        assert "LayerNormalization" in ops and "MaxPool" in ops
