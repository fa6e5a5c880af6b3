"""One run at a time per ``output_dir``: a lock file holding the holder's pid and host, taken before a run writes
anything there and removed when it ends. A lock left by a process that no longer runs (on this host) is taken over."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from typing import Iterator

from tl_hf._errors import ConfigError

logger = logging.getLogger(__name__)

__all__ = ["LOCK_FILE", "OutputDirLocked", "check_unlocked", "output_dir_lock"]

LOCK_FILE = ".tl_hf.lock"


class OutputDirLocked(ConfigError):
    """Another live run holds the lock of this ``output_dir``."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def _holder(path: str) -> dict | None:
    """The lock's content, or None when it is unreadable (a crash between creating and writing it)."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
        return doc if isinstance(doc, dict) and isinstance(doc.get("pid"), int) else None
    except (OSError, ValueError):
        return None


def _try_create(path: str) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        json.dump({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}, f)
    return True


def _is_stale(path: str, holder: dict | None) -> bool:
    if holder is None:  # unreadable: stale once it is older than a few seconds (its writer would have finished)
        try:
            return time.time() - os.path.getmtime(path) > 5
        except OSError:
            return True
    return holder.get("host") == socket.gethostname() and not _alive(holder["pid"])


def acquire(output_dir: str) -> str:
    """Take the lock of ``output_dir`` (created if needed); :class:`OutputDirLocked` names a live holder."""
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, LOCK_FILE)
    for _ in range(3):
        if _try_create(path):
            return path
        holder = _holder(path)
        mine = holder and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname()
        if not mine and _is_stale(path, holder):
            logger.warning("taking over the stale lock %s (%s)", path, holder or "unreadable")
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
            continue
        raise OutputDirLocked(_locked_message(output_dir, path, holder))
    raise OutputDirLocked(f"cannot take the lock {path}: other processes keep creating it")


def check_unlocked(output_dir: str) -> None:
    """Refuse (:class:`OutputDirLocked`, naming the holder) when a live run holds the lock of ``output_dir``;
    nothing is written. The validation's early look; :func:`acquire` still takes the lock atomically."""
    path = os.path.join(output_dir, LOCK_FILE)
    if not os.path.exists(path):
        return
    holder = _holder(path)
    if _is_stale(path, holder):
        return
    raise OutputDirLocked(_locked_message(output_dir, path, holder))


def _locked_message(output_dir: str, path: str, holder: dict | None) -> str:
    if holder and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
        return (f"training.output_dir {output_dir} is already in use by this process (a run inside a run?); use "
                "another training.output_dir")
    who = f"pid {holder['pid']} on {holder.get('host', '?')}" if holder else "another process"
    return (f"training.output_dir {output_dir} is in use by another run ({who}, lock file {path}); wait for it to "
            "end or use another training.output_dir (delete the lock file only if that run is gone)")


def release(path: str) -> None:
    """Remove the lock at ``path`` if this process holds it."""
    holder = _holder(path)
    if holder and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


@contextlib.contextmanager
def output_dir_lock(output_dir: str, enabled: bool = True) -> Iterator[None]:
    """Hold the lock of ``output_dir`` for the block (``enabled=False``: no lock, e.g. in non-main processes)."""
    if not enabled:
        yield
        return
    created = not os.path.exists(output_dir)
    path = acquire(output_dir)
    try:
        yield
    finally:
        release(path)
        if created:  # a run refused before it wrote anything leaves no empty folder behind
            with contextlib.suppress(OSError):
                os.rmdir(output_dir)
