"""The hook path's rule for parameters held directly by a module of any other type (a ViT's ``cls_token`` and
``position_embeddings``, DINOv2's LayerScale ``lambda1``, a custom layer): from the module's recorded call and the
gradient ``g`` of the loss with respect to its output, ``torch.func`` takes each example's vector-Jacobian product
through *that module's forward alone* (``vmap`` over ``vjp``, the examples one at a time), with respect to the
module's own parameters. Its sub-modules run inside as constants (their own hooks are idle); only the module is
recomputed, not the network.

It is exact when the module treats the examples independently: the hook path compares the recomputed per-example
outputs with the batch's output (:func:`same_output`, before anything is added), and its graph check makes sure the
parameters are used nowhere outside the module.
"""

from __future__ import annotations

import torch

__all__ = ["ModuleCall", "module_grads", "same_output"]


class ModuleCall:
    """A module's recorded call: its arguments with the batch-first tensors picked out, and their versions."""

    __slots__ = ("args", "kwargs", "arg_slots", "kwarg_slots", "tensors", "versions")

    def __init__(self, args, kwargs):
        self.args, self.kwargs = tuple(args), dict(kwargs)
        self.arg_slots = [i for i, a in enumerate(self.args) if isinstance(a, torch.Tensor)]
        self.kwarg_slots = [k for k, v in self.kwargs.items() if isinstance(v, torch.Tensor)]
        self.tensors = [self.args[i] for i in self.arg_slots] + [self.kwargs[k] for k in self.kwarg_slots]
        self.versions = [t._version for t in self.tensors]

    def problem(self, bsz: int) -> str | None:
        if not self.tensors:
            return "called without a tensor input"
        bad = [tuple(t.shape) for t in self.tensors if t.ndim == 0 or t.shape[0] != bsz]
        return f"input of shape {bad[0]} is not batch-first for batch {bsz}" if bad else None

    def modified(self) -> bool:
        return any(t._version != v for t, v in zip(self.tensors, self.versions))

    def call_one(self, mod, params, *ts):
        """The module on one example (``ts``: its slices of the batch-first tensors, without the batch dim)."""
        from torch.func import functional_call

        args, kwargs = list(self.args), dict(self.kwargs)
        for i, t in zip(self.arg_slots, ts):
            args[i] = t[None]
        for k, t in zip(self.kwarg_slots, ts[len(self.arg_slots):]):
            kwargs[k] = t[None]
        return functional_call(mod, params, tuple(args), kwargs, strict=False)[0]


def module_grads(mod, names: dict[str, str], call: ModuleCall, g, amp):
    """``(outputs, grads)``: the module recomputed one example at a time, and each example's gradient of its own
    parameters ``names`` ({attribute: fisher name}) for the output gradient ``g`` ({attribute: [b, *shape]})."""
    from torch.func import vjp, vmap

    params = {a: getattr(mod, a).detach() for a in names}

    def one(g_b, *ts):
        y, pull = vjp(lambda ps: call.call_one(mod, ps, *ts), params)
        return y, pull(g_b.to(y.dtype))[0]

    with torch.no_grad(), amp:
        return vmap(one)(g, *call.tensors)


def same_output(ys, out, amp) -> bool:
    """Whether the per-example recomputation ``ys`` gives the batch's output ``out`` (up to rounding)."""
    ref = out.detach()
    tol = (5e-2 if isinstance(amp, torch.autocast) else 1e-3) * (1.0 + ref.abs().max().item())
    return ys.shape == ref.shape and (ys.to(ref.dtype) - ref).abs().max().item() <= tol
