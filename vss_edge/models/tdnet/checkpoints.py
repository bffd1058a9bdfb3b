"""Reading and writing TDNet weights in the official checkpoint layouts.

The official Testing code (feinanshan/TDNet, Testing/model/pspnet/td4_psp18.py,
pretrained_mp_load) loads its released .pkl files as a bare state_dict with
load_state_dict(strict=True); the Training code saves {'model_state': ..., ...}.
Both containers (and 'state_dict' / 'model', and 'module.' prefixes) are accepted.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch

from vss_edge.checkpoints import (
    checked_state_dict,
    cpu_state_dict,
    read_checkpoint,
    save_torch_atomic,
    strip_data_parallel,
)
from vss_edge.models.tdnet.model import TDNet, layer_norm_size, resize_layer_norms
from vss_edge.runtime.errors import CheckpointError

_TDNET_MARKERS = {"td4_psp18": "atn1_2.fc.0.conv.weight", "td2_psp50": "atn1.fc.0.conv.weight"}


def _tdnet_state_dict(obj, path: Path) -> tuple[Mapping, str]:
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: expected a TDNet checkpoint (a state_dict), got a {type(obj).__name__}")
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj, str(path)
    for key in ("model_state", "state_dict", "model"):
        if isinstance(obj.get(key), Mapping):
            return obj[key], f"{path} ['{key}']"
    top = ", ".join(map(repr, list(obj)[:8])) or "none"
    raise CheckpointError(f"{path}: no TDNet state_dict found: expected a bare state_dict (or one under "
                          f"'model_state', 'state_dict' or 'model'); top-level keys: {top}")


def load_tdnet_checkpoint(model: TDNet, path: str | os.PathLike) -> str | None:
    """Load an official TDNet checkpoint (TD4-PSP18 or TD2-PSP50, per model.cfg.variant).

    Strict on every key and shape except the LayerNorm weights: when the checkpoint's
    LayerNorm size (97x193 for the official 769x1537 models) differs from
    model.cfg.feature_size they are resized bilinearly (align_corners=True, see
    vss_edge.models.tdnet.model.resize_layer_norms). Returns None, or a note (one
    sentence, for the manifest) saying the LayerNorm was resized.
    """
    path = Path(path)
    obj = read_checkpoint(path)
    state_dict, source = _tdnet_state_dict(obj, path)
    state_dict = strip_data_parallel(state_dict)
    variant = model.cfg.variant
    found = [v for v, marker in _TDNET_MARKERS.items() if marker in state_dict]
    if found and variant not in found:
        raise CheckpointError(f"{source}: is a {found[0]} checkpoint but the model is {variant} "
                              f"(set the config's variant to {found[0]!r})")
    note = None
    have, want = layer_norm_size(state_dict), tuple(model.cfg.feature_size)
    if have is not None and have != want:
        state_dict = resize_layer_norms(state_dict, want)
        note = (f"LayerNorm weights resized from {have[0]}x{have[1]} (checkpoint) to {want[0]}x{want[1]} "
                f"(features of the {model.cfg.height}x{model.cfg.width} input) by bilinear interpolation, "
                f"align_corners=True; the official models were trained at 769x1537 (97x193)")
    hint = f" (the config's variant is {variant!r})"
    model.load_state_dict(checked_state_dict(model, state_dict, source, hint), strict=True)
    return note


def save_official_tdnet_checkpoint(model: TDNet, path: str | os.PathLike) -> None:
    """Write model's weights as the official Testing code loads them: a bare state_dict."""
    save_torch_atomic(cpu_state_dict(model), Path(path))
