"""The execution-provider choice: auto / cuda / tensorrt / cpu against the provider lists ONNX Runtime
builds report (no GPU needed), the TensorRT options and cache folder, and the real fallback on this
machine when TensorRT is asked for."""
from __future__ import annotations

import logging

import pytest

from vss_edge import runtime
from vss_edge.runtime.errors import VssEdgeError
from vss_edge.runtime.providers import (CPU, CUDA, TENSORRT, ProviderPlan, TensorRTOptions, choose_providers,
                                        default_trt_cache_dir, providers_for, trt_cache_dir_for)

# What ort.get_available_providers() says in the builds we meet: onnxruntime-gpu (1.31.1 here, with or
# without the TensorRT libraries installed: it lists TensorRT either way), a CUDA-only build, the CPU wheel.
GPU_BUILD = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
CUDA_BUILD = ["CUDAExecutionProvider", "CPUExecutionProvider"]
CPU_BUILD = ["CPUExecutionProvider"]


def test_cpu_is_the_cpu_whatever_the_build():
    for available in (GPU_BUILD, CUDA_BUILD, CPU_BUILD):
        for driver_ok in (True, False):
            assert choose_providers("cpu", available, driver_ok) == ProviderPlan((CPU,), ("CPU requested",))


def test_auto_tries_cuda_only_where_the_build_has_it_and_a_driver_answers():
    assert choose_providers("auto", GPU_BUILD, True) == ProviderPlan((CUDA, CPU))  # TensorRT only when asked
    assert choose_providers("auto", CUDA_BUILD, True) == ProviderPlan((CUDA, CPU))
    assert choose_providers("auto", GPU_BUILD, False) == ProviderPlan(
        (CPU,), ("CUDA: no NVIDIA GPU or driver found",))
    assert choose_providers("auto", CPU_BUILD, True) == ProviderPlan(
        (CPU,), ("CUDA: this onnxruntime build has no CUDA provider",))


def test_cuda_is_required():
    assert choose_providers("cuda", GPU_BUILD, True) == ProviderPlan((CUDA, CPU), (), CUDA)
    plan = choose_providers("cuda", CPU_BUILD, True)
    assert plan.required == CUDA and plan.candidates == (CPU,)


def test_tensorrt_falls_back_to_cuda_then_cpu():
    assert choose_providers("tensorrt", GPU_BUILD, True) == ProviderPlan((TENSORRT, CUDA, CPU))
    assert choose_providers("tensorrt", CUDA_BUILD, True) == ProviderPlan(
        (CUDA, CPU), ("TensorRT: this onnxruntime build has no TensorRT provider",))
    assert choose_providers("tensorrt", GPU_BUILD, False) == ProviderPlan(
        (CPU,), ("TensorRT and CUDA: no NVIDIA GPU or driver found",))
    assert choose_providers("tensorrt", CPU_BUILD, False) == ProviderPlan(
        (CPU,), ("TensorRT: this onnxruntime build has no TensorRT provider",
                 "CUDA: this onnxruntime build has no CUDA provider"))


def test_an_unknown_device_is_refused():
    with pytest.raises(VssEdgeError, match="device must be one of auto, cuda, tensorrt, cpu, got 'gpu'"):
        choose_providers("gpu", GPU_BUILD, True)


def test_providers_for_each_graph(tmp_path):
    trt = TensorRTOptions(tmp_path / "cache")
    fp32 = providers_for(TENSORRT, "fp32", trt)
    assert [p if isinstance(p, str) else p[0] for p in fp32] == [TENSORRT, CUDA, CPU]
    options = fp32[0][1]
    assert options["trt_engine_cache_enable"] and options["trt_timing_cache_enable"]
    assert options["trt_engine_cache_path"] == options["trt_timing_cache_path"] == str(tmp_path / "cache")
    assert not options["trt_fp16_enable"] and not options["trt_int8_enable"]
    assert providers_for(TENSORRT, "fp16", trt)[0][1]["trt_fp16_enable"]  # FP16 graphs take FP16 kernels
    assert TensorRTOptions(tmp_path, fp16=True).provider_options("fp32")["trt_fp16_enable"]
    int8 = providers_for(TENSORRT, "int8", trt)[0][1]  # QDQ: TensorRT reads the Q/DQ scales, no table
    assert int8["trt_int8_enable"] and "trt_int8_calibration_table_name" not in int8
    assert providers_for(CUDA) == [(CUDA, {"device_id": 0}), CPU]
    assert providers_for(CPU) == [CPU]
    # TF32 off (load(..., tf32=False), --no-tf32): the CUDA provider in full float32, also as TensorRT's fallback
    assert providers_for(CUDA, tf32=False) == [(CUDA, {"device_id": 0, "use_tf32": "0"}), CPU]
    assert providers_for(TENSORRT, "fp32", trt, tf32=False)[1] == (CUDA, {"device_id": 0, "use_tf32": "0"})
    assert providers_for(CPU, tf32=False) == [CPU]


def test_no_tf32_reaches_load_from_the_cli():
    from vss_edge.cli import _load_options, build_parser

    args = build_parser().parse_args(["run", "b", "v", "--out", "o", "--no-tf32"])
    assert _load_options(args)["tf32"] is False
    assert _load_options(build_parser().parse_args(["run", "b", "v", "--out", "o"]))["tf32"] is True
    from vss_edge.demo_weights import DEMO_BUNDLE

    pipe = runtime.load(DEMO_BUNDLE, device="cpu", tf32=False)  # no effect on the CPU
    assert pipe.device == "cpu"


def test_trt_cache_folder_is_beside_the_bundle_never_inside(tmp_path):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    assert default_trt_cache_dir(bundle) == tmp_path / "bundle.trt_cache"
    assert trt_cache_dir_for(bundle, None) == tmp_path / "bundle.trt_cache"
    assert trt_cache_dir_for(bundle, tmp_path / "engines") == tmp_path / "engines"
    for inside in (bundle, bundle / "trt"):
        with pytest.raises(VssEdgeError, match="inside the bundle"):
            trt_cache_dir_for(bundle, inside)


def _provider_lines(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "vss_edge" and "running on" in r.getMessage()]


def test_tensorrt_where_it_does_not_load_falls_back_with_one_line(monkeypatch, tmp_path, caplog):
    """The real probe on this machine: pretend a driver answers, so TensorRT and then CUDA are tried
    with this onnxruntime build; where their libraries (or the GPU) are missing the sessions do not
    keep them, and the demo bundle runs on the CPU with one line saying why; nothing is left in the
    bundle nor beside it."""
    import shutil

    import numpy as np

    from vss_edge import demo_weights
    from vss_edge.runtime import session

    if session.cuda_driver_devices() > 0:
        pytest.skip("a GPU is here: the fallback is not what runs")
    bundle = tmp_path / "bundle"
    shutil.copytree(demo_weights.DEMO_BUNDLE, bundle)
    files = sorted(p.name for p in bundle.iterdir())
    monkeypatch.setattr(session, "cuda_driver_devices", lambda: 1)
    caplog.set_level(logging.INFO, logger="vss_edge")
    pipe = runtime.load(bundle, device="tensorrt", threads=1)
    (line,) = _provider_lines(caplog)
    if TENSORRT in session.ort.get_available_providers():
        assert line.startswith("vss-edge: running on CPUExecutionProvider (TensorRT: the TensorRT provider did "
                               "not load"), line
    assert "CUDA: " in line, line
    assert pipe.device == "cpu" and sorted(p.name for p in bundle.iterdir()) == files
    assert not (tmp_path / "bundle.trt_cache").exists()  # made for the try, removed when TensorRT did not load
    labels = pipe.step(np.zeros((288, 384, 3), np.uint8)).labels
    assert labels.shape == (288, 384)
    caplog.clear()
    with pytest.raises(VssEdgeError, match="--device cuda: the CUDA provider cannot run here: the CUDA provider "
                                           "did not load"):
        runtime.load(bundle, device="cuda")
    with pytest.raises(VssEdgeError, match="inside the bundle"):
        runtime.load(bundle, device="tensorrt", trt_cache_dir=bundle / "cache")


def test_cli_device_tensorrt(tmp_path):
    """`vss-edge run --device tensorrt --trt-cache DIR` on a machine without TensorRT runs (on the CPU
    here) and writes its outputs, creating no cache folder; a cache folder inside the bundle is one line,
    exit 2."""
    import json
    import subprocess
    import sys

    from vss_edge import demo_weights
    from vss_edge.runtime import session
    from vss_edge.runtime.sources import sample_clip_path

    base = [sys.executable, "-m", "vss_edge", "run", str(demo_weights.DEMO_BUNDLE), str(sample_clip_path()),
            "--device", "tensorrt", "--max-frames", "2", "--threads", "1"]
    done = subprocess.run(base + ["--out", str(tmp_path / "out"), "--trt-cache", str(tmp_path / "trt")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["frames"] == 2
    if session.cuda_driver_devices() == 0:
        assert not (tmp_path / "trt").exists()  # TensorRT was not tried: no driver
    bad = subprocess.run(base + ["--out", str(tmp_path / "out2"), "--trt-cache",
                                 str(demo_weights.DEMO_BUNDLE / "trt")], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "inside the bundle" in bad.stderr and "Traceback" not in bad.stderr, bad.stderr


def test_gpu_warnings_name_what_a_bundle_loses_on_the_cuda_provider(gsvnet_bundle):
    """Measured on an H200: INT8 QDQ graphs are slower than FP32 on the CUDA provider, and a host
    label step dominates a GPU frame. On the CPU (or TensorRT for INT8) there is nothing to say."""
    import dataclasses

    from vss_edge.demo_weights import DEMO_BUNDLE
    from vss_edge.runtime.manifest import load_manifest
    from vss_edge.runtime.providers import gpu_warnings

    host_labels = load_manifest(DEMO_BUNDLE)
    assert host_labels.labels_on_host
    assert gpu_warnings(host_labels, {name: CPU for name in host_labels.graphs}) == []
    [labels] = gpu_warnings(host_labels, {name: CUDA for name in host_labels.graphs})
    assert "labels on the host" in labels and "--label-path graph" in labels
    int8 = dataclasses.replace(host_labels, labels={"computed": "graph"}, graphs={
        name: dataclasses.replace(g, precision="int8" if name == "keyframe" else g.precision)
        for name, g in host_labels.graphs.items()})
    [slower] = gpu_warnings(int8, {name: CUDA for name in int8.graphs})
    assert slower.startswith("INT8 graph(s) keyframe run on the CUDA provider") and "FP16" in slower
    assert gpu_warnings(int8, {name: TENSORRT for name in int8.graphs}) == []
