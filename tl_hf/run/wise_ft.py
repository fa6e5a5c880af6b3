"""The WiSE-FT sweep: evaluate ``theta(alpha)`` for a list of alphas on the validation set and on extra evaluation
sets, write the curve (``wise_ft.json`` + ``wise_ft.png``) and leave (and save) the model at the alpha that is best
on the validation set only (the extra sets are reported, never used for the choice)."""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

from tl_hf.core.state import atomic_write_json
from tl_hf.core.wise_ft import check_alpha, check_compatible, load_interpolated, snapshot

__all__ = ["wise_ft_sweep", "plot_wise_ft"]


def plot_wise_ft(curve: list[dict], metric: str, path: str) -> str:
    """``metric`` against alpha, one line per evaluation set."""
    from tl_hf.run.plots import _figure

    fig = _figure(6, 4)
    ax = fig.add_subplot(1, 1, 1)
    sets = [k for k in curve[0] if k.endswith(f"_{metric}")]
    for key in sets:
        ax.plot([c["alpha"] for c in curve], [c[key] for c in curve], "o-", label=key[: -len(metric) - 1])
    ax.set_xlabel("alpha (0 = initial, 1 = fine-tuned)")
    ax.set_ylabel(metric)
    ax.legend(loc="best")
    ax.set_title("WiSE-FT")
    fig.tight_layout()
    fig.savefig(path)
    return path


def _evaluate_alpha(trainer, model, init_state, ft_state, alpha, extra_eval_sets) -> dict[str, Any]:
    load_interpolated(model, init_state, ft_state, alpha)
    row: dict[str, Any] = {"alpha": alpha, **trainer.evaluate(metric_key_prefix="eval")}
    for name, ds in (extra_eval_sets or {}).items():
        row.update(trainer.evaluate(eval_dataset=ds, metric_key_prefix=name))
    return row


def wise_ft_sweep(trainer, init_state: Mapping[str, Any], alphas: Sequence[float], *,
                  extra_eval_sets: Mapping[str, Any] | None = None, metric: str = "accuracy",
                  greater_is_better: bool = True, output_dir: str | None = None, save: bool = False) -> dict[str, Any]:
    """Evaluate every alpha with ``trainer.evaluate`` on ``trainer.eval_dataset`` (``eval_*``) and each extra set
    (``<name>_*``); choose alpha on ``eval_<metric>``; leave ``trainer.model`` at that alpha; write the curve into
    ``output_dir`` and, with ``save``, the chosen model into ``output_dir/wise_ft``. Returns ``{"curve", "alpha",
    "metric"}``."""
    alphas = [check_alpha(a) for a in alphas]
    if not alphas:
        raise ValueError("wise_ft alphas must not be empty (e.g. [0.25, 0.5, 0.75, 1.0])")
    if trainer.eval_dataset is None:
        raise ValueError("wise_ft chooses alpha on the validation set: the trainer needs an eval_dataset")
    model = trainer.model
    ft_state = snapshot(model)
    check_compatible(init_state, ft_state)
    averaging = getattr(trainer, "averaging", None)  # evaluate theta(alpha) itself, not a weight average
    swap = bool(averaging is not None and getattr(averaging, "eval_with_average", False))
    if swap:
        averaging.eval_with_average = False
    try:
        curve = [_evaluate_alpha(trainer, model, init_state, ft_state, a, extra_eval_sets) for a in alphas]
    finally:
        if swap:
            averaging.eval_with_average = True
    key = f"eval_{metric}"
    if key not in curve[0]:
        raise ValueError(f"wise_ft: the evaluation has no {key!r} (it has {', '.join(sorted(curve[0]))})")
    best = (max if greater_is_better else min)(curve, key=lambda r: r[key])
    load_interpolated(model, init_state, ft_state, best["alpha"])
    result = {"curve": curve, "alpha": best["alpha"], "metric": key, "chosen_on": "validation (eval_dataset)"}
    if output_dir is not None and trainer.args.should_save:
        os.makedirs(output_dir, exist_ok=True)
        atomic_write_json(os.path.join(output_dir, "wise_ft.json"), result)
        plot_wise_ft(curve, metric, os.path.join(output_dir, "wise_ft.png"))
        if save:
            trainer.save_model(os.path.join(output_dir, "wise_ft"))
    return result
