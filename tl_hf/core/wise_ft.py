"""WiSE-FT weight-space interpolation (Wortsman et al. 2022, https://arxiv.org/abs/2109.01903):
``theta(alpha) = (1 - alpha) * theta_init + alpha * theta_ft``, over every floating-point parameter and buffer.

``theta_init`` is what the fine-tuning started from: the pretrained backbone with the head as it was at the start
(zero-initialised or random as the model's ``_init_weights`` made it), or the linear-probe head after the first phase
of LP-FT (take :func:`snapshot` at the phase change). The sweep over a list of alphas, its curve and the choice on the
validation split are :func:`tl_hf.run.wise_ft.wise_ft_sweep`.
"""

from __future__ import annotations

from typing import Mapping

import torch

__all__ = ["check_alpha", "check_compatible", "interpolate_state", "load_interpolated", "snapshot"]


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of ``model``'s state (the ``theta_init`` or ``theta_ft`` of an interpolation)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def check_alpha(alpha) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"wise_ft alpha must be a number in [0, 1], got {alpha!r}")
    return float(alpha)


def check_compatible(init: Mapping[str, torch.Tensor], ft: Mapping[str, torch.Tensor]) -> None:
    """Same names and shapes; a head whose shape changed is refused (there is no ``theta_init`` to move from)."""
    missing = sorted(set(ft) ^ set(init))
    if missing:
        raise ValueError(f"wise_ft: the initial and fine-tuned models differ in parameter {missing[0]!r} "
                         f"({len(missing)} in all); interpolate two states of the same model")
    for k, v in ft.items():
        if init[k].shape != v.shape:
            raise ValueError(f"wise_ft: {k!r} has shape {tuple(init[k].shape)} initially and {tuple(v.shape)} after "
                             "fine-tuning (the head's shape changed); WiSE-FT needs the same head in both")


def interpolate_state(init: Mapping[str, torch.Tensor], ft: Mapping[str, torch.Tensor],
                      alpha: float) -> dict[str, torch.Tensor]:
    """``(1 - alpha) * init + alpha * ft`` for floating-point tensors; others (ids, counters) are taken from ``ft``.
    ``alpha = 0`` and ``1`` return the two states exactly."""
    alpha = check_alpha(alpha)
    check_compatible(init, ft)
    out = {}
    for k, v in ft.items():
        a = init[k].to(v.device)
        if not torch.is_floating_point(v) or alpha == 1.0:
            out[k] = v.clone()
        elif alpha == 0.0:
            out[k] = a.to(v.dtype, copy=True)
        else:
            out[k] = torch.lerp(a.to(v.dtype), v, alpha)
    return out


def load_interpolated(model: torch.nn.Module, init: Mapping[str, torch.Tensor], ft: Mapping[str, torch.Tensor],
                      alpha: float) -> None:
    """Put ``theta(alpha)`` into ``model`` (in place, on its devices)."""
    state = interpolate_state(init, ft, alpha)
    model.load_state_dict(state)
