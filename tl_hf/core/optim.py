"""Layer-wise learning-rate decay (discriminative learning rates) as a pure function from a model to parameter groups.

LLRD gives the head the base learning rate and every depth below it a geometrically smaller one,
``lr(depth) = base_lr * xi ** (L + 1 - depth)`` (Howard & Ruder 2018, https://arxiv.org/abs/1801.06146;
Clark et al. 2020, https://arxiv.org/abs/2003.10555), so the general features near the input move least.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch.nn as nn

from tl_hf.core.layers import LayerMap, get_layer_map

__all__ = ["LLRDConfig", "lr_for_depth", "no_weight_decay_names", "param_groups_layer_decay", "group_lrs"]

# Parameters that get no weight decay: biases, norm weights, position embeddings, cls/distillation/mask tokens,
# relative position bias tables and layer-scale vectors (every 1-D tensor is caught by the ndim rule too).
_NO_DECAY_NAME = re.compile(
    r"(?:^|\.)(?:bias|cls_token|distillation_token|mask_token|position_embeddings|"
    r"relative_position_bias_table|rel_embeddings)(?:\.|$)|norm",
    re.IGNORECASE,
)


def no_weight_decay_names(model: nn.Module) -> set[str]:
    """Names of parameters that must not be weight-decayed (see module docstring for the rule)."""
    norm_params: set[str] = set()
    for mod_name, module in model.named_modules():
        if "norm" in type(module).__name__.lower():
            for p_name, _ in module.named_parameters(recurse=False):
                norm_params.add(f"{mod_name}.{p_name}" if mod_name else p_name)
    return {
        name for name, p in model.named_parameters()
        if p.ndim <= 1 or name in norm_params or _NO_DECAY_NAME.search(name)
    }


@dataclass
class LLRDConfig:
    """Layer-wise learning-rate decay settings (the base learning rate is ``TrainingArguments.learning_rate``)."""

    decay: float = field(default=1.0, metadata={"help": "xi in (0, 1]: lr(depth) = base_lr * xi**(L+1-depth). "
                                                        "1.0 (the default) means one learning rate for all depths."})
    head_lr: float | None = field(default=None, metadata={"help": "Learning rate of the head (depth L+1). "
                                                                  "Default: the base learning rate."})
    min_lr_scale: float = field(default=0.0, metadata={"help": "Floor on the scale xi**(L+1-depth), in [0, 1]."})
    weight_decay: float | None = field(default=None, metadata={"help": "Weight decay of decayed parameters. "
                                                                       "Default: TrainingArguments.weight_decay."})

    def __post_init__(self) -> None:
        _check_decay(self.decay)
        if self.head_lr is not None and not (isinstance(self.head_lr, (int, float)) and self.head_lr > 0):
            raise ValueError(f"llrd.head_lr must be a positive number or None, got {self.head_lr!r}")
        if not isinstance(self.min_lr_scale, (int, float)) or not 0.0 <= self.min_lr_scale <= 1.0:
            raise ValueError(f"llrd.min_lr_scale must be in [0, 1], got {self.min_lr_scale!r}")
        if self.weight_decay is not None and not (isinstance(self.weight_decay, (int, float))
                                                  and self.weight_decay >= 0):
            raise ValueError(f"llrd.weight_decay must be >= 0 or None, got {self.weight_decay!r}")


def _check_decay(decay) -> None:
    if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0.0 < decay <= 1.0:
        raise ValueError(
            f"llrd.decay (xi) must be in (0, 1], got {decay!r}. Typical values: 0.65-0.95; 1.0 turns LLRD off."
        )


def _lr_scale(depth: int, head_depth: int, decay: float, min_lr_scale: float) -> float:
    return max(decay ** (head_depth - depth), min_lr_scale)


def lr_for_depth(depth: int, head_depth: int, lr: float, decay: float, *, head_lr: float | None = None,
                 min_lr_scale: float = 0.0) -> float:
    """The initial learning rate of ``depth``: ``lr * max(decay ** (head_depth - depth), min_lr_scale)``, or
    ``head_lr`` for the head (``depth == head_depth``) when given. The one LLRD formula (optimizer and model card)."""
    if depth == head_depth and head_lr is not None:
        return head_lr
    return lr * _lr_scale(depth, head_depth, decay, min_lr_scale)


def param_groups_layer_decay(
    model: nn.Module,
    lr: float,
    decay: float = 1.0,
    weight_decay: float = 0.0,
    *,
    head_lr: float | None = None,
    min_lr_scale: float = 0.0,
    layer_map: LayerMap | dict | None = None,
    include_frozen: bool = True,
) -> list[dict]:
    """Optimizer parameter groups with layer-wise learning-rate decay.

    One group per (depth, decayed / not decayed), ordered from the embeddings up to the head. Each group carries
    ``name`` (``"embeddings"``, ``"layer.3"``, ``"head"``), ``depth``, ``lr_scale``, ``lr``, ``weight_decay`` and
    ``param_names``. ``include_frozen=True`` (the default) puts frozen parameters in their groups too, so that a later
    unfreezing needs no new param group (torch's schedulers and checkpoint loading cannot cope with added groups).
    """
    if not isinstance(lr, (int, float)) or isinstance(lr, bool) or lr <= 0:
        raise ValueError(f"learning rate must be a positive number, got {lr!r}")
    _check_decay(decay)
    if not 0.0 <= min_lr_scale <= 1.0:
        raise ValueError(f"min_lr_scale must be in [0, 1], got {min_lr_scale!r}")
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
    lmap = get_layer_map(model, layer_map)
    depths = lmap.assign(model)
    no_decay = no_weight_decay_names(model)
    top = lmap.head_depth

    groups: dict[tuple[int, bool], dict] = {}
    for name, p in model.named_parameters():
        if not include_frozen and not p.requires_grad:
            continue
        d = depths[name]
        decayed = name not in no_decay and weight_decay > 0
        key = (d, decayed)
        if key not in groups:
            scale = _lr_scale(d, top, decay, min_lr_scale)
            group_lr = lr_for_depth(d, top, lr, decay, head_lr=head_lr, min_lr_scale=min_lr_scale)
            groups[key] = {
                "params": [],
                "param_names": [],
                "name": lmap.depth_name(d),
                "depth": d,
                "lr_scale": scale if d != top or head_lr is None else head_lr / lr,
                "lr": group_lr,
                "weight_decay": weight_decay if decayed else 0.0,
            }
        groups[key]["params"].append(p)
        groups[key]["param_names"].append(name)
    return [groups[k] for k in sorted(groups, key=lambda k: (k[0], not k[1]))]


def group_lrs(optimizer) -> dict[str, float]:
    """Current learning rate per group name (``{"embeddings": ..., "layer.0": ..., "head": ...}``)."""
    out: dict[str, float] = {}
    for g in optimizer.param_groups:
        out.setdefault(g.get("name", f"group{len(out)}"), g["lr"])
    return out
