"""Image-classification data: the ``data`` section of ``task: image_classification`` (:class:`ImageDataConfig`), the
datasets and the collator.

* ``dataset: hymenoptera`` -- ants vs bees from ``<root>/hymenoptera/hymenoptera_data/{train,val}/{ants,bees}``
  (245 / 153 images). The GIF placeholder ``train/ants/imageNotFound.gif`` is left out by default (``data.exclude``);
  ``train/ants/ant photos.jpg`` (a space in the name) is read like any other file.
* ``dataset: mnist`` -- the 10,000 MNIST *test* images (``<root>/mnist_t10k``, IDX gz). Only t10k exists locally, so
  train and eval are a seeded split of it (``data.eval_fraction``, default 0.2): a **non-standard split**, and results
  say so (``eval_split`` in ``all_results.json``).
* ``train_dir`` / ``eval_dir`` -- any image folder laid out as ``<dir>/<class name>/<image>`` (torchvision's
  ImageFolder layout; the class is the subfolder name, classes are sorted). Without ``eval_dir``, ``eval_fraction``
  holds out a seeded part of ``train_dir``; with neither there is no evaluation.

Preprocessing is the run's (:mod:`tl_hf.run.data.image_pipeline`: the model's image processor for evaluation,
torchvision or Pillow augmentation for training), else :class:`~tl_hf.run.data.image_transform.ImageTransform`. JPEGs more than twice the needed size are
decoded at 1/2, 1/4 or 1/8 scale (Pillow's ``draft``, DCT scaling), which is much faster and differs only slightly from
decoding at full size. Images are decoded lazily, one per ``__getitem__``; before training every selected file is
decoded once (``data.verify_images``) so that unreadable files are skipped with a warning or stop the run with an
error naming the file (``data.on_bad_image``).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from tl_hf._errors import ConfigError, did_you_mean, one_line
from tl_hf.run.data.image_transform import IMAGENET_MEAN, IMAGENET_STD, ImageTransform
from tl_hf.run.data.imagefolder import bad_image_reason, resolve_dir, scan_folder, select_readable
from tl_hf.run.data.paths import DataError, data_root_field, resolve_data_root

__all__ = ["BadImageWarning", "IMAGE_DATASETS", "ImageClassificationData", "ImageCollator", "ImageDataConfig",
           "ImageDataset", "load_image_classification"]

logger = logging.getLogger(__name__)

IMAGE_DATASETS = ("hymenoptera", "mnist")
BAD_IMAGE_POLICIES = ("skip", "fail")
#: files left out of a built-in dataset unless ``data.exclude`` says otherwise (placeholders, not examples)
DEFAULT_EXCLUDE = {"hymenoptera": ["imageNotFound.gif"]}
MNIST_DEFAULT_EVAL_FRACTION = 0.2


class BadImageWarning(UserWarning):
    """Unreadable image files were left out (``data.on_bad_image: skip``)."""


@dataclass
class ImageDataConfig:
    """Where the image-classification data comes from and how it is prepared."""

    dataset: str | None = field(default=None, metadata={
        "help": f"A built-in dataset under the data root: {', '.join(IMAGE_DATASETS)} (hymenoptera: imagefolder "
                "train/val; mnist: a seeded split of the 10k MNIST test images, see eval_fraction). Leave empty and "
                "set train_dir/eval_dir for your own image folders."})
    root: str | None = data_root_field()
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
        "help": "Training images only: random resized crop (data.augment_scale, ratio 3/4-4/3) to the eval input size "
                "and horizontal flip (torchvision.transforms.v2 when the vision extra imports, else Pillow + numpy; "
                "torch's seeded RNG either way). Leave off for digits: flips change their meaning."})
    augment_scale: list[float] | None = field(default=None, metadata={
        "help": "[min, max] area fraction of the random resized crop. Default [0.08, 1] (ImageNet-style, for photos "
                "of 224 px and more); small images upscaled to the model input (32 px CIFAR) want a milder one, "
                "e.g. [0.6, 1]."})
    convert_grayscale: bool = field(default=True, metadata={
        "help": "Grayscale images (PIL modes L, I;16, ...) are converted to RGB by copying the gray channel into R, "
                "G and B, and the log says how many; false refuses them (the models take RGB)."})
    interpolate_pos_encoding: bool | None = field(default=None, metadata={
        "help": "ViT family only. Default (null): interpolate the position embeddings when the input size differs "
                "from the model's config image_size (DINOv2 always does). false: refuse a different size. A model "
                "without position embeddings (a CNN) refuses the key."})
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
        if self.augment_scale is not None:
            sc = self.augment_scale
            if len(sc) != 2 or not 0.0 < sc[0] <= sc[1] <= 1.0:
                raise ConfigError(f"data.augment_scale needs [min, max] with 0 < min <= max <= 1, got {sc}")
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
            raise DataError(f"cannot read image {path}: {type(exc).__name__}: {one_line(exc)[:200]} "
                            "(data.verify_images=true finds unreadable files before training)") from None

    def __getitem__(self, i):
        import torch

        if isinstance(i, (int, np.integer)) and not -len(self) <= i < len(self):
            raise IndexError(i)
        pixels = self.transform(self.image(int(i)))
        return {"pixel_values": torch.as_tensor(pixels), "labels": int(self.labels[i])}


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


def load_image_classification(cfg: ImageDataConfig, seed: int = 42, *, image_size: int | tuple[int, int] = 224,
                              mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                              log: Callable = logger.info, train_tf=None,
                              eval_tf=None) -> ImageClassificationData:
    """Datasets for ``cfg``: list the files (or load MNIST), split, subset with ``cfg.seed`` (default ``seed``), check
    that the selected images decode, attach the transforms (augmentation on the training set only if asked).
    ``train_tf`` / ``eval_tf`` (the run's, :mod:`tl_hf.run.data.image_pipeline`) replace the plain
    :class:`ImageTransform` built from ``image_size`` / ``mean`` / ``std``."""
    seed = cfg.seed if cfg.seed is not None else seed
    train_tf = train_tf or ImageTransform(image_size, mean, std, augment=cfg.augment)
    eval_tf = eval_tf or ImageTransform(image_size, mean, std, augment=False)
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
        train_dir = resolve_dir(cfg.train_dir, cfg.root, "data.train_dir")
        eval_dir = resolve_dir(cfg.eval_dir, cfg.root, "data.eval_dir") if cfg.eval_dir else None
        eval_name = eval_dir.name if eval_dir is not None else None
    names, paths, labels = scan_folder(train_dir, "training folder", patterns, excluded)
    if not paths:
        raise DataError(f"the training folder {train_dir} has no image files")
    skipped: list[tuple[str, str]] = []
    size = eval_tf.size[::-1]
    sources = {"train": str(train_dir)}

    def make(split_paths, split_labels, max_n, tf, what, split_seed):
        check = (lambda i: bad_image_reason(split_paths[i], size)) if cfg.verify_images else None
        keep = select_readable(len(split_paths), max_n, split_seed, check, cfg.on_bad_image, lambda i: split_paths[i],
                       skipped, what)
        if not keep:
            bad = [f"{p} ({r})" for p, r in skipped if p in set(split_paths)][:3]
            raise DataError(f"the {what} has no readable images: all {len(split_paths)} file(s) are unreadable, "
                            f"e.g. {'; '.join(bad)}")
        return ImageDataset([split_labels[k] for k in keep], tf, paths=[split_paths[k] for k in keep])

    eval_ds = None
    if eval_dir is not None:
        _, epaths, elabels = scan_folder(eval_dir, "evaluation folder", patterns, excluded, classes=names)
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
    from tl_hf.run.data.mnist import MNIST_FILES, load_mnist_idx

    root = resolve_data_root(cfg.root)
    if not all((root / "mnist_t10k" / f).is_file() for f in MNIST_FILES):
        raise DataError(f"dataset folder not found or incomplete: {root / 'mnist_t10k'} (expected "
                        f"{', '.join(MNIST_FILES)}; data root {root})")
    try:
        images, labels = load_mnist_idx(root)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read MNIST from {root / 'mnist_t10k'}: {one_line(exc)}") from None
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
