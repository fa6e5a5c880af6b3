"""Tokens and uploads: nothing tl_hf uploads may hold a Hub token.

``TrainingArguments.hub_token`` is refused (:func:`tl_hf._errors.hub_token_refused`: the Trainer would pickle it into
``training_args.bin``), so a token only travels in a request's ``Authorization`` header. Before an upload,
:func:`check_no_tokens` still scans every file that would go (bytes, binary files included) for the tokens this
process knows (:func:`tl_hf._hub_access.known_tokens`) and refuses with :class:`TokenLeakError`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from tl_hf._hub_access import known_tokens, scrub_tokens

__all__ = ["TokenLeakError", "check_no_tokens", "files_to_upload", "known_tokens", "scrub_tokens"]

_SCAN_FULL_LIMIT = 64 * 2**20  # files up to this size are scanned whole for tokens; larger ones: first/last 1 MiB


class TokenLeakError(RuntimeError):
    """A file that would be pushed contains a Hub token; nothing was uploaded."""


def files_to_upload(folder: str) -> list[Path]:
    """What ``Trainer.push_to_hub`` uploads: everything under ``folder`` but ``_*`` and ``checkpoint-*``."""
    from fnmatch import fnmatch

    root = Path(folder)
    out = []
    for p in root.rglob("*"):
        if not p.is_file():
            continue
        rel = p.relative_to(root).as_posix()
        if fnmatch(rel, "_*") or fnmatch(rel, "checkpoint-*") or ".cache/" in rel or rel.startswith(".git/"):
            continue
        out.append(p)
    return out


def check_no_tokens(folder: str, tokens: Sequence[str]) -> None:
    """Raise :class:`TokenLeakError` if a file that would be uploaded from ``folder`` contains one of ``tokens``."""
    needles = [t.encode() for t in tokens if t]
    if not needles:
        return
    for p in files_to_upload(folder):
        size = p.stat().st_size
        with open(p, "rb") as f:
            if size <= _SCAN_FULL_LIMIT:
                chunks = [f.read()]
            else:
                head = f.read(2**20)
                f.seek(-(2**20), os.SEEK_END)
                chunks = [head, f.read()]
        if any(n in c for n in needles for c in chunks):
            raise TokenLeakError(f"{p} contains a Hugging Face token; refusing to push {folder}. Remove that file "
                                 "or re-save it without the token, then push again.")
