"""Learning without Forgetting (Li & Hoiem 2017, https://arxiv.org/abs/1606.09282): distil a frozen teacher's outputs on
the current inputs into the model being trained.

* **Teacher:** ``teacher: previous_task`` (continual learning) takes a frozen copy of the model in ``end_task``, after
  each task; ``teacher: pretrained`` (plain fine-tuning) copies the model as training starts (the first
  ``train()``, before any step; after ``reinit``, if any). The copy is in eval mode with ``requires_grad=False``; it is
  never a submodule of the student, so the student's checkpoint does not hold it: its weights are written once, in the
  regularizer's own ``tl_hf_reg_lwf.safetensors``, and put into a fresh copy on resume.
* **Loss** (Hinton et al. 2015 knowledge distillation): ``weight * T^2 * KL(softmax(z_t / T) || softmax(z_s / T))``
  averaged over the examples (rows of the logits; token-level logits count each token as a row), with the student's
  logits ``z_s`` from the training forward (no second student forward) and the teacher's ``z_t`` on the same inputs.
* Refused: ``previous_task`` without a teacher (train a task first, call ``end_task`` or ``set_teacher``), and a
  teacher whose logits have another shape than the student's.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F

from tl_hf.regularizers.base import (CONTINUAL_TAG, Regularizer, RegularizerConfig, StepContext, card_code,
                                     check_non_negative, register_regularizer)

__all__ = ["LwF", "LwFConfig", "TEACHERS", "kd_loss"]

TEACHERS = ("previous_task", "pretrained")


@dataclass
class LwFConfig(RegularizerConfig):
    weight: float = field(default=1.0, metadata={"help": "Weight of the distillation loss."})
    temperature: float = field(default=2.0, metadata={
        "help": "Softmax temperature T (> 0); the loss is scaled by T^2."})
    teacher: Literal["previous_task", "pretrained"] = field(default="previous_task", metadata={
        "help": "previous_task: the model after the last task (continual); pretrained: the model as training starts."})

    def __post_init__(self) -> None:
        super().__post_init__()
        check_non_negative("lwf weight", self.weight)
        if isinstance(self.temperature, bool) or not isinstance(self.temperature, (int, float)) or \
                not self.temperature > 0:
            raise ValueError(f"lwf temperature must be a number > 0, got {self.temperature!r}")
        if self.teacher not in TEACHERS:
            raise ValueError(f"lwf teacher must be one of {', '.join(TEACHERS)}, got {self.teacher!r}")


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 * KL(softmax(t / T) || softmax(s / T))``, mean over rows (all but the last dimension)."""
    c = student_logits.shape[-1]
    s = F.log_softmax(student_logits.reshape(-1, c).float() / temperature, dim=-1)
    t = F.log_softmax(teacher_logits.reshape(-1, c).float() / temperature, dim=-1)
    return F.kl_div(s, t, reduction="batchmean", log_target=True) * temperature ** 2


def _logits(out) -> torch.Tensor:
    return out["logits"] if isinstance(out, dict) or hasattr(out, "keys") else out[0]


@register_regularizer
class LwF(Regularizer):
    """LwF as a regularizer: ``extra_loss`` adds the distillation term (see the module docstring)."""

    name = "lwf"
    config_cls = LwFConfig

    def __init__(self, config=None, **kwargs) -> None:
        super().__init__(config, **kwargs)
        self.teacher: torch.nn.Module | None = None
        self._pending: dict[str, torch.Tensor] | None = None  # teacher weights restored from a checkpoint

    # -- the teacher ----------------------------------------------------------------------------------------------
    def set_teacher(self, model: torch.nn.Module, state: dict[str, torch.Tensor] | None = None) -> None:
        """The teacher becomes a frozen, eval-mode copy of ``model`` (with ``state`` loaded when given)."""
        teacher = copy.deepcopy(model)
        if state is not None:
            teacher.load_state_dict(state)
        teacher.eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        self.teacher = teacher

    def end_task(self, model, dataset, **kwargs) -> None:  # noqa: ARG002
        if self.config.teacher == "previous_task":
            self.set_teacher(model)

    @property
    def active(self) -> bool:
        return self.config.teacher == "pretrained" or self.teacher is not None or self._pending is not None

    def bind(self, model) -> None:
        model = getattr(model, "module", model)
        if self._pending is not None:
            self.set_teacher(model, self._pending)
            self._pending = None
        elif self.teacher is None:
            if self.config.teacher != "pretrained":
                raise ValueError("lwf has no teacher: with teacher: previous_task it distils from the model of the "
                                 "previous task; train a task first (lwf.end_task(model, data)), call "
                                 "lwf.set_teacher(model), or set teacher: pretrained")
            self.set_teacher(model)
        device = next(model.parameters()).device
        self.teacher.to(device)

    # -- the loss -------------------------------------------------------------------------------------------------
    def extra_loss(self, model, inputs, step: StepContext):
        if self.config.weight == 0:
            return None
        if self.teacher is None:
            raise ValueError("lwf has no teacher (bind was not called): use it through TransferTrainer or call "
                             "lwf.bind(model) first")
        feats = {k: v for k, v in inputs.items() if k != "labels"}
        outputs = getattr(step, "outputs", None)
        student = _logits(outputs) if outputs is not None else _logits(model(**feats))
        with torch.no_grad():
            teacher = _logits(self.teacher(**feats))
        if teacher.shape != student.shape:
            raise ValueError(f"lwf: the teacher's logits have shape {tuple(teacher.shape)}, the model's "
                             f"{tuple(student.shape)}: the head changed since the teacher was taken; LwF needs the "
                             "same head (class_incremental / domain_incremental, or one head for all tasks)")
        loss = kd_loss(student, teacher, self.config.temperature)
        self.record_loss(loss)
        return self.config.weight * loss

    # -- state ----------------------------------------------------------------------------------------------------
    def state_dict(self):
        src = self.teacher.state_dict() if self.teacher is not None else self._pending
        if src is None:
            return {}, {"has_teacher": False}
        return {k: v.detach().clone() for k, v in src.items()}, {"has_teacher": True}

    def load_state_dict(self, tensors, meta) -> None:
        self._pending = dict(tensors) if meta.get("has_teacher") else None
        self.teacher = None

    def card_summary(self) -> str:
        c = self.config
        src = "the previous task's model" if c.teacher == "previous_task" else "the model as training started"
        return (f"**LwF**: distillation from {src} (frozen, eval mode), weight {card_code(c.weight)}, temperature "
                f"{card_code(c.temperature)}")

    def card_tags(self) -> list[str]:
        return ["lwf", CONTINUAL_TAG]
