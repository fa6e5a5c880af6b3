"""``strategy: auto``: the usual decision guide for how much of a pretrained model to fine-tune.

Very small labelled sets (under ``small_max``, ~100) overfit a fine-tuned backbone: extract features (frozen backbone,
train the head). Medium sets (up to ``medium_max``, ~10k) fine-tune the top blocks with layer-wise LR decay. Large
sets fine-tune everything (still with LLRD). With ``cache_features`` the feature-extraction choice caches the frozen
backbone's outputs, so the head trains as a small classifier on fixed features (cheap enough for many epochs). A
stated domain shift from the pretraining data moves the choice one step towards unfreezing more (Yosinski et al.
2014, https://arxiv.org/abs/1411.1792; Howard & Ruder 2018, https://arxiv.org/abs/1801.06146; Peters et al. 2019,
https://arxiv.org/abs/1903.05987).

An example is what the task's training set holds: a text (classification), a sentence (token classification: its
words are not counted, so the choice is the cautious one) or a QA window.
"""

from __future__ import annotations

from tl_hf.core.freezing import FreezingConfig
from tl_hf.core.optim import LLRDConfig

__all__ = ["choose_strategy"]

_LEVELS = ("feature_extraction", "top_k", "top_k_more", "full")


def choose_strategy(cfg, n_train: int, num_blocks: int) -> tuple[LLRDConfig, FreezingConfig, list[str]]:
    """``(llrd, freezing, reasons)`` for ``n_train`` labelled examples and a model with ``num_blocks`` blocks."""
    reasons = []
    if n_train < cfg.small_max:
        level = 0
        reasons.append(f"{n_train} training examples < small_max={cfg.small_max}: feature extraction")
    elif n_train < cfg.medium_max:
        level = 1
        reasons.append(f"{cfg.small_max} <= {n_train} training examples < medium_max={cfg.medium_max}: fine-tune the "
                       f"top {cfg.top_k} blocks with LLRD (decay {cfg.llrd_decay})")
    else:
        level = 3
        reasons.append(f"{n_train} training examples >= medium_max={cfg.medium_max}: full fine-tuning with LLRD "
                       f"(decay {cfg.llrd_decay})")
    shift = {"none": 0, "small": 1, "large": 2}[cfg.domain_shift]
    if shift:
        new = min(level + shift, 3)
        if new != level:
            reasons.append(f"domain_shift={cfg.domain_shift}: unfreeze more ({_LEVELS[level]} -> {_LEVELS[new]})")
        level = new
    k = min(cfg.top_k, num_blocks)
    if level == 0:
        cache = bool(getattr(cfg, "cache_features", False))
        if cache:
            reasons.append("cache_features: the frozen backbone runs once; the head trains on its cached outputs")
        return LLRDConfig(decay=1.0), FreezingConfig(policy="feature_extraction", cache_features=cache), reasons
    if level == 1:
        return LLRDConfig(decay=cfg.llrd_decay), FreezingConfig(policy="top_k", k=k), reasons
    if level == 2:
        k2 = min(2 * cfg.top_k, num_blocks)
        return LLRDConfig(decay=cfg.llrd_decay), FreezingConfig(policy="top_k", k=k2), reasons
    return LLRDConfig(decay=cfg.llrd_decay), FreezingConfig(policy="full"), reasons
