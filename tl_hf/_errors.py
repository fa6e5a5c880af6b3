"""One-line errors, close-match suggestions, the config error and the token rules (what looks like a Hub token, and
that TrainingArguments never holds one): the one place every layer takes them from."""

from __future__ import annotations

import difflib
import re
from typing import Iterable

__all__ = ["ConfigError", "REDACTED", "TOKEN_LIKE", "closest", "did_you_mean", "hub_token_refused", "one_line",
           "redact_token_like"]


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
    redacted."""
    return redact_token_like(" ".join(str(exc).split()))


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
