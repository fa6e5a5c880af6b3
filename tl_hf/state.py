"""Our own state files: JSON (and safetensors), written atomically, never pickle."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

__all__ = ["atomic_write_json", "read_json", "CorruptStateError", "validate_checkpoint"]


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


def validate_checkpoint(folder: str) -> None:
    """Check every file of a checkpoint before resuming from it: JSON parses, safetensors headers read, torch
    pickles (optimizer/scheduler/RNG, written by transformers) are complete zip archives. A crash while a checkpoint
    was being written leaves such a file truncated; say which one instead of failing deep inside a library."""
    import zipfile

    if not os.path.isdir(folder):
        raise CorruptStateError(f"checkpoint {folder} does not exist")
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            continue
        problem = None
        if name.endswith(".json"):
            try:
                with open(path) as f:
                    json.load(f)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                problem = str(exc)
        elif name.endswith(".safetensors"):
            try:
                from safetensors import safe_open

                with safe_open(path, framework="pt") as f:
                    f.keys()
            except Exception as exc:  # noqa: BLE001 - safetensors raises its own error type
                problem = str(exc)
        elif name.endswith((".pt", ".pth", ".bin")) and not zipfile.is_zipfile(path):
            problem = "not a complete archive"
        if problem:
            raise CorruptStateError(
                f"checkpoint {folder} is unusable: {path} is truncated or corrupt ({' '.join(problem.split())[:120]});"
                " resume from an earlier checkpoint (training.resume_from_checkpoint=...) or delete this one")
