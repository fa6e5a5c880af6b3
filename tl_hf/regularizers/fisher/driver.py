"""The Fisher driver: :func:`estimate_fisher` walks the batches, shards them over processes and picks, per batch, the
hook path (:mod:`~tl_hf.regularizers.fisher.hooks`), the vmap path (:mod:`~tl_hf.regularizers.fisher.vmap`) or the
batched estimate, then normalises the sums."""

from __future__ import annotations

import contextlib
import logging
from typing import Callable, Iterable, Literal

import torch

from tl_hf.core.progress import progress_bar
from tl_hf.regularizers.fisher.common import (SPAN_LABELS, is_multilabel, is_token_labels, model_inputs,
                                              process_share, summed_grads)
from tl_hf.regularizers.fisher.hooks import HookFisher, Unsupported
from tl_hf.regularizers.fisher.vmap import per_example_vmap

logger = logging.getLogger(__name__)

__all__ = ["estimate_fisher", "ESTIMATORS"]

ESTIMATORS = ("empirical", "exact", "sampled")


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
    per_example_impl: Literal["auto", "hooks", "vmap"] = "auto",
) -> tuple[dict[str, torch.Tensor], int]:
    """Diagonal Fisher of ``model`` over ``batches`` (dicts of tensors with ``labels``, as a DataLoader yields).

    ``autocast_dtype`` (e.g. ``torch.bfloat16``) runs the forward passes under autocast, as mixed-precision training
    does; gradients are still squared and summed in float32 (squares of small half-precision gradients underflow).

    ``per_example_impl`` picks the per-example implementation (see the package docstring): ``"auto"`` (default) the
    hook-based one where it applies, else ``torch.func``; ``"hooks"`` the hook-based one or a ``ValueError``;
    ``"vmap"`` always ``torch.func`` (``chunk_size`` examples at a time; the hooks take a whole batch at once).

    Returns ``(fisher, n)``: float32 tensors keyed by parameter name (for ``param_names``, default all parameters
    that require grad) and the number of examples used (over all processes). ``batches`` should be the *full*
    (unsharded) data: under ``torch.distributed`` each rank keeps its share of the examples itself.
    """
    _check_options(estimator, num_samples, per_example_impl)
    named = dict(model.named_parameters())
    names = [n for n, p in named.items() if p.requires_grad] if param_names is None else list(param_names)
    missing = [n for n in names if n not in named]
    if missing:
        raise ValueError(f"Fisher requested for parameters the model does not have: {missing[:3]}")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    run = _FisherPass(model, named, names, estimator=estimator, per_example=per_example, impl=per_example_impl,
                      scale_batched=scale_batched, chunk_size=chunk_size, seed=seed, device=device,
                      autocast_dtype=autocast_dtype)
    was_training = model.training
    saved_flags = {n: p.requires_grad for n, p in named.items()}
    model.eval()
    bar = progress_bar(total=_total_examples(batches, num_samples), desc="Fisher", unit="ex")
    try:
        for n, p in named.items():
            p.requires_grad_(n in run.fisher)
        run.start_hooks()
        for batch in batches:
            if not run.add_batch(batch, num_samples):
                break
            bar.update(run.count - bar.n)
            if progress is not None:
                progress(run.count)
    finally:
        bar.close()
        run.close_hooks()
        for n, p in named.items():
            p.requires_grad_(saved_flags[n])
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return run.finish(), run.count


def _total_examples(batches, num_samples: int | None) -> int | None:
    """The examples the pass will see, when known (a DataLoader over a sized dataset, or ``num_samples``)."""
    n = getattr(getattr(batches, "dataset", None), "__len__", None)
    n = n() if callable(n) else None
    if num_samples is None:
        return n
    return num_samples if n is None else min(n, num_samples)


def _check_options(estimator: str, num_samples: int | None, per_example_impl: str) -> None:
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown Fisher estimator {estimator!r}; valid: {', '.join(ESTIMATORS)}")
    if num_samples is not None and num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    if per_example_impl not in ("auto", "hooks", "vmap"):
        raise ValueError(f"unknown per_example_impl {per_example_impl!r}; valid: auto, hooks, vmap")


class _FisherPass:
    """The running sums of one :func:`estimate_fisher` call: ``count`` examples seen over all ranks (in data order),
    ``local`` of them on this rank, ``n_batches`` batched estimates."""

    def __init__(self, model, named, names, *, estimator, per_example, impl, scale_batched, chunk_size, seed, device,
                 autocast_dtype) -> None:
        self.model, self.named, self.estimator = model, named, estimator
        self.per_example, self.impl = per_example, impl
        self.scale_batched, self.chunk_size, self.device = scale_batched, chunk_size, device
        self.fisher = {n: torch.zeros_like(named[n], dtype=torch.float32) for n in names}
        self.gen = torch.Generator(device="cpu").manual_seed(seed)
        self.amp = (torch.autocast(device_type=device.type, dtype=autocast_dtype) if autocast_dtype is not None
                    else contextlib.nullcontext())
        self.rank, self.world = process_share()
        self.count = self.local = self.n_batches = 0
        self.hooks: HookFisher | None = None

    def start_hooks(self) -> None:
        if self.per_example and self.impl != "vmap":
            try:
                self.hooks = HookFisher(self.model, self.named, self.fisher)
            except Unsupported as exc:
                if self.impl == "hooks":
                    raise ValueError(f"per_example_impl='hooks' does not apply to this model: {exc}") from None
                logger.debug("per-example Fisher: hooks do not apply (%s); using torch.func", exc)

    def close_hooks(self) -> None:
        if self.hooks is not None:
            self.hooks.close()
            self.hooks = None

    def add_batch(self, batch: dict, num_samples: int | None) -> bool:
        """Add this rank's share of ``batch``; ``False`` once ``num_samples`` examples were used (nothing added)."""
        if self.estimator == "exact" and all(k in batch for k in SPAN_LABELS):
            raise ValueError("the exact Fisher sums over every (start, end) span of a QA window (T * T classes); use "
                             "estimator: empirical (the gold spans) or sampled for question answering")
        inputs, labels = model_inputs(batch)
        if self.estimator != "empirical" and is_multilabel(labels):
            raise ValueError(f"the {self.estimator} Fisher of a multi-label head (multi-hot labels) is not supported "
                             "(it sums over 2^L label sets); use estimator: empirical (the true label sets, BCE)")
        if self.estimator != "empirical" and is_token_labels(labels):
            raise ValueError(f"the {self.estimator} Fisher of a token-classification head is not supported (a label "
                             "per token); use estimator: empirical (the gold tags, the model's per-sentence loss)")
        bsz = labels.shape[0]
        if num_samples is not None:
            bsz = min(bsz, num_samples - self.count)
            if bsz <= 0:
                return False
        # this rank's share of the batch: global example index = rank (mod world)
        idx = [i for i in range(bsz) if (self.count + i) % self.world == self.rank]
        # uniforms for sampled labels, drawn for the whole batch so every rank consumes the generator alike
        u = torch.rand(bsz, generator=self.gen)
        self.count += bsz
        sel = torch.tensor(idx, dtype=torch.long)
        inputs = {k: v[sel].to(self.device) for k, v in inputs.items()}
        labels, u = labels[sel].to(self.device), u[sel]
        if self.per_example:
            if idx:
                self._add_per_example(inputs, labels, u)
        else:
            self._add_batched(inputs, labels, u, idx, bsz)
        self.local += len(idx)
        return True

    def _add_per_example(self, inputs, labels, u) -> None:
        if self.hooks is not None:
            try:
                self.hooks.accumulate(inputs, labels, u, self.estimator, self.amp)
                return
            except Unsupported as exc:
                if self.impl == "hooks":
                    raise ValueError(f"per_example_impl='hooks' does not apply to this model: {exc}") from None
                logger.debug("per-example Fisher: hooks do not apply (%s); using torch.func from here on", exc)
                self.close_hooks()
        with self.amp:
            per_example_vmap(self.model, self.named, self.fisher, inputs, labels, u, self.estimator, self.chunk_size)

    def _add_batched(self, inputs, labels, u, idx, bsz) -> None:
        """Square the gradient of the *full* batch's mean loss: local gradients are summed over ranks first."""
        with self.amp:
            summed = summed_grads(self.model, self.named, list(self.fisher), inputs, labels, u, self.estimator, idx)
        for grads in summed:
            for n, g in zip(self.fisher, grads):
                if self.world > 1:
                    torch.distributed.all_reduce(g)
                # out of place: autograd may hand back views that share memory with other gradients
                self.fisher[n].add_((g / bsz).pow(2), alpha=bsz if self.scale_batched else 1)
        self.n_batches += 1

    def finish(self) -> dict[str, torch.Tensor]:
        """The sums over all ranks divided by the number of examples (per-example) or of batches (batched)."""
        if self.per_example:
            total = torch.tensor([float(self.local)], device=self.device)
            if self.world > 1:
                torch.distributed.all_reduce(total)
                for t in self.fisher.values():
                    torch.distributed.all_reduce(t)
            denom = int(total.item())
        else:
            denom = self.n_batches  # every rank already holds the same sum over batches
        if denom == 0:
            raise ValueError("Fisher estimation saw no examples (empty dataset?)")
        for t in self.fisher.values():
            t.div_(denom)
        return self.fisher
