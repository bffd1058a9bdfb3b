"""Per-method orchestration: which graphs run on key and non-key frames, and how state moves.

Each method's program is one module here, registered by name (programs.base.register_program);
importing this package registers the four built-in ones.
"""
from __future__ import annotations

from vss_edge.runtime.programs import gsvnet, mpvss, stmg, tdnet  # noqa: F401  (registers them)
from vss_edge.runtime.programs.base import PROGRAMS, Program, program_for, register_program

__all__ = ["PROGRAMS", "Program", "program_for", "register_program"]
