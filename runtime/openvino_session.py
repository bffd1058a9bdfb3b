"""OpenVINO (CPU) sessions: the GraphSession contract on OpenVINO's runtime (torch-free; optional).

`load(bundle, backend="openvino", precision="f32"|"bf16")` opens every graph of a bundle here
instead of on ONNX Runtime. OpenVINO reads the bundle's ONNX files as they are (no conversion
step, nothing written), and each `OpenVINOSession` keeps the contract the programs rely on:
`run(feeds, host_outputs) -> {output name: numpy array}` for every output the manifest lists,
checked against the manifest (names, shapes, dtypes) when it opens, safe to call from several
threads (MultiStream: one infer request per thread). Outputs are always host numpy arrays (the
CPU is the device), copied out of OpenVINO's buffers, so a state carried to the next frame is
never overwritten by a later run.

Precision is the user's and is never lowered silently: `f32` (the default) is OpenVINO's
INFERENCE_PRECISION_HINT f32, the bundle's FP32 as it is; `bf16` lets OpenVINO run the float
compute in bfloat16 (its own default on CPUs with AVX-512 BF16 or AMX, where it is much faster and
agrees with FP32 on most but not all pixels: `vss-edge check --candidate-precision bf16` says how
many). INT8 bundles (QDQ) run their quantised convolutions in int8 with either hint (OpenVINO reads
the Q/DQ pairs as its FakeQuantize). Each session reports the precision OpenVINO really compiled
to (`precision`), read back from the compiled model.

INT8 graphs are compiled once in a child process first (`probe_compile`): OpenVINO 2026.4.1's CPU
plugin crashes the process (SIGSEGV in compile_model) on one QDQ pattern, a Concat of dequantized
inputs followed by two QuantizeLinear -> DequantizeLinear pairs in a row (with or without a
per-channel BatchNormalization / Mul + Add between them), which ONNX Runtime's quantize_static
writes for an unfused BatchNormalization after a Concat (SwiftNet's pyramid pooling). vss-edge's
own calibration no longer writes it (calibration.int8_rewrites turns such a BatchNormalization
into a 1x1 Conv), but a bundle quantised elsewhere may: such a graph gives BundleError, not a crash.

Without the openvino package, choosing this backend raises VssEdgeError in one line saying how to
install it (`pip install 'vss-edge[openvino]'`).
"""
from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np

from vss_edge.runtime.errors import BundleError, VssEdgeError
from vss_edge.runtime.manifest import GraphSpec

PRECISIONS = ("f32", "bf16")
INSTALL = "pip install 'vss-edge[openvino]'"
BACKEND = "openvino"


def import_openvino():
    """The openvino module, or VssEdgeError in one line saying how to install it."""
    try:
        import openvino
    except ImportError:
        raise VssEdgeError(f"backend 'openvino' needs the openvino package, which is not installed here: "
                           f"{INSTALL}") from None
    return openvino


def openvino_version() -> str | None:
    """The installed OpenVINO's version string, None if it is not installed."""
    try:
        import openvino
    except ImportError:
        return None
    return openvino.get_version().split("-")[0]


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise VssEdgeError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")


_core = None
_core_lock = threading.Lock()


def core():
    """The process's one openvino.Core (it caches plugins; made on first use)."""
    global _core
    with _core_lock:
        if _core is None:
            _core = import_openvino().Core()
        return _core


def compile_options(precision: str, threads: int | None) -> dict:
    """OpenVINO CPU properties for one graph: the precision hint, latency mode (one stream: one
    frame at a time, as ONNX Runtime's sessions run), and `threads` inference threads."""
    options = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY"}
    if threads:
        options["INFERENCE_NUM_THREADS"] = int(threads)
    return options


_PROBE = """
import sys, openvino as ov
core = ov.Core()
core.compile_model(core.read_model(sys.argv[1]), "CPU", {"INFERENCE_PRECISION_HINT": sys.argv[2]})
"""
_probed: dict[tuple[str, str], str | None] = {}


def probe_compile(path: Path, spec: GraphSpec, precision: str) -> str | None:
    """Compile the graph in a child process: None if OpenVINO compiles it, else why not (the signal
    that killed the child, or its last error line). Once per graph file (by sha256) and precision in
    a process."""
    key = (spec.sha256, precision)
    if key not in _probed:
        try:
            done = subprocess.run([sys.executable, "-c", _PROBE, str(path), precision], capture_output=True,
                                  text=True, timeout=1800)
        except subprocess.TimeoutExpired:
            _probed[key] = "its compilation did not end within 30 minutes"
        else:
            if done.returncode < 0:
                _probed[key] = f"OpenVINO crashed compiling it ({signal.Signals(-done.returncode).name})"
            elif done.returncode:
                lines = done.stderr.strip().splitlines()
                _probed[key] = f"OpenVINO cannot compile it: {lines[-1] if lines else 'exit ' + str(done.returncode)}"
            else:
                _probed[key] = None
    return _probed[key]


class OpenVINOSession:
    """One bundle graph compiled by OpenVINO for the CPU, checked against its manifest entry.

    Attributes as GraphSession's: spec, name, output_names, device ("cpu"), provider (what the
    log line names), io_binding (False); and backend ("openvino"), precision (the compiled model's
    inference precision, "f32" or "bf16"), requested_precision.
    """

    backend = BACKEND
    device = "cpu"
    io_binding = False

    def __init__(self, path: Path, spec: GraphSpec, precision: str = "f32", threads: int | None = None):
        check_precision(precision)
        ov = import_openvino()
        self.spec, self.name = spec, spec.name
        self.requested_precision = precision
        if spec.precision == "int8":  # a crash in compile_model would take the whole process down
            problem = probe_compile(path, spec, precision)
            if problem is not None:
                raise BundleError(f"INT8 graph file '{path}': {problem} (OpenVINO {openvino_version()}); run this "
                                  f"bundle on ONNX Runtime (backend 'onnxruntime'), or calibrate it again with this "
                                  f"vss-edge (its QDQ graphs compile on OpenVINO)")
        try:
            model = core().read_model(str(path))
            self.compiled = core().compile_model(model, "CPU", compile_options(precision, threads))
        except Exception as e:  # OpenVINO raises RuntimeError subclasses for files and ops it cannot take
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise BundleError(f"graph file '{path}' cannot be compiled by OpenVINO {ov.get_version()}: {first}") \
                from None
        hint = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        self.precision = {"f32": "f32", "bf16": "bf16"}.get(hint.get_type_name(), hint.get_type_name())
        self.provider = f"OpenVINO CPU ({self.precision})"
        self._check_against_manifest(path)
        self.output_names = [o.name for o in spec.outputs]
        self._ports = {name: self.compiled.output(name) for name in self.output_names}
        self._local = threading.local()

    def _check_against_manifest(self, path: Path) -> None:
        def describe(port):
            shape = port.get_partial_shape()
            return (tuple(shape.to_shape()) if shape.is_static else str(shape),
                    np.dtype(port.get_element_type().to_dtype()).name)

        for kind, ports, declared in (("inputs", self.compiled.inputs, self.spec.inputs),
                                      ("outputs", self.compiled.outputs, self.spec.outputs)):
            # a tensor can have several names in OpenVINO (one per ONNX name that aliases it): match by any
            named = {t.name: next((describe(p) for p in ports if t.name in p.get_names()), None) for t in declared}
            expected = {t.name: (tuple(t.shape), t.dtype) for t in declared}
            if named != expected or len(ports) != len(declared):
                actual = {sorted(p.get_names())[0] if p.get_names() else "?": describe(p) for p in ports}
                raise BundleError(f"graph file '{path}': its {kind} as OpenVINO reads them {actual} do not match "
                                  f"the manifest {expected}")

    def _request(self):
        request = getattr(self._local, "request", None)
        if request is None:  # an infer request is not thread-safe: one per calling thread
            request = self._local.request = self.compiled.create_infer_request()
        return request

    def run(self, feeds: dict, host_outputs: tuple[str, ...] = ()) -> dict:
        """Run the graph; returns output name -> numpy array (always on the host, owned copies)."""
        results = self._request().infer({name: np.asarray(value) for name, value in feeds.items()},
                                        share_inputs=False, share_outputs=False)
        return {name: results[self._ports[name]] for name in self.output_names}

    def run_on_host(self, feeds: dict) -> dict[str, np.ndarray]:
        """Every output as numpy, feeds cast to the graph's float input dtypes (what `check` compares)."""
        return self.run(cast_feeds(feeds, self.spec, self.name))


def cast_feeds(feeds: dict, spec: GraphSpec, graph: str) -> dict:
    """feeds with float inputs cast to the manifest's float dtype (float32 / float16); VssEdgeError
    if one of the graph's inputs is missing."""
    cast = {}
    for tensor in spec.inputs:
        if tensor.name not in feeds:
            raise VssEdgeError(f"graph '{graph}': recorded feeds lack input '{tensor.name}'")
        value = np.asarray(feeds[tensor.name])
        if tensor.dtype in ("float32", "float16") and value.dtype != tensor.dtype:
            value = value.astype(tensor.dtype)
        cast[tensor.name] = value
    return cast


def open_openvino_sessions(manifest, precision: str = "f32", threads: int | None = None,
                           graphs=None) -> dict[str, OpenVINOSession]:
    """Every graph of the bundle (or those named in `graphs`) compiled by OpenVINO for the CPU at
    `precision`. VssEdgeError without openvino; BundleError for a graph it cannot compile."""
    check_precision(precision)
    import_openvino()
    names = list(manifest.graphs) if graphs is None else list(graphs)
    return {name: OpenVINOSession(manifest.graph_path(name), manifest.graphs[name], precision, threads)
            for name in names}
