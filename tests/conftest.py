"""Shared fixtures: real frames from the sample clip; small exported GSVNet, STMG and TDNet bundles;
a GSVNet whose flows move several pixels; the trained demo weights exported (GSVNet by `vss-edge demo`
itself, STMG beside it), each once per session."""
from __future__ import annotations

import pytest

SMALL = dict(height=128, width=256)  # small enough to export in seconds; still real frames


@pytest.fixture(scope="session")
def sample_frames():
    """All 60 frames of the shipped sample clip (BGR uint8 576x768x3)."""
    from vss_edge.runtime.sources import open_source, sample_clip_path

    with open_source(sample_clip_path()) as source:
        return list(source)


@pytest.fixture(scope="session")
def gsvnet_model():
    """A seeded GSVNet (SwiftNet keyframe net) at the small test resolution."""
    from vss_edge.exporters.gsvnet import build_model
    from vss_edge.configs import GSVNetConfig

    model, _ = build_model(GSVNetConfig(**SMALL), seed=0)
    return model


@pytest.fixture(scope="session")
def gsvnet_bundle(tmp_path_factory):
    """That model exported to a bundle (same seed => same weights as gsvnet_model)."""
    from vss_edge.exporters.gsvnet import export_gsvnet
    from vss_edge.configs import GSVNetConfig

    return export_gsvnet(tmp_path_factory.mktemp("bundles") / "gsvnet", GSVNetConfig(**SMALL), seed=0)


@pytest.fixture(scope="session")
def stmg_model():
    """A seeded STMG (DDRNet-23-slim) at the small test resolution."""
    from vss_edge.exporters.stmg import build_model
    from vss_edge.configs import STMGConfig

    model, _ = build_model(STMGConfig(**SMALL), seed=0)
    return model


@pytest.fixture(scope="session")
def stmg_bundle(tmp_path_factory):
    """That model exported to a bundle (same seed => same weights as stmg_model)."""
    from vss_edge.exporters.stmg import export_stmg
    from vss_edge.configs import STMGConfig

    return export_stmg(tmp_path_factory.mktemp("bundles") / "stmg", STMGConfig(**SMALL), seed=0)


# Flow head bias of the "moving" GSVNet, in GSVNet's flow units (flow / 4 = pixels at 1/8):
# every propagated frame reads the previous map 3 pixels right and 2 pixels up of each pixel.
MOVING_FLOW_BIAS = (12.0, -8.0)


@pytest.fixture(scope="session")
def gsvnet_moving(tmp_path_factory):
    """(model, bundle): the seeded GSVNet of `gsvnet_model` with FlowLight's last bias raised by
    MOVING_FLOW_BIAS, so its flows are (12, -8) +- 0.2 on the sample clip (measured: mean (11.89, -7.97),
    std (0.19, 0.10)) instead of the random net's 0.014 px: a warp in the wrong place or from the wrong
    frame moves every class boundary. Hand-set (deterministic) because the trained FlowLight sees
    well under a pixel of motion on the sample clip at this size."""
    import torch

    from vss_edge.configs import GSVNetConfig
    from vss_edge.exporters.gsvnet import build_model, export_gsvnet
    from vss_edge.models.gsvnet.checkpoints import save_official_checkpoints

    root = tmp_path_factory.mktemp("gsvnet_moving")
    cfg = GSVNetConfig(**SMALL)
    model, _ = build_model(cfg, seed=0)
    with torch.no_grad():
        model.flownet.toflow.bias.add_(torch.tensor(MOVING_FLOW_BIAS))
    save_official_checkpoints(model, root / "keyframe.pth", root / "gsvnet.tar")
    bundle = export_gsvnet(root / "bundle", cfg, checkpoint=str(root / "gsvnet.tar"),
                           keyframe_checkpoint=str(root / "keyframe.pth"))
    return model, bundle


@pytest.fixture(scope="session")
def tdnet_small(tmp_path_factory):
    """(model, bundle): a seeded TD4-PSP18 at 96x160 (feature size 12x20, not divisible by 6: the
    exact static pooling is used)."""
    from vss_edge.configs import TDNetConfig
    from vss_edge.exporters.tdnet import build_model, export_tdnet

    cfg = TDNetConfig(height=96, width=160, variant="td4_psp18")
    model, _ = build_model(cfg, seed=3)
    return model, export_tdnet(tmp_path_factory.mktemp("tdnet") / "td4", cfg, seed=3)


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """`vss-edge demo --out DIR` run once, in process (README: exports the trained GSVNet bundle into
    DIR/bundle, segments the 60-frame sample clip, writes DIR/overlay.mp4); returns DIR."""
    from vss_edge.cli import main

    out = tmp_path_factory.mktemp("demo") / "demo"
    assert main(["-q", "demo", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="session")
def trained_gsvnet(demo_run):
    """The committed GSVNet demo weights exported at 288x384, the resolution they were trained at:
    the bundle `vss-edge demo` exported."""
    return demo_run / "bundle"


@pytest.fixture(scope="session")
def trained_gsvnet_model():
    """The PyTorch GSVNet with the committed demo weights (288x384)."""
    from vss_edge import demo_weights
    from vss_edge.exporters.gsvnet import build_model

    model, _ = build_model(demo_weights.gsvnet_config(), checkpoint=str(demo_weights.GSVNET_PROPAGATION),
                           keyframe_checkpoint=str(demo_weights.GSVNET_KEYFRAME))
    return model


@pytest.fixture(scope="session")
def trained_stmg(tmp_path_factory):
    """(model, bundle): the committed STMG demo weights at 288x384. Their generator does vary over
    the sample clip (frames 20..43: three different keep vectors, spatial-mask means 0.024..0.043,
    the distortion scheduler picks 9 key frames of 24), and the labels are background and person."""
    from vss_edge import demo_weights
    from vss_edge.exporters.stmg import build_model, export_stmg

    cfg = demo_weights.stmg_config()
    model, _ = build_model(cfg, checkpoint=str(demo_weights.STMG_CHECKPOINT))
    bundle = export_stmg(tmp_path_factory.mktemp("trained") / "stmg", cfg,
                         checkpoint=str(demo_weights.STMG_CHECKPOINT), verify_frames=4)
    return model, bundle
