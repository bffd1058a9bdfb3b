"""BiSeNet-R18 key-frame net: official checkpoint interface and ONNX export."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from vss_edge.models.gsvnet.bisenet import BiSeNetR18

OFFICIAL_KEYS = Path(__file__).parent / "data" / "official_keys" / "bisenet_r18.json"


def _model(seed: int = 0) -> BiSeNetR18:
    """An eval-mode model with random weights and non-trivial BatchNorm statistics."""
    torch.manual_seed(seed)
    model = BiSeNetR18(19)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.3, 0.3)
    return model.eval()


def test_state_dict_matches_official_keys():
    expected = json.loads(OFFICIAL_KEYS.read_text())
    got = {k: list(v.shape) for k, v in BiSeNetR18(19).state_dict().items()}
    assert set(got) == set(expected), (
        f"missing: {sorted(set(expected) - set(got))}, extra: {sorted(set(got) - set(expected))}")
    assert got == expected
    assert list(got) == list(expected)  # same order as the official model


def test_official_checkpoint_layout_roundtrip(tmp_path):
    src = _model(seed=1)
    ckpt = tmp_path / "bisenet.pth"
    torch.save({"state_dict": src.state_dict()}, ckpt)

    dst = BiSeNetR18(19)
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    dst.load_state_dict(state, strict=True)
    dst.eval()

    x = torch.randn(1, 3, 64, 128)
    with torch.no_grad():
        a, b = src(x), dst(x)
    assert a.shape == (1, 19, 8, 16)
    assert torch.equal(a, b)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # legacy (dynamo=False) exporter
def test_onnx_export_matches_pytorch(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    model = _model(seed=2)
    x = torch.randn(1, 3, 64, 128)
    path = tmp_path / "bisenet.onnx"
    torch.onnx.export(model, (x,), str(path), opset_version=17, dynamo=False,
                      input_names=["image"], output_names=["logits"])

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = sess.run(None, {"image": x.numpy()})
    with torch.no_grad():
        want = model(x).numpy()
    assert got.shape == (1, 19, 8, 16)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-3)
