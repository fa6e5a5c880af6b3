"""Image classification (ViT family): the library side of ``recipes/image_classification.py`` and of ``tl-hf run``
for ``task: image_classification``.

Data (the ``data`` section, :class:`ImageDataConfig`):

* ``dataset: hymenoptera`` -- ants vs bees from ``<root>/hymenoptera/hymenoptera_data/{train,val}/{ants,bees}``
  (245 / 153 images). The GIF placeholder ``train/ants/imageNotFound.gif`` is left out by default (``data.exclude``);
  ``train/ants/ant photos.jpg`` (a space in the name) is read like any other file.
* ``dataset: mnist`` -- the 10,000 MNIST *test* images (``<root>/mnist_t10k``, IDX gz). Only t10k exists locally, so
  train and eval are a seeded split of it (``data.eval_fraction``, default 0.2): a **non-standard split**, and results
  say so (``eval_split`` in ``all_results.json``).
* ``train_dir`` / ``eval_dir`` -- any image folder laid out as ``<dir>/<class name>/<image>`` (torchvision's
  ImageFolder layout; the class is the subfolder name, classes are sorted). Without ``eval_dir``, ``eval_fraction``
  holds out a seeded part of ``train_dir``; with neither there is no evaluation.

Preprocessing needs Pillow and numpy only (no torchvision): decode -> RGB (grayscale and palette images become 3
channels) -> [train, ``augment``: random resized crop, scale (0.08, 1), ratio (3/4, 4/3), and horizontal flip, drawn
from torch's RNG, which the Trainer seeds] -> bilinear resize to ``image_size`` -> ``/255`` -> ``(x - mean) / std``
-> ``pixel_values`` float32 ``[3, H, W]``. Without augmentation this equals ``ViTImageProcessor``'s PIL backend,
except that JPEGs more than twice the needed size are decoded at 1/2, 1/4 or 1/8 scale (Pillow's ``draft``, DCT
scaling), which is much faster and differs only slightly from decoding at full size.
``mean`` / ``std`` come from ``data.image_mean`` / ``data.image_std``, else the model's ``preprocessor_config.json``,
else the ImageNet statistics. Images are decoded lazily, one per ``__getitem__``; before training every selected file
is decoded once (``data.verify_images``) so that unreadable files are skipped with a warning or stop the run with an
error naming the file (``data.on_bad_image``).
"""

from __future__ import annotations

import fnmatch
import json
import logging
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from tl_hf._errors import did_you_mean
from tl_hf.run.config import ConfigError, RunConfig, register_task
from tl_hf.run.data.paths import DataError, candidate_paths, resolve_data_root
from tl_hf.run.models import BUNDLED_ALIASES, ModelLoadError, _from_pretrained, _offline, resolve_model_path
from tl_hf.run.template import (build_trainer, build_training_args, detect_last_checkpoint, finish_run, maybe_wrap_peft,
                         resolve_strategy)

__all__ = ["BadImageWarning", "IMAGE_DATASETS", "IMAGENET_MEAN", "IMAGENET_STD", "ImageClassificationData",
           "ImageCollator", "ImageDataConfig", "ImageDataset", "ImageTransform", "image_stats",
           "load_image_classification", "run_image_classification", "save_scratch_vit"]

logger = logging.getLogger(__name__)

IMAGE_DATASETS = ("hymenoptera", "mnist")
BAD_IMAGE_POLICIES = ("skip", "fail")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: files left out of a built-in dataset unless ``data.exclude`` says otherwise (placeholders, not examples)
DEFAULT_EXCLUDE = {"hymenoptera": ["imageNotFound.gif"]}
MNIST_DEFAULT_EVAL_FRACTION = 0.2


class BadImageWarning(UserWarning):
    """Unreadable image files were left out (``data.on_bad_image: skip``)."""


# ---------------------------------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------------------------------

@dataclass
class ImageDataConfig:
    """Where the image-classification data comes from and how it is prepared."""

    dataset: str | None = field(default=None, metadata={
        "help": f"A built-in dataset under the data root: {', '.join(IMAGE_DATASETS)} (hymenoptera: imagefolder "
                "train/val; mnist: a seeded split of the 10k MNIST test images, see eval_fraction). Leave empty and "
                "set train_dir/eval_dir for your own image folders."})
    root: str | None = field(default=None, metadata={
        "help": "Data root. Default: $TL_HF_DATA_ROOT, else ../shared/data relative to the current directory."})
    train_dir: str | None = field(default=None, metadata={
        "help": "Training image folder laid out as <dir>/<class>/<image> (class = subfolder name); a relative path is "
                "looked up under the data root first, then the current directory."})
    eval_dir: str | None = field(default=None, metadata={
        "help": "Evaluation image folder, same layout and rules; its classes must occur in train_dir."})
    eval_fraction: float | None = field(default=None, metadata={
        "help": "Hold out this seeded fraction of the training images for evaluation (mnist: default 0.2 -- a "
                "non-standard split of the t10k images; image folders: only when eval_dir is not set)."})
    image_size: int | None = field(default=None, metadata={
        "help": "Side of the square model input in pixels. Default: the model config's image_size (a different size "
                "interpolates the position embeddings where the model supports it)."})
    max_train_samples: int | None = field(default=None, metadata={
        "help": "Train on a seeded random subset of this many images (default: all)."})
    max_eval_samples: int | None = field(default=None, metadata={
        "help": "Evaluate on a seeded random subset of this many images (default: all)."})
    augment: bool = field(default=False, metadata={
        "help": "Training images only: random resized crop (scale 0.08-1, ratio 3/4-4/3) and horizontal flip "
                "(Pillow + numpy, torch's seeded RNG). Leave off for digits: flips change their meaning."})
    on_bad_image: str = field(default="skip", metadata={
        "help": "An unreadable image file: 'skip' (leave it out, with a warning naming it) or 'fail' (stop with an "
                "error naming it)."})
    verify_images: bool = field(default=True, metadata={
        "help": "Decode every selected image once before training so unreadable files are found up front (fast: "
                "JPEGs decode at reduced scale). Off: no pass over the data; an unreadable file then stops the run "
                "when it is reached."})
    exclude: list[str] | None = field(default=None, metadata={
        "help": "File-name patterns (fnmatch, e.g. '*.gif') to leave out. Default: hymenoptera's placeholder "
                "imageNotFound.gif; [] keeps every file."})
    image_mean: list[float] | None = field(default=None, metadata={
        "help": "Per-channel normalisation mean. Default: the model's preprocessor_config.json, else ImageNet's."})
    image_std: list[float] | None = field(default=None, metadata={
        "help": "Per-channel normalisation std, same default rule as image_mean."})
    seed: int | None = field(default=None, metadata={
        "help": "Seed of the subsets and the held-out split. Default: training.seed."})

    def __post_init__(self) -> None:
        if self.dataset is not None and self.dataset not in IMAGE_DATASETS:
            raise ConfigError(f"data.dataset: unknown image dataset {self.dataset!r}"
                              + did_you_mean(self.dataset, IMAGE_DATASETS)
                              + f" Built-in: {', '.join(IMAGE_DATASETS)}; or set data.train_dir/data.eval_dir")
        if self.dataset is None and self.train_dir is None and self.eval_dir is None:
            raise ConfigError(f"data: set data.dataset (built-in: {', '.join(IMAGE_DATASETS)}) or data.train_dir "
                              "(and data.eval_dir)")
        if self.dataset is not None and (self.train_dir or self.eval_dir):
            raise ConfigError("data: set either data.dataset or data.train_dir/data.eval_dir, not both")
        if self.eval_dir is not None and self.train_dir is None:
            raise ConfigError("data.eval_dir needs data.train_dir (the classes come from the training folder)")
        if self.eval_fraction is not None:
            if not 0.0 < self.eval_fraction < 1.0:
                raise ConfigError(f"data.eval_fraction must be in (0, 1), got {self.eval_fraction}")
            if self.eval_dir is not None or self.dataset == "hymenoptera":
                raise ConfigError("data.eval_fraction splits the training images; it cannot be combined with "
                                  "data.eval_dir or the hymenoptera val split")
        if self.image_size is not None and self.image_size < 4:
            raise ConfigError(f"data.image_size must be >= 4 pixels, got {self.image_size}")
        for name in ("max_train_samples", "max_eval_samples"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ConfigError(f"data.{name} must be >= 1 (or null for all images), got {v}")
        if self.on_bad_image not in BAD_IMAGE_POLICIES:
            raise ConfigError(f"data.on_bad_image must be one of {', '.join(BAD_IMAGE_POLICIES)}, "
                              f"got {self.on_bad_image!r}")
        if (self.image_mean is None) != (self.image_std is None):
            raise ConfigError("data.image_mean and data.image_std must be set together")
        for name in ("image_mean", "image_std"):
            v = getattr(self, name)
            if v is not None and len(v) not in (1, 3):
                raise ConfigError(f"data.{name} needs 1 or 3 values (one per RGB channel), got {len(v)}")
        if self.image_std is not None and not all(s > 0 for s in self.image_std):
            raise ConfigError(f"data.image_std values must be > 0, got {self.image_std}")


# ---------------------------------------------------------------------------------------------------------------------
# Preprocessing (Pillow + numpy)
# ---------------------------------------------------------------------------------------------------------------------

def to_rgb(img):
    """A PIL image in RGB: grayscale becomes 3 equal channels, palette/alpha images are flattened."""
    from PIL import Image

    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):  # 16-bit / float grayscale: scale to 8 bits first
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        img = Image.fromarray(np.clip(arr / top * 255.0, 0, 255).astype(np.uint8), "L")
    elif img.mode == "P" or img.mode.endswith("A") or img.mode == "PA":
        img = img.convert("RGBA")
    return img.convert("RGB")


class ImageTransform:
    """PIL image -> ``pixel_values`` float32 ``[3, H, W]``: RGB, optional augmentation, bilinear resize, rescale
    by 1/255, normalise with ``mean`` / ``std``.

    Augmentation (``augment=True``) is torchvision's RandomResizedCrop(size, scale, ratio) followed by a horizontal flip
    with probability 0.5, drawn from ``generator`` (a ``torch.Generator``) or torch's global RNG, so seeding torch
    (``transformers.set_seed``, or the DataLoader's per-worker seeds) makes it reproducible.
    """

    def __init__(self, size: int | tuple[int, int], mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD, *, augment: bool = False,
                 scale: tuple[float, float] = (0.08, 1.0), ratio: tuple[float, float] = (3 / 4, 4 / 3),
                 flip_p: float = 0.5) -> None:
        self.size = (int(size), int(size)) if isinstance(size, (int, np.integer)) else (int(size[0]), int(size[1]))
        self.mean = np.asarray(_three(mean), dtype=np.float32).reshape(3, 1, 1)
        self.std = np.asarray(_three(std), dtype=np.float32).reshape(3, 1, 1)
        self.augment = augment
        self.scale, self.ratio, self.flip_p = scale, ratio, flip_p

    def __repr__(self) -> str:
        return (f"ImageTransform(size={self.size}, mean={self.mean.ravel().tolist()}, std={self.std.ravel().tolist()}, "
                f"augment={self.augment})")

    def draft_size(self) -> tuple[int, int]:
        """The smallest decoded size (width, height) that keeps full detail: twice the output, and for augmentation
        enough that the smallest crop (scale 0.08 -> about 1/4 of a side) still covers the output size."""
        k = 2.0 if not self.augment else 2.0 / math.sqrt(self.scale[0] * min(self.ratio[0], 1 / self.ratio[1]))
        return int(math.ceil(self.size[1] * k)), int(math.ceil(self.size[0] * k))

    def crop_box(self, width: int, height: int, generator=None) -> tuple[int, int, int, int]:
        """``(left, top, right, bottom)`` of a random resized crop (torchvision's algorithm: 10 tries, then a
        central crop with the ratio clamped)."""
        import torch

        def uniform(a, b):
            return a + (b - a) * float(torch.rand(1, generator=generator))

        area = width * height
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        for _ in range(10):
            target = area * uniform(*self.scale)
            aspect = math.exp(uniform(log_lo, log_hi))
            w = int(round(math.sqrt(target * aspect)))
            h = int(round(math.sqrt(target / aspect)))
            if 0 < w <= width and 0 < h <= height:
                top = int(torch.randint(0, height - h + 1, (1,), generator=generator))
                left = int(torch.randint(0, width - w + 1, (1,), generator=generator))
                return left, top, left + w, top + h
        in_ratio = width / height
        if in_ratio < self.ratio[0]:
            w, h = width, int(round(width / self.ratio[0]))
        elif in_ratio > self.ratio[1]:
            w, h = int(round(height * self.ratio[1])), height
        else:
            w, h = width, height
        top, left = (height - h) // 2, (width - w) // 2
        return left, top, left + w, top + h

    def __call__(self, img, generator=None) -> np.ndarray:
        from PIL import Image

        img = to_rgb(img)
        height, width = self.size
        box = None
        flip = False
        if self.augment:
            import torch

            box = self.crop_box(img.width, img.height, generator)
            flip = float(torch.rand(1, generator=generator)) < self.flip_p
        if box is not None or img.size != (width, height):
            img = img.resize((width, height), Image.Resampling.BILINEAR, box=box)
        if flip:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        arr = np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / np.float32(255.0)
        return np.ascontiguousarray((arr - self.mean) / self.std, dtype=np.float32)


def _three(v: Sequence[float]) -> list[float]:
    v = [float(x) for x in (v if isinstance(v, (list, tuple, np.ndarray)) else [v])]
    return v * 3 if len(v) == 1 else v


def _bad_image_reason(path: str, size: tuple[int, int] = (32, 32)) -> str | None:
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
        return f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"


# ---------------------------------------------------------------------------------------------------------------------
# Datasets
# ---------------------------------------------------------------------------------------------------------------------

class ImageDataset:
    """A map-style dataset of ``{"pixel_values": float32 tensor [3, H, W], "labels": int}``; images are decoded when
    an item is read (from ``paths``), or taken from an in-memory ``uint8`` array ``images[index]`` (MNIST)."""

    def __init__(self, labels: Sequence[int], transform: ImageTransform, *, paths: Sequence[str] | None = None,
                 images: np.ndarray | None = None, index: Sequence[int] | None = None) -> None:
        if (paths is None) == (images is None):
            raise ValueError("ImageDataset needs exactly one of paths= or images=")
        self.labels = np.asarray(labels, dtype=np.int64)
        self.paths = list(paths) if paths is not None else None
        self.images = images
        self.index = np.asarray(index if index is not None else np.arange(len(self.labels)), dtype=np.int64)
        n = len(self.paths) if self.paths is not None else len(self.index)
        if n != len(self.labels):
            raise ValueError(f"{n} images but {len(self.labels)} labels")
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, i: int):
        """The decoded PIL image of item ``i`` (before the transform)."""
        from PIL import Image

        if self.images is not None:
            return Image.fromarray(np.asarray(self.images[self.index[i]]))
        path = self.paths[i]
        try:
            with Image.open(path) as im:
                if im.format == "JPEG":  # decode big JPEGs at 1/2, 1/4 or 1/8 scale (DCT scaling): much faster
                    im.draft("RGB", self.transform.draft_size())
                im.load()
                return im.copy()
        except Exception as exc:  # noqa: BLE001
            raise DataError(f"cannot read image {path}: {type(exc).__name__}: {' '.join(str(exc).split())[:200]} "
                            "(data.verify_images=true finds unreadable files before training)") from None

    def __getitem__(self, i):
        import torch

        if isinstance(i, (int, np.integer)) and not -len(self) <= i < len(self):
            raise IndexError(i)
        pixels = self.transform(self.image(int(i)))
        return {"pixel_values": torch.from_numpy(pixels), "labels": int(self.labels[i])}


class ImageCollator:
    """Stacks ``pixel_values`` and ``labels``; adds ``interpolate_pos_encoding=True`` when the input size differs
    from the size the model was built for."""

    def __init__(self, interpolate_pos_encoding: bool = False) -> None:
        self.interpolate_pos_encoding = interpolate_pos_encoding

    def __call__(self, features: list[dict]) -> dict:
        import torch

        batch = {"pixel_values": torch.stack([torch.as_tensor(f["pixel_values"]) for f in features]),
                 "labels": torch.tensor([int(f["labels"]) for f in features], dtype=torch.long)}
        if self.interpolate_pos_encoding:
            batch["interpolate_pos_encoding"] = True
        return batch


@dataclass
class ImageClassificationData:
    """``train`` / ``eval`` are :class:`ImageDataset` (``eval`` may be None)."""

    train: ImageDataset | None = None
    eval: ImageDataset | None = None
    label_names: list[str] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    excluded: list[str] = field(default_factory=list)

    @property
    def num_labels(self) -> int:
        return len(self.label_names)


# ---------------------------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------------------------

def load_image_classification(cfg: ImageDataConfig, seed: int = 42, *, image_size: int | tuple[int, int] = 224,
                              mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                              log: Callable = logger.info) -> ImageClassificationData:
    """Datasets for ``cfg``: list the files (or load MNIST), split, subset with ``cfg.seed`` (default ``seed``), check
    that the selected images decode, attach the transforms (augmentation on the training set only if asked)."""
    seed = cfg.seed if cfg.seed is not None else seed
    train_tf = ImageTransform(image_size, mean, std, augment=cfg.augment)
    eval_tf = ImageTransform(image_size, mean, std, augment=False)
    if cfg.dataset == "mnist":
        data = _load_mnist(cfg, seed, train_tf, eval_tf)
    else:
        data = _load_folders(cfg, seed, train_tf, eval_tf)
    if data.excluded:
        log(f"left out {len(data.excluded)} file(s) matching data.exclude: {', '.join(data.excluded[:5])}"
            + (" ..." if len(data.excluded) > 5 else ""))
    if data.skipped:
        shown = "; ".join(f"{p} ({r})" for p, r in data.skipped[:10])
        msg = (f"skipped {len(data.skipped)} unreadable image file(s) (data.on_bad_image=skip): {shown}"
               + (f"; and {len(data.skipped) - 10} more" if len(data.skipped) > 10 else ""))
        warnings.warn(msg, BadImageWarning, stacklevel=2)
        logger.warning(msg)
    return data


def _resolve_dir(name: str, root: str | None, what: str) -> Path:
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


def _scan_folder(folder: Path, what: str, excluded_patterns: Sequence[str], excluded: list[str],
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
    for cls in subdirs:
        found = []
        for dirpath, dirnames, filenames in os.walk(folder / cls, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for fn in sorted(filenames):
                if not _is_image(fn):
                    continue
                full = os.path.join(dirpath, fn)
                if any(fnmatch.fnmatch(fn, pat) for pat in excluded_patterns):
                    excluded.append(os.path.relpath(full, folder.parent))
                    continue
                found.append(full)
        if not found and classes is None:
            raise DataError(f"class folder {folder / cls} of the {what} has no image files "
                            f"({', '.join(IMAGE_EXTENSIONS)})")
        paths += found
        labels += [names.index(cls)] * len(found)
    if classes is None and len(names) < 2:
        raise DataError(f"{what} {folder} has only one class subfolder ({names[0]}); classification needs >= 2")
    return names, paths, labels


def _select(n: int, max_n: int | None, seed: int, check: Callable[[int], str | None] | None, on_bad: str,
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


def _load_folders(cfg: ImageDataConfig, seed: int, train_tf, eval_tf) -> ImageClassificationData:
    patterns = cfg.exclude if cfg.exclude is not None else DEFAULT_EXCLUDE.get(cfg.dataset or "", [])
    excluded: list[str] = []
    if cfg.dataset == "hymenoptera":
        root = resolve_data_root(cfg.root)
        base = next((b for b in (root / "hymenoptera" / "hymenoptera_data", root / "hymenoptera_data")
                     if b.is_dir()), None)
        if base is None:
            raise DataError(f"dataset folder not found: {root / 'hymenoptera' / 'hymenoptera_data'} (data root "
                            f"{root})")
        train_dir, eval_dir = base / "train", base / "val"
        for d, split in ((train_dir, "train"), (eval_dir, "val")):
            if not d.is_dir():
                raise DataError(f"hymenoptera split folder not found: {d}")
        eval_name = "val"
    else:
        train_dir = _resolve_dir(cfg.train_dir, cfg.root, "data.train_dir")
        eval_dir = _resolve_dir(cfg.eval_dir, cfg.root, "data.eval_dir") if cfg.eval_dir else None
        eval_name = eval_dir.name if eval_dir is not None else None
    names, paths, labels = _scan_folder(train_dir, "training folder", patterns, excluded)
    if not paths:
        raise DataError(f"the training folder {train_dir} has no image files")
    skipped: list[tuple[str, str]] = []
    size = eval_tf.size[::-1]
    sources = {"train": str(train_dir)}

    def make(split_paths, split_labels, max_n, tf, what, split_seed):
        check = (lambda i: _bad_image_reason(split_paths[i], size)) if cfg.verify_images else None
        keep = _select(len(split_paths), max_n, split_seed, check, cfg.on_bad_image, lambda i: split_paths[i],
                       skipped, what)
        if not keep:
            bad = [f"{p} ({r})" for p, r in skipped if p in set(split_paths)][:3]
            raise DataError(f"the {what} has no readable images: all {len(split_paths)} file(s) are unreadable, "
                            f"e.g. {'; '.join(bad)}")
        return ImageDataset([split_labels[k] for k in keep], tf, paths=[split_paths[k] for k in keep])

    eval_ds = None
    if eval_dir is not None:
        _, epaths, elabels = _scan_folder(eval_dir, "evaluation folder", patterns, excluded, classes=names)
        if not epaths:
            raise DataError(f"the evaluation folder {eval_dir} has no image files (empty split)")
        eval_ds = make(epaths, elabels, cfg.max_eval_samples, eval_tf, f"evaluation folder {eval_dir}", seed + 1)
        sources["eval"] = str(eval_dir)
        sources["eval_split"] = eval_name
    elif cfg.eval_fraction is not None:
        perm = np.random.default_rng(seed).permutation(len(paths))
        n_eval = max(1, int(round(cfg.eval_fraction * len(paths))))
        if n_eval >= len(paths):
            raise DataError(f"data.eval_fraction={cfg.eval_fraction} leaves no training images of {len(paths)}")
        ev, tr = sorted(perm[:n_eval].tolist()), sorted(perm[n_eval:].tolist())
        eval_ds = make([paths[i] for i in ev], [labels[i] for i in ev], cfg.max_eval_samples, eval_tf,
                       f"held-out part of {train_dir}", seed + 1)
        paths, labels = [paths[i] for i in tr], [labels[i] for i in tr]
        sources["eval"] = f"{train_dir} (held out {cfg.eval_fraction:g}, seed {seed})"
        sources["eval_split"] = f"held-out {cfg.eval_fraction:g} of {train_dir.name} (seed {seed})"
    train_ds = make(paths, labels, cfg.max_train_samples, train_tf, f"training folder {train_dir}", seed)
    return ImageClassificationData(train_ds, eval_ds, names, sources, skipped, excluded)


def _load_mnist(cfg: ImageDataConfig, seed: int, train_tf, eval_tf) -> ImageClassificationData:
    from tl_hf.continual.runner import MNIST_FILES, load_mnist_idx

    root = resolve_data_root(cfg.root)
    if not all((root / "mnist_t10k" / f).is_file() for f in MNIST_FILES):
        raise DataError(f"dataset folder not found or incomplete: {root / 'mnist_t10k'} (expected "
                        f"{', '.join(MNIST_FILES)}; data root {root})")
    try:
        images, labels = load_mnist_idx(root)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read MNIST from {root / 'mnist_t10k'}: {' '.join(str(exc).split())}") from None
    frac = cfg.eval_fraction if cfg.eval_fraction is not None else MNIST_DEFAULT_EVAL_FRACTION
    perm = np.random.default_rng(seed).permutation(len(labels))
    n_eval = int(round(frac * len(labels)))
    ev, tr = np.sort(perm[:n_eval]), np.sort(perm[n_eval:])

    def subset(idx, max_n, s):
        if max_n is not None and max_n < len(idx):
            idx = np.sort(np.random.default_rng(s).choice(idx, size=max_n, replace=False))
        return idx

    tr, ev = subset(tr, cfg.max_train_samples, seed), subset(ev, cfg.max_eval_samples, seed + 1)
    split = f"t10k held-out {frac:.0%} (seed {seed}; non-standard split of the MNIST test images)"
    return ImageClassificationData(
        ImageDataset(labels[tr], train_tf, images=images, index=tr),
        ImageDataset(labels[ev], eval_tf, images=images, index=ev),
        [str(d) for d in range(10)],
        {"train": f"{root / 'mnist_t10k'} ({len(tr)} of the {len(perm) - n_eval} non-held-out images)",
         "eval": f"{root / 'mnist_t10k'} (held out {frac:g}, seed {seed})", "eval_split": split})


# ---------------------------------------------------------------------------------------------------------------------
# Model side
# ---------------------------------------------------------------------------------------------------------------------

def _load_model_config(name: str):
    """The model's ``PretrainedConfig``; an error unless it is an image-classification architecture."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES

    try:
        config = _from_pretrained(AutoConfig, name, "model")
    except ModelLoadError as exc:  # the shared message suggests the (text) MiniLM; point at a local vision model
        msg = str(exc).replace(f"use a local directory or {BUNDLED_ALIASES[0]}",
                               "use a local model directory (model.name_or_path=/path/to/vit, written by "
                               "save_pretrained)")
        raise ModelLoadError(msg) from None
    mt = getattr(config, "model_type", None)
    if mt not in MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES:
        raise ModelLoadError(f"model {name!r} (model_type {mt!r}) is not an image-classification model; use a "
                             "ViT-family checkpoint (vit, deit, beit, dinov2, swin, ...)")
    return config


def image_stats(name: str) -> tuple[list[float], list[float], str, Any]:
    """``(mean, std, source, size)`` from the model's ``preprocessor_config.json`` (a local directory, or the HF cache
    / Hub for an id), else the ImageNet statistics. ``size`` is the processor's size entry or None."""
    location, local = resolve_model_path(name)
    path = None
    if local:
        p = Path(location) / "preprocessor_config.json"
        path = str(p) if p.is_file() else None
    else:
        try:
            from huggingface_hub import hf_hub_download, try_to_load_from_cache

            cached = try_to_load_from_cache(location, "preprocessor_config.json")
            path = cached if isinstance(cached, str) else None
            if path is None and not _offline():
                path = hf_hub_download(location, "preprocessor_config.json")
        except Exception:  # noqa: BLE001 - no processor config: fall back to the defaults
            path = None
    if path is not None:
        try:
            with open(path, encoding="utf-8") as fh:
                proc = json.load(fh)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"cannot read {path}: {' '.join(str(exc).split())}") from None
        if proc.get("do_normalize", True) is False:
            return [0.0] * 3, [1.0] * 3, f"{path} (do_normalize false)", proc.get("size")
        if proc.get("image_mean") is not None and proc.get("image_std") is not None:
            return _three(proc["image_mean"]), _three(proc["image_std"]), path, proc.get("size")
        return list(IMAGENET_MEAN), list(IMAGENET_STD), f"ImageNet defaults ({path} has no image_mean)", \
            proc.get("size")
    return list(IMAGENET_MEAN), list(IMAGENET_STD), "ImageNet defaults (the model has no preprocessor_config.json)", \
        None


def _config_image_size(config, proc_size) -> tuple[int, int] | None:
    s = getattr(config, "image_size", None)
    if isinstance(s, (list, tuple)) and len(s) == 2:
        return int(s[0]), int(s[1])
    if isinstance(s, (int, np.integer)):
        return int(s), int(s)
    if isinstance(proc_size, dict) and "height" in proc_size and "width" in proc_size:
        return int(proc_size["height"]), int(proc_size["width"])
    return None


def _write_processor_config(out_dir: str, size: tuple[int, int], mean, std) -> str:
    """A ViTImageProcessor-style ``preprocessor_config.json`` describing this recipe's eval preprocessing."""
    path = os.path.join(out_dir, "preprocessor_config.json")
    from tl_hf.core.state import atomic_write_json

    atomic_write_json(path, {"image_processor_type": "ViTImageProcessor", "do_resize": True,
                             "size": {"height": size[0], "width": size[1]}, "resample": 2, "do_rescale": True,
                             "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": list(mean),
                             "image_std": list(std)})
    return path


def save_scratch_vit(out_dir: str | os.PathLike, *, image_size: int = 28, patch_size: int = 7, hidden_size: int = 64,
                     num_layers: int = 4, num_heads: int = 4, intermediate_size: int = 128, num_labels: int = 10,
                     mean: Sequence[float] = (0.5, 0.5, 0.5), std: Sequence[float] = (0.5, 0.5, 0.5),
                     seed: int = 0) -> str:
    """Save a randomly initialised ``ViTForImageClassification`` (plus a ``preprocessor_config.json``) to
    ``out_dir``, for runs without a pretrained ViT (no Hub access). Defaults: a 4-layer, 64-wide ViT for 28 x 28
    MNIST digits with 7 x 7 patches (about 0.15M parameters)."""
    import torch
    import transformers as T

    torch.manual_seed(seed)
    cfg = T.ViTConfig(image_size=image_size, patch_size=patch_size, hidden_size=hidden_size,
                      num_hidden_layers=num_layers, num_attention_heads=num_heads,
                      intermediate_size=intermediate_size, num_labels=num_labels)
    T.ViTForImageClassification(cfg).save_pretrained(out_dir)
    _write_processor_config(os.fspath(out_dir), (image_size, image_size), _three(mean), _three(std))
    return os.fspath(out_dir)


# ---------------------------------------------------------------------------------------------------------------------
# Recipe
# ---------------------------------------------------------------------------------------------------------------------

def run_image_classification(cfg: RunConfig, *, log=print) -> dict[str, Any]:
    """Fine-tune and evaluate an image classifier (ViT family) as ``cfg`` says; writes ``all_results.json``, eval
    predictions, a confusion matrix, a learning curve and the LR per layer group under ``training.output_dir``."""
    import inspect

    import transformers
    from transformers import AutoModelForImageClassification

    from tl_hf.core.layers import get_layer_map

    start = time.perf_counter()
    dcfg: ImageDataConfig = cfg.data
    if not isinstance(dcfg, ImageDataConfig):
        raise ConfigError(f"task image_classification needs an image data section, got {type(dcfg).__name__}")
    args = build_training_args(cfg)  # validate TrainingArguments before any slow step
    args.label_names = args.label_names or ["labels"]  # a PeftModel's forward(*args, **kwargs) hides `labels`
    config = _load_model_config(cfg.model.name_or_path)  # fails fast: not a model, not an image model, offline id
    transformers.set_seed(args.seed)
    last_checkpoint = detect_last_checkpoint(args, log)

    if dcfg.image_mean is not None:
        mean, std, stats_from, proc_size = _three(dcfg.image_mean), _three(dcfg.image_std), "data.image_mean/std", None
    else:
        mean, std, stats_from, proc_size = image_stats(cfg.model.name_or_path)
    model_size = _config_image_size(config, proc_size)
    size = (dcfg.image_size, dcfg.image_size) if dcfg.image_size else (model_size or (224, 224))

    data = load_image_classification(dcfg, seed=args.seed, image_size=size, mean=mean, std=std, log=log)
    num_labels = cfg.model.num_labels or data.num_labels
    if num_labels < data.num_labels:
        raise ConfigError(f"model.num_labels={num_labels} but the data has {data.num_labels} labels "
                          f"({', '.join(data.label_names)})")
    names = data.label_names + [str(i) for i in range(len(data.label_names), num_labels)]
    model = _from_pretrained(AutoModelForImageClassification, cfg.model.name_or_path, "model", trust_remote_code=cfg.model.trust_remote_code,
                             num_labels=num_labels, id2label=dict(enumerate(names)),
                             label2id={n: i for i, n in enumerate(names)}, ignore_mismatched_sizes=True)
    interpolate = False
    if model_size is not None and tuple(size) != tuple(model_size):
        if "interpolate_pos_encoding" in inspect.signature(model.forward).parameters:
            interpolate = True
            log(f"image_size {size[0]}x{size[1]} differs from the model's {model_size[0]}x{model_size[1]}: the "
                "position embeddings are interpolated")
        else:
            log(f"warning: image_size {size[0]}x{size[1]} differs from the model's {model_size[0]}x{model_size[1]} "
                f"and {type(model).__name__} has no interpolate_pos_encoding")

    llrd, freezing = resolve_strategy(cfg, len(data.train), get_layer_map(model).num_blocks, log)
    model = maybe_wrap_peft(model, cfg, task_type=None)
    trainer = build_trainer(cfg, model, args, llrd=llrd, freezing=freezing, train_dataset=data.train,
                            eval_dataset=data.eval, data_collator=ImageCollator(interpolate))
    n_eval = len(data.eval) if data.eval is not None else 0
    log(f"model {cfg.model.name_or_path}: {sum(p.numel() for p in model.parameters()):,} parameters, "
        f"{trainer.freezer.num_trainable():,} trainable; llrd decay {llrd.decay}, freezing {freezing.policy}; "
        f"images {size[0]}x{size[1]}, mean/std from {stats_from}, augment {dcfg.augment}; train "
        f"{len(data.train):,} images ({data.sources.get('train')}), eval {n_eval:,} ({data.sources.get('eval')})")

    train_result = trainer.train(resume_from_checkpoint=last_checkpoint)
    trainer.save_metrics("train", dict(train_result.metrics))
    if args.should_save and (cfg.model.save_model or cfg.hub.push):
        os.makedirs(args.output_dir, exist_ok=True)
        _write_processor_config(args.output_dir, size, mean, std)  # so the saved model reloads with the same inputs
    eval_split = data.sources.get("eval_split") if data.eval is not None else None
    extra = {"eval_split": eval_split, "image_size": list(size), "normalization": {"mean": mean, "std": std,
                                                                                     "source": stats_from},
             "skipped_images": [p for p, _ in data.skipped], "excluded_images": data.excluded}
    results: dict[str, Any] = dict(train_result.metrics)
    dataset_name = dcfg.dataset or os.path.basename(os.path.normpath(str(dcfg.train_dir)))
    results.update(finish_run(trainer, cfg, label_names=names, train_size=len(data.train), eval_dataset=data.eval,
                              dataset_name=dataset_name, extra=extra, log=log))
    results["wall_time_s"] = round(time.perf_counter() - start, 1)
    if args.should_save:
        from tl_hf.core.state import atomic_write_json, read_json

        path = os.path.join(args.output_dir, "all_results.json")
        atomic_write_json(path, {**read_json(path), "wall_time_s": results["wall_time_s"]})
    return results


register_task("image_classification", ImageDataConfig, run_image_classification,
              "image classification with a ViT-family model (imagefolder, hymenoptera, MNIST)")
