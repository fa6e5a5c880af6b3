"""Image-classification recipe (tl_hf.run.tasks.image_classification): image folders, the real hymenoptera and MNIST data, bad images,
augmentation, normalisation, clear errors, the configs and the recipe script.

No pretrained ViT exists offline: a tiny ViTForImageClassification (image_size 32, patch 8, hidden 32, 2 layers) is
built from a config and saved into tmp_path with save_pretrained; tiny image folders are drawn with Pillow.
"""

from __future__ import annotations

import json
import os
import re
import runpy
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from conftest import real_data_root  # noqa: E402

from tl_hf._errors import ConfigError  # noqa: E402
from tl_hf.run.config import load_config  # noqa: E402
from tl_hf.run.data.paths import DataError  # noqa: E402
from tl_hf.run.models import ModelLoadError  # noqa: E402
from tl_hf.run.data.image_transform import IMAGENET_MEAN, IMAGENET_STD, ImageTransform  # noqa: E402
from tl_hf.run.data.images import (BadImageWarning, ImageCollator, ImageDataConfig,  # noqa: E402
                                   load_image_classification)
from tl_hf.run.tasks.image_classification import image_stats, save_scratch_vit  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
HYMENOPTERA_CONFIG = REPO / "recipes" / "configs" / "hymenoptera_vit.yaml"
MNIST_CONFIG = REPO / "recipes" / "configs" / "mnist_vit.yaml"
HUB_ID = "google/vit-base-patch16-224-in21k"


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """On a shared 2-core machine, torch's 2 intra-op threads make these tiny models up to 50x slower (each parallel
    region waits for a descheduled thread); one thread is fast and changes no result this file checks."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_vit_dir(tmp_path_factory) -> Path:
    """ViTForImageClassification, 32x32 inputs, 8x8 patches, hidden 32, 2 layers; a ViTImageProcessor
    preprocessor_config.json (plain resize to 32, ImageNet mean/std)."""
    import torch
    import transformers as T

    out = tmp_path_factory.mktemp("tiny_vit")
    torch.manual_seed(0)
    cfg = T.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=37, num_labels=2)
    T.ViTForImageClassification(cfg).save_pretrained(out)
    T.ViTImageProcessorPil(size={"height": 32, "width": 32}, image_mean=list(IMAGENET_MEAN),
                           image_std=list(IMAGENET_STD)).save_pretrained(out)
    return out


def _draw(path: Path, color, size=(40, 30), mode="RGB", fmt=None, seed=0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    arr = np.clip(np.asarray(color, dtype=np.float64) + rng.normal(0, 25, (size[1], size[0], 3)), 0, 255)
    img = Image.fromarray(arr.astype(np.uint8), "RGB")
    if mode == "L":
        img = img.convert("L")
    elif mode == "P":
        img = img.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format=fmt)
    return path


@pytest.fixture
def image_folder(tmp_path) -> Path:
    """``train/{bees,ants}`` and ``val/{bees,ants}``: reddish ants, bluish bees, in PNG, JPEG, grayscale, a palette GIF,
    a file name with a space, a corrupt ``broken.jpg`` and a non-image ``notes.txt``."""
    root = tmp_path / "imgs"
    red, blue = (200, 60, 40), (40, 60, 200)
    for i in range(5):
        _draw(root / "train" / "ants" / f"a{i}.png", red, size=(30 + 7 * i, 40), seed=i)
        _draw(root / "train" / "bees" / f"b{i}.jpg", blue, size=(50, 25 + 5 * i), seed=10 + i)
    _draw(root / "train" / "ants" / "ant photos.jpg", red, seed=20)
    _draw(root / "train" / "ants" / "placeholder.gif", red, mode="P", fmt="GIF", seed=21)
    _draw(root / "train" / "bees" / "gray.png", blue, mode="L", seed=22)
    (root / "train" / "bees" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG" * 3)
    (root / "train" / "bees" / "notes.txt").write_text("not an image")
    for i in range(2):
        _draw(root / "val" / "ants" / f"va{i}.png", red, seed=30 + i)
        _draw(root / "val" / "bees" / f"vb{i}.png", blue, seed=40 + i)
    return root


def _cfg(tmp_path: Path, model_dir: Path, data: str, *, steps: int = 2, extra: str = "",
         model_extra: str = "") -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(f"""task: image_classification
model: {{name_or_path: {model_dir}{model_extra}}}
data: {data}
training:
  output_dir: {tmp_path / 'out'}
  max_steps: {steps}
  per_device_train_batch_size: 4
  per_device_eval_batch_size: 16
  learning_rate: 1e-3
  logging_steps: 1
  report_to: none
  disable_tqdm: true
  seed: 0
{extra}""", encoding="utf-8")
    return path


def _run(cfg: Path, *overrides) -> dict:
    from tl_hf.cli import main

    assert main(["run", str(cfg), *overrides]) == 0
    return json.loads((Path(load_config(cfg, list(overrides)).training["output_dir"]) / "all_results.json")
                      .read_text())


# ---------------------------------------------------------------------------------------------------------------------
# end to end
# ---------------------------------------------------------------------------------------------------------------------

def test_imagefolder_run_end_to_end(tmp_path, tiny_vit_dir, image_folder, capsys):
    cfg = _cfg(tmp_path, tiny_vit_dir, f"{{train_dir: {image_folder / 'train'}, eval_dir: {image_folder / 'val'}, "
                                       "image_size: 48, augment: true}", model_extra=", save_model: true")
    with pytest.warns(BadImageWarning, match=r"broken\.jpg"):
        res = _run(cfg)
    out = tmp_path / "out"
    for name in ("all_results.json", "confusion_matrix.png", "eval_predictions.jsonl", "learning_curve.png",
                 "run_config.json", "preprocessor_config.json", "config.json"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"
    # 7 ants (incl. the GIF and the name with a space) + 6 bees (incl. grayscale), broken.jpg skipped, notes.txt ignored
    assert res["train_samples"] == 13 and res["eval_samples"] == 4 and res["eval_split"] == "val"
    assert [Path(p).name for p in res["skipped_images"]] == ["broken.jpg"]
    assert res["image_size"] == [48, 48] and res["normalization"]["mean"] == list(IMAGENET_MEAN)
    assert sum(map(sum, res["confusion_matrix"])) == 4 and 0 <= res["eval_accuracy"] <= 1
    preds = [json.loads(x) for x in (out / "eval_predictions.jsonl").read_text().splitlines()]
    assert {p["label_name"] for p in preds} == {"ants", "bees"}
    saved = json.loads((out / "config.json").read_text())
    assert saved["id2label"] == {"0": "ants", "1": "bees"}
    proc = json.loads((out / "preprocessor_config.json").read_text())
    assert proc["size"] == {"height": 48, "width": 48} and proc["image_mean"] == list(IMAGENET_MEAN)
    assert "position embeddings are interpolated" in capsys.readouterr().out


def test_peft_lora_and_l2sp_on_vit(tmp_path, tiny_vit_dir, image_folder):
    cfg = _cfg(tmp_path, tiny_vit_dir, f"{{train_dir: {image_folder / 'train'}, eval_fraction: 0.25, "
                                       "on_bad_image: skip}",
               extra="peft: {enabled: true, r: 2}\nregularizers: [{name: l2sp, alpha: 0.1}]\n")
    with pytest.warns(BadImageWarning):
        res = _run(cfg)
    # held out 25% of the 14 listed files (13 readable); eval labels reach compute_metrics through a PeftModel
    assert res["train_samples"] + res["eval_samples"] == 13 and "eval_accuracy" in res
    assert "held-out 0.25" in res["eval_split"]


def test_real_hymenoptera_run(tmp_path, tiny_vit_dir):
    root = real_data_root("hymenoptera/hymenoptera_data")
    start = time.perf_counter()
    res = _run(_cfg(tmp_path, tiny_vit_dir, f"{{dataset: hymenoptera, root: {root}, image_size: 32, "
                                            "max_train_samples: 32, max_eval_samples: 16, augment: true}",
                    steps=3, extra="freezing: {policy: top_k, k: 1}\nllrd: {decay: 0.8}\n"))
    assert time.perf_counter() - start < 60
    assert res["train_samples"] == 32 and res["eval_samples"] == 16 and res["eval_split"] == "val"
    assert res["excluded_images"] == ["train/ants/imageNotFound.gif"] and res["skipped_images"] == []
    assert (tmp_path / "out" / "confusion_matrix.png").stat().st_size > 0


def test_hymenoptera_listing_gif_and_space_in_name():
    root = real_data_root("hymenoptera/hymenoptera_data")
    data = load_image_classification(ImageDataConfig(dataset="hymenoptera", root=str(root)), image_size=32)
    assert (len(data.train), len(data.eval), data.label_names) == (244, 153, ["ants", "bees"])
    names = [Path(p).name for p in data.train.paths]
    assert "ant photos.jpg" in names and "imageNotFound.gif" not in names
    i = names.index("ant photos.jpg")
    x = data.train[i]
    assert x["pixel_values"].shape == (3, 32, 32) and x["labels"] == 0
    # exclude: [] keeps the placeholder; the palette GIF becomes 3 channels
    keep = load_image_classification(ImageDataConfig(dataset="hymenoptera", root=str(root), exclude=[],
                                                     max_eval_samples=1), image_size=32)
    gif = [Path(p).name for p in keep.train.paths].index("imageNotFound.gif")
    assert len(keep.train) == 245 and keep.train[gif]["pixel_values"].shape == (3, 32, 32)


def test_real_mnist_run_with_the_recipe_config(tmp_path):
    root = real_data_root("mnist_t10k")
    model = save_scratch_vit(tmp_path / "vit_scratch", hidden_size=32, num_layers=2, num_heads=2,
                             intermediate_size=37)
    res = _run(MNIST_CONFIG, f"model.name_or_path={model}", f"data.root={root}", "max_train_samples=64",
               "max_eval_samples=32", "training.max_steps=2", f"training.output_dir={tmp_path / 'out'}",
               "training.disable_tqdm=true", "training.logging_steps=1")
    assert res["train_samples"] == 64 and res["eval_samples"] == 32
    assert "non-standard split" in res["eval_split"] and res["image_size"] == [28, 28]
    assert res["normalization"]["mean"] == [0.5, 0.5, 0.5]  # from save_scratch_vit's preprocessor_config.json


def test_mnist_split_is_seeded_disjoint_and_three_channel():
    root = str(real_data_root("mnist_t10k"))
    a = load_image_classification(ImageDataConfig(dataset="mnist", root=root), seed=1, image_size=32)
    assert (len(a.train), len(a.eval), a.label_names) == (8000, 2000, [str(d) for d in range(10)])
    assert not set(a.train.index.tolist()) & set(a.eval.index.tolist())
    assert set(a.eval.labels.tolist()) == set(range(10))
    b = load_image_classification(ImageDataConfig(dataset="mnist", root=root, max_train_samples=100,
                                                  eval_fraction=0.1), seed=1, image_size=32)
    b2 = load_image_classification(ImageDataConfig(dataset="mnist", root=root, max_train_samples=100,
                                                   eval_fraction=0.1), seed=1, image_size=32)
    assert (len(b.train), len(b.eval)) == (100, 1000) and b.train.index.tolist() == b2.train.index.tolist()
    x = a.train[0]["pixel_values"].numpy()
    assert x.shape == (3, 32, 32)
    raw = (x * np.asarray(IMAGENET_STD).reshape(3, 1, 1) + np.asarray(IMAGENET_MEAN).reshape(3, 1, 1))
    assert np.allclose(raw[0], raw[1], atol=1e-5) and np.allclose(raw[1], raw[2], atol=1e-5)  # gray -> 3 equal


# ---------------------------------------------------------------------------------------------------------------------
# bad images
# ---------------------------------------------------------------------------------------------------------------------

def test_on_bad_image_skip_vs_fail(image_folder):
    truncated = image_folder / "train" / "ants" / "truncated.jpg"
    _draw(truncated, (200, 60, 40), size=(64, 64), fmt="JPEG")
    truncated.write_bytes(truncated.read_bytes()[:300])  # valid header, cut-off data: only decoding finds it
    base = dict(train_dir=str(image_folder / "train"), eval_dir=str(image_folder / "val"))
    with pytest.raises(DataError, match=r"unreadable image in the training folder .*(broken|truncated)\.jpg"):
        load_image_classification(ImageDataConfig(**base, on_bad_image="fail"), image_size=16)
    with pytest.warns(BadImageWarning, match=r"skipped 2 unreadable image file\(s\).*(broken\.jpg.*truncated\.jpg|"
                                             r"truncated\.jpg.*broken\.jpg)"):
        data = load_image_classification(ImageDataConfig(**base, on_bad_image="skip"), image_size=16)
    assert len(data.train) == 13 and {Path(p).name for p, _ in data.skipped} == {"broken.jpg", "truncated.jpg"}
    # without the verification pass, the bad file stops the run when it is read, naming it
    lazy = load_image_classification(ImageDataConfig(**base, verify_images=False), image_size=16)
    bad = [Path(p).name for p in lazy.train.paths].index("broken.jpg")
    with pytest.raises(DataError, match=r"cannot read image .*broken\.jpg"):
        lazy.train[bad]


# ---------------------------------------------------------------------------------------------------------------------
# preprocessing
# ---------------------------------------------------------------------------------------------------------------------

def _photo(w=90, h=60):
    from PIL import Image

    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8))


def test_augmentation_is_seeded_and_shapes_hold():
    import torch

    tf = ImageTransform(32, augment=True)
    img = _photo()

    def draw(seed):
        torch.manual_seed(seed)
        return [tf(img) for _ in range(4)]

    a, b, c = draw(0), draw(0), draw(1)
    assert all(x.shape == (3, 32, 32) and x.dtype == np.float32 for x in a)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))  # same seed, same crops and flips
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
    assert not np.array_equal(a[0], a[1])  # a new crop per call
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert np.array_equal(tf(img, g1), tf(img, g2))
    for _ in range(200):  # torchvision's RandomResizedCrop bounds
        left, top, right, bottom = tf.crop_box(90, 60)
        assert 0 <= left < right <= 90 and 0 <= top < bottom <= 60
        assert (right - left) * (bottom - top) >= 0.08 * 90 * 60 * 0.9
    # a flip of a left/right gradient shows up as a reversed ramp in about half the draws
    ramp = _ramp()
    flips = [np.asarray(ImageTransform(16, augment=True, scale=(1.0, 1.0), ratio=(1.5, 1.5))(ramp))[0, 8, 0] > 0
             for _ in range(40)]
    assert 5 < sum(flips) < 35
    plain = ImageTransform(32)  # no augmentation: independent of the RNG
    torch.manual_seed(3)
    p1 = plain(img)
    torch.manual_seed(4)
    assert np.array_equal(p1, plain(img))


def _ramp():
    from PIL import Image

    row = np.linspace(0, 255, 60).astype(np.uint8)
    return Image.fromarray(np.repeat(np.stack([row] * 3, -1)[None], 40, 0), "RGB")


def test_eval_preprocessing_matches_vit_image_processor():
    from transformers import ViTImageProcessorPil as proc_cls  # transformers >= 5.24 (pyproject) has it
    img = _photo(70, 45)
    ref = proc_cls(size={"height": 32, "width": 32}, image_mean=list(IMAGENET_MEAN), image_std=list(IMAGENET_STD))(
        images=img, return_tensors="np")["pixel_values"][0]
    assert np.allclose(ImageTransform(32)(img), ref, atol=1e-5)


def test_normalisation_from_processor_config_defaults_and_overrides(tmp_path, tiny_vit_dir):
    import shutil

    from PIL import Image

    white, gray = Image.new("RGB", (20, 20), (255, 255, 255)), Image.new("L", (20, 20), 0)
    with_proc = tmp_path / "vit_proc"
    shutil.copytree(tiny_vit_dir, with_proc)
    (with_proc / "preprocessor_config.json").unlink()
    mean, std, source, _ = image_stats(str(with_proc))  # no preprocessor_config.json: ImageNet statistics
    assert (mean, std) == (list(IMAGENET_MEAN), list(IMAGENET_STD)) and "ImageNet" in source
    x = ImageTransform(8, mean, std)(white)
    assert np.allclose(x[:, 0, 0], (1 - np.asarray(IMAGENET_MEAN)) / np.asarray(IMAGENET_STD), atol=1e-6)
    (with_proc / "preprocessor_config.json").write_text(json.dumps(
        {"image_processor_type": "ViTImageProcessor", "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
         "size": {"height": 32, "width": 32}}))
    mean, std, source, size = image_stats(str(with_proc))
    assert (mean, std, size) == ([0.5] * 3, [0.5] * 3, {"height": 32, "width": 32})
    assert source.endswith("preprocessor_config.json")
    tf = ImageTransform(8, mean, std)
    assert np.allclose(tf(white), 1.0) and np.allclose(tf(gray), -1.0) and tf(gray).shape == (3, 8, 8)
    (with_proc / "preprocessor_config.json").write_text(json.dumps({"do_normalize": False}))
    assert image_stats(str(with_proc))[:2] == ([0.0] * 3, [1.0] * 3)


def test_data_image_mean_override_and_collator(tmp_path, tiny_vit_dir, image_folder):
    from tl_hf.run.tasks.image_classification import run_image_classification  # noqa: F401  (registered task)

    cfg = load_config(_cfg(tmp_path, tiny_vit_dir, f"{{train_dir: {image_folder / 'train'}, image_mean: [0.0], "
                                                   "image_std: [1.0], exclude: ['*.jpg']}"))
    assert cfg.data.image_mean == [0.0] and cfg.data.exclude == ["*.jpg"]
    data = load_image_classification(cfg.data, image_size=16, mean=[0.0] * 3, std=[1.0] * 3)
    assert all(not p.endswith(".jpg") for p in data.train.paths) and not data.skipped and data.eval is None
    assert len(data.excluded) == 7  # 5 bees, 'ant photos.jpg' and broken.jpg (excluded before it is ever read)
    x = data.train[0]["pixel_values"]
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    batch = ImageCollator(True)([data.train[0], data.train[1]])
    assert batch["pixel_values"].shape == (2, 3, 16, 16) and batch["labels"].dtype.is_floating_point is False
    assert batch["interpolate_pos_encoding"] is True and "interpolate_pos_encoding" not in ImageCollator()(
        [data.train[0]])


# ---------------------------------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------------------------------

def _load(**kw):
    return load_image_classification(ImageDataConfig(**kw), image_size=16)


def test_data_errors_name_the_problem(tmp_path, image_folder):
    missing = tmp_path / "nope" / "train"
    with pytest.raises(DataError, match=f"data.train_dir not found: {missing}"):
        _load(train_dir=str(missing))
    with pytest.raises(DataError, match=r"dataset folder not found: .*empty_root.hymenoptera.hymenoptera_data"):
        (tmp_path / "empty_root").mkdir()
        _load(dataset="hymenoptera", root=str(tmp_path / "empty_root"))
    with pytest.raises(DataError, match=r"dataset folder not found or incomplete: .*empty_root.mnist_t10k"):
        _load(dataset="mnist", root=str(tmp_path / "empty_root"))
    flat = tmp_path / "flat"
    _draw(flat / "x.png", (1, 2, 3))
    with pytest.raises(DataError, match=rf"{flat} has no class subfolders: expected .*<class name>/<image> \(found 1"):
        _load(train_dir=str(flat))
    empty_val = tmp_path / "empty_val"
    (empty_val / "ants").mkdir(parents=True)
    with pytest.raises(DataError, match=rf"evaluation folder {empty_val} has no image files \(empty split\)"):
        _load(train_dir=str(image_folder / "train"), eval_dir=str(empty_val))
    (image_folder / "train" / "wasps").mkdir()
    with pytest.raises(DataError, match=r"class folder .*wasps of the training folder has no image files"):
        _load(train_dir=str(image_folder / "train"))
    (image_folder / "train" / "wasps").rmdir()
    _draw(image_folder / "val" / "wasps" / "w.png", (9, 9, 9))
    with pytest.raises(DataError, match=r"classes that are not in the training classes \(ants, bees\): wasps"):
        _load(train_dir=str(image_folder / "train"), eval_dir=str(image_folder / "val"))
    one = tmp_path / "one"
    _draw(one / "ants" / "a.png", (1, 2, 3))
    with pytest.raises(DataError, match="only one class subfolder"):
        _load(train_dir=str(one))
    all_bad = tmp_path / "all_bad"
    for cls in ("a", "b"):
        (all_bad / cls).mkdir(parents=True)
        (all_bad / cls / "x.png").write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"has no readable images: all 2 file\(s\) are unreadable, e\.g\. .*x\.png"):
        _load(train_dir=str(all_bad))


@pytest.mark.parametrize("override,match", [
    ("data.dataset=hymenopter", r"unknown image dataset 'hymenopter'; did you mean 'hymenoptera'"),
    ("data.on_bad_image=ignore", r"data.on_bad_image must be one of skip, fail"),
    ("data.eval_fraction=1.5", r"data.eval_fraction must be in \(0, 1\)"),
    ("data.image_mean=[0.5,0.5,0.5]", r"image_mean and data.image_std must be set together"),
    ("data.image_size=2", r"data.image_size must be >= 4"),
    ("data.max_train_samples=0", r"data.max_train_samples must be >= 1"),
    ("data.max_length=64", r"unknown config key 'data.max_length'"),
])
def test_config_errors(tmp_path, tiny_vit_dir, override, match):
    cfg = _cfg(tmp_path, tiny_vit_dir, "{dataset: hymenoptera}")
    with pytest.raises(ConfigError, match=match):
        load_config(cfg, [override])


def test_config_needs_a_data_source(tmp_path, tiny_vit_dir):
    with pytest.raises(ConfigError, match=r"set data.dataset \(built-in: hymenoptera, mnist\) or data.train_dir"):
        load_config(_cfg(tmp_path, tiny_vit_dir, "{}"))
    with pytest.raises(ConfigError, match="either data.dataset or data.train_dir"):
        load_config(_cfg(tmp_path, tiny_vit_dir, "{dataset: mnist, train_dir: x}"))
    with pytest.raises(ConfigError, match="data.eval_dir needs data.train_dir"):
        load_config(_cfg(tmp_path, tiny_vit_dir, "{eval_dir: x}"))


def test_model_errors_are_one_line(tmp_path, tiny_vit_dir, image_folder, capsys):
    import transformers as T

    from tl_hf.cli import main

    (image_folder / "train" / "bees" / "broken.jpg").unlink()
    cfg = _cfg(tmp_path, tiny_vit_dir, f"{{train_dir: {image_folder / 'train'}}}")
    (tmp_path / "not_a_model").mkdir()
    bert = tmp_path / "bert"
    T.BertConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1, num_attention_heads=1,
                 intermediate_size=8).save_pretrained(bert)
    for path, match in ((tmp_path / "not_a_model", "has no config.json"),
                        (tmp_path / "missing_model", "model directory not found"),
                        (bert, "model_type 'bert'.* is not an image-classification model")):
        assert main(["run", str(cfg), f"model.name_or_path={path}"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and re.search(match, err), err
    with pytest.raises(ConfigError, match=r"model.num_labels=2 but the data has 3 labels"):
        _draw(image_folder / "train" / "wasps" / "w.png", (9, 9, 9))
        from tl_hf.run.tasks.image_classification import run_image_classification

        run_image_classification(load_config(cfg, ["model.num_labels=2"]), log=lambda *_: None)


def test_offline_hub_id_fails_fast_with_a_clear_message(tmp_path, capsys, monkeypatch):
    from tl_hf.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    rc = main(["run", str(HYMENOPTERA_CONFIG), f"training.output_dir={tmp_path / 'out'}"])
    elapsed = time.perf_counter() - start
    err = capsys.readouterr().err
    assert rc == 2 and elapsed < 5, (rc, elapsed)
    assert f"model '{HUB_ID}' is not a local directory and not in the Hugging Face cache" in err
    assert "HF_HUB_OFFLINE=1" in err and "model.name_or_path=/path/to/vit" in err and "MiniLM" not in err
    assert not (tmp_path / "out").exists()
    with pytest.raises(ModelLoadError):
        from tl_hf.run.tasks.image_classification import _load_model_config

        _load_model_config(HUB_ID)


# ---------------------------------------------------------------------------------------------------------------------
# configs and the recipe script
# ---------------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", [HYMENOPTERA_CONFIG, MNIST_CONFIG])
def test_recipe_configs_load_and_state_their_command(path):
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith(f"# Run: tl-hf run recipes/configs/{path.name}")
    cfg = load_config(path)
    assert cfg.task == "image_classification" and isinstance(cfg.data, ImageDataConfig)
    assert cfg.data.dataset == ("hymenoptera" if "hymenoptera" in path.name else "mnist")


def test_recipe_script_checks_the_task(tmp_path, monkeypatch, capsys):
    script = str(REPO / "recipes" / "image_classification.py")
    for argv, match in (([str(REPO / "recipes" / "configs" / "sst2_minilm_llrd.yaml")],
                         "has task None; this recipe runs task: image_classification"),
                        ([str(HYMENOPTERA_CONFIG), f"training.output_dir={tmp_path / 'o'}"],
                         "HF_HUB_OFFLINE=1 forbids downloading it")):
        monkeypatch.setattr(sys, "argv", [script, *argv])
        with pytest.raises(SystemExit) as exc:
            runpy.run_path(script, run_name="__main__")
        assert exc.value.code == 2
        assert match in capsys.readouterr().err
