"""MPVSS (Weng et al., NeurIPS 2023): Mask2Former keyframe net, query-based flow, mask propagation."""
from __future__ import annotations

from vss_edge.configs import MPVSS_PROPAGATIONS, MPVSSConfig
from vss_edge.methods import MethodSpec, register_method
from vss_edge.methods.options import positive_int


def add_options(p) -> None:
    p.add_argument("--variant", choices=("r50", "small"), default="r50", help="r50: official; small: for tests")
    p.add_argument("--backbone-width", type=positive_int, default=64,
                   help="ResNet base width (default 64, official; the trained demo weights: 8)")
    p.add_argument("--motion-width", type=positive_int, default=None,
                   help="motion encoder's first width (default: the variant's, r50 64, small 16; the trained "
                        "demo weights: 8)")
    p.add_argument("--propagation", choices=MPVSS_PROPAGATIONS, default="query_flow",
                   help="query_flow: MPVSS; optical_flow / copy: the paper's baselines (one pixel-wise flow; no warp)")
    p.add_argument("--default-interval", type=positive_int, default=5, help="key-frame interval stored in the bundle")


def make_config(args, common: dict) -> MPVSSConfig:
    return MPVSSConfig(variant=args.variant, propagation=args.propagation, backbone_width=args.backbone_width,
                       motion_width=args.motion_width or 0, interval=args.default_interval, **common)


SPEC = register_method(MethodSpec(
    name="mpvss", summary="MPVSS: Mask2Former keyframe net, query-based flow, mask propagation", config=MPVSSConfig,
    exporter="vss_edge.exporters.mpvss:export_mpvss", reference="vss_edge.reference:MPVSSReference",
    make_config=make_config, add_options=add_options, height=480, width=853, classes=124,  # VSPW
    checkpoints={"checkpoint": "MPVSS checkpoint (detectron2 .pth {'model': ...}: backbone.*, motion.*, sem_seg_head.*)",
                 "mask2former_checkpoint": "official Mask2Former R50 semantic weights (.pkl or .pth) for the "
                                           "key-frame segmentor"},
))
