"""Write a bundle (manifest.json + graph files) so that a crash leaves no half bundle.

Everything is written into a hidden temporary folder beside the target, validated
with the runtime's own manifest reader, and only then moved into place.
"""
from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path

from vss_edge.exporters.onnx_export import IR_VERSION, OPSET, ExportedGraph, drop_outputs, save_model
from vss_edge.runtime.manifest import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST_NAME,
    TensorSpec,
    package_versions,
    sha256_file,
    staged_bundle,
)


def input_spec(cfg, network_channel_order: str) -> dict:
    """The manifest's `input` entry: what a frame must be, and what the graphs do with it."""
    return {
        "height": cfg.height, "width": cfg.width, "dtype": "uint8", "layout": "NHWC", "channel_order": "BGR",
        "resize": "frames of another size are resized bilinearly to height x width; labels come back "
                  "at the frame's size (nearest)",
        "normalisation": {**cfg.normalisation, "in_graph": True,
                          "order": f"(pixel * scale - mean) / std, in {network_channel_order} order"},
    }


def host_labels(cfg, graphs: list[tuple[ExportedGraph, str]], tail: dict) -> tuple[list, dict]:
    """For cfg.label_path == 'host': the graphs without their 'labels' output (and the resize +
    argmax that made it), and the manifest's "labels" entry (runtime.labels.label_tail).

    tail: {"kind": "logits", "align_corners": bool} (labels = argmax of the resized 'logits') or
    {"kind": "masks"} (MPVSS: semantic inference from 'class_logits' and 'mask_logits').
    """
    scores = "logits" if tail["kind"] == "logits" else "mask_logits"
    shapes = {t.name: t.shape for graph, _ in graphs for t in graph.outputs}
    entry = {"computed": "host", **tail, "scores_size": list(shapes[scores][2:]), "size": list(cfg.label_size)}
    if tail["kind"] == "masks":
        entry["padded_size"] = list(cfg.label_padded_size)
    pruned = [(drop_outputs(graph, {"labels"}) if any(t.name == "labels" for t in graph.outputs) else graph, role)
              for graph, role in graphs]
    return pruned, entry


def exporter_source_digest() -> str:
    """sha256 of the code that makes a bundle's graphs: the PyTorch models (vss_edge/models), the
    exporters and the method configs, file by file in path order. Recorded in the manifest's
    provenance, so that a reused bundle made by other code is seen (benchmarks/_common re-exports it)."""
    import vss_edge.configs
    import vss_edge.exporters
    import vss_edge.models

    digest = hashlib.sha256()
    roots = [Path(vss_edge.models.__file__).parent, Path(vss_edge.exporters.__file__).parent]
    files = sorted((f for root in roots for f in root.rglob("*.py")), key=lambda f: f.as_posix())
    for f in files + [Path(vss_edge.configs.__file__)]:
        digest.update(f"{f.parent.name}/{f.name}".encode() + b"\0" + f.read_bytes() + b"\0")
    return digest.hexdigest()


def write_bundle(out_dir: str | Path, *, method: str, cfg, network_channel_order: str,
                 graphs: list[tuple[ExportedGraph, str]], state: list[TensorSpec],
                 scheduler: dict, checkpoints: dict, label_tail: dict | None = None) -> Path:
    """Write graphs [(exported graph, role)] and the manifest of a method config into out_dir atomically.

    label_tail: how the graphs' labels come from their scores (`host_labels`); with
    cfg.label_path 'host' the graphs lose that tail and the manifest says how to compute it
    (ValueError when the method gives none).
    """
    config = {k: v for k, v in cfg.to_dict().items() if k not in ("class_names", "palette")}
    labels = {"computed": "graph"}
    if getattr(cfg, "label_path", "graph") == "host":
        if label_tail is None:
            raise ValueError(f"method '{method}' has no host label path; export it with label_path 'graph'")
        graphs, labels = host_labels(cfg, graphs, label_tail)
    with staged_bundle(out_dir) as tmp:
        entries = {}
        for graph, role in graphs:
            file = f"{graph.name}.onnx"
            save_model(graph.model, tmp / file)
            entries[graph.name] = {
                "role": role, "file": file, "sha256": sha256_file(tmp / file), "precision": "fp32",
                "calibration": None, "inputs": [t.to_dict() for t in graph.inputs],
                "outputs": [t.to_dict() for t in graph.outputs], "gflops": graph.gflops,
                "simplified_with_onnxsim": graph.simplified,
                "verified_max_error": {k: float(f"{v:.3g}") for k, v in graph.verification.items()},
            }
        manifest = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "method": method, "config": config,
            "input": input_spec(cfg, network_channel_order),
            "classes": {"names": cfg.class_names, "palette": cfg.palette},
            "graphs": entries, "state": [t.to_dict() for t in state], "scheduler": scheduler, "labels": labels,
            "provenance": {
                "packages": package_versions(("torch", "onnx", "onnxsim")), "opset": OPSET, "ir_version": IR_VERSION,
                "checkpoints": checkpoints, "exporter_source": exporter_source_digest(),
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            },
        }
        (tmp / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return Path(out_dir)
