"""LP-FT (Kumar et al. 2022, https://arxiv.org/abs/2202.10054): train the head on the frozen backbone first (linear
probing), then fine-tune everything from that head. Fine-tuning from a random head distorts the pretrained features
while the head is still wrong; from a probed head it moves them less, which keeps out-of-distribution accuracy.

It is a two-phase gradual-unfreezing schedule (:class:`~tl_hf.core.freezing.GradualSchedule`): phase 0 trains only
the head, phase 1 (from ``lp_end`` epochs or steps) trains every depth. So it resumes across the phase change like any
schedule (the phase is saved in ``tl_hf_state.json``), composes with LLRD (phase 1), ``rewarm_steps`` (a linear LR
re-warm of the unfrozen groups) and weight averaging. In YAML::

    freezing: {policy: gradual, schedule: {unit: epoch, phases: [{start: 0, depths: 0}, {start: 1, depths: 7}]}}

(``depths`` of phase 1 = embeddings + blocks: 7 for a 6-block MiniLM), or from Python :func:`lp_ft_freezing`.

With ``cache_features: true`` the linear-probe phase trains the head on cached backbone outputs
(:mod:`tl_hf.core.feature_cache`: eval-mode outputs, so without the frozen backbone's dropout); the cache is dropped
when phase 1 begins (and not built when a run resumes after it). The first phase must train the head only.
"""

from __future__ import annotations

from tl_hf.core.freezing import FreezingConfig, GradualSchedule

__all__ = ["check_cached_probe", "lp_ft_freezing"]

#: phase 1 unfreezes this many depth levels at once, capped at the model's own number (= all of them)
_ALL = 1_000_000


def lp_ft_freezing(lp_end: int, unit: str = "epoch", rewarm_steps: int = 0) -> FreezingConfig:
    """The freezing config of LP-FT: head only until ``lp_end`` (epochs or optimizer steps, per ``unit``), then all."""
    if isinstance(lp_end, bool) or not isinstance(lp_end, int) or lp_end < 1:
        raise ValueError(f"LP-FT lp_end must be an int >= 1 (the {unit}s of linear probing), got {lp_end!r}")
    return FreezingConfig(policy="gradual", schedule=GradualSchedule(unit=unit, every=lp_end, depths_per_phase=_ALL,
                                                                     rewarm_steps=rewarm_steps))


def check_cached_probe(freezer, lmap) -> None:
    """``freezing.cache_features`` under a gradual schedule: its first phase must train the head only (LP-FT)."""
    depths = freezer.trainable_depths(0)
    if depths != {lmap.head_depth}:
        raise ValueError("freezing.cache_features with policy gradual needs a first phase that trains only the head "
                         f"(LP-FT: phases [{{start: 0, depths: 0}}, ...]); its first phase trains depths "
                         f"{sorted(depths)}. Set cache_features: false or start with the head only")
