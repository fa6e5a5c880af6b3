"""Image classification (ViT family, DINOv2, CNNs such as MobileNetV2): the library side of
``recipes/image_classification.py`` and of ``tl-hf run`` for ``task: image_classification``. The data side (``data``
section, datasets) is :mod:`tl_hf.run.data.images`, the pixel pipeline :mod:`tl_hf.run.data.image_pipeline`.

The eval transform is the model's own image processor (``preprocessor_config.json``: resize, crop, mean / std), with
``data.image_mean`` / ``data.image_std`` / ``data.image_size`` on top; a model folder without that file needs
``data.image_mean`` / ``data.image_std``. The model is ``AutoModelForImageClassification`` with a new head for the
data's labels (logged). An input size other than the config's ``image_size`` interpolates the position embeddings.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from tl_hf._errors import ConfigError, one_line
from tl_hf._hub_access import offline as _offline
from tl_hf.run.data.image_pipeline import ProcessorTransform, check_images, describe, eval_processor, train_transform
from tl_hf.run.data.image_transform import IMAGENET_MEAN, IMAGENET_STD, per_channel
from tl_hf.run.data.images import ImageCollator, ImageDataConfig, load_image_classification
from tl_hf.run.models import BUNDLED_ALIASES, ModelLoadError, _from_pretrained, resolve_model_path
from tl_hf.run.sections import RunConfig
from tl_hf.run.tasks.registry import register_task
from tl_hf.run.template import Built, ClassificationTask, check_num_labels, run_classification

__all__ = ["image_stats", "run_image_classification", "save_scratch_vit"]


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


def _processor_path(name: str) -> str | None:
    """The model's ``preprocessor_config.json`` (a local directory, or the HF cache / Hub for an id), else None."""
    location, local = resolve_model_path(name)
    if local:
        p = Path(location) / "preprocessor_config.json"
        return str(p) if p.is_file() else None
    try:
        from huggingface_hub import hf_hub_download, try_to_load_from_cache

        cached = try_to_load_from_cache(location, "preprocessor_config.json")
        path = cached if isinstance(cached, str) else None
        if path is None and not _offline():
            path = hf_hub_download(location, "preprocessor_config.json")
        return path
    except Exception:  # noqa: BLE001 - no processor config
        return None


def image_stats(name: str) -> tuple[list[float], list[float], str, Any]:
    """``(mean, std, source, size)`` from the model's ``preprocessor_config.json``, else the ImageNet statistics (a
    run refuses that case: :func:`tl_hf.run.data.image_pipeline.eval_processor`). ``size`` is the processor's size
    entry or None."""
    path = _processor_path(name)
    if path is not None:
        try:
            with open(path, encoding="utf-8") as fh:
                proc = json.load(fh)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"cannot read {path}: {one_line(exc)}") from None
        if proc.get("do_normalize", True) is False:
            return [0.0] * 3, [1.0] * 3, f"{path} (do_normalize false)", proc.get("size")
        if proc.get("image_mean") is not None and proc.get("image_std") is not None:
            return per_channel(proc["image_mean"]), per_channel(proc["image_std"]), path, proc.get("size")
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
    _write_processor_config(os.fspath(out_dir), (image_size, image_size), per_channel(mean), per_channel(std))
    return os.fspath(out_dir)


# ---------------------------------------------------------------------------------------------------------------------
# Recipe
# ---------------------------------------------------------------------------------------------------------------------

#: model types whose embeddings always interpolate the position grid to the input (no forward flag)
ALWAYS_INTERPOLATES = ("dinov2", "dinov2_with_registers")


def _position_kind(config) -> str | None:
    """How the model handles an input size other than its config's: ``"flag"`` (forward takes
    ``interpolate_pos_encoding``), ``"always"`` (DINOv2), ``"fixed"`` (patches, no interpolation) or None (no
    position embeddings: a CNN)."""
    import inspect

    import transformers
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES

    if config.model_type in ALWAYS_INTERPOLATES:
        return "always"
    cls = getattr(transformers, str(MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES.get(config.model_type)), None)
    if cls is not None and "interpolate_pos_encoding" in inspect.signature(cls.forward).parameters:
        return "flag"
    return None if getattr(config, "patch_size", None) is None else "fixed"


def _check(cfg: RunConfig, args):
    """The model config (fails fast: not a model, not an image model, an offline Hub id, a ViT-only key on a CNN)."""
    if not isinstance(cfg.data, ImageDataConfig):
        raise ConfigError(f"task image_classification needs an image data section, got {type(cfg.data).__name__}")
    args.label_names = args.label_names or ["labels"]  # a PeftModel's forward(*args, **kwargs) hides `labels`
    config = _load_model_config(cfg.model.name_or_path)
    if cfg.data.interpolate_pos_encoding is not None and _position_kind(config) is None:
        raise ConfigError(f"data.interpolate_pos_encoding is a ViT-family option (position embeddings), but "
                          f"{cfg.model.name_or_path!r} is a {config.model_type} model without them: remove the key")
    return config


def _position_plan(cfg: RunConfig, config, size, model_size, log) -> bool:
    """Whether the collator passes ``interpolate_pos_encoding=True``; logs (or refuses) an input size that differs
    from the model's config."""
    kind, want = _position_kind(config), cfg.data.interpolate_pos_encoding
    if kind is None or model_size is None or tuple(size) == tuple(model_size):
        return bool(want) and kind == "flag"
    differs = f"the input {size[0]}x{size[1]} differs from the model's image_size {model_size[0]}x{model_size[1]}"
    if want is False or kind == "fixed":
        raise ConfigError(f"{differs} and " + ("data.interpolate_pos_encoding is false" if want is False else
                          f"{config.model_type} cannot interpolate its position embeddings")
                          + f": set data.image_size={model_size[0]}" + ("" if kind == "fixed" else
                                                                        " or drop data.interpolate_pos_encoding"))
    log(f"{differs}: the position embeddings are interpolated (bicubic) to the "
        f"{size[0] // _patch(config)}x{size[1] // _patch(config)} patch grid"
        + (" (DINOv2 always does)" if kind == "always" else ""))
    return kind == "flag"


def _patch(config) -> int:
    p = getattr(config, "patch_size", None)
    return int(p[0] if isinstance(p, (list, tuple)) else p) if p else 1


def _load_model(cfg: RunConfig, names: list[str], log):
    """``...ForImageClassification`` with a new head for ``names``; logs which head parameters are new."""
    from transformers import AutoModelForImageClassification

    model, info = _from_pretrained(AutoModelForImageClassification, cfg.model.name_or_path, "model",
                                   trust_remote_code=cfg.model.trust_remote_code, num_labels=len(names),
                                   id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)},
                                   ignore_mismatched_sizes=True, output_loading_info=True)
    mismatched = [f"{k[0]} {tuple(k[1])} -> {tuple(k[2])}" if isinstance(k, (list, tuple)) and len(k) == 3
                  else str(k) for k in (info.get("mismatched_keys") or [])]
    missing = sorted(info.get("missing_keys") or [])
    if mismatched:
        log(f"new head for {len(names)} labels: replaced the checkpoint's {', '.join(mismatched)} "
            "(ignore_mismatched_sizes), randomly initialised")
    if missing:
        log(f"new head for {len(names)} labels: {', '.join(missing[:6])}{' ...' if len(missing) > 6 else ''} "
            "randomly initialised (not in the checkpoint)")
    return model


def _build(cfg: RunConfig, args, config, log) -> Built:
    dcfg: ImageDataConfig = cfg.data
    proc_path = _processor_path(cfg.model.name_or_path)
    if proc_path is not None:  # an unreadable / unknown preprocessor_config.json is a one-line error
        image_stats(cfg.model.name_or_path)
    try:
        proc = eval_processor(os.path.dirname(proc_path) if proc_path else None, mean=dcfg.image_mean,
                              std=dcfg.image_std, image_size=dcfg.image_size,
                              model_size=_config_image_size(config, None), model_name=cfg.model.name_or_path)
    except (OSError, ValueError, KeyError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ModelLoadError(f"cannot load the image processor from {proc_path}: {one_line(exc)}") from None
    eval_tf = ProcessorTransform(proc)
    size = eval_tf.size
    train_tf, augmentation = train_transform(eval_tf, augment=dcfg.augment,
                                             scale=dcfg.augment_scale or (0.08, 1.0))
    stats_from = "data.image_mean/std" if dcfg.image_mean is not None else proc_path
    mean, std = list(proc.image_mean), list(proc.image_std)
    log(f"eval transform: {describe(proc)}; training augmentation: {augmentation}")

    interpolate = _position_plan(cfg, config, size, _config_image_size(config, None), log)
    data = load_image_classification(dcfg, seed=args.seed, image_size=size, log=log, train_tf=train_tf,
                                     eval_tf=eval_tf)
    checked = check_images([data.train, data.eval], input_size=size,
                           patch_size=_patch(config) if _position_kind(config) else None,
                           convert_grayscale=dcfg.convert_grayscale, log=log)
    names = check_num_labels(cfg, data.label_names)
    model = _load_model(cfg, names, log)
    n_eval = len(data.eval) if data.eval is not None else 0
    upscaled = checked.get("upscaled_from")
    return Built(
        model=model, train_dataset=data.train, eval_dataset=data.eval, label_names=names,
        data_collator=ImageCollator(interpolate),
        dataset_name=dcfg.dataset or os.path.basename(os.path.normpath(str(dcfg.train_dir))),
        summary=f"images {size[0]}x{size[1]}" + (f" (upscaled from {upscaled[0]}x{upscaled[1]})" if upscaled else "")
                + f", mean/std from {stats_from}, augment {dcfg.augment}; train {len(data.train):,} images "
                  f"({data.sources.get('train')}), eval {n_eval:,} ({data.sources.get('eval')})",
        results={"eval_split": data.sources.get("eval_split") if data.eval is not None else None,
                 "image_size": list(size), "normalization": {"mean": mean, "std": std, "source": stats_from},
                 "eval_transform": describe(proc), "train_augmentation": augmentation, **checked,
                 "skipped_images": [p for p, _ in data.skipped], "excluded_images": data.excluded},
        # so the saved model reloads with the same inputs
        save_extras=lambda out: proc.save_pretrained(out))


IMAGE_CLASSIFICATION = ClassificationTask(check=_check, build=_build, peft_task_type=None)


def run_image_classification(cfg: RunConfig, *, log=print) -> dict[str, Any]:
    """Fine-tune and evaluate an image classifier (ViT family) as ``cfg`` says; writes ``all_results.json``, eval
    predictions, a confusion matrix, a learning curve and the LR per layer group under ``training.output_dir``."""
    return run_classification(cfg, IMAGE_CLASSIFICATION, log=log)


register_task("image_classification", ImageDataConfig, run_image_classification,
              "image classification with a ViT-family or CNN model (imagefolder, hymenoptera, MNIST)")
