"""INT8 / FP16 calibration and accuracy checks (see the calibration issue).

The entry points are importable from here; each is loaded on first use, so importing
vss_edge.calibration (or one of its modules) does not import the others.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "CalibrationConfig": "vss_edge.calibration.quantize",
    "CalibrationMethod": "vss_edge.calibration.quantize",
    "Precision": "vss_edge.calibration.quantize",
    "calibrate_bundle": "vss_edge.calibration.quantize",
    "calibrate_within_budget": "vss_edge.calibration.budget",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
