"""What INT8 buys and costs on this CPU, for all four methods (GSVNet, STMG, TDNet, MPVSS).

    python benchmarks/calibration_speed.py [--methods gsvnet,stmg,tdnet,mpvss --threads 2 --rounds 3
                                            --bundle-dir DIR --quiet-wait 0 --quick
                                            --out benchmarks/results/calibration_cpu.md]

Two parts per method, in one process (a JSON with the same figures is written beside --out):

* Speed, seeded random weights (seed 0) at the default size of each method's own speed
  benchmark (GSVNet 512x1024, STMG DDRNet-39 512x1024, TDNet TD4-PSP18 512x1024, MPVSS R50
  480x853, 124 classes). The FP32 bundle (exported, or reused from --bundle-dir) is calibrated
  INT8 (minmax, frames 0:30 of the sample clip) with keep_slower=True, so every graph that can
  be INT8 is, and is timed. Per graph: mean ms of FP32 and INT8 in the runtime's own sessions
  (runtime.load, CPU EP, --threads, the INT8 graph at the level calibration chose), alternated
  in blocks over --rounds rounds on the same recorded inputs (the FP32 pipeline's, frames 0:30);
  the float tail (ONNX Runtime profile of the INT8 session with the runtime's options: share of
  kernel time not in int8 kernels, top 3 float op types); what calibration measured (median ms
  per level and of FP32) and so whether a default calibration (keep_slower False) keeps it
  INT8. Then both pipelines frame by frame on frames 30:60 (compare_pipelines): frame ms, FPS.
* Accuracy, the committed trained weights (vss_edge/demo_weights.py) at the demo size 288x384,
  on vtest.avi (../shared/data; the 60-frame sample clip is too short): INT8 with the default
  calibration (frames 0:60, slower graphs stay FP32) and with every graph INT8, each against
  FP32 on the held-out frames 60:120: mIoU and pixel agreement of the labels, key-frame
  decision flips, and per path for TDNet. Seeded random weights would make these meaningless.

--quick: small sizes (GSVNet, TDNet 128x256, STMG DDRNet-23-slim 128x256, MPVSS small 120x213)
and few frames, to check the script end to end; its figures mean little.
"""
from __future__ import annotations

import argparse
import json
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

from benchmarks._common import (CpuMonitor, cpu_load, ensure_bundle, ensure_trained_bundle, fmt, log,  # noqa: E402
                                measure, publish, report_header)

METHODS = ("gsvnet", "stmg", "tdnet", "mpvss")
SEED = 0
ACCURACY_VIDEO = ROOT.parent / "shared" / "data" / "vtest.avi"
# Int8 kernels besides QLinear*: everything else in an INT8 graph's profile is its float tail.
INT8_KERNELS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QGemm", "NhwcMaxPool",
                "MatMulInteger", "ConvInteger", "MatMulIntegerToFloat"}
# Control flow: a profile's If / Loop / Scan time is the time of its branch's nodes, profiled on their own
# too, so counting it would count those nodes twice (STMG's gates).
CONTROL_FLOW = {"If", "Loop", "Scan"}


def speed_setup(method: str, quick: bool):
    """(config, description, bundle folder name, export(path, cfg, seed=)) of the speed part."""
    from vss_edge import configs

    h, w = (128, 256) if quick else (512, 1024)
    if method == "gsvnet":
        from vss_edge.exporters.gsvnet import export_gsvnet
        cfg = configs.GSVNetConfig(height=h, width=w)
        return cfg, "SwiftNet-R18", f"gsvnet_{h}x{w}_label1_{cfg.label_path}", export_gsvnet
    if method == "stmg":
        from vss_edge.exporters.stmg import export_stmg
        cfg = configs.STMGConfig(height=h, width=w, backbone="ddrnet23_slim" if quick else "ddrnet39")
        return cfg, cfg.backbone, f"stmg_{cfg.backbone}_{h}x{w}_label1_{cfg.label_path}", export_stmg
    if method == "tdnet":
        from vss_edge.exporters.tdnet import export_tdnet
        cfg = configs.TDNetConfig(height=h, width=w, variant="td4_psp18", label_scale=1.0)
        return cfg, "TD4-PSP18", f"tdnet_td4_psp18_{h}x{w}_label1_{cfg.label_path}", export_tdnet
    from vss_edge.exporters.mpvss import export_mpvss
    cfg = (configs.MPVSSConfig(height=120, width=213, variant="small", num_classes=19) if quick else
           configs.MPVSSConfig(height=480, width=853, variant="r50", num_classes=124, interval=5))
    return (cfg, f"{cfg.variant}, {cfg.num_classes} classes",
            f"mpvss_{cfg.variant}_{cfg.propagation}_{cfg.height}x{cfg.width}_c{cfg.num_classes}_label1_{cfg.label_path}",
            lambda path, c, seed: export_mpvss(path, c, seed=seed, verify_frames=1, simplify=False))


def trained_setup(method: str):
    """(config at the demo size, the committed weight files, export(path, cfg)) of the accuracy part."""
    from vss_edge import demo_weights as dw

    cfg = getattr(dw, f"{method}_config")()
    if method == "gsvnet":
        return cfg, (dw.GSVNET_KEYFRAME, dw.GSVNET_PROPAGATION), lambda p, c: dw.export_gsvnet_demo(p, c.height, c.width)
    from vss_edge.exporters import mpvss, stmg, tdnet
    checkpoint = {"stmg": dw.STMG_CHECKPOINT, "tdnet": dw.TDNET_CHECKPOINT, "mpvss": dw.MPVSS_CHECKPOINT}[method]
    export = {"stmg": stmg.export_stmg, "tdnet": tdnet.export_tdnet, "mpvss": mpvss.export_mpvss}[method]
    return cfg, (checkpoint,), lambda p, c: export(p, c, checkpoint=str(checkpoint))


def short(e: Exception, limit: int = 160) -> str:
    text = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
    return text if len(text) <= limit else text[:limit] + "..."


def calibrate(fp32: Path, video, out: Path, **options) -> tuple[Path, dict, dict]:
    """INT8 calibrate_bundle, leaving FP32 any graph ONNX Runtime cannot quantise: (out, report, {graph: why})."""
    from vss_edge.calibration.quantize import CalibrationConfig, calibrate_bundle
    from vss_edge.runtime.errors import VssEdgeError
    from vss_edge.runtime.manifest import load_manifest

    files = {spec.file: name for name, spec in load_manifest(fp32).graphs.items()}
    failed: dict[str, str] = {}
    while True:
        try:
            out, report = calibrate_bundle(fp32, video, out, CalibrationConfig(
                precision="int8", keep_float_graphs=tuple(failed), **options))
            return out, report, failed
        except VssEdgeError as e:
            bad = [n for f, n in files.items() if f"could not quantise '{f}'" in str(e) and n not in failed]
            if not bad:
                raise
            failed[bad[0]] = short(e)
            log(f"  graph '{bad[0]}' cannot be quantised, calibrating again with it left FP32: {failed[bad[0]]}")


def time_graphs(pipes: dict, feeds: dict, samples: int, rounds: int, quiet_wait: float, monitor) -> dict:
    """{graph: {precision: mean ms per call}} in the pipelines' own sessions, precisions alternated in blocks."""
    out = {}
    for graph in pipes["fp32"].sessions:
        sessions = {p: pipe.sessions[graph].session for p, pipe in pipes.items()}
        inputs = feeds[graph][:samples]
        for s in sessions.values():
            s.run(None, inputs[0])  # warm-up
        times = {p: [] for p in sessions}
        for r in range(rounds):
            for p in (list(sessions) if r % 2 == 0 else list(sessions)[::-1]):
                def block(session=sessions[p]):
                    ms = []
                    for feed in inputs:
                        t0 = time.perf_counter()
                        session.run(None, feed)
                        ms.append((time.perf_counter() - t0) * 1000.0)
                    return ms
                times[p] += measure(block, quiet_wait, monitor, f"{graph} {p}")
        out[graph] = {p: float(np.mean(t)) for p, t in times.items()}
    return out


def float_tail(path: Path, level: str, inputs: list, threads: int, runs: int, tmp: Path) -> dict:
    """ONNX Runtime profile of `runs` runs (after a warm-up) of an INT8 graph opened as the runtime opens it:
    kernel ms per run, the share not in int8 kernels, and the 3 costliest float op types (ms per run)."""
    import onnxruntime as ort

    from vss_edge.runtime.session import session_options

    opts = session_options(threads, quiet=True, optimization=level)
    opts.enable_profiling = True
    opts.profile_file_prefix = str(tmp / f"profile_{path.stem}")
    session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    session.run(None, inputs[0])  # warm-up, left out below
    for i in range(runs):
        session.run(None, inputs[i % len(inputs)])
    profile = Path(session.end_profiling())
    events = json.loads(profile.read_text())
    profile.unlink()
    spans = [(e["ts"], e["ts"] + e["dur"]) for e in events
             if e.get("cat") == "Session" and e.get("name") == "model_run"][-runs:]
    by_op: dict[str, float] = {}
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time") and \
                any(a <= e["ts"] <= b for a, b in spans):
            op = e.get("args", {}).get("op_name", "?")
            if op not in CONTROL_FLOW:
                by_op[op] = by_op.get(op, 0.0) + e["dur"] / 1000.0 / runs
    floats = {op: ms for op, ms in by_op.items() if not op.startswith("QLinear") and op not in INT8_KERNELS}
    total = sum(by_op.values())
    return {"kernel_ms": total, "float_ms": sum(floats.values()),
            "share": sum(floats.values()) / total if total else None,
            "top_float_ops": sorted(floats.items(), key=lambda kv: -kv[1])[:3], "ops_ms": by_op}


def speed_part(method: str, args, root: Path, video, monitor: CpuMonitor) -> dict:
    from vss_edge import runtime
    from vss_edge.calibration.check import compare_pipelines
    from vss_edge.calibration.collect import FrameRange, collect_inputs
    from vss_edge.runtime.session import graph_optimization
    from vss_edge.runtime.sources import read_frames

    cfg, what, name, export = speed_setup(method, args.quick)
    cal, ev = args.speed_frames
    t0 = time.perf_counter()
    fp32 = ensure_bundle(root / name, cfg, method, export, SEED)
    t1 = time.perf_counter()
    log(f"{method}: calibrating every graph INT8 (keep_slower)")
    int8, report, failed = calibrate(fp32, video, root / f"{name}.int8-every-graph", calibration_frames=cal,
                                evaluation_frames=ev, keep_slower=True, threads=args.threads)
    t2 = time.perf_counter()
    feeds = collect_inputs(fp32, video, FrameRange.parse(cal), threads=args.threads)
    pipes = {p: runtime.load(b, device="cpu", threads=args.threads) for p, b in (("fp32", fp32), ("int8", int8))}
    log(f"{method}: timing graphs")
    ms = time_graphs(pipes, feeds, args.samples, args.rounds, args.quiet_wait, monitor)
    graphs = {}
    with tempfile.TemporaryDirectory(prefix="vss-calib-profile-") as tmp:
        for g, spec in pipes["int8"].manifest.graphs.items():
            row = {"fp32_ms": ms[g]["fp32"], "int8_ms": ms[g]["int8"], "precision": spec.precision}
            if spec.precision == "int8":
                measured = (spec.calibration or {}).get("session", {})
                level = graph_optimization(spec)
                fast, ref = min(measured.get("ms", {}).values(), default=None), measured.get("fp32_ms")
                row.update(optimization=level, calibration_measured=measured,
                           default_keeps_int8=None if fast is None or ref is None else bool(fast < ref),
                           float_tail=measure(lambda: float_tail(pipes["int8"].manifest.graph_path(g), level,
                                                                 feeds[g][:args.samples], args.threads,
                                                                 args.profile_runs, Path(tmp)),
                                              args.quiet_wait, CpuMonitor(), f"{g} profile"))
            graphs[g] = row
    feeds.clear()  # free the recorded inputs before the pipelines run
    log(f"{method}: pipelines on frames {ev}")
    e = FrameRange.parse(ev)
    frames = read_frames(video, e.start, e.stop)
    result = measure(lambda: compare_pipelines(pipes["fp32"], pipes["int8"], frames, first_index=e.start),
                     args.quiet_wait, monitor, f"{method} pipelines")
    speed = result["speed"]["frame"]
    graph_ms = {who: sum(row[who]["calls"] * row[who]["mean_ms"] for row in result["speed"]["graphs"].values()
                         if row[who]["mean_ms"] is not None) / max(speed[who]["count"], 1)
                for who in ("reference", "candidate")}  # the graphs' share of a frame, timed inside the pipelines
    return {"model": what, "size": f"{cfg.height}x{cfg.width}", "bundle": str(fp32), "export_s": t1 - t0,
            "calibration_s": t2 - t1, "graphs": graphs, "not_quantised": failed,
            "notes": [w for w in report["warnings"] if w.startswith("graph '")],
            "pipeline": {"frames": result["frames"], "key_frames": result["key_frames"],
                         "fp32_ms": speed["reference"]["mean_ms"], "int8_ms": speed["candidate"]["mean_ms"],
                         "fp32_graphs_ms": graph_ms["reference"], "int8_graphs_ms": graph_ms["candidate"],
                         "numeric_drift_random_weights": result["agreement"]}}


def accuracy_part(method: str, args, root: Path, video, split: tuple[str, str]) -> dict:
    from vss_edge import runtime
    from vss_edge.calibration.check import compare_pipelines
    from vss_edge.calibration.collect import FrameRange
    from vss_edge.runtime.sources import read_frames

    cfg, weights, export = trained_setup(method)
    fp32 = ensure_trained_bundle(root / f"{method}_trained_{cfg.height}x{cfg.width}", cfg, method, export, weights)
    ref = runtime.load(fp32, device="cpu", threads=args.threads)
    cal, ev = split
    e = FrameRange.parse(ev)
    frames = read_frames(video, e.start, e.stop)
    rows = {}
    for variant, keep_slower in (("default", False), ("every graph INT8", True)):
        log(f"{method}: trained weights, INT8 {variant}")
        int8, report, failed = calibrate(fp32, video, root / f"{fp32.name}.int8-{'all' if keep_slower else 'default'}",
                                         calibration_frames=cal, evaluation_frames=ev, keep_slower=keep_slower,
                                         threads=args.threads)
        result = compare_pipelines(ref, runtime.load(int8, device="cpu", threads=args.threads), frames,
                                   first_index=e.start)
        rows[variant] = {"int8_graphs": [g for g, r in report["graphs"].items() if r["precision"] == "int8"],
                         "graphs": list(report["graphs"]), "not_quantised": failed, "agreement": result["agreement"],
                         "frames": result["frames"], "key_frames": result["key_frames"],
                         "key_frame_flips": result["key_frame_mismatches"],
                         "grouping": result["grouping"]["by"], "by_group": result["by_group"]}
    return {"size": f"{cfg.height}x{cfg.width}", "weights": [Path(w).name for w in weights], "rows": rows}


def speed_tables(speed: dict, monitor: CpuMonitor) -> list[str]:
    lines = ["## Per graph, seeded random weights: FP32 vs every graph INT8 (mean ms per call, same inputs)", "",
             "Float tail: share of the INT8 graph's kernel time (ONNX Runtime profile) in ops that are not int8 "
             "kernels, top 3 float op types in ms per run. \"calibration measured\": the median ms calibration "
             "timed at each optimisation level and for FP32; the default calibration (keep_slower False) keeps "
             "the graph INT8 only if its faster level beats FP32.", "",
             "| method | graph | FP32 ms | INT8 ms | INT8 speed-up | level | float tail | top float ops (ms) | "
             "calibration measured: all / extended / FP32 ms | default keeps INT8 |",
             "|---|---|---:|---:|---:|---|---:|---|---|---|"]
    for method, s in speed.items():
        label = f"{method} {s.get('size', '')}"
        if "error" in s:
            lines.append(f"| {label} | failed: {s['error']} |" + " |" * 8)
            continue
        for g, r in s["graphs"].items():
            if r["precision"] != "int8":
                why = "not quantisable" if g in s["not_quantised"] else "stayed FP32"
                lines.append(f"| {label} | {g} | {r['fp32_ms']:.1f} | {r['int8_ms']:.1f} ({why}) |" + " - |" * 6)
                continue
            tail, cm = r["float_tail"], r["calibration_measured"]
            top = ", ".join(f"{op} {v:.1f}" for op, v in tail["top_float_ops"]) or "-"
            keeps = {True: "yes", False: "no (stays FP32)", None: "-"}[r["default_keeps_int8"]]
            lines.append(f"| {label} | {g} | {r['fp32_ms']:.1f} | {r['int8_ms']:.1f} | "
                         f"{r['fp32_ms'] / r['int8_ms']:.2f}x | {r['optimization']} | "
                         f"{fmt(100 * tail['share'] if tail['share'] is not None else None)}% | {top} | "
                         f"{fmt(cm.get('ms', {}).get('all'))} / {fmt(cm.get('ms', {}).get('extended'))} / "
                         f"{fmt(cm.get('fp32_ms'))} | {keeps} |")
    lines += [""] + [f"- {m} graph '{g}' left FP32: ONNX Runtime could not quantise it ({why})"
                     for m, s in speed.items() for g, why in s.get("not_quantised", {}).items()]
    lines += [f"- {m}: {note}" for m, s in speed.items() for note in s.get("notes", [])]
    lines += ["", "## Pipeline, seeded random weights: FP32 vs every graph INT8, frame by frame", "",
              "Graphs alone: the graphs' ms a frame inside the pipelines, FP32 / INT8, the speed-up's bound if "
              "the host's work a frame (reading the scores, labels, state) cost nothing; host: frame minus graphs.", "",
              "| method | size | frames (key) | FP32 frame ms | FP32 FPS | INT8 frame ms | INT8 FPS | INT8 speed-up | "
              "graphs alone: FP32 / INT8 ms, speed-up | host ms: FP32 / INT8 |",
              "|---|---|---:|---:|---:|---:|---:|---:|---|---|"]
    for method, s in speed.items():
        if "error" in s:
            continue
        p = s["pipeline"]
        keys = "" if method == "tdnet" else f" ({p['key_frames']})"  # TDNet has no key frames
        lines.append(f"| {method} ({s['model']}) | {s['size']} | {p['frames']}{keys} | "
                     f"{p['fp32_ms']:.1f} | {1000 / p['fp32_ms']:.2f} | {p['int8_ms']:.1f} | "
                     f"{1000 / p['int8_ms']:.2f} | {p['fp32_ms'] / p['int8_ms']:.2f}x | {graphs_alone(p)} |")
    return lines + ["", f"- other processes' CPU during these timings: {cpu_load(monitor)}", ""]


def graphs_alone(p: dict) -> str:
    """The pipeline row's graphs-alone and host cells (results from before they were measured: '-')."""
    if p.get("fp32_graphs_ms") is None:
        return "- | -"
    g32, g8 = p["fp32_graphs_ms"], p["int8_graphs_ms"]
    return f"{g32:.1f} / {g8:.1f}, {g32 / g8:.2f}x | {p['fp32_ms'] - g32:.1f} / {p['int8_ms'] - g8:.1f}"


def accuracy_table(accuracy: dict) -> list[str]:
    lines = ["## Accuracy, committed trained weights: INT8 labels vs FP32 labels on held-out frames", "",
             "| method | size | INT8 | graphs INT8 | mIoU agreement | pixel agreement | key-frame flips | "
             "per path mIoU (TDNet) |", "|---|---|---|---|---:|---:|---:|---|"]
    for method, a in accuracy.items():
        if "error" in a:
            lines.append(f"| {method} | {a.get('size', '')} | failed: {a['error']} |" + " |" * 5)
            continue
        for variant, r in a["rows"].items():
            paths = (", ".join(f"{g['group']}: {fmt(g['miou'], '.4f')}" for g in r["by_group"])
                     if r["grouping"] == "path_index" else "")
            flips = f"{r['key_frame_flips']} of {r['frames']}" if r["grouping"] != "path_index" else "-"
            lines.append(f"| {method} | {a['size']} | {variant} | {', '.join(r['int8_graphs']) or 'none'} "
                         f"(of {len(r['graphs'])}) | {fmt(r['agreement']['miou'], '.4f')} | "
                         f"{fmt(r['agreement']['pixel_agreement'], '.4f')} | {flips} | {paths} |")
    notes = {(m, g): why for m, a in accuracy.items() for r in a.get("rows", {}).values()
             for g, why in r["not_quantised"].items()}
    return lines + [""] + [f"- {m} graph '{g}' left FP32: ONNX Runtime could not quantise it ({why})"
                           for (m, g), why in notes.items()] + [""]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated, of " + ", ".join(METHODS))
    p.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads")
    p.add_argument("--rounds", type=int, default=3, help="alternating FP32 / INT8 timing rounds per graph")
    p.add_argument("--samples", type=int, default=6, help="recorded inputs per graph in each timing block")
    p.add_argument("--profile-runs", type=int, default=3, help="profiled runs of each INT8 graph")
    p.add_argument("--bundle-dir", default=os.path.join(tempfile.gettempdir(), "vss_edge_bench"),
                   help="where FP32 bundles are exported / reused (INT8 ones are remade each run)")
    p.add_argument("--accuracy-video", default=str(ACCURACY_VIDEO),
                   help="video of >= 120 frames for the accuracy part (absent: the sample clip, 0:30 / 30:60)")
    p.add_argument("--no-speed", action="store_true", help="only the accuracy part")
    p.add_argument("--no-accuracy", action="store_true", help="only the speed part")
    p.add_argument("--quick", action="store_true", help="small sizes and few frames: a check of the script")
    p.add_argument("--quiet-wait", type=float, default=0.0, metavar="S")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "calibration_cpu.md"))
    args = p.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not methods or set(methods) - set(METHODS) or min(args.threads, args.rounds, args.samples, args.profile_runs) < 1:
        p.error(f"--methods must name some of {', '.join(METHODS)}; --threads, --rounds, --samples, "
                f"--profile-runs >= 1")
    start = time.perf_counter()
    from vss_edge.runtime.outputs import write_text_atomic
    from vss_edge.runtime.sources import sample_clip_path

    args.speed_frames = ("0:10", "10:20") if args.quick else ("0:30", "30:60")
    video = sample_clip_path()
    acc_video = Path(args.accuracy_video)
    long_video = acc_video.is_file()  # else the 60-frame sample clip
    split = {(False, False): ("0:30", "30:60"), (False, True): ("0:15", "30:45"),
             (True, False): ("0:60", "60:120"), (True, True): ("0:15", "60:75")}[long_video, args.quick]
    acc_video = acc_video if long_video else video
    root = Path(args.bundle_dir)
    root.mkdir(parents=True, exist_ok=True)
    monitor = CpuMonitor()
    speed, accuracy = {}, {}
    for part, results in (("speed", speed), ("accuracy", accuracy)):
        for method in methods if not getattr(args, f"no_{part}") else ():
            try:
                results[method] = (speed_part(method, args, root, video, monitor) if part == "speed" else
                                   accuracy_part(method, args, root, acc_video, split))
            except Exception as e:  # noqa: BLE001 - one method failing must not lose the others' figures
                log(f"{method}: {part} part failed: {type(e).__name__}: {e}")
                cfg, model = speed_setup(method, args.quick)[:2] if part == "speed" else (trained_setup(method)[0], "")
                results[method] = {"error": short(e), "model": model, "size": f"{cfg.height}x{cfg.width}"}

    total = time.perf_counter() - start
    details = []
    if speed:
        sizes = ", ".join(f"{m} ({s['model']}) {s['size']}" for m, s in speed.items())
        details.append(
            f"speed: seeded random weights (seed {SEED}) at {sizes}"
            f"{' (--quick: figures only check the script)' * args.quick}; "
            f"INT8 minmax on frames {args.speed_frames[0]} of the sample clip, every graph kept INT8 (keep_slower); "
            f"graphs timed on {args.samples} recorded inputs x {args.rounds} rounds; pipelines on frames "
            f"{args.speed_frames[1]}; float tail: kernel time in ops other than QLinear*, QGemm, NhwcMaxPool (uint8), "
            "MatMul/ConvInteger and (De)QuantizeLinear, in ONNX Runtime's profile of the INT8 session (If nodes not "
            "counted: their time is their branches' nodes, counted on their own)")
    if accuracy:
        details.append(
            f"accuracy: the committed trained weights (vss_edge/data/weights) at the demo size; INT8 calibrated on "
            f"frames {split[0]} of {acc_video.name}, scored against FP32 on the held-out frames {split[1]}; key-frame "
            "flips: frames where INT8 and FP32 disagree on key vs non-key (GSVNet, MPVSS: fixed interval, so 0); STMG's "
            "block-keep decision flips are not reported (compare_pipelines does not expose them)")
    details.append(f"run time: {total / 60:.1f} min (exports {sum(s.get('export_s', 0) for s in speed.values()):.0f} s, "
                   f"calibrations of the speed part {sum(s.get('calibration_s', 0) for s in speed.values()):.0f} s); "
                   f"command: `python benchmarks/calibration_speed.py {' '.join(sys.argv[1:])}`".rstrip())
    title = "INT8 vs FP32 on the CPU: " + ", ".join(methods)
    header = report_header(title, args.threads, details, monitor)
    text = "\n".join((speed_tables(speed, monitor) if speed else []) + (accuracy_table(accuracy) if accuracy else []))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out.with_suffix(".json"), json.dumps(
        {"header": header, "speed": speed, "accuracy": accuracy, "other_cpu_share": monitor.share("other"),
         "run_s": total}, indent=1, default=str) + "\n")
    return publish(header, text, out, total)


if __name__ == "__main__":
    sys.exit(main())
