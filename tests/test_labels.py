"""The host label path (vss_edge.runtime.labels) against the faithful resize + argmax in PyTorch,
on scores the trained demo weights give on the real sample clip."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vss_edge import demo_weights
from vss_edge.runtime.labels import LogitLabels, MaskLabels
from vss_edge.runtime.preprocess import to_graph_input

FRAMES = range(0, 60, 6)  # 10 frames of the clip


def _ties(scores: torch.Tensor, labels: np.ndarray, got: np.ndarray) -> bool:
    """Whether at every differing pixel the two classes' faithful scores tie to float rounding."""
    ys, xs = np.nonzero(labels != got)
    s = scores[0].numpy()
    a, b = s[labels[ys, xs], ys, xs], s[got[ys, xs], ys, xs]
    return bool(np.all(np.abs(a - b) <= 1e-5 * np.maximum(1.0, np.abs(a))))


@pytest.fixture(scope="module")
def gsvnet_logits(sample_frames):
    """The trained GSVNet keyframe net's 1/8 logits [1, 6, 36, 48] on real frames."""
    from vss_edge.exporters.gsvnet import build_model

    model, _ = build_model(demo_weights.gsvnet_config(), str(demo_weights.GSVNET_PROPAGATION),
                           str(demo_weights.GSVNET_KEYFRAME))
    graph = model.graphs()["keyframe"]
    with torch.no_grad():
        return [graph(torch.from_numpy(to_graph_input(sample_frames[i], 288, 384)))[0] for i in FRAMES]


@pytest.mark.parametrize("choose_classes", [True, False])
@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize("size", [(288, 384), (576, 768), (301, 417), (36, 48), (20, 30)])
def test_logit_labels_equal_resize_then_argmax(gsvnet_logits, align_corners, size, choose_classes, monkeypatch):
    """Up (x8, x16, a non-integer scale), identity and down: the same labels as resizing every
    class map and taking the argmax (measured: 0 differing pixels of 1.1 M at x8), whether the
    boundary cells interpolate only the classes that can win or all of them."""
    from vss_edge.runtime import labels as labels_module

    monkeypatch.setattr(labels_module, "PRUNE_WORK", 0 if choose_classes else float("inf"))
    labeller = LogitLabels(tuple(gsvnet_logits[0].shape[-2:]), size, align_corners)
    shares = []
    for logits in gsvnet_logits:
        resized = F.interpolate(logits, size=size, mode="bilinear", align_corners=align_corners)
        faithful = resized.argmax(1)[0].numpy().astype(np.uint8)
        got = labeller(logits.numpy())
        assert got.shape == size and got.dtype == np.uint8
        assert np.mean(got == faithful) >= 0.9999 and _ties(resized, faithful, got)
        shares.append(labeller.boundary_share)
    if size[0] > 36:  # upsampling: only the boundary cells are computed (measured 4% at x8)
        assert 0 < np.mean(shares) < 0.25


def test_logit_labels_of_a_constant_map_and_of_exact_ties():
    labeller = LogitLabels((4, 5), (16, 20), True)
    flat = np.zeros((1, 3, 4, 5), np.float32)
    flat[0, 2] = 1.0
    assert (labeller(flat) == 2).all() and labeller.boundary_share == 0.0
    tied = np.zeros((1, 3, 4, 5), np.float32)  # every class ties: the faithful argmax says 0
    assert (labeller(tied) == 0).all() and labeller.boundary_share == 1.0



@pytest.mark.parametrize("align_corners", [True, False])
def test_logit_labels_interpolate_only_the_classes_that_can_win(align_corners, monkeypatch):
    """Noise logits (19 classes, every cell a boundary with 2-6 candidates): the blocks' argmax over
    the candidate classes equals the argmax over all 19 interpolated classes, pixel for pixel."""
    from vss_edge.runtime import labels as labels_module

    monkeypatch.setattr(labels_module, "PRUNE_WORK", 0)  # whatever the size, choose the candidates
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((1, 19, 12, 16)).astype(np.float32)
    labeller = LogitLabels((12, 16), (100, 131), align_corners)
    hwc = np.ascontiguousarray(logits[0].transpose(1, 2, 0))
    cy, cx = (a.ravel() for a in np.meshgrid(np.arange(12), np.arange(16), indexing="ij"))
    pruned = labeller._argmax_blocks(hwc, cy, cx)
    assert np.array_equal(pruned, labeller._interpolate(hwc, cy, cx).argmax(-1))
    resized = F.interpolate(torch.from_numpy(logits), size=(100, 131), mode="bilinear", align_corners=align_corners)
    assert np.array_equal(labeller(logits), resized.argmax(1)[0].numpy())


def test_logit_labels_survive_nan_scores(monkeypatch):
    """A graph gone wrong (NaN logits in a patch) still gives one label map per frame, equal to
    interpolating every class wherever the scores are finite."""
    from vss_edge.runtime import labels as labels_module

    logits = np.random.default_rng(0).standard_normal((1, 19, 12, 16)).astype(np.float32)
    logits[0, :3, 3:5, 4:6] = np.nan
    labeller = LogitLabels((12, 16), (96, 128), True)
    monkeypatch.setattr(labels_module, "PRUNE_WORK", 0)
    pruned = labeller(logits)
    monkeypatch.setattr(labels_module, "PRUNE_WORK", float("inf"))
    every_class = labeller(logits)
    finite = torch.isfinite(F.interpolate(torch.from_numpy(logits), size=(96, 128), mode="bilinear",
                                       align_corners=True)[0]).all(0).numpy()
    assert pruned.shape == (96, 128) and pruned.dtype == np.uint8 and 0 < finite.mean() < 1
    assert np.array_equal(pruned[finite], every_class[finite])

@pytest.fixture(scope="module")
def mpvss_outputs(sample_frames):
    """The trained MPVSS (small) at 270x360 (padded to 288x384): class and 1/4 mask logits."""
    from vss_edge.exporters.mpvss import build_model

    model, _ = build_model(demo_weights.mpvss_config(270, 360), str(demo_weights.MPVSS_CHECKPOINT))
    with torch.no_grad():
        return model, [model.segment(torch.from_numpy(to_graph_input(sample_frames[i], 270, 360)))[:2]
                       for i in FRAMES]


def test_mask_labels_equal_the_official_semantic_inference(mpvss_outputs):
    """Masks resized to the padded size, sigmoid, class-weighted sum, argmax, cropped (measured: 0
    differing pixels)."""
    from vss_edge.models.mpvss.mask2former import semantic_labels

    model, outputs = mpvss_outputs
    cfg = model.cfg
    labeller = MaskLabels(tuple(outputs[0][1].shape[-2:]), cfg.label_padded_size, cfg.label_size)
    for class_logits, mask_logits in outputs:
        faithful = semantic_labels(class_logits, mask_logits, cfg.label_padded_size, cfg.label_size)[0].numpy()
        got = labeller(class_logits.numpy(), mask_logits.numpy())
        assert got.shape == (270, 360)
        assert np.mean(got == faithful) >= 0.9999
    assert 0 < labeller.boundary_share < 0.5


def test_mask_labels_of_masks_disagreeing_everywhere_resize_them_all_with_the_same_labels(mpvss_outputs, monkeypatch):
    """Masks of noise put nearly every cell on a boundary: MaskLabels then resizes every mask
    (runtime.labels.DENSE_SHARE: OpenCV along the columns, a band's weights along the rows); the labels
    are the official semantic inference's, and those of the cell-by-cell path."""
    from vss_edge.models.mpvss.mask2former import semantic_labels
    from vss_edge.runtime import labels as labels_module

    model, outputs = mpvss_outputs
    cfg = model.cfg
    class_logits, mask_logits = outputs[0]
    rng = np.random.default_rng(0)  # as seeded weights give: flat class scores, masks of noise
    class_logits = torch.from_numpy(0.5 * rng.standard_normal(class_logits.shape, dtype=np.float32))
    noisy = torch.from_numpy(2.0 * rng.standard_normal(mask_logits.shape, dtype=np.float32))
    labeller = MaskLabels(tuple(noisy.shape[-2:]), cfg.label_padded_size, cfg.label_size)
    faithful = semantic_labels(class_logits, noisy, cfg.label_padded_size, cfg.label_size)[0].numpy()
    dense = labeller(class_logits.numpy(), noisy.numpy())
    assert labeller.boundary_share == 1.0 and np.mean(dense == faithful) >= 0.9999
    monkeypatch.setattr(labels_module, "DENSE_SHARE", 1.0)
    by_cell = labeller(class_logits.numpy(), noisy.numpy())
    assert labeller.boundary_share > labels_module.DENSE_SHARE / 2 and np.mean(by_cell == dense) >= 0.9999


def test_mask_labels_choose_their_path_frame_by_frame(mpvss_outputs):
    """After a dense frame a sample of the cells chooses the path (runtime.labels.DENSE_SAMPLE): a
    trained frame after a noisy one goes back to the cell-by-cell path, and every frame's labels are
    the official semantic inference's, whichever path ran."""
    from vss_edge.models.mpvss.mask2former import semantic_labels

    model, outputs = mpvss_outputs
    cfg = model.cfg
    rng = np.random.default_rng(2)
    noisy = [(torch.from_numpy(0.5 * rng.standard_normal(c.shape, dtype=np.float32)),
              torch.from_numpy(2.0 * rng.standard_normal(m.shape, dtype=np.float32))) for c, m in outputs[:2]]
    labeller = MaskLabels(tuple(outputs[0][1].shape[-2:]), cfg.label_padded_size, cfg.label_size)
    for (class_logits, mask_logits), dense in [(noisy[0], True), (outputs[0], False), (noisy[1], True),
                                               (noisy[0], True), (outputs[1], False), (outputs[2], False)]:
        faithful = semantic_labels(class_logits, mask_logits, cfg.label_padded_size, cfg.label_size)[0].numpy()
        got = labeller(class_logits.numpy(), mask_logits.numpy())
        assert (labeller.boundary_share == 1.0) == dense and np.mean(got == faithful) >= 0.9999


@pytest.mark.parametrize("src, padded, dst, queries", [((13, 17), (50, 70), (47, 61), 9),
                                                       ((30, 40), (20, 25), (20, 25), 9),
                                                       ((6, 8), (24, 32), (22, 30), 1),
                                                       ((6, 8), (24, 32), (22, 30), 600)])
def test_mask_labels_dense_path_at_any_scale(src, padded, dst, queries):
    """The dense path at non-integer up and down scales, cropped, with one query and with more than
    OpenCV takes in one image: the faithful resize -> sigmoid -> class sum -> argmax (PyTorch), pixel
    for pixel up to float-rounding ties."""
    rng = np.random.default_rng(1)
    class_logits = rng.standard_normal((1, queries, 6), dtype=np.float32)
    masks = 3.0 * rng.standard_normal((1, queries) + src, dtype=np.float32)
    labeller = MaskLabels(src, padded, dst)
    e = np.exp(class_logits[0] - class_logits[0].max(-1, keepdims=True))
    probs = torch.from_numpy((e / e.sum(-1, keepdims=True))[:, :-1])
    resized = F.interpolate(torch.from_numpy(masks), size=padded, mode="bilinear", align_corners=False)
    faithful = torch.einsum("qk,qhw->khw", probs, resized[0].sigmoid())[:, :dst[0], :dst[1]].argmax(0).numpy()
    got = labeller(class_logits, masks)
    assert labeller.boundary_share == 1.0 and got.shape == dst
    assert np.mean(got == faithful) >= 0.9999


def _nearest(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """What the pipeline did before the label steps took a size: OpenCV's nearest resize."""
    return cv2.resize(labels, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)


FRAME_SIZES = [(576, 768), (250, 999), (17, 23), (288, 384)]  # up, rows down and columns up, down, the same


@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize("choose_classes", [True, False])
def test_logit_labels_at_a_frame_size_are_the_nearest_resize_of_the_labels(gsvnet_logits, align_corners,
                                                                         choose_classes, monkeypatch):
    """labels(logits, size) computes only the pixels a nearest-neighbour resize keeps: the same
    labels as resizing the full labels, pixel for pixel (no tie tolerance: the same arithmetic)."""
    from vss_edge.runtime import labels as labels_module

    monkeypatch.setattr(labels_module, "PRUNE_WORK", 0 if choose_classes else float("inf"))
    labeller = LogitLabels((36, 48), (288, 384), align_corners)
    for logits in gsvnet_logits[:4]:
        full = labeller(logits.numpy())
        for size in FRAME_SIZES:
            got = labeller(logits.numpy(), size)
            assert got.shape == size and got.dtype == np.uint8
            assert np.array_equal(got, _nearest(full, size)), size
    assert labeller.at((576, 768)) is labeller.at((576, 768))  # made once


def test_mask_labels_at_a_frame_size_are_the_nearest_resize_of_the_labels(mpvss_outputs, monkeypatch):
    """The same for MPVSS's semantic inference, by cell (trained masks) and dense (noise masks)."""
    from vss_edge.runtime import labels as labels_module

    model, outputs = mpvss_outputs
    cfg = model.cfg
    class_logits, mask_logits = (t.numpy() for t in outputs[0])
    noisy = 2.0 * np.random.default_rng(0).standard_normal(mask_logits.shape, dtype=np.float32)
    labeller = MaskLabels(tuple(mask_logits.shape[-2:]), cfg.label_padded_size, cfg.label_size)
    for masks, dense in ((mask_logits, False), (noisy, True)):
        full = labeller(class_logits, masks)
        for size in FRAME_SIZES:
            got = labeller(class_logits, masks, size)
            assert got.shape == size and (labeller.at(size)[0].boundary_share == 1.0) == dense
            assert np.array_equal(got, _nearest(full, size)), (size, dense)
