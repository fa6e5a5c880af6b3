"""The local MNIST test set (t10k, gzipped IDX files) under the data root (:func:`~tl_hf.run.data.paths.resolve_data_root`)."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from tl_hf.run.data.paths import resolve_data_root

__all__ = ["MNIST_FILES", "load_mnist_idx", "mnist_dir"]

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


def load_mnist_idx(root: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The 10,000 MNIST test images and labels from the gzipped IDX files ``t10k-images-idx3-ubyte.gz`` and
    ``t10k-labels-idx1-ubyte.gz`` under ``root/mnist_t10k/`` (or ``root`` itself); ``root`` defaults to the data root
    (``$TL_HF_DATA_ROOT``, else ``../shared/data``). Returns ``(images uint8 [N, 28, 28], labels uint8 [N])``; the IDX
    headers (magic numbers 2051 / 2049, counts, 28 x 28) are checked."""
    d = mnist_dir(root)
    with gzip.open(d / MNIST_FILES[0], "rb") as f:
        raw = f.read()
    magic, count, rows, cols = np.frombuffer(raw[:16], dtype=">u4")
    if magic != 2051 or len(raw) != 16 + int(count) * int(rows) * int(cols):
        raise ValueError(f"{d / MNIST_FILES[0]} is not an IDX3 image file of the stated size (magic {magic})")
    images = np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(int(count), int(rows), int(cols))
    with gzip.open(d / MNIST_FILES[1], "rb") as f:
        raw = f.read()
    magic, lcount = np.frombuffer(raw[:8], dtype=">u4")
    if magic != 2049 or len(raw) != 8 + int(lcount):
        raise ValueError(f"{d / MNIST_FILES[1]} is not an IDX1 label file of the stated size (magic {magic})")
    labels = np.frombuffer(raw, dtype=np.uint8, offset=8)
    if int(lcount) != int(count):
        raise ValueError(f"{count} images but {lcount} labels in {d}")
    return images, labels
