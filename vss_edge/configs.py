"""Method configurations (torch-free): what a bundle is exported for.

A config fixes everything static about the graphs: input resolution, classes, the
keyframe backbone and its pixel normalisation, and the default key-frame interval.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from vss_edge.classes import class_names_and_palette

# Pixel normalisation per keyframe backbone, as the official GSVNet trainer applies
# it: value = (pixel * scale - mean) / std with mean/std given in RGB order. The
# flow, intra and guiding nets see the same normalised values in BGR order.
NORMALISATION = {
    "swiftnet": {"scale": 1.0, "mean_rgb": [73.15, 82.90, 72.3], "std_rgb": [47.67, 48.49, 47.73]},
    "bisenet": {"scale": 1.0 / 255.0, "mean_rgb": [0.485, 0.456, 0.406], "std_rgb": [0.229, 0.224, 0.225]},
}

# Where labels are computed: in the graphs (the paper's tail) or on the host (runtime.labels).
LABEL_PATHS = ("graph", "host")


class MethodConfig:
    """What every method's config is and does; each method's config is a dataclass subclass.

    Fields every subclass declares (with its own defaults): height, width (int: the static
    input size of the graphs), num_classes (1..255: labels are uint8), label_scale (float in
    (0, 1]: labels are computed at this fraction of the input), label_path ('host', the
    built-in methods' default: the graphs end at their scores and the runtime computes the
    paper's bilinear resize + argmax labels on the host, exactly and faster: runtime.labels;
    'graph': the graphs end in that resize + argmax), class_names (list[str]) and
    palette (list of [r, g, b]); empty lists get the default names and colours of
    num_classes. A subclass defines `normalisation` (the in-graph pixel normalisation:
    {scale, mean_rgb, std_rgb}) and `check()` (its own rules; ValueError naming the field).
    """

    label_path = "graph"  # for configs that do not declare the field (a plug-in method's, say: no host tail)

    def __post_init__(self):
        self.check()
        if not 1 <= self.num_classes <= 255:
            raise ValueError(f"num_classes must be in 1..255 (labels are uint8), got {self.num_classes}")
        if self.label_path not in LABEL_PATHS:
            raise ValueError(f"label_path must be one of {', '.join(LABEL_PATHS)}, got {self.label_path!r}")
        if not self.class_names or not self.palette:
            self.class_names, self.palette = class_names_and_palette(self.num_classes)

    def check(self) -> None:
        """Raise ValueError for a value this method cannot export (called before the common checks)."""

    # Rules several methods share, for their check().
    def _require_multiples_of_32(self) -> None:
        if self.height % 32 or self.width % 32 or self.height <= 0 or self.width <= 0:
            raise ValueError(f"height and width must be positive multiples of 32, got {self.height}x{self.width}")

    def _require_whole_label_size(self) -> None:
        lh, lw = self.height * self.label_scale, self.width * self.label_scale
        if not 0.0 < self.label_scale <= 1.0 or lh != int(lh) or lw != int(lw):
            raise ValueError(f"label_scale must be in (0, 1] and give whole label sizes, got {self.label_scale}")

    def _require_interval(self) -> None:
        if self.interval < 1:
            raise ValueError(f"interval must be >= 1, got {self.interval}")

    @property
    def label_size(self) -> tuple[int, int]:
        """(h, w) of the labels the graphs compute: label_scale x the input, rounded."""
        return round(self.height * self.label_scale), round(self.width * self.label_scale)

    @property
    def normalisation(self) -> dict:
        raise NotImplementedError

    def to_dict(self) -> dict:
        """Every field, as JSON types (the manifest's "config")."""
        return asdict(self)


@dataclass
class GSVNetConfig(MethodConfig):
    """GSVNet: a keyframe net every `interval` frames, flow-guided propagation between.

    height, width: bundle input resolution, multiples of 32 (the flow net runs at 1/32).
    keyframe_scale: the keyframe net sees the frame resized by this factor (paper: 0.75).
    label_scale: labels are the argmax of the logits resized bilinearly to this fraction of
        the input (1.0: full resolution, as the official evaluation); the runtime resizes
        them (nearest) to the frame. Below 1 it trades boundary precision for speed.
    keyframe_width: SwiftNet's ResNet-18 base width (official 64; its decoder is twice as
        wide, official 128). Smaller widths are the trained demo's small configuration
        (vss_edge/data/weights: 16); BiSeNet supports only 64.
    """

    height: int = 512
    width: int = 1024
    num_classes: int = 19
    keyframe_net: str = "swiftnet"
    keyframe_width: int = 64
    keyframe_scale: float = 0.75
    interval: int = 5
    label_scale: float = 1.0
    label_path: str = "host"
    class_names: list[str] = field(default_factory=list)
    palette: list[list[int]] = field(default_factory=list)

    def check(self) -> None:
        self._require_multiples_of_32()
        if self.keyframe_net not in NORMALISATION:
            raise ValueError(f"keyframe_net must be one of {sorted(NORMALISATION)}, got {self.keyframe_net!r}")
        if isinstance(self.keyframe_width, bool) or not isinstance(self.keyframe_width, int) or self.keyframe_width < 4:
            raise ValueError(f"keyframe_width must be an int >= 4, got {self.keyframe_width!r}")
        if self.keyframe_net != "swiftnet" and self.keyframe_width != 64:
            raise ValueError(f"keyframe_width {self.keyframe_width} needs keyframe_net 'swiftnet' (BiSeNet is 64 only)")
        if not 0.0 < self.keyframe_scale <= 1.0:
            raise ValueError(f"keyframe_scale must be in (0, 1], got {self.keyframe_scale}")
        self._require_whole_label_size()
        self._require_interval()

    @property
    def small_size(self) -> tuple[int, int]:
        """(h, w) of the propagation resolution, 1/8 of the input."""
        return self.height // 8, self.width // 8

    @property
    def keyframe_size(self) -> tuple[int, int]:
        """(h, w) the keyframe net runs at (official: H//4*3, W//4*3 for scale 0.75)."""
        return round(self.height * self.keyframe_scale), round(self.width * self.keyframe_scale)

    @property
    def normalisation(self) -> dict:
        return NORMALISATION[self.keyframe_net]



# TDNet's input pipeline (official Testing/dataloader.py): the frame is read as RGB,
# resized with cv2.resize (INTER_LINEAR) to 1537x769, divided by 255 and normalised
# with the ImageNet mean/std in RGB order.
TDNET_NORMALISATION = {"scale": 1.0 / 255.0, "mean_rgb": [0.485, 0.456, 0.406], "std_rgb": [0.229, 0.224, 0.225]}

# variant -> (number of paths, number of stored frames in the attention queue)
TDNET_VARIANTS = {"td4_psp18": (4, 3), "td2_psp50": (2, 1)}


def _conv_stride2(n: int) -> int:
    """Output length of a stride-2 conv/pool with 'same' padding (k3 p1, k7 p3): ceil(n / 2)."""
    return (n - 1) // 2 + 1


@dataclass
class TDNetConfig(MethodConfig):
    """TDNet (Hu et al., CVPR 2020): frame i runs sub-network i % num_paths.

    height, width: the resolution the frame is resized to (official 769x1537; any
        size >= 64, no multiple required).
    variant: 'td4_psp18' (4 ResNet-18 paths, attention over the last 3 frames) or
        'td2_psp50' (2 ResNet-50 paths, attention over the last frame).
    label_scale: labels are the argmax of the logits resized bilinearly (align_corners=True)
        to this fraction of the input (1.0: the input resolution, as the official forward).
    backbone_width: every sub-network's ResNet base width (official 64); the PSP features and
        values (official 512) scale with it, queries/keys stay 64 wide. Smaller widths are the
        trained demo's small configuration (8).
    """

    height: int = 769
    width: int = 1537
    num_classes: int = 19
    variant: str = "td4_psp18"
    label_scale: float = 1.0
    label_path: str = "host"
    backbone_width: int = 64
    class_names: list[str] = field(default_factory=list)
    palette: list[list[int]] = field(default_factory=list)

    def check(self) -> None:
        if self.height < 64 or self.width < 64:
            raise ValueError(f"height and width must be at least 64, got {self.height}x{self.width}")
        if self.variant not in TDNET_VARIANTS:
            raise ValueError(f"variant must be one of {sorted(TDNET_VARIANTS)}, got {self.variant!r}")
        if not 0.0 < self.label_scale <= 1.0:
            raise ValueError(f"label_scale must be in (0, 1], got {self.label_scale}")
        if (isinstance(self.backbone_width, bool) or not isinstance(self.backbone_width, int)
                or self.backbone_width < 8 or self.backbone_width % 8):
            raise ValueError(f"backbone_width must be a positive multiple of 8, got {self.backbone_width!r}")

    @property
    def num_paths(self) -> int:
        return TDNET_VARIANTS[self.variant][0]

    @property
    def queue_length(self) -> int:
        """How many past frames' (q, k, v) the attention reads (3 for TD4, 1 for TD2)."""
        return TDNET_VARIANTS[self.variant][1]

    @property
    def feature_size(self) -> tuple[int, int]:
        """(h, w) of the output-stride-8 features: three stride-2 steps, each ceil(n / 2).

        769x1537 -> 97x193 (the official LayerNorm shape); 512x1024 -> 64x128.
        """
        h, w = self.height, self.width
        for _ in range(3):  # stem conv, stem max-pool, layer2
            h, w = _conv_stride2(h), _conv_stride2(w)
        return h, w

    @property
    def stored_size(self) -> tuple[int, int]:
        """(hs, ws) of a stored frame's keys/values: MaxPool(kernel 1, stride 4), ceil(n / 4)."""
        h, w = self.feature_size
        return (h - 1) // 4 + 1, (w - 1) // 4 + 1

    @property
    def normalisation(self) -> dict:
        return TDNET_NORMALISATION



# DDRNet's input pipeline (HRNet-Semantic-Segmentation code base, which trained the official
# DDRNet models): BGR file -> RGB, / 255, ImageNet mean/std.
DDRNET_NORMALISATION = TDNET_NORMALISATION

# backbone -> number of prunable residual blocks (every block but the first of each layer)
STMG_BACKBONES = {"ddrnet23_slim": 6, "ddrnet39": 17}


@dataclass
class STMGConfig(MethodConfig):
    """STMG (Rhee et al., NeurIPS 2022) on DDRNet: key frames run the full backbone; other
    frames run it with blocks dropped per frame and blend features with the previous frame's.

    height, width: input resolution, multiples of 32 (DDRNet's Cityscapes size: 1024x2048).
    backbone: 'ddrnet23_slim' (6 prunable blocks) or 'ddrnet39' (17).
    encoder_channels: width of the mask generator's frame encoder Enc_f (our choice; the
        paper gives none: it has to be light next to the backbone).
    keep_threshold: a prunable block runs iff its keep probability exceeds this (the paper
        says "deterministic at inference" and gives no value; 0.5 is the Bernoulli mode).
    distortion_bias: add Eq. 12's eta = 0.5 - mean(m_sp) before the pruning normalisation.
    interval: key-frame interval when the fixed-interval scheduler is chosen; the bundle's
        default scheduler is the distortion-aware one (gamma_key, gamma_nonkey).
    label_scale: labels are the argmax of the logits resized bilinearly (align_corners=False,
        as DDRNet's evaluation) to this fraction of the input.
    ddrnet_planes: DDRNet's stem width; None = the backbone's official one (32 for 23-slim, 64
        for 39). Smaller widths are the trained demo's small configuration (8).
    """

    height: int = 1024
    width: int = 2048
    num_classes: int = 19
    backbone: str = "ddrnet23_slim"
    ddrnet_planes: int | None = None
    encoder_channels: int = 64
    keep_threshold: float = 0.5
    distortion_bias: bool = False
    interval: int = 5
    gamma_key: float = 2.0
    gamma_nonkey: float = 0.95
    label_scale: float = 1.0
    label_path: str = "host"
    class_names: list[str] = field(default_factory=list)
    palette: list[list[int]] = field(default_factory=list)

    def check(self) -> None:
        self._require_multiples_of_32()
        if self.backbone not in STMG_BACKBONES:
            raise ValueError(f"backbone must be one of {sorted(STMG_BACKBONES)}, got {self.backbone!r}")
        if self.encoder_channels < 1:
            raise ValueError(f"encoder_channels must be >= 1, got {self.encoder_channels}")
        if self.ddrnet_planes is not None and (isinstance(self.ddrnet_planes, bool)
                                               or not isinstance(self.ddrnet_planes, int) or self.ddrnet_planes < 2):
            raise ValueError(f"ddrnet_planes must be None or an int >= 2, got {self.ddrnet_planes!r}")
        if not 0.0 < self.keep_threshold < 1.0:
            raise ValueError(f"keep_threshold must be in (0, 1), got {self.keep_threshold}")
        self._require_interval()
        if self.gamma_key <= 0 or self.gamma_nonkey <= 0:
            raise ValueError(f"gamma_key and gamma_nonkey must be > 0, got {self.gamma_key}, {self.gamma_nonkey}")
        self._require_whole_label_size()

    @property
    def num_blocks(self) -> int:
        """Number of prunable residual blocks (the keep vector's length)."""
        return STMG_BACKBONES[self.backbone]

    @property
    def feature_size(self) -> tuple[int, int]:
        """(h, w) of DDRNet's output features and logits: H/8 x W/8."""
        return self.height // 8, self.width // 8

    @property
    def normalisation(self) -> dict:
        return DDRNET_NORMALISATION



# MPVSS / Mask2Former's input pipeline (official configs/vspw/*.yaml): RGB, 0..255,
# PIXEL_MEAN / PIXEL_STD in RGB order. The flow module sees x / 255 - FLOW_IMG_NORM_MEAN
# (config.py: MOTION.FLOW_IMG_NORM_STD = 255, FLOW_IMG_NORM_MEAN), also on the RGB image.
MASK2FORMER_NORMALISATION = {"scale": 1.0, "mean_rgb": [123.675, 116.28, 103.53], "std_rgb": [58.395, 57.12, 57.375]}
MPVSS_FLOW_NORMALISATION = {"scale": 1.0 / 255.0, "mean_rgb": [0.411, 0.432, 0.450], "std_rgb": [1.0, 1.0, 1.0]}

# Architecture per variant. "r50" is the official MPVSS-VSPW-R50 configuration
# (Mask2Former R50: 6 MSDeformAttn encoder layers, FFN 1024; 9 masked-attention decoder
# layers, FFN 2048, 100 queries, hidden 256, 8 heads; motion decoder: 9 layers cycling the
# 3 motion levels, FFN 2048; FlowNetS encoder widths (64, 128, 256, 512, 512, 1024)).
# "small" is ours, for tests: the same modules, narrower and shallower.
MPVSS_VARIANTS = {
    "r50": dict(depth=50, hidden_dim=256, nheads=8, num_queries=100, enc_layers=6, enc_ffn=1024,
                dec_layers=9, dec_ffn=2048, motion_layers=9, motion_ffn=2048,
                motion_planes=(64, 128, 256, 512, 512, 1024), deconv_planes=(64, 128, 128, 128)),
    "small": dict(depth=18, hidden_dim=64, nheads=4, num_queries=16, enc_layers=2, enc_ffn=128,
                  dec_layers=3, dec_ffn=128, motion_layers=3, motion_ffn=128,
                  motion_planes=(16, 32, 64, 128, 128, 256), deconv_planes=(16, 32, 32, 32)),
}
# propagation: the paper's query-based flow, or its two baselines (Table 3a): one pixel-wise
# optical flow (a FlowNetS) for every mask, or copying the key frame's result.
# The names are the runtime program's (it runs all three): one list, on the lower floor.
from vss_edge.runtime.programs.mpvss import PROPAGATIONS as MPVSS_PROPAGATIONS  # noqa: E402


@dataclass
class MPVSSConfig(MethodConfig):
    """MPVSS (Weng et al., NeurIPS 2023): Mask2Former on key frames; on the others the key
    frame's N mask logits are warped, each by its own query-based flow, and merged with the
    key frame's class probabilities.

    height, width: input resolution (paper's VSPW size 480x853: shortest edge 480, longest
        853). Any size >= 64: Mask2Former pads the normalised image (zeros, bottom/right)
        to a multiple of size_divisibility=32, statically (padded_size).
    variant: 'r50' (official) or 'small' (tests). num_classes: VSPW has 124.
    propagation: 'query_flow' (MPVSS), 'optical_flow' (baseline: one pixel-wise flow for all
        masks) or 'copy' (baseline: non-key frames reuse the key frame's labels).
    label_scale: labels are computed at this fraction of the input (1.0: full resolution, as
        the official semantic inference); the padded size times label_scale must be whole.
    backbone_width: the ResNet's base width (stem and res2; the later stages double it;
        official 64; the trained demo weights: 8).
    motion_width: the FlowNetS motion encoder's first width, the others scaled with it (0: the
        variant's, r50 64, small 16; the trained demo weights: 8).
    """

    height: int = 480
    width: int = 853
    num_classes: int = 124
    variant: str = "r50"
    propagation: str = "query_flow"
    interval: int = 5
    label_scale: float = 1.0
    label_path: str = "host"
    size_divisibility: int = 32
    backbone_width: int = 64
    motion_width: int = 0
    class_names: list[str] = field(default_factory=list)
    palette: list[list[int]] = field(default_factory=list)

    def check(self) -> None:
        if self.backbone_width < 1 or self.motion_width < 0:
            raise ValueError(f"backbone_width must be >= 1 and motion_width >= 0, got {self.backbone_width}, "
                             f"{self.motion_width}")
        if self.height < 64 or self.width < 64:
            raise ValueError(f"height and width must be at least 64, got {self.height}x{self.width}")
        if self.variant not in MPVSS_VARIANTS:
            raise ValueError(f"variant must be one of {sorted(MPVSS_VARIANTS)}, got {self.variant!r}")
        if self.propagation not in MPVSS_PROPAGATIONS:
            raise ValueError(f"propagation must be one of {list(MPVSS_PROPAGATIONS)}, got {self.propagation!r}")
        self._require_interval()
        if self.size_divisibility != 32:
            raise ValueError(f"size_divisibility must be 32 (Mask2Former's and the motion encoder's), "
                             f"got {self.size_divisibility}")
        ph, pw = self.padded_size
        if not 0.0 < self.label_scale <= 1.0 or ph * self.label_scale != int(ph * self.label_scale) \
                or pw * self.label_scale != int(pw * self.label_scale):
            raise ValueError(f"label_scale must be in (0, 1] and give whole sizes of the padded "
                             f"{ph}x{pw} image, got {self.label_scale}")

    @property
    def arch(self) -> dict:
        """The variant's architecture, with backbone_width and motion_width applied."""
        arch = dict(MPVSS_VARIANTS[self.variant], backbone_width=self.backbone_width)
        if self.motion_width:
            base = arch["motion_planes"][0]
            arch["motion_planes"] = tuple(p * self.motion_width // base for p in arch["motion_planes"])
        return arch

    @property
    def num_queries(self) -> int:
        return self.arch["num_queries"]

    @property
    def padded_size(self) -> tuple[int, int]:
        """(Hp, Wp): the input padded up to multiples of 32 (detectron2 ImageList.from_tensors)."""
        d = self.size_divisibility
        return -(-self.height // d) * d, -(-self.width // d) * d

    @property
    def mask_size(self) -> tuple[int, int]:
        """(h, w) of the mask logits: 1/4 of the padded input."""
        ph, pw = self.padded_size
        return ph // 4, pw // 4

    @property
    def flow_image_size(self) -> tuple[int, int]:
        """(h, w) the motion encoder sees: the padded image at half resolution."""
        ph, pw = self.padded_size
        return ph // 2, pw // 2

    @property
    def flow_size(self) -> tuple[int, int]:
        """(h, w) of the flow maps: the motion encoder's conv2 level, 1/8 of the padded input."""
        ph, pw = self.padded_size
        return ph // 8, pw // 8

    @property
    def label_padded_size(self) -> tuple[int, int]:
        """(h, w) the masks are resized to before the crop to label_size."""
        ph, pw = self.padded_size
        return int(ph * self.label_scale), int(pw * self.label_scale)

    @property
    def normalisation(self) -> dict:
        return MASK2FORMER_NORMALISATION

