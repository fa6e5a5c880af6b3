"""What the Fisher estimators share: process sharding, logits and labels, sampled labels, summed-loss gradients."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["logits_of", "model_inputs", "num_classes", "process_share", "sample_labels", "summed_grads"]


def process_share() -> tuple[int, int]:
    """``(rank, world size)`` under ``torch.distributed``, ``(0, 1)`` otherwise."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def logits_of(out) -> torch.Tensor:
    """The ``[batch, classes]`` logits of a model output (a mapping with ``logits`` or a tuple)."""
    logits = out["logits"] if isinstance(out, dict) or hasattr(out, "keys") else out[0]
    if logits.ndim != 2:
        raise ValueError(f"Fisher estimation supports sequence/image classification (logits [batch, classes]); got "
                         f"logits of shape {tuple(logits.shape)}")
    return logits


def model_inputs(batch: dict) -> tuple[dict, torch.Tensor]:
    """``(tensor inputs without labels, labels)`` of a batch."""
    if "labels" not in batch:
        raise ValueError(f"Fisher estimation needs a 'labels' column in the data; got columns {sorted(batch)}")
    inputs = {k: v for k, v in batch.items() if k != "labels" and isinstance(v, torch.Tensor)}
    return inputs, batch["labels"]


def sample_labels(logits: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF sampling from softmax(logits) with pre-drawn uniforms (identical on every rank)."""
    cdf = logits.detach().float().softmax(-1).cumsum(-1)
    return torch.searchsorted(cdf, u.to(cdf.device)[:, None].contiguous()).squeeze(-1).clamp_max(cdf.shape[-1] - 1)


def summed_grads(model, named, names, inputs, labels, u, estimator, idx):
    """Gradients of the *summed* (not mean) loss over the given examples: one list per class for ``exact``,
    a single list otherwise. Zeros when this rank has no example in the batch (it still joins the all-reduce)."""
    params = [named[n] for n in names]
    if not idx:
        k = 1 if estimator != "exact" else num_classes(model)
        return [[torch.zeros_like(p, dtype=torch.float32) for p in params] for _ in range(k)]
    logp = logits_of(model(**inputs)).float().log_softmax(-1)
    if estimator == "exact":
        p = logp.detach().exp()
        losses = [(p[:, c].sqrt() * logp[:, c]).sum() for c in range(logp.shape[-1])]
    else:
        y = labels if estimator == "empirical" else sample_labels(logp, u)
        losses = [F.nll_loss(logp, y, reduction="sum")]
    out = []
    for i, loss in enumerate(losses):
        grads = torch.autograd.grad(loss, params, retain_graph=i < len(losses) - 1, allow_unused=True)
        # copies: autograd may return gradients that share memory (a broadcast parameter's gradient can be a view
        # of another one's), and the caller all-reduces them in place
        out.append([torch.zeros_like(p, dtype=torch.float32) if g is None else g.to(torch.float32, copy=True)
                    for p, g in zip(params, grads)])
    return out


def num_classes(model) -> int:
    cfg = getattr(model, "config", None)
    if hasattr(model, "get_base_model"):
        cfg = getattr(model.get_base_model(), "config", cfg)
    n = getattr(cfg, "num_labels", None)
    if n is None:
        raise ValueError("exact batched Fisher under multi-process needs model.config.num_labels")
    return int(n)
