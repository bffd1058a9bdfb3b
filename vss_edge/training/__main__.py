"""python -m vss_edge.training METHOD --out DIR [...]: train a method's small configuration on CPU."""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys
from pathlib import Path

from vss_edge.training import DEFAULT_VIDEO, METHODS


def _range(text: str) -> tuple[int, int] | None:
    if text.lower() == "none":
        return None
    a, b = text.split(":")
    return int(a), int(b)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    method = argv[0] if argv and argv[0] in METHODS else None
    p = argparse.ArgumentParser(prog="python -m vss_edge.training", description=__doc__.splitlines()[0])
    p.add_argument("method", choices=METHODS)
    p.add_argument("--out", required=True, help="folder for the checkpoints and the training report (JSON)")
    p.add_argument("--video", default=str(DEFAULT_VIDEO),
                   help="static-camera video for person pseudo-labels (default: ../shared/data/vtest.avi); "
                        "'none': synthetic only")
    p.add_argument("--exclude", default="100:160", help="video frames A:B never trained on (default: the sample "
                   "clip's 100:160); 'none' for no exclusion")
    p.add_argument("-q", "--quiet", action="store_true")
    module = importlib.import_module(f"vss_edge.training.{method}") if method else None
    if module is not None:  # the method's own settings, each a --flag
        for f in dataclasses.fields(module.Settings):
            p.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=f.default)
    args = p.parse_args(argv)
    video = None if args.video.lower() == "none" else Path(args.video)
    if video is not None and not video.is_file():
        print(f"{p.prog}: error: --video {video}: no such file (pass --video none for synthetic only)", file=sys.stderr)
        return 2
    try:
        s = module.Settings(**{f.name: getattr(args, f.name) for f in dataclasses.fields(module.Settings)})
    except ValueError as e:  # a setting out of its range (Settings.__post_init__)
        print(f"{p.prog}: error: {e}", file=sys.stderr)
        return 2
    report = module.train(args.out, s, video=video, exclude=_range(args.exclude), quiet=args.quiet)
    sizes = ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in report["checkpoints"].items())
    print(f"trained {args.method} in {report['total_seconds']:.0f} s -> {args.out} ({sizes})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
