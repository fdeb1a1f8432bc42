"""Reading and writing the balancing methods' checkpoint state: JSON and safetensors only, written atomically, read
back with errors that name the file, and a saved method config compared with the running one.

Resume must give the uninterrupted result or refuse: a missing, corrupt or changed state file is never silently
replaced by a fresh start (`MultimodalTrainer(method_state_on_resume="restart")` is the explicit way to start the
methods fresh from a checkpoint).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from typing import Any

import torch

RESTART_HINT = "pass MultimodalTrainer(method_state_on_resume='restart') to start the balancing methods fresh instead"


class CheckpointStateError(ValueError):
    """A method's checkpoint state is missing, unreadable or was saved with another config; names the file."""


def write_json_atomic(path: str, payload: Any, **dump_options: Any) -> None:
    """Write JSON to `path` through a temporary file and `os.replace`: a kill leaves the old file or the new one."""
    temporary = f"{path}.tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(payload, handle, **dump_options)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def save_tensors_atomic(tensors: Mapping[str, torch.Tensor], path: str) -> None:
    """`safetensors.torch.save_file` through a temporary file and `os.replace`."""
    from safetensors.torch import save_file

    temporary = f"{path}.tmp"
    save_file(dict(tensors), temporary)
    os.replace(temporary, path)


def _require(path: str, method: str) -> None:
    if not os.path.isfile(path):
        raise CheckpointStateError(
            f"{method}: the checkpoint has no {os.path.basename(path)} ({path}); its state cannot be restored, so the "
            f"resumed run would differ from an uninterrupted one. {RESTART_HINT}"
        )


def read_json_state(path: str, method: str) -> dict:
    """The JSON state file `path` of `method`; `CheckpointStateError` naming it when missing or unreadable."""
    _require(path, method)
    try:
        with open(path, encoding="utf-8") as handle:
            state = json.load(handle)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointStateError(f"{method}: cannot read {path}: {type(error).__name__}: {error}. {RESTART_HINT}") from None
    if not isinstance(state, dict):
        raise CheckpointStateError(f"{method}: {path} holds {type(state).__name__}, expected a JSON object. {RESTART_HINT}")
    return state


def read_tensor_state(path: str, method: str) -> dict[str, torch.Tensor]:
    """The safetensors state file `path` of `method`; `CheckpointStateError` naming it when missing or unreadable."""
    from safetensors.torch import load_file

    _require(path, method)
    try:
        return load_file(path)
    except Exception as error:  # safetensors raises its own SafetensorError (and OSError) for a damaged file
        raise CheckpointStateError(f"{method}: cannot read {path}: {type(error).__name__}: {error}. {RESTART_HINT}") from None


def require_keys(state: Mapping, keys: Iterable[str], path: str, method: str) -> None:
    """A state file written by another version (or damaged) lacks fields: name them."""
    missing = [key for key in keys if key not in state]
    if missing:
        raise CheckpointStateError(f"{method}: {path} lacks {missing}; it was not written by this version. {RESTART_HINT}")


def check_same_config(saved: Mapping, current: Mapping, path: str, method: str) -> None:
    """Refuse to resume with a method config other than the saved one (e.g. another `ema_decay`): the run would be
    neither the old one continued nor a new one. Names every changed field with both values."""
    changed = {key: (saved.get(key), current.get(key)) for key in sorted(set(saved) | set(current)) if saved.get(key) != current.get(key)}
    if changed:
        details = ", ".join(f"{key}: saved {old!r}, now {new!r}" for key, (old, new) in changed.items())
        raise CheckpointStateError(
            f"{method}: the checkpoint's state ({path}) was saved with another config ({details}); resume with the "
            f"same options, or {RESTART_HINT[5:]}"
        )


__all__ = [
    "CheckpointStateError",
    "RESTART_HINT",
    "check_same_config",
    "read_json_state",
    "read_tensor_state",
    "require_keys",
    "save_tensors_atomic",
    "write_json_atomic",
]
