"""The Trainer callbacks of :class:`~tl_hf.core.trainer.TransferTrainer`: gradual unfreezing, the per-group lr record,
regularizer binding and the feature-cache build."""

from __future__ import annotations

import logging
from typing import Callable

import torch
from transformers import TrainerCallback

from tl_hf.core.freezing import FreezingController
from tl_hf.core.fsdp import shard_state
from tl_hf.core.optim import group_lrs
from tl_hf.core.state import STATE_FILE

logger = logging.getLogger(__name__)

__all__ = ["FeatureCacheBuilder", "GradualUnfreezingCallback", "GroupLRRecorder", "LossCheck", "RegularizerBinder"]


class GradualUnfreezingCallback(TrainerCallback):
    """Drives a gradual :class:`FreezingController` during training.

    Multi-process safe (see the facts note): every parameter still requires grad when the Trainer wraps the model in
    DDP; the first phase is applied in ``on_train_begin`` (after the wrap, and after a resume restored the phase);
    ``requires_grad`` only changes between optimizer steps, in ``on_step_end``, identically on every rank because the
    phase is a function of ``global_step`` / ``epoch``.
    """

    def __init__(self, controller: FreezingController) -> None:
        self.controller = controller
        self.schedule = controller.config.schedule

    def _position(self, state) -> int:
        if self.schedule.unit == "step":
            return state.global_step
        return int((state.epoch or 0.0) + 1e-6)

    def on_train_begin(self, args, state, control, lr_scheduler=None, **kwargs):
        c = self.controller
        c.params = dict(c.model.named_parameters())  # FSDP2's wrap swaps in new (DTensor) parameter objects
        if self.schedule.rewarm_steps and lr_scheduler is not None and \
                not isinstance(lr_scheduler, torch.optim.lr_scheduler.LambdaLR):
            raise ValueError(
                f"gradual unfreezing with rewarm_steps={self.schedule.rewarm_steps} needs a LambdaLR-based "
                f"lr_scheduler_type (linear, cosine, constant, ...), not {type(lr_scheduler).__name__}; "
                "set rewarm_steps: 0 or pick another lr_scheduler_type"
            )
        if c.phase is None or state.global_step == 0:
            phase = c.phase_at(self._position(state))
            c.apply(phase)
            c.phase_start_step, c.rewarm_depths = state.global_step, []
            if state.global_step > 0 and phase > 0:
                # resumed without tl_hf_state.json: derive the phase's start and re-warm from the schedule
                if self.schedule.unit == "step":
                    c.phase_start_step = c.phases[phase][0]
                    c.rewarm_depths = sorted(c.phases[phase][1] - c.phases[phase - 1][1])
                elif self.schedule.rewarm_steps:
                    logger.warning("resumed without %s: the LR re-warm of phase %d restarts at step %d",
                                   STATE_FILE, phase, state.global_step)
        else:  # resumed: the phase (and its start) came from the checkpoint's tl_hf_state.json
            c.apply(c.phase)
        logger.info("gradual unfreezing: phase %d, trainable depths %s, %d trainable parameters",
                    c.phase, sorted(c.trainable_depths(c.phase)), c.num_trainable())

    def on_step_end(self, args, state, control, optimizer=None, **kwargs):
        c = self.controller
        phase = c.phase_at(self._position(state))
        if phase != c.phase:
            new = c.apply(phase)
            c.phase_start_step = state.global_step
            c.rewarm_depths = sorted(new)
            logger.info("gradual unfreezing: step %d enters phase %d, unfroze depths %s (%d trainable parameters)",
                        state.global_step, phase, sorted(new), c.num_trainable())
        r = self.schedule.rewarm_steps
        if r and c.rewarm_depths and optimizer is not None:
            k = state.global_step - c.phase_start_step + 1
            if k < r:
                # the scheduler has just set every group's lr for the next step; scale the new groups' lr down
                for g in optimizer.param_groups:
                    if g.get("depth") in c.rewarm_depths:
                        g["lr"] *= k / r


class GroupLRRecorder(TrainerCallback):
    """Remembers each group's lr as used by the optimizer step that just ran (what ``learning_rate`` logs too), and
    keeps one record per optimizer step, warm-up included: ``history`` = ``[{"step": 1, "lr/<group>": lr, ...}, ...]``
    (the ``log_history`` form, without a log line per step)."""

    def __init__(self) -> None:
        self.lrs: dict[str, float] = {}
        self.trainable: int | None = None
        self.history: list[dict[str, float]] = []

    def on_train_begin(self, args, state, control, **kwargs):
        self.history = []

    def on_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        if optimizer is not None:
            self.lrs = group_lrs(optimizer)
            # called before the Trainer increments global_step: this is step global_step + 1
            self.history.append({"step": state.global_step + 1, **{f"lr/{k}": v for k, v in self.lrs.items()}})
            self.trainable = sum(p.numel() for g in optimizer.param_groups for p in g["params"] if p.requires_grad)


class RegularizerBinder(TrainerCallback):
    """Checks and binds the regularizers once training starts (after a resume restored their state)."""

    def __init__(self, trainer) -> None:
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        model = self.trainer.model
        for r in self.trainer.regularizers:
            r.bind(model)
            shard_state(r, model)  # FSDP2: Fisher / anchors sharded like the parameters they pull on


class FeatureCacheBuilder(TrainerCallback):
    """Computes the frozen backbone's outputs before the first step (after a resume restored the weights): calls
    ``build()``. Calls ``release()`` before that and after every step (after :class:`GradualUnfreezingCallback`, added
    before it, changed the phase): LP-FT frees its cached outputs once its backbone trains."""

    def __init__(self, build: Callable[[], None], release: Callable[[], None] = lambda: None) -> None:
        self.build = build
        self.release = release

    def on_train_begin(self, args, state, control, **kwargs):
        self.release()
        self.build()

    def on_step_end(self, args, state, control, **kwargs):
        self.release()


class LossCheck(TrainerCallback):
    """Reads the trainer's device-side loss flag only where the Trainer reads host values anyway: at logging,
    evaluation and save steps, when training stops, at each epoch's end and at the end of training (``check()``), so a
    GPU step is never held up by a host sync. ``reset(global_step)`` at the start (after a resume restored the step).
    Added after the Trainer's flow callback, so its ``control`` decisions for the step are known here."""

    def __init__(self, check: Callable[[], None], reset: Callable[[int], None]) -> None:
        self.check, self.reset = check, reset

    def on_train_begin(self, args, state, control, **kwargs):
        self.reset(state.global_step)

    def on_step_end(self, args, state, control, **kwargs):
        if control.should_log or control.should_evaluate or control.should_save or control.should_training_stop:
            self.check()

    def on_epoch_end(self, args, state, control, **kwargs):
        self.check()

    def on_train_end(self, args, state, control, **kwargs):
        self.check()
