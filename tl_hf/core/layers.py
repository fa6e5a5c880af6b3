"""Layer map: which depth every parameter of a model sits at.

Depth convention (used by layer-wise LR decay and by every freezing policy):

* ``0``      -- embeddings: token/patch/position embeddings, cls/distillation/mask tokens, and anything shared by
  every block that lives below the first block (DeBERTa's relative embeddings, BEiT's shared position bias).
* ``i + 1``  -- transformer block ``i`` (0-based), so blocks occupy depths ``1 .. L``.
* ``L + 1``  -- everything above the last block: final norm, pooler, task head ("head").

Architecture knowledge lives in one table, :data:`tl_hf.core.architectures.ARCHITECTURES` (model_type -> spec).
Adding an architecture means adding one entry there (or calling ``register_architecture``). For any other model, pass
your own rules::

    LayerMap.from_rules({r"embed": "embeddings", r"\\.h\\.(\\d+)\\.": "block", r".*": "head"})

PEFT-wrapped models work unchanged: the ``base_model.model.`` prefix is ignored and LoRA parameters take the depth of
the block they sit in, because they are matched by the same block pattern.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import torch.nn as nn

from tl_hf.core.architectures import ARCHITECTURES, RuleTarget

__all__ = ["LayerMap", "UnknownArchitectureError", "get_layer_map", "unwrap_model_config"]

_PEFT_PREFIX = re.compile(r"^(?:base_model\.model\.)+")


class UnknownArchitectureError(ValueError):
    """The model's architecture has no built-in layer map and no custom map was given."""


def _strip_prefixes(name: str) -> str:
    return _PEFT_PREFIX.sub("", name)


@dataclass
class LayerMap:
    """Maps parameter names to depths ``0 .. num_blocks + 1`` with ordered regex rules (first match wins).

    ``rules`` is a sequence of ``(pattern, target)``; ``target`` is an int depth, ``"embeddings"`` (0), ``"head"``
    (``num_blocks + 1``), ``"block"`` (the pattern's first capture group is the 0-based block index -> depth index + 1),
    or a callable ``match -> depth``. A parameter matching no rule is an error, never a silent guess.
    """

    rules: Sequence[tuple[str, RuleTarget | Callable[[re.Match], int]]]
    num_blocks: int
    model_type: str = "custom"
    note: str | None = None
    _compiled: list = field(init=False, repr=False, default_factory=list)

    def __post_init__(self) -> None:
        if not isinstance(self.num_blocks, int) or self.num_blocks < 1:
            raise ValueError(f"LayerMap.num_blocks must be a positive int, got {self.num_blocks!r}")
        self._compiled = []
        for pattern, target in self.rules:
            try:
                rx = re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"layer map rule {pattern!r} is not a valid regex: {exc}") from None
            if isinstance(target, str) and target not in ("embeddings", "block", "head"):
                raise ValueError(
                    f"layer map rule {pattern!r} -> {target!r}: a target must be an int depth or one of "
                    "'embeddings', 'block', 'head'"
                )
            if target == "block" and rx.groups < 1:
                raise ValueError(
                    f"layer map rule {pattern!r} -> 'block' needs a capture group for the block index, "
                    r"e.g. r'\.layers\.(\d+)\.'"
                )
            if isinstance(target, int) and not 0 <= target <= self.num_blocks + 1:
                raise ValueError(
                    f"layer map rule {pattern!r} -> depth {target} is outside 0..{self.num_blocks + 1} "
                    f"(num_blocks={self.num_blocks})"
                )
            self._compiled.append((rx, target))

    # -- construction ---------------------------------------------------------------------------------------------
    @classmethod
    def from_rules(cls, rules: Mapping[str, RuleTarget] | Sequence[tuple[str, RuleTarget]],
                   num_blocks: int | None = None, model: nn.Module | None = None) -> "LayerMap":
        """Build a custom map. ``num_blocks`` defaults to the larger of 1 + the largest block index that a ``"block"``
        rule matches in ``model``'s parameter names and the largest int depth among the rules (so pass either
        ``num_blocks`` or ``model``; use ``"head"``, not an int, for the head)."""
        items = list(rules.items()) if isinstance(rules, Mapping) else [tuple(r) for r in rules]
        if num_blocks is None:
            if model is None:
                raise ValueError("LayerMap.from_rules needs num_blocks=... or model=... to know how many blocks exist")
            top = max([t - 1 for _, t in items if isinstance(t, int) and not isinstance(t, bool)], default=-1)
            names = [_strip_prefixes(n) for n, _ in model.named_parameters()]
            for pattern, target in items:
                if target != "block":
                    continue
                rx = re.compile(pattern)
                for n in names:
                    m = rx.search(n)
                    if m:
                        top = max(top, int(m.group(1)))
            if top < 0:
                raise ValueError(
                    "custom layer map: no 'block' rule matched any parameter and no rule gives an int depth, so the "
                    "number of blocks is unknown; add a rule like r'\\.layers\\.(\\d+)\\.': 'block' or pass "
                    "num_blocks=..."
                )
            num_blocks = top + 1
        return cls(rules=items, num_blocks=num_blocks, model_type="custom")

    # -- queries --------------------------------------------------------------------------------------------------
    @property
    def num_depths(self) -> int:
        """Number of depth levels: embeddings + blocks + head."""
        return self.num_blocks + 2

    @property
    def head_depth(self) -> int:
        return self.num_blocks + 1

    def depth_name(self, depth: int) -> str:
        if depth == 0:
            return "embeddings"
        if depth == self.head_depth:
            return "head"
        return f"layer.{depth - 1}"

    def depth_of(self, name: str) -> int:
        """Depth of one parameter name; raises ``KeyError`` if no rule matches."""
        stripped = _strip_prefixes(name)
        for rx, target in self._compiled:
            m = rx.search(stripped)
            if m is None:
                continue
            if callable(target):
                depth = int(target(m))
            elif target == "embeddings":
                depth = 0
            elif target == "head":
                depth = self.head_depth
            elif target == "block":
                depth = int(m.group(1)) + 1
            else:
                depth = int(target)
            if not 0 <= depth <= self.head_depth:
                raise ValueError(
                    f"parameter {name!r} maps to depth {depth}, outside 0..{self.head_depth} for a "
                    f"{self.model_type} model with {self.num_blocks} blocks (rule {rx.pattern!r})"
                )
            return depth
        raise KeyError(name)

    def assign(self, model: nn.Module) -> dict[str, int]:
        """Depth of every named parameter of ``model`` (each in exactly one depth). Errors list unmatched names."""
        out: dict[str, int] = {}
        missing: list[str] = []
        for name, _ in model.named_parameters():
            try:
                out[name] = self.depth_of(name)
            except KeyError:
                missing.append(name)
        if missing:
            shown = ", ".join(missing[:5]) + (f" ... ({len(missing)} in all)" if len(missing) > 5 else "")
            raise ValueError(
                f"layer map ({self.model_type}) has no rule for these parameters: {shown}. "
                "Add a rule for them, or a catch-all {'.*': 'head'} as the last rule."
            )
        return out

    def describe(self, model: nn.Module) -> list[tuple[str, int, int]]:
        """``(depth_name, depth, n_params)`` for each depth, for printing and plots."""
        counts = [0] * self.num_depths
        for name, p in model.named_parameters():
            counts[self.depth_of(name)] += p.numel()
        return [(self.depth_name(d), d, counts[d]) for d in range(self.num_depths)]


def unwrap_model_config(model: nn.Module):
    """The ``PretrainedConfig`` of a (possibly PEFT-wrapped) model, or ``None``."""
    inner = model
    if hasattr(inner, "get_base_model"):
        try:
            inner = inner.get_base_model()
        except Exception:  # noqa: BLE001 - any PEFT wrapper oddity: fall back to the attribute lookup below
            pass
    return getattr(inner, "config", None)


def _custom_example(model_type: str) -> str:
    return (
        "Pass your own mapping (ordered regex -> depth; 'block' takes the block index from the first capture group), "
        "e.g. TransferTrainer(..., layer_map={r'(^|\\.)embed': 'embeddings', r'\\.layers\\.(\\d+)\\.': 'block', "
        "r'.*': 'head'}), or register it once with tl_hf.core.architectures.register_architecture("
        f"'{model_type}', ArchitectureSpec(...))."
    )


def get_layer_map(model: nn.Module,
                  custom: LayerMap | Mapping[str, RuleTarget] | Sequence[tuple[str, RuleTarget]] | None = None,
                  num_blocks: int | None = None) -> LayerMap:
    """The layer map of ``model``: ``custom`` if given, else the built-in one for ``config.model_type``.

    Raises :class:`UnknownArchitectureError` (naming the model type and showing how to pass a map) when neither exists.
    """
    if isinstance(custom, LayerMap):
        return custom
    if custom is not None:
        return LayerMap.from_rules(custom, num_blocks=num_blocks, model=model)
    config = unwrap_model_config(model)
    model_type = getattr(config, "model_type", None)
    cls_name = type(model).__name__
    if model_type is None:
        raise UnknownArchitectureError(
            f"{cls_name} has no `config.model_type`, so tl_hf cannot pick a built-in layer map. "
            + _custom_example("your_model_type")
        )
    spec = ARCHITECTURES.get(model_type)
    if spec is None:
        raise UnknownArchitectureError(
            f"tl_hf has no built-in layer map for model_type '{model_type}' ({cls_name}). "
            f"Built-in: {', '.join(sorted(ARCHITECTURES))}. " + _custom_example(model_type)
        )
    if spec.build is not None:
        spec = spec.build(config)
    rules = list(spec.rules) + [(r".", "head")]  # everything above the last block: final norm, pooler, heads
    return LayerMap(rules=rules, num_blocks=int(spec.num_blocks(config)), model_type=model_type, note=spec.note)
