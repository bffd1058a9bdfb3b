"""vss-edge runtime: ONNX Runtime only, never torch. `load(bundle)` -> Pipeline; `load_streams(bundle, N)`
-> MultiStream (N streams on one set of sessions)."""
from __future__ import annotations

import logging
from pathlib import Path

from vss_edge.runtime.cpu import tuning_warnings
from vss_edge.runtime.errors import BundleError, FrameError, OutputError, SourceError, VssEdgeError
from vss_edge.runtime.manifest import Manifest, load_manifest
from vss_edge.runtime.multistream import MultiStream
from vss_edge.runtime.pipeline import FrameResult, Pipeline
from vss_edge.runtime.providers import gpu_warnings
from vss_edge.runtime.schedulers import (
    DistortionAware,
    FixedInterval,
    FrameInfo,
    Scheduler,
    build_scheduler,
    choose_scheduler,
)
from vss_edge.runtime.session import check_backend, check_threads, open_sessions


def load(bundle: str | Path, *, device: str = "auto", threads: int | None = None,
         scheduler: Scheduler | str | None = None, interval: int | None = None,
         io_binding: bool = False, thread_pool: str = "per_session", budget: dict | None = None,
         trt_cache_dir: str | Path | None = None, trt_fp16: bool = False, backend: str = "onnxruntime",
         precision: str | None = None, agreement_floor: float | None = None, tf32: bool = True) -> Pipeline:
    """Check a bundle (manifest, hashes, graph I/O) and return a ready Pipeline.

    backend: 'onnxruntime' (default), 'openvino' (OpenVINO on the CPU; pip install 'vss-edge[openvino]')
    or 'auto' (per graph, the fastest of the two whose labels agree with ONNX Runtime's to at least
    agreement_floor mIoU, default runtime.backend_choice.DEFAULT_FLOOR, measured at the first load on
    this machine and cached beside the bundle). precision: the float compute allowed, 'f32' (default:
    the bundle's FP32, never lowered) or 'bf16' (OpenVINO's bfloat16; with 'auto', bf16 where it keeps
    the floor). What runs each graph is in the log line and `pipe.backends()`.

    device: 'auto' (CUDA when it really loads, else CPU), 'cuda', 'tensorrt' (ONNX Runtime's TensorRT
    provider, CUDA beside it for the nodes TensorRT does not take; where TensorRT does not load, as
    'auto', said in the log line) or 'cpu'.
    tf32: let the CUDA provider use TF32 (ONNX Runtime's default: on Ampere and later GPUs its
    convolutions and matrix products round their inputs to 10 mantissa bits); False runs full
    float32, whose labels equal the CPU's (H200, MPVSS R50 480x853: agreement 0.98279 -> 0.99999;
    GSVNet 512x1024 0.99989 -> 1.00000 at 6.93 instead of 6.10 ms a frame). No effect on the CPU.
    trt_cache_dir: where TensorRT keeps its engines and timing cache (default: `<bundle>.trt_cache`
    beside the bundle, never inside it); trt_fp16: let TensorRT use FP16 kernels (FP16 graphs always
    do; INT8 QDQ graphs run INT8 with their own scales).
    threads: ONNX Runtime intra-op threads, 1 .. the CPUs this process may use (default: ONNX
    Runtime's choice); more raises VssEdgeError.
    scheduler: any object with reset() and is_key(FrameInfo) (or path(FrameInfo) for TDNet),
    or a scheduler name ('fixed_interval', 'distortion', 'round_robin'); default: the
    manifest's. interval: a fixed key-frame interval (selects fixed_interval).
    io_binding: use IO binding on the CPU too (always on for CUDA).
    thread_pool: 'per_session' or 'shared' (one ONNX Runtime pool for every graph of every
    bundle in the process; runtime.session.shared_pool_threads).
    budget: the program's compute-budget options (STMG: {"keep_threshold": 0.6, "max_blocks": 3});
    VssEdgeError for an option the method does not have or a value out of range.
    """
    manifest, sessions, scheduler = _open_bundle(bundle, device, threads, scheduler, interval, io_binding,
                                                 thread_pool, trt_cache_dir, trt_fp16, backend, precision,
                                                 agreement_floor, tf32)
    pipe = Pipeline(manifest, sessions, scheduler)
    if budget:
        pipe.program.set_budget(**budget)
    return pipe


def load_streams(bundle: str | Path, streams: int, *, policy=None, workers: int | None = None,
                 device: str = "auto", threads: int | None = None, scheduler: Scheduler | str | None = None,
                 interval: int | None = None, io_binding: bool = False, thread_pool: str = "per_session",
                 budget: dict | None = None, trt_cache_dir: str | Path | None = None,
                 trt_fp16: bool = False, backend: str = "onnxruntime", precision: str | None = None,
                 agreement_floor: float | None = None, tf32: bool = True) -> MultiStream:
    """Check a bundle once and return a MultiStream of `streams` streams on one set of sessions.

    policy: the cross-stream key-frame policy, 'staggered' or 'aligned' (or an object with
    stream_scheduler(scheduler, stream, streams); default: staggered where the scheduler is
    periodic, else aligned: runtime.multistream). workers: threads step_all runs the streams on
    (default min(streams, CPUs)). The other options are load's, for every stream (each stream
    gets its own copy of the scheduler and its own program state).
    """
    manifest, sessions, scheduler = _open_bundle(bundle, device, threads, scheduler, interval, io_binding,
                                                 thread_pool, trt_cache_dir, trt_fp16, backend, precision,
                                                 agreement_floor, tf32)
    multi = MultiStream(manifest, sessions, scheduler, streams, policy=policy, workers=workers)
    for pipe in multi.pipelines if budget else ():
        pipe.program.set_budget(**budget)
    return multi


def _open_bundle(bundle, device, threads, scheduler, interval, io_binding, thread_pool, trt_cache_dir, trt_fp16,
                 backend, precision, agreement_floor, tf32=True):
    """(manifest, sessions, scheduler): what load and load_streams check and open, in this order."""
    check_threads(threads)
    check_backend(backend, precision, device)
    manifest = load_manifest(bundle)
    from vss_edge.runtime.programs import program_for

    program_for(manifest.method)  # unknown method: fail before opening sessions
    if scheduler is None or isinstance(scheduler, str):
        scheduler = choose_scheduler(manifest.scheduler, scheduler, interval)
    sessions = open_sessions(manifest, device=device, threads=threads, io_binding=io_binding,
                             thread_pool=thread_pool, trt_cache_dir=trt_cache_dir, trt_fp16=trt_fp16,
                             backend=backend, precision=precision, agreement_floor=agreement_floor, tf32=tf32)
    providers = {name: getattr(s, "provider", "") for name, s in sessions.items()}
    for warning in tuning_warnings(manifest) + gpu_warnings(manifest, providers):
        logging.getLogger("vss_edge").warning("vss-edge: %s", warning)
    return manifest, sessions, scheduler


__all__ = ["load", "load_streams", "MultiStream", "Pipeline", "FrameResult", "Manifest", "load_manifest", "Scheduler", "FixedInterval",
           "DistortionAware", "FrameInfo", "build_scheduler", "VssEdgeError", "BundleError", "FrameError", "SourceError",
           "OutputError"]
