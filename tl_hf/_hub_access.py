"""Whether the Hugging Face Hub may and can be reached, and what a Hub repo id looks like: the one rule that model
loading, Hub datasets and pushes share."""

from __future__ import annotations

import os
import socket
from urllib.parse import urlsplit

__all__ = ["endpoint", "hub_reachable", "is_hub_id", "offline", "unreachable_reason"]

_TRUE = ("1", "true", "yes", "on")


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


def is_hub_id(name: str, *, namespace: bool = False) -> bool:
    """Whether ``name`` is a Hub repo id: ``name`` or ``namespace/name`` (``namespace=True``: only the latter) by
    huggingface_hub's ``validate_repo_id``, starting with a letter or digit."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not isinstance(name, str) or not (name[:1].isascii() and name[:1].isalnum()):
        return False
    if namespace and "/" not in name:
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True
