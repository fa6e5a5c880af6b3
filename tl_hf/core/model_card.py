"""The model card of a :class:`~tl_hf.TransferTrainer` run (what ``TransferTrainer.create_model_card`` writes, so
``trainer.push_to_hub()`` and ``push_to_hub=True`` push it).

* :func:`transfer_card_section` -- a markdown "Transfer learning" section: base model, layer map, LLRD, freezing /
  gradual unfreezing, forgetting regularizers, PEFT/LoRA settings, data and a results table.
* :func:`write_transfer_card` -- the Trainer's own card (``output_dir/README.md``) plus that section, Hub-valid
  metadata (``base_model`` and ``datasets`` as repo ids, ``model-index`` with task metrics only:
  :mod:`tl_hf.core.card_meta`) and tags, checked with huggingface_hub's parsers before it is written. Works offline;
  never writes a token.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Mapping

from tl_hf._hub_access import known_tokens, scrub_tokens
from tl_hf.core.card_meta import base_model_id, check_card, hub_dataset_id, model_index_results
from tl_hf.core.optim import lr_for_depth
from tl_hf.regularizers.base import card_code, card_tags_of, card_value

__all__ = ["SECTION_END", "SECTION_START", "freezing_lines", "llrd_lines", "transfer_card_section",
           "write_transfer_card"]


SECTION_START = "<!-- tl_hf:transfer-learning:start -->"
SECTION_END = "<!-- tl_hf:transfer-learning:end -->"
# metrics that describe the run, not the model: kept out of model-index
_NON_METRICS = re.compile(r"(?:^|_)(?:runtime|samples_per_second|steps_per_second|epoch|step|total_flos|"
                          r"num_input_tokens_seen|model_preparation_time)$")


def _unwrap(model):
    while hasattr(model, "module") and not hasattr(model, "peft_config"):  # DDP / accelerate wrappers
        model = model.module
    return model


def _peft_info(model) -> tuple[Any, str] | None:
    cfgs = getattr(model, "peft_config", None)
    if not isinstance(cfgs, Mapping) or not cfgs:
        return None
    name = getattr(model, "active_adapter", None)
    if isinstance(name, (list, tuple)):
        name = name[0] if name else None
    if name not in cfgs:
        name = next(iter(cfgs))
    return cfgs[name], name


def _base_model(model):
    get = getattr(model, "get_base_model", None)
    if callable(get) and hasattr(model, "peft_config"):
        try:
            return get()
        except Exception:  # pragma: no cover
            pass
    return model


def _len(ds) -> int | None:
    if ds is None:
        return None
    if isinstance(ds, Mapping):
        sizes = [_len(d) for d in ds.values()]
        return sum(sizes) if sizes and all(s is not None for s in sizes) else None
    try:
        return len(ds)
    except Exception:
        return None


def _base_model_name(model) -> str | None:
    info = _peft_info(model)
    if info is not None and getattr(info[0], "base_model_name_or_path", None):
        return info[0].base_model_name_or_path
    cfg = getattr(_base_model(model), "config", None)
    name = getattr(cfg, "_name_or_path", None) if cfg is not None else None
    return name or None


def _task_type(model) -> str | None:
    base = _base_model(model)
    cls = type(base).__name__
    archs = getattr(getattr(base, "config", None), "architectures", None) or []
    for name in [cls, *archs]:
        for suffix, task in (("ForSequenceClassification", "text-classification"),
                             ("ForImageClassification", "image-classification"),
                             ("ForImageClassificationWithTeacher", "image-classification"),
                             ("ForTokenClassification", "token-classification"),
                             ("ForQuestionAnswering", "question-answering"),
                             ("ForMultipleChoice", "multiple-choice"),
                             ("ForCausalLM", "text-generation"),
                             ("ForMaskedLM", "fill-mask"),
                             ("ForAudioClassification", "audio-classification")):
            if name.endswith(suffix):
                return task
    return None


def llrd_lines(trainer) -> list[str]:
    """The card's LLRD subsection for ``trainer`` (or anything with ``llrd``, ``layer_map`` and ``args``)."""
    llrd = trainer.llrd
    lmap = trainer.layer_map
    base_lr = float(trainer.args.learning_rate)
    top = lmap.head_depth
    lines = ["### Layer-wise learning-rate decay (LLRD)", ""]
    if llrd.decay == 1.0 and llrd.head_lr is None:
        lines.append(f"- LLRD off: decay ξ = {card_code(1.0)}, every depth trains at the base learning rate "
                     f"{card_code(base_lr)}")
    else:
        lines.append(f"- decay ξ = {card_code(float(llrd.decay))}: lr(depth) = base_lr · ξ^({top} − depth), "
                     f"base_lr = {card_code(base_lr)}")
    lines.append(f"- head lr: {card_code(llrd.head_lr) if llrd.head_lr is not None else 'the base learning rate'}")
    lines.append(f"- floor (min lr scale): {card_code(float(llrd.min_lr_scale))}")
    wd = trainer.args.weight_decay if llrd.weight_decay is None else llrd.weight_decay
    lines.append(f"- weight decay: {card_code(float(wd))}")
    if llrd.decay != 1.0 or llrd.head_lr is not None:
        lines += ["", "| depth | group | initial lr |", "|---|---|---|"]
        for d in range(top + 1):
            lr = lr_for_depth(d, top, base_lr, llrd.decay, head_lr=llrd.head_lr, min_lr_scale=llrd.min_lr_scale)
            lines.append(f"| {d} | {lmap.depth_name(d)} | {card_value(float(lr))} |")
    return lines


def freezing_lines(trainer) -> list[str]:
    """The card's freezing subsection for ``trainer`` (or anything with ``freezing``, ``layer_map`` and ``freezer``)."""
    fz = trainer.freezing
    lmap = trainer.layer_map
    lines = ["### Freezing", "", f"- policy: {card_code(fz.policy)}"]
    if fz.policy == "full":
        lines.append("- every parameter trains")
    elif fz.policy == "feature_extraction":
        lines.append("- backbone frozen (embeddings and all blocks); only the head trains")
    elif fz.policy == "top_k":
        lines.append(f"- top k = {card_code(fz.k)} blocks and the head train; embeddings "
                     f"{'train' if fz.train_embeddings else 'frozen'}")
    elif fz.policy == "blocks":
        first, last = fz.blocks
        lines.append(f"- surgical fine-tuning: only depths {card_code(first)}..{card_code(last)} "
                     f"({lmap.depth_name(first)} .. {lmap.depth_name(last)}) and the head train")
    elif fz.policy == "patterns":
        lines.append(f"- include (trainable): {card_code(list(fz.include)) if fz.include else 'all parameters'}")
        lines.append(f"- exclude (frozen): {card_code(list(fz.exclude)) if fz.exclude else 'none'}")
    elif fz.policy == "gradual":
        s = fz.schedule
        lines.append(f"- gradual unfreezing, unit: {card_code(s.unit)}, direction: {card_code(s.direction)}")
        if s.phases:
            lines.append(f"- explicit phases: {len(s.phases)}")
        else:
            lines.append(f"- generated schedule: a new phase every {card_code(s.every)} {s.unit}(s), "
                         f"{card_code(s.depths_per_phase)} depth level(s) per phase")
        lines.append(f"- lr re-warm of newly unfrozen groups: "
                     f"{card_code(s.rewarm_steps) + ' steps' if s.rewarm_steps else 'off'}")
        if fz.freeze_norm_stats:
            lines.append("- frozen normalization layers keep their running statistics (eval mode)")
        phases = getattr(getattr(trainer, "freezer", None), "phases", None)
        if phases is None:
            try:
                phases = s.resolve(lmap)
            except Exception:  # pragma: no cover - the trainer already validated it
                phases = []
        if phases:
            lines += ["", f"| phase | starts at {s.unit} | trainable depths |", "|---|---|---|"]
            for i, (start, depths) in enumerate(phases):
                names = ", ".join(lmap.depth_name(d) for d in sorted(depths))
                lines.append(f"| {i} | {start} | {names} |")
    if fz.policy in ("feature_extraction", "top_k", "patterns", "blocks") and fz.freeze_norm_stats:
        lines.append("- frozen normalization layers keep their running statistics (eval mode)")
    if getattr(trainer, "feature_layer_note", None):
        lines.append(f"- {trainer.feature_layer_note}")
    return lines


def robust_lines(trainer) -> list[str]:
    """The card's subsection for re-initialised top blocks and weight averaging (empty when neither is used)."""
    out = []
    reinit = getattr(trainer, "reinit", None)
    if reinit is not None and reinit.enabled:
        out.append(reinit.card_line())
    averager = getattr(trainer, "averager", None)
    if averager is not None:
        out.append(averager.card_line())
    out += list(getattr(trainer, "robust_notes", None) or [])  # set by the run layer: pooling, WiSE-FT
    return ["### Robust fine-tuning", "", *out, ""] if out else []


def _peft_lines(model) -> list[str]:
    info = _peft_info(model)
    if info is None:
        return []
    cfg, adapter = info
    ptype = getattr(cfg, "peft_type", None)
    ptype = getattr(ptype, "value", ptype)
    lines = ["### PEFT", "", f"- method: {card_code(ptype)} (adapter {card_code(adapter)}); only the adapter is saved "
                             "and pushed, not the base weights"]
    if str(ptype).upper() in ("LORA", "ADALORA"):
        lines.append(f"- LoRA r = {card_code(cfg.r)}, alpha = {card_code(cfg.lora_alpha)}, "
                     f"dropout = {card_code(cfg.lora_dropout)}")
    for key, label in (("target_modules", "target modules"), ("modules_to_save", "modules to save"),
                       ("task_type", "task type"), ("bias", "bias")):
        v = getattr(cfg, key, None)
        if v is None:
            continue
        if isinstance(v, (set, frozenset, list, tuple)):
            v = sorted(dict.fromkeys(v))
        lines.append(f"- {label}: {card_code(getattr(v, 'value', v))}")
    try:
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in model.parameters())
        lines.append(f"- trainable parameters: {trainable:,} of {total:,} ({100 * trainable / max(total, 1):.2f}%)")
    except Exception:  # pragma: no cover
        pass
    return lines


def _results_table(results: Mapping[str, Any]) -> list[str]:
    rows = [(k, v) for k, v in results.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and not _NON_METRICS.search(k)]
    if not rows:
        return []
    return ["### Results", "", "| metric | value |", "|---|---|"] + [f"| {k} | {card_value(v)} |" for k, v in rows]


def transfer_card_section(trainer, *, dataset_name: str | None = None, results: Mapping[str, Any] | None = None,
                          base_model: str | None = None, dataset_id: str | None = None) -> str:
    """A markdown "Transfer learning" section describing how ``trainer`` (a :class:`~tl_hf.TransferTrainer`)
    transfers: base model (``base_model``: its Hub id, else the local name), depth levels, LLRD, freezing,
    regularizers, PEFT, data (``dataset_name``, with ``dataset_id`` when it is on the Hub) and results. Pure."""
    model = _unwrap(trainer.model)
    base = _base_model(model)
    lmap = trainer.layer_map
    cfg = getattr(base, "config", None)
    model_type = getattr(cfg, "model_type", None) or lmap.model_type
    base_name = _base_model_name(model)
    lines = [SECTION_START, "## Transfer learning", "",
             "Fine-tuned with `tl_hf.TransferTrainer` (transformers.Trainer with layer-wise learning-rate decay, "
             "freezing policies and forgetting regularizers).", ""]
    if base_model:
        lines.append(f"- base model: [{base_model}](https://huggingface.co/{base_model})")
    elif base_name:
        lines.append(f"- base model: {card_code(base_name)} (a local model; no Hub id recorded)")
    else:
        lines.append("- base model: none (initialised from a config, not a pretrained checkpoint)")
    lines.append(f"- architecture: {card_code(type(base).__name__)} (model_type {card_code(model_type)}, "
                 f"layer map {card_code(lmap.model_type)})")
    lines.append(f"- depth levels: {lmap.levels_text()}")
    if lmap.note:
        lines.append(f"- layer map note: {lmap.note}")
    lines.append("")
    lines += llrd_lines(trainer) + [""]
    lines += freezing_lines(trainer) + [""]
    lines += robust_lines(trainer)
    regs = list(getattr(trainer, "regularizers", None) or [])
    lines += ["### Forgetting regularizers", ""]
    lines += [r.card_line() for r in regs] if regs else ["- none"]
    lines.append("")
    peft = _peft_lines(model)
    if peft:
        lines += peft + [""]
    n_train, n_eval = _len(getattr(trainer, "train_dataset", None)), _len(getattr(trainer, "eval_dataset", None))
    shown = dataset_name or dataset_id
    hub = f" ([{dataset_id}](https://huggingface.co/datasets/{dataset_id}))" if dataset_id and dataset_id != shown \
        else ""
    lines += ["### Data", "", f"- dataset: {card_code(shown) + hub if shown else 'not specified'}"]
    if n_train is not None:
        lines.append(f"- train examples: {n_train:,}")
    if n_eval is not None:
        lines.append(f"- eval examples: {n_eval:,}")
    state = getattr(trainer, "state", None)
    if state is not None and getattr(state, "global_step", 0):
        lines.append(f"- optimizer steps: {state.global_step}")
    lines.append("")
    table = _results_table(results or {})
    if table:
        lines += table + [""]
    lines.append(SECTION_END)
    return "\n".join(lines) + "\n"


def _strategy_tags(trainer) -> list[str]:
    tags = ["tl_hf", "transfer-learning"]
    if trainer.llrd.decay != 1.0 or trainer.llrd.head_lr is not None:
        tags.append("llrd")
    policy = trainer.freezing.policy
    tags += {"gradual": ["gradual-unfreezing"], "feature_extraction": ["feature-extraction", "frozen-backbone"],
             "top_k": ["partial-freezing"], "patterns": ["partial-freezing"]}.get(policy, [])
    tags += card_tags_of(getattr(trainer, "regularizers", None) or [])  # each method's tag, then continual-learning
    if _peft_info(_unwrap(trainer.model)) is not None:
        tags.append("peft")
    return tags


_FIRST_SENTENCE = re.compile(r"This model (?:was trained from scratch|is a fine-tuned version of \[[^\]]*\]\([^)]*\))"
                             r" on ")


def _origin_sentence(text: str, base: str | None, raw_name: str | None) -> str:
    """The Trainer's "trained from scratch" / "fine-tuned version of" sentence, made true for ``base``."""
    if base:
        said = f"This model is a fine-tuned version of [{base}](https://huggingface.co/{base}) on "
    elif raw_name:
        said = f"This model is a fine-tuned version of a local model (`{os.path.basename(raw_name.rstrip('/'))}`) on "
    else:
        said = "This model was trained from scratch on "
    return _FIRST_SENTENCE.sub(lambda m: said, text, count=1)


def _last_eval(trainer) -> dict[str, Any]:
    for entry in reversed(getattr(getattr(trainer, "state", None), "log_history", None) or []):
        if any(k.startswith("eval_") for k in entry):
            return dict(entry)
    return {}


def _set_metadata(card, trainer, *, base, dataset_id, dataset_name, results, eval_results, tags, tasks,
                  dataset_config=None) -> None:
    """``base_model``, ``datasets``, tags and ``model-index`` (task metrics only, on a Hub dataset) of ``card``."""
    data = card.data
    keep = [t for t in (data.tags or []) if not str(t).endswith(":")
            and not (str(t).startswith("base_model:") and (base is None or not str(t).endswith(":" + base)))]
    extra = [tags] if isinstance(tags, str) else list(tags or [])
    data.tags = list(dict.fromkeys(keep + extra + _strategy_tags(trainer)))
    data.base_model = base
    data.datasets = [dataset_id] if dataset_id else None
    task = tasks[0] if isinstance(tasks, (list, tuple)) and tasks else tasks
    task = task or _task_type(_unwrap(trainer.model))
    if task and not getattr(data, "pipeline_tag", None):
        data.pipeline_tag = task  # the Hub's widget and search: text-classification, question-answering, ...
    if eval_results is not None and not isinstance(eval_results, Mapping):
        data.eval_results = list(eval_results) or None
    elif dataset_id and task:
        found = model_index_results(eval_results if eval_results is not None else results, task=task,
                                    dataset_id=dataset_id, dataset_name=dataset_name, dataset_config=dataset_config)
        data.eval_results = found or None
    else:
        data.eval_results = None
    if data.eval_results and not data.model_name:
        data.model_name = (getattr(trainer, "hub_model_id", None) or trainer.args.hub_model_id
                           or Path(trainer.args.output_dir).name).split("/")[-1]


def write_transfer_card(trainer, trainer_card, *, dataset_name: str | None = None, dataset: str | None = None,
                        base_model: str | None = None, results: Mapping[str, Any] | None = None, eval_results=None,
                        finetuned_from: str | None = None, tags=None, tasks=None, dataset_config: str | None = None,
                        **card_kwargs) -> str:
    """Write ``output_dir/README.md``: ``trainer_card(**kwargs)`` (the Trainer's own ``create_model_card``; it
    overwrites the file) followed by :func:`transfer_card_section`, Hub-valid metadata and tags.

    ``dataset``: the dataset's Hub id (``datasets`` and ``model-index``; left out unless it is a valid id);
    ``dataset_name``: what the text calls it (default: ``dataset``). ``base_model`` / ``finetuned_from``: the base
    model's Hub id (default: read from the model, :func:`~tl_hf.core.card_meta.base_model_id`). ``results``: a metrics
    dict (default: the last evaluation) for the table and ``model-index``; ``dataset_config``: the dataset's Hub config
    (e.g. ``rte`` of ``nyu-mll/glue``; the model-index names it); ``eval_results``: a metrics dict or a list
    of ``huggingface_hub.EvalResult``. Other keywords go to the Trainer's card (``language``, ``license``, ...).
    Raises :class:`~tl_hf.core.card_meta.CardError` (nothing written) for a card the Hub would refuse."""
    from huggingface_hub import ModelCard

    raw = _base_model_name(_unwrap(trainer.model))
    base = finetuned_from or base_model or base_model_id(raw)
    dataset_id = hub_dataset_id(dataset)
    dataset_name = dataset_name or dataset
    results = dict(results) if results is not None else _last_eval(trainer)
    out = trainer.args.output_dir
    os.makedirs(out, exist_ok=True)
    tag_list = [tags] if isinstance(tags, str) else (list(tags) if tags is not None else None)
    if dataset_config:
        card_kwargs.setdefault("dataset_args", dataset_config)
    trainer_card(finetuned_from=base, dataset=dataset_name, tags=tag_list, tasks=tasks, **card_kwargs)
    path = os.path.join(out, "README.md")
    card = ModelCard.load(path)
    text = card.text
    if SECTION_START in text and SECTION_END in text:  # rewriting: replace our old section
        a, b = text.index(SECTION_START), text.index(SECTION_END) + len(SECTION_END)
        text = text[:a].rstrip("\n") + "\n" + text[b:].lstrip("\n")
    section = transfer_card_section(trainer, dataset_name=dataset_name, results=results, base_model=base,
                                    dataset_id=dataset_id)
    card.text = _origin_sentence(text, base, raw).rstrip("\n") + "\n\n" + section
    _set_metadata(card, trainer, base=base, dataset_id=dataset_id, dataset_name=dataset_name, results=results,
                  eval_results=eval_results, tags=tags, tasks=tasks, dataset_config=dataset_config)
    content = scrub_tokens(str(card), known_tokens())
    check_card(content)
    tmp = os.path.join(out, "_README.md.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(content)
    os.replace(tmp, path)
    return path
