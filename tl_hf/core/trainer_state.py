"""TransferTrainer's checkpoint state and finiteness guard, as a mixin of :class:`~tl_hf.core.trainer.TransferTrainer`.

What a checkpoint holds beyond the Trainer's own files (``tl_hf_state.json``, each regularizer's state, the weight
average), how a resume reads it back (refusing untrusted pickles and truncated files first), and the one rule that
nothing non-finite is saved: every save (checkpoint, ``save_model``, the run's outputs) first passes
:meth:`CheckpointStateMixin.check_finite`.

The mixin relies on the attributes TransferTrainer sets (``freezer``, ``llrd``, ``layer_map``, ``regularizers``,
``averager``, ``stop_on_non_finite``, ``config_fingerprint``) and on ``transformers.Trainer`` after it in the MRO.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import asdict
from typing import Any

import torch

from tl_hf.core.fsdp import freeze_as_saved, full_state
from tl_hf.core.state import STATE_FILE, atomic_write_json, read_json, refuse_untrusted_pickles, validate_checkpoint

logger = logging.getLogger(__name__)

__all__ = ["CheckpointStateMixin", "NonFiniteLossError", "NonFiniteModelError"]


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; training stops before anything is saved over a good checkpoint."""


class NonFiniteModelError(RuntimeError):
    """A weight or the last eval loss is NaN or infinite at a save: nothing is saved (a good model stays)."""


class CheckpointStateMixin:
    """tl_hf's checkpoint state (save + resume) and the finiteness check before every save."""

    _outputs_of: str | None = None  # what outputs_checked guards (None: as Trainer's evaluate / predict)

    # -- checkpoint state -----------------------------------------------------------------------------------------
    def extra_state(self) -> dict[str, Any]:
        """JSON-serialisable state saved in every checkpoint (subclasses extend it)."""
        state = {"format": 1, "freezing": self.freezer.state_dict(), "llrd": asdict(self.llrd),
                 "layer_map": {"model_type": self.layer_map.model_type, "num_blocks": self.layer_map.num_blocks},
                 "regularizers": [r.name for r in self.regularizers]}
        if self.config_fingerprint is not None:  # what a resume must match (tl_hf.run.validate.check_resume)
            state["config"] = self.config_fingerprint
        return state

    def load_extra_state(self, state: dict[str, Any], checkpoint: str) -> None:
        lm = state.get("layer_map", {})
        if lm and (lm.get("num_blocks") != self.layer_map.num_blocks):
            raise ValueError(f"{checkpoint}: written for a {lm.get('model_type')} model with {lm.get('num_blocks')} "
                             f"blocks, this model has {self.layer_map.num_blocks}")
        if "freezing" in state:
            self.freezer.load_state_dict(state["freezing"])
        saved = state.get("regularizers", [])
        if sorted(saved) != sorted(r.name for r in self.regularizers):
            raise ValueError(f"{checkpoint} was written with regularizers {saved}, this run has "
                             f"{[r.name for r in self.regularizers]}")
        for r in self.regularizers:
            r.load(checkpoint, prefix=f"tl_hf_reg_{r.name}")

    # -- nothing non-finite is saved ------------------------------------------------------------------------------
    _loss_flag: torch.Tensor | None = None  # on the device: 0 while every training loss since the last check is finite
    _loss_checked_step = 0  # global_step at that check

    def _note_loss(self, loss: torch.Tensor) -> None:
        """Fold a micro-batch's training loss into the device-side flag: one small kernel, no host sync (0 x loss is
        0 for a finite loss and NaN for NaN or inf, and NaN stays NaN)."""
        if self.stop_on_non_finite:
            if self._loss_flag is None:
                self._loss_flag = torch.zeros_like(loss.detach(), dtype=torch.float32)
            self._loss_flag.add_(loss.detach(), alpha=0.0)

    def reset_loss_check(self, global_step: int = 0) -> None:
        self._loss_flag, self._loss_checked_step = None, global_step

    def check_loss(self) -> None:
        """Read the loss flag (one host sync): :class:`NonFiniteLossError` naming the steps since the last check if a
        training loss was NaN/inf. Called at logging, evaluation and save steps, at epoch and training ends
        (:class:`~tl_hf.core.callbacks.LossCheck`) and before every save (:meth:`check_finite`)."""
        flag, first, last = self._loss_flag, self._loss_checked_step + 1, self.state.global_step
        self.reset_loss_check(last)
        if flag is None or bool(torch.isfinite(flag).all()):
            return
        self.model.zero_grad(set_to_none=True)
        span = f"step {first}" if last <= first else f"one of steps {first}-{last} (checked at logging and save steps)"
        raise NonFiniteLossError(
            f"the training loss became NaN/inf at {span} (epoch {self.state.epoch or 0:.2f}); nothing was saved after "
            f"it. Likely causes: a learning rate too high for this model (now {self.args.learning_rate:g}), fp16 "
            "overflow (try bf16 or a smaller lr), or labels outside the model's num_labels. Resume from the last "
            "checkpoint after fixing it.")

    def check_finite(self, what: str, eval_loss: float | None = None) -> None:
        """Before ``what`` is saved: no training loss since the last check was NaN/inf (:meth:`check_loss`), and every
        weight and the eval loss (``eval_loss``, else the last logged one) are finite, else
        :class:`NonFiniteModelError` (with ``stop_on_non_finite``): a broken model never replaces a good one."""
        if not self.stop_on_non_finite:
            return
        self.check_loss()
        bad = [n for n, p in self.model.named_parameters() if p.numel() and not bool(torch.isfinite(p.detach()).all())]
        evals = [h["eval_loss"] for h in self.state.log_history if "eval_loss" in h]
        if eval_loss is not None:
            evals.append(eval_loss)
        problem = ""
        if bad:
            problem = f"{len(bad)} weight tensor(s) hold NaN/inf (first: {bad[0]})"
        elif evals and not torch.isfinite(torch.tensor(float(evals[-1]))):
            problem = f"the last eval loss is {evals[-1]}"
        if problem:
            raise NonFiniteModelError(
                f"not saving {what} at step {self.state.global_step}: {problem}; the model diverged (a learning rate "
                f"too high for it, now {self.args.learning_rate:g}, or fp16 overflow). Nothing was saved over the "
                "earlier outputs")

    @contextlib.contextmanager
    def outputs_checked(self, what: str):
        """Within the block, :meth:`check_finite` checks every ``evaluate`` / ``predict`` result (its loss) before it
        is returned, so a caller writes no predictions or plots for a diverged model (the run template uses it)."""
        self._outputs_of = what
        try:
            yield
        finally:
            self._outputs_of = None

    def _checked(self, metrics):
        if self._outputs_of is not None:
            losses = [v for k, v in (metrics or {}).items() if k.endswith("_loss") and isinstance(v, (int, float))]
            self.check_finite(self._outputs_of, eval_loss=losses[0] if losses else None)
        return metrics

    # -- save and resume ------------------------------------------------------------------------------------------
    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        self.check_finite(f"the model to {output_dir or self.args.output_dir}")
        super().save_model(output_dir, _internal_call)

    def _save_checkpoint(self, model, trial) -> None:
        self.check_finite("a checkpoint")  # before any of its files is written

        with full_state(self.regularizers):  # FSDP2: sharded state gathered on every rank, written once
            if self.args.should_save:
                # written FIRST: transformers writes trainer_state.json near the end of its own save, and a checkpoint
                # without it is not resumable; so a crash at any point leaves either a checkpoint with all of tl_hf's
                # state, or one that transformers itself refuses, never a complete-looking one without our state
                folder = os.path.join(self._get_output_dir(trial), f"checkpoint-{self.state.global_step}")
                os.makedirs(folder, exist_ok=True)
                for r in self.regularizers:
                    r.save(folder, prefix=f"tl_hf_reg_{r.name}")
                if self.averager is not None:
                    self.averager.save(folder)
                atomic_write_json(os.path.join(folder, STATE_FILE), self.extra_state())
        super()._save_checkpoint(model, trial)

    def _load_rng_state(self, checkpoint) -> None:
        with refuse_untrusted_pickles(checkpoint):
            super()._load_rng_state(checkpoint)

    def _load_optimizer_and_scheduler(self, checkpoint) -> None:

        freeze_as_saved(self.freezer, self.model)  # FSDP2 loads the optimizer state strictly
        with refuse_untrusted_pickles(checkpoint):
            super()._load_optimizer_and_scheduler(checkpoint)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None) -> None:
        validate_checkpoint(resume_from_checkpoint)  # before anything is loaded: name a truncated file
        with refuse_untrusted_pickles(resume_from_checkpoint):
            super()._load_from_checkpoint(resume_from_checkpoint, model)
        path = os.path.join(resume_from_checkpoint, STATE_FILE)
        if os.path.exists(path):
            self.load_extra_state(read_json(path), resume_from_checkpoint)
        else:
            if self.regularizers:
                from tl_hf.core.state import CorruptStateError

                raise CorruptStateError(
                    f"{resume_from_checkpoint} has no {STATE_FILE}, so the state of the regularizers "
                    f"({', '.join(r.name for r in self.regularizers)}) is missing: it was not written by tl_hf or is "
                    "incomplete; resume from another checkpoint")
            logger.warning("%s has no %s (not written by tl_hf?): the unfreezing phase is derived from the step",
                           resume_from_checkpoint, STATE_FILE)
            self.freezer.phase = None
        if self.averager is not None:
            self.averager.load(resume_from_checkpoint)
