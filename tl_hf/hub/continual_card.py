"""The model card of a continual-learning run (one model trained on a task sequence, no single Trainer): built from
the run's summary (scenario, task sequence, strategy, regularizers, the accuracy matrix, ACC / BWT / forgetting,
``model-index`` with the final accuracy per task)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from tl_hf._hub_access import known_tokens, scrub_tokens
from tl_hf.core.card_meta import base_model_id, check_card, hub_dataset_id
from tl_hf.core.model_card import freezing_lines, llrd_lines
from tl_hf.regularizers.base import card_code, card_tags_of, card_value

__all__ = ["CONTINUAL_SECTION_END", "CONTINUAL_SECTION_START", "continual_card_section", "write_continual_model_card"]


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
    ``num_parameters``, ``replay_source``, ``replay_memory``, ``heads`` (the per-task head files). ``regularizers``
    (:class:`~tl_hf.regularizers.Regularizer` objects: each gives its card line), ``llrd``, ``freezing``,
    ``layer_map``, ``learning_rate`` and ``weight_decay`` describe the strategy. Pure (no I/O)."""
    names = [str(n) for n in summary.get("task_names", [])]
    lines = [CONTINUAL_SECTION_START, "## Continual learning", "",
             f"Trained with `tl_hf` (`task: continual`): one model learned {len(names)} task(s) in order with "
             "`tl_hf.TransferTrainer`, and after each task every task seen so far was evaluated.", ""]
    lines += _task_lines(summary, names)
    lines += _strategy_lines(summary, regularizers, llrd, freezing, layer_map, learning_rate, weight_decay)
    lines += _accuracy_lines(summary, names)
    lines += ["", CONTINUAL_SECTION_END]
    return "\n".join(lines) + "\n"


def _task_lines(summary: Mapping[str, Any], names: list[str]) -> list[str]:
    """Base model, architecture, scenario, the task table and the replay source."""
    scenario = str(summary.get("scenario"))
    model = summary.get("model")
    lines = [f"- base model: {card_code(model) if model else 'not recorded'}"]
    arch = summary.get("architecture")
    if arch:
        extra = f", {summary['num_parameters']:,} parameters" if summary.get("num_parameters") else ""
        lines.append(f"- architecture: {card_code(arch)}{extra}, head of {summary.get('num_labels')} outputs")
    lines.append(f"- scenario: {card_code(scenario)}: {_SCENARIO_TEXT.get(scenario, 'see tl_hf.continual')}")
    lines.append(f"- task sequence: {' → '.join(f'`{x}`' for x in names)}")
    lines += ["", "### Task sequence", "", "| # | task | data | train examples | eval examples | labels | classes |",
              "|---|---|---|---|---|---|---|"]
    for i, t in enumerate(summary.get("tasks") or []):
        lines.append(f"| {i + 1} | {t.get('name')} | {t.get('data') or t.get('dataset') or '-'} | "
                     f"{t.get('train_samples', '-')} | "
                     f"{t.get('eval_samples', '-')} | {card_value(list(t.get('labels') or []))} | "
                     f"{card_value(list(t.get('class_names') or []))} |")
    src = summary.get("replay_source")
    if src:
        lines += ["", f"Replay source {card_code(src.get('name'))}: {src.get('samples')} examples "
                      f"({src.get('source', '-')}), labels {card_value(list(src.get('labels') or []))}, offered to the "
                      "replay memory before task 1 (standing in for pre-training data)."]
    return lines + [""]


def _strategy_lines(summary, regularizers, llrd, freezing, layer_map, learning_rate, weight_decay) -> list[str]:
    """LLRD and freezing (when all three are given), the regularizers and the replay memory."""
    from types import SimpleNamespace

    lines: list[str] = []
    if llrd is not None and freezing is not None and layer_map is not None:
        ns = SimpleNamespace(llrd=llrd, freezing=freezing, layer_map=layer_map, freezer=None,
                             args=SimpleNamespace(learning_rate=float(learning_rate or 0.0),
                                                  weight_decay=float(weight_decay or 0.0)))
        lines += ["Every task is trained with the same strategy:", ""]
        lines += llrd_lines(ns) + [""]
        lines += freezing_lines(ns) + [""]
    lines += ["### Forgetting regularizers", ""]
    regs = list(regularizers or [])
    lines += [r.card_line() for r in regs] if regs else ["- none"]
    mem = summary.get("replay_memory")
    if mem:
        by = ", ".join(f"{k} {v}" for k, v in sorted((mem.get("by_source") or {}).items()))
        lines.append(f"- replay memory after the last task: {mem.get('size')} examples ({by or 'empty'})")
    return lines


def _accuracy_lines(summary: Mapping[str, Any], names: list[str]) -> list[str]:
    """The accuracy matrix, ACC / BWT / forgetting, per-task accuracies and the per-task heads."""
    R = summary.get("R") or []
    lines = ["", "### Accuracy matrix", "",
             "R[i][j] = accuracy on the eval set of task j after training tasks 1..i (rows: after training; "
             "columns: evaluated on).", "",
             "| after training ↓ / evaluated on → | " + " | ".join(names) + " |",
             "|---|" + "---|" * len(names)]
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
                  f"for that task: {card_value(list(heads))}."]
    return lines


def _continual_tags(summary: Mapping[str, Any], regularizers, llrd, freezing) -> list[str]:
    tags = ["tl_hf", "transfer-learning", "continual-learning", str(summary.get("scenario")).replace("_", "-")]
    if summary.get("kind") == "mnist":
        tags.append("split-mnist")
    if llrd is not None and (llrd.decay != 1.0 or llrd.head_lr is not None):
        tags.append("llrd")
    if freezing is not None:
        tags += {"gradual": ["gradual-unfreezing"], "feature_extraction": ["feature-extraction", "frozen-backbone"],
                 "top_k": ["partial-freezing"], "patterns": ["partial-freezing"]}.get(freezing.policy, [])
    tags += card_tags_of(regularizers or [])
    return list(dict.fromkeys(tags))


def _evals(summary: Mapping[str, Any], names: list[str], kind_task: str) -> list:
    """``model-index`` results: each task's final accuracy, on the Hub dataset it comes from (tasks without a Hub
    dataset id are left out; the task is named in the metric's name, since one dataset may hold several tasks)."""
    from huggingface_hub import EvalResult

    R = summary.get("R") or []
    tasks = {t.get("name"): t for t in summary.get("tasks") or []}
    out = []
    for j, name in enumerate(names):
        final = R[-1][j] if R else None
        dataset = hub_dataset_id(tasks.get(name, {}).get("dataset"))
        if final is None or not math.isfinite(float(final)) or dataset is None:
            continue
        out.append(EvalResult(task_type=kind_task, dataset_type=dataset, dataset_name=dataset.split("/")[-1],
                              dataset_split="test" if summary.get("kind") == "mnist" else None,
                              metric_type="accuracy", metric_value=float(final),
                              metric_name=f"final accuracy on task {name} (after all {len(names)} tasks)"))
    return out


def write_continual_model_card(folder: str, summary: Mapping[str, Any], *, model_name: str | None = None,
                               token: str | None = None, regularizers: Sequence = (), llrd=None, freezing=None,
                               layer_map=None, learning_rate: float | None = None,
                               weight_decay: float | None = None) -> str:
    """Write ``folder/README.md`` for a continual run: YAML metadata (tags, ``model-index`` with the final accuracy
    on every task), a short introduction and :func:`continual_card_section`. Works offline; never writes a token (known
    token values and anything shaped like ``hf_...`` become ``<redacted>``). Returns the path."""
    from huggingface_hub import ModelCard, ModelCardData

    names = [str(x) for x in summary.get("task_names", [])]
    kind_task = "image-classification" if summary.get("kind") == "mnist" else "text-classification"
    model_name = model_name or Path(os.path.abspath(folder)).name
    model = summary.get("model")
    base = summary.get("base_model") or (base_model_id(model) if isinstance(model, str) and
                                         (os.path.exists(model) or "/" in model) else None)
    is_hf = os.path.exists(os.path.join(folder, "config.json"))
    evals = _evals(summary, names, kind_task)
    data = ModelCardData(
        model_name=model_name, tags=_continual_tags(summary, regularizers, llrd, freezing),
        library_name="transformers" if is_hf else None, pipeline_tag=kind_task if is_hf else None,
        base_model=base, datasets=sorted({e.dataset_type for e in evals}) or None, eval_results=evals or None)
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
    content = scrub_tokens(str(card), known_tokens([token]))
    check_card(content)
    path = os.path.join(folder, "README.md")
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, "_tmp_README.md")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(content)
    os.replace(tmp, path)
    return path
