"""`vss-edge` command line: export | run | profile | calibrate | check | eval | demo | fleet.

User errors (VssEdgeError: bad bundle, bad video, bad checkpoint, an output that cannot be
written...) print one line and exit 2; Ctrl-C exits 130 and SIGTERM 143 (run keeps the frames
done); bugs keep their traceback. Each verb prints a human summary and writes JSON (the
bundle's manifest, DIR/summary.json, --json F).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path

# FFmpeg logs straight to stderr (e.g. "moov atom not found"); our errors say it better.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
# OpenCV's own warnings ("Failed to write frame", once a frame on a full disk): errors only.
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")

from vss_edge.calibration.quantize import DECISION_ROLES, MOTION_ROLES, CalibrationConfig, CalibrationMethod, Precision  # noqa: E402
from vss_edge.configs import LABEL_PATHS  # noqa: E402
from vss_edge.methods import METHODS, method_spec  # noqa: E402
from vss_edge.methods.options import non_negative_int, positive_int  # noqa: E402
from vss_edge.runtime.errors import OUTPUT_ERRNOS, SourceError, VssEdgeError  # noqa: E402
from vss_edge.runtime.multistream import POLICIES  # noqa: E402
from vss_edge.runtime.schedulers import SCHEDULERS  # noqa: E402
from vss_edge.runtime.providers import DEVICES  # noqa: E402
from vss_edge.runtime.session import BACKENDS, PRECISIONS, THREAD_POOLS  # noqa: E402
from vss_edge.stop_signals import StopSignals, signal_number  # noqa: E402


EXPORT_ONLY = ("torch", "onnx", "onnxsim")  # the `export` extra: exporting and calibrating need them

_positive_int, _non_negative_int = positive_int, non_negative_int


def _add_backend_options(p: argparse.ArgumentParser, prefix: str = "", who: str = "") -> None:
    """--backend, --precision (and --agreement-floor unless prefixed: check's --candidate-backend ...)."""
    p.add_argument(f"--{prefix}backend", choices=BACKENDS, default="onnxruntime",
                   help=f"{who}onnxruntime (default), openvino (OpenVINO on the CPU: pip install 'vss-edge[openvino]') "
                        "or auto (per graph the fastest of them that keeps --agreement-floor; measured once, cached "
                        "beside the bundle)")
    p.add_argument(f"--{prefix}precision", choices=PRECISIONS,
                   help=f"{who}float compute: f32 (default: the bundle's FP32, never lowered) or bf16 (OpenVINO's "
                        "bfloat16, much faster on CPUs with AVX-512 BF16 / AMX; with auto: allowed where it keeps "
                        "the floor)")
    if not prefix:
        p.add_argument("--agreement-floor", type=float,
                       help="--backend auto: lowest mIoU agreement with ONNX Runtime's labels a choice may give "
                            "(default 0.99)")


def _add_runtime_options(p: argparse.ArgumentParser, streams: bool = True) -> None:
    """run's and profile's runtime options (streams=False, for fleet run: all but --threads and the
    several-sources ones)."""
    _add_backend_options(p)
    p.add_argument("--scheduler", choices=tuple(SCHEDULERS),
                   help="key-frame scheduler (default: the bundle's; distortion = STMG's Algorithm 1, "
                        "on GSVNet a frame difference stands in for STMG's mask)")
    p.add_argument("--interval", type=_positive_int, help="fixed key-frame interval (selects fixed_interval)")
    p.add_argument("--device", choices=DEVICES, default="auto",
                   help="execution provider: CUDA when it really loads (auto), or forced; tensorrt: ONNX Runtime's "
                        "TensorRT provider (CUDA, then the CPU, where it does not load)")
    p.add_argument("--trt-cache", metavar="DIR",
                   help="--device tensorrt: folder of the TensorRT engine and timing caches (default: "
                        "BUNDLE.trt_cache beside the bundle; never inside it)")
    p.add_argument("--trt-fp16", action="store_true", help="--device tensorrt: let TensorRT use FP16 kernels")
    p.add_argument("--no-tf32", dest="tf32", action="store_false",
                   help="CUDA: full float32 convolutions and matrix products (labels equal the CPU's) instead of "
                        "ONNX Runtime's default TF32 on Ampere and later GPUs")
    if streams:  # a fleet has its own --threads: per worker
        p.add_argument("--threads", type=_positive_int, help="ONNX Runtime intra-op threads")
    p.add_argument("--thread-pool", choices=THREAD_POOLS, default="per_session",
                   help="per_session: each graph its own pool; shared: one process-wide ONNX Runtime pool for "
                        "every graph (no wake-ups between a frame's graphs)")
    p.add_argument("--max-frames", type=_positive_int, help="stop after this many frames (cameras run until Ctrl-C)")
    p.add_argument("--keep-threshold", type=float,
                   help="STMG compute budget: a block runs iff its keep probability exceeds this (default: the "
                        "exported 0.5; higher = fewer blocks, faster)")
    p.add_argument("--max-blocks", type=non_negative_int,
                   help="STMG compute budget: at most this many prunable blocks on a non-key frame")
    if not streams:
        return
    p.add_argument("--live", action="store_true",
                   help="cameras: decode each source on its own thread and always segment its newest frame, "
                        "counting the frames dropped (files and folders play at their frame rate)")
    p.add_argument("--policy", choices=tuple(POLICIES),
                   help="several sources: key frames staggered across streams (default where the scheduler is "
                        "periodic) or aligned (all on the same ticks)")
    p.add_argument("--workers", type=_positive_int,
                   help="several sources: threads the streams run on (default: one per stream, at most the CPUs)")


def _add_export_options(p: argparse.ArgumentParser, spec) -> None:
    """The flags every method's export takes, then its checkpoint slots, then its own."""
    p.add_argument("--out", required=True, help="bundle directory to write")
    p.add_argument("--height", type=_positive_int, default=spec.height, help=f"input height (default {spec.height})")
    p.add_argument("--width", type=_positive_int, default=spec.width, help=f"input width (default {spec.width})")
    p.add_argument("--classes", type=_positive_int, default=spec.classes,
                   help=f"number of classes (default {spec.classes}; 19: Cityscapes names)")
    p.add_argument("--label-scale", type=float, default=1.0,
                   help="compute labels at this fraction of the input size (1: full, as the paper; 0.25: faster)")
    p.add_argument("--label-path", choices=LABEL_PATHS, default=None,
                   help="host (the built-in methods' default): the graphs end at their scores and the runtime "
                        "computes the paper's bilinear resize + argmax labels exactly, faster (runtime.labels); "
                        "graph: the graphs end in that resize + argmax")
    for slot, text in spec.checkpoints.items():
        p.add_argument("--" + slot.replace("_", "-"), dest=slot, help=text)
    p.add_argument("--video", help="real video whose first frames verify the graphs (default: the sample clip)")
    p.add_argument("--seed", type=int, default=0, help="seed for weights without a checkpoint")
    p.add_argument("--no-simplify", action="store_true", help="skip onnxsim")
    spec.add_options(p)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vss-edge", description=__doc__.splitlines()[0])
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress or provider log line")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    export = verbs.add_parser("export", help="export a method to a bundle of static ONNX graphs")
    methods = export.add_subparsers(dest="method", required=True, metavar="METHOD")
    for spec in METHODS.values():  # every registered method (vss_edge.methods)
        _add_export_options(methods.add_parser(spec.name, help=spec.summary), spec)

    p = verbs.add_parser("run", help="segment videos, image folders or cameras; write overlay videos")
    p.add_argument("bundle")
    p.add_argument("source", nargs="+", help="video file, image folder, or camera index (0, 1, ...); several: "
                                             "one stream each, on one set of sessions")
    p.add_argument("--out", required=True, help="output directory (overlay.mp4, summary.json, labels/; with several "
                                                "sources one sub-folder each and the run's summary.json)")
    p.add_argument("--save-labels", action="store_true", help="also write one label PNG per frame")
    _add_runtime_options(p)

    p = verbs.add_parser("profile", help="per-graph latency, key vs non-key frames, FPS (per stream and per tick "
                                         "with several sources)")
    p.add_argument("bundle")
    p.add_argument("source", nargs="+", help="video file, image folder, or camera index; several: one stream each")
    p.add_argument("--json", help="write the summary as JSON to this file (and the timeline PNG beside it)")
    p.add_argument("--timeline", metavar="PNG",
                   help="write a per-frame latency timeline (time split by graph, key frames marked) as a PNG "
                        "here (default with --json F.json: F.png)")
    p.add_argument("--warmup", type=_non_negative_int, default=2, help="frames excluded from the statistics")
    _add_runtime_options(p)

    p = verbs.add_parser("calibrate", help="INT8 or FP16 version of an FP32 bundle (a new bundle)")
    p.add_argument("bundle", help="FP32 bundle")
    p.add_argument("video", help="real video (or image folder) the FP32 pipeline runs on for calibration")
    p.add_argument("--precision", choices=tuple(x.value for x in Precision), required=True)
    p.add_argument("--out", required=True, help="bundle directory to write")
    p.add_argument("--method", choices=tuple(x.value for x in CalibrationMethod),
                   default=CalibrationMethod.MINMAX.value, help="INT8 calibration method")
    p.add_argument("--calibration-frames", default="0:30", help="frames A:B calibrated on (default 0:30)")
    p.add_argument("--evaluation-frames", default="30:60",
                   help="frames A:B the accuracy is measured on; never overlaps the calibration frames")
    p.add_argument("--max-drop", type=float,
                   help="largest end-to-end drop (1 - mIoU agreement with FP32) allowed: the most sensitive "
                        "graphs stay FP32 until it fits")
    p.add_argument("--budget-level", choices=("node", "graph"),
                   help="with --max-drop: keep the worst nodes float (node, default; whole graphs if that cannot "
                        "fit) or whole graphs (graph)")
    p.add_argument("--keep-float", nargs="+", default=[], metavar="GRAPH", help="graphs to keep in FP32")
    p.add_argument("--no-per-channel", action="store_true", help="per-tensor INT8 weights")
    p.add_argument("--reduce-range", choices=("auto", "on", "off"), default="auto",
                   help="7-bit INT8 weights; auto (default): on where the CPU has no VNNI, where u8s8 sums saturate")
    p.add_argument("--quantize-decisions", action="store_true",
                   help="quantise the graphs that make discrete decisions too (STMG's mask generator; default FP32)")
    p.add_argument("--quantize-flow", action="store_true",
                   help="quantise the flow nets too (GSVNet, MPVSS; default FP32: a flow's error moves every warped "
                        "pixel)")
    p.add_argument("--keep-slower", action="store_true",
                   help="keep INT8 graphs that ran slower than FP32 on this machine (default: they stay FP32)")
    p.add_argument("--json", help="write the calibration report as JSON to this file")

    p = verbs.add_parser("check", help="what a candidate bundle (INT8, FP16...) costs against its reference")
    p.add_argument("reference", help="reference bundle (usually the FP32 export)")
    p.add_argument("candidate", help="candidate bundle of the same method and resolution")
    p.add_argument("video", help="evaluation video or image folder")
    p.add_argument("--frames", default="30:60", help="frames A:B to evaluate on (default 30:60)")
    p.add_argument("--labels", help="folder of ground-truth label PNGs named by frame index (000030.png)")
    p.add_argument("--json", help="write the check as JSON here (markdown and PNG plot beside it)")
    p.add_argument("--threads", type=_positive_int, help="ONNX Runtime intra-op threads")
    _add_backend_options(p, who="the reference's backend: ")
    _add_backend_options(p, "candidate-", "the candidate's backend (compare one bundle on two backends or "
                                          "precisions: give it as both bundles): ")

    p = verbs.add_parser("eval", help="mIoU vs key-frame interval against ground truth, with the copy baseline")
    p.add_argument("bundle")
    p.add_argument("--synthetic", action="store_true",
                   help="score on synthetic clips with exact labels (held-out seeds, the bundle's resolution)")
    p.add_argument("--seeds", default="1000-1003", help="synthetic clip seeds, A-B or A,B,... (default 1000-1003; "
                   "training uses seeds below 1000)")
    p.add_argument("--frames", type=_positive_int, default=30, help="frames per synthetic clip (default 30)")
    p.add_argument("--synthetic-classes", type=_positive_int,
                   help="the bundle's first K classes are the synthetic ones (default: from the class names)")
    p.add_argument("--video", help="video or image folder to score (with --labels)")
    p.add_argument("--labels", help="folder of ground-truth label PNGs named by frame index (000000.png)")
    p.add_argument("--frame-range", help="frames A:B of --video (default: all)")
    p.add_argument("--intervals", default="1-5", help="key-frame intervals, A-B or A,B,... (default 1-5)")
    p.add_argument("--json", help="write the result as JSON to this file")
    p.add_argument("--device", choices=DEVICES, default="auto")
    p.add_argument("--threads", type=_positive_int, help="ONNX Runtime intra-op threads")
    _add_backend_options(p)

    _add_fleet_parser(verbs)

    p = verbs.add_parser("demo", help="export the trained GSVNet demo bundle if needed (without the export "
                                      "extra: use the prebuilt one) and run it on the sample clip")
    p.add_argument("--out", default="out/demo", help="output directory (bundle/ and the run's outputs)")
    p.add_argument("--height", type=_positive_int, default=288)
    p.add_argument("--width", type=_positive_int, default=384)
    return parser


def _add_fleet_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("videos", nargs="+", metavar="VIDEOS",
                   help="video files, folders (their videos, recursively), .txt lists (a source a line) or .csv/.tsv "
                        "manifests (columns video[,labels])")
    p.add_argument("--out", required=True, help="output folder: a sub-folder per video (the single-video verb's "
                                                "outputs) and the fleet's report, fleet.json and fleet.md")
    p.add_argument("--workers", type=_positive_int,
                   help="Ray workers, each doing one video at a time (default: one per CPU, at most one per video)")
    p.add_argument("--threads", type=_positive_int,
                   help="ONNX Runtime intra-op threads per worker (default: the CPUs left per worker; workers x "
                        "threads stay within the CPUs unless asked: both given, or more workers than CPUs)")
    p.add_argument("--ray-address", metavar="ADDR",
                   help="join this Ray cluster (its nodes must see the bundles, videos and --out at the same paths); "
                        "default: a local Ray runtime, started and stopped by this command")
    p.add_argument("--retries", type=_non_negative_int, default=2,
                   help="times a video is given to a fresh worker after its worker died (default 2)")
    p.add_argument("--gpus-per-worker", type=float, default=0.0,
                   help="GPUs Ray reserves for each worker (with --device cuda on a cluster with GPUs; default 0)")


def _add_labels_root(p: argparse.ArgumentParser, needed: bool) -> None:
    p.add_argument("--labels-root", metavar="DIR",
                   help=("each video's labels" if needed else "ground truth, where there is some") +
                        ": DIR/<video name without extension>/ of label PNGs named by frame index (a manifest's "
                        "labels column comes first)")


def _add_fleet_parser(verbs) -> None:
    fleet = verbs.add_parser("fleet", help="run, eval or check over many videos on Ray (pip install "
                                           "'vss-edge[fleet]'): per-video outputs, one report, resumable")
    kinds = fleet.add_subparsers(dest="fleet_verb", required=True, metavar="VERB")
    p = kinds.add_parser("run", help="`run` on every video (overlay, summary, labels per video)")
    p.add_argument("bundle")
    _add_fleet_options(p)
    p.add_argument("--save-labels", action="store_true", help="also write one label PNG per frame")
    _add_runtime_options(p, streams=False)

    p = kinds.add_parser("eval", help="`eval` on every video with its labels (eval.json, eval.md per video)")
    p.add_argument("bundle")
    _add_fleet_options(p)
    _add_labels_root(p, needed=True)
    p.add_argument("--intervals", default="1-5", help="key-frame intervals, A-B or A,B,... (default 1-5)")
    p.add_argument("--frame-range", help="frames A:B of each video (default: all)")
    p.add_argument("--device", choices=DEVICES, default="auto")

    p = kinds.add_parser("check", help="`check` of a candidate against its reference on every video "
                                       "(check.json, check.md, check_agreement.png per video)")
    p.add_argument("reference", help="reference bundle (usually the FP32 export)")
    p.add_argument("candidate", help="candidate bundle of the same method and resolution")
    _add_fleet_options(p)
    _add_labels_root(p, needed=False)
    p.add_argument("--frames", default="30:60",
                   help="frames A:B of each video to evaluate on (default 30:60, as check)")


def cmd_export(args) -> int:
    spec = method_spec(args.method)
    common = dict(height=args.height, width=args.width, num_classes=args.classes, label_scale=args.label_scale)
    if args.label_path is not None:  # else the method's config default
        common["label_path"] = args.label_path
    try:
        cfg = spec.make_config(args, common)
    except (ValueError, TypeError) as e:
        raise VssEdgeError(str(e)) from None
    checkpoints = {slot: getattr(args, slot) for slot in spec.checkpoints}
    out = spec.export(args.out, cfg, video=args.video, seed=args.seed, simplify=not args.no_simplify, **checkpoints)
    manifest = json.loads((out / "manifest.json").read_text())
    print(f"wrote bundle {out} ({manifest['method']}, {cfg.height}x{cfg.width}, {cfg.num_classes} classes)")
    print("| graph | role | GFLOPs | onnxsim | worst error vs PyTorch |")
    print("|---|---|---:|---|---|")
    for name, g in manifest["graphs"].items():
        errs = ", ".join(f"{k} {v:.2g}" for k, v in g["verified_max_error"].items())
        print(f"| {name} | {g['role']} | {g['gflops']:.2f} | {'yes' if g['simplified_with_onnxsim'] else 'no'} | {errs} |")
    for part, weights in manifest["provenance"]["checkpoints"].items():
        if "note" in weights:
            print(f"note ({part} weights): {weights['note']}")
    return 0


def _budget(args) -> dict:
    return {k: v for k, v in (("keep_threshold", args.keep_threshold), ("max_blocks", args.max_blocks)) if v is not None}


def _load_options(args) -> dict:
    """runtime.load's keyword options from the runtime options (_add_runtime_options)."""
    return dict(device=args.device, threads=args.threads, scheduler=args.scheduler, interval=args.interval,
                thread_pool=args.thread_pool, budget=_budget(args), trt_cache_dir=args.trt_cache,
                trt_fp16=args.trt_fp16, tf32=args.tf32, **_backend_options(args))


def _backend_options(args) -> dict:
    """runtime.load's backend, precision and agreement_floor from --backend, --precision, --agreement-floor."""
    if args.agreement_floor is not None and args.backend != "auto":
        raise VssEdgeError("--agreement-floor is what --backend auto keeps: give --backend auto too")
    return dict(backend=args.backend, precision=args.precision, agreement_floor=args.agreement_floor)


def _load(args):
    from vss_edge import runtime

    return runtime.load(args.bundle, **_load_options(args))


def _load_streams(args, streams: int):
    from vss_edge import runtime

    return runtime.load_streams(args.bundle, streams, policy=args.policy, workers=args.workers, **_load_options(args))


@contextlib.contextmanager
def _open_sources(names: list[str], verb: str):
    """(opened sources, their positions, {position: (name, error)} of those that could not be
    opened), before the bundle is loaded; VssEdgeError if none opened. Closed after."""
    from vss_edge.runtime.sources import open_source

    with contextlib.ExitStack() as stack:
        sources, positions, unopened = [], [], {}
        for i, name in enumerate(names):
            try:
                sources.append(stack.enter_context(open_source(name)))
                positions.append(i)
            except SourceError as e:
                unopened[i] = (name, e)
        if not sources:
            raise VssEdgeError("; ".join(str(e) for _, e in unopened.values()))
        yield sources, positions, unopened


def cmd_run(args) -> int:
    from vss_edge.runtime.sources import open_source
    from vss_edge.source_runs import run_source, run_sources, stream_folders

    if len(args.source) > 1:
        folders = stream_folders(args.source)
        with _open_sources(args.source, "run") as (sources, positions, unopened), \
                _load_streams(args, len(sources)) as multi:
            s = run_sources(multi, sources, [folders[i] for i in positions], Path(args.out), args.save_labels,
                            args.max_frames, args.quiet, live=args.live, unopened=unopened)
        return _report_streams(s, Path(args.out), "run")
    with open_source(args.source[0]) as source:  # before the bundle: a bad source gives its error alone
        pipe = _load(args)
        s = run_source(pipe, source, Path(args.out), args.save_labels, args.max_frames, args.quiet, live=args.live)
    print(f"{s['frames_read']} frames ({s['key_frames']} key) -> {s['outputs']['video']}: {_speed(s)} on "
          f"{s['device']} ({s['backends']['backend']})" + _live(s) + (" (interrupted)" if s["interrupted"] else ""))
    return 128 + signal.Signals[s["signal"]] if s["interrupted"] else 0


def _live(s: dict) -> str:
    """'; live: C captured, D dropped, capture to labels p50 / p99 / max ms' for a live stream."""
    if not s.get("live"):
        return ""
    lat = s["capture_to_labels"]
    return (f"; live: {s['frames_captured']} captured, {s['frames_dropped']} dropped, capture to labels "
            f"p50 {_fmt_ms(lat['p50_ms'])} / p99 {_fmt_ms(lat['p99_ms'])} / max {_fmt_ms(lat['max_ms'])} ms")


def _naming(source: str, error: str) -> str:
    """A stream's error, prefixed with its source where the message does not name it."""
    return error if source in error else f"stream '{source}': {error}"


def _report_streams(s: dict, out: Path | None, verb: str) -> int:
    """A line per stream (its error on stderr), one for the run; the exit status: 128 + the signal
    if interrupted, else 2 if a stream failed, else 0."""
    for entry in s["per_stream"]:
        if entry["error"] is not None:
            print(f"vss-edge {verb}: error: {_naming(entry['source'], entry['error'])}", file=sys.stderr)
        elif out is not None:
            print(f"{entry['source']}: {entry['frames_read']} frames ({entry['key_frames']} key) -> "
                  f"{out / entry['folder']}" + _live(entry))
    tick = s["tick"]
    where = f" -> {out / 'summary.json'}" if out is not None else ""
    print(f"{s['streams']} streams ({s['failed']} failed), {s['frames']} frames in {s['ticks']} ticks, key frames "
          f"{s['policy']}: tick mean {_fmt_ms(tick['mean_ms'])} ms, max {_fmt_ms(tick['max_ms'])} ms; {_speed(s)} "
          f"(all streams) on {s['device']}{where}" + (" (interrupted)" if s["interrupted"] else ""))
    if s["interrupted"]:
        return 128 + signal.Signals[s["signal"]]
    return 2 if s["failed"] else 0


def _speed(s: dict) -> str:
    """'P FPS in the pipeline, T FPS end to end' (end to end: reading, drawing and writing too)."""
    through = s.get("throughput_fps")
    return f"{s['fps']:.2f} FPS in the pipeline" + (f", {through:.2f} FPS end to end" if through else "")


def cmd_profile(args) -> int:
    from vss_edge.runtime.profiling import RunStats, to_markdown
    from vss_edge.runtime.sources import open_source
    from vss_edge.runtime.outputs import check_writable_folder, write_bytes_atomic, write_text_atomic
    from vss_edge.runtime.timeline import Timeline

    if len(args.source) > 1 or args.live:
        return _profile_streams(args)
    timeline_path = None  # the PNG: --timeline, else beside --json (F.json -> F.png)
    if args.timeline or args.json:
        timeline_path = Path(args.timeline) if args.timeline else Path(args.json).with_suffix(".png")
        what = f"--timeline '{args.timeline}'" if args.timeline else f"the timeline '{timeline_path}' (beside --json)"
        if args.json and timeline_path.resolve() == Path(args.json).resolve():
            raise VssEdgeError(f"{what} would overwrite --json '{args.json}'")
    if args.json:  # before running: a read-only or missing folder fails now, not after the video
        check_writable_folder(Path(args.json).parent, f"--json '{args.json}'")
    if timeline_path is not None:
        check_writable_folder(timeline_path.parent, what)
    with open_source(args.source[0]) as source:
        pipe = _load(args)
        stats = RunStats(pipe.manifest, warmup=args.warmup)  # bounded memory: a camera may run for days
        timeline = Timeline(pipe.manifest.graphs, warmup=args.warmup)  # bounded too: thins itself
        for frame in source:
            result = pipe.step(frame)
            stats.add(result)
            timeline.add(result)
            if args.max_frames and stats.seen >= args.max_frames:
                break
    if stats.seen <= args.warmup:
        raise VssEdgeError(f"only {stats.seen} frames read; need more than --warmup {args.warmup}")
    summary = stats.summary()
    summary.update(device=pipe.device, backends=pipe.backends(), scheduler=repr(pipe.scheduler),
                   compute_budget=pipe.program.budget_report())
    print(to_markdown(summary), end="")
    if args.json:
        write_text_atomic(args.json, json.dumps(summary, indent=2) + "\n")
    if timeline_path is not None:
        (h, w), s = summary["resolution"], summary
        title = (f"{s['method']} {h}x{w} on {s['device']}: {s['frames']} frames ({s['key_frames']} key), "
                 f"{s['fps']:.2f} FPS")
        write_bytes_atomic(timeline_path, timeline.to_png(title))
        print(f"timeline written to {timeline_path}")
    return 0


def _profile_streams(args) -> int:
    """profile over several sources (or live): the per-stream and per-tick table, --json."""
    from vss_edge.runtime.outputs import check_writable_folder, write_text_atomic
    from vss_edge.runtime.profiling import streams_to_markdown
    from vss_edge.source_runs import profile_sources

    if args.timeline:
        raise VssEdgeError("--timeline draws one stream read in full: give one source, without --live")
    if args.json:
        check_writable_folder(Path(args.json).parent, f"--json '{args.json}'")
    with _open_sources(args.source, "profile") as (sources, _, unopened), _load_streams(args, len(sources)) as multi:
        summary = profile_sources(multi, sources, args.warmup, args.max_frames, live=args.live, unopened=unopened)
    if not summary["tick"]["count"]:
        raise VssEdgeError(f"only {summary['ticks']} ticks run; need more than --warmup {args.warmup} "
                           f"(and the first) to measure")
    print(streams_to_markdown(summary), end="")
    if args.json:
        write_text_atomic(args.json, json.dumps(summary, indent=2) + "\n")
    for entry in summary["per_stream"]:
        if entry["error"] is not None:
            print(f"vss-edge profile: error: {_naming(entry['source'], entry['error'])}", file=sys.stderr)
    return 2 if summary["failed"] else 0


def _can_export() -> bool:
    """Whether the export extra (torch, onnx, onnxsim) is importable here."""
    import importlib.util

    try:
        return all(importlib.util.find_spec(name) is not None for name in EXPORT_ONLY)
    except (ImportError, ValueError):  # a module set to None in sys.modules, a broken install
        return False


def _demo_bundle(args) -> Path:
    """The bundle the demo runs: out/bundle, exported from the trained weights when the export
    extra is installed (kept if it is already the demo's), else the prebuilt one shipped in the
    package (288x384 only)."""
    from vss_edge import demo_weights
    from vss_edge.runtime.manifest import load_manifest

    if not _can_export():
        if (args.height, args.width) != (demo_weights.HEIGHT, demo_weights.WIDTH):
            raise VssEdgeError(f"a {args.height}x{args.width} demo bundle has to be exported, which needs the "
                               f"export extra: pip install 'vss-edge[export]' (the shipped bundle is "
                               f"{demo_weights.HEIGHT}x{demo_weights.WIDTH})")
        print(f"using the prebuilt demo bundle shipped with vss-edge ({demo_weights.DEMO_BUNDLE}); "
              "install vss-edge[export] to export it yourself", file=sys.stderr)
        return demo_weights.DEMO_BUNDLE
    bundle = Path(args.out) / "bundle"
    trained = demo_weights.available()
    try:
        m = load_manifest(bundle)
        if (m.height, m.width) != (args.height, args.width) or (trained and not demo_weights.exported_in(m)):
            raise VssEdgeError("the bundle there is not the demo's")
    except VssEdgeError:
        what = "trained (vss_edge/data/weights)" if trained else "random (no trained weights found)"
        print(f"exporting a {args.height}x{args.width} GSVNet bundle with {what} weights to {bundle} ...",
              file=sys.stderr)
        if trained:
            demo_weights.export_gsvnet_demo(bundle, args.height, args.width)
        else:
            from vss_edge.configs import GSVNetConfig
            from vss_edge.exporters.gsvnet import export_gsvnet

            export_gsvnet(bundle, GSVNetConfig(height=args.height, width=args.width))
    return bundle


def cmd_demo(args) -> int:
    from vss_edge import runtime
    from vss_edge.runtime.sources import open_source, sample_clip_path
    from vss_edge.source_runs import run_source

    out = Path(args.out)
    pipe = runtime.load(_demo_bundle(args))
    with open_source(sample_clip_path()) as source:
        s = run_source(pipe, source, out, save_labels=False, max_frames=None, quiet=args.quiet)
    print(f"demo: {s['frames_read']} frames of the sample clip ({s['key_frames']} key frames) -> "
          f"{s['outputs']['video']}, {_speed(s)} on {s['device']}; summary in {out / 'summary.json'}")
    return 128 + signal.Signals[s["signal"]] if s["interrupted"] else 0


def cmd_calibrate(args) -> int:
    from dataclasses import replace

    from vss_edge.runtime.outputs import write_text_atomic

    if args.budget_level and args.max_drop is None:
        raise VssEdgeError("--budget-level chooses how --max-drop is met: give --max-drop too")
    # checks the options and that calibration and evaluation frames are disjoint, before any work
    config = CalibrationConfig(precision=args.precision, method=args.method, per_channel=not args.no_per_channel,
                               reduce_range={"auto": None, "on": True, "off": False}[args.reduce_range],
                               keep_float_roles=(() if args.quantize_decisions else DECISION_ROLES)
                               + (() if args.quantize_flow else MOTION_ROLES),
                               keep_slower=args.keep_slower,
                               calibration_frames=args.calibration_frames, evaluation_frames=args.evaluation_frames)
    if args.max_drop is not None:
        from vss_edge.calibration.budget import calibrate_within_budget

        out, report = calibrate_within_budget(args.bundle, args.video, args.out, args.max_drop, config,
                                              level=args.budget_level or "node")
    else:
        from vss_edge.calibration.budget import end_to_end_drop
        from vss_edge.runtime.sources import read_frames
        from vss_edge.calibration.collect import FrameRange
        from vss_edge.calibration.quantize import calibrate_bundle

        out, report = calibrate_bundle(args.bundle, args.video, args.out,
                                       replace(config, keep_float_graphs=tuple(args.keep_float)))
        ev = FrameRange.parse(args.evaluation_frames)
        report["evaluation"] = {"frames": str(ev), "drop": end_to_end_drop(
            args.bundle, out, read_frames(args.video, ev.start, ev.stop))}
    for warning in report["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"wrote {args.precision} bundle {out}")
    print("| graph | precision | INT8 ms (optimisation level) | FP32 ms | measured here |")
    print("|---|---|---:|---:|---|")
    for name, g in report["graphs"].items():
        session = (g["record"] or {}).get("session")
        if session:
            level = session["optimization"]
            print(f"| {name} | {g['precision']} | {session['ms'][level]:.2f} ({level}) | "
                  f"{_fmt_ms(session['fp32_ms'])} | yes |")
        else:
            print(f"| {name} | {g['precision']} | - | - | - |")
    drop = report["budget"]["drop"] if "budget" in report else report["evaluation"]["drop"]
    print(f"end-to-end drop vs FP32 (1 - mIoU agreement) on frames {args.evaluation_frames}: {drop:.4f}")
    for kept in report.get("budget", {}).get("kept_float", []):
        print(f"kept FP32: {kept['graph']} ({kept['reason']})")
    budget = report.get("budget")
    if budget and budget["worst_nodes"]:
        print(f"budget: {budget['level']} level, {budget['float_nodes']} nodes in float; the nodes that cost the most:")
        print("| graph | node | op | SQNR in (dB) | SQNR out (dB) | added (dB) |")
        print("|---|---|---|---:|---:|---:|")
        for w in budget["worst_nodes"]:
            print(f"| {w['graph']} | {w['node']} | {w['op']} | {w['input_sqnr_db']:.1f} | {w['sqnr_db']:.1f} | "
                  f"{w['added_db']:.1f} |")
    if args.json:
        write_text_atomic(args.json, json.dumps(report, indent=2) + "\n")
    return 0


def _fmt_ms(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def cmd_check(args) -> int:
    from vss_edge.calibration.check import run_check
    from vss_edge.calibration.collect import FrameRange
    from vss_edge.calibration.report import to_markdown, write_reports

    frames = FrameRange.parse(args.frames)
    result = run_check(args.reference, args.candidate, args.video, labels_dir=args.labels,
                       start=frames.start, stop=frames.stop, threads=args.threads,
                       backend=args.backend, precision=args.precision,
                       candidate_backend=args.candidate_backend, candidate_precision=args.candidate_precision,
                       agreement_floor=args.agreement_floor)
    print(to_markdown(result), end="")
    if args.json:
        write_reports(result, args.json)
    return 0


def cmd_eval(args) -> int:
    from vss_edge.evaluation import evaluate_bundle, parse_intervals, parse_seeds, to_markdown
    from vss_edge.runtime.outputs import write_text_atomic

    from vss_edge.runtime.outputs import check_writable_folder

    intervals = parse_intervals(args.intervals)
    if args.json:
        check_writable_folder(Path(args.json).parent, f"--json '{args.json}'")
    start, stop = 0, None
    if args.frame_range:
        from vss_edge.calibration.collect import FrameRange

        frames = FrameRange.parse(args.frame_range)
        start, stop = frames.start, frames.stop
    result = evaluate_bundle(args.bundle, synthetic=args.synthetic, video=args.video, labels_dir=args.labels,
                             intervals=intervals, seeds=parse_seeds(args.seeds), frames=args.frames,
                             synthetic_classes_=args.synthetic_classes, start=start, stop=stop,
                             threads=args.threads, device=args.device, **_backend_options(args))
    print(to_markdown(result), end="")
    if args.json:
        write_text_atomic(args.json, json.dumps(result, indent=2) + "\n")
    return 0


def cmd_fleet(args) -> int:
    """fleet run|eval|check: the task and videos from the arguments, run_fleet, a line per failure and one in all."""
    from vss_edge.calibration.collect import FrameRange
    from vss_edge.fleet import FleetTask, import_ray, list_videos, run_fleet
    from vss_edge.runtime.manifest import load_manifest

    import_ray()  # before anything else: without Ray, say how to install it
    verb = args.fleet_verb
    if verb == "check":
        from vss_edge.calibration.check import check_compatible

        bundles = (args.reference, args.candidate)
        check_compatible(load_manifest(args.reference), load_manifest(args.candidate))
        frames = FrameRange.parse(args.frames)
        load, options = dict(device="cpu"), dict(start=frames.start, stop=frames.stop)
    else:
        bundles = (args.bundle,)
        load_manifest(args.bundle)  # a bad bundle: one error now, not one per video
        if verb == "run":
            load, options = _load_options(args), dict(save_labels=args.save_labels, max_frames=args.max_frames)
        else:
            from vss_edge.evaluation import parse_intervals

            start, stop = 0, None
            if args.frame_range:
                frames = FrameRange.parse(args.frame_range)
                start, stop = frames.start, frames.stop
            load, options = dict(device=args.device), dict(intervals=parse_intervals(args.intervals), start=start,
                                                           stop=stop)
    videos = list_videos(args.videos, getattr(args, "labels_root", None), labels_needed=verb == "eval")
    task = FleetTask(verb, tuple(str(Path(b).resolve()) for b in bundles), args.out, load, options)
    r = run_fleet(task, videos, workers=args.workers, threads=args.threads, gpus_per_worker=args.gpus_per_worker,
                  ray_address=args.ray_address, retries=args.retries, quiet=args.quiet)
    for e in r["per_video"]:  # (the error that stopped the fleet, if one did, is said once, below)
        if e["status"] == "failed" and e["error"] != r["error"]:
            print(f"vss-edge fleet {verb}: error: {_naming(e['video'], e['error'])}", file=sys.stderr)
    c = r["counts"]
    stopped = (f", {c['interrupted']} interrupted, {c['not_started']} not started" if r["stopped_by"] or r["error"]
               else "")
    print(f"{r['videos']} videos: {c['done']} done, {c['skipped']} skipped (complete already), {c['failed']} failed"
          + stopped
          + f"; {r['frames']} frames" + (f", {r['throughput_fps']:.2f} FPS end to end" if r["throughput_fps"] else "")
          + f" on {r['workers']['workers']} workers -> {Path(args.out) / 'fleet.md'}")
    if r["error"]:
        raise VssEdgeError(r["error"])
    if r["stopped_by"]:
        return 128 + signal.Signals[r["stopped_by"]]
    return 2 if c["failed"] else 0


COMMANDS = {"export": cmd_export, "run": cmd_run, "profile": cmd_profile, "calibrate": cmd_calibrate,
            "check": cmd_check, "eval": cmd_eval, "demo": cmd_demo, "fleet": cmd_fleet}


def main(argv: list[str] | None = None) -> int:
    """The `vss-edge` program. With argv None (the console script, `python -m vss_edge`) it is the
    process's last act: a stop signal that arrives once the verb is done is ignored, so the exit
    status stays the one chosen (143, not a kill by SIGTERM while the interpreter shuts down)."""
    if argv is None and threading.current_thread() is threading.main_thread():
        for sig in StopSignals.SIGNALS:  # what the verb's handlers give back when they are done
            signal.signal(sig, signal.SIG_IGN)
    return _main(argv)


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    try:
        with StopSignals():  # SIGTERM (systemd, docker, ROS) stops a verb as Ctrl-C does
            # before any source or bundle is opened (a cluster's workers check their own node's CPUs)
            if getattr(args, "threads", None) is not None and not getattr(args, "ray_address", None):
                from vss_edge.runtime.session import check_threads

                try:
                    check_threads(args.threads)
                except VssEdgeError as e:
                    raise VssEdgeError(f"--{e}") from None
            return COMMANDS[args.verb](args)
    except VssEdgeError as e:
        print(f"vss-edge {args.verb}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a write we did not wrap: still the user's disk, mount or permissions
        if e.errno not in OUTPUT_ERRNOS:
            raise
        import errno

        what = "write" if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG) else "access"
        where = f" '{e.filename}'" if e.filename else ""
        print(f"vss-edge {args.verb}: error: cannot {what}{where}: {e.strerror or e}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as e:
        if e.name not in EXPORT_ONLY:
            raise
        print(f"vss-edge {args.verb}: error: this needs {e.name}, which the runtime-only install leaves out: "
              f"pip install 'vss-edge[export]'", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        print(f"vss-edge {args.verb}: interrupted", file=sys.stderr)
        return 128 + signal_number(e)


if __name__ == "__main__":
    sys.exit(main())
