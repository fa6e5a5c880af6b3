"""Our own state files: JSON (and safetensors), written atomically, never pickle."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from typing import Any, Iterator, Mapping

from tl_hf._errors import one_line

__all__ = ["STATE_FILE", "atomic_write_bytes", "atomic_write_json", "read_json", "CorruptStateError", "file_problem",
           "validate_checkpoint", "shape_problem", "refuse_untrusted_pickles", "fingerprint_differences", "short_value"]

#: TransferTrainer's own checkpoint state (JSON, never pickle), written next to trainer_state.json in every checkpoint
STATE_FILE = "tl_hf_state.json"


class CorruptStateError(ValueError):
    """A state file is truncated or not valid JSON."""


def atomic_write_json(path: str, obj: Any) -> None:
    """Write ``obj`` as JSON to ``path`` through a temporary file in the same folder and an atomic rename, so a crash
    mid-write leaves either the old file or the new one, never half of one."""
    atomic_write_bytes(path, json.dumps(obj, indent=2, sort_keys=True).encode())


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, like :func:`atomic_write_json`."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="_tmp_", suffix=os.path.splitext(path)[1], dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_json(path: str) -> Any:
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as exc:
        raise CorruptStateError(f"{path} is truncated or corrupt ({exc}); resume from an earlier checkpoint") from None


#: the JSON state files whose shape is checked before a resume reads them: top-level key -> allowed types
_SHAPES: dict[str, dict[str, tuple[type, ...]]] = {
    STATE_FILE: {"format": (int,), "freezing": (dict,), "llrd": (dict,), "layer_map": (dict,),
                 "regularizers": (list,), "config": (dict,)},
    "trainer_state.json": {"global_step": (int,), "epoch": (int, float, type(None)), "max_steps": (int,),
                           "log_history": (list,), "best_metric": (int, float, type(None)),
                           "best_model_checkpoint": (str, type(None)), "stateful_callbacks": (dict, type(None))},
}


def shape_problem(doc: Any, shape: Mapping[str, tuple[type, ...]]) -> str | None:
    """Why a parsed JSON state ``doc`` does not have ``shape`` (an object whose listed keys, where present, have
    the listed types), or None."""
    if not isinstance(doc, dict):
        return f"valid JSON but not an object (got {type(doc).__name__}): not a state file written by this code"
    for key, types in shape.items():
        if key in doc and (not isinstance(doc[key], types) or isinstance(doc[key], bool) and bool not in types):
            return (f"valid JSON of the wrong shape: {key!r} is {type(doc[key]).__name__}, expected "
                    f"{' or '.join('null' if t is type(None) else t.__name__ for t in types)}")
    return None


@contextlib.contextmanager
def refuse_untrusted_pickles(folder: str) -> Iterator[None]:
    """Turn torch's refusal of a pickle that holds more than tensors (``weights_only`` loading) into a one-line
    :class:`CorruptStateError`: the file is not a trusted checkpoint (it is never unpickled in full)."""
    import pickle

    try:
        yield
    except pickle.UnpicklingError:
        culprit = _untrusted_pickle(folder)
        what = f"{culprit} is not a trusted checkpoint file: it" if culprit else \
            f"{folder} is not a trusted checkpoint: one of its pickle files"
        raise CorruptStateError(f"{what} holds objects other than tensors and plain data, which are never loaded; "
                                f"resume from a checkpoint written by tl_hf / transformers, or delete {folder}"
                                ) from None


def _untrusted_pickle(folder: str) -> str | None:
    """The first pickle file in ``folder`` that names a global outside torch / numpy / builtins (scanned, not
    loaded), or None."""
    from torch.serialization import get_unsafe_globals_in_checkpoint

    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if not name.endswith((".pt", ".pth", ".bin")) or not os.path.isfile(path):
            continue
        try:
            unsafe = get_unsafe_globals_in_checkpoint(path)
        except Exception:  # noqa: BLE001 - not even scannable: this is the file
            return path
        if any(g.split(".")[0] not in ("torch", "numpy", "builtins", "collections", "_codecs") for g in unsafe):
            return path
    return None


def file_problem(path: str) -> str | None:
    """Why the state file ``path`` cannot be read, or None: JSON must parse, every tensor of a safetensors file must be
    present (a truncated file fails here), torch pickles written by transformers must be complete zip archives."""
    import zipfile

    name = os.path.basename(path)
    try:
        if name.endswith(".json"):
            with open(path, encoding="utf-8") as f:
                doc = json.load(f)
            if name in _SHAPES:
                return shape_problem(doc, _SHAPES[name])
        elif name.endswith(".safetensors"):
            from safetensors import safe_open

            with safe_open(path, framework="pt") as f:
                for key in f.keys():
                    f.get_slice(key)
        elif name.endswith((".pt", ".pth", ".bin")) and not zipfile.is_zipfile(path):
            with open(path, "rb") as f:
                bare_pickle = f.read(1) == b"\x80"
            return ("not a trusted checkpoint: a bare pickle, not a torch archive (it is never unpickled)"
                    if bare_pickle else "not a complete archive")
    except Exception as exc:  # noqa: BLE001 - json and safetensors raise their own error types
        return one_line(exc)[:120]
    return None


def validate_checkpoint(folder: str) -> None:
    """Check every file of a checkpoint before resuming from it (:func:`file_problem`). A crash while a checkpoint
    was being written leaves such a file truncated; say which one instead of failing deep inside a library."""
    if not os.path.isdir(folder):
        raise CorruptStateError(f"checkpoint {folder} does not exist")
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            continue
        problem = file_problem(path)
        if problem:
            trusted = not problem.startswith(("valid JSON", "not a trusted"))
            how = f"truncated or corrupt ({problem})" if trusted else problem
            raise CorruptStateError(
                f"checkpoint {folder} is unusable: {path} is {how};"
                " resume from an earlier checkpoint (training.resume_from_checkpoint=...) or delete this one")


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted keys for mappings; a list of mappings as the list of their names plus each entry by index
    (``tasks[1].train_examples``); other values as they are."""
    if isinstance(obj, Mapping):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(obj, list) and obj and all(isinstance(v, Mapping) for v in obj):
        out = {prefix: [v.get("name", i) for i, v in enumerate(obj)]}  # the names (or the length) first
        for i, v in enumerate(obj):
            out.update(_flatten(v, f"{prefix}[{i}]"))
        return out
    return {prefix: obj}


def fingerprint_differences(saved: Mapping, now: Mapping) -> list[tuple[str, Any, Any]]:
    """``[(key, saved value, current value)]`` where two run fingerprints differ (``"<absent>"`` for a missing key).
    Differences of the ``config`` part come first, and only they are listed when there are any: the runner's own
    part (tasks, sizes, regularizer configs) usually differs as a consequence."""
    a, b = _flatten(dict(saved)), _flatten(dict(now))
    missing = "<absent>"
    diffs = [(k, a.get(k, missing), b.get(k, missing)) for k in sorted(set(a) | set(b), key=lambda k: (
        not k.startswith("config."), k)) if a.get(k, missing) != b.get(k, missing)]
    # when the names of a list's entries differ (e.g. other regularizers), their fields are not listed one by one
    lists = {k for k, _, _ in diffs}
    diffs = [d for d in diffs if not any(d[0].startswith(k + "[") for k in lists)]
    config = [d for d in diffs if d[0].startswith("config.")]
    return config or diffs


def short_value(v: Any) -> str:
    """A fingerprint value as a message shows it (JSON, at most 60 characters)."""
    text = v if v == "<absent>" else json.dumps(v, default=str)
    return text if len(text) <= 60 else text[:57] + "..."
