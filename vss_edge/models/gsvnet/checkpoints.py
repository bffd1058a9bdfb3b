"""Reading and writing GSVNet weights in the official checkpoint layouts.

The official code (robert80203/GSVNet, trainer/gsvnet_trainer.py) uses three layouts:

- SwiftNet keyframe net: a bare state_dict (``torch.save(state_dict)``).
- BiSeNet keyframe net: a dict holding the state_dict under ``'state_dict'``
  (the official loader falls back to ``'model'``).
- GSVNet checkpoint (``.tar``): a dict ``{'epoch', 'state_dict', 'optimizer',
  'best_pred', 'current_pred', 'args', 'state_dict_of'}`` where ``'state_dict'``
  holds the propagation modules with keys prefixed ``grm.`` (the official
  ``End2End`` wrapper), ``'state_dict_of'`` the FlowLight flow net (no prefix) and
  ``'args'`` the training ``argparse.Namespace``.

Strict loading, ``module.`` prefixes and safe reading are vss_edge.checkpoints'.
"""
from __future__ import annotations

import argparse
import os
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from vss_edge.checkpoints import (
    checked_state_dict,
    cpu_state_dict,
    first_keys,
    read_checkpoint,
    save_torch_atomic,
    strip_data_parallel,
    unwrap_state_dict,
    weights_provenance,
)
from vss_edge.runtime.errors import CheckpointError

if TYPE_CHECKING:
    from vss_edge.models.gsvnet.graphs import GSVNet

_GSV_PREFIX = "grm."


# --- reading ---------------------------------------------------------------------


def _keyframe_state_dict(obj, path: Path, keyframe_net: str) -> tuple[Mapping, str]:
    """(state_dict, source) from a keyframe checkpoint: bare, or under 'state_dict' / 'model'."""
    layout = ("a bare state_dict" if keyframe_net == "swiftnet"
              else "a dict with the state_dict under 'state_dict'")
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: expected a {keyframe_net} keyframe checkpoint ({layout}), "
                              f"got a {type(obj).__name__}")
    if "state_dict_of" in obj:
        raise CheckpointError(f"{path}: is a GSVNet propagation checkpoint (it has 'state_dict_of'), "
                              f"not a {keyframe_net} keyframe checkpoint; pass it as the GSVNet checkpoint")
    return unwrap_state_dict(obj, path, f"for the {keyframe_net} keyframe net: expected {layout} (or one under 'model')")


def load_keyframe_checkpoint(model: GSVNet, path: str | os.PathLike) -> dict:
    """Load an official SwiftNet/BiSeNet checkpoint (per model.cfg.keyframe_net) into model.segnet.

    Returns {'path', 'sha256'} of the file for provenance.
    """
    path = Path(path)
    obj = read_checkpoint(path)
    state_dict, source = _keyframe_state_dict(obj, path, model.cfg.keyframe_net)
    stem = (strip_data_parallel(state_dict).get("backbone.conv1.weight")
            if model.cfg.keyframe_net == "swiftnet" else None)
    if isinstance(stem, torch.Tensor) and stem.dim() == 4 and stem.shape[0] != model.cfg.keyframe_width:
        raise CheckpointError(f"{source}: is a SwiftNet of base width {stem.shape[0]} but the config's keyframe_width "
                              f"is {model.cfg.keyframe_width} (pass --keyframe-width {stem.shape[0]})")
    hint = f" (the config's keyframe_net is {model.cfg.keyframe_net!r})"
    model.segnet.load_state_dict(checked_state_dict(model.segnet, state_dict, source, hint), strict=True)
    return weights_provenance(path)


def load_gsvnet_checkpoint(model: GSVNet, path: str | os.PathLike) -> dict:
    """Load an official GSVNet .tar: 'state_dict' (grm.*) -> model.gsv, 'state_dict_of' -> model.flownet.

    Both parts are checked before either is loaded, so a bad file leaves the model
    untouched. Returns {'path', 'sha256'} of the file for provenance.
    """
    path = Path(path)
    obj = read_checkpoint(path)
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: expected a GSVNet checkpoint (a dict with 'state_dict' and "
                              f"'state_dict_of'), got a {type(obj).__name__}")
    absent = [k for k in ("state_dict", "state_dict_of") if k not in obj]
    if absent:
        what = {"state_dict": "'state_dict' (the propagation modules, keys 'grm.*')",
                "state_dict_of": "'state_dict_of' (the FlowLight flow net)"}
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            found = "it is a bare state_dict (a keyframe checkpoint?)"
        else:
            found = "top-level keys: " + (", ".join(map(repr, list(obj)[:8])) or "none")
        raise CheckpointError(f"{path}: not a GSVNet checkpoint: no {' and no '.join(what[k] for k in absent)}; "
                              f"{found}")
    gsv_sd = obj["state_dict"]
    if not isinstance(gsv_sd, Mapping):
        raise CheckpointError(f"{path} ['state_dict']: expected a state_dict, got {type(gsv_sd).__name__}")
    gsv_sd = strip_data_parallel(gsv_sd)
    unprefixed = [k for k in gsv_sd if not (isinstance(k, str) and k.startswith(_GSV_PREFIX))]
    if unprefixed:
        raise CheckpointError(f"{path} ['state_dict']: {len(unprefixed)} of {len(gsv_sd)} keys lack the "
                              f"official '{_GSV_PREFIX}' prefix ({first_keys([str(k) for k in unprefixed])})")
    gsv_sd = OrderedDict((k[len(_GSV_PREFIX):], v) for k, v in gsv_sd.items())
    gsv_sd = checked_state_dict(model.gsv, gsv_sd, f"{path} ['state_dict']")
    flow_sd = checked_state_dict(model.flownet, obj["state_dict_of"], f"{path} ['state_dict_of']")
    model.gsv.load_state_dict(gsv_sd, strict=True)
    model.flownet.load_state_dict(flow_sd, strict=True)
    return weights_provenance(path)


# --- writing ---------------------------------------------------------------------


def save_official_checkpoints(model: GSVNet, keyframe_path: str | os.PathLike,
                              gsvnet_path: str | os.PathLike, args: argparse.Namespace | None = None) -> None:
    """Write model's weights as the official keyframe checkpoint and GSVNet .tar.

    The keyframe file is a bare state_dict (swiftnet) or {'state_dict': ...}
    (bisenet); the GSVNet file has epoch 0, empty optimizer state and `args`
    (the training settings; empty by default).
    """
    segnet = cpu_state_dict(model.segnet)
    keyframe = segnet if model.cfg.keyframe_net == "swiftnet" else {"state_dict": segnet}
    gsvnet = {
        "epoch": 0,
        "state_dict": cpu_state_dict(model.gsv, _GSV_PREFIX),
        "optimizer": {},
        "best_pred": 0.0,
        "current_pred": 0.0,
        "args": argparse.Namespace() if args is None else args,
        "state_dict_of": cpu_state_dict(model.flownet),
    }
    save_torch_atomic(keyframe, Path(keyframe_path))
    save_torch_atomic(gsvnet, Path(gsvnet_path))
