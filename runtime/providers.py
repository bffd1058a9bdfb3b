"""ONNX Runtime's execution providers: which to try for a device, and their options (torch-free).

choose_providers plans what runtime.session.open_sessions tries: CUDA only when it really loads
(the build has the CUDA provider, an NVIDIA driver answers, and a session created with it keeps
it), else the CPU; TensorRT only when asked for (device="tensorrt"), with CUDA, then the CPU, as
the fallbacks. TensorRT's engines and timing caches live beside the bundle, never inside it.
"""
from __future__ import annotations

import ctypes
from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort

from vss_edge.runtime.errors import VssEdgeError

DEVICES = ("auto", "cuda", "tensorrt", "cpu")
TENSORRT, CUDA, CPU = "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"
PROVIDER_LABELS = {TENSORRT: "TensorRT", CUDA: "CUDA"}
_NO_DRIVER = "no NVIDIA GPU or driver found"
DID_NOT_LOAD = {CUDA: "the CUDA provider did not load (CUDA 12/13 or cuDNN 9 libraries missing?)",
                 TENSORRT: "the TensorRT provider did not load (TensorRT 10 libraries missing, or not on "
                           "LD_LIBRARY_PATH?)"}


def cuda_driver_devices() -> int:
    """Number of CUDA devices the driver reports; 0 if there is no driver."""
    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return 0
    count = ctypes.c_int(0)
    if lib.cuInit(0) != 0 or lib.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return 0
    return count.value


def cuda_unavailable_reason() -> str | None:
    """Why the CUDA provider cannot be used here, or None if it may be tried."""
    if CUDA not in ort.get_available_providers():
        return "this onnxruntime build has no CUDA provider"
    if cuda_driver_devices() == 0:
        return _NO_DRIVER
    return None


@dataclass(frozen=True)
class ProviderPlan:
    """What open_sessions tries, in order: `candidates` (execution provider names, the CPU last
    unless the device is required), `notes` (why a faster provider is not among them, one
    "CUDA: why" each) and `required` (the provider that must load, else VssEdgeError)."""

    candidates: tuple[str, ...]
    notes: tuple[str, ...] = ()
    required: str | None = None


def choose_providers(device: str, available, driver_ok: bool) -> ProviderPlan:
    """The providers to try for `device`, given the ones this onnxruntime build reports
    (ort.get_available_providers()) and whether an NVIDIA driver answers.

    cpu: the CPU. auto: CUDA, then the CPU. cuda: CUDA, required. tensorrt: TensorRT (with CUDA
    beside it for the nodes TensorRT does not take), then CUDA, then the CPU. A provider the build
    lacks, or any GPU provider without a driver, is left out with a note; whether a listed one
    really loads is for open_sessions to find out (a build can list providers whose libraries are
    missing).
    """
    if device not in DEVICES:
        raise VssEdgeError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    if device == "cpu":
        return ProviderPlan((CPU,), ("CPU requested",))
    wanted = {"auto": (CUDA,), "cuda": (CUDA,), "tensorrt": (TENSORRT, CUDA)}[device]
    candidates, notes = [], []
    for provider in wanted:
        if provider not in available:
            notes.append(f"{PROVIDER_LABELS[provider]}: this onnxruntime build has no {PROVIDER_LABELS[provider]} provider")
        elif not driver_ok:
            notes.append(f"{PROVIDER_LABELS[provider]}: {_NO_DRIVER}")
        else:
            candidates.append(provider)
    if not driver_ok and len(wanted) > 1 and all(p in available for p in wanted):
        notes = [f"{' and '.join(PROVIDER_LABELS[p] for p in wanted)}: {_NO_DRIVER}"]
    return ProviderPlan(tuple(candidates) + (CPU,), tuple(notes), CUDA if device == "cuda" else None)


@dataclass(frozen=True)
class TensorRTOptions:
    """TensorRT settings: engines and timing caches in `cache_dir` (never inside the bundle, whose
    files are hashed), FP16 kernels when `fp16` (and always for FP16 graphs). INT8 graphs (static
    QDQ) get INT8 kernels with the scales of their own Q/DQ nodes: ONNX Runtime's TensorRT provider
    takes no calibration table for QDQ models."""

    cache_dir: Path
    fp16: bool = False

    def provider_options(self, precision: str) -> dict:
        return {"device_id": 0,
                "trt_engine_cache_enable": True, "trt_engine_cache_path": str(self.cache_dir),
                "trt_timing_cache_enable": True, "trt_timing_cache_path": str(self.cache_dir),
                "trt_fp16_enable": self.fp16 or precision == "fp16",
                "trt_int8_enable": precision == "int8"}


def default_trt_cache_dir(bundle_dir: Path) -> Path:
    """`<bundle>.trt_cache`, beside the bundle folder."""
    bundle_dir = Path(bundle_dir).resolve()
    return bundle_dir.with_name(bundle_dir.name + ".trt_cache")


def trt_cache_dir_for(bundle_dir: Path, cache_dir: str | Path | None) -> Path:
    """The TensorRT cache folder to use (default_trt_cache_dir if None); VssEdgeError if it is the
    bundle folder or inside it."""
    bundle_dir = Path(bundle_dir).resolve()
    folder = default_trt_cache_dir(bundle_dir) if cache_dir is None else Path(cache_dir).resolve()
    if folder == bundle_dir or bundle_dir in folder.parents:
        raise VssEdgeError(f"TensorRT cache folder '{folder}' is inside the bundle '{bundle_dir}': choose one "
                           f"outside it (the bundle's files are hashed; default: {default_trt_cache_dir(bundle_dir)})")
    return folder


def providers_for(provider: str, precision: str = "fp32", tensorrt: TensorRTOptions | None = None,
                  tf32: bool = True) -> list:
    """The providers list of ort.InferenceSession for one graph of `precision` on `provider`.
    tf32: the CUDA provider's use_tf32 (its default, on: on Ampere and later, convolution and
    matrix-product inputs rounded to 10 mantissa bits); False: full float32."""
    cuda = (CUDA, {"device_id": 0} if tf32 else {"device_id": 0, "use_tf32": "0"})
    if provider == TENSORRT:
        if tensorrt is None:
            raise ValueError("providers_for(TensorrtExecutionProvider) needs TensorRTOptions")
        return [(TENSORRT, tensorrt.provider_options(precision)), cuda, CPU]
    if provider == CUDA:
        return [cuda, CPU]
    return [CPU]


def gpu_warnings(manifest, providers: dict[str, str]) -> list[str]:
    """What the bundle loses on the CUDA provider (graph name -> the provider it runs on), one line each.

    Measured on an NVIDIA H200 (benchmarks/results/gpu_nvidia_h200*.md): INT8 QDQ graphs run slower
    than FP32 on the CUDA provider (it has no int8 convolutions; its DequantizeLinear nodes fall back
    to the CPU with copies), and a host label step (label_path 'host') dominates a GPU frame.
    """
    on_cuda = sorted(name for name, provider in providers.items() if provider == CUDA)
    on_gpu = [name for name, provider in providers.items() if provider in (CUDA, TENSORRT)]
    warnings = []
    int8 = [name for name in on_cuda if manifest.graphs[name].precision == "int8"]
    if int8:
        warnings.append(f"INT8 graph(s) {', '.join(int8)} run on the CUDA provider, which has no int8 convolutions "
                        f"(its DequantizeLinear nodes fall back to the CPU): slower than FP32 there; on a GPU use the "
                        f"FP32 or FP16 bundle, or device='tensorrt'")
    if on_gpu and manifest.labels_on_host:
        warnings.append("this bundle computes its labels on the host (exported with label_path 'host', the faster "
                        "choice on a CPU): on a GPU that step dominates each frame (MPVSS R50 480x853 on an H200: "
                        "191 ms a frame, 9.8 ms with label_path 'graph'); export it with --label-path graph for GPUs")
    return warnings
