"""Whether the Hugging Face Hub may and can be reached, what a Hub repo id looks like, and which tokens this process
knows (to keep them out of everything written): the one rule that model loading, Hub datasets, cards and pushes
share."""

from __future__ import annotations

import os
import socket
from urllib.parse import urlsplit

from typing import Iterable

from tl_hf._errors import REDACTED, redact_token_like

__all__ = ["endpoint", "hub_reachable", "is_hub_id", "known_tokens", "offline", "repo_id_problem", "scrub_tokens",
           "unreachable_reason"]

_TRUE = ("1", "true", "yes", "on")
_TOKEN_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HUGGINGFACE_HUB_TOKEN", "HF_HUB_TOKEN")


def known_tokens(extra: Iterable[str | None] = ()) -> list[str]:
    """The Hub tokens this process knows: ``extra``, ``$HF_TOKEN`` (and its older names), the saved login; longest
    first (so that a token containing another one is replaced whole)."""
    found: list[str | None] = list(extra)
    found += [os.environ.get(k) for k in _TOKEN_ENV]
    try:  # the token saved by `hf auth login` (a local file read, no network)
        from huggingface_hub import get_token

        found.append(get_token())
    except Exception:  # noqa: BLE001 - best effort
        pass
    return sorted({t for t in found if isinstance(t, str) and len(t) >= 8}, key=len, reverse=True)


def scrub_tokens(text: str, tokens: Iterable[str] = ()) -> str:
    """``text`` with every given token value and anything shaped like a Hugging Face token replaced by
    ``<redacted>``."""
    for t in sorted({t for t in tokens if t}, key=len, reverse=True):
        text = text.replace(t, REDACTED)
    return redact_token_like(text)


def offline() -> bool:
    """huggingface_hub's offline mode (``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE``, as read when it was imported):
    what its own requests obey."""
    try:
        from huggingface_hub import constants

        return bool(constants.is_offline_mode())
    except Exception:  # noqa: BLE001 - huggingface_hub missing or another version: read the environment
        return any(os.environ.get(k, "").strip().lower() in _TRUE for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def endpoint() -> str:
    """The Hub endpoint transformers talks to (``$HF_ENDPOINT``, default https://huggingface.co)."""
    try:
        from transformers.utils.hub import hf_api

        ep = getattr(hf_api(), "endpoint", None)
        if ep:
            return ep
    except Exception:  # noqa: BLE001 - fall back to huggingface_hub's own constant
        pass
    from huggingface_hub import constants

    return constants.ENDPOINT


def unreachable_reason(timeout: float) -> str | None:
    """``None`` if a TCP connection to the Hub endpoint opens within ``timeout`` s (or a proxy is configured for it:
    the proxy decides what is reachable, so the request itself is left to fail), else why not."""
    url = endpoint()
    ep = urlsplit(url)
    host = ep.hostname
    if not host:
        return f"invalid HF_ENDPOINT {url!r}"
    port = ep.port or (443 if ep.scheme == "https" else 80)
    from urllib.request import getproxies, proxy_bypass

    proxies = getproxies()
    if (proxies.get(ep.scheme) or proxies.get("all")) and not proxy_bypass(host):
        return None
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as exc:
        return f"{host}:{port} unreachable: {exc.__class__.__name__}: {exc}"


def hub_reachable(timeout: float = 3.0) -> bool:
    """:func:`unreachable_reason` as a yes / no."""
    return unreachable_reason(timeout) is None


def repo_id_problem(name: object) -> str | None:
    """``None`` if ``name`` is a Hub repo id (``name`` or ``namespace/name``, starting with a letter or digit, by
    huggingface_hub's ``validate_repo_id``), else why not, in one line: the one Hub-id rule."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not isinstance(name, str):
        return f"a Hub repo id is a string like 'user/my-model', got {type(name).__name__}"
    if not (name[:1].isascii() and name[:1].isalnum()):
        return f"a Hub repo id starts with a letter or digit: {name!r}"
    try:
        validate_repo_id(name)
    except HFValidationError as exc:
        return " ".join(str(exc).split())
    return None


def is_hub_id(name: str, *, namespace: bool = False) -> bool:
    """Whether ``name`` is a Hub repo id (:func:`repo_id_problem`); ``namespace=True``: only ``namespace/name``."""
    if namespace and (not isinstance(name, str) or "/" not in name):
        return False
    return repo_id_problem(name) is None
