"""STMG (Rhee et al., NeurIPS 2022) on DDRNet: keyframe net, mask generator, gated partial net, aggregation."""
from __future__ import annotations

from vss_edge.configs import STMGConfig
from vss_edge.methods import MethodSpec, register_method
from vss_edge.methods.options import positive_int


def add_options(p) -> None:
    p.add_argument("--backbone", choices=("ddrnet23_slim", "ddrnet39"), default="ddrnet23_slim")
    p.add_argument("--distortion-bias", action="store_true", help="Eq. 12's distortion bias in the pruning head")
    p.add_argument("--ddrnet-planes", type=positive_int,
                   help="DDRNet stem width (default: the backbone's official one; the trained demo weights: 8)")
    p.add_argument("--encoder-channels", type=positive_int, default=64,
                   help="mask generator encoder width (default 64; the trained demo weights: 16)")
    p.add_argument("--keep-threshold", type=float, default=0.5, help="a block runs iff its keep probability exceeds this")
    p.add_argument("--default-interval", type=positive_int, default=5,
                   help="key-frame interval when --scheduler fixed_interval is chosen at run time")


def make_config(args, common: dict) -> STMGConfig:
    return STMGConfig(backbone=args.backbone, distortion_bias=args.distortion_bias, ddrnet_planes=args.ddrnet_planes,
                      encoder_channels=args.encoder_channels, keep_threshold=args.keep_threshold,
                      interval=args.default_interval, **common)


SPEC = register_method(MethodSpec(
    name="stmg", summary="STMG on DDRNet: keyframe net, mask generator, gated partial net, aggregation",
    config=STMGConfig, exporter="vss_edge.exporters.stmg:export_stmg", reference="vss_edge.reference:STMGReference",
    make_config=make_config, add_options=add_options, height=1024, width=2048,
    checkpoints={"checkpoint": "STMG state_dict (key.*, nonkey.*, mask_generator.*)",
                 "ddrnet_checkpoint": "official DDRNet weights, for both the key and the non-key backbone"},
))
