"""The protocol every forgetting regularizer follows, and the registry (the one place to add a method).

A regularizer is a plain object with a config dataclass. Its life in a run:

1. ``bind(model)``: called by :class:`~tl_hf.TransferTrainer` before training, with the unwrapped model; checks that
   its state fits the model (names, shapes) and raises a clear error otherwise.
2. Per optimizer step, once (not once per micro-batch): ``add_penalty_grad(named_params)`` adds the gradient of its
   penalty straight into ``.grad`` with fused ``torch._foreach_*`` kernels (no autograd graph for the penalty), and
   ``extra_loss(model, inputs, step)`` may add a loss term (replay); ``step`` (:class:`StepContext`) is what it may use
   of the Trainer.
3. ``penalty_value()`` is only computed at logging steps, and logged as ``penalty/<name>`` apart from the task loss.
4. ``end_task(model, dataset, ...)`` after a task: EWC estimates a Fisher and takes anchors; replay fills its memory.
5. ``state_dict()`` -> ``(tensors, meta)``: tensors go to safetensors, meta to JSON, in every checkpoint and in
   ``save(folder)`` / ``load(folder)`` between tasks. Never pickle.
6. Model cards: ``card_line()`` is the markdown bullet describing it, ``card_tags()`` its Hub tags.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import Any, Callable, ClassVar, Iterable

import torch
from safetensors.torch import load_file, save_file

from tl_hf._errors import did_you_mean
from tl_hf.core.state import CorruptStateError, atomic_write_json, read_json, shape_problem

__all__ = ["Regularizer", "RegularizerConfig", "REGULARIZERS", "register_regularizer", "build_regularizer",
           "check_non_negative", "card_value", "card_code", "card_tags_of", "CONTINUAL_TAG", "StepContext"]

#: the topic tag of methods that protect earlier tasks (the card lists it once, after the method tags)
CONTINUAL_TAG = "continual-learning"


def card_value(v: Any) -> str:
    """A value as model cards show it: floats to 4 significant digits, lists comma-separated (``-`` when empty)."""
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, float):
        if v == 0 or math.isnan(v) or math.isinf(v):
            return str(v)
        return f"{v:.4g}"
    if isinstance(v, (list, tuple, set, frozenset)):
        return ", ".join(card_value(x) for x in (sorted(v) if isinstance(v, (set, frozenset)) else v)) or "-"
    return str(v)


def card_code(v: Any) -> str:
    """:func:`card_value` in backticks."""
    return f"`{card_value(v)}`"


def card_tags_of(regularizers: Iterable["Regularizer"]) -> list[str]:
    """The Hub tags of several regularizers: every method's own tag (the first of its ``card_tags()``) in order, then
    their topic tags (the rest), each once."""
    tags = [r.card_tags() for r in regularizers]
    return [t[0] for t in tags if t] + list(dict.fromkeys(x for t in tags for x in t[1:]))


def check_non_negative(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:  # also rejects NaN
        raise ValueError(f"{name} must be a number >= 0, got {value!r}")


@dataclass
class RegularizerConfig:
    """Fields shared by all regularizers."""

    exempt: list[str] = field(default_factory=list, metadata={
        "help": "Regexes of parameter names the penalty skips (e.g. a task head whose shape changed)."})

    def __post_init__(self) -> None:
        for rx in self.exempt:
            try:
                re.compile(rx)
            except re.error as exc:
                raise ValueError(f"exempt pattern {rx!r} is not a valid regex: {exc}") from None


@dataclass(frozen=True)
class StepContext:
    """What :meth:`Regularizer.extra_loss` gets of the Trainer's current micro-batch."""

    global_step: int
    micro_index: int  #: micro-batch within the gradient-accumulation window
    process_index: int
    collate: Callable[[list[dict]], dict]  #: examples -> a batch (the Trainer's data collator)
    prepare: Callable[[dict], dict]  #: a batch -> on the model's device (the Trainer's input preparation)
    unwrap: Callable[[torch.nn.Module], torch.nn.Module]  #: the model without its DDP / compile wrappers
    outputs: Any = None  #: the model's outputs on this micro-batch (logits: LwF distils them without a 2nd forward)


class Regularizer:
    """Base class: every hook is a no-op, so a method implements only what it needs."""

    name: ClassVar[str] = "base"
    config_cls: ClassVar[type] = RegularizerConfig

    def __init__(self, config: RegularizerConfig | None = None, **kwargs) -> None:
        if config is None:
            config = self.config_cls(**kwargs)
        elif kwargs:
            raise TypeError("pass either a config or keyword arguments, not both")
        self.config = config
        self._exempt = [re.compile(r) for r in config.exempt]

    #: the last micro-batch's data term (LwF, replay, DER), detached where it was computed; the Trainer logs it as
    #: ``<name>/loss`` (averaged over ranks) at logging steps only, so recording it costs no device sync per step
    last_loss_tensor: torch.Tensor | None = None

    def record_loss(self, loss: torch.Tensor) -> None:
        """Keep ``loss`` (a data term, before its weight) for the ``<name>/loss`` log."""
        self.last_loss_tensor = loss.detach()

    @property
    def last_loss(self) -> float | None:
        """The last recorded data term as a float (a device sync: read it off the training step)."""
        t = self.last_loss_tensor
        return None if t is None else float(t)

    # -- hooks ----------------------------------------------------------------------------------------------------
    def bind(self, model: torch.nn.Module) -> None:
        """Check the state against ``model`` before training (raise a clear error on mismatch)."""

    def add_penalty_grad(self, named_params: list[tuple[str, torch.Tensor]], scale: float = 1.0) -> None:
        """Add ``scale`` x d(penalty)/d(param) into ``param.grad`` for the given grad-holding parameters
        (``scale`` is the fp16 loss scale, 1.0 otherwise)."""

    def penalty_value(self, model: torch.nn.Module) -> float | None:
        """The current penalty (for logging); ``None`` if the method has no penalty."""
        return None

    def extra_loss(self, model, inputs, step: StepContext) -> torch.Tensor | None:
        """An extra loss term for this micro-batch (already a mean; the Trainer divides it by GA)."""
        return None

    def end_task(self, model: torch.nn.Module, dataset, **kwargs) -> None:
        """Called after training on a task (estimate Fisher, take anchors, fill replay memory...)."""

    @property
    def active(self) -> bool:
        """Whether this regularizer does anything in the coming training run."""
        return True

    # -- state ----------------------------------------------------------------------------------------------------
    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        return {}, {}

    def load_state_dict(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        pass

    def is_exempt(self, name: str) -> bool:
        return any(r.search(name) for r in self._exempt)

    # -- model card -----------------------------------------------------------------------------------------------
    def card_summary(self) -> str:
        """The card bullet's text before the exempt list: ``**name**: key = `value`, ...`` unless a method says more."""
        c = self.config
        items = asdict(c) if is_dataclass(c) else dict(vars(c))
        items.pop("exempt", None)
        return f"**{self.name}**: " + ", ".join(f"{k} = {card_code(v)}" for k, v in items.items())

    def card_line(self) -> str:
        """The markdown bullet of the model card's regularizer list (its settings and exempt patterns)."""
        s = self.card_summary()
        exempt = getattr(self.config, "exempt", None)
        if exempt:
            s += f"; exempt: {card_code(list(exempt))}"
        return "- " + s

    def card_tags(self) -> list[str]:
        """Hub tags: the method's own tag first, then topic tags (:data:`CONTINUAL_TAG`); see :func:`card_tags_of`."""
        return [self.name.replace("_", "-")]

    def save(self, folder: str, prefix: str | None = None) -> None:
        """Write ``<prefix>.safetensors`` (tensors) and ``<prefix>.json`` (config + meta) into ``folder``."""
        prefix = prefix or f"tl_hf_{self.name}"
        tensors, meta = self.state_dict()
        os.makedirs(folder, exist_ok=True)
        if tensors:
            tmp = os.path.join(folder, f"_tmp_{prefix}.safetensors")
            save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp)
            os.replace(tmp, os.path.join(folder, f"{prefix}.safetensors"))
        atomic_write_json(os.path.join(folder, f"{prefix}.json"),
                          {"regularizer": self.name, "config": asdict(self.config), "meta": meta,
                           "has_tensors": bool(tensors)})

    def load(self, folder: str, prefix: str | None = None) -> "Regularizer":
        prefix = prefix or f"tl_hf_{self.name}"
        jpath = os.path.join(folder, f"{prefix}.json")
        if not os.path.exists(jpath):
            raise FileNotFoundError(f"{jpath} not found: no saved {self.name} state in {folder}")
        doc = read_json(jpath)
        problem = shape_problem(doc, {"regularizer": (str,), "meta": (dict,), "has_tensors": (bool,)})
        if problem:
            raise CorruptStateError(f"{jpath} is not a regularizer state: {problem}; resume from an earlier checkpoint")
        if doc.get("regularizer") != self.name:
            raise ValueError(f"{jpath} holds {doc.get('regularizer')!r} state, not {self.name!r}")
        tensors = {}
        if doc.get("has_tensors"):
            tpath = os.path.join(folder, f"{prefix}.safetensors")
            try:
                tensors = load_file(tpath)
            except Exception as exc:  # safetensors raises its own error types for truncated files
                raise ValueError(f"{tpath} is missing, truncated or corrupt ({exc}); resume from an earlier "
                                 "checkpoint") from None
        self.load_state_dict(tensors, doc.get("meta", {}))
        return self


REGULARIZERS: dict[str, type[Regularizer]] = {}


def register_regularizer(cls: type[Regularizer]) -> type[Regularizer]:
    """Class decorator: make ``cls`` available by ``cls.name`` in configs. A name already taken is refused."""
    old = REGULARIZERS.get(cls.name)
    if old is not None and old is not cls:
        raise ValueError(f"regularizer {cls.name!r} is already registered ({old.__module__}.{old.__qualname__}); "
                         "register the new one under a new name")
    REGULARIZERS[cls.name] = cls
    return cls


def build_regularizer(spec: Regularizer | dict) -> Regularizer:
    """A regularizer from an instance or a dict ``{"name": "ewc", ...config fields}``."""
    if isinstance(spec, Regularizer):
        return spec
    if not isinstance(spec, dict) or "name" not in spec:
        raise ValueError(f"a regularizer is given as {{'name': one of {sorted(REGULARIZERS)}, ...}}, got {spec!r}")
    spec = dict(spec)
    name = spec.pop("name")
    if name not in REGULARIZERS:
        raise ValueError(f"unknown regularizer {name!r}; valid: {', '.join(sorted(REGULARIZERS))}")
    cls = REGULARIZERS[name]
    valid = {f.name for f in fields(cls.config_cls)}
    aliases = getattr(cls.config_cls, "ALIASES", {})
    spec = {aliases.get(k, k): v for k, v in spec.items()}
    unknown = sorted(set(spec) - valid)
    if unknown:
        raise ValueError(f"unknown {name} key {unknown[0]!r}" + did_you_mean(unknown[0], valid)
                         + f" Valid keys: {', '.join(sorted(valid))}")
    return cls(cls.config_cls(**spec))


def foreach_params(named_params: Iterable[tuple[str, torch.Tensor]], names: set[str]):
    """Split into (names, params, grads) lists for the parameters in ``names`` that hold a gradient."""
    ns, ps, gs = [], [], []
    for n, p in named_params:
        if n in names and p.grad is not None:
            ns.append(n)
            ps.append(p)
            gs.append(p.grad)
    return ns, ps, gs
