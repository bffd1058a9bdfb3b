"""vss_edge.models.stmg.ddrnet: official DDRNet layout, skippable blocks, checkpoint loading."""

import json
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from perturb import perturb
from vss_edge.runtime.errors import CheckpointError
from vss_edge.checkpoints import read_checkpoint
from vss_edge.models.stmg.checkpoints import load_ddrnet_checkpoint, save_official_ddrnet_checkpoint
from vss_edge.models.stmg.ddrnet import DDRNET_VARIANTS, BasicBlock, DDRNet, prunable_block_names

OFFICIAL_KEYS = Path(__file__).parent / "data" / "official_keys"
H, W = 64, 128
N_PRUNABLE = {"ddrnet23_slim": 6, "ddrnet39": 17}


@pytest.fixture(scope="module")
def models() -> dict[str, DDRNet]:
    return {v: perturb(DDRNet(v), seed=i) for i, v in enumerate(DDRNET_VARIANTS)}


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    return torch.randn(1, 3, H, W, generator=torch.Generator().manual_seed(7))


# --- the interface: official key names, shapes and order -----------------------------


@pytest.mark.parametrize("variant", DDRNET_VARIANTS)
def test_state_dict_matches_the_official_layout(variant):
    expected = json.loads((OFFICIAL_KEYS / f"{variant}.json").read_text())
    sd = DDRNet(variant).state_dict()
    assert list(sd) == list(expected)
    assert {k: list(v.shape) for k, v in sd.items()} == expected


def test_augment_adds_only_the_auxiliary_head_before_final_layer():
    plain = list(DDRNet("ddrnet23_slim").state_dict())
    aug = list(DDRNet("ddrnet23_slim", augment=True).state_dict())
    extra = [k for k in aug if k not in plain]
    assert extra and all(k.startswith("seghead_extra.") for k in extra)
    assert [k for k in aug if k in plain] == plain
    assert aug.index(extra[-1]) + 1 == aug.index("final_layer.bn1.weight")


def test_unknown_variant():
    with pytest.raises(ValueError, match="ddrnet23_slim, ddrnet39"):
        DDRNet("ddrnet23")


# --- prunable blocks -------------------------------------------------------------------


@pytest.mark.parametrize("variant", DDRNET_VARIANTS)
def test_prunable_blocks_counts_and_execution_order(variant, models, image):
    model = models[variant]
    names = model.prunable_blocks()
    assert len(names) == N_PRUNABLE[variant] and names == prunable_block_names(variant)
    assert not any(n.endswith(".0") for n in names)
    modules = dict(model.named_modules())
    assert all(isinstance(modules[n], BasicBlock) for n in names)
    layers = {n.rsplit(".", 1)[0] for n in names}
    assert all(len(modules[layer]) - 1 == sum(n.startswith(layer + ".") for n in names) for layer in layers)

    called = []
    hooks = [modules[n].register_forward_hook(lambda m, i, o, n=n: called.append(n)) for n in names]
    try:
        with torch.no_grad():
            model.features(image)
    finally:
        for h in hooks:
            h.remove()
    assert called == names


@pytest.mark.parametrize("variant", DDRNET_VARIANTS)
def test_keep_all_and_forward_equal_the_full_network(variant, models, image):
    model = models[variant]
    n = len(model.prunable_blocks())
    with torch.no_grad():
        full = model.features(image)
        assert full.shape == (1, model.feature_channels, H // 8, W // 8)
        assert torch.equal(model.features(image, [True] * n), full)
        assert torch.equal(model.features(image, torch.ones(n, dtype=torch.bool)), full)
        logits = model(image)
        assert logits.shape == (1, 19, H // 8, W // 8)
        assert torch.equal(logits, model.head(full))


def _with_identity(model: DDRNet, name: str, image: torch.Tensor) -> torch.Tensor:
    """features(image) with block `name` swapped for nn.Identity, then restored."""
    layer, index = name.rsplit(".", 1)
    seq = getattr(model, layer)
    block = seq[int(index)]
    seq[int(index)] = nn.Identity()
    try:
        return model.features(image)
    finally:
        seq[int(index)] = block


# Every block of 23-slim; for 39 (slow on CPU) middle and last (no-ReLU) blocks from the
# shared trunk and from both branches.
_DROPPED = {"ddrnet23_slim": None,
            "ddrnet39": ["layer1.2", "layer2.1", "layer3_1_.2", "layer3_2.1", "layer4.2", "layer4_.1"]}


@pytest.mark.parametrize("variant", DDRNET_VARIANTS)
def test_dropping_a_block_equals_replacing_it_by_identity(variant, models, image):
    model = models[variant]
    names = model.prunable_blocks()
    chosen = _DROPPED[variant] or names
    with torch.no_grad():
        full = model.features(image)
        for k in map(names.index, chosen):
            keep = torch.ones(len(names), dtype=torch.bool)
            keep[k] = False
            dropped = model.features(image, keep)
            assert torch.equal(dropped, _with_identity(model, names[k], image)), names[k]
            assert not torch.equal(dropped, full), names[k]
        none_kept = model.features(image, [False] * len(names))
        assert none_kept.shape == full.shape and torch.isfinite(none_kept).all()


def test_keep_of_the_wrong_length(models, image):
    with pytest.raises(ValueError, match="keep has 5 entries but ddrnet23_slim has 6 prunable blocks"):
        models["ddrnet23_slim"].features(image, [True] * 5)


# --- checkpoints -------------------------------------------------------------------------


@pytest.mark.parametrize("variant", DDRNET_VARIANTS)
def test_official_checkpoint_roundtrip(variant, models, image, tmp_path):
    src = models[variant]
    path = tmp_path / f"{variant}.pth"
    save_official_ddrnet_checkpoint(src, path)
    saved = read_checkpoint(path)
    assert list(saved) == list(json.loads((OFFICIAL_KEYS / f"{variant}.json").read_text()))

    dst = DDRNet(variant).eval()
    with torch.no_grad():
        assert not torch.equal(dst(image), src(image))
        assert load_ddrnet_checkpoint(dst, path) is None
        assert torch.equal(dst(image), src(image))


def test_fullmodel_layout_with_loss_and_auxiliary_head(models, image, tmp_path):
    """As the HRNet-codebase trainer saves it: 'model.' prefix, 'loss.*', seghead_extra, under 'state_dict'."""
    src = models["ddrnet23_slim"]
    aux = perturb(DDRNet("ddrnet23_slim", augment=True), seed=5)
    aux.load_state_dict(src.state_dict(), strict=False)
    sd = OrderedDict(("model." + k, v) for k, v in aux.state_dict().items())
    sd["loss.criterion.weight"] = torch.rand(19)
    path = tmp_path / "checkpoint.pth.tar"
    torch.save({"epoch": 484, "best_mIoU": 0.77, "state_dict": sd, "optimizer": {}}, path)

    dst = DDRNet("ddrnet23_slim").eval()
    note = load_ddrnet_checkpoint(dst, path)
    assert note == ("Dropped 13 keys of the auxiliary training head (seghead_extra.*) and 1 key of the training "
                    "loss (loss.*) from the DDRNet checkpoint; inference does not use them.")
    with torch.no_grad():
        assert torch.equal(dst(image), src(image))

    # A model with the auxiliary head keeps it (and loads it strictly); DataParallel's 'module.' too.
    torch.save(OrderedDict(("module." + k, v) for k, v in sd.items()), path)
    dst_aux = DDRNet("ddrnet23_slim", augment=True)
    assert "1 key of the training loss" in load_ddrnet_checkpoint(dst_aux, path)
    for k, v in aux.state_dict().items():
        assert torch.equal(v, dst_aux.state_dict()[k]), k


def test_auxiliary_head_missing_for_an_augment_model(models, tmp_path):
    path = tmp_path / "plain.pth"
    save_official_ddrnet_checkpoint(models["ddrnet23_slim"], path)
    with pytest.raises(CheckpointError, match=r"plain\.pth: does not match DDRNet: 13 missing keys \(seghead_extra"):
        load_ddrnet_checkpoint(DDRNet("ddrnet23_slim", augment=True), path)


@pytest.mark.parametrize("saved, model", [("ddrnet39", "ddrnet23_slim"), ("ddrnet23_slim", "ddrnet39")])
def test_checkpoint_of_the_other_variant(saved, model, models, tmp_path):
    path = tmp_path / f"{saved}.pth"
    save_official_ddrnet_checkpoint(models[saved], path)
    with pytest.raises(CheckpointError) as e:
        load_ddrnet_checkpoint(DDRNet(model), path)
    assert str(e.value) == (f"{path}: is a {saved} checkpoint but the model is {model} "
                            f"(construct DDRNet('{saved}'))")


def test_missing_key_and_wrong_classes(models, tmp_path):
    sd = OrderedDict(models["ddrnet23_slim"].state_dict())
    sd.pop("layer4_.1.bn2.running_var")
    path = tmp_path / "broken.pth"
    torch.save({"model": sd}, path)
    model = DDRNet("ddrnet23_slim")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError) as e:
        load_ddrnet_checkpoint(model, path)
    assert str(e.value) == f"{path} ['model']: does not match DDRNet: 1 missing keys (layer4_.1.bn2.running_var)"
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())

    camvid = tmp_path / "camvid.pth"
    save_official_ddrnet_checkpoint(DDRNet("ddrnet23_slim", num_classes=11), camvid)
    with pytest.raises(CheckpointError, match=r"final_layer\.conv2\.weight: checkpoint \[11, 64, 1, 1\] "
                                              r"vs model \[19, 64, 1, 1\]"):
        load_ddrnet_checkpoint(model, camvid)


def test_full_width_ddrnet23_and_foreign_checkpoints(tmp_path):
    sd = OrderedDict(DDRNet("ddrnet23_slim").state_dict())
    sd["conv1.0.weight"] = torch.zeros(64, 3, 3, 3)
    path = tmp_path / "ddrnet23.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointError, match="full-width DDRNet-23 checkpoint .* not supported"):
        load_ddrnet_checkpoint(DDRNet("ddrnet39"), path)

    torch.save({"backbone.conv1.weight": torch.zeros(1)}, path)
    with pytest.raises(CheckpointError, match=r"no key in common: .*\(the model is 'ddrnet39'\)"):
        load_ddrnet_checkpoint(DDRNet("ddrnet39"), path)
