"""Reading model weights from local files without ever unpickling arbitrary objects.

``.safetensors`` files are read with safetensors; anything else with ``torch.load(weights_only=True)``,
which refuses pickled Python objects other than tensors, numbers and containers. Training checkpoints
usually wrap the weights (``{"state_dict": ...}``, ``{"model": ...}``) and DDP / torch.compile prefix the
keys (``module.``, ``_orig_mod.``): both are undone here so that a plain state dict comes out.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from harness.errors import UserError

if TYPE_CHECKING:  # pragma: no cover
    import torch

#: Keys under which training scripts store the weights, tried in this order (DINO-style checkpoints
#: hold "teacher" and "student": the teacher is the one evaluated).
WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "module", "net", "network", "teacher")
PREFIXES = ("module.", "_orig_mod.")


def load_state_dict(path: str, key: str | None = None) -> dict[str, "torch.Tensor"]:
    """The tensors of a checkpoint file, unwrapped and with DDP / compile prefixes stripped.

    ``key`` picks a wrapper entry explicitly (for example ``"state_dict_ema"``); otherwise the first of
    :data:`WRAPPER_KEYS` present is used when the top level is not itself a state dict.
    """
    path = existing_file(path, "checkpoint")
    obj = _read(path)
    state = _unwrap(obj, path, key)
    return {_strip(k): v for k, v in state.items()}


def existing_file(path: str, what: str) -> str:
    """``path`` with ``~`` expanded; a UserError naming ``what`` when it is not an existing file."""
    path = os.path.expanduser(str(path))
    if not os.path.isfile(path):
        raise UserError(f"{path}: {what} file not found")
    return path


def _read(path: str) -> Any:
    import torch

    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        try:
            return load_file(path, device="cpu")
        except Exception as exc:  # noqa: BLE001 - any parse failure is a bad user file
            raise UserError(f"{path}: not a readable safetensors file ({_first_line(exc)})") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        message = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))  # torch colours part of its message
        found = re.search(r"Unsupported global: GLOBAL (\S+)", message)
        if found:
            raise UserError(
                f"{path}: refused: the file holds pickled Python objects besides tensors (found "
                f"{found.group(1)}), which torch.load(weights_only=True) will not run; save a plain state "
                "dict (torch.save(model.state_dict(), path)) or a .safetensors file"
            ) from None
        detail = re.search(r"WeightsUnpickler error:\s*(.+)", message)
        reason = detail.group(1).strip() if detail else _first_line(exc)
        raise UserError(f"{path}: not a readable torch checkpoint ({reason})") from None


def _unwrap(obj: Any, path: str, key: str | None) -> Mapping[str, Any]:
    import torch

    if key is not None:
        if not isinstance(obj, Mapping) or key not in obj:
            have = sorted(map(str, obj)) if isinstance(obj, Mapping) else type(obj).__name__
            raise UserError(f"{path}: checkpoint_key {key!r} not found (top-level keys: {have})")
        obj = obj[key]
    for _ in range(3):  # wrappers nest at most a couple of levels in practice
        if not isinstance(obj, Mapping):
            break
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
        inner = next((k for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = obj[inner]
    if isinstance(obj, Mapping) and obj:
        bad = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor)]
        raise UserError(
            f"{path}: not a state dict: entries {bad[:5]} are not tensors "
            f"(pick the weights with checkpoint_key; wrappers tried: {', '.join(WRAPPER_KEYS)})"
        )
    raise UserError(f"{path}: no weights found (got {type(obj).__name__}, expected a mapping of tensors)")


def _strip(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix) :], True
    return key


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[0] if lines else type(exc).__name__


def file_sha256(path: str) -> str:
    """sha256 of a file's bytes, memoised on (path, size, mtime) so a large checkpoint is read once."""
    st = os.stat(path)
    return _sha256(os.path.abspath(path), st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=64)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
