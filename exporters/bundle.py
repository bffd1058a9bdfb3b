"""Write a bundle (manifest.json + graph files) so that a crash leaves no half bundle.

Everything is written into a hidden temporary folder beside the target, validated
with the runtime's own manifest reader, and only then moved into place.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from vss_edge.exporters.onnx_export import IR_VERSION, OPSET, ExportedGraph, save_model
from vss_edge.runtime.manifest import FORMAT, FORMAT_VERSION, MANIFEST_NAME, TensorSpec, sha256_file, staged_bundle


def package_versions() -> dict:
    import numpy
    import onnx
    import onnxruntime
    import torch

    import vss_edge

    versions = {"vss_edge": vss_edge.__version__, "torch": torch.__version__, "onnx": onnx.__version__,
                "onnxruntime": onnxruntime.__version__, "numpy": numpy.__version__}
    try:
        import onnxsim

        versions["onnxsim"] = onnxsim.__version__
    except ImportError:
        pass
    return versions


def input_spec(cfg, network_channel_order: str) -> dict:
    """The manifest's `input` entry: what a frame must be, and what the graphs do with it."""
    return {
        "height": cfg.height, "width": cfg.width, "dtype": "uint8", "layout": "NHWC", "channel_order": "BGR",
        "resize": "frames of another size are resized bilinearly to height x width; labels come back "
                  "at the frame's size (nearest)",
        "normalisation": {**cfg.normalisation, "in_graph": True,
                          "order": f"(pixel * scale - mean) / std, in {network_channel_order} order"},
    }


def write_bundle(out_dir: str | Path, *, method: str, cfg, network_channel_order: str,
                 graphs: list[tuple[ExportedGraph, str]], state: list[TensorSpec],
                 scheduler: dict, checkpoints: dict) -> Path:
    """Write graphs [(exported graph, role)] and the manifest of a method config into out_dir atomically."""
    config = {k: v for k, v in cfg.to_dict().items() if k not in ("class_names", "palette")}
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
            "graphs": entries, "state": [t.to_dict() for t in state], "scheduler": scheduler,
            "provenance": {
                "packages": package_versions(), "opset": OPSET, "ir_version": IR_VERSION,
                "checkpoints": checkpoints, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            },
        }
        (tmp / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return Path(out_dir)
