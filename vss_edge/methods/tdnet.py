"""TDNet (Hu et al., CVPR 2020): one graph per sub-network path, run round robin."""
from __future__ import annotations

from vss_edge.configs import TDNetConfig
from vss_edge.methods import MethodSpec, register_method
from vss_edge.methods.options import positive_int


def add_options(p) -> None:
    p.add_argument("--variant", choices=("td4_psp18", "td2_psp50"), default="td4_psp18")
    p.add_argument("--backbone-width", type=positive_int, default=64,
                   help="ResNet base width of every path (official 64; the trained demo weights: 8)")


def make_config(args, common: dict) -> TDNetConfig:
    return TDNetConfig(variant=args.variant, backbone_width=args.backbone_width, **common)


SPEC = register_method(MethodSpec(
    name="tdnet", summary="TDNet: one graph per sub-network path, run round robin", config=TDNetConfig,
    exporter="vss_edge.exporters.tdnet:export_tdnet", reference="vss_edge.reference:TDNetReference",
    make_config=make_config, add_options=add_options, height=769, width=1537,
    checkpoints={"checkpoint": "official TDNet state_dict (td4_psp18 / td2_psp50)"},
))
