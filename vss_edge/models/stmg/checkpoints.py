"""Reading and writing STMG weights and those of its DDRNet backbone in the official layouts.

DDRNet (STMG's backbone; ydhongHIT/DDRNet, segmentation/DDRNet_23_slim.py and
DDRNet_39.py) is trained with the HRNet-Semantic-Segmentation code base, whose
``FullModel`` wrapper saves the network under ``model.`` next to the loss's buffers
(``loss.criterion.weight``), bare or under ``'state_dict'``; the official classes
themselves load a bare ``DualResNet`` state_dict. Both are accepted, ``loss.*`` is
dropped, and so are the auxiliary head's ``seghead_extra.*`` keys (the released
Cityscapes 23-slim was trained with ``augment=True``) when the model has no such head.

STMG has no official code: its layout (key.*, nonkey.*, mask_generator.*) is ours.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from vss_edge.checkpoints import (
    checked_state_dict,
    count_keys,
    cpu_state_dict,
    read_checkpoint,
    save_torch_atomic,
    strip_data_parallel,
    unwrap_state_dict,
)
from vss_edge.runtime.errors import CheckpointError

if TYPE_CHECKING:
    from vss_edge.models.stmg.ddrnet import DDRNet
    from vss_edge.models.stmg.graphs import STMG


# --- DDRNet (STMG) ---------------------------------------------------------------
#
# The HRNet-codebase trainer saves FullModel(model, loss).state_dict(): keys 'model.*'
# plus 'loss.*' ('loss.criterion.weight', the class weights), as a bare file
# (final_state.pth) or under 'state_dict' (checkpoint.pth.tar); nn.DataParallel adds
# 'module.' in front. The official DualResNet classes load a bare state_dict.

_FULLMODEL_PREFIX, _LOSS_PREFIX, _AUX_PREFIX = "model.", "loss.", "seghead_extra."


def _ddrnet_kind(state_dict: Mapping) -> str | None:
    """'ddrnet39', 'ddrnet23_slim', 'ddrnet23' (the full width) or None, from marker keys."""
    if "layer3_1.0.conv1.weight" in state_dict:
        return "ddrnet39"
    if "layer3.0.conv1.weight" in state_dict:
        stem = state_dict.get("conv1.0.weight")
        wide = isinstance(stem, torch.Tensor) and stem.dim() == 4 and stem.shape[0] == 64
        return "ddrnet23" if wide else "ddrnet23_slim"
    return None


def _ddrnet_state_dict(obj, path: Path) -> tuple[Mapping, str]:
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: expected a DDRNet checkpoint (a state_dict), got a {type(obj).__name__}")
    return unwrap_state_dict(obj, path, "for DDRNet: expected a bare state_dict (or one under 'state_dict' or 'model')")


def load_ddrnet_checkpoint(model: DDRNet, path: str | os.PathLike) -> str | None:
    """Load an official DDRNet-23-slim / DDRNet-39 checkpoint into `model` (per model.variant).

    Accepts a bare state_dict or one under 'state_dict' / 'model', with 'module.'
    and/or the FullModel 'model.' prefix. Drops 'loss.*' (FullModel) and, when the
    model has augment=False, the auxiliary head 'seghead_extra.*'; strict on every
    other key and shape. Returns None, or a note (one sentence, for the manifest)
    saying which keys were dropped.
    """
    path = Path(path)
    obj = read_checkpoint(path)
    state_dict, source = _ddrnet_state_dict(obj, path)
    if not all(isinstance(k, str) for k in state_dict):
        raise CheckpointError(f"{source}: state_dict for DDRNet has non-string keys")
    state_dict = strip_data_parallel(state_dict)
    keys = list(state_dict)
    dropped_loss = dropped_aux = 0
    if (any(k.startswith(_FULLMODEL_PREFIX) for k in keys)
            and all(k.startswith((_FULLMODEL_PREFIX, _LOSS_PREFIX)) for k in keys)):
        dropped_loss = sum(k.startswith(_LOSS_PREFIX) for k in keys)
        state_dict = OrderedDict((k[len(_FULLMODEL_PREFIX):], v) for k, v in state_dict.items()
                                 if k.startswith(_FULLMODEL_PREFIX))
    if not hasattr(model, "seghead_extra"):
        dropped_aux = sum(k.startswith(_AUX_PREFIX) for k in state_dict)
        state_dict = OrderedDict((k, v) for k, v in state_dict.items() if not k.startswith(_AUX_PREFIX))

    variant = model.variant
    found = _ddrnet_kind(state_dict)
    if found == "ddrnet23":
        raise CheckpointError(f"{source}: is a full-width DDRNet-23 checkpoint (64-channel stem), which is not "
                              f"supported; the model is {variant} (supported: ddrnet23_slim, ddrnet39)")
    if found is not None and found != variant:
        raise CheckpointError(f"{source}: is a {found} checkpoint but the model is {variant} "
                              f"(construct DDRNet({found!r}))")
    hint = f" (the model is {variant!r})"
    model.load_state_dict(checked_state_dict(model, state_dict, source, hint), strict=True)
    if not (dropped_loss or dropped_aux):
        return None
    parts = []
    if dropped_aux:
        parts.append(count_keys(dropped_aux, "the auxiliary training head (seghead_extra.*)"))
    if dropped_loss:
        parts.append(count_keys(dropped_loss, "the training loss (loss.*)"))
    return f"Dropped {' and '.join(parts)} from the DDRNet checkpoint; inference does not use them."


def save_official_ddrnet_checkpoint(model: DDRNet, path: str | os.PathLike) -> None:
    """Write model's weights as the official DualResNet classes load them: a bare state_dict."""
    save_torch_atomic(cpu_state_dict(model), Path(path))


# --- STMG ------------------------------------------------------------------------


def load_stmg_checkpoint(model: STMG, path: str | os.PathLike) -> None:
    """Load an STMG checkpoint: a state_dict (bare or under 'state_dict') with keys key.*,
    nonkey.* (each an official DDRNet layout) and mask_generator.*. STMG has no official
    code, so this layout is ours; save_stmg_checkpoint writes it."""
    path = Path(path)
    obj = read_checkpoint(path)
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        state_dict, source = obj["state_dict"], f"{path} ['state_dict']"
    elif isinstance(obj, Mapping):
        state_dict, source = obj, str(path)
    else:
        raise CheckpointError(f"{path}: expected an STMG state_dict, got a {type(obj).__name__}")
    state_dict = strip_data_parallel(state_dict)
    if not any(k.startswith("mask_generator.") for k in state_dict):
        raise CheckpointError(f"{source}: not an STMG checkpoint (no mask_generator.* keys); for DDRNet "
                              "weights use --ddrnet-checkpoint")
    hint = f" (the config's backbone is {model.cfg.backbone!r})"
    model.load_state_dict(checked_state_dict(model, state_dict, source, hint), strict=True)


def save_stmg_checkpoint(model: STMG, path: str | os.PathLike) -> None:
    """Write an STMG model's weights as load_stmg_checkpoint reads them: a bare state_dict."""
    save_torch_atomic(cpu_state_dict(model), Path(path))
