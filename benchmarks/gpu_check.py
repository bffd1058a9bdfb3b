"""GPU readiness: one command that proves (or disproves) the CUDA path, section by section.

    python benchmarks/gpu_check.py                      # on a GPU machine: CUDA EP vs CPU EP
    python benchmarks/gpu_check.py --device cpu --quick # anywhere: the same machinery on the CPU, small sizes

Writes `benchmarks/results/gpu_<device>.md` and `.json` (atomically, after every section, so a
run killed half-way still leaves what it measured); `<device>` is the GPU's name from
nvidia-smi (e.g. `nvidia_h200`), else `cuda` or `cpu`. Every section is guarded: a failure is
recorded with its error and the next section runs. A global budget (`--budget-s`, default 420 s)
skips the sections left once it is spent, each with a note. The sections, in priority order:

* environment: ONNX Runtime version and build, the providers it lists, nvidia-smi (GPU, driver,
  CUDA), and in a child process (a crash there cannot take the run down): the CUDA driver,
  runtime, cuDNN and TensorRT library versions (ctypes, no torch) and which files were loaded;
  then what really loads: a tiny graph opened with CUDA and with TensorRT, kept or not, run and
  compared with the CPU.
* method <m> (GSVNet, STMG, TDNet, MPVSS; the committed trained weights at the demo size 288x384):
  the device pipeline (CUDA with IO binding; `--device cpu`: the CPU with IO binding) against the
  CPU pipeline frame by frame on real frames of the sample clip: label agreement, key decisions,
  where the recurrent state lives (the OrtValues the program keeps: their device must be cuda),
  per-graph latency in the pipeline (each graph's first call dropped: cuDNN's algorithm search);
  and per graph, which nodes do not run on the device (ONNX Runtime's profiler: each node event
  names its provider) and the Memcpy nodes ONNX Runtime inserted (its optimised graph, saved with
  SessionOptions.optimized_model_filepath) with their time per run.
* fp16 <m>: `calibrate --precision fp16` of that bundle; each warp's input and output types read
  from the FP16 graph (a GridSample: ONNX Runtime's CUDA GridSample is float32-only; a warp written
  as gathers: its points in float16 would move by up to 1/8 pixel; both must stay float32) and
  GridSample's provider in the profile; FP16 vs FP32 on the device: agreement, latency.
* tensorrt: `load(bundle, device="tensorrt")` of the small GSVNet: which provider it ends on (the
  fallback line where TensorRT does not load), agreement with the CPU, latency, engine build and
  cached reload times, the cache files; FP16 engines.
* stmg gates: STMG's partial graph (each prunable block an ONNX `If`) timed on the device with
  every block kept, none kept, each block alone, and with the gates inlined; If and Memcpy nodes,
  and the copies' time per run from the profile (the `If` condition is read on the host).
* full gsvnet / full mpvss: seeded weights at full size (GSVNet 512x1024, MPVSS R50 480x853, 124
  classes): device vs CPU as above (near-ties of random weights flip a few pixels), and FP16.
* int8 <m>: `calibrate --precision int8` (every graph INT8 that can be: keep_slower) on frames
  0:20; INT8 (QDQ) vs FP32 on the device: agreement, latency, nodes off the device.
* multistream: throughput of 4 streams on shared sessions (`load_streams`) against one stream.
* stmg gates full: the same gate timing on DDRNet-39 at 512x1024 (seeded).

`--quick` (the CI test runs it on the CPU): every bundle at small sizes, few frames; its figures
mean little, it proves the script runs. Bundles are exported once into `--bundle-dir` (default: a
folder in the temporary directory) and reused when their config and weights match, so bundles
exported on another machine can be carried in. Needs the export extra (torch) only to export.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import datetime
import io
import json
import logging
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # for `benchmarks._common`; last, so that an installed vss_edge (a copy
    sys.path.append(str(ROOT))  # installed with --target, as gpu_run.sh does) wins over the checkout's folder

import numpy as np  # noqa: E402

from benchmarks._common import clip_frames, code_version, cpu_model, log  # noqa: E402

SMALL_METHODS = ("gsvnet", "stmg", "tdnet", "mpvss")
FULL_METHODS = ("gsvnet", "mpvss")
DEMO_SIZE, QUICK_SIZE = (288, 384), (96, 128)
SEED = 0


class Skip(Exception):
    """A section that has nothing to do here (its reason goes in the report)."""


class Stop(BaseException):
    """SIGTERM: record what was measured and stop."""


# --------------------------------------------------------------------------- report


@dataclass
class Section:
    name: str
    status: str = "pending"  # ok | failed | skipped
    seconds: float = 0.0
    headline: str = ""
    data: dict = field(default_factory=dict)
    md: list = field(default_factory=list)
    error: str = ""


class Report:
    """The sections' results; written as markdown and JSON (atomically) after every section."""

    def __init__(self, out_md: Path, meta: dict):
        self.out_md, self.meta, self.sections = out_md, meta, []

    def markdown(self) -> str:
        m = self.meta
        lines = [f"# GPU check: {m['device_description']}", "",
                 f"- {m['date']}, code {m['code']}; `{m['command']}`",
                 f"- CPU: {m['cpu']}; Python {m['python']}; onnxruntime {m['onnxruntime']}",
                 f"- device under test: {m['device']} ({m['provider']}), compared with the CPU EP"
                 f"{' (--quick: small sizes, few frames; the figures mean little)' if m['quick'] else ''}",
                 f"- budget {m['budget_s']:.0f} s; run time {m.get('run_s', 0):.0f} s"
                 + ("; torch imported first (its CUDA libraries)" if m.get("torch_libs") else ""), "",
                 "## Summary", "", "| section | status | s | result |", "|---|---|---:|---|"]
        for s in self.sections:
            lines.append(f"| {s.name} | {s.status} | {s.seconds:.1f} | {(s.headline or s.error).replace('|', '/')} |")
        for s in self.sections:
            if s.md:
                lines += ["", f"## {s.name}", "", *s.md]
        failed = [s for s in self.sections if s.status == "failed"]
        if failed:
            lines += ["", "## Errors", ""]
            for s in failed:
                lines += [f"### {s.name}", "", "```", s.data.get("traceback", s.error).rstrip(), "```", ""]
        return "\n".join(lines) + "\n"

    def to_json(self) -> dict:
        return {"meta": self.meta, "sections": [
            {"name": s.name, "status": s.status, "seconds": round(s.seconds, 2), "headline": s.headline,
             "error": s.error, "data": s.data} for s in self.sections]}

    def write(self) -> None:
        from vss_edge.runtime.outputs import write_text_atomic

        self.out_md.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.out_md, self.markdown())
        write_text_atomic(self.out_md.with_suffix(".json"),
                          json.dumps(self.to_json(), indent=1, default=_jsonable) + "\n")


def _jsonable(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


# --------------------------------------------------------------------------- context


@dataclass
class Context:
    args: argparse.Namespace
    device: str  # "cuda" or "cpu": where the pipelines under test run
    provider: str  # its execution provider
    deadline: float
    bundle_dir: Path
    tmp: Path
    frames: list
    size: tuple[int, int]
    bundles: dict = field(default_factory=dict)  # name -> Path, exported or reused once per run

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    @property
    def threads(self):
        return self.args.threads


def stats(values) -> dict:
    v = np.asarray(list(values), dtype=np.float64)
    if v.size == 0:
        return {"n": 0}
    return {"n": int(v.size), "mean": float(v.mean()), "p50": float(np.median(v)), "p90": float(np.percentile(v, 90)),
            "max": float(v.max())}


def fmt(value, spec=".2f") -> str:
    return "-" if value is None else format(value, spec)


def short(e: BaseException, limit: int = 200) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    text = f"{type(e).__name__}: {text}"
    return text if len(text) <= limit else text[:limit] + "..."


# --------------------------------------------------------------------------- bundles


def _export_options(quick: bool) -> dict:
    return {"verify_frames": 1, "simplify": False} if quick else {}


def small_bundle(ctx: Context, method: str) -> Path:
    """The committed trained weights of `method` exported at ctx.size (reused from --bundle-dir)."""
    key = f"small_{method}"
    if key in ctx.bundles:
        return ctx.bundles[key]
    from benchmarks._common import ensure_trained_bundle
    from vss_edge import demo_weights as dw

    h, w = ctx.size
    cfg = getattr(dw, f"{method}_config")(h, w)
    options = _export_options(ctx.args.quick)
    if method == "gsvnet":
        weights = (dw.GSVNET_KEYFRAME, dw.GSVNET_PROPAGATION)

        def export(path, c):
            return dw.export_gsvnet_demo(path, c.height, c.width, **options)
    else:
        from vss_edge.exporters import mpvss, stmg, tdnet

        checkpoint = {"stmg": dw.STMG_CHECKPOINT, "tdnet": dw.TDNET_CHECKPOINT, "mpvss": dw.MPVSS_CHECKPOINT}[method]
        exporter = {"stmg": stmg.export_stmg, "tdnet": tdnet.export_tdnet, "mpvss": mpvss.export_mpvss}[method]
        weights = (checkpoint,)

        def export(path, c):
            return exporter(path, c, checkpoint=str(checkpoint), **options)
    if not all(Path(f).is_file() for f in weights):
        raise Skip(f"the committed {method} weights are not in this checkout")
    path = ensure_trained_bundle(ctx.bundle_dir / f"{method}_trained_{h}x{w}", cfg, method, export, weights)
    ctx.bundles[key] = path
    return path


def seeded_bundle(ctx: Context, method: str, stmg_backbone: str | None = None, label_path: str = "host") -> Path:
    """Seeded weights at full size (GSVNet 512x1024, MPVSS R50 480x853, STMG DDRNet-39 512x1024), or
    small under --quick; label_path: MPVSS's ('host' or 'graph')."""
    from benchmarks._common import ensure_bundle
    from vss_edge import configs

    quick = ctx.args.quick
    if method == "gsvnet":
        from vss_edge.exporters.gsvnet import export_gsvnet as exporter

        cfg = configs.GSVNetConfig(**({"height": 64, "width": 128} if quick else {"height": 512, "width": 1024}))
        name = f"gsvnet_seeded_{cfg.height}x{cfg.width}"
    elif method == "mpvss":
        from vss_edge.exporters.mpvss import export_mpvss as exporter

        cfg = (configs.MPVSSConfig(height=64, width=96, variant="small", num_classes=19, label_path=label_path)
               if quick else configs.MPVSSConfig(height=480, width=853, variant="r50", num_classes=124, interval=5,
                                                 label_path=label_path))
        name = (f"mpvss_seeded_{cfg.variant}_{cfg.height}x{cfg.width}_c{cfg.num_classes}"
                + ("" if label_path == "host" else f"_{label_path}_labels"))
    else:
        from vss_edge.exporters.stmg import export_stmg as exporter

        cfg = configs.STMGConfig(**({"height": 64, "width": 128, "backbone": "ddrnet23_slim"} if quick else
                                    {"height": 512, "width": 1024, "backbone": stmg_backbone or "ddrnet39"}))
        name = f"stmg_seeded_{cfg.backbone}_{cfg.height}x{cfg.width}"
    key = f"seeded_{name}"
    if key not in ctx.bundles:
        options = {"verify_frames": 1, "simplify": False} if (quick or method == "mpvss") else {}
        ctx.bundles[key] = ensure_bundle(ctx.bundle_dir / name, cfg, method,
                                         lambda path, c, seed: exporter(path, c, seed=seed, **options), SEED)
    return ctx.bundles[key]


def derived_bundle(ctx: Context, fp32: Path, precision: str) -> tuple[Path, dict]:
    """`calibrate --precision fp16|int8` of fp32 into --bundle-dir (reused while it was made from this
    very FP32 manifest); (bundle, {graph: why it stayed FP32})."""
    from vss_edge.runtime.errors import BundleError
    from vss_edge.runtime.manifest import MANIFEST_NAME, load_manifest, sha256_file

    out = fp32.with_name(f"{fp32.name}.{precision}")
    source_sha = sha256_file(fp32 / MANIFEST_NAME)
    if out.exists():
        try:
            graphs = load_manifest(out).graphs.values()
            if any(g.precision == precision and (g.calibration or {}).get("source_manifest_sha256") == source_sha
                   for g in graphs):
                log(f"reusing bundle {out}")
                return out, {}
        except BundleError:
            pass
        shutil.rmtree(out)
    log(f"calibrating {precision} {out}")
    if precision == "fp16":
        from vss_edge.calibration.quantize import CalibrationConfig, calibrate_bundle

        calibrate_bundle(fp32, None, out, CalibrationConfig(precision="fp16"))
        return out, {}
    from benchmarks.calibration_speed import calibrate
    from vss_edge.runtime.sources import sample_clip_path

    frames = "0:6" if ctx.args.quick else "0:20"
    out, _report, failed = calibrate(fp32, sample_clip_path(), out, calibration_frames=frames, keep_slower=True,
                                     threads=ctx.threads)
    return out, failed


# --------------------------------------------------------------------------- measurements


def device_pipeline(ctx: Context, bundle: Path, **options):
    from vss_edge import runtime

    return runtime.load(bundle, device=ctx.device, io_binding=True, threads=ctx.threads, **options)


def cpu_pipeline(ctx: Context, bundle: Path):
    from vss_edge import runtime

    return runtime.load(bundle, device="cpu", threads=ctx.threads)


def compare(ctx: Context, reference, candidate, frames: list, record: dict | None = None) -> dict:
    """Both pipelines over the same frames: label agreement per frame, key decisions, per-graph ms of each
    (every graph's first call dropped), frame ms. record: graph -> the reference's first feeds, filled."""
    reference.reset()
    candidate.reset()
    agreement, same_decision, key_frames = [], 0, 0
    graph_ms = {"reference": collections.defaultdict(list), "candidate": collections.defaultdict(list)}
    frame_ms = {"reference": [], "candidate": []}
    stopped = None

    class Recorder:
        def __init__(self, name, session):
            self.name, self.session = name, session

        def run(self, feeds, host_outputs=()):
            if record is not None and self.name not in record:
                record[self.name] = {k: (v.numpy() if hasattr(v, "numpy") else np.array(v)) for k, v in feeds.items()}
            return self.session.run(feeds, host_outputs)

        def __getattr__(self, name):
            return getattr(self.session, name)

    with reference.wrapped_sessions(Recorder):
        for i, frame in enumerate(frames):
            if i >= 2 and ctx.left() < 0:
                stopped = f"stopped after {i} of {len(frames)} frames: budget spent"
                break
            r, c = reference.step(frame), candidate.step(frame)
            agreement.append(float(np.mean(r.labels == c.labels)))
            same_decision += (r.is_key == c.is_key and r.path == c.path)
            key_frames += bool(c.is_key)
            for side, result in (("reference", r), ("candidate", c)):
                for graph, ms in result.timings_ms.items():
                    graph_ms[side][graph].append(ms)
                if i > 0:
                    frame_ms[side].append(result.total_ms)
    n = len(agreement)
    out = {"frames": n, "agreement_mean": float(np.mean(agreement)) if n else None,
           "agreement_min": float(np.min(agreement)) if n else None,
           "identical_frames": int(sum(a == 1.0 for a in agreement)), "decisions_equal": int(same_decision),
           "key_frames": key_frames, "agreement_per_frame": [round(a, 6) for a in agreement],
           "graph_ms": {side: {g: stats(v[1:]) for g, v in d.items()} for side, d in graph_ms.items()},
           "frame_ms": {side: stats(v) for side, v in frame_ms.items()}}
    if stopped:
        out["note"] = stopped
    return out


def state_devices(program) -> dict:
    """Where the state a program keeps between frames lives: name -> 'cuda' / 'cpu' for OrtValues
    (IO binding kept them where they were made), 'host' for numpy arrays."""
    found = {}

    def visit(name, value, depth):
        if hasattr(value, "device_name") and callable(value.device_name):
            found[name] = str(value.device_name()).lower()
        elif isinstance(value, np.ndarray):
            found[name] = "host"
        elif depth < 2 and isinstance(value, dict):
            for k, v in value.items():
                visit(f"{name}.{k}", v, depth + 1)
        elif depth < 2 and isinstance(value, (list, tuple)):
            for k, v in enumerate(value):
                visit(f"{name}[{k}]", v, depth + 1)

    for attr, value in vars(program).items():
        if attr in ("manifest", "uses", "empty", "empty_encoding", "flags", "frame_difference", "label_tail"):
            continue  # constants and configuration, not state carried between frames
        visit(attr, value, 0)
    return found


def _walk_nodes(graph):
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.HasField("g"):
                yield from _walk_nodes(attr.g)
            for g in attr.graphs:
                yield from _walk_nodes(g)


def placement(ctx: Context, bundle: Path, feeds: dict, runs: int = 3) -> dict:
    """Per graph: nodes by provider (ONNX Runtime's profile), op types not on the device, Memcpy nodes in
    the optimised graph and their time per run."""
    import onnx
    import onnxruntime as ort

    from vss_edge.runtime.manifest import load_manifest
    from vss_edge.runtime.providers import TensorRTOptions, providers_for
    from vss_edge.runtime.session import graph_optimization, session_options

    manifest = load_manifest(bundle)
    out = {}
    for name, spec in manifest.graphs.items():
        if name not in feeds:
            out[name] = {"note": "not run in these frames"}
            continue
        tmp = Path(tempfile.mkdtemp(prefix=f"place_{name}_", dir=ctx.tmp))
        options = session_options(ctx.threads, quiet=True, optimization=graph_optimization(spec))
        options.enable_profiling = True
        options.profile_file_prefix = str(tmp / "profile")
        options.optimized_model_filepath = str(tmp / "optimized.onnx")
        providers = providers_for(ctx.provider, spec.precision, TensorRTOptions(tmp))
        with contextlib.redirect_stdout(io.StringIO()):
            session = ort.InferenceSession(str(manifest.graph_path(name)), options, providers=providers)
        for _ in range(runs):
            session.run(None, feeds[name])
        events = json.loads(Path(session.end_profiling()).read_text())
        nodes, us = {}, collections.Counter()
        for e in events:
            if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
                node = e["name"][: -len("_kernel_time")]
                provider = e.get("args", {}).get("provider", "?")
                nodes[node] = (e.get("args", {}).get("op_name", "?"), provider)
                us[(provider, e.get("args", {}).get("op_name", "?"))] += e.get("dur", 0)
        by_provider = collections.Counter(p for _, p in nodes.values())
        off = collections.Counter(op for op, p in nodes.values() if p != ctx.provider)
        memcpy_ms = sum(v for (p, op), v in us.items() if op.startswith("Memcpy")) / runs / 1000.0
        memcpy_nodes = None
        optimized = tmp / "optimized.onnx"
        if optimized.is_file():
            model = onnx.load(str(optimized), load_external_data=False)
            memcpy_nodes = sum(n.op_type.startswith("Memcpy") for n in _walk_nodes(model.graph))
        grid = [p for op, p in nodes.values() if op == "GridSample"]
        out[name] = {"nodes": len(nodes), "by_provider": dict(by_provider), "off_device_ops": dict(off),
                     "memcpy_nodes": memcpy_nodes, "memcpy_ms_per_run": memcpy_ms,
                     "gridsample_providers": dict(collections.Counter(grid)),
                     "kernel_ms_per_run": {p: sum(v for (pp, _), v in us.items() if pp == p) / runs / 1000.0
                                           for p in by_provider}}
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def warp_types(path: Path) -> list[dict]:
    """Each warp of an ONNX file with its element types: a GridSample (subgraphs included) with its X,
    grid and Y, or a warp written as gathers (calibration.graph_analysis.gather_warps) with each
    gather's X (the map), grid (the points its Floor reads) and Y. Shape inference, else the Cast
    that made the tensor."""
    import onnx
    from onnx import helper, shape_inference

    from vss_edge.calibration.graph_analysis import gather_warps

    model = onnx.load(str(path))
    with contextlib.suppress(Exception):
        model = shape_inference.infer_shapes(model)
    warps = gather_warps(model)
    found = []

    def walk(graph, outer):
        types = dict(outer)
        for vi in list(graph.input) + list(graph.output) + list(graph.value_info):
            if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
                types[vi.name] = vi.type.tensor_type.elem_type
        for init in graph.initializer:
            types[init.name] = init.data_type
        made_by = {o: n for n in graph.node for o in n.output}

        def dtype(name):
            t = types.get(name)
            node = made_by.get(name)
            if t is None and node is not None and node.op_type == "Cast":
                t = next((a.i for a in node.attribute if a.name == "to"), None)
            return helper.tensor_dtype_to_np_dtype(t).name if t else "unknown"

        floors = [n for n in graph.node if n.op_type == "Floor" and n.name in warps]
        for node in graph.node:
            if node.op_type == "GridSample":
                found.append({"node": node.name, "X": dtype(node.input[0]), "grid": dtype(node.input[1]),
                              "Y": dtype(node.output[0])})
            elif node.name in warps and warps[node.name].startswith("a warp"):
                found.append({"node": node.name, "X": dtype(node.input[0]),
                              "grid": dtype(floors[0].input[0]) if floors else "unknown", "Y": dtype(node.output[0])})
            for attr in node.attribute:
                for g in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                    walk(g, types)

    walk(model.graph, {})
    return found


# --------------------------------------------------------------------------- sections


def environment(ctx: Context, section: Section) -> None:
    import onnxruntime as ort

    data = {"python": sys.version.split()[0], "platform": platform.platform(), "onnxruntime": ort.__version__,
            "onnxruntime_package": _ort_package(), "available_providers": ort.get_available_providers(),
            "ort_device": ort.get_device()}
    with contextlib.suppress(Exception):
        data["ort_build_info"] = ort.get_build_info()
    with contextlib.suppress(Exception):
        from onnxruntime.capi import build_and_package_info as info

        data["ort_built_with"] = {k: getattr(info, k) for k in ("cuda_version", "cudnn_version") if hasattr(info, k)}
    data["nvidia_smi"] = nvidia_smi()
    probe = child_probe(ctx)
    data.update(probe)
    section.data = data
    smi = data["nvidia_smi"]
    libs = probe.get("libraries", {})
    section.md = [
        f"- onnxruntime {data['onnxruntime']} ({data['onnxruntime_package']}), built with "
        f"{data.get('ort_built_with') or '?'}; lists {', '.join(data['available_providers'])}",
        f"- GPU: {smi.get('gpus') or smi.get('error', '-')}; driver {smi.get('driver', '-')}, "
        f"CUDA (driver) {smi.get('cuda', '-')}",
        "- libraries (ctypes, in a child process): " + (", ".join(f"{k} {v}" for k, v in libs.items()) or "-")
        + (f"; loaded: {', '.join(probe.get('loaded_libraries', []))}" if probe.get("loaded_libraries") else ""),
        "", "What really loads (a tiny Conv graph in a child process):", "",
        "| provider | listed | kept by the session | ran | max abs diff vs CPU | open ms | note |",
        "|---|---|---|---|---:|---:|---|"]
    for row in probe.get("providers", []):
        section.md.append(f"| {row['provider']} | {row['listed']} | {row.get('kept', '-')} | {row.get('ran', '-')} | "
                          f"{fmt(row.get('max_abs_diff'), '.2e')} | {fmt(row.get('open_ms'), '.0f')} | "
                          f"{row.get('note', '')} |")
    if probe.get("stderr_tail"):
        section.md += ["", "ONNX Runtime's messages in the probe (last lines):", "", "```",
                       *probe["stderr_tail"], "```"]
    kept = [r["provider"] for r in probe.get("providers", []) if r.get("kept") and r.get("ran")]
    section.headline = (f"{smi.get('gpus') or 'no GPU seen'}; really loads: "
                        f"{', '.join(p.replace('ExecutionProvider', '') for p in kept) or 'CPU only'}")


def _ort_package() -> str:
    from importlib import metadata

    for name in ("onnxruntime-gpu", "onnxruntime"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            return f"{name} {metadata.version(name)}"
    return "?"


def nvidia_smi() -> dict:
    if shutil.which("nvidia-smi") is None:
        return {"error": "nvidia-smi not found"}
    out = {}
    try:
        q = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,compute_cap",
                            "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
        rows = [r.strip() for r in q.stdout.strip().splitlines() if r.strip()]
        out["gpus"] = "; ".join(rows)
        if rows:
            out["name"] = rows[0].split(",")[0].strip()
            out["driver"] = rows[0].split(",")[1].strip()
        top = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=30).stdout
        match = re.search(r"CUDA Version:\s*([\d.]+)", top)
        if match:
            out["cuda"] = match.group(1)
    except (OSError, subprocess.SubprocessError) as e:
        out["error"] = short(e)
    return out


def child_probe(ctx: Context) -> dict:
    """Run probe() in a child process (a provider that crashes cannot take the run down)."""
    try:
        flags = ["--probe"] + (["--torch-libs"] if ctx.args.torch_libs else [])
        done = subprocess.run([sys.executable, str(Path(__file__).resolve()), *flags], capture_output=True,
                              text=True, timeout=max(30.0, min(240.0, ctx.left())))
    except subprocess.TimeoutExpired:
        return {"probe_error": "the provider probe did not finish in time"}
    result = {}
    for line in done.stdout.splitlines()[::-1]:
        if line.startswith("{"):
            with contextlib.suppress(json.JSONDecodeError):
                result = json.loads(line)
                break
    if not result:
        result["probe_error"] = f"the probe exited {done.returncode} without a result"
    tail = [re.sub(r"\x1b\[[0-9;]*m", "", ln)[:240] for ln in done.stderr.strip().splitlines() if ln.strip()]
    result["stderr_tail"] = tail[-12:]
    return result


def probe() -> dict:
    """In the child: library versions (ctypes) and a tiny graph on each GPU provider vs the CPU."""
    import ctypes

    import onnxruntime as ort
    from onnx import TensorProto, helper

    from vss_edge.runtime.providers import CPU, CUDA, TENSORRT, TensorRTOptions, providers_for

    libraries = {}
    with contextlib.redirect_stdout(io.StringIO()):
        with contextlib.suppress(Exception):
            ort.preload_dlls()

    def version(names, fn, restype=ctypes.c_int, by_ref=True):
        for soname in names:
            try:
                lib = ctypes.CDLL(soname)
            except OSError:
                continue
            try:
                f = getattr(lib, fn)
                if by_ref:
                    v = ctypes.c_int(0)
                    f(ctypes.byref(v))
                    return v.value
                f.restype = restype
                return f()
            except Exception as e:  # noqa: BLE001
                return short(e)
        return None

    libraries["cuda_driver_api"] = version(["libcuda.so.1"], "cuDriverGetVersion")
    libraries["cudart"] = version(["libcudart.so.13", "libcudart.so.12", "libcudart.so"], "cudaRuntimeGetVersion")
    libraries["cudnn"] = version(["libcudnn.so.9", "libcudnn.so"], "cudnnGetVersion", ctypes.c_size_t, False)
    libraries["tensorrt"] = version(["libnvinfer.so.10", "libnvinfer.so"], "getInferLibVersion", ctypes.c_int, False)
    libraries = {k: v for k, v in libraries.items() if v is not None}
    loaded = set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/maps").read_text().splitlines():
            path = line.split()[-1] if len(line.split()) >= 6 else ""
            if re.search(r"lib(cudart|cudnn|cublas|nvinfer|cuda)\.so", path):
                loaded.add(path)

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 32, 32])
    w = helper.make_tensor("w", TensorProto.FLOAT, [8, 3, 3, 3], np.linspace(-1, 1, 216, dtype=np.float32).tolist())
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
                               helper.make_node("Relu", ["c"], ["y"])], "probe", [x], [y], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    blob = model.SerializeToString()
    feeds = {"x": np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)}
    expected = ort.InferenceSession(blob, providers=[CPU]).run(None, feeds)[0]
    rows = []
    available = ort.get_available_providers()
    for provider in (CUDA, TENSORRT):
        row = {"provider": provider, "listed": provider in available}
        if row["listed"]:
            try:
                t0 = time.perf_counter()
                with tempfile.TemporaryDirectory() as cache, contextlib.redirect_stdout(io.StringIO()) as said:
                    session = ort.InferenceSession(blob, providers=providers_for(provider, "fp32",
                                                                                 TensorRTOptions(Path(cache))))
                    row["open_ms"] = (time.perf_counter() - t0) * 1000
                    row["kept"] = session.get_providers()[0] == provider
                    row["session_providers"] = session.get_providers()
                    got = session.run(None, feeds)[0]
                    row["ran"] = True
                    row["max_abs_diff"] = float(np.abs(got - expected).max())
                row["note"] = ep_error(said.getvalue())
            except Exception as e:  # noqa: BLE001
                row.update(ran=False, note=short(e))
        rows.append(row)
    return {"libraries": libraries, "loaded_libraries": sorted(loaded), "providers": rows}


def ep_error(printed: str) -> str:
    """The gist of what ONNX Runtime printed when a provider fell back ("EP Error ... when using ...")."""
    line = next((ln for ln in printed.splitlines() if ln.startswith("EP Error")), "")
    line = line.split(" when using ")[0]
    if "Please install" in line:
        line = line[line.index("Please install"):]
    return line[:240]


def method_section(ctx: Context, section: Section, method: str) -> None:
    bundle = small_bundle(ctx, method)
    frames = ctx.frames[: ctx.args.frames]
    ref, dev = cpu_pipeline(ctx, bundle), device_pipeline(ctx, bundle)
    if dev.device != ctx.device:
        raise RuntimeError(f"the pipeline runs on {dev.device}, not {ctx.device}")
    feeds = {}
    result = compare(ctx, ref, dev, frames, record=feeds)
    result["state"] = state_devices(dev.program)
    result["placement"] = placement(ctx, bundle, feeds)
    section.data = result
    section.md = method_md(ctx, result)
    section.headline = headline(ctx, result)


def headline(ctx: Context, result: dict) -> str:
    state = result.get("state", {})
    ort_values = [d for d in state.values() if d != "host"]
    on_device = sum(d.startswith(ctx.device) for d in ort_values)
    off = sum(sum(p.get("off_device_ops", {}).values()) for p in result.get("placement", {}).values())
    memcpy = sum(p.get("memcpy_nodes") or 0 for p in result.get("placement", {}).values())
    host = len(state) - len(ort_values)
    return (f"agreement {fmt(result['agreement_mean'], '.5f')} (min {fmt(result['agreement_min'], '.5f')}), "
            f"{result['identical_frames']}/{result['frames']} frames identical; state OrtValues on {ctx.device}: "
            f"{on_device}/{len(ort_values)}" + (f" (+{host} on the host by design)" if host else "")
            + f"; nodes off {ctx.provider.replace('ExecutionProvider', '')}: {off}, Memcpy nodes {memcpy}")


def method_md(ctx: Context, result: dict, candidate: str = None, reference: str = "CPU EP") -> list[str]:
    candidate = candidate or f"{ctx.device} (IO binding)"
    lines = [f"{result['frames']} frames of the sample clip, {candidate} vs {reference}: label agreement mean "
             f"{fmt(result['agreement_mean'], '.5f')}, min {fmt(result['agreement_min'], '.5f')}; "
             f"{result['identical_frames']} frames identical; key decisions equal on {result['decisions_equal']}; "
             f"{result['key_frames']} key frames." + (f" {result['note']}." if result.get("note") else "")]
    if result.get("state"):
        lines += ["", "State kept between frames: " + ", ".join(f"`{k}` {v}" for k, v in result["state"].items())]
    lines += ["", f"| graph | {candidate} ms p50 | mean | {reference} ms p50 | mean | calls |", "|---|---:|---:|---:|---:|---:|"]
    cand, ref = result["graph_ms"]["candidate"], result["graph_ms"]["reference"]
    for g in sorted(set(cand) | set(ref)):
        c, r = cand.get(g, {}), ref.get(g, {})
        lines.append(f"| {g} | {fmt(c.get('p50'))} | {fmt(c.get('mean'))} | {fmt(r.get('p50'))} | {fmt(r.get('mean'))} | "
                     f"{c.get('n', 0)} |")
    fc, fr = result["frame_ms"]["candidate"], result["frame_ms"]["reference"]
    lines.append(f"| whole frame | {fmt(fc.get('p50'))} | {fmt(fc.get('mean'))} | {fmt(fr.get('p50'))} | "
                 f"{fmt(fr.get('mean'))} | {fc.get('n', 0)} |")
    if result.get("placement"):
        lines += ["", f"Node placement ({ctx.provider}; ONNX Runtime's profile, 3 runs on the recorded feeds):", "",
                  "| graph | nodes run | by provider | not on the device (op: count) | Memcpy nodes | Memcpy ms/run | "
                  "GridSample on |", "|---|---:|---|---|---:|---:|---|"]
        for g, p in result["placement"].items():
            if "nodes" not in p:
                lines.append(f"| {g} | - | {p.get('note', '')} | | | | |")
                continue
            off = ", ".join(f"{op}: {n}" for op, n in sorted(p["off_device_ops"].items())) or "none"
            lines.append(f"| {g} | {p['nodes']} | {', '.join(f'{k}: {v}' for k, v in p['by_provider'].items())} | "
                         f"{off} | {fmt(p['memcpy_nodes'], 'd') if p['memcpy_nodes'] is not None else '-'} | "
                         f"{fmt(p['memcpy_ms_per_run'], '.3f')} | "
                         f"{', '.join(f'{k}: {v}' for k, v in p['gridsample_providers'].items()) or '-'} |")
    return lines


def precision_section(ctx: Context, section: Section, fp32: Path, precision: str, label: str) -> None:
    """FP16 or INT8 of `fp32` on the device against FP32 on the device."""
    from vss_edge.runtime.manifest import load_manifest

    out, failed = derived_bundle(ctx, fp32, precision)
    manifest = load_manifest(out)
    data = {"bundle": str(out), "graphs": {n: g.precision for n, g in manifest.graphs.items()},
            "stayed_fp32": failed}
    if precision == "fp16":
        data["warps"] = {n: warp_types(manifest.graph_path(n)) for n, g in manifest.graphs.items()
                         if g.precision == "fp16"}
    frames = ctx.frames[: ctx.args.frames]
    feeds = {}
    result = compare(ctx, device_pipeline(ctx, fp32), device_pipeline(ctx, out), frames, record=feeds)
    result["placement"] = placement(ctx, out, feeds)
    data.update(result)
    section.data = data
    speedups = {}
    for g, c in result["graph_ms"]["candidate"].items():
        r = result["graph_ms"]["reference"].get(g, {})
        if c.get("p50") and r.get("p50"):
            speedups[g] = r["p50"] / c["p50"]
    fr, fc = result["frame_ms"]["reference"], result["frame_ms"]["candidate"]
    # p50: a mean carries each graph's first calls (cuDNN's algorithm search: tens of ms on a GPU)
    frame_speedup = fr["p50"] / fc["p50"] if fr.get("p50") and fc.get("p50") else None
    data["speedup"] = {"graphs": speedups, "frame": frame_speedup}
    lines = [f"Bundle `{out.name}`: " + ", ".join(f"{n} {p}" for n, p in data["graphs"].items())
             + (f"; stayed FP32: {', '.join(f'{n} ({why})' for n, why in failed.items())}" if failed else "")]
    grid_ok, grids = None, []
    if precision == "fp16":
        grids = [dict(g, graph=n) for n, gs in data["warps"].items() for g in gs]
        grid_ok = all(g["X"] == g["grid"] == g["Y"] == "float32" for g in grids)
        lines += ["", "Warps (GridSample or gathers) in the FP16 graphs: none" if not grids else
                  f"Warps (GridSample or gathers) in the FP16 graphs: {len(grids)} node(s), "
                  f"{'all float32 in and out' if grid_ok else 'NOT all float32'}" + (
                      "" if grid_ok or not grids else ": " + "; ".join(
                          f"{g['graph']}/{g['node']} X {g['X']} grid {g['grid']} Y {g['Y']}" for g in grids
                          if not g["X"] == g["grid"] == g["Y"] == "float32"))]
        data["warps_float32"] = grid_ok if grids else None
    lines += ["", *method_md(ctx, result, candidate=f"{label} on {ctx.device}", reference=f"FP32 on {ctx.device}")]
    lines += ["", "Speed-up over FP32 (p50): " + ", ".join(f"{g} {v:.2f}x" for g, v in speedups.items())
              + f"; whole frame {fmt(frame_speedup)}x"]
    section.md = lines
    section.headline = (f"agreement vs FP32 {fmt(result['agreement_mean'], '.5f')} (min "
                        f"{fmt(result['agreement_min'], '.5f')}); frame speed-up (p50) {fmt(frame_speedup)}x"
                        + ("" if not grids else f"; warps float32: {'yes' if grid_ok else 'NO'}"))


def full_section(ctx: Context, section: Section, method: str) -> None:
    bundle = seeded_bundle(ctx, method)
    frames = ctx.frames[: max(4, ctx.args.frames // 2)]
    feeds = {}
    dev = device_pipeline(ctx, bundle)
    result = compare(ctx, cpu_pipeline(ctx, bundle), dev, frames, record=feeds)
    result["state"] = state_devices(dev.program)
    del dev
    result["placement"] = placement(ctx, bundle, feeds, runs=2)
    section.data = {"bundle": str(bundle), "fp32": result}
    lines = [f"Bundle `{bundle.name}` (seeded weights).", "", *method_md(ctx, result)]
    head = headline(ctx, result)
    if ctx.device == "cuda" and ctx.left() > 0:
        exact = compare(ctx, cpu_pipeline(ctx, bundle), device_pipeline(ctx, bundle, tf32=False), frames)
        section.data["tf32_off"] = exact
        lines += ["", "### TF32 off", "", "`load(..., tf32=False)`: the CUDA provider's use_tf32=0 (its convolutions "
                  "and matrix products in full float32; the runs above use its default, TF32):", "",
                  *method_md(ctx, exact, candidate=f"{ctx.device}, TF32 off")]
        head += (f"; TF32 off: agreement {fmt(exact['agreement_mean'], '.5f')}, whole frame p50 "
                 f"{fmt(exact['frame_ms']['candidate'].get('p50'))} ms")
    if method == "mpvss" and ctx.left() > 0:
        graph_labels = seeded_bundle(ctx, method, label_path="graph")
        r = compare(ctx, device_pipeline(ctx, bundle), device_pipeline(ctx, graph_labels), frames)
        section.data["graph_labels"] = dict(r, bundle=str(graph_labels))
        ratio = (r["frame_ms"]["reference"]["p50"] / r["frame_ms"]["candidate"]["p50"]
                 if r["frame_ms"]["candidate"].get("p50") else None)
        lines += ["", "### Labels in the graph", "", f"Bundle `{graph_labels.name}`: the same weights exported with "
                  "label_path 'graph' (the semantic inference - masks resized to the label grid, sigmoid, "
                  "class-weighted sum, argmax - in the graphs, so on the device) against the host label step "
                  "above, both on the device:", "",
                  *method_md(ctx, r, candidate=f"graph labels on {ctx.device}",
                             reference=f"host labels on {ctx.device}")]
        head += f"; labels in the graph: whole frame {fmt(ratio)}x, agreement {fmt(r['agreement_mean'], '.5f')}"
    if ctx.left() > 0:
        sub = Section(f"{section.name} fp16")
        try:
            precision_section(ctx, sub, bundle, "fp16", "FP16")
            section.data["fp16"] = sub.data
            lines += ["", "### FP16", "", *sub.md]
            head += f"; FP16 {sub.headline}"
        except Exception as e:  # noqa: BLE001
            section.data["fp16_error"] = short(e)
            lines += ["", f"FP16 failed: {short(e)}"]
    section.md, section.headline = lines, head


def gates_section(ctx: Context, section: Section, bundle: Path) -> None:
    """STMG's partial graph: every block kept, none, each alone, and the gates inlined."""
    import onnx
    import onnxruntime as ort

    from vss_edge.exporters.gating import ungate
    from vss_edge.runtime.manifest import load_manifest
    from vss_edge.runtime.preprocess import to_graph_input
    from vss_edge.runtime.providers import TensorRTOptions, providers_for
    from vss_edge.runtime.session import GraphSession, graph_optimization, session_options

    manifest = load_manifest(bundle)
    spec = manifest.graphs["partial"]
    path = manifest.graph_path("partial")
    providers = providers_for(ctx.provider, spec.precision, TensorRTOptions(ctx.tmp))
    gated = GraphSession(path, spec, providers, ctx.threads, io_binding=True)
    keep_spec = next(t for t in spec.inputs if t.name == "keep")
    k = int(keep_spec.shape[0])
    image = to_graph_input(ctx.frames[0], manifest.height, manifest.width)
    model = onnx.load(str(path))
    inlined_bytes = ungate(model).SerializeToString()
    options = session_options(ctx.threads, quiet=True, optimization=graph_optimization(spec))
    with contextlib.redirect_stdout(io.StringIO()):
        inlined = ort.InferenceSession(inlined_bytes, options, providers=providers)
    patterns = {"all kept": np.ones(k, bool), "none kept": np.zeros(k, bool)}
    for i in range(k):
        patterns[f"block {i} alone"] = np.eye(k, dtype=bool)[i]

    def call(pattern):
        if pattern == "gates inlined":
            binding = inlined.io_binding()
            binding.bind_cpu_input("image", image)
            for o in inlined.get_outputs():
                binding.bind_output(o.name, ctx.device, 0)
            t0 = time.perf_counter()
            inlined.run_with_iobinding(binding)
            return (time.perf_counter() - t0) * 1000
        t0 = time.perf_counter()
        gated.run({"image": image, "keep": patterns[pattern]}, ())
        return (time.perf_counter() - t0) * 1000

    names = list(patterns) + ["gates inlined"]
    for name in names:  # warm-up: cuDNN's algorithm search on each shape
        call(name)
    calls = 3 if ctx.args.quick else 10
    ms = {n: [] for n in names}
    for rep in range(3):
        for name in names if rep % 2 == 0 else names[::-1]:
            for _ in range(calls):
                ms[name].append(call(name))
        if ctx.left() < 0:
            break
    timing = {n: stats(v) for n, v in ms.items()}
    none = timing["none kept"]["p50"]
    singles = [timing[f"block {i} alone"]["p50"] - none for i in range(k)]
    # the copies: profile the gated graph with every block kept and with none
    profile = {}
    for name in ("all kept", "none kept"):
        tmp = Path(tempfile.mkdtemp(prefix="gates_", dir=ctx.tmp))
        opts = session_options(ctx.threads, quiet=True, optimization=graph_optimization(spec))
        opts.enable_profiling = True
        opts.profile_file_prefix = str(tmp / "profile")
        opts.optimized_model_filepath = str(tmp / "optimized.onnx")
        with contextlib.redirect_stdout(io.StringIO()):
            s = ort.InferenceSession(str(path), opts, providers=providers)
        for _ in range(3):
            s.run(None, {"image": image, "keep": patterns[name]})
        events = json.loads(Path(s.end_profiling()).read_text())
        memcpy = [e for e in events if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")
                  and e.get("args", {}).get("op_name", "").startswith("Memcpy")]
        ifs = [e for e in events if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")
               and e.get("args", {}).get("op_name") == "If"]
        opt = onnx.load(str(tmp / "optimized.onnx"), load_external_data=False)
        profile[name] = {"memcpy_calls_per_run": len(memcpy) / 3, "memcpy_ms_per_run": sum(e["dur"] for e in memcpy) / 3000,
                         "if_ms_per_run": sum(e["dur"] for e in ifs) / 3000,
                         "if_nodes": sum(n.op_type == "If" for n in _walk_nodes(opt.graph)),
                         "memcpy_nodes": sum(n.op_type.startswith("Memcpy") for n in _walk_nodes(opt.graph))}
        shutil.rmtree(tmp, ignore_errors=True)
    data = {"bundle": str(bundle), "blocks": k, "ms": timing, "single_block_increments_ms": singles,
            "all_minus_none_ms": timing["all kept"]["p50"] - none, "profile": profile,
            "gate_overhead_all_kept": timing["all kept"]["p50"] / timing["gates inlined"]["p50"]}
    section.data = data
    lines = [f"Bundle `{bundle.name}`, {k} prunable blocks, partial graph on {ctx.provider} with IO binding "
             f"(output kept on the device), {calls} calls x 3 rounds per pattern, interleaved.", "",
             "| pattern | ms p50 | mean | max |", "|---|---:|---:|---:|"]
    for n in names:
        lines.append(f"| {n} | {fmt(timing[n]['p50'])} | {fmt(timing[n]['mean'])} | {fmt(timing[n]['max'])} |")
    lines += ["", f"- all kept - none kept: {data['all_minus_none_ms']:.2f} ms; sum of the single-block increments "
                  f"{sum(singles):.2f} ms ({', '.join(f'{s:.2f}' for s in singles)})",
              f"- gated with every block kept / gates inlined: {data['gate_overhead_all_kept']:.3f}",
              "", "| keep | If nodes | Memcpy nodes | Memcpy calls/run | Memcpy ms/run | If ms/run (branch included) |",
              "|---|---:|---:|---:|---:|---:|"]
    for n, p in profile.items():
        lines.append(f"| {n} | {p['if_nodes']} | {p['memcpy_nodes']} | {p['memcpy_calls_per_run']:.0f} | "
                     f"{p['memcpy_ms_per_run']:.3f} | {p['if_ms_per_run']:.2f} |")
    section.md = lines
    section.headline = (f"all kept {fmt(timing['all kept']['p50'])} ms, none kept {fmt(none)} ms, inlined "
                        f"{fmt(timing['gates inlined']['p50'])} ms; Memcpy {profile['none kept']['memcpy_calls_per_run']:.0f}"
                        f"/run ({profile['none kept']['memcpy_ms_per_run']:.3f} ms) with none kept")


def tensorrt_section(ctx: Context, section: Section) -> None:
    from vss_edge.runtime.providers import TENSORRT

    bundle = small_bundle(ctx, "gsvnet")
    cache = ctx.bundle_dir / f"{bundle.name}.trt_cache_check"
    shutil.rmtree(cache, ignore_errors=True)
    lines_logged = []

    class Grab(logging.Handler):
        def emit(self, record):
            lines_logged.append(record.getMessage())

    handler = Grab()
    logger = logging.getLogger("vss_edge")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        from vss_edge import runtime

        t0 = time.perf_counter()
        pipe = runtime.load(bundle, device="tensorrt", io_binding=True, threads=ctx.threads, trt_cache_dir=cache)
        first_s = time.perf_counter() - t0
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    providers = {n: s.provider for n, s in pipe.sessions.items()}
    line = next((ln for ln in lines_logged if "running on" in ln), "")
    data = {"providers": providers, "log_line": line, "first_load_s": first_s}
    lines = [f"`load(bundle, device=\"tensorrt\")` of `{bundle.name}`: {line or 'no provider line'} "
             f"(first load {first_s:.1f} s)."]
    frames = ctx.frames[: ctx.args.frames]
    result = compare(ctx, cpu_pipeline(ctx, bundle), pipe, frames)
    data["fp32"] = result
    lines += ["", *method_md(ctx, result, candidate=f"{next(iter(providers.values()))}")]
    head = (f"ends on {', '.join(sorted(set(providers.values())))} (\"{line.removeprefix('vss-edge: ')[:160]}\"); "
            f"agreement vs CPU {fmt(result['agreement_mean'], '.5f')}")
    if set(providers.values()) == {TENSORRT}:
        files = sorted(p.name for p in cache.iterdir()) if cache.is_dir() else []
        from vss_edge import runtime

        t0 = time.perf_counter()
        runtime.load(bundle, device="tensorrt", io_binding=True, threads=ctx.threads, trt_cache_dir=cache)
        data.update(cache_files=files, cached_load_s=time.perf_counter() - t0)
        lines += ["", f"Cache `{cache}`: {len(files)} files; a second load (engines cached) took "
                      f"{data['cached_load_s']:.1f} s."]
        t0 = time.perf_counter()
        fp16 = runtime.load(bundle, device="tensorrt", io_binding=True, threads=ctx.threads, trt_cache_dir=cache,
                            trt_fp16=True)
        data["fp16_first_load_s"] = time.perf_counter() - t0
        r16 = compare(ctx, pipe, fp16, frames)
        data["fp16"] = r16
        lines += ["", "### TensorRT FP16 vs TensorRT FP32", "",
                  *method_md(ctx, r16, candidate="TensorRT FP16", reference="TensorRT FP32")]
        head += f"; FP16 agreement vs FP32 {fmt(r16['agreement_mean'], '.5f')}"
    section.data, section.md, section.headline = data, lines, head


def multistream_section(ctx: Context, section: Section) -> None:
    from vss_edge import runtime

    bundle = small_bundle(ctx, "gsvnet")
    streams = 4
    frames = ctx.frames[: ctx.args.frames]
    shifted = [ctx.frames[(i * 15) % len(ctx.frames):] + ctx.frames[: (i * 15) % len(ctx.frames)] for i in range(streams)]
    one = device_pipeline(ctx, bundle)
    t0 = time.perf_counter()
    for f in frames:
        one.step(f)
    one_fps = len(frames) / (time.perf_counter() - t0)
    multi = runtime.load_streams(bundle, streams, device=ctx.device, threads=ctx.threads)
    t0 = time.perf_counter()
    for i in range(len(frames)):
        multi.step_all([s[i] for s in shifted])
    multi_fps = streams * len(frames) / (time.perf_counter() - t0)
    section.data = {"streams": streams, "frames": len(frames), "one_stream_fps": one_fps, "fps_all_streams": multi_fps}
    section.md = [f"| streams | frames/s (all streams) | one stream frames/s | ratio |", "|---:|---:|---:|---:|",
                  f"| {streams} | {multi_fps:.1f} | {one_fps:.1f} | {multi_fps / one_fps:.2f} |"]
    section.headline = f"{streams} streams {multi_fps:.1f} frames/s vs one stream {one_fps:.1f}"


# Seconds a section needs left in the budget to start (a section runs to its end once started: the
# heavy ones export large bundles or calibrate); the others need only some budget left.
NEEDS_S = {"full": 120.0, "int8": 30.0, "stmg gates full": 90.0}


def needs(name: str, quick: bool) -> float:
    if quick:
        return 0.0
    return NEEDS_S.get(name, NEEDS_S.get(name.split()[0], 0.0))


def plan(ctx: Context) -> list[tuple[str, object]]:
    """(name, function(section)) in priority order: the budget skips from the end."""
    a = ctx.args
    small = [m for m in SMALL_METHODS if m in a.methods]
    full = [m for m in FULL_METHODS if m in a.full]
    steps = [("environment", lambda s: environment(ctx, s))]
    steps += [(f"method {m}", lambda s, m=m: method_section(ctx, s, m)) for m in small]
    steps += [(f"fp16 {m}", lambda s, m=m: precision_section(ctx, s, small_bundle(ctx, m), "fp16", "FP16"))
              for m in small]
    steps.append(("tensorrt", lambda s: tensorrt_section(ctx, s)))
    if "stmg" in small:
        steps.append(("stmg gates", lambda s: gates_section(ctx, s, small_bundle(ctx, "stmg"))))
    steps += [(f"full {m}", lambda s, m=m: full_section(ctx, s, m)) for m in full]
    steps += [(f"int8 {m}", lambda s, m=m: precision_section(ctx, s, small_bundle(ctx, m), "int8", "INT8"))
              for m in small if not a.no_int8]
    steps.append(("multistream", lambda s: multistream_section(ctx, s)))
    if "stmg" in small and not a.no_stmg_full:
        steps.append(("stmg gates full", lambda s: gates_section(ctx, s, seeded_bundle(ctx, "stmg"))))
    if a.only:
        steps = [(n, f) for n, f in steps if any(n.startswith(o.strip()) for o in a.only.split(","))]
    return steps


# --------------------------------------------------------------------------- main


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                   help="where the pipelines under test run (default cuda; cpu: the same checks on the CPU EP with "
                        "IO binding)")
    p.add_argument("--quick", action="store_true", help="small sizes and few frames (the CI test)")
    p.add_argument("--budget-s", type=float, default=420.0, help="skip the sections left after this many seconds")
    p.add_argument("--methods", default=",".join(SMALL_METHODS), help="small trained methods to check")
    p.add_argument("--full", default=",".join(FULL_METHODS), help="full-size seeded methods (gsvnet,mpvss or none)")
    p.add_argument("--frames", type=int, help="frames per comparison (default 20; --quick 6)")
    p.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads on the CPU (default: its choice)")
    p.add_argument("--no-int8", action="store_true", help="skip the INT8 sections")
    p.add_argument("--no-stmg-full", action="store_true", help="skip the STMG DDRNet-39 gate timing")
    p.add_argument("--only", help="run only the sections whose names start with these (comma-separated)")
    p.add_argument("--bundle-dir", default=os.path.join(tempfile.gettempdir(), "vss_edge_gpu_check"),
                   help="where bundles are exported once and reused")
    p.add_argument("--out-dir", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--out", help="report file name (default gpu_<device>.md)")
    p.add_argument("--torch-libs", action="store_true",
                   help="import torch first, so that ONNX Runtime uses the CUDA and cuDNN libraries PyTorch loads "
                        "(where onnxruntime.preload_dlls finds none; gpu_run.sh decides)")
    p.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)  # the child process of the environment
    args = p.parse_args(argv)
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip() and m.strip() != "none"]
    args.full = [m.strip() for m in args.full.split(",") if m.strip() and m.strip() != "none"]
    args.frames = args.frames or (6 if args.quick else 20)
    return args


def device_slug(device: str) -> str:
    if device == "cpu":
        return "cpu"
    name = nvidia_smi().get("name")
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") if name else "cuda"


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.torch_libs:
        import torch  # noqa: F401  (loads its CUDA and cuDNN libraries before onnxruntime looks for them)
    if args.probe:
        print(json.dumps(probe(), default=_jsonable))
        return 0
    start = time.perf_counter()
    provider = {"cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider"}[args.device]
    out_md = Path(args.out_dir) / (args.out or f"gpu_{device_slug(args.device)}.md")
    import onnxruntime as ort

    meta = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "code": code_version(),
            "command": " ".join(["python benchmarks/gpu_check.py", *(argv if argv is not None else sys.argv[1:])]),
            "device": args.device, "provider": provider, "cpu": cpu_model(), "python": platform.python_version(),
            "onnxruntime": ort.__version__, "quick": args.quick, "budget_s": args.budget_s,
            "torch_libs": args.torch_libs,
            "device_description": (nvidia_smi().get("name") or "CUDA (no GPU name from nvidia-smi)")
            if args.device == "cuda" else "CPU (the CUDA path's machinery, on the CPU EP)"}
    report = Report(out_md, meta)
    tmp = Path(tempfile.mkdtemp(prefix="vss_gpu_check_"))
    bundle_dir = Path(args.bundle_dir)
    bundle_dir.mkdir(parents=True, exist_ok=True)
    ctx = Context(args, args.device, provider, start + args.budget_s, bundle_dir, tmp, [],
                  QUICK_SIZE if args.quick else DEMO_SIZE)

    def stop(signum, frame):
        raise Stop()

    signal.signal(signal.SIGTERM, stop)
    interrupted = None
    try:
        ctx.frames = clip_frames(max(args.frames, 8))
        for name, fn in plan(ctx):
            section = Section(name)
            report.sections.append(section)
            if interrupted or ctx.left() <= needs(name, args.quick):
                section.status = "skipped"
                section.headline = (f"not run: {interrupted}" if interrupted else
                                    f"not run: the budget of {args.budget_s:.0f} s was spent "
                                    f"({time.perf_counter() - start:.0f} s in)" if ctx.left() <= 0 else
                                    f"not run: it needs about {needs(name, args.quick):.0f} s and the budget has "
                                    f"{ctx.left():.0f} s left")
                continue
            log(f"[{time.perf_counter() - start:5.0f} s] {name}")
            t0 = time.perf_counter()
            try:
                fn(section)
                section.status = "ok"
            except Skip as e:
                section.status, section.headline = "skipped", str(e)
            except Stop:
                section.status, section.error = "failed", "stopped by SIGTERM"
                interrupted = "stopped by SIGTERM"
            except KeyboardInterrupt:
                section.status, section.error = "failed", "interrupted (Ctrl-C)"
                interrupted = "interrupted (Ctrl-C)"
            except Exception as e:  # noqa: BLE001  (every section is guarded: record it, go on)
                section.status, section.error = "failed", short(e)
                section.data["traceback"] = traceback.format_exc(limit=8)
                log(f"  failed: {short(e)}")
            section.seconds = time.perf_counter() - t0
            meta["run_s"] = time.perf_counter() - start
            report.write()
    finally:
        meta["run_s"] = time.perf_counter() - start
        report.write()
        shutil.rmtree(tmp, ignore_errors=True)
    log(f"wrote {out_md} and {out_md.with_suffix('.json').name} ({meta['run_s']:.0f} s)")
    print(report.markdown(), end="")
    return 143 if interrupted == "stopped by SIGTERM" else 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
