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

Keys saved from ``nn.DataParallel`` carry a ``module.`` prefix; it is accepted
everywhere. Loading is tolerant of the container (bare, ``'state_dict'`` or
``'model'``) but strict on key names and tensor shapes: any mismatch raises one
``CheckpointError`` naming the file and listing what is missing, unexpected or of
the wrong shape. Files are read with ``torch.load(weights_only=True)``, so a
checkpoint that needs anything beyond tensors, plain containers and
``argparse.Namespace`` is refused rather than executed.

DDRNet (STMG's backbone; ydhongHIT/DDRNet, segmentation/DDRNet_23_slim.py and
DDRNet_39.py) is trained with the HRNet-Semantic-Segmentation code base, whose
``FullModel`` wrapper saves the network under ``model.`` next to the loss's buffers
(``loss.criterion.weight``), bare or under ``'state_dict'``; the official classes
themselves load a bare ``DualResNet`` state_dict. Both are accepted, ``loss.*`` is
dropped, and so are the auxiliary head's ``seghead_extra.*`` keys (the released
Cityscapes 23-slim was trained with ``augment=True``) when the model has no such head.
"""
from __future__ import annotations

import argparse
import os
import pickle
import re
import secrets
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn as nn

from vss_edge.runtime.errors import CheckpointError
from vss_edge.runtime.manifest import sha256_file

if TYPE_CHECKING:
    from vss_edge.models.gsvnet.graphs import GSVNet
    from vss_edge.models.stmg.ddrnet import DDRNet
    from vss_edge.models.stmg.graphs import STMG
    from vss_edge.models.tdnet.model import TDNet

_DP_PREFIX = "module."
_GSV_PREFIX = "grm."
_SHOWN = 3  # how many offending keys a message lists per kind


# --- reading ---------------------------------------------------------------------


def read_checkpoint(path: str | os.PathLike) -> object:
    """torch.load `path` on CPU with weights_only=True (argparse.Namespace allowed).

    Raises CheckpointError naming the file for a missing file, a file that is not a
    PyTorch checkpoint, or one whose pickle needs other (arbitrary) objects.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint file not found")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, not a checkpoint file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. torch's note on the pickle protocol
            with torch.serialization.safe_globals([argparse.Namespace]):
                return torch.load(path, map_location="cpu", weights_only=True)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read checkpoint: {e.strerror or e}") from None
    except pickle.UnpicklingError as e:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
        if found:
            raise CheckpointError(
                f"{path}: checkpoint pickles a {found.group(1)} object; vss-edge refuses to unpickle "
                "arbitrary objects (only tensors, plain containers and argparse.Namespace are "
                "allowed); re-save it as a plain state_dict") from None
        raise CheckpointError(f"{path}: not a PyTorch checkpoint file, or it is truncated or corrupt") from None
    except Exception:  # noqa: BLE001 - torch raises many kinds for a non-checkpoint file
        raise CheckpointError(f"{path}: not a PyTorch checkpoint file, or it is truncated or corrupt") from None


# --- strict loading --------------------------------------------------------------


def _shape(value) -> str:
    return str(list(value.shape)) if isinstance(value, torch.Tensor) else f"<{type(value).__name__}>"


def _first(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOWN])
    return shown + (", ..." if len(keys) > _SHOWN else "")


def _strip_dp(state_dict: Mapping) -> dict:
    keys = list(state_dict)
    if keys and all(isinstance(k, str) and k.startswith(_DP_PREFIX) for k in keys):
        return OrderedDict((k[len(_DP_PREFIX):], v) for k, v in state_dict.items())
    return state_dict


def _checked(module: nn.Module, state_dict, source: str, hint: str = "") -> Mapping:
    """The state_dict (``module.`` stripped) if it matches `module` exactly, else CheckpointError."""
    name = type(module).__name__
    if not isinstance(state_dict, Mapping):
        raise CheckpointError(f"{source}: expected a state_dict (a dict of tensors) for {name}, "
                              f"got {type(state_dict).__name__}")
    if not all(isinstance(k, str) for k in state_dict):
        raise CheckpointError(f"{source}: state_dict for {name} has non-string keys")
    state_dict = _strip_dp(state_dict)
    expected = module.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [k for k in expected
                  if k in state_dict and (not isinstance(state_dict[k], torch.Tensor)
                                          or state_dict[k].shape != expected[k].shape)]
    if not (missing or unexpected or mismatched):
        return state_dict
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys ({_first(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys ({_first(unexpected)})")
    if mismatched:
        shown = [f"{k}: checkpoint {_shape(state_dict[k])} vs model {_shape(expected[k])}" for k in mismatched]
        problems.append(f"{len(mismatched)} shape mismatches ({_first(shown)})")
    if len(missing) == len(expected) and state_dict:
        problems.append(f"no key in common: is this a checkpoint of another network?{hint}")
    raise CheckpointError(f"{source}: does not match {name}: {', '.join(problems)}")


def load_strict(module: nn.Module, state_dict, source: str) -> None:
    """Load `state_dict` into `module` after checking keys and shapes exactly.

    A ``module.`` prefix on every key is stripped. Any mismatch raises one
    CheckpointError starting with `source` (e.g. the file name) that counts and
    lists the missing keys, unexpected keys and shape mismatches.
    """
    module.load_state_dict(_checked(module, state_dict, source), strict=True)


# --- the official layouts --------------------------------------------------------


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
    return _unwrap_state_dict(obj, path, f"for the {keyframe_net} keyframe net: expected {layout} (or one under 'model')")


def _unwrap_state_dict(obj: Mapping, path: Path, expected: str) -> tuple[Mapping, str]:
    """(state_dict, source): obj itself when all its values are tensors, else obj['state_dict'] or
    obj['model']; CheckpointError naming `expected` and the top-level keys otherwise."""
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj, str(path)
    for key in ("state_dict", "model"):
        if isinstance(obj.get(key), Mapping):
            return obj[key], f"{path} ['{key}']"
    top = ", ".join(map(repr, list(obj)[:8])) or "none"
    raise CheckpointError(f"{path}: no state_dict found {expected}; top-level keys: {top}")


def _provenance(path: Path) -> dict:
    return {"path": str(path), "sha256": sha256_file(path)}


def load_keyframe_checkpoint(model: GSVNet, path: str | os.PathLike) -> dict:
    """Load an official SwiftNet/BiSeNet checkpoint (per model.cfg.keyframe_net) into model.segnet.

    Returns {'path', 'sha256'} of the file for provenance.
    """
    path = Path(path)
    obj = read_checkpoint(path)
    state_dict, source = _keyframe_state_dict(obj, path, model.cfg.keyframe_net)
    stem = _strip_dp(state_dict).get("backbone.conv1.weight") if model.cfg.keyframe_net == "swiftnet" else None
    if isinstance(stem, torch.Tensor) and stem.dim() == 4 and stem.shape[0] != model.cfg.keyframe_width:
        raise CheckpointError(f"{source}: is a SwiftNet of base width {stem.shape[0]} but the config's keyframe_width "
                              f"is {model.cfg.keyframe_width} (pass --keyframe-width {stem.shape[0]})")
    hint = f" (the config's keyframe_net is {model.cfg.keyframe_net!r})"
    model.segnet.load_state_dict(_checked(model.segnet, state_dict, source, hint), strict=True)
    return _provenance(path)


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
    gsv_sd = _strip_dp(gsv_sd)
    unprefixed = [k for k in gsv_sd if not (isinstance(k, str) and k.startswith(_GSV_PREFIX))]
    if unprefixed:
        raise CheckpointError(f"{path} ['state_dict']: {len(unprefixed)} of {len(gsv_sd)} keys lack the "
                              f"official '{_GSV_PREFIX}' prefix ({_first([str(k) for k in unprefixed])})")
    gsv_sd = OrderedDict((k[len(_GSV_PREFIX):], v) for k, v in gsv_sd.items())
    gsv_sd = _checked(model.gsv, gsv_sd, f"{path} ['state_dict']")
    flow_sd = _checked(model.flownet, obj["state_dict_of"], f"{path} ['state_dict_of']")
    model.gsv.load_state_dict(gsv_sd, strict=True)
    model.flownet.load_state_dict(flow_sd, strict=True)
    return _provenance(path)


# --- writing ---------------------------------------------------------------------


def _cpu_state_dict(module: nn.Module, prefix: str = "") -> OrderedDict:
    return OrderedDict((prefix + k, v.detach().cpu()) for k, v in module.state_dict().items())


def _save_atomic(obj, path: Path) -> None:
    """torch.save to a temporary file beside `path`, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_official_checkpoints(model: GSVNet, keyframe_path: str | os.PathLike,
                              gsvnet_path: str | os.PathLike, args: argparse.Namespace | None = None) -> None:
    """Write model's weights as the official keyframe checkpoint and GSVNet .tar.

    The keyframe file is a bare state_dict (swiftnet) or {'state_dict': ...}
    (bisenet); the GSVNet file has epoch 0, empty optimizer state and `args`
    (the training settings; empty by default).
    """
    segnet = _cpu_state_dict(model.segnet)
    keyframe = segnet if model.cfg.keyframe_net == "swiftnet" else {"state_dict": segnet}
    gsvnet = {
        "epoch": 0,
        "state_dict": _cpu_state_dict(model.gsv, _GSV_PREFIX),
        "optimizer": {},
        "best_pred": 0.0,
        "current_pred": 0.0,
        "args": argparse.Namespace() if args is None else args,
        "state_dict_of": _cpu_state_dict(model.flownet),
    }
    _save_atomic(keyframe, Path(keyframe_path))
    _save_atomic(gsvnet, Path(gsvnet_path))


# --- TDNet -----------------------------------------------------------------------
#
# The official Testing code (feinanshan/TDNet, Testing/model/pspnet/td4_psp18.py,
# pretrained_mp_load) loads its released .pkl files as a bare state_dict with
# load_state_dict(strict=True); the Training code saves {'model_state': ..., ...}.
# Both containers (and 'state_dict' / 'model', and 'module.' prefixes) are accepted.

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
    from vss_edge.models.tdnet.model import layer_norm_size, resize_layer_norms

    path = Path(path)
    obj = read_checkpoint(path)
    state_dict, source = _tdnet_state_dict(obj, path)
    state_dict = _strip_dp(state_dict)
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
    model.load_state_dict(_checked(model, state_dict, source, hint), strict=True)
    return note


def save_official_tdnet_checkpoint(model: TDNet, path: str | os.PathLike) -> None:
    """Write model's weights as the official Testing code loads them: a bare state_dict."""
    _save_atomic(_cpu_state_dict(model), Path(path))


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
    return _unwrap_state_dict(obj, path, "for DDRNet: expected a bare state_dict (or one under 'state_dict' or 'model')")


def _count(n: int, what: str) -> str:
    return f"{n} key{'' if n == 1 else 's'} of {what}"


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
    state_dict = _strip_dp(state_dict)
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
    model.load_state_dict(_checked(model, state_dict, source, hint), strict=True)
    if not (dropped_loss or dropped_aux):
        return None
    parts = []
    if dropped_aux:
        parts.append(_count(dropped_aux, "the auxiliary training head (seghead_extra.*)"))
    if dropped_loss:
        parts.append(_count(dropped_loss, "the training loss (loss.*)"))
    return f"Dropped {' and '.join(parts)} from the DDRNet checkpoint; inference does not use them."


def save_official_ddrnet_checkpoint(model: DDRNet, path: str | os.PathLike) -> None:
    """Write model's weights as the official DualResNet classes load them: a bare state_dict."""
    _save_atomic(_cpu_state_dict(model), Path(path))


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
    state_dict = _strip_dp(state_dict)
    if not any(k.startswith("mask_generator.") for k in state_dict):
        raise CheckpointError(f"{source}: not an STMG checkpoint (no mask_generator.* keys); for DDRNet "
                              "weights use --ddrnet-checkpoint")
    hint = f" (the config's backbone is {model.cfg.backbone!r})"
    model.load_state_dict(_checked(model, state_dict, source, hint), strict=True)


def save_stmg_checkpoint(model: STMG, path: str | os.PathLike) -> None:
    """Write an STMG model's weights as load_stmg_checkpoint reads them: a bare state_dict."""
    _save_atomic(_cpu_state_dict(model), Path(path))


# --- MPVSS / Mask2Former ---------------------------------------------------------
#
# Mask2Former's model zoo (facebookresearch/Mask2Former) ships detectron2 .pkl files:
# {'model': {key: numpy array}, '__author__': ...}; detectron2's DetectionCheckpointer
# writes .pth files {'model': state_dict, 'optimizer', 'scheduler', 'iteration'}, as the
# MPVSS training (train_net_vss.py) would. Keys: backbone.* (detectron2 ResNet),
# sem_seg_head.pixel_decoder.*, sem_seg_head.predictor.*, and for MPVSS motion.encoder.*,
# motion.decoder.*; both carry the loss's criterion.empty_weight, dropped here.
# FrozenBN backbones have no num_batches_tracked: missing ones are filled from the model.

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
    state_dict, source = _unwrap_state_dict(obj, path, "for Mask2Former / MPVSS: expected {'model': state_dict} "
                                                       "(detectron2) or a bare state_dict")
    if not all(isinstance(k, str) for k in state_dict):
        raise CheckpointError(f"{source}: state_dict has non-string keys")
    import numpy as np

    out = OrderedDict()
    for k, v in _strip_dp(state_dict).items():
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
        notes.append(f"dropped {_count(len(dropped), 'the training loss (criterion.*)')}")
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
    segmentor.load_state_dict(_checked(segmentor, state_dict, source, _mpvss_hint(model)), strict=True)
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
        notes.append(f"dropped {_count(len(motion), 'the flow module (motion.*)')}: the copy baseline has none")
    state_dict, more = _fill_and_drop(model, state_dict)
    model.load_state_dict(_checked(model, state_dict, source, _mpvss_hint(model)), strict=True)
    return _note(notes + more)


def save_official_mask2former_checkpoint(model, path: str | os.PathLike) -> None:
    """Write the segmentor's weights as Mask2Former's model zoo ships them: a detectron2 .pkl
    {'model': {key: numpy array}} with the loss's criterion.empty_weight (for tests)."""
    path = Path(path)
    weights = OrderedDict((k, v.detach().cpu().numpy()) for k, v in model.state_dict().items()
                          if k.startswith(("backbone.", "sem_seg_head.")) and not k.endswith("num_batches_tracked"))
    weights["criterion.empty_weight"] = torch.ones(model.cfg.num_classes + 1).numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "wb") as f:
            pickle.dump({"model": weights, "__author__": "vss-edge"}, f)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_mpvss_checkpoint(model, path: str | os.PathLike) -> None:
    """Write an MPVSS model's weights as detectron2's checkpointer does: {'model': state_dict
    (with criterion.empty_weight), 'iteration': 0}."""
    state_dict = _cpu_state_dict(model)
    state_dict["criterion.empty_weight"] = torch.ones(model.cfg.num_classes + 1)
    _save_atomic({"model": state_dict, "iteration": 0}, Path(path))
