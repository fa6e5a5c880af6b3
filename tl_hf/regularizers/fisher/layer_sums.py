"""Sums over examples of squared per-example gradients for ``nn.Conv2d`` and ``nn.BatchNorm{1,2,3}d`` (eval mode),
from a layer's input ``x`` and the gradient ``g`` of the loss with respect to its output (both batch-first).

* Conv2d: example b's weight gradient is ``Σ_l g_b[:, l] u_b[:, l]ᵀ`` per group, where ``u_b`` is example b's input
  unfolded into the ``C_in/groups · kh · kw`` values under the kernel at output position ``l`` (``F.unfold``, with the
  layer's stride, padding and dilation; a 1x1 kernel without padding needs no unfold, only the stride). A grouped or
  depthwise convolution instead asks the convolution's own weight-gradient kernel for the per-example gradients, the
  examples stacked as ``n · groups`` groups of one batch-1 convolution (an unfold of a depthwise conv costs ten times
  more). The bias gradient is ``Σ_l g_b[:, l]``.
* BatchNorm in eval mode is a per-channel affine map of ``x̂ = (x - running_mean) / sqrt(running_var + eps)``:
  weight gradient ``Σ_positions g_b · x̂_b``, bias gradient ``Σ_positions g_b``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["batchnorm_sq", "conv2d_input", "conv2d_sq"]


def conv2d_input(mod: torch.nn.Conv2d, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
    """``(input, padding)`` as the convolution itself sees them: string padding ('same', 'valid') and non-zero
    padding modes are applied to ``x`` here, as ``Conv2d._conv_forward`` does, leaving integer padding."""
    if mod.padding_mode != "zeros":
        return F.pad(x, mod._reversed_padding_repeated_twice, mode=mod.padding_mode), (0, 0)
    if isinstance(mod.padding, str):
        return F.pad(x, mod._reversed_padding_repeated_twice), (0, 0)
    return x, tuple(mod.padding)


def _unfold(mod, x, padding):
    """``[n, C_in · kh · kw, L]``: the input under the kernel at every output position (channel-major, as the weight)."""
    if tuple(mod.kernel_size) == (1, 1) and padding == (0, 0):
        return x[:, :, ::mod.stride[0], ::mod.stride[1]].flatten(2)
    return F.unfold(x, mod.kernel_size, dilation=mod.dilation, padding=padding, stride=mod.stride)


def conv2d_sq(mod: torch.nn.Conv2d, x, g, fw, fb, chunk_elems: int) -> None:
    """``fw += Σ_b (∂ℓ_b/∂W)²`` and ``fb += Σ_b (∂ℓ_b/∂bias)²`` (either may be ``None``); ``g`` [b, C_out, H', W']."""
    b, cout = g.shape[0], g.shape[1]
    groups = mod.groups
    g = g.flatten(2)  # [b, C_out, L]
    if fb is not None:
        fb.add_(g.sum(2).square_().sum(0))
    if fw is None:
        return
    x, padding = conv2d_input(mod, x.to(g.dtype))
    kk = fw[0].numel()  # C_in/groups · kh · kw
    length = g.shape[2]
    acc = fw.view(groups, cout // groups, kk) if fw.dtype == g.dtype else torch.zeros(
        groups, cout // groups, kk, dtype=g.dtype, device=g.device)
    per_example = max(cout * kk, (1 if groups > 1 else groups * kk) * length, x[0].numel())
    step = max(1, min(b, chunk_elems // max(1, per_example)))
    if groups > 1:
        for s in range(0, b, step):
            acc.add_(_grouped_per_example(mod, x[s:s + step], g[s:s + step], padding).square_().sum(0)
                     .view_as(acc))
        if acc.data_ptr() != fw.data_ptr():
            fw.add_(acc.reshape(fw.shape).to(fw.dtype))
        return
    for s in range(0, b, step):
        u = _unfold(mod, x[s:s + step], padding)
        n = u.shape[0]
        u = u.reshape(n, groups, kk, length)
        gs = g[s:s + step].reshape(n, groups, cout // groups, length)
        pg = torch.matmul(gs, u.transpose(-1, -2))  # [n, groups, C_out/groups, kk]: per-example weight gradients
        acc.add_(pg.square_().sum(0))
    if acc.data_ptr() != fw.data_ptr():
        fw.add_(acc.reshape(fw.shape).to(fw.dtype))


def _grouped_per_example(mod, x, g, padding):
    """``[n, C_out, C_in/groups, kh, kw]``: each example's weight gradient of a grouped convolution, as the weight
    gradient of one convolution over the ``n`` examples side by side in the channels (``n · groups`` groups)."""
    n, cout = g.shape[0], g.shape[1]
    weight = mod.weight.detach().to(x.dtype).repeat(n, 1, 1, 1)
    go = g.reshape(1, n * cout, *_out_hw(mod, x, padding))  # g: [n, C_out, L]
    gw = torch.ops.aten.convolution_backward(go, x.reshape(1, -1, *x.shape[2:]), weight, None, mod.stride, padding,
                                             mod.dilation, False, [0, 0], mod.groups * n, [False, True, False])[1]
    return gw.view(n, *mod.weight.shape)


def _out_hw(mod, x, padding):
    return tuple((x.shape[2 + i] + 2 * padding[i] - mod.dilation[i] * (mod.kernel_size[i] - 1) - 1) // mod.stride[i] + 1
                 for i in range(2))


def batchnorm_sq(mod: torch.nn.modules.batchnorm._BatchNorm, x, g, fw, fb) -> None:
    """The same sums for a batch norm that normalises with its running statistics; ``x``, ``g`` [b, C, *]."""
    b, c = g.shape[0], g.shape[1]
    g = g.reshape(b, c, -1)
    if fb is not None:
        fb.add_(g.sum(2).square_().sum(0))
    if fw is not None:
        mean = mod.running_mean.to(g.dtype)[None, :, None]
        inv = (mod.running_var.to(g.dtype) + mod.eps).rsqrt()[None, :, None]
        xhat = (x.reshape(b, c, -1).to(g.dtype) - mean).mul_(inv)
        fw.add_(xhat.mul_(g).sum(2).square_().sum(0))
