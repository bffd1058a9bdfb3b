"""One registration per method (as timm's @register_model): what the CLI, the exporters' caller
and the references need to know of a method, declared once, torch-free.

A `MethodSpec` names the method's config class, its export options (turned into `vss-edge export
NAME` flags), how those flags make a config, its checkpoint slots, and where its exporter and
PyTorch reference live (module:attribute, imported only when used, because they need torch).
The runtime keeps its own torch-free registry of programs (vss_edge.runtime.programs.base); a
method needs both. Importing this package registers the four built-in methods; another module
(a test, a plug-in) calls `register_method(spec)` before the CLI parses its arguments.

Every exporter has one signature:

    export(out_dir, cfg, *, video=None, verify_frames=4, seed=0, simplify=True, **checkpoints) -> Path

where `checkpoints` are the method's slots (e.g. checkpoint=..., keyframe_checkpoint=...), each a
path or None.
"""
from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field

from vss_edge.runtime.errors import VssEdgeError


@dataclass(frozen=True)
class MethodSpec:
    """A method as the tools outside the runtime see it.

    name: the manifest's and CLI's method name. summary: one line for `--help`.
    config: its config dataclass (vss_edge.configs). height, width, classes: export defaults.
    checkpoints: slot -> help text; slot 'checkpoint' is the CLI's --checkpoint, others --slot-name.
    add_options(parser): the method's own export flags. make_config(args, common): the config from
      the parsed flags; `common` holds height, width, num_classes, label_scale and, when
      given, label_path.
    exporter, reference: the export function and the PyTorch reference class, or (for the
      built-in methods, whose modules need torch) their "module:attribute", imported when used.
    """

    name: str
    summary: str
    config: type
    exporter: str | Callable
    reference: str | Callable
    make_config: Callable[[argparse.Namespace, dict], object]
    add_options: Callable[[argparse.ArgumentParser], None] = lambda parser: None
    checkpoints: dict[str, str] = field(default_factory=dict)
    height: int = 512
    width: int = 1024
    classes: int = 19

    def export(self, out_dir, cfg, **options):
        """Run the method's exporter (needs the export extra): options as in the module docstring."""
        return _resolve(self.exporter)(out_dir, cfg, **options)

    def reference_class(self):
        return _resolve(self.reference)


METHODS: dict[str, MethodSpec] = {}


def register_method(spec: MethodSpec) -> MethodSpec:
    """Add a method; the CLI's `export` verb gets its subcommand. ValueError if another spec has the name."""
    if spec.name in METHODS and METHODS[spec.name] != spec:
        raise ValueError(f"method '{spec.name}' is already registered")
    METHODS[spec.name] = spec
    return spec


def method_spec(name: str) -> MethodSpec:
    if name not in METHODS:
        raise VssEdgeError(f"unknown method '{name}' (known: {', '.join(sorted(METHODS))})")
    return METHODS[name]


def _resolve(target):
    if callable(target):
        return target
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)


from vss_edge.methods import gsvnet, mpvss, stmg, tdnet  # noqa: E402,F401  (registers them)

__all__ = ["MethodSpec", "METHODS", "register_method", "method_spec"]
