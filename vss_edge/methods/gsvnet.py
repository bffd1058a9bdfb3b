"""GSVNet (Lee, Chen, Peng, ICME 2021): keyframe net, flow net, propagation head."""
from __future__ import annotations

from vss_edge.configs import GSVNetConfig
from vss_edge.methods import MethodSpec, register_method
from vss_edge.methods.options import positive_int


def add_options(p) -> None:
    p.add_argument("--keyframe-net", choices=("swiftnet", "bisenet"), default="swiftnet")
    p.add_argument("--keyframe-scale", type=float, default=0.75, help="keyframe net input scale (paper: 0.75)")
    p.add_argument("--default-interval", type=positive_int, default=5, help="key-frame interval stored in the bundle")
    p.add_argument("--keyframe-width", type=positive_int, default=64,
                   help="SwiftNet base width (official 64; the trained demo weights: 16)")


def make_config(args, common: dict) -> GSVNetConfig:
    return GSVNetConfig(keyframe_net=args.keyframe_net, keyframe_scale=args.keyframe_scale,
                        keyframe_width=args.keyframe_width, interval=args.default_interval, **common)


SPEC = register_method(MethodSpec(
    name="gsvnet", summary="GSVNet: keyframe net, flow net, propagation head", config=GSVNetConfig,
    exporter="vss_edge.exporters.gsvnet:export_gsvnet", reference="vss_edge.reference:GSVNetReference",
    make_config=make_config, add_options=add_options, height=512, width=1024,
    checkpoints={"checkpoint": "official GSVNet checkpoint (.tar with state_dict and state_dict_of)",
                 "keyframe_checkpoint": "official keyframe net weights (SwiftNet / BiSeNet)"},
))
