"""One-line errors, close-match suggestions, the config error and the token rules (what looks like a Hub token, and
that TrainingArguments never holds one): the one place every layer takes them from."""

from __future__ import annotations

import difflib
import re
from typing import Iterable

__all__ = ["ConfigError", "REDACTED", "TOKEN_LIKE", "closest", "condense_traceback", "did_you_mean",
           "hub_token_refused", "one_line", "redact_token_like"]

REDACTED = "<redacted>"
#: what a Hugging Face access token looks like (``hf_`` + at least 10 letters / digits)
TOKEN_LIKE = re.compile(r"hf_[A-Za-z0-9]{10,}")


def redact_token_like(text: str) -> str:
    """``text`` with everything shaped like a Hugging Face token replaced by ``<redacted>``."""
    return TOKEN_LIKE.sub(REDACTED, text)


class ConfigError(ValueError):
    """A config file or override is invalid. The message names the offending key; it never shows a value that looks
    like a token (``hf_...`` becomes ``<redacted>``)."""

    def __init__(self, message: object = "", *args) -> None:
        super().__init__(redact_token_like(str(message)), *args)


def one_line(exc: BaseException | str) -> str:
    """``exc``'s message with all whitespace (newlines included) collapsed to single spaces, token-like values
    redacted; an error re-raised from a worker process (its message holds the worker's whole traceback) becomes
    its first line, the worker's own error and where it was raised (:func:`condense_traceback`)."""
    return redact_token_like(" ".join(condense_traceback(str(exc)).split()))


_TB_FRAME = re.compile(r'^\s*File "([^"]+)", line (\d+), in (\S+)', re.M)


def condense_traceback(text: str) -> str:
    """``"Caught ValueError in DataLoader worker process 0. Original Traceback ...: ValueError: bad"`` ->
    ``"Caught ValueError in DataLoader worker process 0: bad (at text.py:12 in _read)"``; other text unchanged."""
    head, sep, tb = text.partition("Traceback (most recent call last):")
    if not sep:
        return text
    lines = [ln for ln in tb.splitlines() if ln.strip()]
    frames = _TB_FRAME.findall(tb)
    last = next((ln.strip() for ln in reversed(lines) if not ln.startswith((" ", "\t")) and ":" in ln), "")
    message = last.split(":", 1)[1].strip() if ":" in last else last
    first = head.strip().removesuffix("Original").strip().rstrip(".:")
    where = f" (at {frames[-1][0].rsplit('/', 1)[-1]}:{frames[-1][1]} in {frames[-1][2]})" if frames else ""
    return f"{first}: {message or last}{where}" if first else f"{last}{where}"


def hub_token_refused(key: str = "hub_token") -> str:
    """The one rule for ``TrainingArguments.hub_token``: refused (the Trainer pickles it into every
    ``training_args.bin``). The message says where a token goes instead."""
    return (f"{key} is refused: the Trainer would pickle it in clear text into training_args.bin (and every "
            "checkpoint); remove it and give the token as $HF_TOKEN or with `hf auth login`")


def closest(value: object, choices: Iterable[object], *, cutoff: float = 0.6) -> str | None:
    """The choice closest to ``value`` (difflib ratio >= ``cutoff``), or ``None``."""
    match = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1, cutoff=cutoff)
    return match[0] if match else None


def did_you_mean(value: object, choices: Iterable[object], *, quote: bool = True, prefix: str = "",
                 cutoff: float = 0.6) -> str:
    """``"; did you mean 'x'?"`` for the closest choice, or ``""`` when nothing is close.

    ``prefix`` goes before the suggestion (``"training."`` gives ``did you mean training.x?``); ``quote=False`` leaves
    the suggestion unquoted.
    """
    match = closest(value, choices, cutoff=cutoff)
    if match is None:
        return ""
    shown = repr(prefix + match) if quote else prefix + match
    return f"; did you mean {shown}?"
