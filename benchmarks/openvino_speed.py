"""ONNX Runtime vs OpenVINO on this CPU, FP32, bf16 and INT8, with the agreement each costs, for all four methods.

    python benchmarks/openvino_speed.py [--methods gsvnet,stmg,tdnet,mpvss --threads 2 --rounds 3
                                         --bundle-dir DIR --no-accuracy --no-nncf --quiet-wait 0 --quick
                                         --out benchmarks/results/openvino_cpu.md]

Per method, in one process, the same bundle on each way to run it:

| name | what runs |
|---|---|
| ort fp32 | the FP32 bundle on ONNX Runtime's CPU EP (the reference) |
| ort int8 | the INT8 bundle (vss-edge calibrate, every graph it quantises kept INT8) on ONNX Runtime |
| ov f32 | the FP32 bundle on OpenVINO, precision f32 |
| ov bf16 | the FP32 bundle on OpenVINO, precision bf16 |
| ov int8 | the INT8 bundle (the same QDQ graphs) on OpenVINO, precision f32 for its float ops |
| ov int8+bf16 | the INT8 bundle on OpenVINO, precision bf16 for its float ops |
| nncf int8 | NNCF's post-training quantisation of the FP32 graphs on the same recorded calibration inputs, on OpenVINO (only where nncf is installed: pip install nncf; the same graphs as calibration quantises: flow nets and STMG's mask generator stay FP32) |
| auto | load(FP32 bundle, backend="auto", precision="bf16"): per graph the fastest within 0.99 mIoU |
| auto int8 | the same on the INT8 bundle |
| auto (trained) | speed part: what auto chose on the trained weights (the accuracy part's bundle), graph by graph, run on the seeded full-size bundle |
| auto int8 (trained) | the same for the INT8 bundles |

`auto` measures its floor on the weights it is given: on seeded weights bf16 rarely keeps 0.99 (MPVSS's
agree 0.49), so its speed on the seeded bundles is not what a user with trained weights gets. Each
method's accuracy part therefore runs first; its `auto` choices (trained weights, 288x384) are timed on
the full-size bundles as `auto (trained)`, and the accuracy part times every way at 288x384 as well: there
auto and the fixed choices run the same trained bundle, the like-for-like comparison. The summary sets
auto beside the best fixed choice keeping >= 0.99 agreement on the trained weights, at both sizes.

* Speed, seeded random weights (seed 0) at the sizes of calibration_speed.py (GSVNet 512x1024,
  STMG DDRNet-39 512x1024, TDNet TD4-PSP18 512x1024, MPVSS R50 480x853). Per graph: mean ms on the
  FP32 pipeline's recorded inputs (frames 30:60 of the sample clip), the ways alternated in blocks
  over --rounds rounds; the worst output's SQNR against ort fp32 on the same inputs beside it. Per
  pipeline at a fixed key-frame interval of 5 (TDNet: round robin) on frames 30:60: mean frame ms,
  the speed-up over ort fp32, and the labels' mIoU agreement with ort fp32 (seeded weights: a
  strict test, they put many pixels near class boundaries).
* Accuracy, the committed trained weights (vss_edge/data/weights) at 288x384: the labels' mIoU
  agreement of each way with ort fp32 on the held-out frames 30:60 (INT8 calibrated on 0:30).

The header names the CPU's bf16 and INT8 instruction sets (AVX-512 BF16, AMX, VNNI): bf16 is fast
only with them. --quick: small sizes and few frames, to check the script end to end.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run from a checkout without installing

import numpy as np  # noqa: E402

from benchmarks._common import (CpuMonitor, ensure_bundle, ensure_trained_bundle, fmt, log, measure,  # noqa: E402
                                publish, report_header)
from benchmarks.calibration_speed import calibrate, short, speed_setup, trained_setup  # noqa: E402

METHODS = ("gsvnet", "stmg", "tdnet", "mpvss")
WAYS = ("ort fp32", "ort int8", "ov f32", "ov bf16", "ov int8", "ov int8+bf16", "nncf int8", "auto", "auto int8")
FIXED_WAYS = WAYS[1:7]  # one backend and precision for every graph
TRAINED_CHOICE_WAYS = {  # auto's per-graph choice on the trained weights, run by the seeded bundles' ways
    "auto (trained)": ("auto", {("onnxruntime", "f32"): "ort fp32", ("openvino", "f32"): "ov f32",
                                ("openvino", "bf16"): "ov bf16"}),
    "auto int8 (trained)": ("auto int8", {("onnxruntime", "f32"): "ort int8", ("openvino", "f32"): "ov int8",
                                          ("openvino", "bf16"): "ov int8+bf16"}),
}
PIPELINE_WAYS = WAYS + tuple(TRAINED_CHOICE_WAYS)
FLOOR = 0.99  # the agreement goal, and auto's floor here
SEED = 0
INTERVAL = 5


def nncf_available() -> bool:
    try:
        import nncf  # noqa: F401
    except ImportError:
        return False
    return True


def nncf_sessions(fp32: Path, int8_manifest, feeds: dict, threads: int, tmp: Path, notes: list) -> dict:
    """{graph: OpenVINOSession} of the FP32 bundle with NNCF's INT8 (preset MIXED, the recorded feeds
    as its calibration set) for the graphs the INT8 bundle has INT8, the others FP32 on OpenVINO (and
    those NNCF cannot quantise, said in `notes`)."""
    import nncf
    import openvino as ov

    from vss_edge.runtime.manifest import load_manifest
    from vss_edge.runtime.openvino_session import OpenVINOSession, core

    manifest = load_manifest(fp32)
    sessions = {}
    for name, spec in manifest.graphs.items():
        path = manifest.graph_path(name)
        if int8_manifest.graphs[name].precision == "int8":
            try:  # MIXED: asymmetric activations, symmetric weights, as ONNX Runtime's uint8 / int8 QDQ
                model = nncf.quantize(core().read_model(str(path)), nncf.Dataset(feeds[name]),
                                      preset=nncf.QuantizationPreset.MIXED, subset_size=len(feeds[name]))
            except Exception as e:  # noqa: BLE001 - e.g. an If branch the calibration frames never took
                notes.append(f"graph '{name}' left FP32: NNCF could not quantise it ({short(e)})")
                log(f"  nncf int8: {notes[-1]}")
            else:
                path = tmp / f"{fp32.name}_{name}_nncf.xml"
                ov.save_model(model, str(path))
        sessions[name] = OpenVINOSession(path, spec, "f32", threads)
    return sessions


def open_ways(fp32: Path, int8: Path, threads: int, cal_feeds: dict, tmp: Path, use_nncf: bool) -> tuple[dict, dict]:
    """({way: Pipeline}, {way: why it is missing}) at a fixed interval of 5 (TDNet: its round robin)."""
    from vss_edge import runtime
    from vss_edge.runtime.pipeline import Pipeline

    def load(bundle, **options):
        manifest = runtime.load_manifest(bundle)
        interval = None if manifest.scheduler.get("name") == "round_robin" else INTERVAL
        return runtime.load(bundle, device="cpu", threads=threads, interval=interval, **options)

    pipes, missing = {}, {}
    plan = {"ort fp32": (fp32, {}), "ort int8": (int8, {}),
            "ov f32": (fp32, dict(backend="openvino", precision="f32")),
            "ov bf16": (fp32, dict(backend="openvino", precision="bf16")),
            "ov int8": (int8, dict(backend="openvino", precision="f32")),
            "ov int8+bf16": (int8, dict(backend="openvino", precision="bf16")),
            "auto": (fp32, dict(backend="auto", precision="bf16")),
            "auto int8": (int8, dict(backend="auto", precision="bf16"))}
    for way, (bundle, options) in plan.items():
        try:
            pipes[way] = load(bundle, **options)
        except Exception as e:  # noqa: BLE001 - a way that cannot run is reported, the others measured
            missing[way] = short(e)
            log(f"  {way}: {missing[way]}")
    if use_nncf and nncf_available():
        try:
            from vss_edge.runtime.schedulers import choose_scheduler

            manifest = pipes["ort fp32"].manifest
            interval = None if manifest.scheduler.get("name") == "round_robin" else INTERVAL
            notes = []
            pipes["nncf int8"] = Pipeline(manifest, nncf_sessions(fp32, runtime.load_manifest(int8), cal_feeds,
                                                                  threads, tmp, notes),
                                          choose_scheduler(manifest.scheduler, None, interval))
            if notes:
                missing["nncf int8 (partly)"] = "; ".join(notes)
        except Exception as e:  # noqa: BLE001
            missing["nncf int8"] = short(e)
            log(f"  nncf int8: {missing['nncf int8']}")
    elif use_nncf:
        missing["nncf int8"] = "nncf is not installed (pip install nncf)"
    else:
        missing["nncf int8"] = "--no-nncf"
    return pipes, missing


def auto_choices(pipes: dict) -> dict:
    """{auto way: {graph: (backend, precision)}} of the auto pipelines in `pipes`."""
    return {w: {g: (c["backend"], c["precision"]) for g, c in pipes[w].backends()["graphs"].items()}
            for w in ("auto", "auto int8") if w in pipes}


def trained_choice_pipelines(pipes: dict, choices: dict, missing: dict) -> dict:
    """{"auto (trained)": Pipeline, ...}: each graph on the session of the way that runs its trained
    choice (sessions shared with those ways: pipelines are timed one after another)."""
    from vss_edge.runtime.pipeline import Pipeline
    from vss_edge.runtime.schedulers import choose_scheduler

    out = {}
    for way, (auto_way, by_choice) in TRAINED_CHOICE_WAYS.items():
        choice = choices.get(auto_way)
        ref = pipes.get(by_choice[("onnxruntime", "f32")])
        if choice is None or ref is None or set(choice) != set(ref.sessions):
            missing[way] = ("no trained choice" if choice is None else "the bundle to run it is missing"
                            if ref is None else f"graphs differ: {sorted(choice)} vs {sorted(ref.sessions)}")
            continue
        if any(by_choice[c] not in pipes for c in choice.values()):
            missing[way] = "a way it needs could not be opened"
            continue
        manifest = ref.manifest
        interval = None if manifest.scheduler.get("name") == "round_robin" else INTERVAL
        out[way] = Pipeline(manifest, {g: pipes[by_choice[c]].sessions[g] for g, c in choice.items()},
                            choose_scheduler(manifest.scheduler, None, interval))
    return out


def worst_sqnr(ref_session, session, feeds: list) -> float:
    """The lowest, over the graph's float outputs, pooled SQNR (dB) of `session` against `ref_session`."""
    worst = math.inf
    energy: dict[str, list[float]] = {}
    for feed in feeds:
        ref, out = ref_session.run_on_host(feed), session.run_on_host(feed)
        for name, r in ref.items():
            if r.dtype.kind != "f":
                continue
            r64, e = r.astype(np.float64), r.astype(np.float64) - np.asarray(out[name], np.float64)
            acc = energy.setdefault(name, [0.0, 0.0])
            acc[0] += float(np.sum(r64 * r64))
            acc[1] += float(np.sum(e * e))
    for signal, noise in energy.values():
        worst = min(worst, math.inf if noise == 0 else 10 * math.log10(signal / noise) if signal else -math.inf)
    return worst


def time_graphs(pipes: dict, feeds: dict, rounds: int, quiet_wait: float, monitor) -> dict:
    """{graph: {way: {"ms", "sqnr_db"}}}: mean ms per call on the recorded feeds, ways alternated in blocks."""
    out = {}
    ref = pipes["ort fp32"]
    for graph in ref.sessions:
        inputs = feeds[graph]
        if not inputs:
            continue
        sessions = {w: p.sessions[graph] for w, p in pipes.items() if w not in TRAINED_CHOICE_WAYS}
        for s in sessions.values():
            s.run(inputs[0])  # warm-up
        times = {w: [] for w in sessions}
        order = list(sessions)
        for r in range(rounds):
            for w in order if r % 2 == 0 else order[::-1]:
                def block(session=sessions[w]):
                    ms = []
                    for feed in inputs:
                        t0 = time.perf_counter()
                        session.run(feed)
                        ms.append((time.perf_counter() - t0) * 1000.0)
                    return ms
                times[w] += measure(block, quiet_wait, monitor, f"{graph} {w}")
        out[graph] = {w: {"ms": float(np.mean(t)), "on": f"{sessions[w].backend} {sessions[w].precision}",
                          "graph_precision": sessions[w].spec.precision,
                          "sqnr_db": worst_sqnr(ref.sessions[graph], sessions[w], inputs[:3])}
                      for w, t in times.items()}
    return out


def run_pipelines(pipes: dict, frames: list, rounds: int, quiet_wait: float, monitor) -> dict:
    """{way: {"frame_ms", "speedup", "miou", "graphs_ms", "graphs_speedup"}}: mean frame ms over `rounds`
    passes (ways alternated), the speed-up over ort fp32, the labels' mIoU agreement with ort fp32 (first
    pass), and the same two for the time a frame spends in the graphs (the host's own work left out)."""
    from vss_edge.calibration.metrics import confusion, miou

    labels, times, graph_times = {}, {w: [] for w in pipes}, {w: [] for w in pipes}
    order = list(pipes)
    for pipe in pipes.values():  # warm-up: first runs allocate and, on OpenVINO, finish compiling
        pipe.reset()
        for f in frames[:3]:
            pipe.step(f)
    for r in range(rounds):
        for w in order if r % 2 == 0 else order[::-1]:
            def one_pass(pipe=pipes[w]):
                pipe.reset()
                return [pipe.step(f) for f in frames]
            results = measure(one_pass, quiet_wait, monitor, f"pipeline {w}")
            times[w] += [res.total_ms for res in results[1:]]  # the first (key) frame of each pass left out
            graph_times[w] += [sum(res.timings_ms.values()) for res in results[1:]]
            labels.setdefault(w, [res.labels for res in results])
    k = len(pipes["ort fp32"].class_names)
    ref_ms, ref_graphs_ms = float(np.mean(times["ort fp32"])), float(np.mean(graph_times["ort fp32"]))
    out = {}
    for w in pipes:
        cm = sum(confusion(a, b, k) for a, b in zip(labels["ort fp32"], labels[w]))
        ms, graphs_ms = float(np.mean(times[w])), float(np.mean(graph_times[w]))
        out[w] = {"frame_ms": ms, "speedup": ref_ms / ms, "miou": miou(cm),
                  "graphs_ms": graphs_ms, "graphs_speedup": ref_graphs_ms / graphs_ms,
                  "backends": pipes[w].backends()["backend"]}
    return out


def speed_part(method: str, args, root: Path, monitor: CpuMonitor, tmp: Path, choices: dict) -> dict:
    from vss_edge.calibration.collect import FrameRange, collect_inputs
    from vss_edge.runtime.recording import record_feeds
    from vss_edge.runtime.sources import read_frames, sample_clip_path

    cfg, what, name, export = speed_setup(method, args.quick)
    video = sample_clip_path()
    cal, ev = args.frames
    fp32 = ensure_bundle(root / name, cfg, method, export, SEED)
    int8, report, failed = calibrate(fp32, video, root / f"{name}.int8-every-graph", calibration_frames=cal,
                                     evaluation_frames=ev, keep_slower=True, threads=args.threads)
    cal_feeds = collect_inputs(fp32, video, FrameRange.parse(cal), threads=args.threads)
    pipes, missing = open_ways(fp32, int8, args.threads, cal_feeds, tmp, args.nncf)
    pipes.update(trained_choice_pipelines(pipes, choices, missing))
    frames = read_frames(video, *(FrameRange.parse(ev).start, FrameRange.parse(ev).stop))
    feeds = record_feeds(pipes["ort fp32"], frames, limit_per_graph=args.samples)
    log(f"{method}: timing graphs")
    graphs = time_graphs(pipes, feeds, args.rounds, args.quiet_wait, monitor)
    log(f"{method}: timing pipelines")
    pipelines = run_pipelines(pipes, frames, args.rounds, args.quiet_wait, monitor)
    return {"model": what, "size": f"{cfg.height}x{cfg.width}", "graphs": graphs, "pipelines": pipelines,
            "missing": missing, "not_quantised": failed}


def accuracy_part(method: str, args, root: Path, monitor: CpuMonitor, tmp: Path) -> dict:
    """Trained weights at 288x384: every way's mIoU agreement with ort fp32 on the held-out frames, its
    pipeline speed there (the like-for-like comparison of auto with the fixed choices) and what auto chose."""
    from vss_edge.calibration.collect import FrameRange, collect_inputs
    from vss_edge.runtime.sources import read_frames, sample_clip_path

    cfg, weights, export = trained_setup(method)
    video = sample_clip_path()
    cal, ev = args.frames
    fp32 = ensure_trained_bundle(root / f"{method}_trained_{cfg.height}x{cfg.width}", cfg, method, export, weights)
    int8, _, _ = calibrate(fp32, video, root / f"{method}_trained_{cfg.height}x{cfg.width}.int8-every-graph",
                           calibration_frames=cal, evaluation_frames=ev, keep_slower=True, threads=args.threads)
    cal_feeds = collect_inputs(fp32, video, FrameRange.parse(cal), threads=args.threads)
    pipes, missing = open_ways(fp32, int8, args.threads, cal_feeds, tmp, args.nncf)
    frames = read_frames(video, FrameRange.parse(ev).start, FrameRange.parse(ev).stop)
    log(f"{method}: trained weights, timing pipelines at {cfg.height}x{cfg.width}")
    pipelines = run_pipelines(pipes, frames, args.rounds, args.quiet_wait, monitor)
    return {"size": f"{cfg.height}x{cfg.width}", "missing": missing, "pipelines": pipelines,
            "miou": {w: p["miou"] for w, p in pipelines.items()}, "choices": auto_choices(pipes)}


def best_fixed(pipelines: dict, agreement: dict) -> tuple[str, float] | None:
    """(way, speed-up) of the fastest fixed way whose trained-weights agreement keeps FLOOR."""
    kept = [(p["speedup"], w) for w, p in pipelines.items() if w in FIXED_WAYS and (agreement.get(w) or 0) >= FLOOR]
    return (max(kept)[1], max(kept)[0]) if kept else None


def auto_vs_fixed(pipelines: dict, agreement: dict, auto_ways) -> str:
    """One table row's cells: best fixed way and speed-up, each auto way's speed-up and its ratio to it."""
    best = best_fixed(pipelines, agreement)
    if best is None:
        return "none keeps the floor | " + " | ".join("-" for _ in auto_ways)
    cells = []
    for w in auto_ways:
        p = pipelines.get(w)
        cells.append("-" if p is None else f"{p['speedup']:.2f}x = **{p['speedup'] / best[1]:.2f}** of it")
    return f"{best[0]} {best[1]:.2f}x | " + " | ".join(cells)


def tables(speed: dict, accuracy: dict) -> list[str]:
    lines = []
    if speed and accuracy:
        lines += [f"## auto beside the best fixed choice (the fastest one way keeping >= {FLOOR} mIoU agreement on "
                  "the trained weights)", "",
                  "| method | size, weights | best fixed choice | auto | auto int8 |", "|---|---|---|---:|---:|"]
        for m in accuracy:
            a, s = accuracy[m], speed.get(m, {})
            if "pipelines" in a:
                lines.append(f"| {m} | {a['size']}, trained (auto chose here) | "
                             + auto_vs_fixed(a["pipelines"], a["miou"], ("auto", "auto int8")) + " |")
            if "pipelines" in s and "miou" in a:
                lines.append(f"| {m} | {s['size']}, seeded (auto's trained choice) | "
                             + auto_vs_fixed(s["pipelines"], a["miou"], tuple(TRAINED_CHOICE_WAYS)) + " |")
        lines.append("")
    if speed:
        lines += ["## Pipelines (interval 5; TDNet round robin): mean frame ms, speed-up over ort fp32, mIoU "
                  "agreement with ort fp32 (seeded weights)", "",
                  "| method | size | " + " | ".join(PIPELINE_WAYS) + " |", "|---|---|" + "---:|" * len(PIPELINE_WAYS)]
        for m, s in speed.items():
            if "error" in s:
                lines.append(f"| {m} | {s.get('size', '')} | failed: {s['error']} |" + " |" * (len(PIPELINE_WAYS) - 1))
                continue
            cells = []
            for w in PIPELINE_WAYS:
                p = s["pipelines"].get(w)
                cells.append("-" if p is None else f"{p['frame_ms']:.1f} ms, **{p['speedup']:.2f}x**, "
                                                   f"{fmt(p['miou'], '.4f')}")
            lines.append(f"| {m} | {s['size']} | " + " | ".join(cells) + " |")
        lines += ["", "The graphs alone inside those pipelines (the time a frame spends in the graphs; the host's work "
                  "a frame, the same on every way, left out): mean ms, speed-up over ort fp32", "",
                  "| method | " + " | ".join(PIPELINE_WAYS) + " |", "|---|" + "---:|" * len(PIPELINE_WAYS)]
        for m, s in speed.items():
            if "pipelines" in s:
                lines.append(f"| {m} | " + " | ".join(
                    "-" if s["pipelines"].get(w, {}).get("graphs_ms") is None else
                    f"{s['pipelines'][w]['graphs_ms']:.1f}, {s['pipelines'][w]['graphs_speedup']:.2f}x"
                    for w in PIPELINE_WAYS) + " |")
        lines += ["", "## Per graph: mean ms per call (worst output SQNR dB vs ort fp32)", "",
                  "| method | graph | " + " | ".join(WAYS[:-2]) + " |", "|---|---|" + "---:|" * (len(WAYS) - 2)]
        for m, s in speed.items():
            for g, row in s.get("graphs", {}).items():
                cells = []
                for w in WAYS[:-2]:
                    c = row.get(w)
                    cells.append("-" if c is None else f"{c['ms']:.1f} ({fmt(c['sqnr_db'], '.1f')})"
                                 + (" fp32" if w in ("ort int8", "ov int8", "ov int8+bf16") and
                                    c["graph_precision"] != "int8" else ""))
                lines.append(f"| {m} | {g} | " + " | ".join(cells) + " |")
        lines += ["", "What auto chose on these seeded bundles (FP32 / INT8), and what ran its trained choice:", ""]
        for m, s in speed.items():
            for w in ("auto", "auto int8", *TRAINED_CHOICE_WAYS):
                p = s.get("pipelines", {}).get(w)
                if p:
                    lines.append(f"- {m} {w}: {p['backends']}")
        for m, s in speed.items():
            for w, why in s.get("missing", {}).items():
                lines.append(f"- {m} {w}: {why}" if "partly" in w else f"- {m} {w}: not run ({why})")
        lines.append("")
    if accuracy:
        lines += ["## mIoU agreement with ort fp32, trained weights, held-out frames", "",
                  "| method | size | " + " | ".join(WAYS[1:]) + " |", "|---|---|" + "---:|" * (len(WAYS) - 1)]
        for m, a in accuracy.items():
            if "error" in a:
                lines.append(f"| {m} | {a.get('size', '')} | failed: {a['error']} |" + " |" * (len(WAYS) - 2))
                continue
            lines.append(f"| {m} | {a['size']} | " + " | ".join(fmt(a["miou"].get(w), ".4f") for w in WAYS[1:]) + " |")
        lines += ["", "## The same, pipeline speed at that size (trained weights): mean frame ms, speed-up over ort fp32",
                  "", "| method | size | " + " | ".join(WAYS[1:]) + " |", "|---|---|" + "---:|" * (len(WAYS) - 1)]
        for m, a in accuracy.items():
            if "pipelines" in a:
                lines.append(f"| {m} | {a['size']} | " + " | ".join(
                    "-" if a["pipelines"].get(w) is None else
                    f"{a['pipelines'][w]['frame_ms']:.1f} ms, {a['pipelines'][w]['speedup']:.2f}x" for w in WAYS[1:]) + " |")
        lines += ["", "What auto chose on the trained weights:", ""]
        for m, a in accuracy.items():
            for w in ("auto", "auto int8"):
                p = a.get("pipelines", {}).get(w)
                if p:
                    lines.append(f"- {m} {w}: {p['backends']}")
        lines.append("")
        for m, a in accuracy.items():
            for w, why in a.get("missing", {}).items():
                lines.append(f"- {m} {w}: {why}" if "partly" in w else f"- {m} {w}: not run ({why})")
        lines.append("")
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated, of " + ", ".join(METHODS))
    p.add_argument("--threads", type=int, default=2, help="intra-op / inference threads of both backends")
    p.add_argument("--rounds", type=int, default=3, help="alternating timing rounds")
    p.add_argument("--samples", type=int, default=6, help="recorded inputs per graph in each timing block")
    p.add_argument("--bundle-dir", default=os.path.join(tempfile.gettempdir(), "vss_edge_bench"),
                   help="where bundles are exported / reused (INT8 ones are calibrated again each run)")
    p.add_argument("--no-speed", action="store_true", help="only the accuracy part")
    p.add_argument("--no-accuracy", action="store_true", help="only the speed part")
    p.add_argument("--no-nncf", dest="nncf", action="store_false", help="leave NNCF's INT8 out")
    p.add_argument("--quick", action="store_true", help="small sizes and few frames: a check of the script")
    p.add_argument("--quiet-wait", type=float, default=0.0, metavar="S")
    p.add_argument("--out", default=None, help="report path (default benchmarks/results/openvino_cpu.md; --quick: "
                                               "a temporary file)")
    args = p.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not methods or set(methods) - set(METHODS) or min(args.threads, args.rounds, args.samples) < 1:
        p.error(f"--methods must name some of {', '.join(METHODS)}; --threads, --rounds, --samples >= 1")
    from benchmarks._common import report_path
    from vss_edge.runtime.openvino_session import import_openvino, openvino_version
    from vss_edge.runtime.outputs import write_text_atomic

    import_openvino()  # one line and exit if it is not installed
    start = time.perf_counter()
    args.frames = ("0:10", "10:20") if args.quick else ("0:30", "30:60")
    root = Path(args.bundle_dir)
    root.mkdir(parents=True, exist_ok=True)
    monitor = CpuMonitor()
    speed, accuracy = {}, {}
    with tempfile.TemporaryDirectory(prefix="vss-openvino-") as tmp:
        for method in methods:  # accuracy first: the speed part times auto's choice on the trained weights
            for part, results in (("accuracy", accuracy), ("speed", speed)):
                if getattr(args, f"no_{part}"):
                    continue
                try:
                    results[method] = (accuracy_part(method, args, root, monitor, Path(tmp)) if part == "accuracy"
                                       else speed_part(method, args, root, monitor, Path(tmp),
                                                       accuracy.get(method, {}).get("choices", {})))
                except Exception as e:  # noqa: BLE001 - one method failing must not lose the others' figures
                    log(f"{method}: {part} part failed: {type(e).__name__}: {e}")
                    results[method] = {"error": short(e)}
    import onnxruntime as ort

    total = time.perf_counter() - start
    nncf_version = None
    if nncf_available():
        import nncf
        nncf_version = nncf.__version__
    details = [f"OpenVINO {openvino_version()} (CPU plugin), ONNX Runtime {ort.__version__}, NNCF "
               f"{nncf_version or 'not installed'}; both backends at {args.threads} threads",
               f"speed: seeded random weights (seed {SEED}) at the sizes of calibration_speed.py"
               f"{' (--quick: small sizes, figures only check the script)' * args.quick}; INT8: vss-edge calibrate "
               f"(minmax, frames {args.frames[0]} of the sample clip, every graph it quantises kept INT8); timed on "
               f"frames {args.frames[1]}, {args.samples} recorded inputs per graph x {args.rounds} rounds",
               f"accuracy: trained weights at 288x384, INT8 calibrated on frames {args.frames[0]}, agreement on "
               f"{args.frames[1]}",
               f"run time: {total / 60:.1f} min; command: `python benchmarks/openvino_speed.py "
               f"{' '.join(sys.argv[1:] if argv is None else argv)}`".rstrip()]
    header = report_header("ONNX Runtime vs OpenVINO (f32, bf16, INT8) on the CPU: " + ", ".join(methods),
                           args.threads, details, monitor)
    out = report_path(args.out, args.quick, "openvino")
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out.with_suffix(".json"), json.dumps({"header": header, "speed": speed, "accuracy": accuracy,
                                                            "run_s": total}, indent=1, default=str) + "\n")
    return publish(header, "\n".join(tables(speed, accuracy)), out, total)


if __name__ == "__main__":
    sys.exit(main())
