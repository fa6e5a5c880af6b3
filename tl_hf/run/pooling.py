"""``model.pooling`` of a run: which pooling the classification head reads (:mod:`tl_hf.core.pooling`).

``auto`` (default): a model saved by tl_hf with mean pooling gets it back; a sentence-transformers model folder whose
pooling config says mean (the bundled all-MiniLM-L6-v2) gets mean pooling when the head trains on the frozen backbone
-- ``freezing.policy: feature_extraction`` (also when ``strategy: auto`` chose it) or a gradual schedule whose first
phase is the head only (LP-FT: both phases then read the mean, the head is probed on it); otherwise the model's own
pooler. ``mean`` forces mean pooling, ``cls`` keeps the model's pooler."""

from __future__ import annotations

import os
from typing import Callable

from tl_hf._errors import ConfigError

__all__ = ["apply_run_pooling", "head_only_first"]


def head_only_first(freezing, lmap) -> bool:
    """Whether ``freezing`` trains only the head at first (feature extraction, or LP-FT's linear-probe phase)."""
    if freezing.policy == "feature_extraction":
        return True
    if freezing.policy == "gradual" and freezing.schedule is not None:
        phases = freezing.schedule.resolve(lmap)
        return bool(phases) and set(phases[0][1]) == {lmap.head_depth}
    return False


def apply_run_pooling(cfg, model, freezing, lmap, log: Callable = print) -> str | None:
    """Apply ``cfg.model.pooling`` to ``model`` (before the trainer is built); returns the sentence for the log and
    the model card, or None when the model's own pooler stays."""
    from tl_hf.core.pooling import apply_mean_pooling, restore_pooling, sentence_transformers_pooling
    from tl_hf.run.models import resolve_model_path

    mode = cfg.model.pooling
    if mode == "cls":
        return None
    try:
        if restore_pooling(model):
            note = "mean pooling of the last hidden states (recorded in the saved model's config: tl_hf_pooling)"
            log(f"pooling: {note}")
            return note
        if mode == "mean":
            apply_mean_pooling(model)
            note = "mean pooling of the last hidden states (model.pooling: mean)"
            log(f"pooling: {note}")
            return note
    except ValueError as exc:
        raise ConfigError(f"model.pooling={mode}: {exc}") from None
    location, local = resolve_model_path(cfg.model.name_or_path)
    st_mode, path = sentence_transformers_pooling(location) if local else (None, None)
    path = os.path.relpath(path, location) if path else path  # "1_Pooling/config.json" (the log and the card)
    if st_mode != "mean" or not head_only_first(freezing, lmap):
        if st_mode == "mean":
            log(f"pooling: the model's own pooler ([CLS]); {path} says the backbone was trained with mean pooling, "
                "used by default only when the head trains on the frozen backbone (feature extraction, LP-FT); "
                "model.pooling: mean forces it")
        return None
    try:
        apply_mean_pooling(model)
    except ValueError:
        return None  # a pooling config on a model whose head reads no pooler: keep the model as it is
    note = (f"mean pooling of the last hidden states, as the backbone was trained ({path}: pooling_mode_mean_tokens), "
            f"the default for freezing.policy {freezing.policy} with the head trained on the frozen backbone "
            "(model.pooling: cls keeps the [CLS] pooler)")
    log(f"pooling: {note}")
    return note
