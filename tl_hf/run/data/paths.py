"""The one data-root rule and where a relative data path is looked up.

The data root is ``data.root`` if set, else ``$TL_HF_DATA_ROOT``, else ``../shared/data`` relative to the current
directory. A relative data path is looked up under the data root first, then the current directory.
"""

from __future__ import annotations

import os
from dataclasses import field
from pathlib import Path
from typing import Any

__all__ = ["DATA_ROOT_ENV", "DataError", "candidate_paths", "data_root_field", "resolve_data_root", "resolve_file"]

DATA_ROOT_ENV = "TL_HF_DATA_ROOT"


def data_root_field() -> Any:
    """The ``data.root`` field of every data config (one default, one help text)."""
    return field(default=None, metadata={
        "help": f"Data root. Default: ${DATA_ROOT_ENV}, else ../shared/data relative to the current directory."})


class DataError(ValueError):
    """The data cannot be found or does not have the expected shape. The message names the path or column."""


def resolve_data_root(root: str | os.PathLike | None = None) -> Path:
    """``root`` if given, else ``$TL_HF_DATA_ROOT``, else ``../shared/data`` relative to the current directory."""
    if root is not None and str(root) != "":
        p, how = Path(root).expanduser(), "data.root"
    elif os.environ.get(DATA_ROOT_ENV):
        p, how = Path(os.environ[DATA_ROOT_ENV]).expanduser(), f"${DATA_ROOT_ENV}"
    else:
        p, how = Path("..") / "shared" / "data", "the default ../shared/data"
    if not p.is_dir():
        raise DataError(f"data root {str(p)!r} (from {how}) is not a directory; set data.root=PATH or "
                        f"${DATA_ROOT_ENV}")
    return p.resolve()


def candidate_paths(name: str, root: str | None) -> list[Path]:
    """Where a data path may be: as given if absolute; else under the data root first, then the current directory."""
    p = Path(name).expanduser()
    if p.is_absolute():
        return [p]
    candidates = []
    try:
        candidates.append(resolve_data_root(root) / p)
    except DataError:
        if root is not None:
            raise
    candidates.append(Path.cwd() / p)
    return candidates


def resolve_file(name: str, root: str | None, key: str = "data file") -> Path:
    """The first of :func:`candidate_paths` that is a file, else a :class:`DataError` listing where it looked (or
    saying that ``key``, e.g. ``data.train_file``, names a directory)."""
    candidates = candidate_paths(name, root)
    for c in candidates:
        if c.is_file():
            return c
    folder = next((c for c in candidates if c.is_dir()), None)
    if folder is not None:
        raise DataError(f"{key}: {folder} is a directory, not a file; name one csv/tsv/json/jsonl/parquet file "
                        "in it (image folders go in data.train_dir / data.eval_dir of task image_classification)")
    raise DataError(f"data file not found: {name} (looked at {', '.join(str(c) for c in candidates)})")
