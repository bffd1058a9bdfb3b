"""Shared checkpoint machinery: reading, strict loading, provenance and atomic writing.

Each method's official layouts are read and written by
``vss_edge/models/<method>/checkpoints.py`` (gsvnet, tdnet, stmg with DDRNet, mpvss
with Mask2Former), on top of the helpers here; this module imports none of them.

Keys saved from ``nn.DataParallel`` carry a ``module.`` prefix; it is accepted
everywhere. Loading is tolerant of the container (bare, ``'state_dict'`` or
``'model'``) but strict on key names and tensor shapes: any mismatch raises one
``CheckpointError`` naming the file and listing what is missing, unexpected or of
the wrong shape. Files are read with ``torch.load(weights_only=True)``, so a
checkpoint that needs anything beyond tensors, plain containers and
``argparse.Namespace`` is refused rather than executed.
"""
from __future__ import annotations

import argparse
import io
import os
import pickle
import re
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn as nn

from vss_edge.runtime.errors import CheckpointError
from vss_edge.runtime.manifest import sha256_file
from vss_edge.runtime.outputs import write_bytes_atomic

_DP_PREFIX = "module."
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


def unwrap_state_dict(obj: Mapping, path: Path, expected: str) -> tuple[Mapping, str]:
    """(state_dict, source): obj if all tensors, else obj['state_dict'] or obj['model']; else CheckpointError."""
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj, str(path)
    for key in ("state_dict", "model"):
        if isinstance(obj.get(key), Mapping):
            return obj[key], f"{path} ['{key}']"
    top = ", ".join(map(repr, list(obj)[:8])) or "none"
    raise CheckpointError(f"{path}: no state_dict found {expected}; top-level keys: {top}")


def weights_provenance(path: Path) -> dict:
    """{'path': str(path), 'sha256': hex digest of the file}, for a manifest's provenance."""
    return {"path": str(path), "sha256": sha256_file(path)}


# --- strict loading --------------------------------------------------------------


def _shape(value) -> str:
    return str(list(value.shape)) if isinstance(value, torch.Tensor) else f"<{type(value).__name__}>"


def first_keys(keys: list[str]) -> str:
    """The first few (3) of `keys` joined by ', ', with ', ...' appended when there are more."""
    shown = ", ".join(keys[:_SHOWN])
    return shown + (", ..." if len(keys) > _SHOWN else "")


def count_keys(n: int, what: str) -> str:
    """'1 key of <what>' or '<n> keys of <what>', for the notes the loaders return."""
    return f"{n} key{'' if n == 1 else 's'} of {what}"


def strip_data_parallel(state_dict: Mapping) -> dict:
    """`state_dict` without the ``module.`` prefix when every key has it (nn.DataParallel), else itself."""
    keys = list(state_dict)
    if keys and all(isinstance(k, str) and k.startswith(_DP_PREFIX) for k in keys):
        return OrderedDict((k[len(_DP_PREFIX):], v) for k, v in state_dict.items())
    return state_dict


def checked_state_dict(module: nn.Module, state_dict, source: str, hint: str = "") -> Mapping:
    """The state_dict (``module.`` stripped) if it matches `module` exactly, else CheckpointError."""
    name = type(module).__name__
    if not isinstance(state_dict, Mapping):
        raise CheckpointError(f"{source}: expected a state_dict (a dict of tensors) for {name}, "
                              f"got {type(state_dict).__name__}")
    if not all(isinstance(k, str) for k in state_dict):
        raise CheckpointError(f"{source}: state_dict for {name} has non-string keys")
    state_dict = strip_data_parallel(state_dict)
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
        problems.append(f"{len(missing)} missing keys ({first_keys(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys ({first_keys(unexpected)})")
    if mismatched:
        shown = [f"{k}: checkpoint {_shape(state_dict[k])} vs model {_shape(expected[k])}" for k in mismatched]
        problems.append(f"{len(mismatched)} shape mismatches ({first_keys(shown)})")
    if len(missing) == len(expected) and state_dict:
        problems.append(f"no key in common: is this a checkpoint of another network?{hint}")
    raise CheckpointError(f"{source}: does not match {name}: {', '.join(problems)}")


def load_strict(module: nn.Module, state_dict, source: str) -> None:
    """Load `state_dict` into `module` after checking keys and shapes exactly.

    A ``module.`` prefix on every key is stripped. Any mismatch raises one
    CheckpointError starting with `source` (e.g. the file name) that counts and
    lists the missing keys, unexpected keys and shape mismatches.
    """
    module.load_state_dict(checked_state_dict(module, state_dict, source), strict=True)


# --- writing ---------------------------------------------------------------------


def cpu_state_dict(module: nn.Module, prefix: str = "") -> OrderedDict:
    """module.state_dict() detached and on CPU, in order, each key with `prefix` in front."""
    return OrderedDict((prefix + k, v.detach().cpu()) for k, v in module.state_dict().items())


def save_torch_atomic(obj, path: str | os.PathLike) -> None:
    """torch.save obj to path, all or nothing (runtime.outputs.write_bytes_atomic); OutputError if it cannot."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_bytes_atomic(path, buffer.getvalue())
