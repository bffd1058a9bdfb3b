"""The trained demo weights committed in vss_edge/data/weights (torch-free description).

GSVNet's small configuration, trained on CPU by `python -m vss_edge.training gsvnet` (see
vss_edge/training): a SwiftNet-R18 keyframe net at base width 16 (official 64) in the
official bare state_dict layout, and the GSVNet .tar (``state_dict`` = ``grm.*`` propagation
modules, ``state_dict_of`` = FlowLight) that `vss-edge export gsvnet --checkpoint` reads.
STMG's small configuration (`python -m vss_edge.training stmg`): DDRNet-23-slim at stem
width 8 (official 32) for the key and non-key nets and a 16-channel mask generator, in the
STMG layout `vss-edge export stmg --checkpoint` reads.
MPVSS's small configuration (`python -m vss_edge.training mpvss`): variant 'small' (Mask2Former
on ResNet-18, 16 queries, hidden 64) at ResNet base width 8 (official 64) and motion-encoder
width 8 (the variant's 16), in the detectron2 .pth layout `vss-edge export mpvss --checkpoint` reads.

Classes: the synthetic video's first five (background, then four textured object classes,
`vss_edge.synthetic.class_names`) and ``person``, learnt from background-subtraction
pseudo-labels on frames of vtest.avi outside the sample clip's 100..159.
"""
from __future__ import annotations

from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent / "data" / "weights"
# GSVNet at HEIGHT x WIDTH exported from the weights below, shipped so that `vss-edge demo` runs
# on a runtime-only install (no torch). Remade by scripts/make_demo_bundle.py;
# tests/test_packaging.py checks it gives the labels of a fresh export.
DEMO_BUNDLE = Path(__file__).resolve().parent / "data" / "demo_bundle"
GSVNET_KEYFRAME = WEIGHTS_DIR / "gsvnet_small_swiftnet.pth"
GSVNET_PROPAGATION = WEIGHTS_DIR / "gsvnet_small.tar"
STMG_CHECKPOINT = WEIGHTS_DIR / "stmg_small.pth"  # key.*, nonkey.*, mask_generator.*
TDNET_CHECKPOINT = WEIGHTS_DIR / "tdnet_small.pth"  # bare TD4-PSP18 state_dict
MPVSS_CHECKPOINT = WEIGHTS_DIR / "mpvss_small.pth"  # detectron2 .pth {'model': backbone.*, motion.*, sem_seg_head.*}

SYNTHETIC_CLASSES = 5  # background + 4 object classes of vss_edge.synthetic
PERSON = SYNTHETIC_CLASSES  # class id of "person"
NUM_CLASSES = SYNTHETIC_CLASSES + 1
KEYFRAME_WIDTH = 16
DDRNET_PLANES, STMG_ENCODER_CHANNELS = 8, 16  # STMG small configuration (official 32, 64)
TDNET_WIDTH = 8  # TD4-PSP18 small configuration: ResNet-18 base width (official 64)
MPVSS_BACKBONE_WIDTH, MPVSS_MOTION_WIDTH = 8, 8  # MPVSS variant 'small': ResNet-18 and FlowNetS widths (64, 16)
HEIGHT, WIDTH = 288, 384  # trained at, and the demo's default (the sample clip is 4:3)

_OBJECT_COLOURS = [[220, 120, 40], [40, 160, 220], [150, 60, 200], [230, 200, 40]]  # RGB, synthetic objects


def class_names() -> list[str]:
    from vss_edge.synthetic import SyntheticConfig, class_names as synthetic_names

    return synthetic_names(SyntheticConfig(num_classes=SYNTHETIC_CLASSES)) + ["person"]


def palette() -> list[list[int]]:
    """RGB: background grey (the overlay tints it evenly), objects in distinct colours, person red."""
    return [[128, 128, 128]] + [list(c) for c in _OBJECT_COLOURS] + [[230, 20, 40]]


def gsvnet_config(height: int = HEIGHT, width: int = WIDTH, **overrides):
    """The GSVNetConfig the demo weights fit (any resolution that is a multiple of 32)."""
    from vss_edge.configs import GSVNetConfig

    return GSVNetConfig(height=height, width=width, num_classes=NUM_CLASSES, keyframe_width=KEYFRAME_WIDTH,
                        class_names=class_names(), palette=palette(), **overrides)


def stmg_config(height: int = HEIGHT, width: int = WIDTH, **overrides):
    """The STMGConfig the STMG demo weights fit (DDRNet-23-slim at stem width 8)."""
    from vss_edge.configs import STMGConfig

    return STMGConfig(height=height, width=width, num_classes=NUM_CLASSES, backbone="ddrnet23_slim",
                      ddrnet_planes=DDRNET_PLANES, encoder_channels=STMG_ENCODER_CHANNELS,
                      class_names=class_names(), palette=palette(), **overrides)


def tdnet_config(height: int = HEIGHT, width: int = WIDTH, **overrides):
    """The TDNetConfig the TDNet demo weights fit (TD4-PSP18 at base width 8)."""
    from vss_edge.configs import TDNetConfig

    return TDNetConfig(height=height, width=width, num_classes=NUM_CLASSES, variant="td4_psp18",
                       backbone_width=TDNET_WIDTH, class_names=class_names(), palette=palette(), **overrides)


def mpvss_config(height: int = HEIGHT, width: int = WIDTH, **overrides):
    """The MPVSSConfig the MPVSS demo weights fit (variant 'small', ResNet-18 and motion widths 8)."""
    from vss_edge.configs import MPVSSConfig

    return MPVSSConfig(height=height, width=width, num_classes=NUM_CLASSES, variant="small",
                       backbone_width=MPVSS_BACKBONE_WIDTH, motion_width=MPVSS_MOTION_WIDTH,
                       class_names=class_names(), palette=palette(), **overrides)


def export_gsvnet_demo(out, height: int = HEIGHT, width: int = WIDTH, **options) -> Path:
    """Export the trained GSVNet demo weights to a bundle at out (needs the export extra)."""
    from vss_edge.exporters.gsvnet import export_gsvnet

    return export_gsvnet(out, gsvnet_config(height, width), checkpoint=str(GSVNET_PROPAGATION),
                         keyframe_checkpoint=str(GSVNET_KEYFRAME), **options)


def available(method: str = "gsvnet") -> bool:
    """Whether the committed weights of `method` ('gsvnet', 'stmg', 'tdnet' or 'mpvss') are there."""
    files = {"gsvnet": (GSVNET_KEYFRAME, GSVNET_PROPAGATION), "stmg": (STMG_CHECKPOINT,),
             "tdnet": (TDNET_CHECKPOINT,), "mpvss": (MPVSS_CHECKPOINT,)}[method]
    return all(f.is_file() for f in files)


def exported_in(manifest) -> bool:
    """True if a bundle manifest records exactly these weight files (by sha256)."""
    from vss_edge.runtime.manifest import sha256_file

    ck = manifest.provenance.get("checkpoints", {})
    return (ck.get("keyframe", {}).get("sha256") == sha256_file(GSVNET_KEYFRAME)
            and ck.get("gsvnet", {}).get("sha256") == sha256_file(GSVNET_PROPAGATION))
