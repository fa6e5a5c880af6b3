"""Hub tokens: where tl_hf finds them, and how it keeps them out of what it writes and uploads.

transformers 5.24's ``Trainer.push_to_hub`` / ``save_model`` write ``training_args.bin`` with
``torch.save(self.args)``, i.e. the pickled ``TrainingArguments`` *including* ``hub_token`` in clear text, and upload
it. So pushes save with ``args.hub_token`` temporarily set to ``None`` (:func:`args_without_token`; the token is passed
to the upload explicitly instead and only travels in the request's ``Authorization`` header), cards are scrubbed of
every known token value (:func:`known_tokens`: ``hub_token``, the ``token`` argument, ``$HF_TOKEN``, the saved login)
and of anything shaped like a Hugging Face token (``hf_...``) by :func:`scrub_tokens`, and nothing is uploaded
(:class:`TokenLeakError`) while a file that would be uploaded still contains a known token (:func:`check_no_tokens`).
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Iterable, Sequence

__all__ = ["REDACTED", "TokenLeakError", "args_without_token", "check_no_tokens", "files_to_upload", "known_tokens",
           "scrub_tokens"]


REDACTED = "<redacted>"
_TOKEN_LIKE = re.compile(r"hf_[A-Za-z0-9]{10,}")
_TOKEN_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HUGGINGFACE_HUB_TOKEN", "HF_HUB_TOKEN")
_SCAN_FULL_LIMIT = 64 * 2**20  # files up to this size are scanned whole for tokens; larger ones: first/last 1 MiB


class TokenLeakError(RuntimeError):
    """A file that would be pushed contains a Hub token; nothing was uploaded."""


# id(TrainingArguments) -> tokens taken out of it while saving / pushing (still secrets to scrub)
_HIDDEN: dict[int, list[str]] = {}


def known_tokens(trainer=None, extra: Iterable[str | None] = ()) -> list[str]:
    found: list[str | None] = list(extra)
    if trainer is not None:
        found.append(getattr(trainer.args, "hub_token", None))
        found += _HIDDEN.get(id(trainer.args), [])
    found += [os.environ.get(k) for k in _TOKEN_ENV]
    try:  # the token saved by `hf auth login` (a local file read, no network)
        from huggingface_hub import get_token

        found.append(get_token())
    except Exception:  # pragma: no cover - best effort
        pass
    # longest first, so that a token containing another one is replaced whole
    return sorted({t for t in found if isinstance(t, str) and len(t) >= 8}, key=len, reverse=True)


def scrub_tokens(text: str, tokens: Iterable[str] = ()) -> str:
    """``text`` with every given token value and anything shaped like a Hugging Face token replaced by
    ``<redacted>``."""
    for t in sorted({t for t in tokens if t}, key=len, reverse=True):
        text = text.replace(t, REDACTED)
    return _TOKEN_LIKE.sub(REDACTED, text)


@contextlib.contextmanager
def args_without_token(trainer, extra: Iterable[str | None] = ()):
    """``trainer.args.hub_token`` is ``None`` inside (so ``training_args.bin`` is pickled without it); it and
    ``extra`` still count as secrets for :func:`known_tokens`."""
    args = trainer.args
    saved = getattr(args, "hub_token", None)
    key = id(args)
    hidden = [t for t in (saved, *extra) if isinstance(t, str) and t]
    _HIDDEN.setdefault(key, []).extend(hidden)
    if saved is not None:
        args.hub_token = None
    try:
        yield
    finally:
        if saved is not None:
            args.hub_token = saved
        stack = _HIDDEN.get(key, [])
        del stack[len(stack) - len(hidden):]
        if not stack:
            _HIDDEN.pop(key, None)


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
            raise TokenLeakError(
                f"{p} contains a Hugging Face token; refusing to push {folder}. Remove or re-save that file "
                "without the token (e.g. TrainingArguments pickled with hub_token set) and push again."
            )
