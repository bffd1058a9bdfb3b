"""MPVSS as three static graphs (H x W input; Hp x Wp = padded to multiples of 32;
N queries, C hidden, K classes; h4 x w4 = Hp/4 x Wp/4, h8 x w8 = Hp/8 x Wp/8).

| graph | runs on | inputs | outputs |
|---|---|---|---|
| keyframe (Mask2Former) | key frames | image u8 [1,H,W,3] BGR | labels u8 [1,Hl,Wl], class_logits [1,N,K+1], mask_logits [1,N,h4,w4], queries [1,N,C], key_image [1,3,Hp/2,Wp/2] |
| flow (query-based flow) | other frames | image, key_image, key_queries | flow [N,2,h8,w8] (optical_flow: no queries, [1,2,h8,w8]) |
| propagation | other frames | key_mask_logits, key_class_logits, flow | labels, mask_logits (warped) |

State carried from the key frame: class logits, mask logits, queries and key_image (the key
frame as the motion encoder sees it: normalised, padded, half resolution), so the flow
graph does not redo the key frame's preprocessing. Propagation is always from the key
frame (official mpvss.py keeps self.mem from the key frame; no recurrence).
Size divisibility (853 is not a multiple of 32): the normalised frame is zero-padded
bottom/right to Hp x Wp inside the graph, as detectron2's ImageList.from_tensors does; the
masks are cropped back to the unpadded image before the labels (sem_seg_postprocess).
The 'copy' baseline has only the keyframe graph: non-key frames reuse the key labels.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from vss_edge.configs import MPVSS_FLOW_NORMALISATION, MPVSSConfig
from vss_edge.models.common import Normalise
from vss_edge.models.mpvss.mask2former import SemSegHead, semantic_labels
from vss_edge.models.mpvss.motion import OpticalFlowEstimator, QueryFlowEstimator, warp_masks
from vss_edge.models.mpvss.resnet import ResNet

GRAPH_ROLES = {"keyframe": "keyframe_net", "flow": "flow_net", "propagation": "propagation_head"}
INPUTS = {"keyframe": ["image"], "flow": ["image", "key_image", "key_queries"],
          "propagation": ["key_mask_logits", "key_class_logits", "flow"]}
OUTPUTS = {"keyframe": ["labels", "class_logits", "mask_logits", "queries", "key_image"],
           "flow": ["flow"], "propagation": ["labels", "mask_logits"]}


def graph_inputs(propagation: str) -> dict[str, list[str]]:
    """INPUTS for a propagation mode: the optical-flow baseline's flow graph reads no queries."""
    if propagation == "optical_flow":
        return {**INPUTS, "flow": ["image", "key_image"]}
    return dict(INPUTS)


def graph_names(propagation: str) -> tuple[str, ...]:
    return ("keyframe",) if propagation == "copy" else ("keyframe", "flow", "propagation")


class MPVSS(nn.Module):
    """The official MPVSS meta-architecture's modules: backbone (ResNet), sem_seg_head
    (Mask2Former's pixel decoder + masked-attention decoder) and motion (the query-based flow
    estimator, or the optical-flow baseline; none for 'copy').
    state_dict keys: backbone.*, motion.encoder.*, motion.decoder.*, sem_seg_head.* (official order).
    """

    def __init__(self, cfg: MPVSSConfig):
        super().__init__()
        self.cfg = cfg
        arch = cfg.arch
        # Built segmentor first, so a seed gives the same Mask2Former whatever the propagation;
        # registered in the official order (backbone, motion, sem_seg_head: the state_dict order).
        backbone = ResNet(arch["depth"], arch.get("backbone_width", 64))
        sem_seg_head = SemSegHead(backbone.out_channels, cfg.num_classes, arch)
        if cfg.propagation == "query_flow":
            motion = QueryFlowEstimator(arch, cfg.num_queries)
        elif cfg.propagation == "optical_flow":
            motion = OpticalFlowEstimator(arch)
        else:
            motion = None
        self.backbone, self.motion, self.sem_seg_head = backbone, motion, sem_seg_head
        self.normalise = Normalise(cfg.normalisation, channel_order="RGB")
        self.flow_normalise = Normalise(MPVSS_FLOW_NORMALISATION, channel_order="RGB")

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """Zero-pad [1, C, H, W] bottom/right to the padded size (static)."""
        ph, pw = self.cfg.padded_size
        b, c, h, w = (int(d) for d in x.shape)
        # concatenated zero constants rather than F.pad: the exported Pad's amounts are computed
        # in-graph, which hides every later shape from ONNX shape inference (GFLOPs counting)
        if pw > w:
            x = torch.cat([x, torch.zeros(b, c, h, pw - w, dtype=x.dtype)], dim=3)
        if ph > h:
            x = torch.cat([x, torch.zeros(b, c, ph - h, pw, dtype=x.dtype)], dim=2)
        return x

    def segment(self, image: torch.Tensor):
        """uint8 [1,H,W,3] BGR -> (class logits [1,N,K+1], mask logits [1,N,h4,w4], queries [1,N,C])."""
        x = self.pad(self.normalise(image))
        return self.sem_seg_head(self.backbone(x))

    def flow_image(self, image: torch.Tensor) -> torch.Tensor:
        """The motion encoder's view of a frame (official FlowEstimator.prepare_imgs): RGB / 255 -
        mean, zero-padded to the padded size, resized by 0.5 (bilinear, align_corners=False)."""
        x = self.pad(self.flow_normalise(image))
        return F.interpolate(x, size=self.cfg.flow_image_size, mode="bilinear", align_corners=False)

    def labels(self, class_logits, mask_logits):
        return semantic_labels(class_logits, mask_logits, self.cfg.label_padded_size, self.cfg.label_size)


class KeyframeGraph(nn.Module):
    def __init__(self, model: MPVSS):
        super().__init__()
        self.model = model

    def forward(self, image):
        m = self.model
        class_logits, mask_logits, queries = m.segment(image)
        return m.labels(class_logits, mask_logits), class_logits, mask_logits, queries, m.flow_image(image)


class FlowGraph(nn.Module):
    def __init__(self, model: MPVSS):
        super().__init__()
        self.model = model

    def forward(self, image, key_image, key_queries=None):
        m = self.model
        pair = torch.cat([m.flow_image(image), key_image], dim=1)  # (current, key), as prepare_imgs
        if key_queries is None:  # the optical-flow baseline
            return m.motion(pair)
        return m.motion(pair, key_queries.transpose(0, 1))  # flow queries [N, 1, C]


class PropagationGraph(nn.Module):
    def __init__(self, model: MPVSS):
        super().__init__()
        self.model = model

    def forward(self, key_mask_logits, key_class_logits, flow):
        mask_logits = warp_masks(key_mask_logits, flow)
        return self.model.labels(key_class_logits, mask_logits), mask_logits


def mpvss_graphs(model: MPVSS) -> dict[str, nn.Module]:
    """The exportable graph modules by bundle graph name (only the keyframe graph for 'copy')."""
    graphs = {"keyframe": KeyframeGraph(model), "flow": FlowGraph(model), "propagation": PropagationGraph(model)}
    return {name: graphs[name] for name in graph_names(model.cfg.propagation)}
