"""The image task's pixel pipeline: the eval transform (the model's own ``AutoImageProcessor``, PIL backend), the
training augmentation (``torchvision.transforms.v2`` when it imports, else the Pillow path of
:mod:`tl_hf.run.data.image_transform`), and the checks on the images themselves (grayscale, smaller than a patch,
smaller than the model input).

* **Eval** (and training without ``data.augment``): ``AutoImageProcessor.from_pretrained(<model>, backend="pil")``
  from the folder's ``preprocessor_config.json``, with ``data.image_mean`` / ``data.image_std`` / ``data.image_size``
  applied on top. A folder without that file needs ``data.image_mean`` and ``data.image_std``; the processor is then a
  plain-resize ``ViTImageProcessorPil``. The PIL backend needs no torchvision.
* **Training with ``data.augment``**: RandomResizedCrop(``data.augment_scale``, ratio 3/4-4/3) to the eval input size
  and a horizontal flip, drawn from torch's RNG (seeded by the Trainer and the DataLoader's per-worker seeds on both
  backends, so a resumed run draws what the uninterrupted run drew).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from tl_hf._errors import ConfigError
from tl_hf.run.data.image_transform import ImageTransform, per_channel, to_rgb
from tl_hf.run.data.paths import DataError

__all__ = ["GRAYSCALE_MODES", "ProcessorTransform", "TorchvisionTrainTransform", "check_images", "eval_processor",
           "numpy_twin", "torchvision_v2", "train_transform"]

logger = logging.getLogger(__name__)

#: PIL modes that carry one intensity channel (``to_rgb`` copies it into R, G and B)
GRAYSCALE_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"})
NO_PROCESSOR_KEYS = "data.image_mean and data.image_std (e.g. [0.485, 0.456, 0.406] / [0.229, 0.224, 0.225] for " \
                    "an ImageNet-trained model), and data.image_size when the model's config has no image_size"


# ---------------------------------------------------------------------------------------------------------------------
# Eval: the model's own processor
# ---------------------------------------------------------------------------------------------------------------------

def eval_processor(processor_dir: str | None, *, mean: Sequence[float] | None, std: Sequence[float] | None,
                   image_size: int | None, model_size: tuple[int, int] | None, model_name: str):
    """The eval image processor (PIL backend): ``processor_dir``'s ``preprocessor_config.json`` with the config's
    overrides, or a plain-resize ``ViTImageProcessorPil`` when the model has none (then ``mean`` / ``std`` are
    required)."""
    from transformers import AutoImageProcessor, ViTImageProcessorPil

    if processor_dir is None:
        if mean is None:
            raise ConfigError(f"model {model_name!r} has no preprocessor_config.json and the config gives no "
                              f"normalisation: set {NO_PROCESSOR_KEYS}")
        side = (image_size, image_size) if image_size else model_size
        if side is None:
            raise ConfigError(f"model {model_name!r} has no preprocessor_config.json and its config no image_size: "
                              "set data.image_size")
        return ViTImageProcessorPil(size={"height": side[0], "width": side[1]}, image_mean=per_channel(mean),
                                    image_std=per_channel(std), do_normalize=True)
    proc = AutoImageProcessor.from_pretrained(processor_dir, backend="pil")
    if mean is not None:
        proc.image_mean, proc.image_std, proc.do_normalize = per_channel(mean), per_channel(std), True
    if image_size:
        crop = _size_dict(getattr(proc, "crop_size", None))
        if getattr(proc, "do_center_crop", False) and crop and _size_dict(proc.size).get("shortest_edge"):
            ratio = _size_dict(proc.size)["shortest_edge"] / crop["height"]  # keep e.g. 256/224
            proc.size = {"shortest_edge": int(round(image_size * ratio))}
            proc.crop_size = {"height": image_size, "width": image_size}
        else:
            proc.size, proc.do_center_crop = {"height": image_size, "width": image_size}, False
    return proc


def _size_dict(size) -> dict:
    if size is None:
        return {}
    if isinstance(size, dict):
        return {k: v for k, v in size.items() if v is not None}
    return {k: getattr(size, k) for k in ("height", "width", "shortest_edge", "longest_edge")
            if getattr(size, k, None) is not None}


def output_size(proc) -> tuple[int, int]:
    """``(height, width)`` of the processor's output."""
    crop, size = _size_dict(getattr(proc, "crop_size", None)), _size_dict(proc.size)
    if getattr(proc, "do_center_crop", False) and crop:
        return int(crop["height"]), int(crop["width"])
    if "height" in size:
        return int(size["height"]), int(size["width"])
    if "shortest_edge" in size and getattr(proc, "crop_pct", None):  # ConvNeXt: resize / crop_pct, crop to the edge
        return int(size["shortest_edge"]), int(size["shortest_edge"])
    raise ConfigError(f"{type(proc).__name__}: size {size} without a center crop gives images of varying shape; "
                      "set data.image_size")


def describe(proc) -> str:
    """One line: what the processor does."""
    size, (h, w) = _size_dict(proc.size), output_size(proc)
    resample = getattr(proc, "resample", None)
    try:
        from PIL import Image

        resample = Image.Resampling(int(resample)).name.lower()
    except (TypeError, ValueError):
        pass
    steps = (f"shorter side to {size['shortest_edge']} ({resample}), center crop {h}x{w}" if "shortest_edge" in size
             else f"resize to {h}x{w} ({resample})")
    return f"{type(proc).__name__}: {steps}, mean {list(proc.image_mean)}, std {list(proc.image_std)}"


class ProcessorTransform:
    """PIL image -> ``pixel_values`` float32 ``[3, H, W]`` through an image processor (RGB first, see ``to_rgb``)."""

    def __init__(self, processor) -> None:
        self.processor = processor
        self.size = output_size(processor)
        self.augment = False

    def __repr__(self) -> str:
        return f"ProcessorTransform({describe(self.processor)})"

    def draft_size(self) -> tuple[int, int]:
        side = max(self.size[0], _size_dict(self.processor.size).get("shortest_edge", 0))
        return 2 * side, 2 * side

    def __call__(self, img, generator=None) -> np.ndarray:
        out = self.processor(images=to_rgb(img), return_tensors="np")["pixel_values"][0]
        return np.ascontiguousarray(out, dtype=np.float32)


def numpy_twin(proc) -> ImageTransform:
    """The numpy/Pillow :class:`ImageTransform` that computes what ``proc`` computes (the tested twin)."""
    size = _size_dict(proc.size)
    resample = int(getattr(proc, "resample", 2) if getattr(proc, "resample", None) is not None else 2)
    mean = proc.image_mean if proc.do_normalize else [0.0] * 3
    std = proc.image_std if proc.do_normalize else [1.0] * 3
    return ImageTransform(output_size(proc), mean, std, shortest_edge=size.get("shortest_edge")
                          if getattr(proc, "do_center_crop", False) else None, resample=resample)


# ---------------------------------------------------------------------------------------------------------------------
# Training augmentation
# ---------------------------------------------------------------------------------------------------------------------

def torchvision_v2():
    """``torchvision.transforms.v2`` when the ``vision`` extra is installed and imports with this torch, else None
    (a wheel built for another torch fails at import with an ImportError, a RuntimeError or an OSError)."""
    try:
        from torchvision.transforms import v2
    except Exception:  # noqa: BLE001 - any failure to import means: use the Pillow path
        return None
    return v2


class TorchvisionTrainTransform:
    """RandomResizedCrop + horizontal flip + normalise with ``torchvision.transforms.v2`` (torch's global RNG)."""

    def __init__(self, v2, size: tuple[int, int], mean, std, scale, ratio, flip_p: float = 0.5) -> None:
        import torch

        self.size, self.augment, self.scale, self.ratio = tuple(size), True, tuple(scale), tuple(ratio)
        self.pipeline = v2.Compose([v2.PILToTensor(), v2.RandomResizedCrop(self.size, scale=self.scale,
                                                                           ratio=self.ratio, antialias=True),
                                    v2.RandomHorizontalFlip(flip_p), v2.ToDtype(torch.float32, scale=True),
                                    v2.Normalize(per_channel(mean), per_channel(std))])

    def __repr__(self) -> str:
        return f"TorchvisionTrainTransform(size={self.size}, scale={self.scale})"

    def draft_size(self) -> tuple[int, int]:
        return ImageTransform(self.size, augment=True, scale=self.scale, ratio=self.ratio).draft_size()

    def __call__(self, img, generator=None):
        return self.pipeline(to_rgb(img))


def train_transform(eval_tf: ProcessorTransform, *, augment: bool, scale: Sequence[float],
                    ratio: Sequence[float] = (3 / 4, 4 / 3)) -> tuple[Any, str]:
    """``(transform, description)`` for the training images: the eval transform without augmentation, else
    RandomResizedCrop(``scale``) + flip at the eval size, on torchvision v2 when importable, else Pillow."""
    if not augment:
        return eval_tf, "none (training images get the eval transform)"
    proc = eval_tf.processor
    mean = proc.image_mean if proc.do_normalize else [0.0] * 3
    std = proc.image_std if proc.do_normalize else [1.0] * 3
    what = f"RandomResizedCrop {eval_tf.size[0]}x{eval_tf.size[1]} scale {tuple(scale)} + horizontal flip"
    v2 = torchvision_v2()
    if v2 is not None:
        return TorchvisionTrainTransform(v2, eval_tf.size, mean, std, scale, ratio), f"{what} (torchvision.transforms.v2)"
    return (ImageTransform(eval_tf.size, mean, std, augment=True, scale=tuple(scale), ratio=tuple(ratio)),
            f"{what} (Pillow; torchvision not importable)")


# ---------------------------------------------------------------------------------------------------------------------
# The images themselves
# ---------------------------------------------------------------------------------------------------------------------

def _headers(ds) -> list[tuple[str, str, int, int]]:
    """``(name, mode, width, height)`` per item of an ImageDataset, from the file headers (no decoding)."""
    from PIL import Image

    if ds.paths is None:  # in-memory arrays (MNIST)
        shape = np.asarray(ds.images[ds.index[0]]).shape if len(ds.index) else (0, 0)
        mode = "L" if len(shape) == 2 else "RGB"
        return [(f"item {i}", mode, shape[1], shape[0]) for i in range(min(len(ds.index), 1))]
    out = []
    for p in ds.paths:
        with Image.open(p) as im:
            out.append((str(p), im.mode, im.width, im.height))
    return out


def check_images(datasets: Sequence, *, input_size: tuple[int, int], patch_size: int | None,
                 convert_grayscale: bool, log: Callable = logger.info) -> dict[str, Any]:
    """Refuse images smaller than a patch, and grayscale images unless ``convert_grayscale``; log the conversion and
    an upscale to the model input. Returns what the results record (``grayscale_converted``, ``upscaled_from``)."""
    heads = [h for ds in datasets if ds is not None for h in _headers(ds)]
    if not heads:
        return {}
    if patch_size:
        small = [h for h in heads if min(h[2], h[3]) < patch_size]
        if small:
            name, _, w, h = small[0]
            raise DataError(f"image {name} is {w}x{h} pixels, smaller than the model's {patch_size}x{patch_size} "
                            f"patch: images must be at least {patch_size} pixels on each side ({len(small)} such "
                            "file(s); remove them or leave them out with data.exclude)")
    gray = [h for h in heads if h[1] in GRAYSCALE_MODES]
    if gray and not convert_grayscale:
        raise ConfigError(f"data.convert_grayscale is false but {len(gray)} image(s) are grayscale (e.g. "
                          f"{gray[0][0]}, mode {gray[0][1]}) and the model takes RGB: set data.convert_grayscale: "
                          "true (the gray channel is copied into R, G and B) or give RGB images")
    info: dict[str, Any] = {}
    if gray:
        log(f"{len(gray)} grayscale image(s) converted to RGB, the gray channel copied into R, G and B "
            f"(data.convert_grayscale: true), e.g. {Path(gray[0][0]).name}")
        info["grayscale_converted"] = len(gray)
    big_w, big_h = max(h[2] for h in heads), max(h[3] for h in heads)
    if big_w < input_size[1] and big_h < input_size[0]:
        log(f"the images (at most {big_w}x{big_h} pixels) are upscaled to the model input "
            f"{input_size[0]}x{input_size[1]}")
        info["upscaled_from"] = [big_h, big_w]
    return info
