"""Reading and writing MPVSS and Mask2Former weights in the official (detectron2) layouts.

Mask2Former's model zoo (facebookresearch/Mask2Former) ships detectron2 .pkl files:
{'model': {key: numpy array}, '__author__': ...}; detectron2's DetectionCheckpointer
writes .pth files {'model': state_dict, 'optimizer', 'scheduler', 'iteration'}, as the
MPVSS training (train_net_vss.py) would. Keys: backbone.* (detectron2 ResNet),
sem_seg_head.pixel_decoder.*, sem_seg_head.predictor.*, and for MPVSS motion.encoder.*,
motion.decoder.*; both carry the loss's criterion.empty_weight, dropped here.
FrozenBN backbones have no num_batches_tracked: missing ones are filled from the model.
A .pkl is read by an unpickler that allows numpy arrays and plain containers only.
"""
from __future__ import annotations

import os
import pickle
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn as nn

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
from vss_edge.runtime.outputs import write_bytes_atomic

_PKL_GLOBALS = {("collections", "OrderedDict"), ("numpy", "ndarray"), ("numpy", "dtype"),
                ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar")}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and plain containers only (a detectron2 .pkl); refuses anything else."""

    def find_class(self, module, name):
        if (module, name) in _PKL_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed")


def _read_mask2former(path: Path) -> tuple[Mapping, str]:
    """(state_dict of tensors, source) from a detectron2 .pkl or a .pth checkpoint."""
    if path.suffix == ".pkl":
        if not path.is_file():
            raise CheckpointError(f"{path}: checkpoint file not found")
        try:
            with open(path, "rb") as f:
                obj = _ArrayUnpickler(f, encoding="latin1").load()
        except pickle.UnpicklingError as e:
            raise CheckpointError(f"{path}: not a detectron2 .pkl of arrays ({e})") from None
        except Exception:  # noqa: BLE001 - a truncated or foreign file raises many kinds
            raise CheckpointError(f"{path}: not a detectron2 .pkl checkpoint, or it is truncated or corrupt") from None
    else:
        obj = read_checkpoint(path)
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: expected a detectron2 checkpoint (a dict with 'model'), got a {type(obj).__name__}")
    state_dict, source = unwrap_state_dict(obj, path, "for Mask2Former / MPVSS: expected {'model': state_dict} "
                                                      "(detectron2) or a bare state_dict")
    if not all(isinstance(k, str) for k in state_dict):
        raise CheckpointError(f"{source}: state_dict has non-string keys")
    import numpy as np

    out = OrderedDict()
    for k, v in strip_data_parallel(state_dict).items():
        out[k] = torch.from_numpy(np.ascontiguousarray(v)) if isinstance(v, np.ndarray) else v
    return out, source


def _fill_and_drop(module: nn.Module, state_dict: Mapping) -> tuple[OrderedDict, list[str]]:
    """Drop criterion.* (the loss's buffer) and fill missing BN num_batches_tracked; returns notes."""
    expected = module.state_dict()
    dropped = [k for k in state_dict if k.startswith("criterion.")]
    out = OrderedDict((k, v) for k, v in state_dict.items() if not k.startswith("criterion."))
    filled = [k for k in expected if k.endswith("num_batches_tracked") and k not in out]
    for k in filled:
        out[k] = expected[k].clone()
    notes = []
    if dropped:
        notes.append(f"dropped {count_keys(len(dropped), 'the training loss (criterion.*)')}")
    if filled:
        notes.append(f"filled {len(filled)} BatchNorm num_batches_tracked counters the checkpoint has not "
                     f"(a FrozenBN backbone)")
    return out, notes


def _note(notes: list[str]) -> str | None:
    return ("; ".join(notes)[0].upper() + "; ".join(notes)[1:] + ".") if notes else None


def _mpvss_hint(model) -> str:
    cfg = model.cfg
    return f" (the config is variant {cfg.variant!r} with {cfg.num_classes} classes, propagation {cfg.propagation!r})"


def load_mask2former_checkpoint(model, path: str | os.PathLike) -> str | None:
    """Load official Mask2Former semantic-segmentation weights (ResNet backbone) into an MPVSS
    model's key-frame segmentor: backbone.* and sem_seg_head.*, strictly (the flow module is
    left as it is). Accepts a detectron2 .pkl or .pth ({'model': ...}) or a bare state_dict.
    Returns None or a note (for the manifest) on what was dropped or filled."""
    path = Path(path)
    state_dict, source = _read_mask2former(path)
    if any(k.startswith("motion.") for k in state_dict):
        raise CheckpointError(f"{source}: has motion.* keys: an MPVSS checkpoint, not a Mask2Former one; "
                              f"pass it as --checkpoint")
    segmentor = nn.ModuleDict({"backbone": model.backbone, "sem_seg_head": model.sem_seg_head})
    state_dict, notes = _fill_and_drop(segmentor, state_dict)
    segmentor.load_state_dict(checked_state_dict(segmentor, state_dict, source, _mpvss_hint(model)), strict=True)
    return _note(notes)


def load_mpvss_checkpoint(model, path: str | os.PathLike) -> str | None:
    """Load an MPVSS checkpoint (the official meta-architecture's state_dict: backbone.*,
    motion.*, sem_seg_head.*; detectron2 .pth {'model': ...} or bare) strictly. For the 'copy'
    baseline (no flow module) motion.* is dropped with a note."""
    path = Path(path)
    state_dict, source = _read_mask2former(path)
    if not any(k.startswith("motion.") for k in state_dict):
        raise CheckpointError(f"{source}: not an MPVSS checkpoint (no motion.* keys); for Mask2Former "
                              f"weights use --mask2former-checkpoint")
    notes = []
    if model.motion is None:
        motion = [k for k in state_dict if k.startswith("motion.")]
        state_dict = OrderedDict((k, v) for k, v in state_dict.items() if not k.startswith("motion."))
        notes.append(f"dropped {count_keys(len(motion), 'the flow module (motion.*)')}: the copy baseline has none")
    state_dict, more = _fill_and_drop(model, state_dict)
    model.load_state_dict(checked_state_dict(model, state_dict, source, _mpvss_hint(model)), strict=True)
    return _note(notes + more)


def save_official_mask2former_checkpoint(model, path: str | os.PathLike) -> None:
    """Write the segmentor's weights as Mask2Former's model zoo ships them: a detectron2 .pkl
    {'model': {key: numpy array}} with the loss's criterion.empty_weight (for tests)."""
    path = Path(path)
    weights = OrderedDict((k, v.detach().cpu().numpy()) for k, v in model.state_dict().items()
                          if k.startswith(("backbone.", "sem_seg_head.")) and not k.endswith("num_batches_tracked"))
    weights["criterion.empty_weight"] = torch.ones(model.cfg.num_classes + 1).numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, pickle.dumps({"model": weights, "__author__": "vss-edge"}))


def save_mpvss_checkpoint(model, path: str | os.PathLike) -> None:
    """Write an MPVSS model's weights as detectron2's checkpointer does: {'model': state_dict
    (with criterion.empty_weight), 'iteration': 0}."""
    state_dict = cpu_state_dict(model)
    state_dict["criterion.empty_weight"] = torch.ones(model.cfg.num_classes + 1)
    save_torch_atomic({"model": state_dict, "iteration": 0}, Path(path))
