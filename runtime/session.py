"""One session per graph, on the backend the user chose (torch-free).

Backends (open_sessions dispatches on `backend`, as Polygraphy keeps a runner per backend behind
one contract): "onnxruntime" (GraphSession, below: CPU, CUDA, TensorRT), "openvino" (OpenVINO on
the CPU: runtime.openvino_session) and "auto" (per graph, the fastest of them that keeps the
labels within the user's agreement floor, measured at load: runtime.backend_choice). Every session
has the contract the programs use, run(feeds, host_outputs) -> {output: value}, is checked against
its manifest entry when it opens, and says what runs it: `backend`, `precision` (the float
compute: "f32", "bf16", or "f16" for an FP16 graph) and `provider`. `describe_backends` gives the
record summaries keep.

Provider choice (runtime.providers.choose_providers, then open_sessions tries the plan and
keeps the first provider that really loads). One log line says which and why. On the GPU,
GraphSession.run keeps outputs on the device (OrtValue) unless asked for on the host, so
state and intermediates never leave the GPU between the graphs of a frame.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from vss_edge.runtime.errors import BundleError, VssEdgeError
from vss_edge.runtime.manifest import GraphSpec
from vss_edge.runtime.providers import (CPU, CUDA, DEVICES, DID_NOT_LOAD, PROVIDER_LABELS, TENSORRT,
                                        TensorRTOptions, choose_providers, cuda_driver_devices, providers_for,
                                        trt_cache_dir_for)

log = logging.getLogger("vss_edge")

# ONNX Runtime's type names -> numpy dtype names (the manifest's).
ORT_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(uint8)": "uint8",
    "tensor(int8)": "int8",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(bool)": "bool",
}


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one, e.g. in a container)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def check_threads(threads: int | None) -> None:
    """VssEdgeError unless threads is None (ONNX Runtime's choice) or 1 .. usable_cpus().

    More intra-op threads than CPUs only adds contention; a large number also reserves memory
    per thread (100000 grew to 16 GB and stalled a 2-core machine), so it is refused here.
    """
    if threads is None:
        return
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise VssEdgeError(f"threads must be a positive integer, got {threads!r}")
    cpus = usable_cpus()
    if threads > cpus:
        raise VssEdgeError(f"threads {threads} is more than the {cpus} CPU(s) this process may use; "
                           f"choose 1 to {cpus}")


BACKENDS = ("onnxruntime", "openvino", "auto")
PRECISIONS = ("f32", "bf16")  # the float compute the user allows (OpenVINO's INFERENCE_PRECISION_HINT names)


THREAD_POOLS = ("shared", "per_session")
_shared_pool_threads: int | None = None  # intra-op threads of the process-wide pool, once made


def shared_pool_threads(threads: int | None) -> int | None:
    """Make ONNX Runtime's process-wide intra-op pool of `threads` (None: the usable CPUs) if
    there is none yet, and return its size; None where this onnxruntime cannot make one.

    The pool is global by ONNX Runtime's design: made once, never resized, and once it exists
    ONNX Runtime refuses any session with a pool of its own ("use_per_session_threads must be
    false when using a global thread pool"), in this process, ours or not. So the first
    load(thread_pool='shared') in a process decides for the whole process: every later session
    we open shares the pool, at its size; opt in only where the process's other ONNX Runtime
    users set use_per_session_threads=False too.
    """
    global _shared_pool_threads
    if _shared_pool_threads is None:
        if not hasattr(ort, "set_global_thread_pool_sizes"):
            return None
        try:
            ort.set_global_thread_pool_sizes(threads or usable_cpus(), 1)
        except Exception:  # made already by other code in this process: its size is unknown
            return None
        _shared_pool_threads = threads or usable_cpus()
    return _shared_pool_threads


_LEVELS = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
           "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED}


def graph_optimization(spec: GraphSpec) -> str:
    """The optimisation level a graph opens at: its manifest entry's, else "all" ("extended" for
    an INT8 graph from before calibration measured it: see runtime.manifest.OPTIMIZATIONS)."""
    if spec.optimization is not None:
        return spec.optimization
    return "extended" if spec.precision == "int8" else "all"


def session_options(threads: int | None, quiet: bool, spin: bool = True,
                    optimization: str = "all", shared_pool: bool = False) -> ort.SessionOptions:
    """The runtime's ORT session options: graph optimisation `optimization` ("all": with the
    layout transforms, "extended": without), `threads` intra-op threads and 1 inter-op
    (shared_pool: the global pool's), quiet silences ORT's own log.

    spin: the intra-op workers spin between the ops of a run (a graph of many small ops hands work
    to them hundreds of times a run) and stop at its end (session.force_spinning_stop), so an idle
    session's workers never take the CPU from the next graph or from the host's work. Measured,
    GSVNet 512x1024 interval 5, 2 threads, interleaved in one process: propagation graph 9.1 vs
    11.6 ms (INT8) and 13.5 vs 16.9 ms (FP32) without spinning; spinning without the stop made every
    frame about twice as slow. spin=False: no spinning at all (TDNet's path graphs: one large graph
    a frame, measured 4% slower with spinning, 413 vs 398 ms).
    """
    opts = ort.SessionOptions()
    opts.graph_optimization_level = _LEVELS[optimization]
    if shared_pool:  # threads and spinning are the global pool's
        opts.use_per_session_threads = False
    elif threads:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    if not shared_pool:
        if spin:
            opts.add_session_config_entry("session.force_spinning_stop", "1")
        else:
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if quiet:
        opts.log_severity_level = 4  # a failed CUDA probe must not spray errors
    return opts


class GraphSession:
    """An ONNX Runtime session for one bundle graph, checked against its manifest entry.

    backend "onnxruntime"; precision: the float compute, the bundle's own ("f32", "f16" for an
    FP16 graph; an INT8 graph's float ops run in f32); provider: the execution provider that runs it.
    """

    backend = "onnxruntime"

    def __init__(self, path: Path, spec: GraphSpec, providers: list, threads: int | None = None,
                 io_binding: bool = False, quiet: bool = False, shared_pool: bool = False):
        self.spec = spec
        self.name = spec.name
        self.shared_pool = shared_pool
        try:
            self.session = ort.InferenceSession(
                str(path), sess_options=session_options(
                    threads, quiet, spin=spec.role != "path_net", optimization=graph_optimization(spec),
                    shared_pool=shared_pool),
                providers=providers
            )
        except Exception as e:  # onnxruntime raises several unrelated types for bad files
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise BundleError(f"graph file '{path}' cannot be loaded by ONNX Runtime: {first}") from None
        self.provider = self.session.get_providers()[0]
        self.precision = "f16" if spec.precision == "fp16" else "f32"
        self.device = "cuda" if self.provider in (CUDA, TENSORRT) else "cpu"
        self.io_binding = io_binding or self.device == "cuda"
        self._check_against_manifest(path)
        self.output_names = [o.name for o in spec.outputs]

    def _check_against_manifest(self, path: Path) -> None:
        def describe(values):
            return {v.name: (tuple(v.shape), ORT_DTYPES.get(v.type, v.type)) for v in values}

        for kind, actual, declared in (
            ("inputs", describe(self.session.get_inputs()), self.spec.inputs),
            ("outputs", describe(self.session.get_outputs()), self.spec.outputs),
        ):
            expected = {t.name: (tuple(t.shape), t.dtype) for t in declared}
            if actual != expected:
                raise BundleError(
                    f"graph file '{path}': its {kind} {actual} do not match the manifest {expected}"
                )

    def run(self, feeds: dict, host_outputs: tuple[str, ...] = ()) -> dict:
        """Run the graph; returns name -> value.

        Without IO binding values are numpy arrays. With it, outputs named in
        host_outputs come back as numpy arrays and the others stay where the
        session computed them (OrtValue), ready to feed the next graph.
        """
        if not self.io_binding:
            values = self.session.run(self.output_names, feeds)
            return dict(zip(self.output_names, values))
        binding = self.session.io_binding()
        for name, value in feeds.items():
            if isinstance(value, np.ndarray):
                binding.bind_cpu_input(name, value)
            else:
                binding.bind_ortvalue_input(name, value)
        for name in self.output_names:
            if name in host_outputs:
                binding.bind_output(name, "cpu")
            else:
                binding.bind_output(name, self.device, 0)
        self.session.run_with_iobinding(binding)
        out = {}
        for name, value in zip(self.output_names, binding.get_outputs()):
            out[name] = value.numpy() if name in host_outputs else value
        return out

    def run_on_host(self, feeds: dict) -> dict[str, np.ndarray]:
        """Every output as numpy, feeds cast to the session's float input dtypes (what `check` compares)."""
        cast = {}
        for inp in self.session.get_inputs():
            if inp.name not in feeds:
                raise VssEdgeError(f"graph '{self.name}': recorded feeds lack input '{inp.name}'")
            value = np.asarray(feeds[inp.name])
            want = {"tensor(float)": np.float32, "tensor(float16)": np.float16}.get(inp.type)
            cast[inp.name] = value.astype(want) if want is not None and value.dtype != want else value
        names = [o.name for o in self.session.get_outputs()]
        return dict(zip(names, self.session.run(names, cast)))


def check_backend(backend: str, precision: str | None, device: str = "auto") -> None:
    """VssEdgeError unless backend, precision and device go together: a known backend and precision;
    bf16 needs OpenVINO (or auto, which may choose it); OpenVINO and auto run on the CPU."""
    if backend not in BACKENDS:
        raise VssEdgeError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if precision is not None and precision not in PRECISIONS:
        raise VssEdgeError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if backend == "onnxruntime" and precision == "bf16":
        raise VssEdgeError("precision bf16 needs backend 'openvino' (or 'auto'): ONNX Runtime runs the bundle's "
                           "own precision")
    if backend != "onnxruntime" and device not in ("auto", "cpu"):
        raise VssEdgeError(f"backend '{backend}' runs on the CPU: device must be 'auto' or 'cpu', got {device!r}")


def describe_backends(sessions: dict) -> dict:
    """What runs each graph, for summaries: {"backend": one line ("onnxruntime f32", "openvino bf16",
    or per graph "keyframe: openvino bf16, flow: onnxruntime f32"), "graphs": {graph: {"backend",
    "precision", "graph_precision" (the bundle's: fp32 / int8 / fp16), "provider"} (+ "auto": what
    backend='auto' measured, where it chose)}}."""
    graphs = {}
    for name, s in sessions.items():
        entry = {"backend": s.backend, "precision": s.precision, "graph_precision": s.spec.precision,
                 "provider": s.provider}
        if getattr(s, "choice", None) is not None:
            entry["auto"] = s.choice
        graphs[name] = entry
    def kind(g):  # an INT8 graph: int8 (its float ops f32), or int8+bf16 on OpenVINO at bf16
        precision = g["precision"] if g["graph_precision"] != "int8" else (
            "int8" if g["precision"] == "f32" else f"int8+{g['precision']}")
        return f"{g['backend']} {precision}"

    kinds = {kind(g) for g in graphs.values()}
    line = next(iter(kinds)) if len(kinds) == 1 else ", ".join(f"{n}: {kind(g)}" for n, g in graphs.items())
    if any("auto" in g for g in graphs.values()):
        line = "auto: " + line
    return {"backend": line, "graphs": graphs}


def open_sessions(manifest, device: str = "auto", threads: int | None = None,
                  io_binding: bool = False, thread_pool: str = "per_session",
                  trt_cache_dir: str | Path | None = None, trt_fp16: bool = False, backend: str = "onnxruntime",
                  precision: str | None = None, agreement_floor: float | None = None, tf32: bool = True) -> dict:
    """Open every graph of a bundle on `backend`: 'onnxruntime' (below), 'openvino' (the CPU, at
    `precision` 'f32' (default) or 'bf16': runtime.openvino_session) or 'auto' (per graph the fastest
    of them whose labels keep `agreement_floor`: runtime.backend_choice; precision 'bf16' lets it
    choose bf16, default 'f32' does not). One log line says what runs and why.

    onnxruntime: on the chosen device ('auto', 'cuda', 'tensorrt' or 'cpu').

    The plan comes from choose_providers; each GPU provider in it is tried by opening every graph
    with it and kept only if every session kept it (a build can list a provider whose libraries
    are missing: ONNX Runtime then quietly runs the graph on the CPU). One log line says which
    provider runs and why not the faster ones. tensorrt: engines and timing caches in
    trt_cache_dir (default `<bundle>.trt_cache` beside the bundle; refused inside it), FP16
    kernels with trt_fp16.
    thread_pool (CPU): 'per_session' (each graph its own intra-op pool, spinning only within a
    run, TDNet's paths not at all: session_options) or 'shared' (ONNX Runtime's process-wide pool,
    see shared_pool_threads; where it cannot be had at this size, per-session pools, said in the
    log line).
    """
    if device not in DEVICES:
        raise VssEdgeError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    if thread_pool not in THREAD_POOLS:
        raise VssEdgeError(f"thread_pool must be one of {', '.join(THREAD_POOLS)}, got {thread_pool!r}")
    check_threads(threads)
    check_backend(backend, precision, device)
    if backend == "openvino":
        return _open_on_openvino(manifest, precision or "f32", threads)
    if backend == "auto":
        from vss_edge.runtime.backend_choice import choose_backends

        return choose_backends(manifest, precision or "f32", threads, agreement_floor, thread_pool=thread_pool)
    trt_folder = trt_cache_dir_for(manifest.root, trt_cache_dir) if device == "tensorrt" else None
    plan = choose_providers(device, ort.get_available_providers(), device != "cpu" and cuda_driver_devices() > 0)
    notes = list(plan.notes)
    for provider in plan.candidates:
        if provider == CPU:
            break
        sessions = _open_on_gpu(manifest, provider, threads, io_binding, trt_folder, trt_fp16, tf32)
        if sessions is not None:
            detail = notes + ([f"engines cached in {trt_folder}"] if provider == TENSORRT else []) + (
                [] if tf32 else ["TF32 off: full float32"])
            log.info("vss-edge: running on %s%s", provider, f" ({'; '.join(detail)})" if detail else "")
            return sessions
        notes.append(f"{PROVIDER_LABELS[provider]}: {DID_NOT_LOAD[provider]}")
    if plan.required is not None:
        label = PROVIDER_LABELS[plan.required]
        why = "; ".join(n.removeprefix(f"{label}: ") for n in notes if n.startswith(f"{label}: "))
        raise VssEdgeError(f"--device {device}: the {label} provider cannot run here: {why}")
    pool, shared = "per-session thread pools", False
    if thread_pool == "shared" or _shared_pool_threads is not None:  # once made, every session must use it
        size = shared_pool_threads(threads)
        shared = size is not None
        if not shared:
            pool = "per-session thread pools (this onnxruntime cannot make a process-wide one)"
        else:
            pool = f"the process-wide pool of {size} threads"
            if threads not in (None, size):
                pool += f" (made earlier in this process; threads={threads} does not resize it)"

    sessions = {
        name: GraphSession(manifest.graph_path(name), spec, [CPU], threads, io_binding, shared_pool=shared)
        for name, spec in manifest.graphs.items()
    }  # opened before logging: a bad bundle gives its error alone
    log.info("vss-edge: running on CPUExecutionProvider (%s)", "; ".join(notes + [pool]))
    return sessions


def _open_on_openvino(manifest, precision: str, threads: int | None) -> dict:
    """Every graph on OpenVINO's CPU plugin at `precision`, and the log line saying so."""
    from vss_edge.runtime.cpu import cpu_bf16_support
    from vss_edge.runtime.openvino_session import open_openvino_sessions, openvino_version

    sessions = open_openvino_sessions(manifest, precision, threads)
    ran = sorted({s.precision for s in sessions.values()})
    if precision == "f32":
        why = "the bundle's FP32 kept; precision='bf16' (--precision bf16) lets it run bfloat16"
    elif ran == ["bf16"]:
        have = cpu_bf16_support()
        flags = [n for n, k in (("AVX-512 BF16", "avx512_bf16"), ("AMX-BF16", "amx_bf16")) if have[k]]
        why = "bf16 asked for" + (f"; this CPU has {' and '.join(flags)}" if flags else "")
    else:
        why = f"bf16 asked for, but OpenVINO compiled {', '.join(ran)} here (no bf16 arithmetic on this CPU?)"
    log.info("vss-edge: running on OpenVINO %s CPU, precision %s (%s)", openvino_version(), "/".join(ran), why)
    return sessions


def _open_on_gpu(manifest, provider: str, threads, io_binding: bool, trt_folder: Path | None,
                 trt_fp16: bool, tf32: bool = True) -> dict[str, GraphSession] | None:
    """Every graph opened on `provider` (CUDA or TensorRT), or None if a session did not keep it."""
    tensorrt, made = None, False
    if provider == TENSORRT:
        made = not trt_folder.exists()
        try:
            trt_folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise VssEdgeError(f"cannot create the TensorRT cache folder '{trt_folder}': {e.strerror or e}; "
                               f"choose another (trt_cache_dir, --trt-cache)") from None
        tensorrt = TensorRTOptions(trt_folder, trt_fp16)
    sessions = {}
    with contextlib.redirect_stdout(io.StringIO()):  # ONNX Runtime prints its library misses and fallbacks
        if hasattr(ort, "preload_dlls"):
            try:
                ort.preload_dlls()
            except Exception:  # missing CUDA/cuDNN wheels: the sessions below tell
                pass
        for name, spec in manifest.graphs.items():
            sessions[name] = GraphSession(manifest.graph_path(name), spec,
                                          providers_for(provider, spec.precision, tensorrt, tf32), threads, io_binding,
                                          quiet=True)
            if sessions[name].provider != provider:
                if made:
                    with contextlib.suppress(OSError):
                        trt_folder.rmdir()  # only if still empty: leave nothing behind for a provider that did not load
                return None
    return sessions


def timed(fn, *args, **kwargs):
    """(result, milliseconds) of fn(*args, **kwargs)."""
    t0 = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, (time.perf_counter() - t0) * 1000.0
