"""Per-example Fisher from one batched backward with module hooks (``nn.Linear``, ``nn.Embedding``,
``nn.LayerNorm``, ``nn.Conv2d``, eval-mode ``nn.BatchNorm*d``: BackPACK-style sums of squared per-example gradients;
parameters held directly by any other module: a per-example vjp of that module alone, :mod:`.module_vjp`); see the
package docstring for when it applies."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tl_hf.regularizers.fisher.common import is_multilabel, log_probs, logits_of, nll_sum, sample_labels
from tl_hf.regularizers.fisher.layer_sums import batchnorm_sq, conv2d_sq
from tl_hf.regularizers.fisher.module_vjp import ModuleCall, module_grads, same_output

__all__ = ["HookFisher", "Unsupported"]

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


class Unsupported(Exception):
    """The hook-based per-example Fisher does not apply (the caller falls back to torch.func)."""


class _Record:
    """What a hooked module saw in this forward."""

    __slots__ = ("call", "calls", "edge", "out", "out_version", "problem", "x", "x_version")

    def __init__(self):
        self.calls = 0
        self.x = self.out = self.edge = self.problem = self.call = None
        self.x_version = self.out_version = 0


def _compute_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.promote_types(t.dtype, torch.float32)


def _typed(mod: torch.nn.Module, pname: str) -> bool:
    """Whether a parameter has a closed-form rule here (its module's class forward, a weight or bias); the rest go
    through :mod:`.module_vjp`."""
    if type(mod) not in HookFisher.SUPPORTED or "forward" in vars(mod) or pname not in ("weight", "bias"):
        return False
    if isinstance(mod, torch.nn.Embedding):
        return mod.max_norm is None and not mod.scale_grad_by_freq
    return True


def _min_ndim(mod: torch.nn.Module) -> int:
    """The fewest input dims with a batch dim in front (Linear [b, *, in], Conv2d [b, C, H, W], ...)."""
    if isinstance(mod, torch.nn.LayerNorm):
        return len(mod.normalized_shape) + 1
    return {torch.nn.Conv2d: 4, torch.nn.BatchNorm3d: 5}.get(type(mod), 2)


class HookFisher:
    """Adds the sum over examples of squared per-example gradients to ``fisher`` (name -> float32 tensor) for the
    parameters of supported modules, from one forward and one backward (one per class for ``exact``) per batch.

    Every check that could reject a batch runs before anything is added, so a rejected batch can be redone by the
    torch.func path. Hooks are removed by :meth:`close`."""

    SUPPORTED = (torch.nn.Linear, torch.nn.Embedding, torch.nn.LayerNorm, torch.nn.Conv2d, torch.nn.BatchNorm1d,
                 torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)

    def __init__(self, model, named, fisher):
        self.model = model
        self.fisher = fisher
        owners: dict[int, list] = {}
        for mod in model.modules():
            for pname, p in mod._parameters.items():
                if p is not None:
                    owners.setdefault(id(p), []).append((mod, pname))
        self.plan: dict[torch.nn.Module, dict[str, str]] = {}  # module -> {"weight"/"bias": fisher name}
        self.generic: dict[torch.nn.Module, dict[str, str]] = {}  # module -> {attribute: fisher name}
        self.param_of: dict[int, tuple] = {}  # id(param) -> (module, fisher name)
        for n in fisher:
            p = named[n]
            own = owners.get(id(p), [])
            if len(own) != 1:
                raise Unsupported(f"parameter {n} is registered in {len(own)} modules (tied or not in a module)")
            mod, pname = own[0]
            if mod is model:
                raise Unsupported(f"parameter {n} belongs to the model itself, not to a layer")
            (self.plan if _typed(mod, pname) else self.generic).setdefault(mod, {})[pname] = n
            self.param_of[id(p)] = (mod, n)
        self.rec: dict[torch.nn.Module, _Record] = {}
        self.bsz = 0
        self.active = False
        self.expanded = self.ambiguous = False
        self.probed = False
        self.ws = _Workspace()
        self.handles = [m.register_forward_hook(self._hook, prepend=True, with_kwargs=True)
                        for m in [*self.plan, *self.generic]]

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
        b = self.bsz
        if module in self.generic:
            return self._hook_generic(module, r, args, kwargs, output)
        x = args[0] if args else kwargs.get("input")
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
            ok = x.ndim >= _min_ndim(module) and x.shape[0] == b
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and (module.training
                                                                               or module.running_mean is None):
                r.problem = f"{type(module).__name__} normalises with batch statistics (mixes the examples)"
                return None
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

    def _hook_generic(self, module, r, args, kwargs, output):
        b = self.bsz
        if not isinstance(output, torch.Tensor) or output.ndim == 0 or output.shape[0] != b:
            r.problem = f"{type(module).__name__} output is not a batch-first tensor"
            return None
        r.call = ModuleCall(args, kwargs)
        r.problem = r.call.problem(b)
        if b > 1 and any(b in t.shape[1:] for t in (output, *r.call.tensors)):
            self.ambiguous = True
        r.out, r.out_version = output, output._version
        if output.requires_grad:
            r.edge = torch.autograd.graph.get_gradient_edge(output)
        return None

    def _forward(self, inputs, bsz, amp, multilabel=False):
        self.rec, self.bsz, self.active = {}, bsz, True
        try:
            with amp:
                return log_probs(logits_of(self.model(**inputs)), multilabel)
        finally:
            self.active = False

    # -- checks -----------------------------------------------------------------------------------------------------
    def _check_records(self):
        for mod, r in self.rec.items():
            if r.calls > 1:
                raise Unsupported(f"{type(mod).__name__} ({self.plan[mod]}) runs {r.calls} times per forward")
            if r.problem:
                raise Unsupported(r.problem)

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
            if mod in self.generic:
                continue
            k = uses.get(pid, 0)
            r = self.rec.get(mod)
            reached = r is not None and r.edge is not None and r.edge.node in visited
            if k > 1 or (k == 1) != reached:
                raise Unsupported(f"parameter {n} is used {k} time(s) in the graph, its module's output "
                                   f"{'is' if reached else 'is not'} (shared or used outside its module)")
        self._check_generic_graph(root)

    def _check_generic_graph(self, root):
        """The parameters of the other modules are reached only through their module's output (any number of uses
        inside it): a walk from the loss that stops at those outputs meets none of them."""
        stops = {r.edge.node for m, r in self.rec.items() if m in self.generic and r.edge is not None}
        if not any(mod in self.generic for mod, _ in self.param_of.values()):
            return
        seen, stack = {root}, [root]
        while stack:
            node = stack.pop()
            var = getattr(node, "variable", None)
            hit = self.param_of.get(id(var)) if var is not None else None
            if hit is not None and hit[0] in self.generic:
                raise Unsupported(f"parameter {hit[1]} is used outside its {type(hit[0]).__name__}")
            if node in stops:
                continue
            for nxt, _ in node.next_functions:
                if nxt is not None and nxt not in seen:
                    seen.add(nxt)
                    stack.append(nxt)

    def _check_versions(self):
        for mod, r in self.rec.items():
            changed = r.x is not None and r.x._version != r.x_version
            changed |= r.call is not None and r.call.modified()
            if r.out is not None and (changed or r.out._version != r.out_version):
                names = self.plan.get(mod) or self.generic[mod]
                raise Unsupported(f"the input or output of {type(mod).__name__} {names} is modified in place")
            if mod not in self.generic:
                r.out = None  # the other modules' outputs are compared with their per-example recomputation

    def _probe(self, inputs, logp, amp, multilabel=False):
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
                    ref = log_probs(logits_of(self.model(**sub)), multilabel)
        finally:
            self.rec = main
        got = logp.detach()[:2]
        # the same examples in batches of different sizes: equal up to rounding (coarse under autocast)
        tol = (5e-2 if isinstance(amp, torch.autocast) else 1e-3) * (1.0 + ref.abs().max().item())
        if got.shape != ref.shape or not (got - ref).abs().max().item() <= tol:
            raise Unsupported("the hooks (broadcasting shared embedding ids to the batch) change the model's output")

    # -- one batch ----------------------------------------------------------------------------------------------------
    def accumulate(self, inputs, labels, u, estimator, amp):
        bsz = labels.shape[0]
        self.expanded = self.ambiguous = False
        logp = self._forward(inputs, bsz, amp, is_multilabel(labels))
        main = self.rec
        self._check_records()
        self._check_versions()
        if logp.grad_fn is not None:
            self._check_graph(logp.grad_fn)
        if (self.expanded or self.ambiguous) and not self.probed:
            self._probe(inputs, logp, amp, is_multilabel(labels))
            self.probed = True
        recs = [(m, r) for m, r in main.items() if r.edge is not None]
        if logp.grad_fn is None or not recs:
            return
        if estimator == "exact":
            p = logp.detach().exp()
            losses = [(p[:, c].sqrt() * logp[:, c]).sum() for c in range(logp.shape[-1])]
        else:
            y = labels if estimator == "empirical" else sample_labels(logp, u)
            losses = [nll_sum(logp, y)]  # example b's own loss has example b's gradient
        edges = [r.edge for _, r in recs]
        for i, loss in enumerate(losses):
            grads = torch.autograd.grad(loss, edges, retain_graph=i < len(losses) - 1, allow_unused=True)
            # the other modules first: their check (on the first loss) can still reject the batch
            self._add_generic([(m, r, g) for (m, r), g in zip(recs, grads) if m in self.generic and g is not None],
                              amp, check=i == 0)
            with torch.autocast(device_type=logp.device.type, enabled=False), torch.no_grad():
                for (mod, r), g in zip(recs, grads):
                    if g is not None and mod not in self.generic:
                        self._add(mod, r.x, g)
            del grads
        self.rec = {}

    def _add_generic(self, items, amp, check):
        """Per-example vjps of the other modules (:mod:`.module_vjp`); every check passes before anything is added."""
        done = []
        for mod, r, g in items:
            try:
                ys, grads = module_grads(mod, self.generic[mod], r.call, g, amp)
            except (RuntimeError, NotImplementedError) as exc:
                raise Unsupported(f"{type(mod).__name__} cannot be vmapped ({str(exc).splitlines()[0][:120]})") from None
            if check and not same_output(ys, r.out, amp):
                raise Unsupported(f"{type(mod).__name__} on one example at a time does not give its batch output "
                                  "(it mixes the examples)")
            done.append((mod, grads))
        for mod, grads in done:
            for a, n in self.generic[mod].items():
                self.fisher[n].add_(grads[a].to(torch.float32).square().sum(0))

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
        elif isinstance(mod, torch.nn.Conv2d):
            conv2d_sq(mod, x, g.to(_compute_dtype(g)), fw, fb, _CHUNK_ELEMS)
        elif isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
            batchnorm_sq(mod, x, g.to(_compute_dtype(g)), fw, fb)
        else:  # LayerNorm
            ns = tuple(mod.normalized_shape)
            g = g.reshape(b, -1, *ns).to(_compute_dtype(g))
            if fb is not None:
                fb.add_(g.sum(1).square_().sum(0))
            if fw is not None:
                xhat = F.layer_norm(x.reshape(b, -1, *ns).to(g.dtype), ns, None, None, mod.eps)
                fw.add_(xhat.mul_(g).sum(1).square_().sum(0))
