"""The local MNIST test set (t10k, gzipped IDX files) under the data root (:func:`~tl_hf.run.data.paths.resolve_data_root`)."""

from __future__ import annotations

import gzip
import hashlib
import os
from pathlib import Path

import numpy as np

from tl_hf._errors import one_line
from tl_hf.run.data.paths import DataError, resolve_data_root

__all__ = ["MNIST_FILES", "check_md5sums", "load_mnist_idx", "mnist_dir"]

MNIST_FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def mnist_dir(root: str | os.PathLike | None = None) -> Path:
    """The folder holding :data:`MNIST_FILES`: ``<data root>/mnist_t10k/`` or the data root itself."""
    base = resolve_data_root(root)
    shown = Path(root) if root is not None and str(root) != "" else base
    for d in (base / "mnist_t10k", base):
        if all((d / f).is_file() for f in MNIST_FILES):
            return d
    raise FileNotFoundError(f"{shown} holds neither mnist_t10k/{MNIST_FILES[0]} nor {MNIST_FILES[0]} "
                            f"(expected files: {', '.join(MNIST_FILES)})")


def check_md5sums(d: Path) -> None:
    """Every file listed in ``d/MD5SUMS`` (``md5  ./name`` lines, as shipped) must have that MD5; no list, no check."""
    sums = d / "MD5SUMS"
    if not sums.is_file():
        return
    for line in sums.read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if len(parts) != 2:
            continue
        want, name = parts[0].lower(), parts[1].lstrip("*")
        path = d / name
        if not path.is_file():
            continue
        got = hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()
        if got != want:
            raise DataError(f"{path.resolve()} is corrupt or truncated: its MD5 {got} is not {want} from {sums}; "
                            "restore the file (e.g. from the MNIST source in SOURCE.md)")


def _read_gz(path: Path) -> bytes:
    try:
        with gzip.open(path, "rb") as f:
            return f.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"{path} is not a readable gzip file ({type(exc).__name__}: {one_line(exc)}); restore "
                        "it") from None


def load_mnist_idx(root: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The 10,000 MNIST test images and labels from the gzipped IDX files ``t10k-images-idx3-ubyte.gz`` and
    ``t10k-labels-idx1-ubyte.gz`` under ``root/mnist_t10k/`` (or ``root`` itself); ``root`` defaults to the data root
    (``$TL_HF_DATA_ROOT``, else ``../shared/data``). Returns ``(images uint8 [N, 28, 28], labels uint8 [N])``. Checked
    before anything trains: the files' ``MD5SUMS`` (when the folder ships one), the gzip streams, the IDX headers
    (magic numbers 2051 / 2049, counts, 28 x 28) and the label range 0..9; each failure is a :class:`DataError`
    naming the file."""
    d = mnist_dir(root)
    check_md5sums(d)
    raw = _read_gz(d / MNIST_FILES[0])
    magic, count, rows, cols = np.frombuffer(raw[:16], dtype=">u4") if len(raw) >= 16 else (0, 0, 0, 0)
    if magic != 2051 or len(raw) != 16 + int(count) * int(rows) * int(cols):
        raise DataError(f"{d / MNIST_FILES[0]} is not an IDX3 image file of the stated size (magic {magic}); "
                        "restore it")
    images = np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(int(count), int(rows), int(cols))
    raw = _read_gz(d / MNIST_FILES[1])
    magic, lcount = np.frombuffer(raw[:8], dtype=">u4") if len(raw) >= 8 else (0, 0)
    if magic != 2049 or len(raw) != 8 + int(lcount):
        raise DataError(f"{d / MNIST_FILES[1]} is not an IDX1 label file of the stated size (magic {magic}); "
                        "restore it")
    labels = np.frombuffer(raw, dtype=np.uint8, offset=8)
    if int(lcount) != int(count):
        raise DataError(f"{count} images but {lcount} labels in {d}")
    bad = np.flatnonzero(labels > 9)
    if bad.size:
        raise DataError(f"{d / MNIST_FILES[1]}: label {int(labels[bad[0]])} at index {int(bad[0])} is outside 0..9 "
                        f"({bad.size} such label(s)); the file is corrupt: restore it")
    return images, labels
