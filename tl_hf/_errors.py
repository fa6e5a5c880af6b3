"""One-line errors, close-match suggestions and the config error: the one place every layer takes them from."""

from __future__ import annotations

import difflib
from typing import Iterable

__all__ = ["ConfigError", "did_you_mean", "closest", "one_line"]


class ConfigError(ValueError):
    """A config file or override is invalid. The message names the offending key."""


def one_line(exc: BaseException | str) -> str:
    """``exc``'s message with all whitespace (newlines included) collapsed to single spaces."""
    return " ".join(str(exc).split())


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
