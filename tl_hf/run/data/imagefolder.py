"""Image folders laid out as ``<dir>/<class name>/<image>`` (torchvision's ImageFolder layout): find the folder,
list its classes and files, pick a seeded subset of readable files."""

from __future__ import annotations

import fnmatch
import logging
import os
import warnings
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from tl_hf._errors import one_line
from tl_hf.run.data.paths import DataError, candidate_paths

__all__ = ["IMAGE_EXTENSIONS", "bad_image_reason", "resolve_dir", "scan_folder", "select_readable"]

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm")


def bad_image_reason(path: str, size: tuple[int, int] = (32, 32)) -> str | None:
    """``None`` if ``path`` decodes, else why not. JPEGs decode at reduced scale (the whole stream is still read)."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as im:
                if im.format == "JPEG":
                    im.draft("RGB", size)
                im.load()
        return None
    except Exception as exc:  # noqa: BLE001 - any decoder failure means "unreadable"
        return f"{type(exc).__name__}: {one_line(exc)[:200]}"


def resolve_dir(name: str, root: str | None, what: str) -> Path:
    """A folder: absolute as given; relative under the data root first, then the current directory."""
    p = Path(name).expanduser()
    if p.is_absolute():
        if not p.is_dir():
            raise DataError(f"{what} not found: {p}" if not p.exists() else f"{what} {p} is not a directory")
        return p
    candidates = candidate_paths(name, root)
    for c in candidates:
        if c.is_dir():
            return c
    raise DataError(f"{what} not found: {name} (looked at {', '.join(str(c) for c in candidates)})")


def _is_image(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def scan_folder(folder: Path, what: str, excluded_patterns: Sequence[str], excluded: list[str],
                 classes: Sequence[str] | None = None) -> tuple[list[str], list[str], list[int]]:
    """``(class names, paths, label ids)`` of an image folder; ``classes`` given (eval): the label set to map onto."""
    subdirs = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    loose = [f.name for f in folder.iterdir() if f.is_file() and _is_image(f.name)]
    if not subdirs:
        raise DataError(f"{what} {folder} has no class subfolders: expected {folder}/<class name>/<image>"
                        + (f" (found {len(loose)} image file(s) directly in it)" if loose else ""))
    if loose:
        logger.warning("%s %s: %d image file(s) outside the class subfolders are ignored", what, folder, len(loose))
    if classes is not None:
        unknown = [d for d in subdirs if d not in classes]
        if unknown:
            raise DataError(f"{what} {folder} has classes that are not in the training classes "
                            f"({', '.join(classes)}): {', '.join(unknown)}")
    names = list(classes) if classes is not None else subdirs
    paths, labels = [], []
    # symlinks are followed, but by real path: each folder is walked once, never into another class's folder or the
    # root (a link loop would repeat images, a link to another class would mislabel them), each image listed once
    roots = {os.path.realpath(folder)} | {os.path.realpath(folder / c) for c in subdirs}
    walked: set[str] = set()
    listed: set[str] = set()
    for cls in subdirs:
        found, own = [], os.path.realpath(folder / cls)
        for dirpath, dirnames, filenames in os.walk(folder / cls, followlinks=True):
            real = os.path.realpath(dirpath)
            if real in walked or (real in roots and real != own):
                dirnames[:] = []
                continue
            walked.add(real)
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for fn in sorted(filenames):
                full = os.path.join(dirpath, fn)
                if not _is_image(fn) or os.path.realpath(full) in listed:
                    continue
                if any(fnmatch.fnmatch(fn, pat) for pat in excluded_patterns):
                    excluded.append(os.path.relpath(full, folder.parent))
                    continue
                listed.add(os.path.realpath(full))
                found.append(full)
        if not found and classes is None:
            raise DataError(f"class folder {folder / cls} of the {what} has no image files "
                            f"({', '.join(IMAGE_EXTENSIONS)})")
        paths += found
        labels += [names.index(cls)] * len(found)
    if classes is None and len(names) < 2:
        raise DataError(f"{what} {folder} has only one class subfolder ({names[0]}); classification needs >= 2")
    return names, paths, labels


def select_readable(n: int, max_n: int | None, seed: int, check: Callable[[int], str | None] | None, on_bad: str,
            path_of: Callable[[int], str], skipped: list, what: str) -> list[int]:
    """Indices to keep (sorted): a seeded random ``max_n`` of ``n`` (or all), each verified with ``check``."""
    order = np.random.default_rng(seed).permutation(n) if max_n is not None and max_n < n else np.arange(n)
    keep: list[int] = []
    for i in order.tolist():
        if max_n is not None and len(keep) >= max_n:
            break
        reason = check(i) if check is not None else None
        if reason is not None:
            if on_bad == "fail":
                raise DataError(f"unreadable image in the {what}: {path_of(i)} ({reason}); remove it or set "
                                "data.on_bad_image=skip")
            skipped.append((path_of(i), reason))
            continue
        keep.append(i)
    return sorted(keep)
