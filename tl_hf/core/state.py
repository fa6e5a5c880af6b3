"""Our own state files: JSON (and safetensors), written atomically, never pickle."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

from tl_hf._errors import one_line

__all__ = ["STATE_FILE", "atomic_write_json", "read_json", "CorruptStateError", "file_problem", "validate_checkpoint"]

#: TransferTrainer's own checkpoint state (JSON, never pickle), written next to trainer_state.json in every checkpoint
STATE_FILE = "tl_hf_state.json"


class CorruptStateError(ValueError):
    """A state file is truncated or not valid JSON."""


def atomic_write_json(path: str, obj: Any) -> None:
    """Write ``obj`` as JSON to ``path`` through a temporary file in the same folder and an atomic rename, so a crash
    mid-write leaves either the old file or the new one, never half of one."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="_tmp_", suffix=".json", dir=folder)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_json(path: str) -> Any:
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as exc:
        raise CorruptStateError(f"{path} is truncated or corrupt ({exc}); resume from an earlier checkpoint") from None


def file_problem(path: str) -> str | None:
    """Why the state file ``path`` cannot be read, or None: JSON must parse, every tensor of a safetensors file must be
    present (a truncated file fails here), torch pickles written by transformers must be complete zip archives."""
    import zipfile

    name = os.path.basename(path)
    try:
        if name.endswith(".json"):
            with open(path, encoding="utf-8") as f:
                json.load(f)
        elif name.endswith(".safetensors"):
            from safetensors import safe_open

            with safe_open(path, framework="pt") as f:
                for key in f.keys():
                    f.get_slice(key)
        elif name.endswith((".pt", ".pth", ".bin")) and not zipfile.is_zipfile(path):
            return "not a complete archive"
    except Exception as exc:  # noqa: BLE001 - json and safetensors raise their own error types
        return one_line(exc)[:120]
    return None


def validate_checkpoint(folder: str) -> None:
    """Check every file of a checkpoint before resuming from it (:func:`file_problem`). A crash while a checkpoint
    was being written leaves such a file truncated; say which one instead of failing deep inside a library."""
    if not os.path.isdir(folder):
        raise CorruptStateError(f"checkpoint {folder} does not exist")
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            continue
        problem = file_problem(path)
        if problem:
            raise CorruptStateError(
                f"checkpoint {folder} is unusable: {path} is truncated or corrupt ({problem});"
                " resume from an earlier checkpoint (training.resume_from_checkpoint=...) or delete this one")
