"""TDNet's ablation (paper Sec. 5.2, Fig. 6): attention propagation (APM) vs plain addition vs each
path alone, on the small configuration's trained weights. Needs the `train` extra (torch).

    python -m vss_edge.training tdnet --out out/tdnet_add --aggregation add   # the Add variant
    python scripts/sample_pseudo_labels.py --out out/labels
    python scripts/tdnet_ablation.py --add out/tdnet_add/tdnet_small.pth --labels out/labels \
        [--apm vss_edge/data/weights/tdnet_small.pth] [--out benchmarks/results/tdnet_ablation.md]

Scored in PyTorch as `vss-edge eval` scores a TDNet bundle (round robin from each clip's start, the
first 3 frames not scored, mIoU per path; `vss_edge.training.tdnet.path_scores`): the Add variant
has no exported graph (its 'attention' is the identity map, Fig. 6a). Synthetic: held-out seeds
1000-1003, 30 frames; real: the sample clip's 60 frames against person pseudo-labels.
`--gaps 2,3,4` adds Fig. 6b: the same clips read every g-th frame (synthetic: 30 frames out of 30 g;
real: the sample clip's 60 / g), APM vs Add as the motion between frames grows.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from vss_edge import demo_weights
from vss_edge.evaluation import LabelledSequence, synthetic_sequences, video_sequence
from vss_edge.models.tdnet.model import TDNet
from vss_edge.runtime.outputs import write_text_atomic
from vss_edge.runtime.sources import sample_clip_path
from vss_edge.training.tdnet import path_scores


def load(path) -> TDNet:
    model = TDNet(demo_weights.tdnet_config())
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()


def _cell(score: dict) -> str:
    return f"{100 * score['mean']:.1f} / {100 * score['min']:.1f}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--apm", default=str(demo_weights.TDNET_CHECKPOINT), help="TDNet trained with attention propagation")
    p.add_argument("--add", required=True, help="TDNet trained with --aggregation add")
    p.add_argument("--labels", required=True, help="the sample clip's pseudo-labels (scripts/sample_pseudo_labels.py)")
    p.add_argument("--gaps", default="", help="frame gaps for Fig. 6b, e.g. 2,3,4 (1 is the main table)")
    p.add_argument("--out", help="write the table (Markdown) and its JSON beside it")
    args = p.parse_args()
    torch.set_num_threads(1)
    gaps = [int(g) for g in args.gaps.split(",") if g.strip()]
    real = video_sequence(sample_clip_path(), args.labels, demo_weights.NUM_CLASSES)

    def every(seq, g):
        return LabelledSequence(seq.name, seq.frames[::g], seq.labels[::g])

    def data_at(g):
        synthetic = synthetic_sequences(demo_weights.HEIGHT, demo_weights.WIDTH, demo_weights.SYNTHETIC_CLASSES,
                                        seeds=range(1000, 1004), frames=30 * g)
        return {"synthetic": [every(s, g) for s in synthetic], "real": [every(real, g)]}

    data = data_at(1)
    t0 = time.perf_counter()
    scores, by_gap = {}, {}
    models = {"apm": load(args.apm), "add": load(args.add)}
    for variant, model in models.items():
        scores[variant] = {kind: path_scores(model, seqs, variant) for kind, seqs in data.items()}
    for g in gaps:
        at_g = data_at(g)
        by_gap[g] = {v: {kind: path_scores(m, seqs, v) for kind, seqs in at_g.items()} for v, m in models.items()}
    rows = [
        ("round robin, attention propagation (APM) over the 3 stored frames", scores["apm"], "method"),
        ("round robin, plain addition (Add, Fig. 6a), trained the same way", scores["add"], "method"),
        ("each path alone (APM-trained weights)", scores["apm"], "single_path"),
        ("each path alone (Add-trained weights)", scores["add"], "single_path"),
    ]
    lines = ["| TDNet TD4-PSP18, base width 8 | synthetic mean / min over paths | real mean / min over paths |",
             "|---|---:|---:|"]
    lines += [f"| {name} | {_cell(s['synthetic'][who])} | {_cell(s['real'][who])} |" for name, s, who in rows]
    gain = {kind: 100 * (scores["apm"][kind]["method"]["mean"] - scores["apm"][kind]["single_path"]["mean"])
            for kind in data}
    if gaps:
        lines += ["", "Fig. 6b: every g-th frame (round robin mean over paths; each path alone in brackets)", "",
                  "| frame gap | APM synthetic | Add synthetic | APM real | Add real |", "|---:|---:|---:|---:|---:|"]
        for g, s in [(1, scores)] + list(by_gap.items()):
            cells = [f"{100 * s[v][kind]['method']['mean']:.1f} ({100 * s[v][kind]['single_path']['mean']:.1f})"
                     for kind in ("synthetic", "real") for v in ("apm", "add")]
            lines.append(f"| {g} | {cells[0]} | {cells[1]} | {cells[2]} | {cells[3]} |")
    lines += ["", f"APM round robin minus its paths alone: synthetic {gain['synthetic']:+.1f}, real {gain['real']:+.1f} "
              f"mIoU points (checkpoints: APM {args.apm}, Add {args.add}; scored in {time.perf_counter() - t0:.0f} s)"]
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if args.out:
        out = Path(args.out)
        write_text_atomic(out, f"# TDNet ablation: attention propagation vs addition vs single paths\n\n{text}")
        write_text_atomic(out.with_suffix(".json"), json.dumps({**scores, "by_gap": by_gap}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
