"""The pooling a backbone was trained with, for its classification head.

A sentence-transformers checkpoint (all-MiniLM-L6-v2 and its kin) was trained on the *masked mean* of its last hidden
states (its folder's ``modules.json`` names a ``Pooling`` module whose ``config.json`` says
``pooling_mode_mean_tokens: true``). ``AutoModelForSequenceClassification`` instead feeds the head BERT's pooler on
[CLS] (dense + tanh), which such a model never trained. :func:`apply_mean_pooling` replaces the base model's
``pooler`` with :class:`MeanPooler` (no parameters: the mean over the positions where ``attention_mask`` is 1), so the
model's own forward, loss and head run unchanged on the pooling the backbone was trained for.

The choice is recorded in the model's config (``tl_hf_pooling: mean``) and so in the saved ``config.json``;
:func:`restore_pooling` re-applies it after ``from_pretrained`` (tl_hf's runs do it by themselves). A plain
``transformers`` load of such a model gives a freshly initialised [CLS] pooler instead, so call it yourself.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn as nn

__all__ = ["CONFIG_KEY", "LOAD_NOTE", "MeanPooler", "apply_mean_pooling", "restore_pooling",
           "sentence_transformers_pooling"]

#: the model-config attribute recording the pooling (saved in config.json)
CONFIG_KEY = "tl_hf_pooling"
#: how to load a mean-pooled model (the model card says it)
LOAD_NOTE = ("to load it, call `tl_hf.core.pooling.restore_pooling(model)` after `from_pretrained`: a plain "
             "transformers load gives the head an untrained [CLS] pooler instead")
_MODES = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max",
          "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len"}


def sentence_transformers_pooling(folder: str | Path) -> tuple[str | None, str | None]:
    """``(mode, file)`` from a sentence-transformers model folder (``modules.json`` -> its ``Pooling`` module's
    ``config.json``): ``mean``, ``cls``, ``max``, ``mean_sqrt_len`` (several: joined with ``+``); ``(None, None)``
    when the folder has no pooling config."""
    folder = Path(folder)
    try:
        modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None, None
    for m in modules if isinstance(modules, list) else []:
        if isinstance(m, dict) and str(m.get("type", "")).endswith("Pooling"):
            path = folder / str(m.get("path", "")) / "config.json"
            try:
                conf = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                return None, None
            modes = [mode for key, mode in _MODES.items() if conf.get(key)]
            return ("+".join(modes) or None), str(path)
    return None, None


class MeanPooler(nn.Module):
    """The masked mean of the last hidden states; stands in for a BERT-style ``pooler`` (called with the hidden states
    only: the attention mask comes from the base model's call, recorded by a pre-hook)."""

    def __init__(self) -> None:
        super().__init__()
        self.mask: torch.Tensor | None = None

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        mask = self.mask
        self.mask = None
        if mask is None or mask.shape != hidden_states.shape[:2]:
            return hidden_states.mean(dim=1)
        m = mask.to(hidden_states.dtype).unsqueeze(-1)
        return (hidden_states * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)


def _record_mask(module, args, kwargs) -> None:
    """Forward pre-hook of the base model: hand the call's attention mask to its :class:`MeanPooler` (looked up on
    ``module`` at call time, so a deep copy of the model pools with its own pooler)."""
    pooler = getattr(module, "pooler", None)
    if not isinstance(pooler, MeanPooler):
        return
    mask = kwargs.get("attention_mask")
    if mask is None and len(args) > 1 and isinstance(args[1], torch.Tensor):
        mask = args[1]  # BertModel.forward(input_ids, attention_mask, ...)
    pooler.mask = mask if isinstance(mask, torch.Tensor) and mask.dim() == 2 else None


def apply_mean_pooling(model: nn.Module) -> None:
    """Replace ``model``'s base-model pooler with :class:`MeanPooler` (in place) and record ``tl_hf_pooling: mean``
    in its config. ``ValueError`` when the model has no such pooler (e.g. ViT classifiers, DistilBERT)."""
    base = getattr(model, "base_model", model)
    if isinstance(getattr(base, "pooler", None), MeanPooler):
        return
    if not isinstance(getattr(base, "pooler", None), nn.Module):
        raise ValueError(f"mean pooling needs a BERT-style base model with a pooler module that the head reads "
                         f"({type(model).__name__} has none); set model.pooling: cls")
    pooler = MeanPooler()
    base.pooler = pooler
    base.register_forward_pre_hook(_record_mask, with_kwargs=True)
    if getattr(model, "config", None) is not None:
        setattr(model.config, CONFIG_KEY, "mean")


def restore_pooling(model: nn.Module) -> bool:
    """Re-apply the pooling a saved tl_hf model recorded (``config.tl_hf_pooling``); True when it did."""
    if getattr(getattr(model, "config", None), CONFIG_KEY, None) == "mean":
        apply_mean_pooling(model)
        return True
    return False
