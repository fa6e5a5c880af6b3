"""Image classification (ViT family): the library side of ``recipes/image_classification.py`` and of ``tl-hf run``
for ``task: image_classification``. The data side (``data`` section, datasets, preprocessing) is
:mod:`tl_hf.run.data.images`.

``mean`` / ``std`` come from ``data.image_mean`` / ``data.image_std``, else the model's ``preprocessor_config.json``,
else the ImageNet statistics.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from tl_hf._errors import ConfigError, one_line
from tl_hf._hub_access import offline as _offline
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

def _check(cfg: RunConfig, args):
    """The model config (fails fast: not a model, not an image model, an offline Hub id)."""
    if not isinstance(cfg.data, ImageDataConfig):
        raise ConfigError(f"task image_classification needs an image data section, got {type(cfg.data).__name__}")
    args.label_names = args.label_names or ["labels"]  # a PeftModel's forward(*args, **kwargs) hides `labels`
    return _load_model_config(cfg.model.name_or_path)


def _build(cfg: RunConfig, args, config, log) -> Built:
    import inspect

    from transformers import AutoModelForImageClassification

    dcfg: ImageDataConfig = cfg.data
    if dcfg.image_mean is not None:
        mean, std, stats_from = per_channel(dcfg.image_mean), per_channel(dcfg.image_std), "data.image_mean/std"
        proc_size = None
    else:
        mean, std, stats_from, proc_size = image_stats(cfg.model.name_or_path)
    model_size = _config_image_size(config, proc_size)
    size = (dcfg.image_size, dcfg.image_size) if dcfg.image_size else (model_size or (224, 224))

    data = load_image_classification(dcfg, seed=args.seed, image_size=size, mean=mean, std=std, log=log)
    names = check_num_labels(cfg, data.label_names)
    model = _from_pretrained(AutoModelForImageClassification, cfg.model.name_or_path, "model",
                             trust_remote_code=cfg.model.trust_remote_code, num_labels=len(names),
                             id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)},
                             ignore_mismatched_sizes=True)
    interpolate = False
    if model_size is not None and tuple(size) != tuple(model_size):
        if "interpolate_pos_encoding" in inspect.signature(model.forward).parameters:
            interpolate = True
            log(f"image_size {size[0]}x{size[1]} differs from the model's {model_size[0]}x{model_size[1]}: the "
                "position embeddings are interpolated")
        else:
            log(f"warning: image_size {size[0]}x{size[1]} differs from the model's {model_size[0]}x{model_size[1]} "
                f"and {type(model).__name__} has no interpolate_pos_encoding")
    n_eval = len(data.eval) if data.eval is not None else 0
    return Built(
        model=model, train_dataset=data.train, eval_dataset=data.eval, label_names=names,
        data_collator=ImageCollator(interpolate),
        dataset_name=dcfg.dataset or os.path.basename(os.path.normpath(str(dcfg.train_dir))),
        summary=f"images {size[0]}x{size[1]}, mean/std from {stats_from}, augment {dcfg.augment}; train "
                f"{len(data.train):,} images ({data.sources.get('train')}), eval {n_eval:,} "
                f"({data.sources.get('eval')})",
        results={"eval_split": data.sources.get("eval_split") if data.eval is not None else None,
                 "image_size": list(size), "normalization": {"mean": mean, "std": std, "source": stats_from},
                 "skipped_images": [p for p, _ in data.skipped], "excluded_images": data.excluded},
        # so the saved model reloads with the same inputs
        save_extras=lambda out: _write_processor_config(out, size, mean, std))


IMAGE_CLASSIFICATION = ClassificationTask(check=_check, build=_build, peft_task_type=None)


def run_image_classification(cfg: RunConfig, *, log=print) -> dict[str, Any]:
    """Fine-tune and evaluate an image classifier (ViT family) as ``cfg`` says; writes ``all_results.json``, eval
    predictions, a confusion matrix, a learning curve and the LR per layer group under ``training.output_dir``."""
    return run_classification(cfg, IMAGE_CLASSIFICATION, log=log)


register_task("image_classification", ImageDataConfig, run_image_classification,
              "image classification with a ViT-family model (imagefolder, hymenoptera, MNIST)")
