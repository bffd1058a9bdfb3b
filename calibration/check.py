"""Accuracy check of a candidate bundle (INT8/FP16) against its FP32 reference (torch-free).

`vss-edge check REFERENCE CANDIDATE VIDEO [--labels DIR] [--json F]` is `run_check` + `report.write_reports`.

Two levels:
- per graph (`compare_graphs`): both bundles' graphs run on the SAME recorded feeds (the
  reference pipeline's own inputs, so errors do not compound); at each output SQNR (dB),
  cosine similarity and max abs error, or for integer (label) outputs the fraction of equal
  elements;
- end to end (`compare_pipelines`): both pipelines run over the same frames; the candidate's
  labels are scored against the reference's as mIoU agreement, overall, per class and by
  group: the distance from the last key frame (0 = key frame) for key-frame methods (GSVNet),
  the path index for TDNet (round robin, no key frames; the result says which in `grouping`);
  temporal consistency of each; mIoU against ground truth when label maps are given; speed.

Conventions: calibration/metrics.py (also in every result under `conventions`).
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from vss_edge.calibration.collect import record_feeds
from vss_edge.calibration.metrics import (
    CONVENTIONS,
    confusion,
    iou_per_class,
    load_label_map,
    miou,
    output_metrics,
    per_class,
    pixel_accuracy,
)
from vss_edge.runtime.errors import VssEdgeError
from vss_edge.runtime.profiling import latency_stats
from vss_edge.runtime.sources import read_frames

# ---------------------------------------------------------------- compatibility

def _wxh(m) -> str:
    return f"{m.width}x{m.height}"


def check_compatible(ref_manifest, cand_manifest) -> None:
    """Raise VssEdgeError unless the candidate bundle can be compared with the reference.

    Both are runtime.manifest.Manifest. Required equal: method, input width x height, class
    names, scheduler, graph names, and each graph's input/output names and shapes. Dtypes
    may differ (an FP16 graph may take float16); the message names every mismatch found.
    """
    r, c = ref_manifest, cand_manifest
    if c.method != r.method:
        raise VssEdgeError(f"candidate is {c.method} but reference is {r.method}: a candidate must be the same "
                           f"method as its reference")
    problems = []
    if (c.height, c.width) != (r.height, r.width):
        problems.append(f"candidate is {_wxh(c)} but reference is {_wxh(r)} (input width x height)")
    if tuple(c.class_names) != tuple(r.class_names):
        if len(c.class_names) != len(r.class_names):
            problems.append(f"candidate has {len(c.class_names)} classes but reference has {len(r.class_names)}")
        else:
            diff = [i for i, (a, b) in enumerate(zip(c.class_names, r.class_names)) if a != b]
            problems.append(f"candidate's class {diff[0]} is '{c.class_names[diff[0]]}' but reference's is "
                            f"'{r.class_names[diff[0]]}' ({len(diff)} class name(s) differ)")
    sched = (r.scheduler.get("name"), r.scheduler.get("params", {}))
    csched = (c.scheduler.get("name"), c.scheduler.get("params", {}))
    if sched != csched:
        problems.append(f"candidate's scheduler is {csched[0]} {csched[1]} but reference's is {sched[0]} {sched[1]}")
    if set(c.graphs) != set(r.graphs):
        problems.append(f"candidate has graphs {sorted(c.graphs)} but reference has {sorted(r.graphs)}")
    for name in sorted(set(c.graphs) & set(r.graphs)):
        for kind in ("inputs", "outputs"):
            rio = [(t.name, tuple(t.shape)) for t in getattr(r.graphs[name], kind)]
            cio = [(t.name, tuple(t.shape)) for t in getattr(c.graphs[name], kind)]
            if sorted(rio) != sorted(cio):
                fmt = lambda io: ", ".join(f"{n} {list(s)}" for n, s in io)  # noqa: E731
                problems.append(f"graph '{name}' {kind}: candidate has [{fmt(cio)}] but reference has [{fmt(rio)}]")
    if problems:
        raise VssEdgeError(f"candidate '{c.root}' does not match reference '{r.root}': " + "; ".join(problems))


# ---------------------------------------------------------------- per-graph comparison

def compare_graphs(ref_pipe, cand_pipe, feeds_by_graph: dict[str, list[dict]]) -> dict:
    """Run each graph of both pipelines on the same recorded feeds; aggregate errors per output.

    feeds_by_graph: graph name -> list of feed dicts (numpy), e.g. from `record_feeds` on the
    reference pipeline or calibration.collect.collect_inputs. Graphs without feeds are listed
    with samples 0. Returns {graph: {"reference_precision", "candidate_precision", "samples",
    "outputs": {output: {...}}}} where a float output has kind "float", samples, sqnr_db_mean
    (mean of per-sample dB; inf if any sample is exact), sqnr_db_min, sqnr_db_pooled
    (10 log10 of summed signal over summed noise), cosine_mean, cosine_min, max_abs (max over
    samples) and identical; an integer output has kind "int", agreement_mean, agreement_min,
    max_abs and identical.
    """
    result = {}
    missing = [g for g in ref_pipe.sessions if g not in cand_pipe.sessions]
    if missing:
        raise VssEdgeError(f"candidate has no graph(s) {', '.join(missing)}")
    for name in ref_pipe.sessions:
        ref_s, cand_s = ref_pipe.sessions[name], cand_pipe.sessions[name]
        samples = list(feeds_by_graph.get(name, []))
        per_output: dict[str, list[dict]] = {}
        energy: dict[str, list[float]] = {}
        for feeds in samples:
            ref_out = ref_s.run_on_host(feeds)
            cand_out = cand_s.run_on_host(feeds)
            for out_name, ref_value in ref_out.items():
                m = output_metrics(ref_value, cand_out[out_name])
                per_output.setdefault(out_name, []).append(m)
                if m["kind"] == "float":
                    r = ref_value.astype(np.float64)
                    e = r - cand_out[out_name].astype(np.float64)
                    acc = energy.setdefault(out_name, [0.0, 0.0])
                    acc[0] += float(np.sum(r * r))
                    acc[1] += float(np.sum(e * e))
        outputs = {}
        for out_name, ms in per_output.items():
            if ms[0]["kind"] == "float":
                sq = [m["sqnr_db"] for m in ms]
                signal, noise = energy[out_name]
                pooled = math.inf if noise == 0 else (-math.inf if signal == 0 else 10 * math.log10(signal / noise))
                outputs[out_name] = {
                    "kind": "float", "samples": len(ms),
                    "sqnr_db_mean": float(np.mean(sq)), "sqnr_db_min": float(np.min(sq)), "sqnr_db_pooled": pooled,
                    "cosine_mean": float(np.mean([m["cosine"] for m in ms])),
                    "cosine_min": float(np.min([m["cosine"] for m in ms])),
                    "max_abs": float(np.max([m["max_abs"] for m in ms])),
                    "identical": all(m["max_abs"] == 0.0 for m in ms),
                }
            else:
                ag = [m["agreement"] for m in ms]
                outputs[out_name] = {
                    "kind": "int", "samples": len(ms), "agreement_mean": float(np.mean(ag)),
                    "agreement_min": float(np.min(ag)), "max_abs": float(np.max([m["max_abs"] for m in ms])),
                    "identical": all(m["max_abs"] == 0.0 for m in ms),
                }
        result[name] = {
            "reference_precision": ref_s.spec.precision, "candidate_precision": cand_s.spec.precision,
            "reference_backend": f"{ref_s.backend} {ref_s.precision}",
            "candidate_backend": f"{cand_s.backend} {cand_s.precision}",
            "samples": len(samples), "outputs": outputs,
        }
    return result


def _ratio(cand, ref):
    return float(cand / ref) if cand is not None and ref else None


def _group_of(pipe, result, since_key: int) -> int:
    """Key-frame methods: frames since the last key frame (0 on a key frame). Others: the path
    index that ran (TDNet)."""
    return since_key if result.path is None else result.path


def compare_pipelines(ref_pipe, cand_pipe, frames: Iterable[np.ndarray], labels_dir=None,
                      first_index: int = 0, warmup: int = 1) -> dict:
    """Run both pipelines (reset first) over the same frames; score the candidate against the reference.

    frames: BGR uint8 frames (a list or a vss_edge.runtime.sources source), read once.
    labels_dir: optional folder of ground-truth PNGs named by video frame index: frame i of
    `frames` is video frame first_index + i. warmup: frames left out of the speed statistics
    (when more frames than that were run). VssEdgeError if there are no frames, or a labels
    dir has no map for any of them. Returns {"grouping", "frames", "key_frame_mismatches",
    "per_frame", "agreement", "by_group", "per_class", "temporal_consistency",
    "ground_truth", "speed"}: agreement {miou, pixel_agreement}; by_group rows {group, frames,
    miou, pixel_agreement}; per_class rows {class, name, iou, reference_pixels,
    candidate_pixels}; temporal_consistency {reference, candidate, difference}; ground_truth
    None or {frames, reference/candidate: {miou, pixel_accuracy, per_class_iou}, miou_difference};
    speed {frame: {reference, candidate: {count, mean_ms, p50_ms, p99_ms, max_ms}, ratio_mean, ratio_p50},
    graphs: {g: {reference, candidate: {calls, mean_ms}, ratio}}}.
    """
    names = ref_pipe.class_names
    k = len(names)
    keyframes = ref_pipe.program.scheduler_needs == "is_key"
    labels_dir = Path(labels_dir) if labels_dir is not None else None
    if labels_dir is not None and not labels_dir.is_dir():
        raise VssEdgeError(f"--labels '{labels_dir}' is not a folder")
    ref_pipe.reset()
    cand_pipe.reset()
    total_cm = np.zeros((k, k), np.int64)
    group_cm: dict[int, np.ndarray] = {}
    group_frames: dict[int, int] = {}
    gt_cm = {"reference": np.zeros((k, k), np.int64), "candidate": np.zeros((k, k), np.int64)}
    gt_frames = 0
    stable = {"reference": [0, 0], "candidate": [0, 0]}  # unchanged pixels, compared pixels
    prev = {"reference": None, "candidate": None}
    per_frame, timings = [], {"reference": [], "candidate": []}
    key_mismatches = 0
    since_key = 0
    n = 0
    for i, frame in enumerate(frames):
        r = ref_pipe.step(frame)
        c = cand_pipe.step(frame)
        since_key = 0 if r.is_key else since_key + 1
        group = _group_of(ref_pipe, r, since_key)
        key_mismatches += int(r.is_key != c.is_key)
        cm = confusion(r.labels, c.labels, k)
        total_cm += cm
        group_cm.setdefault(group, np.zeros((k, k), np.int64))
        group_cm[group] += cm
        group_frames[group] = group_frames.get(group, 0) + 1
        per_frame.append({"index": first_index + i, "group": group, "is_key": bool(r.is_key),
                          "miou": miou(cm), "pixel_agreement": pixel_accuracy(cm)})
        for who, res in (("reference", r), ("candidate", c)):
            if prev[who] is not None and prev[who].shape == res.labels.shape:
                stable[who][0] += int(np.count_nonzero(prev[who] == res.labels))
                stable[who][1] += res.labels.size
            prev[who] = res.labels
            timings[who].append((res.total_ms, dict(res.timings_ms)))  # not the labels: memory stays flat
        if labels_dir is not None:
            gt = load_label_map(labels_dir, first_index + i, k)
            if gt is not None:
                gt_frames += 1
                for who, res in (("reference", r), ("candidate", c)):
                    pred = res.labels
                    if pred.shape != gt.shape:
                        import cv2

                        pred = cv2.resize(pred, (gt.shape[1], gt.shape[0]), interpolation=cv2.INTER_NEAREST)
                    gt_cm[who] += confusion(gt, pred, k)
        n += 1
    if n == 0:
        raise VssEdgeError("no frames to compare (the video or frame range is empty)")
    if labels_dir is not None and gt_frames == 0:
        raise VssEdgeError(f"--labels '{labels_dir}': no label map matches the frames compared (expected names "
                           f"{first_index:06d}.png .. {first_index + n - 1:06d}.png)")

    tc = {who: (s[0] / s[1] if s[1] else None) for who, s in stable.items()}
    temporal = {"reference": tc["reference"], "candidate": tc["candidate"],
                "difference": (tc["candidate"] - tc["reference"]) if tc["reference"] is not None else None,
                "definition": "fraction of pixels whose label is unchanged from the previous frame"}

    ground_truth = None
    if labels_dir is not None:
        ground_truth = {"labels_dir": str(labels_dir), "frames": gt_frames}
        for who, cm in gt_cm.items():
            ground_truth[who] = {"miou": miou(cm), "pixel_accuracy": pixel_accuracy(cm),
                                 "per_class_iou": [None if np.isnan(v) else float(v) for v in iou_per_class(cm)]}
        a, b = ground_truth["candidate"]["miou"], ground_truth["reference"]["miou"]
        ground_truth["miou_difference"] = (a - b) if a is not None and b is not None else None

    measured = {who: (rs[warmup:] if len(rs) > warmup else rs) for who, rs in timings.items()}
    speed = {"warmup_frames_skipped": warmup if n > warmup else 0, "frame": {}, "graphs": {}}
    for who, rs in measured.items():
        speed["frame"][who] = latency_stats([total for total, _ in rs])
    speed["frame"]["ratio_mean"] = _ratio(speed["frame"]["candidate"]["mean_ms"], speed["frame"]["reference"]["mean_ms"])
    speed["frame"]["ratio_p50"] = _ratio(speed["frame"]["candidate"]["p50_ms"], speed["frame"]["reference"]["p50_ms"])
    for g in ref_pipe.sessions:
        row = {}
        for who, rs in measured.items():
            ms = [t[g] for _, t in rs if g in t]
            row[who] = {"calls": len(ms), "mean_ms": float(np.mean(ms)) if ms else None}
        row["ratio"] = _ratio(row["candidate"]["mean_ms"], row["reference"]["mean_ms"])
        speed["graphs"][g] = row

    return {
        "grouping": {
            "by": "distance_from_key" if keyframes else "path_index",
            "description": ("frames since the last key frame (0 = the key frame itself)" if keyframes else
                            f"method '{ref_pipe.manifest.method}' has no key frames: frames are grouped by the "
                            f"index of the sub-network path that ran them"),
        },
        "frames": n,
        "first_index": first_index,
        "key_frames": sum(1 for f in per_frame if f["is_key"]),
        "key_frame_mismatches": key_mismatches,
        "agreement": {"miou": miou(total_cm), "pixel_agreement": pixel_accuracy(total_cm)},
        "by_group": [{"group": g, "frames": group_frames[g], "miou": miou(group_cm[g]),
                      "pixel_agreement": pixel_accuracy(group_cm[g])} for g in sorted(group_cm)],
        "per_class": per_class(total_cm, names),
        "temporal_consistency": temporal,
        "ground_truth": ground_truth,
        "speed": speed,
        "per_frame": per_frame,
    }


# ---------------------------------------------------------------- the whole check

def _bundle_info(pipe) -> dict:
    m = pipe.manifest
    return {"bundle": str(m.root), "method": m.method, "height": m.height, "width": m.width,
            "device": pipe.device, "backend": pipe.backends()["backend"],
            "graphs": {n: {"precision": g.precision, "calibration": g.calibration, "backend": pipe.sessions[n].backend,
                           "compute_precision": pipe.sessions[n].precision} for n, g in m.graphs.items()}}


def check_split(cand_manifest, video, start: int, stop: int | None) -> None:
    """Refuse to evaluate a candidate on the frames its INT8 calibration saw.

    A graph's calibration record names its video (file name and sha256) and frames
    "A:B"; if that is this video and the ranges overlap, VssEdgeError.
    """
    from vss_edge.calibration.collect import FrameRange
    from vss_edge.runtime.manifest import sha256_file

    path = Path(video)
    sha = sha256_file(path) if path.is_file() else None
    evaluated = FrameRange(start, stop if stop is not None else 1 << 62)
    for name, graph in cand_manifest.graphs.items():
        record = graph.calibration or {}
        if "frames" not in record or "video" not in record:
            continue
        same = record.get("video_sha256") == sha if sha and "video_sha256" in record else record["video"] == path.name
        if same and FrameRange.parse(record["frames"]).overlaps(evaluated):
            raise VssEdgeError(f"graph '{name}' of the candidate was calibrated on frames {record['frames']} of "
                               f"'{path.name}', which overlap the evaluated frames {evaluated.start}:"
                               f"{'' if stop is None else stop}; evaluate on other frames (--frames)")


def run_check(reference, candidate, video, labels_dir=None, start: int = 0, stop: int | None = None,
              device: str = "cpu", threads: int | None = None, graph_samples: int | None = 32,
              warmup: int = 1, backend: str = "onnxruntime", precision: str | None = None,
              candidate_backend: str = "onnxruntime", candidate_precision: str | None = None,
              agreement_floor: float | None = None) -> dict:
    """The full check: compatibility, per-graph errors, end-to-end agreement; returns a dict.

    reference, candidate: bundle folders, each loaded on its backend and precision (runtime.load's
    backend / precision; agreement_floor for 'auto'): the same bundle twice with another backend or
    precision for the candidate shows what that backend costs, as Polygraphy's `run --onnxrt --trt`
    does; video: a video file or image folder; frames
    start..stop-1 are used (labels named by those indices). graph_samples: recorded feeds
    kept per graph for the per-graph comparison (None: all). Top-level keys: "reference",
    "candidate" (bundle info), "video", "frame_range", "conventions", "graphs" (compare_graphs),
    "end_to_end" (compare_pipelines). VssEdgeError for an incompatible candidate or bad input.
    """
    from vss_edge import runtime
    from vss_edge.runtime.manifest import load_manifest

    cand_manifest = load_manifest(candidate)
    check_compatible(load_manifest(reference), cand_manifest)
    check_split(cand_manifest, video, start, stop)
    frames = read_frames(video, start, stop)
    ref_pipe = runtime.load(reference, device=device, threads=threads, backend=backend, precision=precision,
                            agreement_floor=agreement_floor)
    cand_pipe = runtime.load(candidate, device=device, threads=threads, backend=candidate_backend,
                             precision=candidate_precision, agreement_floor=agreement_floor)
    return check_pipelines(ref_pipe, cand_pipe, video, labels_dir, start, stop, graph_samples, warmup, frames)


def check_pipelines(ref_pipe, cand_pipe, video, labels_dir=None, start: int = 0, stop: int | None = None,
                    graph_samples: int | None = 32, warmup: int = 1, frames: list | None = None) -> dict:
    """run_check on loaded pipelines of compatible bundles (a fleet's worker keeps them across
    videos): the same result. frames: the video's frames start..stop-1 if already read (else read
    here, after refusing frames the candidate was calibrated on)."""
    if frames is None:
        check_split(cand_pipe.manifest, video, start, stop)
        frames = read_frames(video, start, stop)
    feeds = record_feeds(ref_pipe, frames, graph_samples)
    graphs = compare_graphs(ref_pipe, cand_pipe, feeds)
    del feeds
    end_to_end = compare_pipelines(ref_pipe, cand_pipe, frames, labels_dir, first_index=start, warmup=warmup)
    return {
        "reference": _bundle_info(ref_pipe),
        "candidate": _bundle_info(cand_pipe),
        "video": str(video),
        "frame_range": [start, start + len(frames)],
        "conventions": CONVENTIONS,
        "graphs": graphs,
        "end_to_end": end_to_end,
    }
