"""Write a bundle derived from another (INT8/FP16 graphs in place of FP32 ones), atomically (torch-free).

The new bundle is the source bundle's manifest with, for each replaced graph, the
new file (e.g. keyframe.int8.onnx), its sha256, precision and calibration record (and the
ONNX Runtime optimisation level the record's "session" measured as faster);
the other graphs are copied as they are (same file, same sha256, precision fp32).
provenance gains "derived_from": the source bundle's path, manifest sha256, creation
time and the packages that made the new graphs. As exporters/bundle.py does, the
bundle is written into a hidden temporary folder beside the target, validated with
runtime.manifest.load_manifest, and only then moved into place; a folder at the
target that is not a bundle is never overwritten. (exporters is not imported: it
needs torch.)
"""
from __future__ import annotations

import copy
import json
import shutil
from datetime import datetime, timezone
from pathlib import Path

from vss_edge.runtime.errors import VssEdgeError
from vss_edge.runtime.manifest import (
    MANIFEST_NAME,
    PRECISIONS,
    load_manifest,
    package_versions,
    sha256_file,
    staged_bundle,
)


# What an int8 graph's calibration record must say (source_manifest_sha256 is added here).
INT8_RECORD_KEYS = ("video", "frames", "method")


def write_derived_bundle(source_bundle: str | Path, out_dir: str | Path,
                         graph_files: dict[str, tuple[str | Path, str, dict | None]]) -> Path:
    """Write out_dir: source_bundle with graph_files {name: (new .onnx, precision, calibration record)} swapped in.

    The new file is stored as NAME.PRECISION.onnx; its manifest "calibration" is the
    record plus the source bundle's manifest sha256 and the replaced file's name and
    sha256. An int8 record must name its calibration video, frames and method. Raises VssEdgeError for an unknown
    graph or precision, a missing file, an out_dir that is the source bundle itself, or
    an out_dir that exists and is not a bundle; BundleError if the result does not
    validate (nothing is written then).
    """
    source = load_manifest(source_bundle)  # checks the source's hashes too
    src_root = Path(source_bundle)
    out = Path(out_dir)
    if out.exists() and out.resolve() == src_root.resolve():
        raise VssEdgeError(f"--out '{out}' is the source bundle; write the derived bundle elsewhere")
    for name, (path, precision, _record) in graph_files.items():
        if name not in source.graphs:
            raise VssEdgeError(f"bundle '{src_root}' has no graph '{name}' (it has {', '.join(source.graphs)})")
        if precision not in PRECISIONS:
            raise VssEdgeError(f"graph '{name}': unknown precision {precision!r} (known: {', '.join(PRECISIONS)})")
        if not Path(path).is_file():
            raise VssEdgeError(f"graph '{name}': new graph file '{path}' does not exist")
        if precision == "int8":
            lacking = [k for k in INT8_RECORD_KEYS if k not in (_record or {})]
            if lacking:
                raise VssEdgeError(f"graph '{name}': an int8 calibration record must name {', '.join(lacking)} "
                                   f"(where the calibration came from)")
    raw = copy.deepcopy(source.raw)
    source_sha = sha256_file(src_root / MANIFEST_NAME)
    with staged_bundle(out) as tmp:
        for name, entry in raw["graphs"].items():
            if name in graph_files:
                path, precision, record = graph_files[name]
                file = f"{name}.{precision}.onnx"
                shutil.copyfile(path, tmp / file)
                entry.pop("verified_max_error", None)  # measured on the FP32 export, not this graph
                entry.pop("optimization", None)
                chosen = (record or {}).get("session", {}).get("optimization")
                if chosen is not None:  # measured at calibration (calibration.int8.faster_optimization)
                    entry["optimization"] = chosen
                entry.update(file=file, sha256=sha256_file(tmp / file), precision=precision,
                             calibration={**(record or {}), "source_manifest_sha256": source_sha,
                                          "source_file": source.graphs[name].file,
                                          "source_sha256": source.graphs[name].sha256})
            else:
                shutil.copyfile(source.graph_path(name), tmp / entry["file"])
        provenance = raw.setdefault("provenance", {})
        provenance["derived_from"] = {
            "bundle": str(src_root.resolve()),
            "manifest_sha256": source_sha,
            "graphs": {name: graph_files[name][1] for name in raw["graphs"] if name in graph_files},
            "packages": package_versions(("onnx",)),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        (tmp / MANIFEST_NAME).write_text(json.dumps(raw, indent=2) + "\n", encoding="utf-8")
    return out
