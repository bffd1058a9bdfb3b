"""Class names and colour palettes (torch-free)."""
from __future__ import annotations

CITYSCAPES = [
    ("road", (128, 64, 128)), ("sidewalk", (244, 35, 232)), ("building", (70, 70, 70)),
    ("wall", (102, 102, 156)), ("fence", (190, 153, 153)), ("pole", (153, 153, 153)),
    ("traffic light", (250, 170, 30)), ("traffic sign", (220, 220, 0)),
    ("vegetation", (107, 142, 35)), ("terrain", (152, 251, 152)), ("sky", (70, 130, 180)),
    ("person", (220, 20, 60)), ("rider", (255, 0, 0)), ("car", (0, 0, 142)),
    ("truck", (0, 0, 70)), ("bus", (0, 60, 100)), ("train", (0, 80, 100)),
    ("motorcycle", (0, 0, 230)), ("bicycle", (119, 11, 32)),
]


def class_names_and_palette(num_classes: int) -> tuple[list[str], list[list[int]]]:
    """Cityscapes names and RGB colours for 19 classes; generic ones otherwise.

    Returns (names, palette) with len == num_classes; palette entries are [r, g, b]
    in 0..255, deterministic for a given num_classes.
    """
    if num_classes == len(CITYSCAPES):
        return [n for n, _ in CITYSCAPES], [list(c) for _, c in CITYSCAPES]
    names = [f"class_{i}" for i in range(num_classes)]
    palette = []
    for i in range(num_classes):  # bit-interleaved colours, as the PASCAL VOC palette
        r = g = b = 0
        c = i + 1
        for shift in range(7, -1, -1):
            r |= ((c >> 0) & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette.append([r, g, b])
    return names, palette
