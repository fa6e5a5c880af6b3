"""Diagonal Fisher information estimators for classification models.

For a model ``p(y | x, θ)`` and examples ``x_1..x_N`` (Kirkpatrick et al. 2017, https://arxiv.org/abs/1612.00796;
Kunstner et al. 2019 on empirical vs true Fisher, https://arxiv.org/abs/1905.12558):

* ``exact``:     ``F = 1/N Σ_i Σ_c p(c|x_i) (∇ log p(c|x_i))²``   -- the expectation over the model's predictions;
* ``sampled``:   ``F = 1/N Σ_i (∇ log p(ŷ_i|x_i))²`` with ``ŷ_i ~ p(·|x_i)`` -- an unbiased one-sample estimate of exact;
* ``empirical``: ``F = 1/N Σ_i (∇ log p(y_i|x_i))²`` with the true labels -- cheap, biased near a poor optimum.

``per_example=True`` squares each example's own gradient (the formulas above). Two exact implementations
(``per_example_impl``):

* ``"hooks"``: one ordinary forward + backward over the whole batch, with module hooks that compute, per layer, the
  sum over examples of the squared per-example gradients directly from the layer's input and output gradient (the
  idea of BackPACK's ``BatchGrad``/``SumGradSquared``, Dangel et al. 2020, https://arxiv.org/abs/1912.10985):
  ``nn.Linear`` (per-example ``Σ_t g_t a_tᵀ``), ``nn.Embedding`` (per-example segment sums of ``g`` over the
  positions holding each id; ``padding_idx`` gets nothing) and ``nn.LayerNorm`` (``Σ_t g_t·x̂_t`` and ``Σ_t g_t``).
  The backward differentiates only with respect to the hooked layers' outputs, so the (batch) weight gradients are
  never formed. ``exact`` takes one backward per class, ``sampled`` one backward with the sampled labels.
* ``"vmap"``: ``torch.func`` (``vmap`` over ``grad``) for chunks of ``chunk_size`` examples, not a Python loop of
  batch-1 passes; it works for any model ``torch.func`` can trace, at several times the cost of one backward
  (it materialises every parameter's per-example gradient).

``"auto"`` (default) uses the hooks where they provably apply and the vmap path otherwise: every requested
parameter must belong to exactly one module of a supported type (no tied weights, no per-instance ``forward``),
each such module must run at most once per forward on inputs whose first dimension is the batch, and the autograd
graph must show no other use of the parameter (a parameter used outside its module, e.g. through ``F.linear``).
Inputs shared by the batch (BERT's ``position_ids`` of shape ``[1, T]``) are broadcast to the batch inside the hook;
a forward of two examples with and without the hooks checks once per call that this changes no output. When a
check fails the rest of the call falls back to vmap (a debug log line says why).

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
    per_example_impl: Literal["auto", "hooks", "vmap"] = "auto",
) -> tuple[dict[str, torch.Tensor], int]:
    """Diagonal Fisher of ``model`` over ``batches`` (dicts of tensors with ``labels``, as a DataLoader yields).

    ``autocast_dtype`` (e.g. ``torch.bfloat16``) runs the forward passes under autocast, as mixed-precision training
    does; gradients are still squared and summed in float32 (squares of small half-precision gradients underflow).

    ``per_example_impl`` picks the per-example implementation (see the module docstring): ``"auto"`` (default) the
    hook-based one where it applies, else ``torch.func``; ``"hooks"`` the hook-based one or a ``ValueError``;
    ``"vmap"`` always ``torch.func`` (``chunk_size`` examples at a time; the hooks take a whole batch at once).

    Returns ``(fisher, n)``: float32 tensors keyed by parameter name (for ``param_names``, default all parameters
    that require grad) and the number of examples used (over all processes). ``batches`` should be the *full*
    (unsharded) data: under ``torch.distributed`` each rank keeps its share of the examples itself.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown Fisher estimator {estimator!r}; valid: {', '.join(ESTIMATORS)}")
    if num_samples is not None and num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    if per_example_impl not in ("auto", "hooks", "vmap"):
        raise ValueError(f"unknown per_example_impl {per_example_impl!r}; valid: auto, hooks, vmap")
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
    hooks = None
    try:
        for n, p in named.items():
            p.requires_grad_(n in fisher)
        if per_example and per_example_impl != "vmap":
            try:
                hooks = _HookFisher(model, named, fisher)
            except _Unsupported as exc:
                if per_example_impl == "hooks":
                    raise ValueError(f"per_example_impl='hooks' does not apply to this model: {exc}") from None
                logger.debug("per-example Fisher: hooks do not apply (%s); using torch.func", exc)
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
                if idx and hooks is not None:
                    try:
                        hooks.accumulate(inputs, labels, u, estimator, amp)
                    except _Unsupported as exc:
                        if per_example_impl == "hooks":
                            raise ValueError(f"per_example_impl='hooks' does not apply to this model: {exc}") from None
                        logger.debug("per-example Fisher: hooks do not apply (%s); using torch.func from here on", exc)
                        hooks.close()
                        hooks = None
                if idx and hooks is None:
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
        if hooks is not None:
            hooks.close()
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


# -- per-example Fisher from one batched backward, with module hooks ------------------------------------------------

# per-example weight gradients formed at a time (64 MiB in fp32): few large ops rather than many small ones (on a
# busy CPU every parallel op can wait a time slice for its threads), in reused memory (no page faults)
_CHUNK_ELEMS = 1 << 24


class _Workspace:
    """Scratch memory reused across layers and batches: large fresh CPU allocations cost page faults (as much as the
    arithmetic here)."""

    def __init__(self):
        self.bufs: dict = {}

    def get(self, key, n, dtype, device):
        buf = self.bufs.get(key)
        if buf is None or buf.numel() < n or buf.dtype != dtype or buf.device != device:
            buf = self.bufs[key] = torch.empty(n, dtype=dtype, device=device)
        return buf[:n]


def _add_linear_sq(fw, g, a, ws):
    """``fw += Σ_b (g_bᵀ a_b)²`` for ``g`` [b, T, out] and ``a`` [b, T, in]: the per-example gradients of up to
    ``_CHUNK_ELEMS`` elements at a time, formed in reused scratch memory, squared in place and summed."""
    b, out, inp = g.shape[0], g.shape[-1], a.shape[-1]
    gt = g.transpose(1, 2)
    acc = fw if fw.dtype == g.dtype else torch.zeros(out, inp, dtype=g.dtype, device=g.device)
    step = max(1, min(b, _CHUNK_ELEMS // max(1, out * inp)))
    step = -(-b // -(-b // step))  # balanced chunks
    buf = ws.get("pg", step * out * inp, g.dtype, g.device).view(step, out, inp)
    tmp = ws.get("sum", out * inp, g.dtype, g.device).view(out, inp) if step > 1 else None
    for s in range(0, b, step):
        n = min(step, b - s)
        pg = buf[:n]
        torch.bmm(gt[s:s + n], a[s:s + n], out=pg)
        if n == 1:
            acc.addcmul_(pg[0], pg[0])
        else:
            torch.sum(pg.square_(), 0, out=tmp)
            acc.add_(tmp)
    if acc is not fw:
        fw.add_(acc)


class _Unsupported(Exception):
    """The hook-based per-example Fisher does not apply (the caller falls back to torch.func)."""


class _Record:
    """What a hooked module saw in this forward."""

    __slots__ = ("calls", "edge", "out", "out_version", "problem", "x", "x_version")

    def __init__(self):
        self.calls = 0
        self.x = self.out = self.edge = self.problem = None
        self.x_version = self.out_version = 0


def _compute_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.promote_types(t.dtype, torch.float32)


class _HookFisher:
    """Adds the sum over examples of squared per-example gradients to ``fisher`` (name -> float32 tensor) for the
    parameters of supported modules, from one forward and one backward (one per class for ``exact``) per batch.

    Every check that could reject a batch runs before anything is added, so a rejected batch can be redone by the
    torch.func path. Hooks are removed by :meth:`close`."""

    SUPPORTED = (torch.nn.Linear, torch.nn.Embedding, torch.nn.LayerNorm)

    def __init__(self, model, named, fisher):
        self.model = model
        self.fisher = fisher
        owners: dict[int, list] = {}
        for mod in model.modules():
            for pname, p in mod._parameters.items():
                if p is not None:
                    owners.setdefault(id(p), []).append((mod, pname))
        self.plan: dict[torch.nn.Module, dict[str, str]] = {}  # module -> {"weight"/"bias": fisher name}
        self.param_of: dict[int, tuple] = {}  # id(param) -> (module, fisher name)
        for n in fisher:
            p = named[n]
            own = owners.get(id(p), [])
            if len(own) != 1:
                raise _Unsupported(f"parameter {n} is registered in {len(own)} modules (tied or not in a module)")
            mod, pname = own[0]
            if type(mod) not in self.SUPPORTED:
                raise _Unsupported(f"parameter {n} belongs to an unsupported {type(mod).__name__}")
            if "forward" in vars(mod):
                raise _Unsupported(f"parameter {n} belongs to a module with a replaced forward")
            if isinstance(mod, torch.nn.Embedding) and (mod.max_norm is not None or mod.scale_grad_by_freq):
                raise _Unsupported(f"embedding {n} uses max_norm/scale_grad_by_freq")
            if pname not in ("weight", "bias"):
                raise _Unsupported(f"parameter {n} is not a weight or bias")
            self.plan.setdefault(mod, {})[pname] = n
            self.param_of[id(p)] = (mod, n)
        self.rec: dict[torch.nn.Module, _Record] = {}
        self.bsz = 0
        self.active = False
        self.expanded = self.ambiguous = False
        self.probed = False
        self.ws = _Workspace()
        self.handles = [m.register_forward_hook(self._hook, prepend=True, with_kwargs=True) for m in self.plan]

    def close(self):
        for h in self.handles:
            h.remove()
        self.handles = []
        self.rec = {}

    # -- forward ----------------------------------------------------------------------------------------------------
    def _hook(self, module, args, kwargs, output):
        if not self.active:
            return None
        r = self.rec.get(module)
        if r is not None:
            r.calls += 1
            return None
        r = self.rec[module] = _Record()
        r.calls = 1
        x = args[0] if args else kwargs.get("input")
        b = self.bsz
        if not isinstance(x, torch.Tensor) or not isinstance(output, torch.Tensor):
            r.problem = f"{type(module).__name__} called without a tensor input/output"
            return None
        new_out = None
        if isinstance(module, torch.nn.Embedding):
            ok = x.ndim >= 1 and x.shape[0] == b
            if not ok and b > 1 and x.ndim >= 2 and x.shape[0] == 1:
                # ids shared by the whole batch (position ids [1, T]): broadcast, so that the gradient arriving here
                # is per example (the probe checks that this changes nothing downstream)
                x = x.expand(b, *x.shape[1:])
                output = new_out = output.expand(b, *output.shape[1:])
                self.expanded = ok = True
        else:
            min_nd = 2 if isinstance(module, torch.nn.Linear) else len(module.normalized_shape) + 1
            ok = x.ndim >= min_nd and x.shape[0] == b
        if not ok:
            r.problem = f"{type(module).__name__} input of shape {tuple(x.shape)} is not batch-first for batch {b}"
            return None
        if b > 1 and (x.ndim == 1 or b in x.shape[1:]):
            self.ambiguous = True  # the batch size also appears elsewhere in the shape: the probe settles it
        r.x, r.x_version = x, x._version
        r.out, r.out_version = output, output._version
        if output.requires_grad:
            r.edge = torch.autograd.graph.get_gradient_edge(output)
        return new_out

    def _forward(self, inputs, bsz, amp):
        self.rec, self.bsz, self.active = {}, bsz, True
        try:
            with amp:
                return _logits(self.model(**inputs)).float().log_softmax(-1)
        finally:
            self.active = False

    # -- checks -----------------------------------------------------------------------------------------------------
    def _check_records(self):
        for mod, r in self.rec.items():
            if r.calls > 1:
                raise _Unsupported(f"{type(mod).__name__} ({self.plan[mod]}) runs {r.calls} times per forward")
            if r.problem:
                raise _Unsupported(r.problem)

    def _check_graph(self, root):
        """Each requested parameter is used in the graph at most once, by its own module's output."""
        visited = set()
        in_edges: dict = {}
        parents: dict = {}
        stack = [root]
        visited.add(root)
        while stack:
            node = stack.pop()
            for nxt, _ in node.next_functions:
                if nxt is None:
                    continue
                in_edges[nxt] = in_edges.get(nxt, 0) + 1
                parents.setdefault(nxt, []).append(node)
                if nxt not in visited:
                    visited.add(nxt)
                    stack.append(nxt)
        uses: dict[int, int] = {}
        for node in visited:
            var = getattr(node, "variable", None)
            if var is None or id(var) not in self.param_of:
                continue
            k = 0
            for par in parents.get(node, []):
                # autocast casts a weight once per region and reuses the cast: count the cast's users
                if par.name() == "ToCopyBackward0" and len(par.next_functions) == 1:
                    k += in_edges.get(par, 0)
                else:
                    k += 1
            uses[id(var)] = k
        for pid, (mod, n) in self.param_of.items():
            k = uses.get(pid, 0)
            r = self.rec.get(mod)
            reached = r is not None and r.edge is not None and r.edge.node in visited
            if k > 1 or (k == 1) != reached:
                raise _Unsupported(f"parameter {n} is used {k} time(s) in the graph, its module's output "
                                   f"{'is' if reached else 'is not'} (shared or used outside its module)")

    def _check_versions(self):
        for mod, r in self.rec.items():
            if r.x is not None and (r.x._version != r.x_version or r.out._version != r.out_version):
                raise _Unsupported(f"the input or output of {type(mod).__name__} {self.plan[mod]} is modified "
                                   f"in place")
            r.out = None

    def _probe(self, inputs, logp, amp):
        """Once per call, where this batch could hide a mistake: the first two examples on their own, without the
        hooks, must give the same outputs as in the batch with the hooks (broadcasting shared ids to the batch
        changes nothing downstream); and where the batch size also appears elsewhere in an input's shape, the same
        two examples with the hooks must show the batch in dim 0 (2 is unlikely to appear elsewhere)."""
        sub = {k: v[:2] for k, v in inputs.items()}
        main = self.rec
        try:
            with torch.no_grad():
                if self.ambiguous:
                    self._forward(sub, 2, amp)
                    self._check_records()
                with amp:
                    ref = _logits(self.model(**sub)).float().log_softmax(-1)
        finally:
            self.rec = main
        got = logp.detach()[:2]
        # the same examples in batches of different sizes: equal up to rounding (coarse under autocast)
        tol = (5e-2 if isinstance(amp, torch.autocast) else 1e-3) * (1.0 + ref.abs().max().item())
        if got.shape != ref.shape or not (got - ref).abs().max().item() <= tol:
            raise _Unsupported("the hooks (broadcasting shared embedding ids to the batch) change the model's output")

    # -- one batch ----------------------------------------------------------------------------------------------------
    def accumulate(self, inputs, labels, u, estimator, amp):
        bsz = labels.shape[0]
        self.expanded = self.ambiguous = False
        logp = self._forward(inputs, bsz, amp)
        main = self.rec
        self._check_records()
        self._check_versions()
        if logp.grad_fn is not None:
            self._check_graph(logp.grad_fn)
        if (self.expanded or self.ambiguous) and not self.probed:
            self._probe(inputs, logp, amp)
            self.probed = True
        recs = [(m, r) for m, r in main.items() if r.edge is not None]
        if logp.grad_fn is None or not recs:
            return
        if estimator == "exact":
            p = logp.detach().exp()
            losses = [(p[:, c].sqrt() * logp[:, c]).sum() for c in range(logp.shape[-1])]
        else:
            y = labels if estimator == "empirical" else _sample_labels(logp, u)
            losses = [F.nll_loss(logp, y, reduction="sum")]  # example b's own loss has example b's gradient
        edges = [r.edge for _, r in recs]
        for i, loss in enumerate(losses):
            grads = torch.autograd.grad(loss, edges, retain_graph=i < len(losses) - 1, allow_unused=True)
            with torch.autocast(device_type=logp.device.type, enabled=False), torch.no_grad():
                for (mod, r), g in zip(recs, grads):
                    if g is not None:
                        self._add(mod, r.x, g)
            del grads
        self.rec = {}

    def _add(self, mod, x, g):
        names = self.plan[mod]
        fw = self.fisher[names["weight"]] if "weight" in names else None
        fb = self.fisher[names["bias"]] if "bias" in names else None
        b = g.shape[0]
        if isinstance(mod, torch.nn.Linear):
            g = g.reshape(b, -1, g.shape[-1]).to(_compute_dtype(g))
            if fb is not None:
                fb.add_(g.sum(1).square_().sum(0))
            if fw is not None:
                a = x.reshape(b, -1, x.shape[-1]).to(g.dtype)
                if a.shape[1] == 1:  # one position per example: Σ_b (g_b a_bᵀ)² = (g²)ᵀ a²
                    fw.add_(g[:, 0].square().T @ a[:, 0].square())
                else:
                    _add_linear_sq(fw, g, a, self.ws)
        elif isinstance(mod, torch.nn.Embedding):
            d = g.shape[-1]
            ids = x.reshape(b, -1)
            g = g.reshape(b, -1, d).to(_compute_dtype(g))
            keys = ids + torch.arange(b, device=ids.device)[:, None] * mod.num_embeddings  # (example, id)
            keys, g = keys.reshape(-1), g.reshape(-1, d)
            if mod.padding_idx is not None:
                keep = ids.reshape(-1) != mod.padding_idx
                keys, g = keys[keep], g[keep]
            uniq, inv = torch.unique(keys, return_inverse=True)
            sums = torch.zeros(uniq.shape[0], d, dtype=g.dtype, device=g.device).index_add_(0, inv, g)
            fw.index_add_(0, uniq % mod.num_embeddings, sums.square_().to(fw.dtype))
        else:  # LayerNorm
            ns = tuple(mod.normalized_shape)
            g = g.reshape(b, -1, *ns).to(_compute_dtype(g))
            if fb is not None:
                fb.add_(g.sum(1).square_().sum(0))
            if fw is not None:
                xhat = F.layer_norm(x.reshape(b, -1, *ns).to(g.dtype), ns, None, None, mod.eps)
                fw.add_(xhat.mul_(g).sum(1).square_().sum(0))
