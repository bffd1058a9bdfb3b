"""Per-method orchestration: which graphs run on key and non-key frames, and how state moves."""
from __future__ import annotations

from vss_edge.runtime.errors import BundleError
from vss_edge.runtime.programs.gsvnet import GSVNetProgram
from vss_edge.runtime.programs.mpvss import MPVSSProgram
from vss_edge.runtime.programs.stmg import STMGProgram
from vss_edge.runtime.programs.tdnet import TDNetProgram

PROGRAMS = {"gsvnet": GSVNetProgram, "tdnet": TDNetProgram, "stmg": STMGProgram, "mpvss": MPVSSProgram}


def program_for(method: str):
    """The Program class for a bundle's method; BundleError if this runtime has none."""
    if method not in PROGRAMS:
        raise BundleError(f"no runtime program for method '{method}' (known: {', '.join(PROGRAMS)})")
    return PROGRAMS[method]
