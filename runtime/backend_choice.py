"""backend="auto": per graph, the fastest backend that keeps the user's agreement floor (torch-free).

How `choose_backends` chooses, once per bundle, machine and software (then from its cache):
1. Candidates: ONNX Runtime on the CPU (the reference: the bundle as it is), OpenVINO at f32, and
   OpenVINO at bf16 only when the user allows bf16 (precision="bf16"). Without the openvino
   package, ONNX Runtime alone (the log line says so).
2. Frames: the first MEASURE_FRAMES frames of the sample clip shipped with the package, run by the
   ONNX Runtime pipeline with the bundle's own scheduler, so that every graph sees its real inputs
   (key and non-key frames, the recurrent state); each graph's feeds are recorded.
3. Speed: each graph on each candidate, on its recorded feeds: the median of REPEATS runs after a
   warm-up run.
4. Agreement: for each graph, the candidates faster than ONNX Runtime, fastest first, each run in
   the pipeline with that graph alone moved to it; the first whose labels agree with ONNX Runtime's
   to at least `floor` (mIoU over the frames, runtime.label_metrics) is the graph's choice.
5. Together: the pipeline with every graph on its choice must keep the floor too; while it does
   not, the graph whose own agreement was lowest goes back to ONNX Runtime.
6. Speed together: that pipeline must also be faster than ONNX Runtime's alone (mean frame time
   over the same frames; when it looks no faster, both are timed once more and the faster of each
   pair's runs compared); while it is not, the graph that gained least per call goes back. Graphs
   timed alone can lose their gain in the pipeline (copies between runtimes, two thread pools on
   the same cores), and small gains drown in the host's own per-frame work: the choice must show
   where the user looks, the frame time.

The floor is end-to-end label agreement (mIoU against ONNX Runtime's labels, classes present in
either map), the figure a user reads in `vss-edge check`; a per-tensor floor (SQNR, cosine) would
have to be set per output kind (logits, flows, features, masks) and says little about labels.
Default DEFAULT_FLOOR. The result is cached beside the bundle (`<bundle>.backend_choice.json`;
never inside it: the bundle's files are hashed), keyed by the manifest's sha256 (which names every
graph's sha256), the CPU (model and bf16 / int8 flags), the ONNX Runtime and OpenVINO versions, the
threads, the precision and the floor: any change measures again. A cache that cannot be written
is said in the log line and the choice is used all the same.
"""
from __future__ import annotations

import hashlib
import json
import logging
import statistics
import time
from pathlib import Path

import numpy as np

from vss_edge.runtime.errors import OutputError, VssEdgeError

log = logging.getLogger("vss_edge")

DEFAULT_FLOOR = 0.99  # mIoU agreement with ONNX Runtime's labels (bf16 on the trained weights: 0.9914-0.9978)
MEASURE_FRAMES = 10  # two key-frame intervals of 5: key and non-key frames, state carried
REPEATS = 5
CACHE_SUFFIX = ".backend_choice.json"
RULES = 2  # the choice's steps (2: speed together); a cache from other rules measures again
REFERENCE = ("onnxruntime", "f32")


def cache_path(bundle_dir: Path) -> Path:
    """`<bundle>.backend_choice.json`, beside the bundle folder."""
    bundle_dir = Path(bundle_dir).resolve()
    return bundle_dir.with_name(bundle_dir.name + CACHE_SUFFIX)


def check_floor(floor: float) -> None:
    if isinstance(floor, bool) or not isinstance(floor, (int, float)) or not 0.0 <= floor <= 1.0:
        raise VssEdgeError(f"agreement floor must be a number from 0 to 1 (mIoU agreement), got {floor!r}")


def cache_key(manifest, precision: str, threads: int | None, floor: float) -> str:
    """What a cached choice depends on, as one string (see the module docstring)."""
    import onnxruntime as ort

    from vss_edge.runtime.cpu import cpu_bf16_support, cpu_int8_support, cpu_model
    from vss_edge.runtime.openvino_session import openvino_version

    bf16, int8 = cpu_bf16_support(), cpu_int8_support()
    manifest_sha = hashlib.sha256((Path(manifest.root) / "manifest.json").read_bytes()).hexdigest()
    parts = {"manifest_sha256": manifest_sha, "cpu": cpu_model(), "bf16": bf16["bf16"], "amx": bf16["amx_bf16"],
             "vnni": int8["vnni"], "onnxruntime": ort.__version__, "openvino": openvino_version(),
             "threads": threads, "precision": precision, "floor": floor, "frames": MEASURE_FRAMES,
             "rules": RULES}
    return json.dumps(parts, sort_keys=True)


def read_cache(path: Path, key: str) -> dict | None:
    """The cached choice {graph: {"backend", "precision", ...}} for key, None if none (or unreadable)."""
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    entry = entries.get(key) if isinstance(entries, dict) else None
    return entry if isinstance(entry, dict) and isinstance(entry.get("graphs"), dict) else None


def write_cache(path: Path, key: str, entry: dict) -> str | None:
    """Add entry under key to the cache file (atomically); None, or why it could not be written."""
    from vss_edge.runtime.outputs import write_text_atomic

    try:
        entries = json.loads(path.read_text())
        if not isinstance(entries, dict):
            entries = {}
    except (OSError, ValueError):
        entries = {}
    entries[key] = entry
    try:
        write_text_atomic(path, json.dumps(entries, indent=1) + "\n")
    except OutputError as e:
        return str(e)
    return None


def _open(manifest, candidate: tuple[str, str], threads, thread_pool: str, graphs) -> dict:
    """{graph: session} for the graphs named, on candidate (backend, precision)."""
    from vss_edge.runtime.openvino_session import open_openvino_sessions
    from vss_edge.runtime.providers import CPU
    from vss_edge.runtime.session import GraphSession, shared_pool_threads

    if candidate[0] == "openvino":
        return open_openvino_sessions(manifest, candidate[1], threads, graphs)
    shared = thread_pool == "shared" and shared_pool_threads(threads) is not None
    return {g: GraphSession(manifest.graph_path(g), manifest.graphs[g], [CPU], threads, shared_pool=shared)
            for g in graphs}


def _open_candidates(manifest, precision: str, threads, thread_pool: str) -> tuple[dict, str | None]:
    """{(backend, precision): {graph: session}} with ONNX Runtime first; and a note when OpenVINO is
    not there. A bf16 candidate OpenVINO compiles to f32 (no bf16 arithmetic here) is left out."""
    from vss_edge.runtime.openvino_session import openvino_version

    candidates = {REFERENCE: _open(manifest, REFERENCE, threads, thread_pool, manifest.graphs)}
    if openvino_version() is None:
        return candidates, "openvino is not installed: ONNX Runtime alone (pip install 'vss-edge[openvino]')"
    for p in ("f32", "bf16") if precision == "bf16" else ("f32",):
        sessions = _open(manifest, ("openvino", p), threads, thread_pool, manifest.graphs)
        if all(s.precision == p for s in sessions.values()):
            candidates[("openvino", p)] = sessions
    return candidates, None


def _run_pipeline(manifest, sessions: dict, frames) -> tuple[list[np.ndarray], float]:
    """The labels of `frames` through a pipeline on `sessions`, and its mean milliseconds a frame."""
    from vss_edge.runtime.pipeline import Pipeline
    from vss_edge.runtime.schedulers import choose_scheduler

    pipe = Pipeline(manifest, dict(sessions), choose_scheduler(manifest.scheduler))
    labels, start = [], time.perf_counter()
    for f in frames:
        labels.append(pipe.step(f).labels)
    return labels, (time.perf_counter() - start) * 1000.0 / max(len(labels), 1)


def _agreement(reference: list[np.ndarray], labels: list[np.ndarray], classes: int) -> float:
    from vss_edge.runtime.label_metrics import confusion, miou

    cm = sum(confusion(r, c, classes) for r, c in zip(reference, labels))
    value = miou(cm)
    return 1.0 if value is None else value


def _time(session, feeds: list[dict]) -> float:
    """Median milliseconds of one run of `session` over its recorded feeds (after a warm-up)."""
    session.run(feeds[0])
    times = []
    for i in range(REPEATS):
        t0 = time.perf_counter()
        session.run(feeds[i % len(feeds)])
        times.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(times)


def measure_choice(manifest, candidates: dict, floor: float) -> dict:
    """The choice from measurements (steps 2-6 of the module docstring): {"graphs": {graph: {"backend",
    "precision", "measured_ms": {"backend precision": ms}, "agreement": {"backend precision": mIoU of
    that graph alone on it}}}, "together": mIoU of the chosen assignment (None if all stay on ONNX
    Runtime), "frame_ms": {"onnxruntime f32": mean ms a frame, "chosen": the chosen assignment's (None
    if all stay)}}."""
    from vss_edge.runtime.pipeline import Pipeline
    from vss_edge.runtime.recording import record_feeds
    from vss_edge.runtime.schedulers import choose_scheduler
    from vss_edge.runtime.sources import read_frames, sample_clip_path

    frames = read_frames(sample_clip_path(), 0, MEASURE_FRAMES)
    classes = len(manifest.class_names)
    reference = candidates[REFERENCE]
    pipe = Pipeline(manifest, dict(reference), choose_scheduler(manifest.scheduler))
    feeds = record_feeds(pipe, frames, limit_per_graph=3)
    ref_labels, ref_ms = _run_pipeline(manifest, reference, frames)
    label = {c: f"{c[0]} {c[1]}" for c in candidates}
    choice, chosen = {}, {}
    for graph in manifest.graphs:
        if not feeds[graph]:  # the frames never ran it: nothing to measure, it stays on the reference
            choice[graph] = {"backend": REFERENCE[0], "precision": REFERENCE[1], "measured_ms": {}, "agreement": {},
                             "note": f"not run on the first {MEASURE_FRAMES} frames"}
            chosen[graph] = REFERENCE
            continue
        ms = {c: _time(sessions[graph], feeds[graph]) for c, sessions in candidates.items()}
        agreement, pick = {}, REFERENCE
        for c in sorted((c for c in candidates if c != REFERENCE and ms[c] < ms[REFERENCE]), key=ms.get):
            moved = dict(reference, **{graph: candidates[c][graph]})
            agreement[label[c]] = _agreement(ref_labels, _run_pipeline(manifest, moved, frames)[0], classes)
            if agreement[label[c]] >= floor:
                pick = c
                break
        chosen[graph] = pick
        choice[graph] = {"backend": pick[0], "precision": pick[1], "measured_ms": {label[c]: v for c, v in ms.items()},
                         "agreement": agreement}
    together = chosen_ms = None
    while any(c != REFERENCE for c in chosen.values()):
        assignment = {g: candidates[c][g] for g, c in chosen.items()}
        labels, chosen_ms = _run_pipeline(manifest, assignment, frames)
        together = _agreement(ref_labels, labels, classes)
        moved = [g for g, c in chosen.items() if c != REFERENCE]
        if together >= floor and chosen_ms >= ref_ms:  # once more each: the faster run of each counts
            ref_ms = min(ref_ms, _run_pipeline(manifest, reference, frames)[1])
            chosen_ms = min(chosen_ms, _run_pipeline(manifest, assignment, frames)[1])
        if together < floor:
            back = min(moved, key=lambda g: choice[g]["agreement"][label[chosen[g]]])
            why = f"with the other choices the labels agreed {together:.4f} < floor {floor}"
        elif chosen_ms >= ref_ms:
            back = min(moved, key=lambda g: choice[g]["measured_ms"][label[REFERENCE]]
                       - choice[g]["measured_ms"][label[chosen[g]]])
            why = (f"the pipeline with the other choices ran {chosen_ms:.1f} ms a frame, not faster than "
                   f"{label[REFERENCE]} alone ({ref_ms:.1f} ms)")
        else:
            break
        chosen[back] = REFERENCE
        choice[back].update(backend=REFERENCE[0], precision=REFERENCE[1], note=f"back on {label[REFERENCE]}: {why}")
        together = chosen_ms = None
    return {"graphs": choice, "together": together,
            "frame_ms": {label[REFERENCE]: round(ref_ms, 2), "chosen": None if chosen_ms is None else round(chosen_ms, 2)}}


def choose_backends(manifest, precision: str = "f32", threads: int | None = None, floor: float | None = None,
                    thread_pool: str = "per_session") -> dict:
    """Sessions for every graph of the bundle, each on its chosen backend (see the module docstring),
    each carrying `choice` (what was measured; describe_backends records it); one log line says what
    was chosen and why."""
    floor = DEFAULT_FLOOR if floor is None else floor
    check_floor(floor)
    where = cache_path(manifest.root)
    key = cache_key(manifest, precision, threads, floor)
    entry, sessions = read_cache(where, key), {}
    if entry is not None and set(entry["graphs"]) == set(manifest.graphs):
        note, cached = f"cached in {where}", True
        for graph, c in entry["graphs"].items():  # only the chosen sessions are opened
            sessions.update(_open(manifest, (c["backend"], c["precision"]), threads, thread_pool, [graph]))
    else:
        candidates, note = _open_candidates(manifest, precision, threads, thread_pool)
        cached = False
        entry = measure_choice(manifest, candidates, floor) if len(candidates) > 1 else {
            "graphs": {g: {"backend": REFERENCE[0], "precision": REFERENCE[1]} for g in manifest.graphs},
            "together": None}
        if note is None:
            problem = write_cache(where, key, entry)
            note = f"not cached: {problem}" if problem else f"measured now, cached in {where}"
        sessions = {g: candidates[(c["backend"], c["precision"])][g] for g, c in entry["graphs"].items()}
    for graph, c in entry["graphs"].items():
        sessions[graph].choice = dict(c, floor=floor, cached=cached)
    picks = ", ".join(f"{g}: {c['backend']} {c['precision']}" + _gain(c) for g, c in entry["graphs"].items())
    frame_ms = entry.get("frame_ms") or {}
    if frame_ms.get("chosen"):
        picks += f"; the pipeline {frame_ms[' '.join(REFERENCE)] / frame_ms['chosen']:.2f}x ONNX Runtime's"
    log.info("vss-edge: backend auto (floor %.4g mIoU agreement with ONNX Runtime, %s allowed; %s): %s", floor,
             "bf16" if precision == "bf16" else "f32 only", note, picks)
    return sessions


def _gain(c: dict) -> str:
    """' (1.8x ONNX Runtime)' from a graph's measured times, '' where nothing was measured."""
    ms = c.get("measured_ms") or {}
    ref, mine = ms.get(" ".join(REFERENCE)), ms.get(f"{c['backend']} {c['precision']}")
    return f" ({ref / mine:.2f}x)" if ref and mine and (c["backend"], c["precision"]) != REFERENCE else ""
