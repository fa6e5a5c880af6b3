"""What the Fisher estimators share: process sharding, logits and labels, sampled labels, summed-loss gradients."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["SPAN_LABELS", "is_multilabel", "is_token_labels", "log_probs", "logits_of", "model_inputs", "nll_sum", "num_classes",
           "process_share", "sample_labels", "summed_grads"]


def process_share() -> tuple[int, int]:
    """``(rank, world size)`` under ``torch.distributed``, ``(0, 1)`` otherwise."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def logits_of(out) -> torch.Tensor:
    """The ``[batch, classes]`` logits of a model output (a mapping with ``logits`` or a tuple). An extractive-QA
    output (``start_logits`` / ``end_logits`` ``[batch, T]``) gives the joint span logits ``[batch, T * T]``,
    ``start[s] + end[e]`` at ``s * T + e``: their log-softmax is ``log p(start = s) + log p(end = e)``, the model's
    log-likelihood of a span (labels from :func:`model_inputs`)."""
    if (isinstance(out, dict) or hasattr(out, "keys")) and "start_logits" in out and "end_logits" in out:
        start, end = out["start_logits"], out["end_logits"]
        return (start[:, :, None] + end[:, None, :]).flatten(1)
    logits = out["logits"] if isinstance(out, dict) or hasattr(out, "keys") else out[0]
    if logits.ndim not in (2, 3):  # [batch, classes]; token classification: [batch, tokens, classes]
        raise ValueError(f"Fisher estimation supports sequence/image/token classification (logits [batch, classes] or "
                         f"[batch, tokens, classes]); got "
                         f"logits of shape {tuple(logits.shape)}")
    return logits


def is_multilabel(labels: torch.Tensor) -> bool:
    """Multi-hot float labels ``[batch, L]``: a multi-label head (one sigmoid per label, BCE with logits)."""
    return labels.is_floating_point() and labels.ndim == 2


def log_probs(logits: torch.Tensor, multilabel: bool = False) -> torch.Tensor:
    """The model's log-probabilities: ``log_softmax`` over the classes ``[batch, C]``; for a multi-label head the
    independent Bernoullis ``[batch, L, 2]`` (``log sigmoid(-z)``, ``log sigmoid(z)``)."""
    z = logits.float()
    if multilabel:
        return torch.stack([F.logsigmoid(-z), F.logsigmoid(z)], dim=-1)
    return z.log_softmax(-1)


def is_token_labels(labels: torch.Tensor) -> bool:
    """Integer labels ``[batch, tokens]`` (``-100`` where ignored): a token-classification head."""
    return not labels.is_floating_point() and labels.ndim == 2


def _token_nll_sum(logp: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Each example's own loss as the model computes it for that example alone (the mean token NLL over its labelled
    tokens; ``-100`` ignored, an example without one adds 0), summed over the examples."""
    mask = labels != -100
    picked = logp.gather(-1, labels.clamp_min(0)[..., None]).squeeze(-1) * mask
    return -(picked.sum(-1) / mask.sum(-1).clamp_min(1)).sum()


def nll_sum(logp: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``-log p(labels)`` summed over the examples: the class NLL, or for a multi-label head (``logp`` from
    :func:`log_probs`) the BCE of each example's true label set summed over its labels (example b's own loss still
    has only example b's gradient)."""
    if logp.ndim == 3 and is_token_labels(labels):
        return _token_nll_sum(logp, labels)
    if logp.ndim == 3:
        return -logp.gather(-1, labels.round().long()[..., None]).sum()
    return F.nll_loss(logp, labels, reduction="sum")


#: the label columns of an extractive-QA batch (the answer's first and last token)
SPAN_LABELS = ("start_positions", "end_positions")


def model_inputs(batch: dict) -> tuple[dict, torch.Tensor]:
    """``(tensor inputs without labels, labels)`` of a batch. A QA batch (``start_positions`` / ``end_positions``)
    gets the joint span label ``start * T + end`` (``T``: the batch's sequence length; see :func:`logits_of`)."""
    if "labels" not in batch and all(k in batch for k in SPAN_LABELS):
        inputs = {k: v for k, v in batch.items() if k not in SPAN_LABELS and isinstance(v, torch.Tensor)}
        length = batch["input_ids"].shape[-1]
        start, end = (batch[k].reshape(-1).long().clamp(0, length - 1) for k in SPAN_LABELS)
        return inputs, start * length + end
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
    logp = log_probs(logits_of(model(**inputs)), is_multilabel(labels))
    if estimator == "exact":
        p = logp.detach().exp()
        losses = [(p[:, c].sqrt() * logp[:, c]).sum() for c in range(logp.shape[-1])]
    else:
        y = labels if estimator == "empirical" else sample_labels(logp, u)
        losses = [nll_sum(logp, y)]
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
