"""STMG as four static graphs (H x W input, h x w = H/8 x W/8, C = DDRNet's feature
channels: 128 for DDRNet-23-slim, 256 for DDRNet-39; Ce = encoder channels; K = prunable blocks).

| graph | inputs | outputs |
|---|---|---|
| keyframe (full DDRNet, key weights) | image u8 [1,H,W,3] BGR | labels u8 [1,Hl,Wl], logits [1,N,h,w], features [1,C,h,w] |
| mask (mask generator) | image, prev_encoding [1,Ce,h,w] | encoding [1,Ce,h,w], spatial_mask [1,1,h,w], keep bool [K], keep_probability [1,K], distortion [1] |
| partial (DDRNet backbone, non-key weights) | image, keep bool [K] | features [1,C,h,w] |
| aggregation (Eq. 11 + head, non-key weights) | current_features (partial's), prev_features, spatial_mask | labels, logits, features (blended, kept for the next frame) |

In the exported `partial` graph each prunable block is an ONNX `If` on keep[k]: a dropped
block costs nothing (exporters.gating). The encoder features of the previous frame are
state, so Enc_f runs once per frame (t of frame i is e of frame i-1, Eq. 7's shared weights).
The features carried to the next frame are the ones the head saw (pi', or pi on a key
frame): the paper's "errors propagate as non-key frames repeat" - choice, the paper does
not write the recurrence out.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from vss_edge.models.common import Normalise, labels_from_logits
from vss_edge.models.stmg.ddrnet import DDRNet
from vss_edge.models.stmg.mask_generator import MaskGenerator, aggregate

GRAPH_ROLES = {"keyframe": "keyframe_net", "mask": "mask_generator", "partial": "partial_net",
               "aggregation": "propagation_head"}
INPUTS = {"keyframe": ["image"], "mask": ["image", "prev_encoding"], "partial": ["image", "keep"],
          "aggregation": ["current_features", "prev_features", "spatial_mask"]}
OUTPUTS = {"keyframe": ["labels", "logits", "features"],
           "mask": ["encoding", "spatial_mask", "keep", "keep_probability", "distortion"],
           "partial": ["features"], "aggregation": ["labels", "logits", "features"]}


class STMG(nn.Module):
    """The three networks: `key` (DDRNet for key frames), `nonkey` (DDRNet trained with block
    pruning, for non-key frames: the paper's limitation section, two weight sets) and
    `mask_generator`. state_dict keys: key.*, nonkey.* (each an official DDRNet layout), mask_generator.*.
    """

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.key = DDRNet(cfg.backbone, cfg.num_classes, planes=cfg.ddrnet_planes)
        self.nonkey = DDRNet(cfg.backbone, cfg.num_classes, planes=cfg.ddrnet_planes)
        blocks = len(self.key.prunable_blocks())
        if blocks != cfg.num_blocks:
            raise ValueError(f"{cfg.backbone} has {blocks} prunable blocks, config says {cfg.num_blocks}")
        self.mask_generator = MaskGenerator(cfg.encoder_channels, blocks, cfg.distortion_bias)
        self.normalise = Normalise(cfg.normalisation, channel_order="RGB")

    def labels(self, logits: torch.Tensor) -> torch.Tensor:
        return labels_from_logits(logits, self.cfg.label_size, align_corners=False)

    def keep_mask(self, keep_probability: torch.Tensor) -> torch.Tensor:
        """[1,K] probabilities -> bool [K]: which prunable blocks run."""
        return keep_probability[0] > self.cfg.keep_threshold


class KeyframeGraph(nn.Module):
    def __init__(self, model: STMG):
        super().__init__()
        self.model = model

    def forward(self, image):
        m = self.model
        features = m.key.features(m.normalise(image))
        logits = m.key.head(features)
        return m.labels(logits), logits, features


class MaskGraph(nn.Module):
    def __init__(self, model: STMG):
        super().__init__()
        self.model = model

    def forward(self, image, prev_encoding):
        m = self.model
        encoding = m.mask_generator.encoder(m.normalise(image))
        spatial_mask, keep_probability, distortion = m.mask_generator(prev_encoding, encoding)
        return encoding, spatial_mask, m.keep_mask(keep_probability), keep_probability, distortion


class PartialGraph(nn.Module):
    """The non-key backbone. Traced with every block (exporters.gating then gates them);
    run eagerly it skips the blocks whose keep entry is False."""

    def __init__(self, model: STMG):
        super().__init__()
        self.model = model

    def forward(self, image, keep):
        m = self.model
        tracing = torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()
        return m.nonkey.features(m.normalise(image), None if tracing else [bool(k) for k in keep])


class AggregationGraph(nn.Module):
    def __init__(self, model: STMG):
        super().__init__()
        self.model = model

    def forward(self, current_features, prev_features, spatial_mask):
        m = self.model
        blended = aggregate(current_features, prev_features, spatial_mask)
        logits = m.nonkey.head(blended)
        return m.labels(logits), logits, blended


def stmg_graphs(model: STMG) -> dict[str, nn.Module]:
    """The exportable graph modules by bundle graph name."""
    return {"keyframe": KeyframeGraph(model), "mask": MaskGraph(model), "partial": PartialGraph(model),
            "aggregation": AggregationGraph(model)}


def block_scopes(model: STMG) -> list[str]:
    """Module names of the prunable blocks of the non-key DDRNet, in keep-vector order."""
    return model.nonkey.prunable_blocks()
