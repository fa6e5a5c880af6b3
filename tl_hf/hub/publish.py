"""Model cards and Hub pushes for :class:`~tl_hf.TransferTrainer` runs.

* :func:`transfer_card_section` -- a markdown "Transfer learning" section: base model, layer map, LLRD, freezing /
  gradual unfreezing, forgetting regularizers, PEFT/LoRA settings, data and a results table.
* :func:`write_model_card` -- the Trainer's own card (``output_dir/README.md``) plus that section, ``model-index``
  eval results and tags. Works offline. Never writes a token.
* :func:`push` -- save locally, write the card, then ``trainer.push_to_hub``; fails fast with
  :class:`HubUnavailableError` when offline or when the Hub cannot be reached (the model stays saved locally).
* Continual-learning runs (one model over a task sequence, no single Trainer): :func:`continual_card_section` /
  :func:`write_continual_model_card` (scenario, task sequence, strategy, regularizers, the accuracy matrix, ACC / BWT
  / forgetting, ``model-index`` with the final accuracy per task) and :func:`push_folder` (one commit of a saved
  model folder plus extra folders such as the per-task heads; same offline / token checks as :func:`push`).

How to push (recommended)::

    args = TrainingArguments(output_dir="out/run1", push_to_hub=False, ...)   # keep push_to_hub False
    trainer = TransferTrainer(model, args, ...)
    trainer.train()
    tl_hf.hub.push(trainer, repo_id="me/run1", dataset_name="sst2", results=trainer.evaluate())

``TrainingArguments(push_to_hub=True)`` makes ``Trainer.__init__`` call ``create_repo`` over the network (so building
the trainer fails offline) and, with ``hub_strategy`` other than ``"end"``, pushes during training with the Trainer's
own code path -- which uploads ``training_args.bin`` pickled *with* ``hub_token`` in it (see below). Keep it False and
call :func:`push` after training; :func:`push` sets ``trainer.args.hub_model_id`` from ``repo_id``.

Tokens: transformers 5.24's ``Trainer.push_to_hub`` / ``save_model`` write ``training_args.bin`` with
``torch.save(self.args)``, i.e. the pickled ``TrainingArguments`` *including* ``hub_token`` in clear text, and upload
it. :func:`push` therefore saves with ``args.hub_token`` temporarily set to ``None`` (the token is passed to the
upload explicitly instead; it only travels in the request's ``Authorization`` header), :func:`write_model_card` scrubs
every known token value (``hub_token``, the ``token`` argument, ``$HF_TOKEN``, the saved login) and anything shaped
like a Hugging Face token (``hf_...``) from the card, and :func:`push` refuses to upload (:class:`TokenLeakError`) if
any file that would be uploaded still contains a known token.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import socket
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from tl_hf import _hub_access
from tl_hf._hub_access import is_hub_id
from tl_hf.core.optim import lr_for_depth

logger = logging.getLogger(__name__)

__all__ = ["HubUnavailableError", "TokenLeakError", "push", "scrub_tokens", "transfer_card_section",
           "write_model_card", "SECTION_START", "SECTION_END", "continual_card_section", "write_continual_model_card",
           "push_folder", "CONTINUAL_SECTION_START", "CONTINUAL_SECTION_END"]

SECTION_START = "<!-- tl_hf:transfer-learning:start -->"
SECTION_END = "<!-- tl_hf:transfer-learning:end -->"
REDACTED = "<redacted>"
_TOKEN_LIKE = re.compile(r"hf_[A-Za-z0-9]{10,}")
_TOKEN_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HUGGINGFACE_HUB_TOKEN", "HF_HUB_TOKEN")
# metrics that describe the run, not the model: kept out of model-index
_NON_METRICS = re.compile(r"(?:^|_)(?:runtime|samples_per_second|steps_per_second|epoch|step|total_flos|"
                          r"num_input_tokens_seen|model_preparation_time)$")
_SCAN_FULL_LIMIT = 64 * 2**20  # files up to this size are scanned whole for tokens; larger ones: first/last 1 MiB


class HubUnavailableError(RuntimeError):
    """The Hub cannot be reached (offline mode, no network, endpoint down). The model is saved locally."""


class TokenLeakError(RuntimeError):
    """A file that would be pushed contains a Hub token; nothing was uploaded."""


# ---------------------------------------------------------------------------------------------------------------------
# Tokens
# ---------------------------------------------------------------------------------------------------------------------

# id(TrainingArguments) -> tokens taken out of it while saving / pushing (still secrets to scrub)
_HIDDEN: dict[int, list[str]] = {}


def _known_tokens(trainer=None, extra: Iterable[str | None] = ()) -> list[str]:
    found: list[str | None] = list(extra)
    if trainer is not None:
        found.append(getattr(trainer.args, "hub_token", None))
        found += _HIDDEN.get(id(trainer.args), [])
    found += [os.environ.get(k) for k in _TOKEN_ENV]
    try:  # the token saved by `hf auth login` (a local file read, no network)
        from huggingface_hub import get_token

        found.append(get_token())
    except Exception:  # pragma: no cover - best effort
        pass
    # longest first, so that a token containing another one is replaced whole
    return sorted({t for t in found if isinstance(t, str) and len(t) >= 8}, key=len, reverse=True)


def scrub_tokens(text: str, tokens: Iterable[str] = ()) -> str:
    """``text`` with every given token value and anything shaped like a Hugging Face token replaced by
    ``<redacted>``."""
    for t in sorted({t for t in tokens if t}, key=len, reverse=True):
        text = text.replace(t, REDACTED)
    return _TOKEN_LIKE.sub(REDACTED, text)


@contextlib.contextmanager
def _args_without_token(trainer, extra: Iterable[str | None] = ()):
    """``trainer.args.hub_token`` is ``None`` inside (so ``training_args.bin`` is pickled without it); it and
    ``extra`` still count as secrets for :func:`_known_tokens`."""
    args = trainer.args
    saved = getattr(args, "hub_token", None)
    key = id(args)
    hidden = [t for t in (saved, *extra) if isinstance(t, str) and t]
    _HIDDEN.setdefault(key, []).extend(hidden)
    if saved is not None:
        args.hub_token = None
    try:
        yield
    finally:
        if saved is not None:
            args.hub_token = saved
        stack = _HIDDEN.get(key, [])
        del stack[len(stack) - len(hidden):]
        if not stack:
            _HIDDEN.pop(key, None)


def _files_to_upload(folder: str) -> list[Path]:
    """What ``Trainer.push_to_hub`` uploads: everything under ``folder`` but ``_*`` and ``checkpoint-*``."""
    from fnmatch import fnmatch

    root = Path(folder)
    out = []
    for p in root.rglob("*"):
        if not p.is_file():
            continue
        rel = p.relative_to(root).as_posix()
        if fnmatch(rel, "_*") or fnmatch(rel, "checkpoint-*") or ".cache/" in rel or rel.startswith(".git/"):
            continue
        out.append(p)
    return out


def _check_no_tokens(folder: str, tokens: Sequence[str]) -> None:
    needles = [t.encode() for t in tokens if t]
    if not needles:
        return
    for p in _files_to_upload(folder):
        size = p.stat().st_size
        with open(p, "rb") as f:
            if size <= _SCAN_FULL_LIMIT:
                chunks = [f.read()]
            else:
                head = f.read(2**20)
                f.seek(-(2**20), os.SEEK_END)
                chunks = [head, f.read()]
        if any(n in c for n in needles for c in chunks):
            raise TokenLeakError(
                f"{p} contains a Hugging Face token; refusing to push {folder}. Remove or re-save that file "
                "without the token (e.g. TrainingArguments pickled with hub_token set) and push again."
            )


# ---------------------------------------------------------------------------------------------------------------------
# The "Transfer learning" section
# ---------------------------------------------------------------------------------------------------------------------

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


def _fmt(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, float):
        if v == 0 or math.isnan(v) or math.isinf(v):
            return str(v)
        return f"{v:.4g}"
    if isinstance(v, (list, tuple, set, frozenset)):
        return ", ".join(_fmt(x) for x in (sorted(v) if isinstance(v, (set, frozenset)) else v)) or "-"
    return str(v)


def _code(v: Any) -> str:
    return f"`{_fmt(v)}`"


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


def _llrd_lines(trainer) -> list[str]:
    llrd = trainer.llrd
    lmap = trainer.layer_map
    base_lr = float(trainer.args.learning_rate)
    top = lmap.head_depth
    lines = ["### Layer-wise learning-rate decay (LLRD)", ""]
    if llrd.decay == 1.0 and llrd.head_lr is None:
        lines.append(f"- LLRD off: decay ξ = {_code(1.0)}, every depth trains at the base learning rate "
                     f"{_code(base_lr)}")
    else:
        lines.append(f"- decay ξ = {_code(float(llrd.decay))}: lr(depth) = base_lr · ξ^({top} − depth), "
                     f"base_lr = {_code(base_lr)}")
    lines.append(f"- head lr: {_code(llrd.head_lr) if llrd.head_lr is not None else 'the base learning rate'}")
    lines.append(f"- floor (min lr scale): {_code(float(llrd.min_lr_scale))}")
    wd = trainer.args.weight_decay if llrd.weight_decay is None else llrd.weight_decay
    lines.append(f"- weight decay: {_code(float(wd))}")
    if llrd.decay != 1.0 or llrd.head_lr is not None:
        lines += ["", "| depth | group | initial lr |", "|---|---|---|"]
        for d in range(top + 1):
            lr = lr_for_depth(d, top, base_lr, llrd.decay, head_lr=llrd.head_lr, min_lr_scale=llrd.min_lr_scale)
            lines.append(f"| {d} | {lmap.depth_name(d)} | {_fmt(float(lr))} |")
    return lines


def _freezing_lines(trainer) -> list[str]:
    fz = trainer.freezing
    lmap = trainer.layer_map
    lines = ["### Freezing", "", f"- policy: {_code(fz.policy)}"]
    if fz.policy == "full":
        lines.append("- every parameter trains")
    elif fz.policy == "feature_extraction":
        lines.append("- backbone frozen (embeddings and all blocks); only the head trains")
    elif fz.policy == "top_k":
        lines.append(f"- top k = {_code(fz.k)} blocks and the head train; embeddings "
                     f"{'train' if fz.train_embeddings else 'frozen'}")
    elif fz.policy == "patterns":
        lines.append(f"- include (trainable): {_code(list(fz.include)) if fz.include else 'all parameters'}")
        lines.append(f"- exclude (frozen): {_code(list(fz.exclude)) if fz.exclude else 'none'}")
    elif fz.policy == "gradual":
        s = fz.schedule
        lines.append(f"- gradual unfreezing, unit: {_code(s.unit)}, direction: {_code(s.direction)}")
        if s.phases:
            lines.append(f"- explicit phases: {len(s.phases)}")
        else:
            lines.append(f"- generated schedule: a new phase every {_code(s.every)} {s.unit}(s), "
                         f"{_code(s.depths_per_phase)} depth level(s) per phase")
        lines.append(f"- lr re-warm of newly unfrozen groups: "
                     f"{_code(s.rewarm_steps) + ' steps' if s.rewarm_steps else 'off'}")
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
    if fz.policy in ("feature_extraction", "top_k", "patterns") and fz.freeze_norm_stats:
        lines.append("- frozen normalization layers keep their running statistics (eval mode)")
    return lines


def _reg_line(reg) -> str:
    c = reg.config
    name = reg.name
    if name == "ewc":
        s = (f"**EWC**: λ = {_code(c.lambda_)}, Fisher estimator {_code(c.estimator)}"
             f" ({'per-example' if c.per_example else 'batch-mean'} gradients, {_code(c.num_samples)} samples)")
    elif name == "online_ewc":
        s = (f"**online EWC**: λ = {_code(c.lambda_)}, γ = {_code(c.gamma)}, Fisher estimator {_code(c.estimator)}"
             f" ({_code(c.num_samples)} samples)")
    elif name == "l2sp":
        src = f", anchors from {_code(c.source)}" if c.source else ", anchors: the starting weights"
        s = (f"**L2-SP**: α = {_code(c.alpha)} (pull to the pretrained weights), β = {_code(c.beta)} "
             f"(new parameters){src}")
    elif name == "replay":
        s = f"**replay**: budget {_code(c.budget)} examples, selection {_code(c.selection)}, mode {_code(c.mode)}"
        s += f", ratio {_code(c.ratio)}" if c.mode == "interleave" else f", weight {_code(c.weight)}"
    else:
        items = asdict(c) if is_dataclass(c) else dict(vars(c))
        items.pop("exempt", None)
        s = f"**{name}**: " + ", ".join(f"{k} = {_code(v)}" for k, v in items.items())
    exempt = getattr(c, "exempt", None)
    if exempt:
        s += f"; exempt: {_code(list(exempt))}"
    return "- " + s


def _peft_lines(model) -> list[str]:
    info = _peft_info(model)
    if info is None:
        return []
    cfg, adapter = info
    ptype = getattr(cfg, "peft_type", None)
    ptype = getattr(ptype, "value", ptype)
    lines = ["### PEFT", "", f"- method: {_code(ptype)} (adapter {_code(adapter)}); only the adapter is saved and "
                             "pushed, not the base weights"]
    if str(ptype).upper() in ("LORA", "ADALORA"):
        lines.append(f"- LoRA r = {_code(cfg.r)}, alpha = {_code(cfg.lora_alpha)}, "
                     f"dropout = {_code(cfg.lora_dropout)}")
    for key, label in (("target_modules", "target modules"), ("modules_to_save", "modules to save"),
                       ("task_type", "task type"), ("bias", "bias")):
        v = getattr(cfg, key, None)
        if v is None:
            continue
        if isinstance(v, (set, frozenset, list, tuple)):
            v = sorted(dict.fromkeys(v))
        lines.append(f"- {label}: {_code(getattr(v, 'value', v))}")
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
    return ["### Results", "", "| metric | value |", "|---|---|"] + [f"| {k} | {_fmt(v)} |" for k, v in rows]


def transfer_card_section(trainer, *, dataset_name: str | None = None,
                          results: Mapping[str, Any] | None = None) -> str:
    """A markdown "Transfer learning" section describing how ``trainer`` (a :class:`~tl_hf.TransferTrainer`)
    transfers: base model, depth levels, LLRD, freezing, regularizers, PEFT, data and results. Pure (no I/O)."""
    model = _unwrap(trainer.model)
    base = _base_model(model)
    lmap = trainer.layer_map
    cfg = getattr(base, "config", None)
    model_type = getattr(cfg, "model_type", None) or lmap.model_type
    base_name = _base_model_name(model)
    lines = [SECTION_START, "## Transfer learning", "",
             "Fine-tuned with `tl_hf.TransferTrainer` (transformers.Trainer with layer-wise learning-rate decay, "
             "freezing policies and forgetting regularizers).", ""]
    lines.append("- base model: " + (_code(base_name) if base_name
                                     else "none (initialised from a config, not a pretrained checkpoint)"))
    lines.append(f"- architecture: {_code(type(base).__name__)} (model_type {_code(model_type)}, "
                 f"layer map {_code(lmap.model_type)})")
    lines.append(f"- depth levels: {lmap.head_depth + 1} (0 = embeddings, 1..{lmap.num_blocks} = "
                 f"{lmap.num_blocks} blocks, {lmap.head_depth} = head)")
    if lmap.note:
        lines.append(f"- layer map note: {lmap.note}")
    lines.append("")
    lines += _llrd_lines(trainer) + [""]
    lines += _freezing_lines(trainer) + [""]
    regs = list(getattr(trainer, "regularizers", None) or [])
    lines += ["### Forgetting regularizers", ""]
    lines += [_reg_line(r) for r in regs] if regs else ["- none"]
    lines.append("")
    peft = _peft_lines(model)
    if peft:
        lines += peft + [""]
    n_train, n_eval = _len(getattr(trainer, "train_dataset", None)), _len(getattr(trainer, "eval_dataset", None))
    lines += ["### Data", "", f"- dataset: {_code(dataset_name) if dataset_name else 'not specified'}"]
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


# ---------------------------------------------------------------------------------------------------------------------
# The model card
# ---------------------------------------------------------------------------------------------------------------------

def _strategy_tags(trainer) -> list[str]:
    tags = ["tl_hf", "transfer-learning"]
    if trainer.llrd.decay != 1.0 or trainer.llrd.head_lr is not None:
        tags.append("llrd")
    policy = trainer.freezing.policy
    tags += {"gradual": ["gradual-unfreezing"], "feature_extraction": ["feature-extraction", "frozen-backbone"],
             "top_k": ["partial-freezing"], "patterns": ["partial-freezing"]}.get(policy, [])
    for r in getattr(trainer, "regularizers", None) or []:
        tags.append({"ewc": "ewc", "online_ewc": "online-ewc", "l2sp": "l2-sp", "replay": "replay"}
                    .get(r.name, r.name.replace("_", "-")))
    if any(r.name in ("ewc", "online_ewc", "replay") for r in getattr(trainer, "regularizers", None) or []):
        tags.append("continual-learning")
    if _peft_info(_unwrap(trainer.model)) is not None:
        tags.append("peft")
    return tags


def _metric_name(key: str) -> str:
    key = re.sub(r"^(?:eval|test|predict)_", "", key)
    return key


def _eval_results(trainer, eval_results, results, dataset_name, tasks) -> list:
    from huggingface_hub import EvalResult

    if eval_results is None:
        eval_results = results
    if not eval_results:
        return []
    if isinstance(eval_results, EvalResult):
        return [eval_results]
    if not isinstance(eval_results, Mapping):
        out = list(eval_results)
        bad = [type(e).__name__ for e in out if not isinstance(e, EvalResult)]
        if bad:
            raise TypeError(f"eval_results must be a metrics dict or a list of huggingface_hub.EvalResult, got {bad}")
        return out
    task = tasks[0] if isinstance(tasks, (list, tuple)) and tasks else tasks
    task = task or _task_type(_unwrap(trainer.model)) or "other"
    ds = dataset_name or "custom"
    out = []
    for key, value in eval_results.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or _NON_METRICS.search(key):
            continue
        if isinstance(value, float) and not math.isfinite(value):
            continue
        metric = _metric_name(key)
        out.append(EvalResult(task_type=task, dataset_type=ds, dataset_name=ds, metric_type=metric,
                              metric_value=float(value), metric_name=metric.replace("_", " ").title(),
                              dataset_split="test" if key.startswith("test_") else
                              ("validation" if key.startswith("eval_") else None)))
    return out


def _finish_card(trainer, *, dataset_name, results, eval_results, tags, tasks, tokens) -> str:
    """Append our section, tags and model-index to ``output_dir/README.md`` (as written by create_model_card)."""
    from huggingface_hub import ModelCard, ModelCardData

    path = os.path.join(trainer.args.output_dir, "README.md")
    if os.path.exists(path):
        card = ModelCard.load(path)
    else:
        card = ModelCard.from_template(ModelCardData())
    text = card.text
    if SECTION_START in text and SECTION_END in text:  # rewriting: replace our old section
        a, b = text.index(SECTION_START), text.index(SECTION_END) + len(SECTION_END)
        text = text[:a].rstrip("\n") + "\n" + text[b:].lstrip("\n")
    section = transfer_card_section(trainer, dataset_name=dataset_name, results=results)
    card.text = text.rstrip("\n") + "\n\n" + section

    data = card.data
    existing = list(data.tags or [])
    extra = [tags] if isinstance(tags, str) else list(tags or [])
    # (peft tags an adapter of a config-built model 'base_model:adapter:' with an empty name: drop such tags)
    data.tags = [t for t in dict.fromkeys(existing + extra + _strategy_tags(trainer)) if not str(t).endswith(":")]
    if not data.get("base_model"):  # peft writes base_model: "" for a model built from a config
        base_name = _base_model_name(_unwrap(trainer.model))
        if base_name:
            data.base_model = base_name
        elif "base_model" in data.to_dict():
            data.base_model = None
    if dataset_name and not data.datasets:
        data.datasets = [dataset_name]
    new_results = _eval_results(trainer, eval_results, results, dataset_name, tasks)
    if new_results:
        old = list(data.eval_results or [])
        keep = [e for e in old if not any(e.is_equal_except_value(n) for n in new_results)]
        data.eval_results = keep + new_results
        if not data.model_name:
            data.model_name = (getattr(trainer, "hub_model_id", None) or trainer.args.hub_model_id
                               or Path(trainer.args.output_dir).name).split("/")[-1]
    content = scrub_tokens(str(card), tokens)
    tmp = path + ".tmp"
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(content)
    os.replace(tmp, path)
    return path


def write_model_card(trainer, *, dataset_name: str | None = None, results: Mapping[str, Any] | None = None,
                     eval_results=None, **card_kwargs) -> str | None:
    """Write ``output_dir/README.md``: ``trainer.create_model_card(**card_kwargs)`` (the Trainer's card; it overwrites
    the file) followed by :func:`transfer_card_section`, ``model-index`` eval results and tags.

    ``results``: a metrics dict (e.g. ``trainer.evaluate()``) shown as a table; also used for ``model-index`` when
    ``eval_results`` is not given. ``eval_results``: a metrics dict or a list of ``huggingface_hub.EvalResult``.
    ``card_kwargs``: ``create_model_card`` arguments (``language``, ``license``, ``tags``, ``model_name``,
    ``finetuned_from``, ``tasks``, ``dataset_tags``, ``dataset``, ``dataset_args``).

    Works offline; never writes a token (``hub_token``, ``$HF_TOKEN``, the saved login token and anything shaped like
    ``hf_...`` are replaced by ``<redacted>``). Returns the path, or ``None`` on processes other than the main one.
    """
    if not trainer.is_world_process_zero():
        return None
    card_kwargs = dict(card_kwargs)
    if dataset_name and "dataset" not in card_kwargs:
        card_kwargs["dataset"] = dataset_name
    tags = card_kwargs.get("tags")
    if tags is not None:  # create_model_card appends to a list it is given: pass a copy
        card_kwargs["tags"] = [tags] if isinstance(tags, str) else list(tags)
    os.makedirs(trainer.args.output_dir, exist_ok=True)
    with _args_without_token(trainer):
        type(trainer).create_model_card(trainer, **card_kwargs)
    return _finish_card(trainer, dataset_name=dataset_name, results=results, eval_results=eval_results,
                        tags=tags, tasks=card_kwargs.get("tasks"), tokens=_known_tokens(trainer))


# ---------------------------------------------------------------------------------------------------------------------
# Push
# ---------------------------------------------------------------------------------------------------------------------

def _unavailable_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = [ConnectionError, TimeoutError, socket.gaierror]
    try:
        from huggingface_hub.errors import OfflineModeIsEnabled

        types.append(OfflineModeIsEnabled)
    except ImportError:  # pragma: no cover
        pass
    for mod in ("httpx2", "httpx"):
        try:
            m = __import__(mod)
            types += [m.TransportError]  # ConnectError, ConnectTimeout, ReadTimeout, NetworkError, ProxyError...
        except (ImportError, AttributeError):
            pass
    try:
        import requests

        types += [requests.ConnectionError, requests.Timeout]
    except ImportError:  # pragma: no cover
        pass
    return tuple(types)


@contextlib.contextmanager
def _network_errors(folder: str, repo: str | None):
    """Turn a failure to reach the Hub (also when huggingface_hub wraps it in its own error) into
    :class:`HubUnavailableError` naming the repo and the folder where the model stays saved."""
    try:
        yield
    except _unavailable_types() as exc:
        raise _unavailable(folder, repo, f"{type(exc).__name__}: {exc}") from None
    except HubUnavailableError:
        raise
    except Exception as exc:
        cause = exc.__cause__ or exc.__context__
        if cause is not None and isinstance(cause, _unavailable_types()):
            raise _unavailable(folder, repo, f"{type(cause).__name__}: {cause}") from None
        raise


def _unavailable(output_dir: str, repo: str | None, why: str) -> HubUnavailableError:
    why = " ".join(scrub_tokens(str(why)).split())
    if len(why) > 200:
        why = why[:197] + "..."
    where = f" to {repo}" if repo else ""
    return HubUnavailableError(
        f"cannot push{where}: the Hugging Face Hub is unavailable ({why}); the trained model stays saved locally at "
        f"{output_dir} -- push it later with `hf upload {repo or '<repo_id>'} {output_dir}` (or tl_hf.hub.push) "
        + ("with HF_HUB_OFFLINE unset" if _hub_access.offline() else "once the Hub is reachable")
    )


@contextlib.contextmanager
def _no_card_lookups():
    """The Trainer's card (``TrainingSummary``) looks the base model up on the Hub unless offline: skip that."""
    try:
        import transformers.modelcard as mc
    except ImportError:  # pragma: no cover
        yield
        return
    saved = getattr(mc, "is_offline_mode", None)
    if saved is None:  # pragma: no cover - another transformers version
        yield
        return
    mc.is_offline_mode = lambda: True
    try:
        yield
    finally:
        mc.is_offline_mode = saved


def _value(v) -> str:
    return str(getattr(v, "value", v))


def push(trainer, *, repo_id: str | None = None, commit_message: str = "End of training", token: str | None = None,
         private: bool | None = None, revision: str | None = None, blocking: bool = True,
         dataset_name: str | None = None, results: Mapping[str, Any] | None = None, eval_results=None,
         connect_timeout: float = 5.0, **card_kwargs):
    """Save the model in ``output_dir``, write the model card, and push ``output_dir`` to the Hub.

    Works for full models and PEFT adapters (``Trainer.save_model`` saves only the adapter for a ``PeftModel``).

    Args:
        repo_id: the Hub repo (``"name"`` or ``"namespace/name"``); sets ``trainer.args.hub_model_id``. Default:
            ``args.hub_model_id``, else the output_dir's name (as ``Trainer.push_to_hub``).
        token: a write token. Default: ``args.hub_token``, then ``$HF_TOKEN`` / the saved login. It is sent in the
            request headers only: ``training_args.bin`` is saved without ``hub_token`` and the card is scrubbed.
        dataset_name, results, eval_results, card_kwargs: as in :func:`write_model_card`.
        connect_timeout: seconds for the TCP pre-check of the Hub endpoint.

    Returns what ``Trainer.push_to_hub`` returns (a ``CommitInfo``, or a ``Future`` if ``blocking=False``).

    Raises:
        HubUnavailableError: offline (``HF_HUB_OFFLINE=1``) or the Hub unreachable; raised quickly (no retries),
            after the model and card have been saved locally.
        TokenLeakError: a file that would be uploaded contains a token (nothing is uploaded).
    """
    args = trainer.args
    if repo_id is not None:
        if trainer.hub_model_id is not None and trainer.hub_model_id != repo_id \
                and not trainer.hub_model_id.endswith("/" + repo_id):
            trainer.hub_model_id = None  # pushing somewhere else: create that repo first
        args.hub_model_id = repo_id
    repo = args.hub_model_id or Path(args.output_dir).absolute().name
    token = token if token is not None else args.hub_token
    secrets = _known_tokens(trainer, [token])
    output_dir = os.path.abspath(args.output_dir)
    card = dict(dataset_name=dataset_name, results=results, eval_results=eval_results)
    # 1. local first: the model and training_args.bin (saved without hub_token) survive any network failure.
    #    Every process takes part (sharded / FSDP saves are collective); only the main one writes and uploads.
    if args.push_to_hub and args.hub_token and _value(args.hub_strategy) != "end" \
            and _value(args.save_strategy) != "no":
        logger.warning("TrainingArguments(push_to_hub=True, hub_strategy=%r) makes the Trainer push checkpoints "
                       "during training with training_args.bin pickled *with* hub_token; set push_to_hub=False and "
                       "call tl_hf.hub.push after training instead", _value(args.hub_strategy))
    with _args_without_token(trainer, [token]):
        trainer.save_model(_internal_call=True)  # _internal_call: with args.push_to_hub, no Trainer push of its own
    if not trainer.is_world_process_zero():
        return None
    # 2. fail fast when the Hub cannot be reached (huggingface_hub would retry uploads for ~20 s); the card is
    #    still written, without the Trainer's Hub look-ups
    why = ("offline mode is enabled (HF_HUB_OFFLINE=1)" if _hub_access.offline()
           else _hub_access.unreachable_reason(connect_timeout))
    if why is not None:
        with _no_card_lookups(), _args_without_token(trainer, [token]):
            write_model_card(trainer, **card, **card_kwargs)
        raise _unavailable(output_dir, repo, why)
    with _args_without_token(trainer, [token]):
        write_model_card(trainer, **card, **card_kwargs)
    _check_no_tokens(args.output_dir, secrets)

    # 3. Trainer.push_to_hub: create_repo, save_model (done above: skipped), create_model_card (ours), upload_folder
    def create_model_card(**kwargs):
        write_model_card(trainer, **card, **kwargs)
        _check_no_tokens(args.output_dir, secrets)  # a last look at what upload_folder is about to send

    trainer.create_model_card = create_model_card
    trainer.save_model = lambda *a, **k: None
    try:
        with _args_without_token(trainer, [token]), _network_errors(output_dir, repo):
            return trainer.push_to_hub(commit_message=commit_message, blocking=blocking, token=token,
                                       revision=revision, private=private, **card_kwargs)
    finally:
        del trainer.create_model_card, trainer.save_model


# ---------------------------------------------------------------------------------------------------------------------
# Continual-learning runs: one model trained on a task sequence (no single Trainer); the card is built from the run's
# summary, and a folder is pushed
# ---------------------------------------------------------------------------------------------------------------------

CONTINUAL_SECTION_START = "<!-- tl_hf:continual-learning:start -->"
CONTINUAL_SECTION_END = "<!-- tl_hf:continual-learning:end -->"
_SCENARIO_TEXT = {
    "task_incremental": "one head per task: each task keeps its own classifier weights (swapped in to train or "
                        "predict; the task is known at test time), the backbone is shared",
    "class_incremental": "one shared head over the union of all tasks' labels; prediction is the argmax over every "
                         "output, without task identity",
    "domain_incremental": "one shared head; every task has the same label set",
}


def _acc(v: Any) -> str:
    return "–" if v is None else f"{float(v):.4f}"


def _signed(v: Any) -> str:
    return "n/a" if v is None else f"{float(v):+.4f}"


def continual_card_section(summary: Mapping[str, Any], *, regularizers: Sequence = (), llrd=None, freezing=None,
                           layer_map=None, learning_rate: float | None = None,
                           weight_decay: float | None = None) -> str:
    """A markdown "Continual learning" section for a model trained on a task sequence (``task: continual``).

    ``summary``: the run's results (``all_results.json`` of the continual recipe): ``model``, ``scenario``, ``kind``,
    ``task_names``, ``tasks`` (per task ``name``, ``train_samples``, ``eval_samples``, ``labels``, ``class_names``,
    optionally ``dataset``, an id for ``model-index``, and ``data``, a description), ``R``, ``ACC``, ``BWT``,
    ``forgetting`` (task name -> value), ``avg_forgetting``, ``num_labels``, optionally ``architecture``,
    ``num_parameters``, ``replay_source``, ``replay_memory``, ``heads`` (the per-task head files). ``regularizers`` (objects with ``name`` and ``config``), ``llrd``,
    ``freezing``, ``layer_map``, ``learning_rate`` and ``weight_decay`` describe the strategy. Pure (no I/O)."""
    from types import SimpleNamespace

    names = [str(n) for n in summary.get("task_names", [])]
    n = len(names)
    R = summary.get("R") or []
    scenario = str(summary.get("scenario"))
    lines = [CONTINUAL_SECTION_START, "## Continual learning", "",
             f"Trained with `tl_hf` (`task: continual`): one model learned {n} task(s) in order with "
             "`tl_hf.TransferTrainer`, and after each task every task seen so far was evaluated.", ""]
    model = summary.get("model")
    lines.append(f"- base model: {_code(model) if model else 'not recorded'}")
    arch = summary.get("architecture")
    if arch:
        extra = f", {summary['num_parameters']:,} parameters" if summary.get("num_parameters") else ""
        lines.append(f"- architecture: {_code(arch)}{extra}, head of {summary.get('num_labels')} outputs")
    lines.append(f"- scenario: {_code(scenario)}: {_SCENARIO_TEXT.get(scenario, 'see tl_hf.continual')}")
    lines.append(f"- task sequence: {' → '.join(f'`{x}`' for x in names)}")
    lines += ["", "### Task sequence", "", "| # | task | data | train examples | eval examples | labels | classes |",
              "|---|---|---|---|---|---|---|"]
    for i, t in enumerate(summary.get("tasks") or []):
        lines.append(f"| {i + 1} | {t.get('name')} | {t.get('data') or t.get('dataset') or '-'} | "
                     f"{t.get('train_samples', '-')} | "
                     f"{t.get('eval_samples', '-')} | {_fmt(list(t.get('labels') or []))} | "
                     f"{_fmt(list(t.get('class_names') or []))} |")
    src = summary.get("replay_source")
    if src:
        lines += ["", f"Replay source {_code(src.get('name'))}: {src.get('samples')} examples "
                      f"({src.get('source', '-')}), labels {_fmt(list(src.get('labels') or []))}, offered to the "
                      "replay memory before task 1 (standing in for pre-training data)."]
    lines.append("")
    if llrd is not None and freezing is not None and layer_map is not None:
        ns = SimpleNamespace(llrd=llrd, freezing=freezing, layer_map=layer_map, freezer=None,
                             args=SimpleNamespace(learning_rate=float(learning_rate or 0.0),
                                                  weight_decay=float(weight_decay or 0.0)))
        lines += ["Every task is trained with the same strategy:", ""]
        lines += _llrd_lines(ns) + [""]
        lines += _freezing_lines(ns) + [""]
    lines += ["### Forgetting regularizers", ""]
    regs = list(regularizers or [])
    lines += [_reg_line(r) for r in regs] if regs else ["- none"]
    mem = summary.get("replay_memory")
    if mem:
        by = ", ".join(f"{k} {v}" for k, v in sorted((mem.get("by_source") or {}).items()))
        lines.append(f"- replay memory after the last task: {mem.get('size')} examples ({by or 'empty'})")
    lines += ["", "### Accuracy matrix", "",
              "R[i][j] = accuracy on the eval set of task j after training tasks 1..i (rows: after training; "
              "columns: evaluated on).", "",
              "| after training ↓ / evaluated on → | " + " | ".join(names) + " |",
              "|---|" + "---|" * n]
    for i, row in enumerate(R):
        lines.append(f"| {names[i]} | " + " | ".join(_acc(v) for v in row) + " |")
    lines += ["", "### Results", "", "| metric | value |", "|---|---|",
              f"| ACC (mean final accuracy over all tasks) | {_acc(summary.get('ACC'))} |",
              f"| BWT (backward transfer; negative = forgetting) | {_signed(summary.get('BWT'))} |",
              f"| average forgetting | {_acc(summary.get('avg_forgetting'))} |"]
    forgetting = summary.get("forgetting") or {}
    lines += ["", "| task | accuracy right after training | final accuracy | forgetting |", "|---|---|---|---|"]
    for j, name in enumerate(names):
        diag = R[j][j] if j < len(R) else None
        final = R[-1][j] if R else None
        lines.append(f"| {name} | {_acc(diag)} | {_acc(final)} | {_acc(forgetting.get(name))} |")
    heads = summary.get("heads")
    if heads:
        lines += ["", "### Per-task heads", "",
                  "Each task's classifier weights are in `heads/<task>.safetensors` (uploaded with the model); the "
                  "model's own head is the last task's. Load a task's head into the classifier before predicting "
                  f"for that task: {_fmt(list(heads))}."]
    lines += ["", CONTINUAL_SECTION_END]
    return "\n".join(lines) + "\n"


def _continual_tags(summary: Mapping[str, Any], regularizers, llrd, freezing) -> list[str]:
    tags = ["tl_hf", "transfer-learning", "continual-learning", str(summary.get("scenario")).replace("_", "-")]
    if summary.get("kind") == "mnist":
        tags.append("split-mnist")
    if llrd is not None and (llrd.decay != 1.0 or llrd.head_lr is not None):
        tags.append("llrd")
    if freezing is not None:
        tags += {"gradual": ["gradual-unfreezing"], "feature_extraction": ["feature-extraction", "frozen-backbone"],
                 "top_k": ["partial-freezing"], "patterns": ["partial-freezing"]}.get(freezing.policy, [])
    for r in regularizers or []:
        tags.append({"ewc": "ewc", "online_ewc": "online-ewc", "l2sp": "l2-sp", "replay": "replay"}
                    .get(r.name, r.name.replace("_", "-")))
    return list(dict.fromkeys(tags))


def write_continual_model_card(folder: str, summary: Mapping[str, Any], *, model_name: str | None = None,
                               token: str | None = None, regularizers: Sequence = (), llrd=None, freezing=None,
                               layer_map=None, learning_rate: float | None = None,
                               weight_decay: float | None = None) -> str:
    """Write ``folder/README.md`` for a continual run: YAML metadata (tags, ``model-index`` with the final accuracy
    on every task), a short introduction and :func:`continual_card_section`. Works offline; never writes a token (known
    token values and anything shaped like ``hf_...`` become ``<redacted>``). Returns the path."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    names = [str(x) for x in summary.get("task_names", [])]
    R = summary.get("R") or []
    kind_task = "image-classification" if summary.get("kind") == "mnist" else "text-classification"
    model_name = model_name or Path(os.path.abspath(folder)).name
    tasks = {t.get("name"): t for t in summary.get("tasks") or []}
    evals = []
    for j, name in enumerate(names):
        final = R[-1][j] if R else None
        if final is None or not math.isfinite(float(final)):
            continue
        # dataset_config = the task: model-index groups results by (task, dataset type, config, split), and two
        # tasks may come from one dataset (Split-MNIST: all of them)
        evals.append(EvalResult(task_type=kind_task, dataset_type=str(tasks.get(name, {}).get("dataset") or name),
                                dataset_name=name, dataset_config=name, dataset_split="eval", metric_type="accuracy",
                                metric_name=f"final accuracy on {name} (after all {len(names)} tasks)",
                                metric_value=float(final)))
    model = summary.get("model")
    is_hf = os.path.exists(os.path.join(folder, "config.json"))
    data = ModelCardData(
        model_name=model_name, tags=_continual_tags(summary, regularizers, llrd, freezing),
        library_name="transformers" if is_hf else None, pipeline_tag=kind_task if is_hf else None,
        base_model=model if is_hub_id(model, namespace=True) and not os.path.exists(model) else None,
        eval_results=evals or None)
    section = continual_card_section(summary, regularizers=regularizers, llrd=llrd, freezing=freezing,
                                     layer_map=layer_map, learning_rate=learning_rate, weight_decay=weight_decay)
    acc = summary.get("ACC")
    intro = (f"# {model_name}\n\nTrained on {len(names)} tasks in sequence ({summary.get('scenario')}) with the "
             "continual-learning recipe of tl_hf" + (f"; final average accuracy ACC = {float(acc):.4f}." if acc
                                                      is not None else "."))
    if not is_hf:
        intro += (" The weights are a plain PyTorch state dict (`model.safetensors`) of `tl_hf.continual.SmallMLP`; "
                  "load them with `safetensors.torch.load_model`.")
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n{intro}\n\n{section}")
    content = scrub_tokens(str(card), _known_tokens(None, [token]))
    path = os.path.join(folder, "README.md")
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, "_tmp_README.md")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(content)
    os.replace(tmp, path)
    return path


def push_folder(folder: str, *, repo_id: str, private: bool | None = None, token: str | None = None,
                revision: str | None = None, commit_message: str = "Upload model",
                extra_folders: Mapping[str, str] | None = None, connect_timeout: float = 5.0):
    """Upload ``folder`` (everything but ``_*`` and ``checkpoint-*``, as ``Trainer.push_to_hub`` does) and every
    ``extra_folders`` entry (``{path in the repo: local folder}``, e.g. ``{"heads": ".../heads"}``) to the Hub repo
    ``repo_id`` ($HF_ENDPOINT) in one commit, creating the repo if needed. Used for runs without a single Trainer
    (the continual recipe); the token goes in the request headers only.

    Raises :class:`HubUnavailableError` at once when offline (``HF_HUB_OFFLINE=1``) or when the endpoint cannot be
    reached (the folder stays as it is), :class:`TokenLeakError` (nothing uploaded) if a file to upload contains a
    known token. Returns the ``CommitInfo``."""
    folder = os.path.abspath(folder)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"cannot push {folder}: no such folder")
    extras = {str(k).strip("/"): os.path.abspath(v) for k, v in (extra_folders or {}).items()}
    for prefix, path in extras.items():
        if not prefix or not os.path.isdir(path):
            raise FileNotFoundError(f"cannot push {path} as {prefix!r}: no such folder (or an empty path in the repo)")
    why = ("offline mode is enabled (HF_HUB_OFFLINE=1)" if _hub_access.offline()
           else _hub_access.unreachable_reason(connect_timeout))
    if why is not None:
        raise _unavailable(folder, repo_id, why)
    secrets = _known_tokens(None, [token])
    for f in [folder, *extras.values()]:
        _check_no_tokens(f, secrets)
    from huggingface_hub import CommitOperationAdd, HfApi

    ops = [CommitOperationAdd(path_in_repo=p.relative_to(folder).as_posix(), path_or_fileobj=str(p))
           for p in sorted(_files_to_upload(folder))]
    for prefix, path in extras.items():
        ops += [CommitOperationAdd(path_in_repo=f"{prefix}/{p.relative_to(path).as_posix()}", path_or_fileobj=str(p))
                for p in sorted(_files_to_upload(path))]
    with _network_errors(folder, repo_id):
        api = HfApi(endpoint=_hub_access.endpoint())
        url = api.create_repo(repo_id, token=token, private=private, exist_ok=True)
        return api.create_commit(url.repo_id, operations=ops, commit_message=commit_message, token=token,
                                 revision=revision)
