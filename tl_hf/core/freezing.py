"""Freezing policies and gradual unfreezing.

Policies (``FreezingConfig.policy``):

* ``full`` -- nothing frozen.
* ``feature_extraction`` -- the backbone (depths ``0..L``) is frozen, the head trains. With ``cache_features`` the
  backbone's outputs are computed once and each step runs only the head (:mod:`tl_hf.core.feature_cache`).
* ``top_k`` -- the top ``k`` blocks and the head train; the embeddings too if ``train_embeddings``.
* ``patterns`` -- regexes over parameter names: ``include`` (trainable; default all) minus ``exclude``.
* ``blocks`` -- surgical fine-tuning (Lee et al. 2023, https://arxiv.org/abs/2210.11466): only the depths
  ``blocks: [first, last]`` (inclusive; 0 = embeddings, ``i`` = block ``i``, counted from 1) and the head train.
* ``gradual`` -- a schedule of phases triggered by epoch or by step; each phase makes more depth levels trainable,
  top-down by default as in ULMFiT (Howard & Ruder 2018, https://arxiv.org/abs/1801.06146), optionally re-warming the
  learning rate of newly unfrozen groups.

Freezing means ``requires_grad=False``: the parameter gets no ``.grad`` (so the optimizer skips it -- no update, no
weight decay, no momentum), and autograd stops at the lowest trainable depth. Never freeze by zeroing gradients: AdamW
keeps moving a parameter whose gradient is zero. Parameters that were already frozen when the policy was created
(for example the base weights of a PEFT/LoRA model) are never unfrozen by a policy.

**Frozen BatchNorm** (``freeze_norm_stats``, on by default): a BatchNorm layer whose parameters are all frozen (one
without parameters: when its enclosing module's are) runs in eval mode, so it normalizes with, and never updates, its
running statistics; unfrozen ones train normally. ``Trainer`` calls ``model.train()`` before every step, so setting
eval mode once is not enough, and overriding ``model.train`` would miss a wrapped (DDP, PEFT) model's call: each
frozen BatchNorm gets a forward-pre hook that puts it in eval mode right before it runs. The hooks are re-made every
time the trainable set changes (:meth:`FreezingController.apply`: static policies at construction, gradual phases
at each phase change and after a resume, which re-applies the checkpoint's phase), so they hold under every policy.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

import torch.nn as nn

from tl_hf.core.layers import LayerMap

__all__ = ["FreezingConfig", "FreezingController", "GradualSchedule", "Phase", "POLICIES"]

POLICIES = ("full", "feature_extraction", "top_k", "patterns", "blocks", "gradual")
FEATURE_POOLINGS = ("model", "cls", "mean")  # tl_hf.core.feature_layer applies them


@dataclass
class Phase:
    """One phase of a gradual-unfreezing schedule."""

    start: int = field(metadata={"help": "Epoch or optimizer step (see GradualSchedule.unit) at which it begins."})
    depths: int | list[int] = field(metadata={"help": "How many backbone depth levels train besides the head "
                                                      "(counted in the schedule's direction), or an explicit list "
                                                      "of depths (0 = embeddings, i+1 = block i)."})

    def __post_init__(self) -> None:
        if isinstance(self.start, bool) or not isinstance(self.start, int) or self.start < 0:
            raise ValueError(f"gradual phase start must be an int >= 0, got {self.start!r}")
        if isinstance(self.depths, (list, tuple)):
            if not all(isinstance(d, int) and not isinstance(d, bool) for d in self.depths):
                raise ValueError(f"gradual phase depths must be ints, got {self.depths!r}")
            self.depths = sorted(set(self.depths))
        elif isinstance(self.depths, bool) or not isinstance(self.depths, int) or self.depths < 0:
            raise ValueError(f"gradual phase depths must be an int >= 0 or a list of ints, got {self.depths!r}")


@dataclass
class GradualSchedule:
    """When each depth level is unfrozen.

    Give ``phases`` explicitly, or leave it empty and set ``every`` / ``depths_per_phase``: then phase ``i`` starts at
    ``i * every`` and trains ``i * depths_per_phase`` backbone depth levels (ULMFiT: one more level per epoch), until
    all are trainable. Before the first phase (if it starts after 0) only the head trains.
    """

    unit: Literal["epoch", "step"] = field(default="epoch", metadata={"help": "What phase starts count: 'epoch' or "
                                                                              "'step' (optimizer steps)."})
    phases: list[Phase] = field(default_factory=list, metadata={"help": "Explicit phases, ascending starts."})
    every: int = field(default=1, metadata={"help": "Generated schedule: a new phase every this many units."})
    depths_per_phase: int = field(default=1, metadata={"help": "Generated schedule: depth levels added per phase."})
    direction: Literal["top_down", "bottom_up"] = field(default="top_down",
                                                         metadata={"help": "Order in which depths are unfrozen."})
    rewarm_steps: int = field(default=0, metadata={"help": "Ramp the LR of newly unfrozen groups linearly from 0 to "
                                                           "their scheduled value over this many steps (0: off)."})

    def __post_init__(self) -> None:
        if self.unit not in ("epoch", "step"):
            raise ValueError(f"gradual schedule unit must be 'epoch' or 'step', got {self.unit!r}")
        if self.direction not in ("top_down", "bottom_up"):
            raise ValueError(f"gradual schedule direction must be 'top_down' or 'bottom_up', got {self.direction!r}")
        for name in ("every", "depths_per_phase"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"gradual schedule {name} must be an int >= 1, got {v!r}")
        if isinstance(self.rewarm_steps, bool) or not isinstance(self.rewarm_steps, int) or self.rewarm_steps < 0:
            raise ValueError(f"gradual schedule rewarm_steps must be an int >= 0, got {self.rewarm_steps!r}")
        self.phases = [p if isinstance(p, Phase) else Phase(**p) for p in self.phases]
        starts = [p.start for p in self.phases]
        if any(b <= a for a, b in zip(starts, starts[1:])):
            raise ValueError(f"gradual schedule phase starts must be strictly increasing, got {starts}")

    def resolve(self, lmap: LayerMap) -> list[tuple[int, frozenset[int]]]:
        """``[(start, trainable_depths)]`` for a model; checks every phase against the model's depths."""
        head = lmap.head_depth
        backbone = list(range(head))  # 0..L
        order = backbone[::-1] if self.direction == "top_down" else backbone
        phases = self.phases
        if not phases:
            n = -(-len(backbone) // self.depths_per_phase)
            phases = [Phase(start=i * self.every, depths=min(i * self.depths_per_phase, len(backbone)))
                      for i in range(n + 1)]
        out: list[tuple[int, frozenset[int]]] = []
        if phases[0].start > 0:
            out.append((0, frozenset({head})))
        for i, ph in enumerate(phases):
            if isinstance(ph.depths, list):
                bad = [d for d in ph.depths if not 0 <= d <= head]
                if bad:
                    raise ValueError(
                        f"gradual phase {i} (start {ph.start}) names depths {bad}, but this {lmap.model_type} model has "
                        f"depths 0..{head} (0 = embeddings, 1..{head - 1} = blocks, {head} = head)"
                    )
                depths = frozenset(ph.depths) | {head}
            else:
                if ph.depths > len(backbone):
                    raise ValueError(
                        f"gradual phase {i} (start {ph.start}) unfreezes {ph.depths} depth levels, but this "
                        f"{lmap.model_type} model has only {len(backbone)} below the head "
                        f"(embeddings + {lmap.num_blocks} blocks)"
                    )
                depths = frozenset(order[: ph.depths]) | {head}
            if out and not out[-1][1] <= depths:
                raise ValueError(
                    f"gradual phase {i} (start {ph.start}) would freeze depths {sorted(out[-1][1] - depths)} that an "
                    "earlier phase unfroze; each phase must unfreeze more, never less"
                )
            out.append((ph.start, depths))
        return out


@dataclass
class FreezingConfig:
    """Which parameters train, and when."""

    policy: str = field(default="full", metadata={"help": f"One of {', '.join(POLICIES)}."})
    k: int | None = field(default=None, metadata={"help": "top_k: number of top blocks that train."})
    train_embeddings: bool = field(default=False, metadata={"help": "top_k: also train the embeddings."})
    include: list[str] = field(default_factory=list, metadata={"help": "patterns: regexes of trainable parameter "
                                                                       "names (default: all)."})
    exclude: list[str] = field(default_factory=list, metadata={"help": "patterns: regexes of frozen names."})
    blocks: list[int] = field(default_factory=list, metadata={
        "help": "blocks: [first, last] depths that train besides the head (inclusive; 0 = embeddings, i = block i "
                "counted from 1), e.g. [8, 10] trains blocks 8-10 of a 12-block ViT."})
    schedule: GradualSchedule | None = field(default=None, metadata={"help": "gradual: the unfreezing schedule."})
    freeze_norm_stats: bool = field(default=True, metadata={"help": "Keep frozen BatchNorm layers in eval mode so "
                                                                    "their running statistics do not change."})
    cache_features: bool = field(default=False, metadata={
        "help": "feature_extraction: compute the frozen backbone's outputs once (eval mode, dropout off) and train "
                "the head on them; needs deterministic data and no regularizers (see tl_hf.core.feature_cache)."})
    feature_cache_dir: str | None = field(default=None, metadata={
        "help": "cache_features: a folder where the cached outputs are saved (safetensors + JSON) and reused by a "
                "later run with the same frozen weights, data and preprocessing (see tl_hf.core.feature_disk)."})
    feature_layer: int | None = field(default=None, metadata={
        "help": "ViT family: the head reads the output of this block (1..L; default the last); the blocks above are "
                "removed (see tl_hf.core.feature_layer)."})
    feature_pooling: str = field(default="model", metadata={
        "help": "ViT family: what the classifier reads: model (its own: ViT [CLS], DINOv2 [CLS] + patch mean), cls, "
                "or mean (of the patch tokens)."})

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"unknown freezing policy {self.policy!r}; valid policies: {', '.join(POLICIES)}")
        if self.policy == "top_k":
            if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 0:
                raise ValueError(f"freezing policy 'top_k' needs k, an int >= 0 (number of top blocks), got {self.k!r}")
        if self.policy == "blocks":
            b = list(self.blocks) if isinstance(self.blocks, (list, tuple)) else None
            if not b or len(b) != 2 or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in b) \
                    or b[0] > b[1]:
                raise ValueError(f"freezing policy 'blocks' needs blocks: [first, last], two ints 0 <= first <= last "
                                 f"(0 = embeddings, i = block i), got {self.blocks!r}")
            self.blocks = b
        if self.feature_layer is not None and (isinstance(self.feature_layer, bool)
                                               or not isinstance(self.feature_layer, int) or self.feature_layer < 1):
            raise ValueError(f"freezing.feature_layer must be a block number >= 1 (or null: the last block), got "
                             f"{self.feature_layer!r}")
        if self.feature_pooling not in FEATURE_POOLINGS:
            raise ValueError(f"freezing.feature_pooling must be one of {', '.join(FEATURE_POOLINGS)}, got "
                             f"{self.feature_pooling!r}")
        if self.policy == "patterns" and not (self.include or self.exclude):
            raise ValueError("freezing policy 'patterns' needs include and/or exclude regexes")
        for rx in list(self.include) + list(self.exclude):
            try:
                re.compile(rx)
            except re.error as exc:
                raise ValueError(f"freezing pattern {rx!r} is not a valid regex: {exc}") from None
        if not isinstance(self.cache_features, bool):
            raise ValueError(f"freezing.cache_features must be true or false, got {self.cache_features!r}")
        if self.cache_features and self.policy not in ("feature_extraction", "gradual"):
            raise ValueError(f"freezing.cache_features needs policy 'feature_extraction' (the backbone entirely "
                             f"frozen) or 'gradual' with a head-only first phase (LP-FT: the cache serves the linear "
                             f"probe), got policy {self.policy!r}; set policy: feature_extraction or "
                             "cache_features: false")
        self._check_feature_cache_dir()
        if isinstance(self.schedule, dict):
            self.schedule = GradualSchedule(**self.schedule)
        if self.policy == "gradual" and self.schedule is None:
            self.schedule = GradualSchedule()

    def _check_feature_cache_dir(self) -> None:
        d = self.feature_cache_dir
        if d is None:
            return
        if not isinstance(d, str) or not d.strip():
            raise ValueError(f"freezing.feature_cache_dir must be a folder path (or null: no saved cache), got {d!r}")
        if not self.cache_features:
            raise ValueError(f"freezing.feature_cache_dir ({d!r}) saves the cached features, but cache_features is "
                             "false; set freezing.cache_features: true or remove feature_cache_dir")
        if os.path.isfile(d):
            raise ValueError(f"freezing.feature_cache_dir {d!r} is a file, not a folder; name a folder (it is "
                             "created when missing)")

    @property
    def is_dynamic(self) -> bool:
        return self.policy == "gradual"


class FreezingController:
    """Applies a :class:`FreezingConfig` to a model. Plain object: usable without a Trainer.

    ``trainable_at(position)`` / ``phase_at(position)`` are pure; ``apply_phase(i)`` sets ``requires_grad``.
    """

    def __init__(self, model: nn.Module, lmap: LayerMap, config: FreezingConfig) -> None:
        self.model = model
        self.lmap = lmap
        self.config = config
        self.depths = lmap.assign(model)
        self.params = dict(model.named_parameters())
        # parameters frozen by someone else (PEFT base weights, the user) stay frozen
        self.base_trainable = {n for n, p in self.params.items() if p.requires_grad}
        self.phases = config.schedule.resolve(lmap) if config.is_dynamic else None
        self.phase: int | None = None
        self.phase_start_step = 0
        self.rewarm_depths: list[int] = []  # depths unfrozen by the current phase, whose lr is being re-warmed
        self._bn_hooks: list = []
        self.static_names = None if config.is_dynamic else self._names_for_static()
        if not (self.trainable_names(0) & self.base_trainable):
            raise ValueError(
                f"freezing policy {config.policy!r} leaves nothing trainable in this {lmap.model_type} model"
                + (" (its head has no trainable parameters)" if config.policy in ("feature_extraction", "gradual")
                   else "")
                + ". Choose a policy/patterns that keep at least the head trainable."
            )

    # -- pure queries ---------------------------------------------------------------------------------------------
    def _names_for_static(self) -> set[str]:
        c, head = self.config, self.lmap.head_depth
        if c.policy == "full":
            return set(self.params)
        if c.policy == "feature_extraction":
            depths = {head}
        elif c.policy == "top_k":
            if c.k > self.lmap.num_blocks:
                raise ValueError(f"freezing top_k: k={c.k} but this {self.lmap.model_type} model has only "
                                 f"{self.lmap.num_blocks} blocks")
            depths = set(range(head - c.k, head + 1)) | ({0} if c.train_embeddings else set())
        elif c.policy == "blocks":
            first, last = c.blocks
            if last >= head:
                raise ValueError(f"freezing blocks: [{first}, {last}] is outside this {self.lmap.model_type} model's "
                                 f"blocks: valid 0..{head - 1} (0 = embeddings, 1..{head - 1} = blocks; the head "
                                 "always trains)")
            depths = set(range(first, last + 1)) | {head}
        else:  # patterns
            inc = [re.compile(r) for r in c.include]
            exc = [re.compile(r) for r in c.exclude]
            return {n for n in self.params
                    if (not inc or any(r.search(n) for r in inc)) and not any(r.search(n) for r in exc)}
        return {n for n, d in self.depths.items() if d in depths}

    def phase_at(self, position: int) -> int:
        """Index of the schedule phase in force at ``position`` (epoch or step, per the schedule's unit)."""
        idx = 0
        for i, (start, _) in enumerate(self.phases):
            if position >= start:
                idx = i
        return idx

    def trainable_names(self, phase: int | None = None) -> set[str]:
        if self.phases is None:
            return self.static_names
        depths = self.phases[phase or 0][1]
        return {n for n, d in self.depths.items() if d in depths}

    def trainable_depths(self, phase: int | None = None) -> set[int]:
        names = self.trainable_names(phase) & self.base_trainable
        return {self.depths[n] for n in names}

    # -- mutation -------------------------------------------------------------------------------------------------
    def apply(self, phase: int | None = None) -> set[int]:
        """Set ``requires_grad`` for ``phase`` (ignored for static policies). Returns the depths newly unfrozen."""
        before = {self.depths[n] for n, p in self.params.items() if p.requires_grad}
        names = self.trainable_names(phase) & self.base_trainable
        for n, p in self.params.items():
            p.requires_grad_(n in names)
            if n not in names:
                p.grad = None
        self.phase = phase
        self._update_norm_hooks()
        after = {self.depths[n] for n in names}
        return after - before

    def num_trainable(self) -> int:
        return sum(p.numel() for p in self.params.values() if p.requires_grad)

    def _update_norm_hooks(self) -> None:
        for h in self._bn_hooks:
            h.remove()
        self._bn_hooks = []
        if not self.config.freeze_norm_stats:
            return
        modules = dict(self.model.named_modules())
        for name, module in modules.items():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and _norm_is_frozen(name, module, modules):
                # Trainer calls model.train() every step; force eval mode right before each forward instead.
                self._bn_hooks.append(module.register_forward_pre_hook(_set_eval))
                module.eval()

    # -- checkpoint state (JSON) ----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"policy": self.config.policy, "phase": self.phase, "phase_start_step": self.phase_start_step,
                "rewarm_depths": list(self.rewarm_depths)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("policy") != self.config.policy:
            raise ValueError(f"checkpoint was written with freezing policy {state.get('policy')!r}, "
                             f"this run uses {self.config.policy!r}")
        self.phase = state.get("phase")
        self.phase_start_step = int(state.get("phase_start_step", 0))
        self.rewarm_depths = [int(d) for d in state.get("rewarm_depths", [])]


def _set_eval(module: nn.Module, args: Sequence) -> None:
    module.eval()


def _norm_is_frozen(name: str, module: nn.Module, modules: dict[str, nn.Module]) -> bool:
    """A BatchNorm is frozen when all its parameters are; one without parameters (``affine=False``) when the
    nearest enclosing module that has parameters has them all frozen."""
    ps = list(module.parameters(recurse=False))
    while not ps and name:
        name = name.rpartition(".")[0]
        ps = list(modules[name].parameters())
    return bool(ps) and not any(p.requires_grad for p in ps)
