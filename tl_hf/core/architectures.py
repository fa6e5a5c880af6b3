"""The architecture table: what tl_hf knows about each ``config.model_type``.

One entry per architecture family in :data:`ARCHITECTURES` (model_type -> :class:`ArchitectureSpec`): how its
parameters map to depths (used by :func:`tl_hf.core.layers.get_layer_map`) and its default LoRA target modules (used
when ``peft.target_modules`` is not set). Adding an architecture means adding one entry here, or calling
:func:`register_architecture`. For a model outside the table, :func:`find_block_lists` finds the candidates for its
repeated-block ``nn.ModuleList`` (the generic discovery of :func:`tl_hf.core.layers.get_layer_map`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Sequence, Union

import torch.nn as nn

__all__ = ["ARCHITECTURES", "ArchitectureSpec", "RuleTarget", "default_lora_targets", "find_block_lists",
           "register_architecture"]

RuleTarget = Union[int, str]  # an absolute depth, or "embeddings" | "block" | "head"


@dataclass(frozen=True)
class ArchitectureSpec:
    """How one architecture family names its parameters.

    ``rules`` are tried in order before the catch-all ``head`` rule that every built-in spec ends with; ``num_blocks``
    reads the block count from the model config; ``lora_targets`` are the default LoRA target modules (the query and
    value projections; empty: none known).
    """

    rules: tuple[tuple[str, RuleTarget | Callable[[re.Match], int]], ...]
    num_blocks: Callable[[object], int]
    note: str | None = None
    build: Callable[[object], "ArchitectureSpec"] | None = None  # for config-dependent rules (Swin)
    lora_targets: tuple[str, ...] = ()


ARCHITECTURES: dict[str, ArchitectureSpec] = {}


def register_architecture(model_types: str | Sequence[str], spec: ArchitectureSpec) -> None:
    """Add (or replace) the spec of one or more ``config.model_type`` values. The one place to add a model."""
    for mt in [model_types] if isinstance(model_types, str) else model_types:
        ARCHITECTURES[mt] = spec


def default_lora_targets(model_type: str | None) -> list[str] | None:
    """The default LoRA target modules of ``model_type``, or ``None`` when the table has none."""
    spec = ARCHITECTURES.get(model_type) if model_type is not None else None
    return list(spec.lora_targets) if spec is not None and spec.lora_targets else None


def find_block_lists(model: nn.Module) -> list[tuple[str, str, int]]:
    """Candidates for the model's repeated blocks: ``(module path, block class name, number of blocks)`` for every
    outermost ``nn.ModuleList`` whose items all have one class and that holds parameters (GPT-2 ``transformer.h``,
    Llama ``model.layers``, T5 ``encoder.block``; a full T5 has two: ``encoder.block`` and ``decoder.block``)."""
    found: list[tuple[str, str, int]] = []
    for path, module in model.named_modules():  # pre-order: a list is seen before anything inside it
        if not isinstance(module, nn.ModuleList) or len(module) == 0:
            continue
        if any(path.startswith(p + ".") for p, _, _ in found):
            continue
        classes = {type(m) for m in module}
        if len(classes) == 1 and next(module.parameters(), None) is not None:
            found.append((path, classes.pop().__name__, len(module)))
    return found


# ---------------------------------------------------------------------------------------------------------------------
# The built-in entries
# ---------------------------------------------------------------------------------------------------------------------

_EMB = r"(?:^|\.)embeddings\."
_BERT_BLOCK = r"(?:^|\.)encoder\.layer\.(\d+)\."
# transformers 5 names ViT-family blocks `vit.layers.N`; older checkpoints/versions used `vit.encoder.layer.N`.
_VIT_BLOCK = r"(?:^|\.)(?:encoder\.layer|layers)\.(\d+)\."
_QV = ("query", "value")
_QV_PROJ = ("q_proj", "v_proj")

register_architecture(
    ["bert", "roberta", "xlm-roberta", "camembert"],
    ArchitectureSpec(rules=((_EMB, "embeddings"), (_BERT_BLOCK, "block")),
                     num_blocks=lambda c: c.num_hidden_layers, lora_targets=_QV),
)
register_architecture(
    "electra",
    ArchitectureSpec(
        rules=((_EMB, "embeddings"), (r"(?:^|\.)embeddings_project\.", "embeddings"), (_BERT_BLOCK, "block")),
        num_blocks=lambda c: c.num_hidden_layers, lora_targets=_QV,
    ),
)
register_architecture(
    "deberta-v2",
    ArchitectureSpec(
        rules=(
            (_EMB, "embeddings"),
            # relative-position embeddings (and their norm) are shared by all blocks and sit below the first one
            (r"(?:^|\.)encoder\.(?:rel_embeddings|LayerNorm)\.", "embeddings"),
            # the optional ConvLayer is added to the output of the first block
            (r"(?:^|\.)encoder\.conv\.", 1),
            (_BERT_BLOCK, "block"),
        ),
        num_blocks=lambda c: c.num_hidden_layers, lora_targets=("query_proj", "value_proj"),
    ),
)
register_architecture(
    "distilbert",
    ArchitectureSpec(rules=((_EMB, "embeddings"), (r"(?:^|\.)transformer\.layer\.(\d+)\.", "block")),
                     num_blocks=lambda c: c.n_layers, lora_targets=("q_lin", "v_lin")),
)
register_architecture(
    "albert",
    ArchitectureSpec(
        rules=(
            (_EMB, "embeddings"),
            (r"(?:^|\.)encoder\.embedding_hidden_mapping_in\.", "embeddings"),
            (r"(?:^|\.)encoder\.albert_layer_groups\.(\d+)\.", "block"),
        ),
        num_blocks=lambda c: c.num_hidden_groups,
        note=(
            "ALBERT shares one set of block weights across all num_hidden_layers applications, so there are only "
            "num_hidden_groups distinct blocks (1 by default). LLRD on ALBERT therefore has num_hidden_groups + 2 "
            "depth levels: embeddings, each shared layer group, head; per-application learning rates are impossible "
            "because every application updates the same tensors."
        ),
        lora_targets=_QV,
    ),
)
register_architecture(
    ["vit", "deit", "dinov2"],
    ArchitectureSpec(rules=((_EMB, "embeddings"), (_VIT_BLOCK, "block")),
                     num_blocks=lambda c: c.num_hidden_layers, lora_targets=_QV_PROJ),
)
_BEIT_RULES = (
    (_EMB, "embeddings"),
    # the optional shared relative position bias is used by every block: it sits with the embeddings
    (r"(?:^|\.)(?:shared_position_bias|encoder\.relative_position_bias)\.", "embeddings"),
    (_VIT_BLOCK, "block"),
)
register_architecture("beit", ArchitectureSpec(rules=_BEIT_RULES, num_blocks=lambda c: c.num_hidden_layers,
                                               lora_targets=_QV_PROJ))
register_architecture("data2vec-vision", ArchitectureSpec(rules=_BEIT_RULES, num_blocks=lambda c: c.num_hidden_layers))


def _swin_spec(config) -> ArchitectureSpec:
    depths = list(config.depths)
    offsets = [sum(depths[:s]) for s in range(len(depths))]

    def block(m: re.Match) -> int:
        return offsets[int(m.group(1))] + int(m.group(2)) + 1

    def downsample(m: re.Match) -> int:  # patch merging after stage s belongs with that stage's last block
        s = int(m.group(1))
        return offsets[s] + depths[s]

    return ArchitectureSpec(
        rules=((_EMB, "embeddings"),
               (r"(?:^|\.)encoder\.layers\.(\d+)\.blocks\.(\d+)\.", block),
               (r"(?:^|\.)encoder\.layers\.(\d+)\.downsample\.", downsample)),
        num_blocks=lambda c: sum(c.depths),
        note="Swin stages are flattened in order: block b of stage s has depth sum(depths[:s]) + b + 1; each stage's "
             "patch-merging layer takes the depth of that stage's last block.",
        lora_targets=_QV_PROJ,
    )


register_architecture(["swin", "swinv2"], ArchitectureSpec(rules=(), num_blocks=lambda c: sum(c.depths),
                                                           build=_swin_spec, lora_targets=_QV_PROJ))


# --- convolutional networks: stem = depth 0, each block a depth (stages flattened in order), head = L + 1 -----------
# LoRA: no default targets. Their weights are Conv2d (PEFT's LoRA for Conv2d exists but has no established recipe
# for these models); name peft.target_modules to use it anyway.
_CNN_LORA_NOTE = "no default LoRA targets for a convolutional network: set peft.target_modules (e.g. Conv2d names)"


def _staged_spec(prefix: str, downsample_first: bool, note: str) -> Callable[[object], ArchitectureSpec]:
    """ResNet / ConvNeXt: block ``b`` of stage ``s`` (``<prefix>.stages.s.layers.b``) at depth
    ``sum(depths[:s]) + b + 1``; ConvNeXt's per-stage ``downsampling_layer`` runs before the stage's first block and
    takes that block's depth."""

    def build(config) -> ArchitectureSpec:
        depths = list(config.depths)
        offsets = [sum(depths[:s]) for s in range(len(depths))]

        def block(m: re.Match) -> int:
            return offsets[int(m.group(1))] + int(m.group(2)) + 1

        rules: list = [(rf"(?:^|\.){prefix}\.(?:embedder|embeddings)\.", "embeddings"),
                       (rf"(?:^|\.){prefix}\.encoder\.stages\.(\d+)\.layers\.(\d+)\.", block)]
        if downsample_first:
            rules.append((rf"(?:^|\.){prefix}\.encoder\.stages\.(\d+)\.downsampling_layer\.",
                          lambda m: offsets[int(m.group(1))] + 1))
        return ArchitectureSpec(rules=tuple(rules), num_blocks=lambda c: sum(c.depths), note=note)

    return build


register_architecture(
    "mobilenet_v2",
    ArchitectureSpec(
        rules=((r"(?:^|\.)mobilenet_v2\.conv_stem\.", "embeddings"),
               (r"(?:^|\.)mobilenet_v2\.layer\.(\d+)\.", "block"),
               # the final 1x1 conv (320 -> 1280 channels) is backbone: it sits with the last block, so
               # feature_extraction trains only the classifier on the pooled 1280 features
               (r"(?:^|\.)mobilenet_v2\.conv_1x1\.", lambda m: 16)),
        num_blocks=lambda c: 16,
        note="MobileNetV2: depth 0 = conv_stem (the first conv and the first inverted-residual block, which "
             "transformers keeps in the stem), depths 1..16 = the 16 other inverted-residual blocks (layer.i, one "
             "depth each), the final 1x1 conv sits with layer.15 (depth 16); head (17) = classifier. "
             + _CNN_LORA_NOTE,
    ),
)
register_architecture(
    "resnet",
    ArchitectureSpec(rules=(), num_blocks=lambda c: sum(c.depths),
                     build=_staged_spec("resnet", False, "ResNet: depth 0 = embedder (stem conv + max-pool); each "
                                        "residual block a depth, stages flattened in order (block b of stage s at "
                                        "sum(depths[:s]) + b + 1; ResNet-18: 8, ResNet-50: 16); head = classifier. "
                                        + _CNN_LORA_NOTE)),
)
register_architecture(
    "convnext",
    ArchitectureSpec(rules=(), num_blocks=lambda c: sum(c.depths),
                     build=_staged_spec("convnext", True, "ConvNeXt: depth 0 = embeddings (patchify conv + norm); "
                                        "each block a depth, stages flattened in order (block b of stage s at "
                                        "sum(depths[:s]) + b + 1; ConvNeXt-T: 18); a stage's downsampling layer "
                                        "runs before its first block and takes that block's depth; head = final "
                                        "layernorm + classifier. " + _CNN_LORA_NOTE)),
)
