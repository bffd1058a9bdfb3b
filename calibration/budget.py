"""Accuracy budget: keep the parts of the INT8 bundle that cost the most accuracy in float until
the end-to-end drop fits.

drop = 1 - mIoU agreement of the candidate pipeline with the FP32 pipeline on the evaluation
frames. Two levels, tried in order:

- node level (the default): the nodes of the INT8 graphs are ranked graph by graph, the most
  sensitive graph first (sensitivity of a graph = the drop when only that graph is quantised),
  and within a graph by the error each adds (calibration.node_errors: how far the SQNR against
  FP32 falls from the node's inputs to its output, largest first). The first k stay float, with
  the readers of their rounded outputs (so those are not rounded either), for k = 1, 2, 4, ...
  until the drop fits, then a bisection between the last two k finds the fewest that fit.
  Each step is a real calibration and an end-to-end check.
- graph level (level="graph", or when even the node level cannot fit): graphs go back to FP32
  from the most sensitive down.

The report's budget says which level fitted, the steps tried, and `float_nodes`: how many of the
bundle's nodes run in float (every node of an FP32 graph, the excluded nodes of an INT8 one).
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


def float_node_count(bundle, report: dict) -> int:
    """Nodes of a calibrated bundle that run in float: all of an FP32 graph's, an INT8 graph's excluded ones."""
    import onnx

    from vss_edge.runtime.manifest import load_manifest

    manifest, count = load_manifest(bundle), 0
    for name, g in report["graphs"].items():
        if g["precision"] == "int8":
            count += len(g["record"]["excluded_nodes"])
        else:
            model = onnx.load(str(manifest.graph_path(name)), load_external_data=False)
            count += sum(n.op_type != "Constant" for n in model.graph.node)
    return count


def _ranked_nodes(bundle, video, int8_bundle, report: dict, config: CalibrationConfig) -> list[dict]:
    """The nodes of every INT8 graph, the largest added error first, with their graph (node_errors rows)."""
    from vss_edge.calibration.collect import collect_inputs
    from vss_edge.calibration.int8 import prepare_for_int8
    from vss_edge.calibration.node_errors import node_errors
    from vss_edge.runtime.manifest import load_manifest

    source, derived = load_manifest(bundle), load_manifest(int8_bundle)
    int8_graphs = [g for g, r in report["graphs"].items() if r["precision"] == "int8"]
    recorded = collect_inputs(bundle, video, FrameRange(config.calibration_frames.start,
                              min(config.calibration_frames.stop, config.calibration_frames.start + 6)),
                              interval=config.interval, device=config.device, threads=config.threads)
    rows = []
    with tempfile.TemporaryDirectory(prefix=".vss-rank-") as tmp:
        for name in int8_graphs:
            prepared = Path(tmp) / f"{name}.prepared.onnx"
            prepare_for_int8(source.graph_path(name), prepared)
            for row in node_errors(prepared, derived.graph_path(name), recorded[name]):
                rows.append({"graph": name, **row})
    rows.sort(key=lambda r: -r["added_db"])
    return rows


def calibrate_within_budget(bundle, video, out, max_drop: float,
                            config: CalibrationConfig | None = None, level: str = "node") -> tuple[Path, dict]:
    """calibrate_bundle, then fall back graph by graph until the drop is <= max_drop.

    config: the calibrate_bundle options (None: CalibrationConfig()); evaluation_frames
    None means 30:60. The budget chooses which graphs and nodes stay float, so config.graphs,
    config.keep_float_graphs and config.keep_float_nodes must be left unset.
    level: "node" (node level first, then graph level if no count of nodes fits; module docstring)
    or "graph".
    Returns (out, report) where report adds "budget": {max_drop, drop, level (the one that
    fitted, or "none" when nothing had to stay float), float_nodes, worst_nodes (the 10 nodes
    that add the most error, of every graph: node_errors rows), node_steps [{worst_nodes, float_nodes,
    drop}], sensitivity [{graph, drop_alone}],
    kept_float [{graph, reason}], steps [{kept_float, drop}]}.
    """
    from vss_edge.runtime.sources import read_frames

    if not 0.0 <= max_drop < 1.0:
        raise VssEdgeError(f"--max-drop must be in [0, 1), got {max_drop}")
    if config is None:
        config = CalibrationConfig()
    elif not isinstance(config, CalibrationConfig):
        raise TypeError(f"calibrate_within_budget(bundle, video, out, max_drop, config): config must be a "
                        f"CalibrationConfig, got {type(config).__name__}")
    if config.graphs is not None or config.keep_float_graphs or config.keep_float_nodes:
        raise VssEdgeError("calibrate_within_budget chooses the graphs and nodes kept in float itself: leave "
                           "graphs, keep_float_graphs and keep_float_nodes unset in its CalibrationConfig")
    if level not in ("node", "graph"):
        raise VssEdgeError(f"budget level must be 'node' or 'graph', got {level!r}")
    if config.evaluation_frames is None:
        config = replace(config, evaluation_frames=FrameRange(30, 60))
    ev = config.evaluation_frames
    frames = read_frames(video, ev.start, ev.stop)
    work = Path(tempfile.mkdtemp(prefix=".budget-", dir=Path(out).resolve().parent))
    try:
        def trial(name: str, keep: tuple[str, ...], graphs=None, nodes=()) -> tuple[Path, dict, float]:
            path, report = calibrate_bundle(bundle, video, work / name,
                                            replace(config, graphs=graphs, keep_float_graphs=keep,
                                                    keep_float_nodes=nodes))
            return path, report, end_to_end_drop(bundle, path, frames)

        def graph_sensitivity() -> list[dict]:
            """[{graph, drop_alone}], the graph whose INT8 costs most end to end first."""
            from vss_edge.runtime.manifest import load_manifest

            rows = []
            for g in load_manifest(bundle).graphs:
                p, _, alone = trial(f"only-{g}", (), graphs=[g])
                shutil.rmtree(p, ignore_errors=True)
                rows.append({"graph": g, "drop_alone": alone})
            return sorted(rows, key=lambda s: s["drop_alone"], reverse=True)

        path, report, drop = trial("all", ())
        steps = [{"kept_float": [], "drop": drop}]
        sensitivity, kept, node_steps, worst, fitted = [], [], [], [], "none"
        if drop > max_drop and level == "node" and any(g["precision"] == "int8" for g in report["graphs"].values()):
            # the nodes of the graph that costs most end to end first, each graph's by the error they add:
            # a node's added SQNR says little about the labels across graphs (measured: GSVNet's flow net
            # drops the labels most, its nodes add less error than the propagation head's)
            sensitivity = graph_sensitivity()
            order = {s["graph"]: i for i, s in enumerate(sensitivity)}
            by_error = [r for r in _ranked_nodes(bundle, video, path, report, config) if r["added_db"] > 0]
            worst = [{k: r[k] for k in ("graph", "node", "op", "added_db", "input_sqnr_db", "sqnr_db")}
                     for r in by_error[:10]]
            ranked = sorted(by_error, key=lambda r: (order[r["graph"]], -r["added_db"]))

            def nodes_trial(k: int):
                chosen = ranked[:k]
                nodes = tuple(sorted({(r["graph"], n) for r in chosen
                                      for n in [r["node"], *r["fused"],
                                                *(r["readers"] if r["quantized_output"] else [])]}))
                p, r, d = trial(f"nodes-{k}", (), nodes=nodes)
                node_steps.append({"worst_nodes": k, "float_nodes": float_node_count(p, r), "drop": d})
                if d > max_drop:
                    shutil.rmtree(p, ignore_errors=True)
                    return None
                return p, r, d

            # the worst 1, 2, 4 ... nodes float until the drop fits, then bisect between the last two counts
            fails, fit, k = 0, None, 1
            while ranked:
                fit = nodes_trial(k)
                if fit is not None or k >= len(ranked):
                    break
                fails, k = k, min(2 * k, len(ranked))
            while fit is not None and k - fails > 1:
                mid = (fails + k) // 2
                smaller = nodes_trial(mid)
                if smaller is None:
                    fails = mid
                else:
                    shutil.rmtree(fit[0], ignore_errors=True)
                    fit, k = smaller, mid
            if fit is not None:
                (path, report, drop), fitted = fit, "node"
        if drop > max_drop:
            sensitivity = sensitivity or graph_sensitivity()
            names = [s["graph"] for s in sensitivity]
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
            fitted = "graph"
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
        report["budget"] = {"max_drop": max_drop, "drop": drop, "evaluation_frames": str(ev), "level": fitted,
                            "float_nodes": float_node_count(out, report), "worst_nodes": worst,
                            "node_steps": node_steps, "sensitivity": sensitivity, "kept_float": kept,
                            "steps": steps}
        return out, report
    finally:
        shutil.rmtree(work, ignore_errors=True)
