"""`vss-edge` command line: export | run | profile | calibrate | check | eval | demo.

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
import re
import signal
import sys
import threading
import time
from pathlib import Path

# FFmpeg logs straight to stderr (e.g. "moov atom not found"); our errors say it better.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
# OpenCV's own warnings ("Failed to write frame", once a frame on a full disk): errors only.
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")

from vss_edge.calibration.quantize import DECISION_ROLES, CalibrationConfig, CalibrationMethod, Precision  # noqa: E402
from vss_edge.configs import LABEL_PATHS  # noqa: E402
from vss_edge.methods import METHODS, method_spec  # noqa: E402
from vss_edge.methods.options import non_negative_int, positive_int  # noqa: E402
from vss_edge.runtime.errors import OUTPUT_ERRNOS, OutputError, SourceError, VssEdgeError  # noqa: E402
from vss_edge.runtime.schedulers import SCHEDULERS  # noqa: E402
from vss_edge.runtime.session import DEVICES, THREAD_POOLS  # noqa: E402


EXPORT_ONLY = ("torch", "onnx", "onnxsim")  # the `export` extra: exporting and calibrating need them

_positive_int, _non_negative_int = positive_int, non_negative_int


def _add_runtime_options(p: argparse.ArgumentParser) -> None:
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

    p = verbs.add_parser("run", help="segment a video, image folder or camera; write an overlay video")
    p.add_argument("bundle")
    p.add_argument("source", help="video file, image folder, or camera index (0, 1, ...)")
    p.add_argument("--out", required=True, help="output directory (overlay.mp4, summary.json, labels/)")
    p.add_argument("--save-labels", action="store_true", help="also write one label PNG per frame")
    _add_runtime_options(p)

    p = verbs.add_parser("profile", help="per-graph latency, key vs non-key frames, FPS")
    p.add_argument("bundle")
    p.add_argument("source", help="video file, image folder, or camera index")
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

    p = verbs.add_parser("demo", help="export the trained GSVNet demo bundle if needed (without the export "
                                      "extra: use the prebuilt one) and run it on the sample clip")
    p.add_argument("--out", default="out/demo", help="output directory (bundle/ and the run's outputs)")
    p.add_argument("--height", type=_positive_int, default=288)
    p.add_argument("--width", type=_positive_int, default=384)
    return parser


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM as an exception (a KeyboardInterrupt, so it stops what Ctrl-C stops).

    signum: the signal; the process exits with 128 + signum (130 for SIGINT, 143 for SIGTERM).
    """

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _signum(interrupt: BaseException) -> int:
    return getattr(interrupt, "signum", signal.SIGINT)


class StopSignals:
    """While active, SIGINT and SIGTERM raise Interrupted, or with record_only are only recorded
    (the caller looks at ``received`` where stopping is safe). ``received``: the first signal, or
    None. Only the main thread can install handlers; elsewhere this does nothing."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, record_only: bool = False):
        self.record_only = record_only
        self.received: int | None = None
        self._previous: dict = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        for sig, handler in self._previous.items():
            if self.record_only and self.received is not None and isinstance(getattr(handler, "__self__", None),
                                                                               StopSignals):
                continue  # stopping already: later signals stay recorded until the enclosing one restores
            signal.signal(sig, handler)
        self._previous = {}

    def _handle(self, signum, frame) -> None:
        if self.received is None:
            self.received = signum
        if not self.record_only:
            raise Interrupted(signum)


class Progress:
    """One stderr line updated in place (on a terminal) or every 50 frames (in a log)."""

    def __init__(self, total: int | None, enabled: bool):
        self.total, self.enabled, self.tty = total, enabled, sys.stderr.isatty()
        self.start = time.perf_counter()

    def update(self, done: int) -> None:
        if not self.enabled or (not self.tty and done % 50):
            return
        fps = done / max(time.perf_counter() - self.start, 1e-9)
        of = f"/{self.total}" if self.total else ""
        end = "\r" if self.tty else "\n"
        print(f"  frame {done}{of}  {fps:.1f} FPS", end=end, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.enabled and self.tty:
            print(file=sys.stderr)


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


_LABEL_NAME = re.compile(r"(\d{6,})\.png")


def _video_name(size: tuple[int, int]) -> str:
    """overlay.mp4, or overlay.avi (Motion JPEG) for an odd width or height, which MPEG-4 through
    FFmpeg cannot keep (OpenCV would drop the last column or row)."""
    return "overlay.avi" if size[0] % 2 or size[1] % 2 else "overlay.mp4"


def _remove_stale_labels(labels_dir: Path, keep: int) -> int:
    """Delete label PNGs (NNNNNN.png) of an earlier run numbered `keep` or more; how many went."""
    removed = 0
    try:
        entries = list(labels_dir.iterdir())
    except OSError:
        return 0
    for path in entries:
        m = _LABEL_NAME.fullmatch(path.name)
        if m and int(m.group(1)) >= keep and path.is_file():
            with contextlib.suppress(OSError):
                path.unlink()
                removed += 1
    if keep == 0:
        with contextlib.suppress(OSError):
            labels_dir.rmdir()  # only if nothing else is in it
    return removed


def run_source(pipe, source, out: Path, save_labels: bool, max_frames: int | None, quiet: bool) -> dict:
    """Segment every frame of source into out/overlay.mp4 (+ labels/); returns the summary.

    The first frame is segmented before anything is written, so a frame the bundle cannot take
    (1x1...) is a one-line error with no output. Ctrl-C and SIGTERM are only recorded while it
    runs and looked at between frames, so one frame's outputs (its label PNG, its video frame,
    its count) are a unit no signal cuts in two: the run stops after the frames done, which are
    kept (summary 'interrupted': true), and the video and summary are finished whatever other
    signals arrive. The video is verified before it takes its name. The folder is made
    consistent with this run: label PNGs of an earlier, longer run (or of one with
    --save-labels, when this one has none) are removed, and so are the temporary files of
    killed runs; two runs cannot share one --out.

    A user error part-way (an unreadable frame...) finishes the video of the frames before it,
    then is raised with that said. An output that cannot be written (disk full, read-only)
    stops the run: no video replaces the previous one, the summary says what happened (when it
    can be written), and OutputError is raised with the first cause. Any other exception (a
    bug) leaves a previous video as it was.
    """
    from vss_edge.runtime.errors import FrameError
    from vss_edge.runtime.profiling import RunStats
    from vss_edge.runtime.outputs import (
        AtomicVideoWriter,
        locked_folder,
        overlay,
        remove_stale_temporaries,
        write_image_atomic,
        write_text_atomic,
    )

    labels_dir = out / "labels"
    video = out / _video_name(source.size)
    palette = pipe.palette
    with StopSignals(record_only=True) as stop:
        stats = RunStats(pipe.manifest)
        frames = iter(source)
        first = next(frames)
        try:
            result = pipe.step(first)
        except FrameError as e:
            raise SourceError(f"source '{source.name}': {e}") from None
        try:
            out.mkdir(parents=True, exist_ok=True)
            if save_labels:
                labels_dir.mkdir(exist_ok=True)
        except OSError as e:
            raise OutputError(f"cannot create output folder '{out}': {e.strerror or e}") from None
        with locked_folder(out):
            removed = remove_stale_temporaries(out) + remove_stale_temporaries(labels_dir)
            writer = AtomicVideoWriter(video, source.fps, source.size).__enter__()
            committed, error, output_error, signum = 0, None, None, None
            total = min(filter(None, (source.frame_count, max_frames)), default=None)
            progress = Progress(total, not quiet)
            try:
                frame = first
                while True:
                    drawn = overlay(frame, result.labels, palette)
                    png = labels_dir / f"{result.index:06d}.png"  # this frame's outputs: all, or none
                    if save_labels:
                        write_image_atomic(png, result.labels)
                    try:
                        writer.write(drawn)
                    except BaseException:
                        if save_labels:
                            png.unlink(missing_ok=True)
                        raise
                    stats.add(result)
                    committed += 1
                    progress.update(committed)
                    if stop.received is not None:
                        signum = stop.received
                        break
                    if max_frames and committed >= max_frames:
                        break
                    frame = next(frames, None)
                    if frame is None:
                        break
                    result = pipe.step(frame)
            except KeyboardInterrupt as e:  # raised by code (the handlers only record)
                signum = _signum(e)
            except OutputError as e:
                output_error = e
            except VssEdgeError as e:
                error = e
            except BaseException:
                writer.discard()  # a bug: the previous video stays as it was
                raise
            finally:
                progress.close()
            if output_error is None:
                try:
                    writer.finish()
                except OutputError as e:
                    output_error = e
            else:
                writer.discard()
            warnings = []
            if source.ended_early and signum is None and error is None and output_error is None \
                    and not (max_frames and committed >= max_frames):
                warnings.append(source.ended_early)
            for warning in warnings:
                print(f"vss-edge run: warning: {warning}", file=sys.stderr)
            stale = _remove_stale_labels(labels_dir, committed if save_labels else 0)
            if output_error is None:
                other = out / ("overlay.avi" if video.suffix == ".mp4" else "overlay.mp4")
                if other.is_file():  # an earlier run's overlay in the other format
                    stale += 1
                    with contextlib.suppress(OSError):
                        other.unlink()
            summary_error = None
            while True:  # twice at most: a signal during the write is in the summary too
                received = stop.received if signum is None else signum
                summary = stats.summary()
                summary.update(
                    source=source.name, frames_read=committed,
                    frames_written=writer.frames_written if writer.verified else 0,
                    labels_written=committed if save_labels else 0,
                    interrupted=received is not None,
                    signal=None if received is None else signal.Signals(received).name,
                    device=pipe.device, scheduler=repr(pipe.scheduler),
                    compute_budget=pipe.program.budget_report(),
                    outputs={"video": str(video) if writer.verified else None},
                    warnings=warnings, stale_files_removed=stale + removed,
                    error=None if error is None and output_error is None else str(output_error or error))
                if save_labels:
                    summary["outputs"]["labels"] = str(labels_dir)
                try:
                    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2) + "\n")
                except OutputError as e:
                    summary_error = e
                    break
                if (stop.received if signum is None else signum) == received:
                    break
    if output_error is not None:  # the first cause first; then what is left in --out
        said = f"; and {summary_error}" if summary_error else f"; see {out / 'summary.json'}"
        raise OutputError(f"{output_error}; {video.name} was left as it was ({committed} frames were done){said}")
    if error is not None:
        raise type(error)(f"{error} (the {committed} frames before it are in {video})")
    if summary_error is not None:
        raise OutputError(f"{summary_error} (the {committed} frames are in {video})")
    return summary


def _load(args):
    from vss_edge import runtime

    budget = {k: v for k, v in (("keep_threshold", args.keep_threshold), ("max_blocks", args.max_blocks))
              if v is not None}
    return runtime.load(args.bundle, device=args.device, threads=args.threads, scheduler=args.scheduler,
                        interval=args.interval, thread_pool=args.thread_pool, budget=budget,
                        trt_cache_dir=args.trt_cache, trt_fp16=args.trt_fp16)


def cmd_run(args) -> int:
    from vss_edge.runtime.sources import open_source

    with open_source(args.source) as source:  # before the bundle: a bad source gives its error alone
        pipe = _load(args)
        s = run_source(pipe, source, Path(args.out), args.save_labels, args.max_frames, args.quiet)
    print(f"{s['frames_read']} frames ({s['key_frames']} key) -> {s['outputs']['video']}: {_speed(s)} on "
          f"{s['device']}" + (" (interrupted)" if s["interrupted"] else ""))
    return 128 + signal.Signals[s["signal"]] if s["interrupted"] else 0


def _speed(s: dict) -> str:
    """'P FPS in the pipeline, T FPS end to end' (end to end: reading, drawing and writing too)."""
    through = s.get("throughput_fps")
    return f"{s['fps']:.2f} FPS in the pipeline" + (f", {through:.2f} FPS end to end" if through else "")


def cmd_profile(args) -> int:
    from vss_edge.runtime.profiling import RunStats, to_markdown
    from vss_edge.runtime.sources import open_source
    from vss_edge.runtime.outputs import check_writable_folder, write_bytes_atomic, write_text_atomic
    from vss_edge.runtime.timeline import Timeline

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
    with open_source(args.source) as source:
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
    summary.update(device=pipe.device, scheduler=repr(pipe.scheduler), compute_budget=pipe.program.budget_report())
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
                               keep_float_roles=() if args.quantize_decisions else DECISION_ROLES,
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
                       start=frames.start, stop=frames.stop, threads=args.threads)
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
                             threads=args.threads, device=args.device)
    print(to_markdown(result), end="")
    if args.json:
        write_text_atomic(args.json, json.dumps(result, indent=2) + "\n")
    return 0


COMMANDS = {"export": cmd_export, "run": cmd_run, "profile": cmd_profile, "calibrate": cmd_calibrate,
            "check": cmd_check, "eval": cmd_eval, "demo": cmd_demo}


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
            if getattr(args, "threads", None) is not None:  # before any source or bundle is opened
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
        return 128 + _signum(e)


if __name__ == "__main__":
    sys.exit(main())
