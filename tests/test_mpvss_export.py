"""MPVSS ResNet-50 (the official configuration) exports at the paper's VSPW size 480x853:
853 is not a multiple of 32, so Mask2Former's padding to 480x864 happens in the graph.
Verified against PyTorch on one real frame (keyframe) and one propagated frame (flow,
propagation) to keep the test short; the small configuration's parity tests cover the rest."""
from __future__ import annotations

import pytest

from vss_edge import runtime
from vss_edge.exporters.mpvss import export_mpvss
from vss_edge.configs import MPVSSConfig
from test_mpvss import label_tail_gflops  # the label step's cost, checked there against the graph path's tail


@pytest.fixture(scope="module")
def r50_bundle(tmp_path_factory):
    return export_mpvss(tmp_path_factory.mktemp("mpvss_r50") / "bundle", MPVSSConfig(), verify_frames=1,
                        simplify=False)


def test_r50_exports_at_480x853_with_static_padding(r50_bundle):
    manifest = runtime.load_manifest(r50_bundle)
    assert (manifest.height, manifest.width) == (480, 853)
    assert manifest.config["variant"] == "r50" and manifest.config["num_classes"] == 124
    out = {g: {t.name: t.shape for t in spec.outputs} for g, spec in manifest.graphs.items()}
    assert out["keyframe"] == {"class_logits": (1, 100, 125), "mask_logits": (1, 100, 120, 216),
                               "queries": (1, 100, 256), "key_image": (1, 3, 240, 432)}
    assert out["flow"] == {"flow": (100, 2, 60, 108)}
    assert out["propagation"] == {"mask_logits": (1, 100, 120, 216)}
    # the default label_path 'host': the 1/4 masks of the padded 480 x 864 are resized to it on the
    # host and the labels cropped back to 480 x 853 (sem_seg_postprocess)
    assert manifest.labels == {"computed": "host", "kind": "masks", "scores_size": [120, 216],
                               "padded_size": [480, 864], "size": [480, 853]}
    # every output within 1e-3 of PyTorch (relative); the host's labels are checked in test_mpvss.py
    assert all(err <= 1e-3 for g in manifest.raw["graphs"].values() for err in g["verified_max_error"].values())
    assert {k for g in manifest.raw["graphs"].values() for k in g["verified_max_error"]} == {
        "class_logits", "mask_logits", "queries", "key_image", "flow"}


def test_r50_gflops_key_vs_non_key(r50_bundle):
    """GFLOPs = 2 x multiply-accumulates (the paper's fvcore 'FLOPs' count one per MAC: about
    110 key vs 21 non-key). Each frame's cost includes its labels: the host-label bundle's graphs
    end at the mask logits, so the faithful semantic inference every frame computes, and the
    paper counts (test_mpvss.label_tail_gflops: 2 x 124 x 100 x 480 x 864, about 10.3), is added to
    both. Non-key = flow + propagation (the warp, which GFLOPs do not count) + the semantic merge."""
    manifest = runtime.load_manifest(r50_bundle)
    g = {n: s.gflops for n, s in manifest.graphs.items()}
    tail = label_tail_gflops(manifest)
    assert tail == pytest.approx(2 * 124 * 100 * 480 * 864 / 1e9)
    key, non_key = g["keyframe"] + tail, g["flow"] + g["propagation"] + tail
    assert 180 < key < 230, (g, tail)
    assert 30 < non_key < 50, (g, tail)
    assert 4 < key / non_key < 6, (g, tail)


def test_r50_bundle_runs_key_and_non_key_frames(r50_bundle, sample_frames):
    pipe = runtime.load(r50_bundle, device="cpu")
    results = [pipe.step(f) for f in sample_frames[:2]]
    assert [r.is_key for r in results] == [True, False]
    assert all(r.labels.shape == sample_frames[0].shape[:2] for r in results)
    assert set(results[1].timings_ms) == {"flow", "propagation"}
