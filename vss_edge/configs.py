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


@dataclass
class GSVNetConfig:
    """GSVNet: a keyframe net every `interval` frames, flow-guided propagation between.

    height, width: bundle input resolution, multiples of 32 (the flow net runs at 1/32).
    keyframe_scale: the keyframe net sees the frame resized by this factor (paper: 0.75).
    label_scale: labels are the argmax of the logits resized bilinearly to this fraction of
        the input (1.0: full resolution, as the official evaluation); the runtime resizes
        them (nearest) to the frame. Below 1 it trades boundary precision for speed.
    """

    height: int = 512
    width: int = 1024
    num_classes: int = 19
    keyframe_net: str = "swiftnet"
    keyframe_scale: float = 0.75
    interval: int = 5
    label_scale: float = 1.0
    class_names: list[str] = field(default_factory=list)
    palette: list[list[int]] = field(default_factory=list)

    def __post_init__(self):
        if self.height % 32 or self.width % 32 or self.height <= 0 or self.width <= 0:
            raise ValueError(f"height and width must be positive multiples of 32, got {self.height}x{self.width}")
        if self.keyframe_net not in NORMALISATION:
            raise ValueError(f"keyframe_net must be one of {sorted(NORMALISATION)}, got {self.keyframe_net!r}")
        if not 1 <= self.num_classes <= 255:
            raise ValueError(f"num_classes must be in 1..255 (labels are uint8), got {self.num_classes}")
        if not 0.0 < self.keyframe_scale <= 1.0:
            raise ValueError(f"keyframe_scale must be in (0, 1], got {self.keyframe_scale}")
        lh, lw = self.height * self.label_scale, self.width * self.label_scale
        if not 0.0 < self.label_scale <= 1.0 or lh != int(lh) or lw != int(lw):
            raise ValueError(f"label_scale must be in (0, 1] and give whole label sizes, got {self.label_scale}")
        if self.interval < 1:
            raise ValueError(f"interval must be >= 1, got {self.interval}")
        if not self.class_names or not self.palette:
            self.class_names, self.palette = class_names_and_palette(self.num_classes)

    @property
    def small_size(self) -> tuple[int, int]:
        """(h, w) of the propagation resolution, 1/8 of the input."""
        return self.height // 8, self.width // 8

    @property
    def keyframe_size(self) -> tuple[int, int]:
        """(h, w) the keyframe net runs at (official: H//4*3, W//4*3 for scale 0.75)."""
        return round(self.height * self.keyframe_scale), round(self.width * self.keyframe_scale)

    @property
    def label_size(self) -> tuple[int, int]:
        """(h, w) of the labels the graphs output."""
        return int(self.height * self.label_scale), int(self.width * self.label_scale)

    @property
    def normalisation(self) -> dict:
        return NORMALISATION[self.keyframe_net]

    def to_dict(self) -> dict:
        return asdict(self)


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
class TDNetConfig:
    """TDNet (Hu et al., CVPR 2020): frame i runs sub-network i % num_paths.

    height, width: the resolution the frame is resized to (official 769x1537; any
        size >= 64, no multiple required).
    variant: 'td4_psp18' (4 ResNet-18 paths, attention over the last 3 frames) or
        'td2_psp50' (2 ResNet-50 paths, attention over the last frame).
    label_scale: labels are the argmax of the logits resized bilinearly (align_corners=True)
        to this fraction of the input (1.0: the input resolution, as the official forward).
    """

    height: int = 769
    width: int = 1537
    num_classes: int = 19
    variant: str = "td4_psp18"
    label_scale: float = 1.0
    class_names: list[str] = field(default_factory=list)
    palette: list[list[int]] = field(default_factory=list)

    def __post_init__(self):
        if self.height < 64 or self.width < 64:
            raise ValueError(f"height and width must be at least 64, got {self.height}x{self.width}")
        if self.variant not in TDNET_VARIANTS:
            raise ValueError(f"variant must be one of {sorted(TDNET_VARIANTS)}, got {self.variant!r}")
        if not 1 <= self.num_classes <= 255:
            raise ValueError(f"num_classes must be in 1..255 (labels are uint8), got {self.num_classes}")
        if not 0.0 < self.label_scale <= 1.0:
            raise ValueError(f"label_scale must be in (0, 1], got {self.label_scale}")
        if not self.class_names or not self.palette:
            self.class_names, self.palette = class_names_and_palette(self.num_classes)

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
    def label_size(self) -> tuple[int, int]:
        return round(self.height * self.label_scale), round(self.width * self.label_scale)

    @property
    def normalisation(self) -> dict:
        return TDNET_NORMALISATION

    def to_dict(self) -> dict:
        return asdict(self)
