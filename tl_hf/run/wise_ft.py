"""The WiSE-FT sweep: evaluate ``theta(alpha)`` for a list of alphas on the validation set and on extra evaluation
sets, write the curve (``wise_ft.json`` + ``wise_ft.png``) and leave (and save) the model at the alpha that is best
on the validation set only (the extra sets are reported, never used for the choice)."""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

from transformers import TrainerCallback

from tl_hf.core.progress import progress_bar, progress_bars
from tl_hf.core.state import atomic_write_json
from tl_hf.core.wise_ft import check_alpha, check_compatible, load_interpolated, snapshot

__all__ = ["LP_INIT_FILE", "WiseFTInit", "evaluate_extra_sets", "plot_wise_ft", "run_wise_ft", "wise_ft_sweep"]


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
        with progress_bars(not trainer.args.disable_tqdm):  # one bar step per alpha, on the local main process
            curve = [_evaluate_alpha(trainer, model, init_state, ft_state, a, extra_eval_sets)
                     for a in progress_bar(alphas, desc="WiSE-FT sweep", unit="alpha")]
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


# -- the run template's wise_ft section ------------------------------------------------------------------------------
#: theta_init of LP-FT (the probed head) in output_dir while the run is in its fine-tuning phase (a resume reads it;
#: the leading "_" keeps it out of pushes)
LP_INIT_FILE = "_tl_hf_wise_ft_init.safetensors"


def _lp_ft_phases(trainer) -> bool:
    """Whether the trainer runs LP-FT: a gradual schedule whose first phase trains the head only."""
    freezer = trainer.freezer
    phases = freezer.phases
    return bool(phases) and len(phases) > 1 and set(phases[0][1]) == {trainer.layer_map.head_depth}


class WiseFTInit:
    """theta_init of a run's WiSE-FT sweep: the model before training (after re-initialisation; a resumed run rebuilds
    the same one: seeded head, seeded re-init), or with LP-FT the model at the phase change (the probed head), kept in
    ``output_dir/_tl_hf_wise_ft_init.safetensors`` for a resume past the phase change."""

    def __init__(self, trainer) -> None:
        from tl_hf.core.wise_ft import snapshot

        self.trainer = trainer
        self.lp_ft = _lp_ft_phases(trainer)
        self.state = None if self.lp_ft else snapshot(trainer.model)
        self.source = "the linear-probe head (LP-FT phase change)" if self.lp_ft else "the model before fine-tuning"
        if self.lp_ft:
            trainer.add_callback(_LPInitCallback(self))

    @property
    def path(self) -> str:
        return os.path.join(self.trainer.args.output_dir, LP_INIT_FILE)

    def capture(self) -> None:
        from safetensors.torch import save_file

        from tl_hf.core.wise_ft import snapshot

        self.state = snapshot(self.trainer.model)
        if self.trainer.args.should_save:
            os.makedirs(self.trainer.args.output_dir, exist_ok=True)
            tmp = self.path + ".tmp"
            save_file({k: v.contiguous() for k, v in self.state.items()}, tmp)
            os.replace(tmp, self.path)

    def restore(self) -> None:
        from safetensors.torch import load_file

        if not os.path.exists(self.path):
            raise ValueError(f"wise_ft: this run resumes in the fine-tuning phase of LP-FT, but the linear-probe "
                             f"weights (theta_init) saved at the phase change are missing ({self.path}); rerun from "
                             "the start (training.overwrite_output_dir: true) or drop wise_ft.alphas")
        self.state = load_file(self.path)


class _LPInitCallback(TrainerCallback):
    """Takes theta_init at the first step of LP-FT's fine-tuning phase (restores it on a resume past it)."""

    def __init__(self, holder: WiseFTInit) -> None:
        self.holder = holder

    def on_train_begin(self, args, state, control, **kwargs):
        if state.global_step > 0 and (self.holder.trainer.freezer.phase or 0) > 0:
            self.holder.restore()

    def on_step_end(self, args, state, control, **kwargs):  # after the phase change, before a checkpoint is saved
        if self.holder.state is None and (self.holder.trainer.freezer.phase or 0) > 0:
            self.holder.capture()

    def on_train_end(self, args, state, control, **kwargs):
        if self.holder.state is None:  # the run ended inside the linear-probe phase
            self.holder.capture()


def evaluate_extra_sets(trainer, sets: Mapping[str, Any] | None) -> dict[str, Any]:
    """``trainer.evaluate`` on each extra eval set: ``{<name>_accuracy: ..., <name>_loss: ...}``."""
    out: dict[str, Any] = {}
    for name, ds in (sets or {}).items():
        out.update(trainer.evaluate(eval_dataset=ds, metric_key_prefix=name))
    return out


def run_wise_ft(cfg, trainer, init: WiseFTInit, extra_sets: Mapping[str, Any] | None, *, save: bool,
                log=print) -> dict[str, Any]:
    """The config's sweep (``wise_ft.alphas``) after training: the curve in ``output_dir/wise_ft.json`` / ``.png``,
    the chosen alpha's model in ``output_dir/wise_ft/`` (with ``save``); the trainer's model is the fine-tuned one
    again afterwards. Returns the ``wise_ft_*`` results."""
    from tl_hf.core.wise_ft import snapshot

    if init.state is None:
        raise ValueError("wise_ft: theta_init was never taken (the training did not run)")
    ft = snapshot(trainer.model)
    w = cfg.wise_ft
    try:
        res = wise_ft_sweep(trainer, init.state, w.alphas, extra_eval_sets=extra_sets, metric=w.metric,
                            greater_is_better=w.greater_is_better, output_dir=trainer.args.output_dir, save=save)
    finally:
        trainer.model.load_state_dict(ft)
    best = next(r for r in res["curve"] if r["alpha"] == res["alpha"])
    out = {"wise_ft_alpha": res["alpha"], "wise_ft_init": init.source}
    out.update({f"wise_ft_{k}": v for k, v in best.items() if k != "alpha" and isinstance(v, (int, float))
                and not k.endswith(("_runtime", "_per_second"))})
    log(f"wise_ft: alpha {res['alpha']} chosen on {res['metric']} (validation only; theta_init = {init.source}); "
        + ", ".join(f"alpha {r['alpha']}: {r[res['metric']]:.4f}" for r in res["curve"])
        + (f"; model in {os.path.join(trainer.args.output_dir, 'wise_ft')}" if save else ""))
    return out
