"""Accuracy budget: keep the most sensitive graphs in float until the end-to-end drop fits.

drop = 1 - mIoU agreement of the candidate pipeline with the FP32 pipeline on the
evaluation frames. Sensitivity of a graph = the drop when only that graph is
quantised. Graphs are returned to FP32 from the most sensitive down until the drop
of the whole bundle is at most max_drop (or everything is float). Graph-level only:
node-level fallback is left for later.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

from vss_edge.calibration.check import check_compatible, compare_pipelines
from vss_edge.calibration.collect import FrameRange
from vss_edge.calibration.quantize import CalibrationConfig, calibrate_bundle
from vss_edge.runtime.errors import VssEdgeError


def end_to_end_drop(reference, candidate, frames: list) -> float:
    """1 - mIoU agreement of candidate vs reference pipeline over frames."""
    from vss_edge import runtime
    from vss_edge.runtime.manifest import load_manifest

    check_compatible(load_manifest(reference), load_manifest(candidate))
    result = compare_pipelines(runtime.load(reference, device="cpu"), runtime.load(candidate, device="cpu"), frames)
    return 1.0 - float(result["agreement"]["miou"])


def calibrate_within_budget(bundle, video, out, max_drop: float,
                            config: CalibrationConfig | None = None) -> tuple[Path, dict]:
    """calibrate_bundle, then fall back graph by graph until the drop is <= max_drop.

    config: the calibrate_bundle options (None: CalibrationConfig()); evaluation_frames
    None means 30:60. The budget chooses which graphs stay float, so config.graphs and
    config.keep_float_graphs must be left unset.
    Returns (out, report) where report adds "budget": {max_drop, drop, sensitivity
    [{graph, drop_alone}], kept_float [{graph, reason}], steps [{kept_float, drop}]}.
    """
    from vss_edge.runtime.sources import read_frames

    if not 0.0 <= max_drop < 1.0:
        raise VssEdgeError(f"--max-drop must be in [0, 1), got {max_drop}")
    if config is None:
        config = CalibrationConfig()
    elif not isinstance(config, CalibrationConfig):
        raise TypeError(f"calibrate_within_budget(bundle, video, out, max_drop, config): config must be a "
                        f"CalibrationConfig, got {type(config).__name__}")
    if config.graphs is not None or config.keep_float_graphs:
        raise VssEdgeError("calibrate_within_budget chooses the graphs kept in float itself: leave graphs and "
                           "keep_float_graphs unset in its CalibrationConfig")
    if config.evaluation_frames is None:
        config = replace(config, evaluation_frames=FrameRange(30, 60))
    ev = config.evaluation_frames
    frames = read_frames(video, ev.start, ev.stop)
    work = Path(tempfile.mkdtemp(prefix=".budget-", dir=Path(out).resolve().parent))
    try:
        def trial(name: str, keep: tuple[str, ...], graphs=None) -> tuple[Path, dict, float]:
            path, report = calibrate_bundle(bundle, video, work / name,
                                            replace(config, graphs=graphs, keep_float_graphs=keep))
            return path, report, end_to_end_drop(bundle, path, frames)

        path, report, drop = trial("all", ())
        steps = [{"kept_float": [], "drop": drop}]
        sensitivity, kept = [], []
        if drop > max_drop:
            from vss_edge.runtime.manifest import load_manifest

            names = list(load_manifest(bundle).graphs)
            for g in names:
                _, _, alone = trial(f"only-{g}", (), graphs=[g])
                sensitivity.append({"graph": g, "drop_alone": alone})
            sensitivity.sort(key=lambda s: s["drop_alone"], reverse=True)
            for s in sensitivity:
                if drop <= max_drop:
                    break
                kept.append({"graph": s["graph"], "reason": f"most sensitive left: drop {s['drop_alone']:.4f} "
                                                            f"when quantised alone"})
                keep = tuple(k["graph"] for k in kept)
                if len(keep) == len(names):
                    path, report, drop = None, None, 0.0
                    break
                path, report, drop = trial(f"keep-{len(keep)}", keep)
                steps.append({"kept_float": list(keep), "drop": drop})
        if path is None:
            raise VssEdgeError(f"no graph of '{bundle}' can be {config.precision.value} within a drop of {max_drop}: "
                               f"every graph had to stay FP32 (sensitivity: "
                               + ", ".join(f"{s['graph']} {s['drop_alone']:.4f}" for s in sensitivity) + ")")
        out = Path(out)
        if out.exists() and not (out / "manifest.json").exists():
            raise VssEdgeError(f"--out '{out}' exists and is not a vss-edge bundle; refusing to overwrite it")
        if out.exists():
            os.replace(out, work / "previous")  # same folder: renames, so `out` is never half written
        os.replace(path, out)
        report["budget"] = {"max_drop": max_drop, "drop": drop, "evaluation_frames": str(ev),
                            "sensitivity": sensitivity, "kept_float": kept, "steps": steps}
        return out, report
    finally:
        shutil.rmtree(work, ignore_errors=True)
