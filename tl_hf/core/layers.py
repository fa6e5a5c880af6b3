"""Layer map: which depth every parameter of a model sits at.

Depth convention (used by layer-wise LR decay and by every freezing policy):

* ``0``      -- embeddings: token/patch/position embeddings, cls/distillation/mask tokens, and anything shared by
  every block that lives below the first block (DeBERTa's relative embeddings, BEiT's shared position bias).
* ``i + 1``  -- transformer block ``i`` (0-based), so blocks occupy depths ``1 .. L``.
* ``L + 1``  -- everything above the last block: final norm, pooler, task head ("head").

Architecture knowledge lives in one table, :data:`tl_hf.core.architectures.ARCHITECTURES` (model_type -> spec).
Adding an architecture means adding one entry there (or calling ``register_architecture``). For any other model,
:func:`get_layer_map` finds the model's repeated-block ``nn.ModuleList`` (GPT-2 ``transformer.h``, Llama
``model.layers``): the parameters registered before it are depth 0, the blocks ``1 .. L``, everything after the head.
It logs what it found and refuses when there are several such lists. Explicit rules always win::

    LayerMap.from_rules({r"embed": "embeddings", r"\\.h\\.(\\d+)\\.": "block", r".*": "head"})

A model no depth feature needs a map for (no LLRD decay, ``full`` freezing, no feature cache) and that is outside the
table gets the flat map (:meth:`LayerMap.flat`): every parameter at one depth, one group named ``all``.

PEFT-wrapped models work unchanged: the ``base_model.model.`` prefix is ignored and LoRA parameters take the depth of
the block they sit in, because they are matched by the same block pattern.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
import logging
from typing import Callable, Mapping, Sequence

import torch.nn as nn

from tl_hf.core.architectures import ARCHITECTURES, RuleTarget, find_block_lists

__all__ = ["AmbiguousArchitectureError", "LayerMap", "UnknownArchitectureError", "get_layer_map",
           "unwrap_model_config"]

logger = logging.getLogger(__name__)

_PEFT_PREFIX = re.compile(r"^(?:base_model\.model\.)+")


class UnknownArchitectureError(ValueError):
    """A depth feature needs a layer map, and the model has no built-in one, no custom one and no discoverable
    repeated-block list."""


class AmbiguousArchitectureError(UnknownArchitectureError):
    """The generic discovery found several repeated-block lists (an encoder-decoder, say) and will not guess."""


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
    source: str = "custom"  # "builtin" (the table), "discovered", "custom" (rules) or "flat" (one depth)
    _compiled: list = field(init=False, repr=False, default_factory=list)

    def __post_init__(self) -> None:
        if self.source == "flat":
            self.num_blocks = 0
        elif not isinstance(self.num_blocks, int) or self.num_blocks < 1:
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

    @classmethod
    def flat(cls, model_type: str = "custom") -> "LayerMap":
        """Every parameter at depth 0, in one group named ``all``: for models without a map when nothing uses depths."""
        return cls(rules=[(r".", 0)], num_blocks=0, model_type=model_type, source="flat",
                   note="no layer map: every parameter is at one depth (one learning rate, no depth groups)")

    # -- queries --------------------------------------------------------------------------------------------------
    @property
    def is_flat(self) -> bool:
        return self.source == "flat"

    @property
    def num_depths(self) -> int:
        """Number of depth levels: embeddings + blocks + head (1 for the flat map)."""
        return 1 if self.is_flat else self.num_blocks + 2

    @property
    def head_depth(self) -> int:
        return 0 if self.is_flat else self.num_blocks + 1

    def levels_text(self) -> str:
        """The depth levels in words (model cards, ``tl-hf inspect``)."""
        if self.is_flat:
            return "1 (no layer map: every parameter at one depth, one learning rate)"
        h = self.head_depth
        return f"{h + 1} (0 = embeddings, 1..{self.num_blocks} = {self.num_blocks} blocks, {h} = head)"

    def depth_name(self, depth: int) -> str:
        if self.is_flat:
            return "all"
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
                  num_blocks: int | None = None, *, uses: Sequence[str] | None = None) -> LayerMap:
    """The layer map of ``model``: ``custom`` if given, else the built-in one for ``config.model_type``, else one
    discovered from the model's repeated-block ``ModuleList`` (logged).

    ``uses`` names what needs the depths (for messages, e.g. ``["llrd.decay=0.8"]``); an empty sequence says nothing
    does, and a model outside the table then gets :meth:`LayerMap.flat` instead of a discovery. ``None``: depths are
    needed. Raises :class:`UnknownArchitectureError` (naming the model type and showing how to pass a map) when no
    map can be found, :class:`AmbiguousArchitectureError` when several block lists could be the blocks.
    """
    if isinstance(custom, LayerMap):
        return custom
    if custom is not None:
        return LayerMap.from_rules(custom, num_blocks=num_blocks, model=model)
    config = unwrap_model_config(model)
    model_type = getattr(config, "model_type", None)
    spec = ARCHITECTURES.get(model_type) if model_type is not None else None
    if spec is not None:
        if spec.build is not None:
            spec = spec.build(config)
        rules = list(spec.rules) + [(r".", "head")]  # everything above the last block: final norm, pooler, heads
        return LayerMap(rules=rules, num_blocks=int(spec.num_blocks(config)), model_type=model_type, note=spec.note,
                        source="builtin")
    name = model_type or type(model).__name__
    if uses is not None and not list(uses):
        logger.info("%s (%s) has no built-in layer map and nothing here uses depths (LLRD decay, non-full freezing, "
                    "feature caching): every parameter is at one depth, one learning rate", name, type(model).__name__)
        return LayerMap.flat(name)
    return _discover(model, name, list(uses or []))


def _discover(model: nn.Module, model_type: str, uses: list[str]) -> LayerMap:
    """The layer map read off the model's single repeated-block list: before it depth 0, after it the head."""
    cls_name = type(model).__name__
    why = f"{', '.join(uses)} needs the depth of every parameter, but " if uses else ""
    lists = [(_strip_prefixes(p + "."), c, n) for p, c, n in find_block_lists(model)]
    if not lists:
        raise UnknownArchitectureError(
            f"{why}tl_hf has no built-in layer map for model_type '{model_type}' ({cls_name}) and found no "
            f"repeated-block nn.ModuleList in it. Built-in: {', '.join(sorted(ARCHITECTURES))}. "
            + _custom_example(model_type))
    if len(lists) > 1:
        shown = ", ".join(f"{p[:-1]} ({n} x {c})" for p, c, n in lists)
        first = lists[0][0][:-1].replace(".", "\\.")
        raise AmbiguousArchitectureError(
            f"{why}{model_type} ({cls_name}) has no built-in layer map and several repeated-block lists could be its "
            f"blocks: {shown}; tl_hf does not guess. Pass explicit rules, e.g. layer_map={{r'^{first}\\.(\\d+)\\.': "
            f"'block', r'<embedding modules>': 'embeddings', r'.*': 'head'}} (one 'block' rule per list you want "
            "depths for; the others go to 'head' or to fixed int depths).")
    path, block_cls, n = lists[0]
    names = [_strip_prefixes(p) for p, _ in model.named_parameters()]
    inside = [i for i, p in enumerate(names) if p.startswith(path)]
    before = [p for p in names[: inside[0]] if not p.startswith(path)]
    after = [p for p in names[inside[0]:] if not p.startswith(path)]
    rules: list[tuple[str, RuleTarget]] = [(f"^{re.escape(path)}(\\d+)\\.", "block")]
    rules += [(_exact_or_module(p, after), "embeddings") for p in before] + [(r".", "head")]
    rules = list(dict.fromkeys(rules))
    note = (f"discovered from the model: depth 0 = {_modules(before)}; depths 1..{n} = {path}0..{n - 1} "
            f"({block_cls}); depth {n + 1} (head) = {_modules(after)}")
    logger.info("layer map for %s (%s) %s. Pass layer_map=... to change it.", model_type, cls_name, note)
    return LayerMap(rules=rules, num_blocks=n, model_type=model_type, note=note, source="discovered")


def _exact_or_module(param: str, after: list[str]) -> str:
    """A rule for a parameter before the blocks: its module's prefix, unless a later parameter shares it."""
    module = param.rsplit(".", 1)[0] + "." if "." in param else None
    if module is None or any(a.startswith(module) for a in after):
        return f"^{re.escape(param)}$"
    return f"^{re.escape(module)}"


def _modules(params: list[str]) -> str:
    mods = list(dict.fromkeys(p.rsplit(".", 1)[0] if "." in p else p for p in params))
    if not mods:
        return "nothing"
    return ", ".join(mods[:6]) + (f", ... ({len(mods)} modules)" if len(mods) > 6 else "")
