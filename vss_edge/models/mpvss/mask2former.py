"""Mask2Former (Cheng et al., CVPR 2022) for semantic segmentation, MPVSS's key-frame segmentor.

state_dict keys as the official MaskFormer meta-architecture: backbone.* (detectron2
ResNet), sem_seg_head.pixel_decoder.*, sem_seg_head.predictor.* (the official R50
checkpoints load strictly, see vss_edge.models.mpvss.checkpoints.load_mask2former_checkpoint).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from vss_edge.models.mpvss.pixel_decoder import MSDeformAttnPixelDecoder
from vss_edge.models.mpvss.resnet import ResNet
from vss_edge.models.mpvss.transformer_decoder import MaskedTransformerDecoder


class SemSegHead(nn.Module):
    """Official MaskFormerHead / MPVSSHead: pixel_decoder + predictor."""

    def __init__(self, in_channels: dict[str, int], num_classes: int, arch: dict):
        super().__init__()
        c = arch["hidden_dim"]
        self.pixel_decoder = MSDeformAttnPixelDecoder(in_channels, conv_dim=c, mask_dim=c, nheads=arch["nheads"],
                                                      enc_layers=arch["enc_layers"], enc_ffn=arch["enc_ffn"])
        self.predictor = MaskedTransformerDecoder(num_classes, c, arch["num_queries"], arch["nheads"],
                                                  arch["dec_ffn"], arch["dec_layers"], mask_dim=c)

    def forward(self, features):
        mask_features, multi_scale = self.pixel_decoder(features)
        return self.predictor(multi_scale, mask_features)


def semantic_labels(class_logits: torch.Tensor, mask_logits: torch.Tensor, padded_size: tuple[int, int],
                    label_size: tuple[int, int]) -> torch.Tensor:
    """Official semantic inference -> uint8 labels [1, h, w].

    class_logits [1, N, K+1], mask_logits [1, N, h4, w4] at 1/4 of the padded input. The
    masks are resized (bilinear, align_corners=False) to padded_size, cropped to label_size
    (the unpadded image, sem_seg_postprocess), then semseg = softmax(classes)[..., :-1]^T .
    sigmoid(masks) (einsum "qc,qhw->chw") and labels = argmax over the K classes.
    """
    probs = F.softmax(class_logits, dim=-1)[..., :-1]  # [1, N, K]
    masks = mask_logits
    if tuple(mask_logits.shape[-2:]) != tuple(padded_size):
        masks = F.interpolate(mask_logits, size=padded_size, mode="bilinear", align_corners=False)
    ph, pw = int(masks.shape[-2]), int(masks.shape[-1])
    semseg = torch.bmm(probs.transpose(1, 2), masks.sigmoid().flatten(2))  # [1, K, ph*pw]
    # Every step is per pixel, so the crop can come last: cropping the uint8 labels instead of
    # the N float masks saves a copy of N x H x W floats (the same labels).
    h, w = label_size
    return semseg.argmax(1).view(1, ph, pw)[:, :h, :w].to(torch.uint8)


class Mask2Former(nn.Module):
    """normalised, padded image [1, 3, Hp, Wp] -> (class logits, mask logits at 1/4, queries)."""

    def __init__(self, num_classes: int, arch: dict):
        super().__init__()
        self.backbone = ResNet(arch["depth"], arch.get("backbone_width", 64))
        self.sem_seg_head = SemSegHead(self.backbone.out_channels, num_classes, arch)

    def forward(self, x):
        return self.sem_seg_head(self.backbone(x))
