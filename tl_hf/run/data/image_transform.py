"""Image preprocessing with Pillow and numpy only (no torchvision).

decode -> RGB (grayscale and palette images become 3 channels) -> [train, ``augment``: random resized crop, scale
(0.08, 1), ratio (3/4, 4/3), and horizontal flip, drawn from torch's RNG, which the Trainer seeds] -> resize to
``image_size`` (bilinear; or, with ``shortest_edge``, the shorter side to ``shortest_edge`` with ``resample`` and then a
center crop to ``image_size``) -> ``/255`` -> ``(x - mean) / std`` -> ``pixel_values`` float32 ``[3, H, W]``. Without
augmentation this equals the PIL backend of ``ViTImageProcessor`` (plain resize) and of ``BitImageProcessor`` /
``MobileNetV2ImageProcessor`` (shortest edge + center crop) within 1e-5; the run's eval transform is the model's own
``AutoImageProcessor`` (:mod:`tl_hf.run.data.image_pipeline`), and this path is its tested twin and the Pillow
augmentation fallback.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "ImageTransform", "per_channel", "to_rgb"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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
                 flip_p: float = 0.5, shortest_edge: int | None = None, resample: int = 2) -> None:
        self.size = (int(size), int(size)) if isinstance(size, (int, np.integer)) else (int(size[0]), int(size[1]))
        self.mean = np.asarray(per_channel(mean), dtype=np.float32).reshape(3, 1, 1)
        self.std = np.asarray(per_channel(std), dtype=np.float32).reshape(3, 1, 1)
        self.augment = augment
        self.scale, self.ratio, self.flip_p = scale, ratio, flip_p
        self.shortest_edge, self.resample = shortest_edge, int(resample)

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
        if self.shortest_edge and box is None:  # the processor's eval path: shorter side, then a center crop
            img = _resize_shortest_then_crop(img, self.shortest_edge, (width, height), self.resample)
        elif box is not None or img.size != (width, height):
            img = img.resize((width, height), Image.Resampling.BILINEAR, box=box)
        if flip:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        arr = np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / np.float32(255.0)
        return np.ascontiguousarray((arr - self.mean) / self.std, dtype=np.float32)


def _resize_shortest_then_crop(img, shortest: int, out_wh: tuple[int, int], resample: int):
    """transformers' ``get_resize_output_image_size(default_to_square=False)`` then ``center_crop``."""
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = shortest, int(shortest * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    if (new_w, new_h) != (w, h):
        img = img.resize((new_w, new_h), resample)
    cw, ch = out_wh
    top, left = (new_h - ch) // 2, (new_w - cw) // 2
    if top < 0 or left < 0:  # smaller than the crop: pad with zeros like transformers' center_crop
        canvas = np.zeros((max(ch, new_h), max(cw, new_w), 3), dtype=np.uint8)
        t0, l0 = (canvas.shape[0] - new_h) // 2, (canvas.shape[1] - new_w) // 2
        canvas[t0:t0 + new_h, l0:l0 + new_w] = np.asarray(img)
        from PIL import Image

        img, new_h, new_w = Image.fromarray(canvas), canvas.shape[0], canvas.shape[1]
        top, left = (new_h - ch) // 2, (new_w - cw) // 2
    return img.crop((left, top, left + cw, top + ch))


def per_channel(v: Sequence[float]) -> list[float]:
    """Three floats, one per RGB channel: a single value is repeated."""
    v = [float(x) for x in (v if isinstance(v, (list, tuple, np.ndarray)) else [v])]
    return v * 3 if len(v) == 1 else v
