"""L2-SP (Li et al. 2018, https://arxiv.org/abs/1802.01483): keep fine-tuned weights near the starting point.

Penalty ``(α/2) ‖θ_s − θ⁰_s‖² + (β/2) ‖θ_new‖²``: shared parameters ``θ_s`` (present in the source model with the same
shape) are pulled towards their pretrained values ``θ⁰``; newly added parameters (a fresh task head) get plain L2.
The anchors are the model's weights when the regularizer is bound (right before training), or the tensors of
``source`` (a model folder with ``model.safetensors`` or a ``.safetensors`` file) when given.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

import torch

from tl_hf._errors import one_line
from tl_hf.core.fsdp import sum_as_float
from tl_hf.regularizers.base import (Regularizer, RegularizerConfig, card_code, check_non_negative, foreach_params,
                                     register_regularizer)

__all__ = ["L2SP", "L2SPConfig"]


@dataclass
class L2SPConfig(RegularizerConfig):
    alpha: float = field(default=0.01, metadata={"help": "Strength of the pull towards the pretrained weights."})
    beta: float = field(default=0.01, metadata={"help": "Plain L2 strength on newly added parameters."})
    source: str | None = field(default=None, metadata={
        "help": "Pretrained weights (model folder or .safetensors). Default: the weights at the start of training."})
    new_params: list[str] = field(default_factory=list, metadata={
        "help": "Regexes of parameters that count as new (beta) when no source is given, e.g. ['classifier']."})

    def __post_init__(self) -> None:
        super().__post_init__()
        check_non_negative("l2sp alpha", self.alpha)
        check_non_negative("l2sp beta", self.beta)


@register_regularizer
class L2SP(Regularizer):
    name = "l2sp"
    config_cls = L2SPConfig

    def __init__(self, config=None, **kwargs) -> None:
        super().__init__(config, **kwargs)
        self.anchors: dict[str, torch.Tensor] = {}
        self.new: set[str] = set()

    def card_summary(self) -> str:
        c = self.config
        src = f", anchors from {card_code(c.source)}" if c.source else ", anchors: the starting weights"
        return (f"**L2-SP**: α = {card_code(c.alpha)} (pull to the pretrained weights), β = {card_code(c.beta)} "
                f"(new parameters){src}")

    def card_tags(self) -> list[str]:
        return ["l2-sp"]

    def bind(self, model) -> None:
        params = dict(model.named_parameters())
        if not self.anchors:  # first bind (not restored from a checkpoint)
            if self.config.source:
                source = _load_source(self.config.source)
                self.anchors = {}
                for n, p in params.items():
                    key = _match_source_key(n, source)
                    if key is None or self.is_exempt(n):
                        continue
                    if tuple(source[key].shape) != tuple(p.shape):
                        raise ValueError(f"l2sp: parameter {n!r} has shape {tuple(p.shape)} but "
                                         f"{tuple(source[key].shape)} in {self.config.source}; exempt it with "
                                         f"exempt=[{n.rsplit('.', 1)[0]!r}]")
                    self.anchors[n] = source[key].detach().float().clone()
                self.new = {n for n in params if n not in self.anchors and not self.is_exempt(n)}
                _check_coverage(params, self.anchors, self.new, self.config.source)
            else:
                pats = [re.compile(r) for r in self.config.new_params]
                self.new = {n for n in params if any(r.search(n) for r in pats) and not self.is_exempt(n)}
                self.anchors = {n: p.detach().float().clone() for n, p in params.items()
                                if n not in self.new and not self.is_exempt(n)}
        for n, a in self.anchors.items():
            if n in params and tuple(a.shape) != tuple(params[n].shape):
                raise ValueError(f"l2sp: parameter {n!r} has shape {tuple(params[n].shape)} but its anchor "
                                 f"{tuple(a.shape)}")
        dev = next(iter(params.values())).device
        self.anchors = {k: v.to(dev) for k, v in self.anchors.items() if k in params}

    def add_penalty_grad(self, named_params, scale: float = 1.0) -> None:
        a, b = self.config.alpha * scale, self.config.beta * scale
        if a:
            ns, ps, gs = foreach_params(named_params, set(self.anchors))
            if ns:
                if all(p.dtype == torch.float32 and g.dtype == torch.float32 for p, g in zip(ps, gs)):
                    # g += a * p - a * anchor, in place: no parameter-sized temporaries
                    torch._foreach_add_(gs, [p.detach() for p in ps], alpha=a)
                    torch._foreach_add_(gs, [self.anchors[n] for n in ns], alpha=-a)
                else:  # half-precision weights or grads: the difference in fp32, then cast
                    diff = torch._foreach_sub([p.detach().float() for p in ps], [self.anchors[n] for n in ns])
                    if any(g.dtype != torch.float32 for g in gs):
                        diff = [d.to(g.dtype) for d, g in zip(diff, gs)]
                    torch._foreach_add_(gs, diff, alpha=a)
        if b:
            ns, ps, gs = foreach_params(named_params, self.new)
            if ns:
                torch._foreach_add_(gs, [p.detach() for p in ps], alpha=b)

    @torch.no_grad()
    def penalty_value(self, model) -> float:
        params = dict(model.named_parameters())
        sp = sum_as_float((params[n].float() - a).pow(2).sum() for n, a in self.anchors.items())  # FSDP2: reduced
        new = sum_as_float(params[n].float().pow(2).sum() for n in self.new if n in params)
        return 0.5 * (self.config.alpha * sp + self.config.beta * new)

    def state_dict(self):
        return {f"anchor.{k}": v for k, v in self.anchors.items()}, {"new": sorted(self.new)}

    def load_state_dict(self, tensors, meta) -> None:
        self.anchors = {k[len("anchor."):]: v for k, v in tensors.items() if k.startswith("anchor.")}
        self.new = set(meta.get("new", []))


def _check_coverage(params: dict, anchors: dict, new: set, source: str) -> None:
    """A source of another architecture anchors nothing but a same-shaped head and leaves the backbone free: refuse a
    source that matches less than half of the (non-exempt) parameters, as EWC refuses a Fisher with no overlap."""
    total = sum(params[n].numel() for n in set(anchors) | new)
    covered = sum(params[n].numel() for n in anchors)
    if total and covered * 2 < total:
        first = sorted(new)[0] if new else "?"
        raise ValueError(f"l2sp: source {source} matches only {covered:,} of {total:,} parameters of the model "
                         f"({100 * covered / total:.0f} %; e.g. no tensor for {first!r}): it is not this model's "
                         "pretrained checkpoint (another architecture?); give the folder this model was loaded from, "
                         "or drop source to anchor at the starting weights")


def _load_source(path: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    if os.path.isdir(path):
        f = os.path.join(path, "model.safetensors")
        if not os.path.exists(f):
            raise FileNotFoundError(f"l2sp source {path} has no model.safetensors")
        path = f
    if not os.path.exists(path):
        raise FileNotFoundError(f"l2sp source {path} does not exist")
    try:
        return load_file(path)
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types for truncated files
        raise ValueError(f"l2sp source {path} is truncated or not a safetensors file ({one_line(exc)[:120]}); give a "
                         "complete model.safetensors") from None


def _match_source_key(name: str, source: dict) -> str | None:
    """The source key for a model parameter: exact, or with the task model's base prefix (``bert.``) removed."""
    name = re.sub(r"^(?:base_model\.model\.)+", "", name)
    if name in source:
        return name
    parts = name.split(".", 1)
    if len(parts) == 2 and parts[1] in source:
        return parts[1]
    return None
