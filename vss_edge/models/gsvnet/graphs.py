"""GSVNet split into the three static graphs a bundle holds.

All frames enter as uint8 [1, H, W, 3] BGR (as OpenCV delivers them, already at the
bundle resolution); each graph normalises in-graph, so the runtime does no pixel
maths. h, w below are H/8, W/8; C is the number of classes.

| graph       | inputs                                            | outputs                                              |
|-------------|---------------------------------------------------|------------------------------------------------------|
| keyframe    | image u8 [1,H,W,3]                                | logits f32 [1,C,h,w], labels u8 [1,Hl,Wl], image_small f32 [1,3,h,w] |
| flow        | image u8 [1,H,W,3], prev_image_small f32 [1,3,h,w] | flow f32 [1,2,h,w], image_small f32 [1,3,h,w]        |
| propagation | prev_logits f32 [1,C,h,w], image_small, flow      | logits f32 [1,C,h,w], labels u8 [1,Hl,Wl]            |

State carried between frames: logits and image_small. Labels are the argmax of the
1/8 logits resized bilinearly (align_corners=True) to Hl x Wl = label_scale * (H, W);
label_scale 1 is what the official evaluation does.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from vss_edge.configs import GSVNetConfig
from vss_edge.models.common import Normalise, labels_from_logits, resize
from vss_edge.models.gsvnet.flownet import FlowLight
from vss_edge.models.gsvnet.propagation import GuidedSpatiallyVaryingConv, warp


def build_keyframe_net(name: str, num_classes: int, width: int = 64) -> nn.Module:
    if name == "swiftnet":
        from vss_edge.models.gsvnet.swiftnet import SwiftNetR18

        return SwiftNetR18(num_classes, num_features=2 * width, width=width)
    if name == "bisenet":
        from vss_edge.models.gsvnet.bisenet import BiSeNetR18

        return BiSeNetR18(num_classes)
    raise ValueError(f"unknown keyframe net {name!r} (swiftnet, bisenet)")


class GSVNet(nn.Module):
    """The three GSVNet networks and the config that fixes their static shapes."""

    def __init__(self, cfg: GSVNetConfig):
        super().__init__()
        self.cfg = cfg
        self.segnet = build_keyframe_net(cfg.keyframe_net, cfg.num_classes, cfg.keyframe_width)
        self.flownet = FlowLight()
        self.gsv = GuidedSpatiallyVaryingConv(cfg.num_classes)
        self.normalise = Normalise(cfg.normalisation, channel_order="BGR")

    def graphs(self) -> dict[str, nn.Module]:
        """The exportable graph modules by bundle graph name."""
        return {
            "keyframe": KeyframeGraph(self),
            "flow": FlowGraph(self),
            "propagation": PropagationGraph(self),
        }


class KeyframeGraph(nn.Module):
    """image -> (logits at 1/8, labels at H x W, image_small)."""

    def __init__(self, model: GSVNet):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor):
        cfg = self.model.cfg
        x = self.model.normalise(image)
        key_input = resize(x.flip(1), cfg.keyframe_size, align_corners=True)  # BGR -> RGB
        logits = resize(self.model.segnet(key_input), cfg.small_size, align_corners=True)
        image_small = resize(x, cfg.small_size, align_corners=True)
        return logits, labels_from_logits(logits, cfg.label_size), image_small


class FlowGraph(nn.Module):
    """(image, prev_image_small) -> (flow at 1/8, image_small)."""

    def __init__(self, model: GSVNet):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor, prev_image_small: torch.Tensor):
        cfg = self.model.cfg
        image_small = resize(self.model.normalise(image), cfg.small_size, align_corners=True)
        flow = self.model.flownet(torch.cat((image_small, prev_image_small), dim=1))
        return resize(flow, cfg.small_size, align_corners=True), image_small


class PropagationGraph(nn.Module):
    """(prev_logits, image_small, flow) -> (logits, labels)."""

    def __init__(self, model: GSVNet):
        super().__init__()
        self.model = model

    def forward(self, prev_logits: torch.Tensor, image_small: torch.Tensor, flow: torch.Tensor):
        cfg = self.model.cfg
        logits = self.model.gsv(warp(prev_logits, flow), image_small)
        return logits, labels_from_logits(logits, cfg.label_size)
