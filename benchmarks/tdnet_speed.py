"""TDNet speed on the CPU: balanced latency, vs all paths per frame, vs PSPNet-18, attention share.

Run from the repository root (the export extra, i.e. torch, must be installed):

    python benchmarks/tdnet_speed.py [--height 512 --width 1024 --threads 2 --frames 24 --warmup 4
                                      --bundle-dir DIR --out benchmarks/results/tdnet_cpu.md
                                      --profile-runs 3 --no-td2 --quiet-wait 0]

TDNet (Hu et al., CVPR 2020) runs ONE sub-network path per frame (round robin) and
recomposes the full features of the last frames with an attention propagation module;
the paper's claims are a per-frame cost close to one light image network and a latency
that is the same on every frame (no key frames). What this script measures, all in ONE
process and ONE run, so that ratios are meaningful on a noisy machine:

* Exports (or reuses, when a valid bundle of exactly that config and seed is there) into
  --bundle-dir: the TD4-PSP18 bundle (paths path0..path3) and, unless --no-td2, the
  TD2-PSP50 bundle (path0, path1), seeded random weights (seed 0); and a PSPNet-18
  baseline graph, `pspnet18_HxW_label1.onnx` (+ a .json sidecar that says what it is),
  built as the official Testing/model/pspnet/pspnet.py defines it: the same dilated
  ResNet-18 (output stride 8) as a TD4 path, pyramid pooling on all 512 channels (bins
  1/2/3/6, a 1x1 conv 512->128 each; TD4's paths keep half of that), and the head
  conv3x3 on 1024 channels (-> 128, BN, ReLU, conv1x1 -> 19); same input (uint8 BGR
  frame, normalised in the graph) and output (logits resized bilinearly to the input,
  argmax) as a TDNet path graph, exported with exporters.onnx_export.export_graph on
  real frames. Speed does not depend on the weights.
* Decodes --frames frames of the shipped sample clip (768x576, resized by the runtime)
  once, then runs, interleaved in blocks of 4 frames (one TD4 round, two TD2 rounds;
  the order of the runs rotates every block, so the machine's drift hits all alike):
    - "TD4-PSP18": the runtime's Pipeline (round robin, path i % 4 on frame i);
    - "TD4, all 4 paths": the same Pipeline and sessions, but every frame runs all four
      path graphs on the same feeds (the scheduled path's; its outputs are kept), i.e.
      what one frame would cost without distributing the sub-networks over frames;
    - "PSPNet-18": the baseline graph on every frame (resize in, graph, labels back);
    - "TD2-PSP50": its Pipeline (round robin over 2 paths), unless --no-td2.
  The first --warmup frames of every run are not counted. Everything Pipeline.step does
  is timed (resize in, graphs, labels back to the frame's size); decoding is not.
  All sessions: ONNX Runtime CPU EP, --threads intra-op threads, 1 inter-op thread, no
  spin-waiting (the runtime's settings for path graphs; the baseline uses the same).
* Profiles path0 of TD4 with ONNX Runtime's profiler (SessionOptions.enable_profiling)
  on a real frame with a full queue (history = 1; the graph is static, so history 0
  costs the same), --profile-runs runs after one warm-up run, and attributes every node
  of the optimised graph ONNX Runtime ran (saved next to the profile) to a part of the
  model by its name, which keeps the PyTorch module scope: /pretrained1 (backbone),
  /psp1 (pyramid pooling), /w_qs /w_ks /w_vs /maxpool (the Encoding module enc1: its
  methods are called directly, so the scope is its children's), /atn1_2 ... (attention),
  /layer_norm1 /head1 (head). Nodes without a module scope (the runtime's NCHWc layout
  reorders, onnxsim's Gemm/Reshape for the attention's output 1x1 conv, the adds that
  chain the attention steps and fuse v_cur + history * v_prop, flattening transposes)
  take the part of their inputs' producers (attention first, then encoding, head, ...);
  the nodes that only the `labels` output needs are "label resize + argmax".

How to read the tables (printed to stdout and written to --out, atomically):

* "Per-frame latency": mean / p50 / p99 / max of the whole per-frame step. max / mean
  is the paper's point, balanced latency: goal <= 1.15 for TD4 (every frame runs one
  path of the same size). "x TD4" is the run's mean over TD4's mean. "in ORT" is the
  share of the wall time inside ONNX Runtime session runs.
  "worst round max / mean" is the same within each block of 4 frames (one TD4 round,
  two TD2 rounds, run back to back), worst block: slow drift of the machine's load,
  which inflates the overall max / mean on a shared machine, hardly enters it, so it
  shows the imbalance between the paths themselves. "quiet blocks": how many measured
  blocks ran while other processes took < 10% of the CPU.
* "Ratios and goals": "per-path mean latency, max / min path" is the balance between the
  sub-networks with the frame-to-frame noise averaged out; the PSPNet-18 row's max / mean
  (one and the same graph on every frame) shows how much this machine alone jitters.
  TD4 mean / all-four-paths mean (goal <= 0.35: distributing the
  four sub-networks must cost about a quarter, plus the attention); TD4 / PSPNet-18 (the
  paper, Titan Xp: 85 / 91 ms = 0.93; a TD4 path IS a PSPNet-18 with half the pyramid
  channels and a lighter head, plus encoding and attention, so expect about 1);
  TD2 / TD4 (paper 178 / 85 = 2.1). GMACs = the manifest's GFLOPs / 2 (the paper's
  "FLOPs" count multiply-accumulates).
* "Per path": latency per path graph call in the round-robin run and in the all-paths
  run (same graphs, same feeds): paths of one variant differ only in which attention
  modules they use, so their means should agree within the noise.
* "Where path0's time goes": per part, the mean node time per run from the profile and
  its share of all node time (node time excludes ONNX Runtime's own overhead between
  nodes; "model_run wall" is the whole run).
* "other processes' CPU": the share of all cores' time other processes (and, "steal",
  the hypervisor) took while that run's blocks ran, from /proc/stat. A few percent or
  more means those numbers are pessimistic; on a shared machine pass --quiet-wait 30
  (each block then waits for a quiet machine and a disturbed block is measured again,
  at most twice; a repeated block advances the round robin by whole rounds).

With 2 quiet cores and the default 24 frames, a run with reused bundles takes about 6
minutes (TD4 ~1.45 s per frame at 512x1024, TD2 ~3.7 s); exporting the bundles the first
time takes about 6.5 minutes more (TD4 4.5, TD2 1.5, PSPNet-18 0.4). 769x1537 (the
official size) is an optional --height 769 --width 1537 run, about 2.4x slower.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run from a checkout without installing

import numpy as np  # noqa: E402

from benchmarks._common import (BUSY, CpuMonitor, fmt, cpu_load, clip_frames, ensure_bundle,  # noqa: E402
                                code_version, cpu_model, disturbance, log, measure, publish)

SEED = 0
BLOCK = 4  # frames per interleaved block: a whole number of rounds for 4 and 2 paths
MAX_OVER_MEAN_GOAL = 1.15
ALL_PATHS_GOAL = 0.35
NAMES = {"td4_psp18": "TD4-PSP18", "td2_psp50": "TD2-PSP50"}
# Paper Table 1 (Cityscapes, Titan Xp, PyTorch): mean ms per frame.
PAPER_MS = {"TD4-PSP18": 85, "PSPNet-18": 91, "TD2-PSP50": 178, "PSPNet-50": 238}


# --- setup ------------------------------------------------------------------------------


def ensure_tdnet(bundle_dir: Path, cfg) -> Path:
    from vss_edge.exporters.tdnet import export_tdnet

    path = bundle_dir / f"tdnet_{cfg.variant}_{cfg.height}x{cfg.width}_label{cfg.label_scale:g}"
    return ensure_bundle(path, cfg, "tdnet", export_tdnet, SEED)


def pspnet18_graph(cfg):
    """PSPNet-18 (official Testing/model/pspnet/pspnet.py, backbone resnet18) as one graph
    module: uint8 BGR image [1,H,W,3] -> (labels uint8 [1,H',W'], logits [1,K,h,w]), built
    from TDNet's pieces: ResNet-18, PyramidPooling with a single path (all channels), and
    FCNHead(1024, chn_down=8), which is PSPHead's conv3x3 1024 -> 128 + BN + ReLU + conv1x1."""
    import torch.nn as nn

    from vss_edge.models.common import Normalise, labels_from_logits
    from vss_edge.models.tdnet.modules import FCNHead, PyramidPooling
    from vss_edge.models.tdnet.resnet import resnet18

    class PSPNet18(nn.Module):
        def __init__(self):
            super().__init__()
            self.normalise = Normalise(cfg.normalisation, channel_order="RGB")
            self.pretrained = resnet18()
            self.psp = PyramidPooling(512, path_num=1, pid=0)  # 512 + 4 x 128 = 1024 channels
            self.head = FCNHead(1024, cfg.num_classes, chn_down=8)  # 1024 -> 128 (= 512 // 4)

        def forward(self, image):
            logits = self.head(self.psp(self.pretrained(self.normalise(image))))
            return labels_from_logits(logits, cfg.label_size), logits

    return PSPNet18().eval()


def ensure_pspnet18(bundle_dir: Path, cfg) -> tuple[Path, float]:
    """The PSPNet-18 baseline graph at cfg's size (exported, or reused); (path, GFLOPs)."""
    import torch

    from vss_edge.exporters.onnx_export import export_graph, real_frames, save_model
    from vss_edge.runtime.manifest import sha256_file
    from vss_edge.runtime.outputs import write_text_atomic

    path = bundle_dir / f"pspnet18_{cfg.height}x{cfg.width}_label{cfg.label_scale:g}.onnx"
    sidecar = path.with_suffix(".json")
    what = {"model": "pspnet18 (official pspnet.py, resnet18 backbone)", "height": cfg.height,
            "width": cfg.width, "num_classes": cfg.num_classes, "label_scale": cfg.label_scale,
            "random_init_seed": SEED}
    try:
        meta = json.loads(sidecar.read_text())
        if meta["config"] == what and meta["sha256"] == sha256_file(path):
            log(f"reusing baseline graph {path}")
            return path, float(meta["gflops"])
        problem = "it was made for another config or changed"
    except (OSError, ValueError, KeyError, TypeError):
        problem = "absent or incomplete"
    log(f"exporting baseline graph {path} ({problem})")
    t0 = time.perf_counter()
    torch.manual_seed(SEED)
    module = pspnet18_graph(cfg)
    frames = real_frames(cfg.height, cfg.width, None, 2)
    graph = export_graph("pspnet18", module, [(f,) for f in frames], ["image"], ["labels", "logits"])
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    save_model(graph.model, tmp)
    os.replace(tmp, path)
    write_text_atomic(sidecar, json.dumps({"config": what, "sha256": sha256_file(path), "gflops": graph.gflops,
                                           "verified_max_error": graph.verification}, indent=2) + "\n")
    log(f"  exported in {time.perf_counter() - t0:.0f} s")
    return path, graph.gflops


# --- the runs -------------------------------------------------------------------------------


class AllPaths:
    """A TDNetProgram whose frames run EVERY path graph on the feeds of the scheduled path.

    The scheduled path's outputs are returned and stored (so the state evolves as in the
    round-robin run); the other graphs' outputs are dropped. Timings per graph and the
    frame's total come out of Pipeline.step as usual.
    """

    def __init__(self, inner):
        self.inner = inner

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def step(self, image, path: int, run):
        def run_all(name, feeds, host_outputs):
            outs = {g: run(g, feeds, host_outputs) for g in self.inner.graphs}
            return outs[name]

        return self.inner.step(image, path, run_all)


class SingleGraph:
    """One ONNX graph on every frame, timed as Pipeline.step times a frame (torch-free)."""

    def __init__(self, path: Path, name: str, height: int, width: int, threads: int):
        import onnxruntime as ort

        from vss_edge.runtime.session import session_options

        opts = session_options(threads, quiet=False, spin=False)  # as the runtime opens its path graphs
        self.session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.name, self.height, self.width, self.index = name, height, width, 0

    def step(self, frame):
        from vss_edge.runtime import FrameResult
        from vss_edge.runtime.preprocess import labels_to_frame, to_graph_input
        from vss_edge.runtime.session import timed

        start = time.perf_counter()
        image = to_graph_input(frame, self.height, self.width)
        out, ms = timed(self.session.run, self.output_names, {"image": image})
        labels = labels_to_frame(out[0], frame.shape)
        result = FrameResult(self.index, labels, False, {self.name: ms}, (time.perf_counter() - start) * 1000.0)
        self.index += 1
        return result


def capture_feeds(program, image: np.ndarray, path: int) -> dict:
    """The feeds the TDNet program would give graph path{path} for this frame (state untouched)."""
    saved, captured = list(program.history), {}

    def run(name, feeds, host_outputs):
        captured.update(feeds)
        shapes = {o.name: tuple(o.shape) for o in program.manifest.graphs[name].outputs}
        scores = {"logits": np.zeros(shapes["logits"], np.float32)} if "logits" in shapes else {}
        return {"labels": np.zeros((1, 1, 1), np.uint8), **scores, **program.empty}

    program.step(image, path, run)
    program.history = saved
    return captured


# --- profile attribution ------------------------------------------------------------------

PARTS = ("backbone", "pyramid pooling", "encoding", "attention", "head", "label resize + argmax", "other")
_INHERIT_ORDER = ("attention", "encoding", "head", "pyramid pooling", "backbone", "other")


def _scoped_part(name: str) -> str | None:
    """The model part a node belongs to by its module scope (/module/...), None if unscoped."""
    parts = name.split("/")
    if not name.startswith("/") or len(parts) < 3:
        return None  # "/Add_2", "Gemm_7", "ReorderOutput_token_3": no module scope
    scope = parts[1]
    if scope.startswith("pretrained"):
        return "backbone"
    if scope.startswith("psp"):
        return "pyramid pooling"
    if scope in ("w_qs", "w_ks", "w_vs", "maxpool") or scope.startswith("enc"):
        return "encoding"
    if scope.startswith("atn"):
        return "attention"
    if scope.startswith(("head", "layer_norm")):
        return "head"
    return "other"  # normalise, anything new


def attribute_nodes(model) -> dict[str, str]:
    """Node name -> model part, for every node of an (optimised) ONNX graph."""
    nodes = list(model.graph.node)
    producer = {out: n for n in nodes for out in n.output if out}

    def ancestors(tensor: str) -> set[str]:
        seen, todo = set(), [tensor]
        while todo:
            node = producer.get(todo.pop())
            if node is not None and node.name not in seen:
                seen.add(node.name)
                todo.extend(node.input)
        return seen

    outputs = [o.name for o in model.graph.output]
    others = set().union(*(ancestors(o) for o in outputs if o != "labels"))
    label_tail = ancestors("labels") - others if "labels" in outputs else set()
    part: dict[str, str] = {}

    def resolve(node) -> str:
        if node.name in part:
            return part[node.name]
        found = "label resize + argmax" if node.name in label_tail else _scoped_part(node.name)
        if found is None:
            part[node.name] = "other"  # guards cycles; replaced below
            inherited = {resolve(producer[i]) for i in node.input if i in producer}
            found = next((p for p in _INHERIT_ORDER if p in inherited), "other")
        part[node.name] = found
        return found

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(nodes) + 1000))
    for n in nodes:
        resolve(n)
    return part


def profile_path(graph_path: Path, feeds: dict, threads: int, runs: int, tmp: Path) -> dict:
    """ORT profile of `runs` runs after one warm-up: mean ms per run per part, and totals."""
    import onnx
    import onnxruntime as ort

    from vss_edge.runtime.session import session_options

    opts = session_options(threads, quiet=True, spin=False)
    opts.enable_profiling = True
    opts.profile_file_prefix = str(tmp / "tdnet_profile")
    optimised = tmp / "optimised.onnx"
    opts.optimized_model_filepath = str(optimised)
    session = ort.InferenceSession(str(graph_path), sess_options=opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    session.run(names, feeds)  # warm-up, left out below
    for _ in range(runs):
        session.run(names, feeds)
    events = json.loads(Path(session.end_profiling()).read_text())
    part_of = attribute_nodes(onnx.load(str(optimised), load_external_data=False))

    model_runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"][-runs:]
    spans = [(e["ts"], e["ts"] + e["dur"]) for e in model_runs]
    per_part = dict.fromkeys(PARTS, 0.0)
    unknown: set[str] = set()
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time"):
            continue
        if not any(a <= e["ts"] <= b for a, b in spans):
            continue
        node = e["name"][: -len("_kernel_time")]
        if node not in part_of:
            unknown.add(node)
        per_part[part_of.get(node, "other")] += e["dur"] / 1000.0 / runs
    if unknown:
        log(f"  profile: {len(unknown)} node(s) not in the optimised graph, counted as other: {sorted(unknown)[:5]}")
    return {"parts_ms": per_part, "node_ms": sum(per_part.values()),
            "run_ms": float(np.mean([e["dur"] for e in model_runs])) / 1000.0, "runs": len(model_runs)}


# --- statistics and tables -----------------------------------------------------------------


def stats(values) -> dict:
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        return {"count": 0, "mean": None, "p50": None, "p99": None, "max": None, "max_over_mean": None}
    return {"count": int(a.size), "mean": float(a.mean()), "p50": float(np.percentile(a, 50)),
            "p99": float(np.percentile(a, 99)), "max": float(a.max()), "max_over_mean": float(a.max() / a.mean())}


def run_summary(results, blocks) -> dict:
    """Statistics of a run's measured frames; blocks: [(frame ms of one block, other processes' share)].

    "round_max_over_mean": the worst block's max / its mean. A block is one round (TD4) or
    two (TD2) of the paths run back to back, so slow drift of the machine's load, which
    inflates the overall max / mean, hardly enters it: it shows the imbalance between
    frames, the method's own.
    """
    total = [r.total_ms for r in results]
    in_ort = sum(sum(r.timings_ms.values()) for r in results)
    graphs = sorted({g for r in results for g in r.timings_ms})
    rounds = [max(ms) / float(np.mean(ms)) for ms, _ in blocks if len(ms) > 1]
    return {"frame": stats(total), "in_ort": in_ort / sum(total) if total else 0.0,
            "round_max_over_mean": max(rounds) if rounds else None,
            "quiet_blocks": (sum(share < BUSY for _, share in blocks), len(blocks)),
            "fps": len(total) / (sum(total) / 1000.0) if total else 0.0,
            "graphs": {g: stats([r.timings_ms[g] for r in results if g in r.timings_ms]) for g in graphs}}


def latency_table(rows: list[tuple[str, str, dict | None, CpuMonitor | None]], td4_mean: float) -> list[str]:
    cols = ["run", "per frame", "frames", "mean ms", "p50 ms", "p99 ms", "max ms", "max / mean",
            "worst round max / mean", "FPS", "x TD4", "in ORT", "other processes' CPU", "quiet blocks"]
    lines = ["### Per-frame latency", "", "| " + " | ".join(cols) + " |", "|---|---|" + "---:|" * (len(cols) - 2)]
    for name, what, s, monitor in rows:
        if s is None:
            lines.append(f"| {name} | {what} | skipped |" + " |" * (len(cols) - 3))
            continue
        f = s["frame"]
        lines.append(f"| {name} | {what} | {f['count']} | {f['mean']:.0f} | {f['p50']:.0f} | {f['p99']:.0f} | "
                     f"{f['max']:.0f} | {f['max_over_mean']:.3f} | {fmt(s['round_max_over_mean'], '.3f')} | "
                     f"{s['fps']:.3f} | {f['mean'] / td4_mean:.2f}x | {100 * s['in_ort']:.1f}% | {cpu_load(monitor)} | "
                     f"{s['quiet_blocks'][0]} of {s['quiet_blocks'][1]} |")
    return lines + [""]


def paths_table(label: str, rr: dict, all_paths: dict | None, manifest) -> list[str]:
    lines = [f"### Per path, {label} (mean latency per graph call)", "",
             "| path | calls | mean ms | p99 ms | max ms | max / mean | mean ms in the all-paths run | GMACs |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, spec in manifest.graphs.items():
        g = rr["graphs"].get(name, stats([]))
        other = all_paths["graphs"].get(name) if all_paths else None
        gmacs = spec.gflops / 2 if spec.gflops is not None else None
        lines.append(f"| {name} | {g['count']} | {fmt(g['mean'], '.0f')} | {fmt(g['p99'], '.0f')} | "
                     f"{fmt(g['max'], '.0f')} | {fmt(g['max_over_mean'], '.3f')} | "
                     f"{fmt(other['mean'] if other else None, '.0f')} | {fmt(gmacs, '.1f')} |")
    return lines + [""]


def profile_table(profile: dict, threads: int, monitor: CpuMonitor, path0_mean: float) -> list[str]:
    parts, node = profile["parts_ms"], profile["node_ms"]
    rows = [("backbone + PPM (dilated ResNet-18, pyramid pooling)",
             parts["backbone"] + parts["pyramid pooling"]),
            ("of which: pyramid pooling", parts["pyramid pooling"]),
            ("encoding (enc1: Q/K/V 1x1 convs, current and stored)", parts["encoding"]),
            ("attention (3 steps: q k^T, softmax, x v, 1x1 conv; + fusion with v_cur)", parts["attention"]),
            ("head (LayerNorm + FCN head)", parts["head"]),
            ("label resize + argmax", parts["label resize + argmax"]),
            ("other (input normalisation, history reshape)", parts["other"])]
    lines = [f"### Where path0's time goes (TD4, history 1, ONNX Runtime profile, {profile['runs']} runs, "
             f"{threads} threads)", "", f"Other processes' CPU meanwhile: {cpu_load(monitor)}; the round-robin run's path0 "
             f"mean was {path0_mean:.0f} ms per call (profiling itself costs a few percent).", "",
             "| part | ms per run | share of node time |", "|---|---:|---:|"]
    for name, ms in rows:
        lines.append(f"| {name} | {ms:.0f} | {100 * ms / node:.1f}% |")
    lines += [f"| all nodes | {node:.0f} | 100% |", f"| model_run wall (nodes + ORT's overhead between them) | "
              f"{profile['run_ms']:.0f} | {100 * profile['run_ms'] / node:.1f}% |", ""]
    return lines


def goals_table(s: dict, gmacs: dict) -> list[str]:
    td4, all4, psp, td2 = s["td4"], s["td4_all"], s["pspnet"], s.get("td2")
    mark = lambda ok: "met" if ok else "NOT met"  # noqa: E731
    lines = ["### Ratios and goals", "", "| measure | value | goal / paper | |", "|---|---:|---|---|"]
    r = td4["frame"]["max_over_mean"]
    lines.append(f"| TD4-PSP18 max / mean latency | {r:.3f} | <= {MAX_OVER_MEAN_GOAL} | {mark(r <= MAX_OVER_MEAN_GOAL)} |")
    r = td4["round_max_over_mean"]
    lines.append(f"| TD4-PSP18 worst round max / mean (drift-free balance) | {fmt(r, '.3f')} | "
                 f"<= {MAX_OVER_MEAN_GOAL} | {mark(r is not None and r <= MAX_OVER_MEAN_GOAL)} |")
    means = [g["mean"] for g in td4["graphs"].values() if g["mean"]]
    lines.append(f"| TD4-PSP18 per-path mean latency, max / min path | {max(means) / min(means):.3f} | - | - |")
    r = psp["frame"]["max_over_mean"]
    lines.append(f"| reference: PSPNet-18 max / mean (the same graph every frame: this machine's jitter) | "
                 f"{r:.3f} | - | - |")
    r = td4["frame"]["mean"] / all4["frame"]["mean"]
    lines.append(f"| TD4-PSP18 mean / all four paths every frame | {r:.3f} | <= {ALL_PATHS_GOAL} | "
                 f"{mark(r <= ALL_PATHS_GOAL)} |")
    r = td4["frame"]["mean"] / psp["frame"]["mean"]
    paper = PAPER_MS["TD4-PSP18"] / PAPER_MS["PSPNet-18"]
    lines.append(f"| TD4-PSP18 mean / PSPNet-18 mean | {r:.3f} | paper {paper:.2f} (85 / 91 ms) | - |")
    lines.append(f"| TD4 path GMACs / PSPNet-18 GMACs | {gmacs['td4'] / gmacs['pspnet']:.3f} | - | - |")
    if td2 is not None:
        r = td2["frame"]["max_over_mean"]
        lines.append(f"| TD2-PSP50 max / mean latency | {r:.3f} | <= {MAX_OVER_MEAN_GOAL} | "
                     f"{mark(r <= MAX_OVER_MEAN_GOAL)} |")
        r = td2["round_max_over_mean"]
        lines.append(f"| TD2-PSP50 worst round max / mean (drift-free balance) | {fmt(r, '.3f')} | "
                     f"<= {MAX_OVER_MEAN_GOAL} | {mark(r is not None and r <= MAX_OVER_MEAN_GOAL)} |")
        r = td2["frame"]["mean"] / td4["frame"]["mean"]
        paper = PAPER_MS["TD2-PSP50"] / PAPER_MS["TD4-PSP18"]
        lines.append(f"| TD2-PSP50 mean / TD4-PSP18 mean | {r:.2f} | paper {paper:.2f} (178 / 85 ms) | - |")
        lines.append(f"| TD2 path GMACs / TD4 path GMACs | {gmacs['td2'] / gmacs['td4']:.2f} | - | - |")
    else:
        lines.append("| TD2-PSP50 | skipped (--no-td2) | - | - |")
    return lines + [""]


# --- main ---------------------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--height", type=int, default=512, help="default 512 (official 769, about 2.3x slower)")
    p.add_argument("--width", type=int, default=1024, help="default 1024 (official 1537)")
    p.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads")
    p.add_argument("--frames", type=int, default=24, help="frames per run, warm-up included (clip cycled)")
    p.add_argument("--warmup", type=int, default=4, help="first frames of every run not counted")
    p.add_argument("--profile-runs", type=int, default=3, help="profiled runs of path0 (after 1 warm-up)")
    p.add_argument("--no-td2", action="store_true", help="skip TD2-PSP50 (about 3x a TD4 frame)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "tdnet_cpu.md"))
    p.add_argument("--bundle-dir", help="where bundles are exported / reused (default: a temporary folder)")
    p.add_argument("--quiet-wait", type=float, default=0.0, metavar="S",
                   help="before each measured block, wait up to S seconds for other processes to use "
                        "< 10%% of the CPU, and measure a disturbed block again (at most twice)")
    args = p.parse_args(argv)
    if args.threads < 1 or args.profile_runs < 1 or args.warmup < 0:
        p.error("--threads and --profile-runs must be >= 1, --warmup >= 0")
    if args.frames < args.warmup + BLOCK:
        p.error(f"--frames must be at least --warmup + {BLOCK} (every path measured)")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    code = code_version()  # before anything is imported: the code that is measured
    import cv2
    import onnxruntime
    import torch

    from vss_edge import runtime
    from vss_edge.runtime import Pipeline, build_scheduler
    from vss_edge.runtime.programs import program_for
    from vss_edge.runtime.preprocess import to_graph_input
    from vss_edge.runtime.session import open_sessions
    from vss_edge.configs import TDNetConfig

    torch.set_num_threads(args.threads)  # the exports' verification only
    variants = ("td4_psp18",) if args.no_td2 else ("td4_psp18", "td2_psp50")
    cfgs = {v: TDNetConfig(height=args.height, width=args.width, variant=v, label_scale=1.0) for v in variants}

    with tempfile.TemporaryDirectory(prefix="tdnet_speed_") as tmp:
        bundle_dir = Path(args.bundle_dir) if args.bundle_dir else Path(tmp)
        bundle_dir.mkdir(parents=True, exist_ok=True)
        bundles = {v: ensure_tdnet(bundle_dir, cfg) for v, cfg in cfgs.items()}
        psp_path, psp_gflops = ensure_pspnet18(bundle_dir, cfgs["td4_psp18"])
        export_s = time.perf_counter() - start

        frames = clip_frames(args.frames)
        manifests = {v: runtime.load_manifest(b) for v, b in bundles.items()}
        sessions = {v: open_sessions(m, device="cpu", threads=args.threads) for v, m in manifests.items()}

        def pipeline(v, wrap=lambda program: program):
            m = manifests[v]
            return Pipeline(m, sessions[v], build_scheduler(m.scheduler), program=wrap(program_for(m.method)(m)))

        runs = {"td4": pipeline("td4_psp18"), "td4_all": pipeline("td4_psp18", AllPaths),
                "pspnet": SingleGraph(psp_path, "pspnet18", args.height, args.width, args.threads)}
        if "td2_psp50" in variants:
            runs["td2"] = pipeline("td2_psp50")
        results = {name: [] for name in runs}
        monitors = {name: CpuMonitor() for name in runs}
        blocks = {name: [] for name in runs}  # measured blocks: (frame ms, other processes' share)
        names = list(runs)
        for b, first in enumerate(range(0, len(frames), BLOCK)):
            block = frames[first:first + BLOCK]
            for name in names[b % len(names):] + names[:b % len(names)]:
                t0 = time.perf_counter()
                monitor = CpuMonitor()
                out = measure(lambda: [runs[name].step(f) for f in block], args.quiet_wait, monitor,
                              f"{name} frames {first}-{first + len(block) - 1}")
                monitors[name].add(monitor)
                for r in out:
                    r.labels = None
                results[name] += out
                kept = [r.total_ms for i, r in enumerate(out, start=first) if i >= args.warmup]
                if kept:
                    blocks[name].append((kept, monitor.share("other")))
                log(f"frames {first}-{first + len(block) - 1} {name}: "
                    f"{np.mean([r.total_ms for r in out]):.0f} ms per frame ({time.perf_counter() - t0:.1f} s)")

        log("profiling path0 of TD4 (history 1)")
        profile_monitor = CpuMonitor()
        feeds = capture_feeds(runs["td4"].program, to_graph_input(frames[-1], args.height, args.width), 0)
        assert float(feeds["history"][0]) == 1.0, "the queue must be full for the profile"
        profile = measure(lambda: profile_path(manifests["td4_psp18"].graph_path("path0"), feeds, args.threads,
                                               args.profile_runs, Path(tmp)),
                          args.quiet_wait, profile_monitor, "profile")

    summaries = {name: run_summary(res[args.warmup:], blocks[name]) for name, res in results.items()}
    gmacs = {"pspnet": psp_gflops / 2,
             **{k: manifests[v].graphs["path0"].gflops / 2 for k, v in (("td4", "td4_psp18"), ("td2", "td2_psp50"))
                if v in manifests}}
    everything = CpuMonitor()
    for m in [profile_monitor, *monitors.values()]:
        everything.add(m)
    total_s = time.perf_counter() - start

    td4_mean = summaries["td4"]["frame"]["mean"]
    rows = [("TD4-PSP18", "one path, round robin", summaries["td4"], monitors["td4"]),
            ("TD4-PSP18, all 4 paths", "all four path graphs, same feeds", summaries["td4_all"], monitors["td4_all"]),
            ("PSPNet-18", "full PSPNet-18 (1024-ch head)", summaries["pspnet"], monitors["pspnet"]),
            ("TD2-PSP50", "one path, round robin", summaries.get("td2"), monitors.get("td2"))]
    body = latency_table(rows, td4_mean)
    body += goals_table(summaries, gmacs)
    body += paths_table("TD4-PSP18", summaries["td4"], summaries["td4_all"], manifests["td4_psp18"])
    if "td2" in summaries:
        body += paths_table("TD2-PSP50", summaries["td2"], None, manifests["td2_psp50"])
    body += [f"PSPNet-18 graph: {summaries['pspnet']['graphs']['pspnet18']['mean']:.0f} ms mean per call, "
             f"{gmacs['pspnet']:.1f} GMACs.", ""]
    body += profile_table(profile, args.threads, profile_monitor, summaries["td4"]["graphs"]["path0"]["mean"])
    text = "\n".join(body)

    measured = args.frames - args.warmup
    header = [
        f"# TDNet CPU speed, {args.height}x{args.width}", "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}",
        f"- CPU: {cpu_model()}, {os.cpu_count()} logical cores",
        f"- threads: {args.threads} (ONNX Runtime intra-op, CPU EP, 1 inter-op, no spin-waiting; "
        f"OpenCV default: {cv2.getNumThreads()})",
        f"- onnxruntime {onnxruntime.__version__}, torch {torch.__version__} (export only), numpy {np.__version__}, "
        f"opencv {cv2.__version__}, Python {platform.python_version()}",
        f"- input: sample clip (768x576) resized by the runtime to {args.width}x{args.height}; {args.frames} "
        f"frames per run, first {args.warmup} warm-up ({measured} measured); runs interleaved in blocks of "
        f"{BLOCK} frames",
        f"- code: {code}",
        f"- weights: seeded random (seed {SEED}); speed does not depend on the weights",
        disturbance(everything),
        f"- run time: {total_s / 60:.1f} min (export / bundle check {export_s:.0f} s); "
        f"command: `python benchmarks/tdnet_speed.py {' '.join(sys.argv[1:])}`".rstrip(), "",
    ]
    return publish(header, text, args.out, total_s)


if __name__ == "__main__":
    sys.exit(main())
