"""vss_edge.checkpoints and vss_edge.models.gsvnet.checkpoints: official checkpoint layouts, strict
loading, one-line errors."""

import itertools
import json
from collections import OrderedDict
from pathlib import Path

import cv2
import pytest
import torch

from vss_edge.runtime.errors import CheckpointError
from vss_edge.checkpoints import load_strict, read_checkpoint
from vss_edge.models.gsvnet.checkpoints import (
    load_gsvnet_checkpoint,
    load_keyframe_checkpoint,
    save_official_checkpoints,
)
from perturb import perturb
from vss_edge.configs import GSVNetConfig
from vss_edge.models.gsvnet.graphs import GSVNet
from vss_edge.runtime.sources import open_source, sample_clip_path

OFFICIAL_KEYS = Path(__file__).parent / "data" / "official_keys"
KEYFRAME_KEYS = {"swiftnet": "swiftnet_r18.json", "bisenet": "bisenet_r18.json"}
H, W = 64, 128


def _config(keyframe_net: str = "swiftnet", num_classes: int = 19) -> GSVNetConfig:
    return GSVNetConfig(height=H, width=W, keyframe_net=keyframe_net, num_classes=num_classes)


def _perturbed(cfg: GSVNetConfig, seed: int) -> GSVNet:
    """An eval-mode GSVNet whose every weight and BN statistic differs from a fresh one."""
    return perturb(GSVNet(cfg), seed)


@pytest.fixture(scope="module")
def frames() -> list[torch.Tensor]:
    """Two real frames of the sample clip at H x W as uint8 [1, H, W, 3] BGR."""
    with open_source(sample_clip_path()) as src:
        raw = list(itertools.islice(src, 2))
    return [torch.from_numpy(cv2.resize(f, (W, H), interpolation=cv2.INTER_AREA))[None] for f in raw]


@torch.no_grad()
def _graph_outputs(model: GSVNet, frames) -> list[torch.Tensor]:
    g = model.eval().graphs()
    logits, labels, small0 = g["keyframe"](frames[0])
    flow, small1 = g["flow"](frames[1], small0)
    new_logits, new_labels = g["propagation"](logits, small1, flow)
    return [logits, labels, small0, flow, small1, new_logits, new_labels]


def _save(model: GSVNet, tmp_path: Path) -> tuple[Path, Path]:
    keyframe, gsvnet = tmp_path / f"{model.cfg.keyframe_net}.pth", tmp_path / "gsvnet.tar"
    save_official_checkpoints(model, keyframe, gsvnet)
    return keyframe, gsvnet


# --- round trips -------------------------------------------------------------------


@pytest.mark.parametrize("keyframe_net", ["swiftnet", "bisenet"])
def test_official_layout_roundtrip_gives_identical_outputs(keyframe_net, frames, tmp_path):
    src = _perturbed(_config(keyframe_net), seed=1)
    keyframe, gsvnet = _save(src, tmp_path)

    dst = GSVNet(_config(keyframe_net)).eval()
    assert not torch.equal(_graph_outputs(dst, frames)[0], _graph_outputs(src, frames)[0])
    prov = load_keyframe_checkpoint(dst, keyframe)
    load_gsvnet_checkpoint(dst, gsvnet)
    assert len(prov["sha256"]) == 64 and prov["path"] == str(keyframe)

    for name, (a, b) in zip(["logits", "labels", "image_small", "flow", "image_small_1",
                             "prop_logits", "prop_labels"],
                            zip(_graph_outputs(src, frames), _graph_outputs(dst, frames))):
        assert torch.equal(a, b), name
    assert torch.isfinite(_graph_outputs(dst, frames)[5]).all()


def test_dataparallel_module_prefix_loads(frames, tmp_path):
    src = _perturbed(_config("bisenet"), seed=2)
    keyframe, gsvnet = _save(src, tmp_path)
    prefixed = lambda sd: OrderedDict(("module." + k, v) for k, v in sd.items())  # noqa: E731
    kf = torch.load(keyframe, weights_only=True)
    torch.save({"state_dict": prefixed(kf["state_dict"])}, keyframe)
    ck = torch.load(gsvnet, weights_only=False)
    ck["state_dict"], ck["state_dict_of"] = prefixed(ck["state_dict"]), prefixed(ck["state_dict_of"])
    torch.save(ck, gsvnet)

    dst = GSVNet(_config("bisenet"))
    load_keyframe_checkpoint(dst, keyframe)
    load_gsvnet_checkpoint(dst, gsvnet)
    for a, b in zip(_graph_outputs(src, frames), _graph_outputs(dst, frames)):
        assert torch.equal(a, b)


def test_keyframe_container_is_tolerated(tmp_path):
    """A swiftnet state_dict under 'model', or a bisenet one saved bare, still loads."""
    for keyframe_net, wrap in [("swiftnet", lambda sd: {"model": sd, "epoch": 3}), ("bisenet", lambda sd: sd)]:
        src = _perturbed(_config(keyframe_net), seed=3)
        path = tmp_path / f"{keyframe_net}_other_container.pth"
        torch.save(wrap(src.segnet.state_dict()), path)
        dst = GSVNet(_config(keyframe_net))
        load_keyframe_checkpoint(dst, path)
        for k, v in src.segnet.state_dict().items():
            assert torch.equal(v, dst.segnet.state_dict()[k]), k


# --- the interface: official key names and layouts ---------------------------------


def _official(name: str) -> dict:
    return json.loads((OFFICIAL_KEYS / name).read_text())


def _shapes(sd) -> dict:
    return {k: list(v.shape) for k, v in sd.items()}


@pytest.mark.parametrize("keyframe_net", ["swiftnet", "bisenet"])
def test_saved_files_have_the_official_keys(keyframe_net, tmp_path):
    keyframe, gsvnet = _save(GSVNet(_config(keyframe_net)), tmp_path)

    kf = torch.load(keyframe, weights_only=True)
    if keyframe_net == "bisenet":
        assert set(kf) == {"state_dict"}
        kf = kf["state_dict"]
    expected = _official(KEYFRAME_KEYS[keyframe_net])
    assert list(kf) == list(expected)
    assert _shapes(kf) == expected

    ck = read_checkpoint(gsvnet)
    assert set(ck) == {"epoch", "state_dict", "optimizer", "best_pred", "current_pred", "args", "state_dict_of"}
    assert ck["epoch"] == 0 and ck["optimizer"] == {}
    assert type(ck["args"]).__name__ == "Namespace"
    for entry, name in [("state_dict", "gsvnet_propagation.json"), ("state_dict_of", "flowlight.json")]:
        expected = _official(name)
        assert list(ck[entry]) == list(expected), entry
        assert _shapes(ck[entry]) == expected, entry


# --- errors ------------------------------------------------------------------------


class _Opaque:
    """Stands for any object a checkpoint might pickle besides tensors and containers."""


def test_missing_file(tmp_path):
    path = tmp_path / "nope.pth"
    with pytest.raises(CheckpointError, match=r"nope\.pth: checkpoint file not found"):
        load_keyframe_checkpoint(GSVNet(_config()), path)
    with pytest.raises(CheckpointError, match="is a directory"):
        read_checkpoint(tmp_path)


@pytest.mark.parametrize("content", [b"hello, I am a text file\n", b"", bytes(range(256))],
                         ids=["text", "empty", "binary"])
def test_not_a_checkpoint(tmp_path, content):
    path = tmp_path / "notes.txt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as e:
        load_gsvnet_checkpoint(GSVNet(_config()), path)
    msg = str(e.value)
    assert str(path) in msg and "not a PyTorch checkpoint" in msg and "\n" not in msg


def test_arbitrary_objects_are_refused(tmp_path):
    path = tmp_path / "pickled.pth"
    torch.save({"state_dict": {}, "extra": _Opaque()}, path)
    with pytest.raises(CheckpointError) as e:
        read_checkpoint(path)
    msg = str(e.value)
    assert str(path) in msg and "_Opaque" in msg and "refuses to unpickle arbitrary objects" in msg


def test_renamed_key(tmp_path):
    keyframe, gsvnet = _save(GSVNet(_config()), tmp_path)
    sd = torch.load(keyframe, weights_only=True)
    old = "backbone.conv1.weight"
    sd = OrderedDict(("renamed_" + k if k == old else k, v) for k, v in sd.items())
    torch.save(sd, keyframe)
    with pytest.raises(CheckpointError) as e:
        load_keyframe_checkpoint(GSVNet(_config()), keyframe)
    msg = str(e.value)
    assert msg.startswith(f"{keyframe}: does not match SwiftNetR18: ")
    assert f"1 missing keys ({old})" in msg and f"1 unexpected keys (renamed_{old})" in msg
    assert "shape" not in msg and "\n" not in msg


def test_num_classes_mismatch(tmp_path):
    keyframe, gsvnet = _save(GSVNet(_config("bisenet", num_classes=5)), tmp_path)
    for load, path, source in [(load_keyframe_checkpoint, keyframe, f"{keyframe} ['state_dict']"),
                               (load_gsvnet_checkpoint, gsvnet, f"{gsvnet} ['state_dict']")]:
        with pytest.raises(CheckpointError) as e:
            load(GSVNet(_config("bisenet", num_classes=19)), path)
        msg = str(e.value)
        assert msg.startswith(f"{source}: does not match "), msg
        assert "shape mismatches (" in msg and "checkpoint [5" in msg and "vs model [19" in msg
        assert "missing" not in msg and "unexpected" not in msg


def test_gsvnet_checkpoint_structure_errors(tmp_path):
    model = GSVNet(_config())
    _, gsvnet = _save(model, tmp_path)
    ck = read_checkpoint(gsvnet)

    no_flow = {k: v for k, v in ck.items() if k != "state_dict_of"}
    torch.save(no_flow, tmp_path / "no_flow.tar")
    with pytest.raises(CheckpointError, match=r"no_flow\.tar: not a GSVNet checkpoint: no 'state_dict_of'"):
        load_gsvnet_checkpoint(model, tmp_path / "no_flow.tar")

    unprefixed = dict(ck, state_dict=OrderedDict((k.removeprefix("grm."), v) for k, v in ck["state_dict"].items()))
    torch.save(unprefixed, tmp_path / "unprefixed.tar")
    with pytest.raises(CheckpointError, match=r"unprefixed\.tar \['state_dict'\]: 59 of 59 keys lack .*'grm\.'"):
        load_gsvnet_checkpoint(model, tmp_path / "unprefixed.tar")

    with pytest.raises(CheckpointError, match=r"gsvnet\.tar: is a GSVNet propagation checkpoint"):
        load_keyframe_checkpoint(model, gsvnet)


def test_failed_gsvnet_load_leaves_model_untouched(tmp_path):
    _, gsvnet = _save(_perturbed(_config(), seed=4), tmp_path)
    ck = read_checkpoint(gsvnet)
    ck["state_dict_of"].pop("toflow.bias")
    torch.save(ck, gsvnet)
    model = GSVNet(_config())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"\['state_dict_of'\]: does not match FlowLight: 1 missing keys"):
        load_gsvnet_checkpoint(model, gsvnet)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_load_strict_reports_all_problems_in_one_message():
    model = GSVNet(_config())
    sd = OrderedDict(model.flownet.state_dict())
    sd.pop("conv1.0.weight")
    sd["extra.weight"] = torch.zeros(1)
    sd["toflow.weight"] = torch.zeros(3, 64, 3, 3)
    with pytest.raises(CheckpointError) as e:
        load_strict(model.flownet, sd, "flow.pth")
    assert str(e.value) == (
        "flow.pth: does not match FlowLight: 1 missing keys (conv1.0.weight), 1 unexpected keys (extra.weight), "
        "1 shape mismatches (toflow.weight: checkpoint [3, 64, 3, 3] vs model [2, 64, 3, 3])")


def test_keyframe_checkpoint_of_the_other_net(tmp_path):
    keyframe, _ = _save(GSVNet(_config("swiftnet")), tmp_path)
    with pytest.raises(CheckpointError) as e:
        load_keyframe_checkpoint(GSVNet(_config("bisenet")), keyframe)
    msg = str(e.value)
    assert msg.startswith(f"{keyframe}: does not match BiSeNetR18: 218 missing keys")
    assert "no key in common" in msg and "keyframe_net is 'bisenet'" in msg


def test_trainer_style_checkpoint_with_optimizer_and_args_loads(tmp_path):
    """As the official trainer saves it: optimizer state, populated args, extra entries, old zip-less format."""
    import argparse

    model = GSVNet(_config())
    opt = torch.optim.SGD(model.gsv.parameters(), lr=0.01, momentum=0.9)
    for p in model.gsv.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    ck = {"epoch": 12, "state_dict": OrderedDict(("grm." + k, v) for k, v in model.gsv.state_dict().items()),
          "optimizer": opt.state_dict(), "best_pred": 0.72, "current_pred": 0.71,
          "args": argparse.Namespace(segnet="swiftnet", lr=0.01, multi_step=[1, 2, 3, 4], freeze_bn=False),
          "test_best_pred": 0.0, "current_test_pred": 0.0, "state_dict_of": model.flownet.state_dict()}
    path = tmp_path / "checkpoint.pth.tar"
    torch.save(ck, path, _use_new_zipfile_serialization=False)
    load_gsvnet_checkpoint(GSVNet(_config()), path)
    assert read_checkpoint(path)["args"].multi_step == [1, 2, 3, 4]
