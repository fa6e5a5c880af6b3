"""Diagonal Fisher information estimators for classification models.

For a model ``p(y | x, θ)`` and examples ``x_1..x_N`` (Kirkpatrick et al. 2017, https://arxiv.org/abs/1612.00796;
Kunstner et al. 2019 on empirical vs true Fisher, https://arxiv.org/abs/1905.12558):

* ``exact``:     ``F = 1/N Σ_i Σ_c p(c|x_i) (∇ log p(c|x_i))²``   -- the expectation over the model's predictions;
* ``sampled``:   ``F = 1/N Σ_i (∇ log p(ŷ_i|x_i))²`` with ``ŷ_i ~ p(·|x_i)`` -- an unbiased one-sample estimate of exact;
* ``empirical``: ``F = 1/N Σ_i (∇ log p(y_i|x_i))²`` with the true labels -- cheap, biased near a poor optimum.

``per_example=True`` squares each example's own gradient (the formulas above), computed for a whole chunk of
examples at once with ``torch.func`` (``vmap`` over ``grad``), not a Python loop of batch-1 passes.

``per_example=False`` ("batched") squares the gradient of each batch's *mean* loss instead. For gradients that are
roughly independent across examples, ``E[(mean of B gradients)²] ≈ F / B``: the raw batched estimate is about ``B``
times smaller. With ``scale_batched=True`` (default) we multiply it by the batch size so that the same ``λ`` means the
same strength for every estimator; with ``scale_batched=False`` multiply λ by B yourself. The batched ``exact`` uses
``Σ_c (∇ 1/B Σ_i sqrt(p_ic) · log p_ic)²`` (equal to the per-example formula for B = 1).

Everything runs in eval mode (no dropout) on the *unwrapped* model, accumulates in float32, and under
``torch.distributed`` each rank takes every ``world_size``-th example; the sums are all-reduced and divided by the
total count, so the result equals the single-process Fisher over the same examples.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from typing import Callable, Iterable, Literal

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

__all__ = ["estimate_fisher", "ESTIMATORS"]

ESTIMATORS = ("empirical", "exact", "sampled")


def _dist():
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _logits(out) -> torch.Tensor:
    logits = out["logits"] if isinstance(out, dict) or hasattr(out, "keys") else out[0]
    if logits.ndim != 2:
        raise ValueError(f"Fisher estimation supports sequence/image classification (logits [batch, classes]); got "
                         f"logits of shape {tuple(logits.shape)}")
    return logits


def _model_inputs(batch: dict) -> tuple[dict, torch.Tensor]:
    if "labels" not in batch:
        raise ValueError(f"Fisher estimation needs a 'labels' column in the data; got columns {sorted(batch)}")
    inputs = {k: v for k, v in batch.items() if k != "labels" and isinstance(v, torch.Tensor)}
    return inputs, batch["labels"]


def estimate_fisher(
    model: torch.nn.Module,
    batches: Iterable[dict],
    *,
    estimator: Literal["empirical", "exact", "sampled"] = "empirical",
    per_example: bool = True,
    num_samples: int | None = None,
    param_names: Iterable[str] | None = None,
    scale_batched: bool = True,
    chunk_size: int = 8,
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: Callable[[int], None] | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> tuple[dict[str, torch.Tensor], int]:
    """Diagonal Fisher of ``model`` over ``batches`` (dicts of tensors with ``labels``, as a DataLoader yields).

    ``autocast_dtype`` (e.g. ``torch.bfloat16``) runs the forward passes under autocast, as mixed-precision training
    does; gradients are still squared and summed in float32 (squares of small half-precision gradients underflow).

    Returns ``(fisher, n)``: float32 tensors keyed by parameter name (for ``param_names``, default all parameters
    that require grad) and the number of examples used (over all processes). ``batches`` should be the *full*
    (unsharded) data: under ``torch.distributed`` each rank keeps its share of the examples itself.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown Fisher estimator {estimator!r}; valid: {', '.join(ESTIMATORS)}")
    if num_samples is not None and num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    rank, world = _dist()
    named = dict(model.named_parameters())
    names = [n for n, p in named.items() if p.requires_grad] if param_names is None else list(param_names)
    missing = [n for n in names if n not in named]
    if missing:
        raise ValueError(f"Fisher requested for parameters the model does not have: {missing[:3]}")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    fisher = {n: torch.zeros_like(named[n], dtype=torch.float32) for n in names}
    gen = torch.Generator(device="cpu").manual_seed(seed)
    was_training = model.training
    saved_flags = {n: p.requires_grad for n, p in named.items()}
    model.eval()
    amp = (torch.autocast(device_type=device.type, dtype=autocast_dtype) if autocast_dtype is not None
           else contextlib.nullcontext())
    count = 0  # examples seen over all ranks, in data order
    local = 0
    n_batches = 0
    try:
        for n, p in named.items():
            p.requires_grad_(n in fisher)
        for batch in batches:
            inputs, labels = _model_inputs(batch)
            bsz = labels.shape[0]
            if num_samples is not None:
                bsz = min(bsz, num_samples - count)
                if bsz <= 0:
                    break
            # this rank's share of the batch: global example index = rank (mod world)
            idx = [i for i in range(bsz) if (count + i) % world == rank]
            # uniforms for sampled labels, drawn for the whole batch so every rank consumes the generator alike
            u = torch.rand(bsz, generator=gen)
            count += bsz
            sel = torch.tensor(idx, dtype=torch.long)
            inputs = {k: v[sel].to(device) for k, v in inputs.items()}
            labels, u = labels[sel].to(device), u[sel]
            if per_example:
                if idx:
                    with amp:
                        _per_example(model, named, fisher, inputs, labels, u, estimator, chunk_size)
            else:
                # square the gradient of the *full* batch's mean loss: sum local gradients over ranks first
                with amp:
                    summed = _summed_grads(model, named, list(fisher), inputs, labels, u, estimator, idx)
                for grads in summed:
                    for n, g in zip(fisher, grads):
                        if world > 1:
                            torch.distributed.all_reduce(g)
                        # out of place: autograd may hand back views that share memory with other gradients
                        fisher[n].add_((g / bsz).pow(2), alpha=bsz if scale_batched else 1)
                n_batches += 1
            local += len(idx)
            if progress is not None:
                progress(count)
    finally:
        for n, p in named.items():
            p.requires_grad_(saved_flags[n])
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    if per_example:
        total = torch.tensor([float(local)], device=device)
        if world > 1:
            torch.distributed.all_reduce(total)
            for t in fisher.values():
                torch.distributed.all_reduce(t)
        denom = int(total.item())
    else:
        denom = n_batches  # every rank already holds the same sum over batches
    if denom == 0:
        raise ValueError("Fisher estimation saw no examples (empty dataset?)")
    for t in fisher.values():
        t.div_(denom)
    return fisher, count


def _sample_labels(logits: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF sampling from softmax(logits) with pre-drawn uniforms (identical on every rank)."""
    cdf = logits.detach().float().softmax(-1).cumsum(-1)
    return torch.searchsorted(cdf, u.to(cdf.device)[:, None].contiguous()).squeeze(-1).clamp_max(cdf.shape[-1] - 1)


def _summed_grads(model, named, names, inputs, labels, u, estimator, idx):
    """Gradients of the *summed* (not mean) loss over the given examples: one list per class for ``exact``,
    a single list otherwise. Zeros when this rank has no example in the batch (it still joins the all-reduce)."""
    params = [named[n] for n in names]
    if not idx:
        k = 1 if estimator != "exact" else _num_classes(model)
        return [[torch.zeros_like(p, dtype=torch.float32) for p in params] for _ in range(k)]
    logp = _logits(model(**inputs)).float().log_softmax(-1)
    if estimator == "exact":
        p = logp.detach().exp()
        losses = [(p[:, c].sqrt() * logp[:, c]).sum() for c in range(logp.shape[-1])]
    else:
        y = labels if estimator == "empirical" else _sample_labels(logp, u)
        losses = [F.nll_loss(logp, y, reduction="sum")]
    out = []
    for i, loss in enumerate(losses):
        grads = torch.autograd.grad(loss, params, retain_graph=i < len(losses) - 1, allow_unused=True)
        # copies: autograd may return gradients that share memory (a broadcast parameter's gradient can be a view
        # of another one's), and the caller all-reduces them in place
        out.append([torch.zeros_like(p, dtype=torch.float32) if g is None else g.to(torch.float32, copy=True)
                    for p, g in zip(params, grads)])
    return out


def _num_classes(model) -> int:
    cfg = getattr(model, "config", None)
    if hasattr(model, "get_base_model"):
        cfg = getattr(model.get_base_model(), "config", cfg)
    n = getattr(cfg, "num_labels", None)
    if n is None:
        raise ValueError("exact batched Fisher under multi-process needs model.config.num_labels")
    return int(n)


def _per_example(model, named, fisher, inputs, labels, u, estimator, chunk_size):
    from torch.func import functional_call

    names = list(fisher)
    params = {n: named[n].detach() for n in names}
    buffers = {n: b for n, b in model.named_buffers()}
    frozen = {n: p.detach() for n, p in named.items() if n not in params}

    def logp_one(ps, example):
        ex = {k: v[None] for k, v in example.items()}
        if "attention_mask" in ex and ex["attention_mask"].ndim == 2:
            # a 4-D boolean mask keeps the masking code free of data-dependent branches (vmap cannot trace them)
            m = ex["attention_mask"].bool()
            ex["attention_mask"] = m[:, None, None, :].expand(1, 1, m.shape[-1], m.shape[-1])
        out = functional_call(model, {**ps, **frozen, **buffers}, (), ex)
        return _logits(out).float().log_softmax(-1)[0]

    def nll(ps, example, y):
        return -logp_one(ps, example).gather(0, y.reshape(1)).sum()

    bsz = labels.shape[0]
    with warnings.catch_warnings():
        # torch notes that SDPA has no batching rule yet (it loops inside); correct, just not the fastest path
        warnings.filterwarnings("ignore", message=".*performance drop.*")
        _per_example_chunks(logp_one, nll, params, fisher, names, model, named, inputs, labels, u, estimator,
                            chunk_size, bsz)


def _per_example_chunks(logp_one, nll, params, fisher, names, model, named, inputs, labels, u, estimator, chunk_size,
                        bsz):
    from torch.func import grad, jacrev, vmap

    for s in range(0, bsz, chunk_size):
        ex = {k: v[s:s + chunk_size] for k, v in inputs.items()}
        y = labels[s:s + chunk_size]
        try:
            if estimator == "exact":
                with torch.no_grad():
                    probs = torch.stack([logp_one(params, {k: v[i] for k, v in ex.items()}).exp()
                                         for i in range(y.shape[0])])
                jac = vmap(jacrev(logp_one), in_dims=(None, 0))(params, ex)  # name -> [b, C, *shape]
                for n, j in jac.items():
                    w = probs.reshape(probs.shape + (1,) * (j.ndim - 2))
                    fisher[n].add_((w * j.float().pow(2)).sum(dim=(0, 1)))
            else:
                if estimator == "sampled":
                    with torch.no_grad():
                        lg = torch.stack([logp_one(params, {k: v[i] for k, v in ex.items()})
                                          for i in range(y.shape[0])])
                    y = _sample_labels(lg, u[s:s + chunk_size])
                g = vmap(grad(nll), in_dims=(None, 0, 0))(params, ex, y)
                for n, t in g.items():
                    fisher[n].add_(t.float().pow(2).sum(0))
        except (RuntimeError, NotImplementedError) as exc:  # a forward vmap cannot trace: batch-1 passes instead
            _warn_fallback(model, exc)
            for i in range(y.shape[0]):
                one = {k: v[i:i + 1] for k, v in ex.items()}
                for grads in _summed_grads(model, named, names, one, y[i:i + 1], u[s + i:s + i + 1], estimator, [i]):
                    for n, g in zip(names, grads):
                        fisher[n].add_(g.pow(2))


_WARNED: set = set()


def _warn_fallback(model, exc):
    key = type(model).__name__
    if key not in _WARNED:
        _WARNED.add(key)
        logger.warning("per-example Fisher: %s cannot be vmapped (%s); using batch-1 passes (slower, same result)",
                       key, str(exc).splitlines()[0][:120])
