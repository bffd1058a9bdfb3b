"""Shared fixtures: real frames from the sample clip and small exported GSVNet and STMG bundles."""
from __future__ import annotations

import pytest

SMALL = dict(height=128, width=256)  # small enough to export in seconds; still real frames


@pytest.fixture(scope="session")
def sample_frames():
    """All 60 frames of the shipped sample clip (BGR uint8 576x768x3)."""
    from vss_edge.video import open_source, sample_clip_path

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
