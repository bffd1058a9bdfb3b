"""python -m vss_edge.training METHOD --out DIR [...]: train a method's small configuration on CPU."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vss_edge.training import METHODS


def _range(text: str) -> tuple[int, int] | None:
    if text.lower() == "none":
        return None
    a, b = text.split(":")
    return int(a), int(b)


def main(argv=None) -> int:
    from vss_edge.training import gsvnet

    p = argparse.ArgumentParser(prog="python -m vss_edge.training", description=__doc__.splitlines()[0])
    p.add_argument("method", choices=METHODS)
    p.add_argument("--out", required=True, help="folder for the checkpoints and the training report (JSON)")
    p.add_argument("--video", default=str(gsvnet.DEFAULT_VIDEO),
                   help="static-camera video for person pseudo-labels (default: ../shared/data/vtest.avi); "
                        "'none': synthetic only")
    p.add_argument("--exclude", default="100:160", help="video frames A:B never trained on (default: the sample "
                   "clip's 100:160); 'none' for no exclusion")
    d = gsvnet.Settings()
    for name in ("height", "width", "keyframe_steps", "flow_steps", "propagation_steps", "batch", "threads",
                 "seed", "synthetic_videos"):
        p.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(d, name))
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("-q", "--quiet", action="store_true")
    args = p.parse_args(argv)
    video = None if args.video.lower() == "none" else Path(args.video)
    if video is not None and not video.is_file():
        print(f"{p.prog}: error: --video {video}: no such file (pass --video none for synthetic only)", file=sys.stderr)
        return 2
    s = gsvnet.Settings(**{k: getattr(args, k) for k in ("height", "width", "keyframe_steps", "flow_steps",
                                                          "propagation_steps", "batch", "threads", "seed",
                                                          "synthetic_videos", "lr")})
    report = gsvnet.train(args.out, s, video=video, exclude=_range(args.exclude), quiet=args.quiet)
    sizes = ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in report["checkpoints"].items())
    print(f"trained gsvnet in {report['total_seconds']:.0f} s -> {args.out} ({sizes})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
