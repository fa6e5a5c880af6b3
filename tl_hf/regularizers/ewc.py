"""Elastic weight consolidation and online EWC.

* EWC (Kirkpatrick et al. 2017, https://arxiv.org/abs/1612.00796): after task ``t`` keep its Fisher ``F_t`` and
  weights ``θ*_t``; while training later tasks add ``(λ/2) Σ_t Σ_i F_t,i (θ_i − θ*_t,i)²``.
* Online EWC (Schwarz et al. 2018, https://arxiv.org/abs/1805.06370): one running Fisher ``F ← γ·F_old + F_new`` and
  one set of anchors (the weights after the latest task); penalty ``(λ/2) Σ_i F_i (θ_i − θ*_i)²``.

The gradient ``λ · F · (θ − θ*)`` is added straight into ``.grad`` with fused ``torch._foreach_*`` kernels once per
optimizer step; the penalty's value is only computed for logging. Parameters missing from the Fisher (a new task head)
are not penalised; a parameter whose shape changed is an error unless it matches ``exempt``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch

from tl_hf.core.fsdp import sum_as_float
from tl_hf.regularizers.base import (CONTINUAL_TAG, Regularizer, RegularizerConfig, card_code, check_non_negative,
                                     foreach_params, register_regularizer)
from tl_hf.regularizers.fisher import ESTIMATORS, estimate_fisher

__all__ = ["EWC", "EWCConfig", "OnlineEWC", "OnlineEWCConfig"]


@dataclass
class EWCConfig(RegularizerConfig):
    ALIASES: ClassVar[dict] = {"lambda": "lambda_"}

    lambda_: float = field(default=1.0, metadata={"help": "Penalty strength λ (YAML key: lambda)."})
    estimator: Literal["empirical", "exact", "sampled"] = field(default="empirical", metadata={
        "help": "Fisher estimator: empirical (true labels), exact (expectation over predictions), sampled."})
    per_example: bool = field(default=True, metadata={"help": "Square per-example gradients (True) or batch-mean "
                                                              "gradients scaled by the batch size (False)."})
    num_samples: int = field(default=1024, metadata={"help": "Examples used to estimate the Fisher."})
    batch_size: int = field(default=32, metadata={"help": "Batch size of the Fisher pass."})
    seed: int = field(default=0, metadata={"help": "Seed of the sampled estimator."})

    def __post_init__(self) -> None:
        super().__post_init__()
        check_non_negative("ewc lambda", self.lambda_)
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"unknown Fisher estimator {self.estimator!r}; valid: {', '.join(ESTIMATORS)}")
        for k in ("num_samples", "batch_size"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"ewc {k} must be an int >= 1, got {v!r}")


@dataclass
class OnlineEWCConfig(EWCConfig):
    gamma: float = field(default=1.0, metadata={"help": "Decay of the old Fisher: F <- gamma * F_old + F_new."})

    def __post_init__(self) -> None:
        super().__post_init__()
        check_non_negative("online_ewc gamma", self.gamma)


def _refuse_regression_head(model, name: str) -> None:
    """The Fisher here is a classifier's (the log-softmax likelihood): on a one-output regression head it would be
    zero (exact) or fail (empirical), so such a head is refused."""
    cfg = _model_config(model)
    if getattr(cfg, "problem_type", None) == "regression" or getattr(cfg, "num_labels", 2) == 1:
        raise ValueError(f"{name}: the Fisher is estimated from a classifier's log-likelihood (softmax over classes); "
                         "this model has a one-output regression head (problem_type regression), where it is not "
                         "defined: use l2sp (the same anchor, uniform weights) in a regression run")


@register_regularizer
class EWC(Regularizer):
    """EWC with one (Fisher, anchors) pair per finished task."""

    name = "ewc"
    config_cls = EWCConfig

    def __init__(self, config=None, **kwargs) -> None:
        if "lambda" in kwargs:
            kwargs["lambda_"] = kwargs.pop("lambda")
        super().__init__(config, **kwargs)
        self.tasks: list[tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]] = []  # (fisher, anchors)
        self.meta: dict[str, Any] = {}
        self._names: set[str] = set()

    # -- consolidation --------------------------------------------------------------------------------------------
    def end_task(self, model, dataset, *, collate_fn=None, device=None, autocast_dtype=None, **kwargs) -> None:
        """Estimate the Fisher of ``model`` on ``dataset`` (full, unsharded; a DataLoader or a dataset) and take the
        current weights as anchors. Under ``torch.distributed`` every rank must call it."""
        _refuse_regression_head(model, self.name)
        batches = _as_batches(dataset, self.config.batch_size, collate_fn)
        names = [n for n, p in model.named_parameters() if not self.is_exempt(n)]
        fisher, n = estimate_fisher(model, batches, estimator=self.config.estimator,
                                    per_example=self.config.per_example, num_samples=self.config.num_samples,
                                    param_names=names, seed=self.config.seed, device=device,
                                    autocast_dtype=autocast_dtype)
        anchors = {k: p.detach().float().clone() for k, p in model.named_parameters() if k in fisher}
        self._consolidate(fisher, anchors)
        cfg = _model_config(model)
        self.meta = {"model_type": getattr(cfg, "model_type", type(model).__name__), "num_examples": n,
                     "num_tasks": len(self.tasks) if self.name == "ewc" else self.meta.get("num_tasks", 0) + 1}

    def _consolidate(self, fisher, anchors) -> None:
        self.tasks.append((fisher, anchors))

    @property
    def active(self) -> bool:
        return bool(self.tasks)

    # -- model card -----------------------------------------------------------------------------------------------
    def card_summary(self) -> str:
        c = self.config
        return (f"**EWC**: λ = {card_code(c.lambda_)}, Fisher estimator {card_code(c.estimator)}"
                f" ({'per-example' if c.per_example else 'batch-mean'} gradients, {card_code(c.num_samples)} samples)")

    def card_tags(self) -> list[str]:
        return ["ewc", CONTINUAL_TAG]

    # -- training -------------------------------------------------------------------------------------------------
    def bind(self, model) -> None:
        if not self.tasks:
            raise ValueError(
                f"{self.name} has no Fisher yet: a task can only be regularised by {self.name} after "
                f"{self.name}.end_task(model, data_of_the_previous_task) or {self.name}.load(folder) "
                "(train the first task without it)")
        params = dict(model.named_parameters())
        cfg = _model_config(model)
        mt = getattr(cfg, "model_type", type(model).__name__)
        if self.meta.get("model_type") not in (None, mt):
            raise ValueError(f"{self.name} state was computed on a {self.meta['model_type']} model; this model is "
                             f"{mt}. Recompute the Fisher for this model.")
        names = set()
        for fisher, _ in self.tasks:
            for n, f in fisher.items():
                if n not in params or self.is_exempt(n):
                    continue  # a head that no longer exists, or an explicit exemption
                if tuple(f.shape) != tuple(params[n].shape):
                    raise ValueError(
                        f"{self.name}: parameter {n!r} has shape {tuple(params[n].shape)} in the model but "
                        f"{tuple(f.shape)} in the saved Fisher (a changed head?). Exempt it with "
                        f"exempt=[{n.rsplit('.', 1)[0]!r}] or use a new head name.")
                names.add(n)
        if not names:
            raise ValueError(f"{self.name}: no parameter of the model is covered by the Fisher (different model?)")
        self._names = names
        dev = next(iter(params.values())).device
        self.tasks = [({k: v.to(dev) for k, v in f.items()}, {k: v.to(dev) for k, v in a.items()})
                      for f, a in self.tasks]

    def add_penalty_grad(self, named_params, scale: float = 1.0) -> None:
        lam = self.config.lambda_ * scale
        if lam == 0:
            return
        ns, ps, gs = foreach_params(named_params, self._names)
        if not ns:
            return
        for fisher, anchors in self.tasks:
            keep = [i for i, n in enumerate(ns) if n in fisher]
            # fp32 arithmetic (anchors and Fisher are fp32); a half-precision parameter is upcast first
            p = [ps[i].detach() if ps[i].dtype == torch.float32 else ps[i].detach().float() for i in keep]
            diff = torch._foreach_sub(p, [anchors[ns[i]] for i in keep])
            torch._foreach_mul_(diff, [fisher[ns[i]] for i in keep])
            grads = [gs[i] for i in keep]
            if any(g.dtype != torch.float32 for g in grads):
                diff = [d.to(g.dtype) for d, g in zip(diff, grads)]
            torch._foreach_add_(grads, diff, alpha=lam)

    @torch.no_grad()
    def penalty_value(self, model) -> float:
        params = dict(model.named_parameters())
        total = 0.0
        for fisher, anchors in self.tasks:
            names = [n for n in fisher if n in self._names]
            diff = torch._foreach_sub([params[n].detach().float() for n in names], [anchors[n] for n in names])
            sq = torch._foreach_mul(diff, diff)
            total += sum_as_float((fisher[n] * s).sum() for n, s in zip(names, sq))  # FSDP2: all-reduced
        return 0.5 * self.config.lambda_ * total

    # -- state ----------------------------------------------------------------------------------------------------
    def state_dict(self):
        tensors = {}
        for t, (fisher, anchors) in enumerate(self.tasks):
            tensors.update({f"task{t}.fisher.{k}": v for k, v in fisher.items()})
            tensors.update({f"task{t}.anchor.{k}": v for k, v in anchors.items()})
        return tensors, {**self.meta, "stored_tasks": len(self.tasks)}

    def load_state_dict(self, tensors, meta) -> None:
        tasks = []
        for t in range(int(meta.get("stored_tasks", 0))):
            f = {k.split(".fisher.", 1)[1]: v for k, v in tensors.items() if k.startswith(f"task{t}.fisher.")}
            a = {k.split(".anchor.", 1)[1]: v for k, v in tensors.items() if k.startswith(f"task{t}.anchor.")}
            if set(f) != set(a):
                raise ValueError(f"{self.name} state: task {t} has Fisher and anchors for different parameters")
            tasks.append((f, a))
        self.tasks = tasks
        self.meta = {k: v for k, v in meta.items() if k != "stored_tasks"}


@register_regularizer
class OnlineEWC(EWC):
    """Online EWC: one running Fisher F <- gamma * F_old + F_new, anchors at the latest task's weights."""

    name = "online_ewc"
    config_cls = OnlineEWCConfig

    def card_summary(self) -> str:
        c = self.config
        return (f"**online EWC**: λ = {card_code(c.lambda_)}, γ = {card_code(c.gamma)}, Fisher estimator "
                f"{card_code(c.estimator)} ({card_code(c.num_samples)} samples)")

    def card_tags(self) -> list[str]:
        return ["online-ewc", CONTINUAL_TAG]

    def _consolidate(self, fisher, anchors) -> None:
        if self.tasks:
            old, _ = self.tasks[0]
            for k, v in fisher.items():
                if k in old and old[k].shape == v.shape:
                    v.add_(old[k].to(v.device), alpha=self.config.gamma)
        self.tasks = [(fisher, anchors)]


def _model_config(model):
    from tl_hf.core.layers import unwrap_model_config

    return unwrap_model_config(model)


def _as_batches(data, batch_size, collate_fn):
    """A DataLoader (or any iterable of dict batches) passes through; a dataset gets a sequential DataLoader."""
    if isinstance(data, torch.utils.data.DataLoader) or (hasattr(data, "__iter__") and not hasattr(data, "__len__")):
        return data
    if collate_fn is None:
        from transformers import default_data_collator

        collate_fn = default_data_collator
    return torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=False, collate_fn=collate_fn)
