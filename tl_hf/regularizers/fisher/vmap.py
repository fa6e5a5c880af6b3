"""Per-example Fisher with ``torch.func`` (``vmap`` over ``grad``), chunk by chunk; batch-1 passes where a model's
forward cannot be vmapped. Works for any model, at several times the cost of one backward."""

from __future__ import annotations

import logging
import warnings

import torch

from tl_hf.regularizers.fisher.common import is_multilabel, log_probs, logits_of, nll_sum, sample_labels, summed_grads

logger = logging.getLogger(__name__)

__all__ = ["per_example_vmap"]


def per_example_vmap(model, named, fisher, inputs, labels, u, estimator, chunk_size):
    """Add the squared per-example gradients of this batch to ``fisher`` (name -> float32 tensor)."""
    from torch.func import functional_call

    names = list(fisher)
    params = {n: named[n].detach() for n in names}
    buffers = {n: b for n, b in model.named_buffers()}
    frozen = {n: p.detach() for n, p in named.items() if n not in params}
    multilabel = is_multilabel(labels)

    def logp_one(ps, example):
        ex = {k: v[None] for k, v in example.items()}
        if "attention_mask" in ex and ex["attention_mask"].ndim == 2:
            # a 4-D boolean mask keeps the masking code free of data-dependent branches (vmap cannot trace them)
            m = ex["attention_mask"].bool()
            ex["attention_mask"] = m[:, None, None, :].expand(1, 1, m.shape[-1], m.shape[-1])
        out = functional_call(model, {**ps, **frozen, **buffers}, (), ex)
        return log_probs(logits_of(out), multilabel)[0]

    def nll(ps, example, y):
        return nll_sum(logp_one(ps, example)[None], y[None])

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
                    y = sample_labels(lg, u[s:s + chunk_size])
                g = vmap(grad(nll), in_dims=(None, 0, 0))(params, ex, y)
                for n, t in g.items():
                    fisher[n].add_(t.float().pow(2).sum(0))
        except (RuntimeError, NotImplementedError) as exc:  # a forward vmap cannot trace: batch-1 passes instead
            _warn_fallback(model, exc)
            for i in range(y.shape[0]):
                one = {k: v[i:i + 1] for k, v in ex.items()}
                grads_per_loss = summed_grads(model, named, names, one, y[i:i + 1], u[s + i:s + i + 1], estimator, [i])
                for grads in grads_per_loss:
                    for n, g in zip(names, grads):
                        fisher[n].add_(g.pow(2))


_WARNED: set = set()


def _warn_fallback(model, exc):
    key = type(model).__name__
    if key not in _WARNED:
        _WARNED.add(key)
        logger.warning("per-example Fisher: %s cannot be vmapped (%s); using batch-1 passes (slower, same result)",
                       key, str(exc).splitlines()[0][:120])
