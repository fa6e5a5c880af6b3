"""Cached backbone outputs for feature extraction: ``FreezingConfig(policy="feature_extraction", cache_features=True)``.

The frozen backbone's outputs cannot change during training, so :class:`~tl_hf.TransferTrainer` computes them once,
before the first step, and every step after that runs only the trainable head on them.

How it works (generic: no per-architecture code):

* The *frozen roots* are the outermost modules with all parameters frozen that the forward pass calls (BERT:
  ``bert.embeddings`` and ``bert.encoder``; the head, which trains, is ``bert.pooler`` + ``classifier``; ViT:
  ``vit.embeddings`` and each block). One pass over the dataset, with the model in eval mode under ``no_grad``,
  records each root's output for every example: float32, on the CPU, sequence outputs trimmed to the example's
  ``attention_mask`` (and put back at the example's positions in each later batch).
* In a cached step the model's own ``forward`` runs unchanged, except that each cached root returns its recorded
  output instead of computing it. So the loss is the model's own (``problem_type``, ``num_items_in_batch``, gradient
  accumulation and the head's own dropout behave exactly as without the cache), and the trained model is the normal
  full model: saving, evaluation and prediction need nothing special. A root whose outputs only feed later roots
  (the embeddings; in ViT every block but the last) is not stored: zeros of its output's shape stand in for it (the
  model's code may read their shape, e.g. to build the attention mask). If the model reads their values, the check
  below fails and every root is stored instead.
* On the first batch the cache checks itself: the model must give the same outputs with the cached roots as without
  them (else its head reads something the cache cannot reproduce, e.g. padded positions), the same outputs twice
  (deterministic in eval mode), and the most padded example run alone must give its stored outputs (else, e.g. left
  padding with absolute positions, every batch must have one fixed length). The dataset and collator must return the
  same values twice for the same examples (no random augmentation; a transform that is random only now and then
  cannot be detected: enabling the cache asserts that the data are deterministic).

**Dropout.** Cached outputs are the backbone's *eval-mode* outputs. Without the cache, TransferTrainer runs the whole
model in train mode, so dropout inside the frozen backbone stays active and its outputs are noisy. Dropout in the head
(BERT's dropout on the pooled output, applied by the model's forward between pooler and classifier) is active in both.
A cached run therefore equals an uncached run whose backbone dropout is 0 (``hidden_dropout_prob`` and
``attention_probs_dropout_prob`` 0, ``classifier_dropout`` set explicitly), not one with backbone dropout: the
difference is that noise.

Refused with a one-line error before the first step: trainable parameters outside the head, regularizers, frozen
BatchNorm layers that would run in train mode, ``torch_compile``, DataParallel, FSDP, DeepSpeed, an iterable training
set, examples that are not dicts, random data or collator, a backbone that is not deterministic in eval mode, a frozen
module that runs twice or after the head, outputs that are not tensors, outputs that depend on the batch's padding
when batches differ in length. The cache lives in memory, as long as the trainer (``trainer.feature_cache.stores``;
evaluation sets are cached on first use): resuming from a checkpoint recomputes it (deterministically), so a resumed
run equals an uninterrupted one. In a multi-process run each process computes the outputs of its own shard of the
examples and the processes exchange them, so every process holds the whole cache (:mod:`tl_hf.core.feature_shard`).
``freezing.feature_cache_dir`` saves the cache to disk, keyed by a fingerprint of the frozen weights, the data and
the preprocessing, for later runs to read (:mod:`tl_hf.core.feature_disk`).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Mapping
from typing import Any, Callable, Iterable

import torch
import torch.nn as nn
from torch.utils import _pytree as pytree

from tl_hf._errors import one_line
from tl_hf.core.feature_checks import (INDEX_KEY, IndexCollator, IndexedDataset, _trainable_modules,  # noqa: F401
                                       check_deterministic_data, check_trainer_setup, frozen_modules)
from tl_hf.core.feature_store import _FIX, FeatureStore, Spans, _err
from tl_hf.core.progress import progress_bar

logger = logging.getLogger(__name__)

# the checks and index wrappers live in tl_hf.core.feature_checks; re-exported here, the module users know
__all__ = ["FeatureCache", "INDEX_KEY", "IndexCollator", "IndexedDataset", "check_deterministic_data",
           "check_trainer_setup", "frozen_modules"]
_MISSING = object()


# ---------------------------------------------------------------------------------------------------------------------
# Building and replaying
# ---------------------------------------------------------------------------------------------------------------------

def _tensor_ids(obj: Any) -> set[int]:
    return {id(x) for x in pytree.tree_leaves(obj) if isinstance(x, torch.Tensor)}


def _max_diff(a: Any, b: Any) -> float | None:
    """Largest difference between two nested outputs, or ``None`` when their structures differ."""
    la, sa = pytree.tree_flatten(a)
    lb, sb = pytree.tree_flatten(b)
    if sa != sb:
        return None
    worst = 0.0
    for x, y in zip(la, lb):
        if isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor):
            if x.shape != y.shape:
                return None
            if x.is_floating_point():
                d = (x.float() - y.float()).abs()
                tol = 1e-5 + 1e-4 * y.float().abs()
                worst = max(worst, float((d - tol).clamp(min=0).max()) if d.numel() else 0.0)
            elif not torch.equal(x, y):
                return float("inf")
        elif x != y:
            return float("inf")
    return worst


class FeatureCache:
    """Per-trainer cache: one :class:`FeatureStore` per dataset, valid while the frozen parameters are unchanged."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.stores: dict[str, FeatureStore] = {}
        self._params = list(model.parameters())

    def fingerprint(self) -> tuple:
        """Changes when a frozen parameter is modified in place, or when the set of frozen parameters changes."""
        return tuple(-1 if p.requires_grad else p._version for p in self._params)

    def get(self, key: str, dataset) -> FeatureStore | None:
        st = self.stores.get(key)
        if st is not None and st.dataset is dataset and st.n == len(dataset) and st.fingerprint == self.fingerprint():
            return st
        return None

    def build(self, key: str, dataset, batches: Iterable[dict], *, prepare: Callable[[dict], dict],
              context: Callable[[], Any] = contextlib.nullcontext, what: str = "training",
              collate_one: Callable[[int], dict] | None = None, gather: bool = False) -> FeatureStore:
        """One pass over ``batches`` (collated, carrying :data:`INDEX_KEY`) in eval mode; checks on the first.
        ``collate_one(i)`` is a batch of example ``i`` alone (tells fixed-length padding from dynamic padding).
        ``gather``: ``batches`` hold this process's shard only; every process calls this, and the processes
        exchange their rows (:mod:`tl_hf.core.feature_shard`) so that each ends with the whole store."""
        t0 = time.perf_counter()
        self.stores.pop(key, None)
        store, widths, error = None, set(), None
        try:
            store, widths, shortest = self._pass(dataset, batches, prepare, context, what)
            if store is not None and store.padding_dependent and len(widths) == 1 and collate_one is not None:
                one = collate_one(shortest[1]).get("attention_mask")  # dynamic padding, or every batch alike?
                if isinstance(one, torch.Tensor):
                    widths.add(one.shape[1])
        except Exception as exc:  # noqa: BLE001 - re-raised below, on every process when gathering
            if not gather:
                raise
            error = exc
        computed = 0 if store is None else int(store.filled.sum())
        if gather:
            from tl_hf.core.feature_shard import gather_store

            store, infos = gather_store(dataset, store, error, self.fingerprint(), what, widths=sorted(widths))
            widths = set().union(*(set(i["widths"]) for i in infos))
        if store is None:
            raise _err(f"the {what} dataset is empty")
        self._finish(store, widths, what)
        store.computed = computed
        store.seconds = time.perf_counter() - t0
        return self.adopt(key, store)

    def adopt(self, key: str, store: FeatureStore) -> FeatureStore:
        """Keep ``store`` (built here, or read from disk) as the cache of ``key``."""
        self.stores[key] = store
        logger.info("feature cache (%s): %d examples, %.1f MiB (float32, CPU), %s in %.1f s (%d computed by this "
                    "process); stored outputs of %s%s", store.what, store.n, store.nbytes / 2**20,
                    "read" if store.computed == 0 else "built", store.seconds, store.computed, ", ".join(store.roots),
                    f"; skipped: {', '.join(store.placeholders)}" if store.placeholders else "")
        return store

    def _pass(self, dataset, batches: Iterable[dict], prepare: Callable, context: Callable, what: str):
        """The eval-mode pass: the store of the examples in ``batches``, the batch widths, the shortest example."""
        model = self.model
        modes = {m: m.training for m in model.modules()}
        devices = [torch.cuda.current_device()] if torch.cuda.is_available() and torch.cuda.is_initialized() else []
        store, widths, shortest = None, set(), (float("inf"), 0)
        try:
            # the DataLoader draws a seed from the global RNG: fork it so the training run's RNG stream is untouched
            with torch.random.fork_rng(devices=devices), torch.no_grad():
                model.eval()
                for batch in progress_bar(batches, desc=f"feature cache ({what})", unit="batch"):
                    batch = dict(batch)
                    idx = batch.pop(INDEX_KEY).tolist()
                    inputs = prepare(batch)
                    mask = inputs.get("attention_mask")
                    if isinstance(mask, torch.Tensor) and mask.dim() == 2:
                        widths.add(mask.shape[1])
                        lengths = mask.sum(1)
                        shortest = min(shortest, (int(lengths.min()), idx[int(lengths.argmin())]))
                    if store is None:
                        store = self._first_batch(dataset, idx, inputs, context, what)
                    else:
                        store.add(idx, self._record(store.roots + store.placeholders, inputs, context), mask)
        finally:
            for m, flag in modes.items():
                m.training = flag
        return store, widths, shortest

    @staticmethod
    def _finish(store: FeatureStore, widths: set[int], what: str) -> None:
        """The checks on the whole store: one batch width when outputs depend on it, every example cached."""
        if store.padding_dependent:
            if len(widths) > 1:
                raise _err(f"the outputs of {', '.join(store.roots)} for an example change with the padding of its "
                           f"batch (left padding with absolute positions?), and batches have different lengths; pad "
                           f"on the right or to a fixed length (padding='max_length') {_FIX}")
            store.width = min(widths) if widths else None
        if not bool(store.filled.all()):
            missing = int((~store.filled).sum())
            raise _err(f"{missing} of {store.n} {what} examples were not cached (a sampler or drop_last skipped them) "
                       f"{_FIX}")

    def _record(self, roots: list[str], inputs: dict, context: Callable) -> dict[str, Any]:
        outs: dict[str, Any] = {}
        hooks = [self.model.get_submodule(r).register_forward_hook(
            lambda mod, args, out, r=r: outs.__setitem__(r, out)) for r in roots]
        try:
            with context():
                self.model(**inputs)
        finally:
            for h in hooks:
                h.remove()
        return outs

    def _trace(self, inputs: dict, context: Callable):
        """Run the model once with hooks: its output, the top-level call order (``("root" | "head", name)``), each
        frozen root's output, input tensor ids and number of calls."""
        order: list[tuple[str, str]] = []  # ("root" | "head", name) at the top level of the forward pass
        outs: dict[str, Any] = {}
        ins: dict[str, set[int]] = {}
        calls: dict[str, int] = {}
        depth = [0]  # how many frozen modules are running: the outermost ones are the roots

        def pre(name):
            def hook(mod, args, kwargs):
                if depth[0] == 0:
                    order.append(("root", name))
                    ins[name] = _tensor_ids((args, kwargs))
                    calls[name] = calls.get(name, 0) + 1
                depth[0] += 1
            return hook

        def post(name):
            def hook(mod, args, out):
                depth[0] -= 1
                if depth[0] == 0:
                    outs[name] = out
            return hook

        def head(name):
            return lambda mod, args: order.append(("head", name)) if depth[0] == 0 else None

        hooks = []
        for name, m in frozen_modules(self.model):
            hooks += [m.register_forward_pre_hook(pre(name), with_kwargs=True), m.register_forward_hook(post(name))]
        for name, m in _trainable_modules(self.model):
            hooks.append(m.register_forward_pre_hook(head(name)))
        try:
            with context():
                reference = self.model(**inputs)
        finally:
            for h in hooks:
                h.remove()
        return reference, order, outs, ins, calls

    def _cacheable_roots(self, order, outs, calls, inputs: dict, context: Callable) -> list[str]:
        """The frozen roots in call order, checked: each runs once, before the head, deterministically."""
        call_order = list(dict.fromkeys(n for kind, n in order if kind == "root"))
        if not call_order:
            raise _err(f"no frozen module of {type(self.model).__name__} ran in the forward pass, nothing to cache "
                       f"{_FIX}")
        twice = [n for n in call_order if calls[n] > 1]
        if twice:
            raise _err(f"frozen module {twice[0]!r} runs {calls[twice[0]]} times per forward pass; only modules that "
                       f"run once can be cached {_FIX}")
        first_head = next((i for i, (kind, _) in enumerate(order) if kind == "head"), len(order))
        late = [n for kind, n in order[first_head:] if kind == "root"]
        if late:
            raise _err(f"frozen module {late[0]!r} runs after the trainable {order[first_head][1]!r}, so its output "
                       f"may depend on the head and cannot be cached {_FIX}")
        again = self._record(call_order, inputs, context)
        for n in call_order:
            d = _max_diff(outs[n], again[n])
            if d is None or d > 0:
                raise _err(f"frozen module {n!r} gives different outputs for the same batch in eval mode (not "
                           f"deterministic), so its outputs cannot be cached {_FIX}")
        return call_order

    def _first_batch(self, dataset, idx: list[int], inputs: dict, context: Callable, what: str) -> FeatureStore:
        """The store for ``dataset`` holding the first batch, after checking that replaying it reproduces the
        model's outputs exactly."""
        model = self.model
        reference, order, outs, ins, calls = self._trace(inputs, context)
        call_order = self._cacheable_roots(order, outs, calls, inputs, context)
        # a root whose every output tensor is an input of a later root (embeddings, all blocks but the last) need not
        # be stored: zeros of its output's shape stand in for it. If the model's own code reads those values too, the
        # check below fails and every root is stored instead.
        internal = []
        for i, n in enumerate(call_order):
            later = set().union(*(ins[m] for m in call_order[i + 1:])) if i + 1 < len(call_order) else set()
            out_ids = _tensor_ids(outs[n])
            if out_ids and out_ids <= later:
                internal.append(n)
        boundary = [n for n in call_order if n not in internal]
        tries = [(boundary, internal)] + ([(call_order, [])] if internal else [])
        fingerprint = self.fingerprint()
        for k, (stored, placeholders) in enumerate(tries):
            store = FeatureStore(dataset, stored, fingerprint, what, placeholders)
            store.add(idx, outs, inputs.get("attention_mask"))
            try:
                with self.replay(store, idx, inputs), context():
                    replayed = model(**inputs)
                d = _max_diff(reference, replayed)
            except Exception as exc:  # noqa: BLE001 - zeros standing in for real values may break the model's code
                if k + 1 < len(tries):
                    continue
                raise _err(f"{type(model).__name__} fails when its frozen modules return cached outputs "
                           f"({type(exc).__name__}: {one_line(exc)}) {_FIX}") from exc
            if d is not None and d == 0:
                store.padding_dependent = not self._padding_invariant(store, idx, inputs, context)
                return store
        raise _err(f"{type(model).__name__} gives different outputs when its frozen modules ({', '.join(call_order)}) "
                   f"return their cached outputs (its head reads something the cache does not reproduce, e.g. padded "
                   f"positions) {_FIX}")

    def _padding_invariant(self, store: FeatureStore, idx: list[int], inputs: dict, context: Callable) -> bool:
        """Whether the most padded example of the batch, run alone without padding, gives the stored outputs (false
        e.g. for left padding with absolute position embeddings: then every batch must have the same length)."""
        mask = inputs.get("attention_mask")
        if not isinstance(mask, torch.Tensor) or mask.dim() != 2 or bool(mask.all()):
            return True
        b, t = mask.shape
        lengths = mask.sum(1).masked_fill(mask.sum(1) == 0, t + 1)  # an all-padding row tells nothing
        k = int(lengths.argmin())
        spans = Spans(mask)
        s, e = spans.starts[k], spans.ends[k]

        def cut(key, v):
            if not isinstance(v, torch.Tensor) or v.dim() == 0 or v.shape[0] != b:
                return v
            v = v[k:k + 1]
            return v[:, s:e] if v.dim() >= 2 and v.shape[1] == t and "label" not in key else v

        alone = {key: cut(key, v) for key, v in inputs.items()}
        try:
            got = self._record(store.roots, alone, context)
        except Exception:  # noqa: BLE001 - the model does not accept the cut batch: assume dependence
            return False
        expected = store.gather([idx[k]], alone["attention_mask"], self._devices(store))
        for n in store.roots:
            d = _max_diff(expected[n], got[n])
            if d is None or d > 0:
                return False
        return True

    def _devices(self, store: FeatureStore) -> dict[str, Any]:
        return {n: next(self.model.get_submodule(n).parameters()).device for n in store.roots + store.placeholders}

    @contextlib.contextmanager
    def replay(self, store: FeatureStore, idx, inputs: Mapping[str, Any]):
        """Within this block, the cached modules return ``store``'s outputs for the examples ``idx``."""
        if store.fingerprint != self.fingerprint():
            raise _err("the frozen backbone changed after its outputs were cached (a parameter was unfrozen or "
                       f"overwritten); keep it frozen while training {_FIX}")
        if isinstance(idx, torch.Tensor):
            idx = idx.tolist()
        mask = inputs.get("attention_mask")
        outs = store.gather(idx, mask, self._devices(store))
        patched = []
        try:
            for name, out in outs.items():
                module = self.model.get_submodule(name)
                patched.append((module, module.__dict__.get("forward", _MISSING)))
                module.forward = _constant(out)
            yield
        finally:
            for module, prev in reversed(patched):
                if prev is _MISSING:
                    del module.forward
                else:
                    module.forward = prev


def _constant(out: Any) -> Callable:
    def forward(*args, **kwargs):
        return out

    return forward
