"""Person pseudo-labels for the sample clip (frames 100..159 of vtest.avi), for `vss-edge eval --video`.

    python scripts/sample_pseudo_labels.py --out out/sample_labels [--video ../shared/data/vtest.avi]
    vss-edge eval BUNDLE --video vss_edge/data/sample.mp4 --labels out/sample_labels

The empty scene is the per-pixel median of vtest.avi's frames OUTSIDE 100..159 (the frames
training used); each sample frame's moving blobs are `person` (class id 5, the demo weights'),
their border band and specks are 255 (ignore), the rest background (0). Written at the
sample clip's full size as 000000.png .. 000059.png. These are background-subtraction
labels, not human annotation: good for "is the person where it moved", not for boundaries.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from vss_edge import demo_weights
from vss_edge.training.data import pseudo_labels
from vss_edge.runtime.sources import open_source, sample_clip_path
from vss_edge.runtime.outputs import write_image_atomic

FIRST, STOP = 100, 160  # the sample clip's frames in vtest.avi


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--video", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "vtest.avi"))
    args = p.parse_args()
    cap = cv2.VideoCapture(args.video)
    kept, i = [], 0
    while True:
        ok, f = cap.read()
        if not ok:
            break
        if not FIRST <= i < STOP and i % 3 == 0:
            kept.append(f)
        i += 1
    if not kept:
        raise SystemExit(f"cannot read {args.video}")
    background = np.median(np.stack(kept), axis=0).astype(np.uint8)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with open_source(sample_clip_path()) as source:
        for t, frame in enumerate(source):
            # thresholds and morphology are in pixels of the training size: label there, then upsample
            h, w = demo_weights.HEIGHT, demo_weights.WIDTH
            small = cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA)
            bg = cv2.resize(background, (w, h), interpolation=cv2.INTER_AREA)
            lab = pseudo_labels(small, bg, demo_weights.PERSON)
            write_image_atomic(out / f"{t:06d}.png",
                               cv2.resize(lab, (frame.shape[1], frame.shape[0]), interpolation=cv2.INTER_NEAREST))
    print(f"wrote {t + 1} label maps to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
