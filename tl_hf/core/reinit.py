"""Re-initialise the top ``k`` blocks before fine-tuning (Zhang et al. 2021, "Revisiting Few-sample BERT Fine-tuning",
https://arxiv.org/abs/2006.05987): the top blocks of a pretrained encoder are specialised to the pretraining task;
re-initialising them makes few-sample fine-tuning more stable.

The blocks are re-initialised with the model's own ``_init_weights``, applied (``module.apply``, children first) to
each chosen block and optionally the pooler, under a fixed seed inside a forked RNG: every DDP rank gets the same
weights and the caller's RNG stream is untouched. transformers 5 marks loaded tensors ``_is_hf_initialized`` (its
``init`` functions then skip them); that mark is lifted for the call and put back afterwards.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from tl_hf.core.layers import LayerMap, get_layer_map

__all__ = ["ReinitConfig", "reinit_top_blocks", "reinit_modules"]

_POOLER = re.compile(r"(?:^|\.)pooler(?:\.|$)")


@dataclass
class ReinitConfig:
    """Which top blocks are re-initialised before training (``top_k: 0`` = off)."""

    top_k: int = field(default=0, metadata={"help": "Number of top transformer blocks re-initialised (0: off)."})
    pooler: bool = field(default=False, metadata={"help": "Also re-initialise the pooler (BERT-style models)."})
    seed: int = field(default=0, metadata={"help": "Seed of the re-initialisation (the same on every process)."})

    def __post_init__(self) -> None:
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f"reinit.top_k must be an int >= 0, got {self.top_k!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"reinit.seed must be an int, got {self.seed!r}")

    @property
    def enabled(self) -> bool:
        return self.top_k > 0 or self.pooler

    def card_line(self) -> str:
        return (f"- **re-initialised top blocks** (the model's own `_init_weights`, before training): top k "
                f"`{self.top_k}`, pooler `{self.pooler}`, seed `{self.seed}`")


def _chosen_modules(model: nn.Module, lmap: LayerMap, depths: set[int], pooler: bool) -> list[tuple[str, nn.Module]]:
    """The largest submodules whose parameters all sit at ``depths`` (or under the pooler), in module order."""
    depth = lmap.assign(model)
    chosen: list[tuple[str, nn.Module]] = []
    for name, mod in model.named_modules():
        if any(name.startswith(c + ".") for c, _ in chosen):
            continue
        names = [f"{name}.{n}" if name else n for n, _ in mod.named_parameters()]
        if not names:
            continue
        if all(depth[n] in depths for n in names) or (pooler and _POOLER.search(name) and
                                                      all(_POOLER.search(n) for n in names)):
            chosen.append((name, mod))
    return chosen


def reinit_modules(model: nn.Module, modules: list[nn.Module], seed: int) -> None:
    """Apply ``model._init_weights`` to each of ``modules`` (children first), seeded, in a forked RNG."""
    init_fn = getattr(model, "_init_weights", None)
    if init_fn is None:
        base = getattr(model, "get_base_model", None)
        init_fn = getattr(base(), "_init_weights", None) if base is not None else None
    if init_fn is None:
        raise ValueError(f"re-init needs a transformers PreTrainedModel (with _init_weights); got "
                         f"{type(model).__name__}")
    marked = [t for m in modules for t in list(m.parameters()) + list(m.buffers())
              if getattr(t, "_is_hf_initialized", False)]
    for t in marked:
        t._is_hf_initialized = False
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(seed)
            for m in modules:
                m.apply(init_fn)
    finally:
        for t in marked:
            t._is_hf_initialized = True


def reinit_top_blocks(model: nn.Module, top_k: int, *, pooler: bool = False, seed: int = 0,
                      layer_map: LayerMap | None = None) -> list[str]:
    """Re-initialise the top ``top_k`` blocks (and the pooler if ``pooler``) of ``model`` in place; returns the names
    of the re-initialised modules. ``top_k`` larger than the model's number of blocks is refused."""
    lmap = layer_map or get_layer_map(model)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
        raise ValueError(f"reinit.top_k must be an int >= 0, got {top_k!r}")
    if top_k > lmap.num_blocks:
        raise ValueError(f"reinit.top_k={top_k} but this {lmap.model_type} model has only {lmap.num_blocks} blocks; "
                         f"set reinit.top_k to at most {lmap.num_blocks}")
    depths = set(range(lmap.num_blocks - top_k + 1, lmap.num_blocks + 1))
    chosen = _chosen_modules(model, lmap, depths, pooler)
    if pooler and not any(_POOLER.search(n) for n, _ in chosen):
        raise ValueError(f"reinit.pooler is true but this {lmap.model_type} model has no pooler; set reinit.pooler: "
                         "false")
    reinit_modules(model, [m for _, m in chosen], seed)
    return [n for n, _ in chosen]
