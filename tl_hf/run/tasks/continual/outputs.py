"""What a continual run leaves in ``training.output_dir`` besides the runner's accuracy matrix: ``all_results.json``
and ``run_config.json`` (through the template's single writer), ``model/`` with its model card, the summary lines,
and the push of ``model/`` (+ ``heads/``)."""

from __future__ import annotations

import os
import time
from typing import Any, Callable

from tl_hf.run.sections import RunConfig
from tl_hf.run.tasks.continual.config import ContinualDataConfig, TextSource
from tl_hf.run.tasks.continual.data import Prepared

__all__ = ["finish"]


def finish(cfg: RunConfig, args, prep: Prepared, runner, result, *, done: int, state_dir: str, start: float,
           log: Callable, card_args: dict) -> dict[str, Any]:
    """After ``runner.run()``: results, model + card (main process), the results files, the summary, the push.
    Returns the results plus ``eval_accuracy`` (= ACC) and ``eval_split`` for the CLI."""
    from tl_hf.run.outputs import is_main, write_results

    results = _results(cfg, prep, runner, result, done, state_dir, args.output_dir)
    main = args.should_save  # only the main process saves the model, writes its card and the results, and pushes
    mdir = os.path.join(args.output_dir, "model")
    if (cfg.model.save_model or cfg.hub.push) and main:
        _save_model(runner.model, prep.tokenizer, mdir)
        results["outputs"]["model"] = mdir
        results["outputs"]["model_card"] = _write_card(cfg, results, prep, runner, args, mdir, **card_args)
    results["wall_time_s"] = round(time.perf_counter() - start, 1)
    if main:
        write_results(args.output_dir, results, cfg)
    _report(results, cfg.data.scenario, args.output_dir, log)
    if cfg.hub.push and main and is_main():  # one push, from the global main process (not every node saving)
        _push(cfg, mdir, result, results, args.output_dir, state_dir, log)
    return {**results, "eval_accuracy": results["ACC"], "eval_split": "continual, mean final (ACC)"}


def _results(cfg: RunConfig, prep: Prepared, runner, result, done: int, state_dir: str,
             out: str) -> dict[str, Any]:
    from tl_hf.regularizers import Replay

    names, R, m = result.task_names, result.R, result.metrics
    n = len(names)
    per_task = []  # a list, in task order (JSON objects are written with sorted keys)
    for j, name in enumerate(names):
        per_task.append({"name": name, "accuracy_after_training": R[j][j], "final_accuracy": R[n - 1][j],
                         "forgetting": m["forgetting"][j] if j < n - 1 else None,
                         "train_loss": result.train_metrics[j].get("train_loss"),
                         "train_runtime_s": result.train_metrics[j].get("train_runtime")})
    results: dict[str, Any] = {
        "task": "continual", "kind": cfg.data.kind, "scenario": cfg.data.scenario, "model": cfg.model.name_or_path,
        "task_names": names, "R": R, "ACC": m["ACC"], "BWT": m["BWT"],
        "forgetting": {names[j]: f for j, f in enumerate(m["forgetting"])}, "avg_forgetting": m["avg_forgetting"],
        "per_task": per_task, "tasks": prep.info, "num_labels": prep.num_labels,
        "regularizers": [r.name for r in runner.regularizers],
        "train_runtime_s": round(sum(t.get("train_runtime", 0.0) for t in result.train_metrics), 1),
        "resumed_after_task": done,
        "outputs": {"accuracy_matrix_json": result.json_path, "accuracy_matrix_png": result.png_path,
                    "state": state_dir},
    }
    if prep.source_info:
        results["replay_source"] = prep.source_info
    replays = [r for r in runner.regularizers if isinstance(r, Replay)]
    if replays:
        counts: dict[str, int] = {}
        for src, _ in replays[0].memory.provenance:
            counts[src] = counts.get(src, 0) + 1
        results["replay_memory"] = {"size": len(replays[0].memory), "by_source": counts}
    if result.heads:
        results["outputs"]["heads"] = os.path.join(out, "heads")
    return results


def _save_model(model, tokenizer, mdir: str) -> None:
    """``save_pretrained`` (and the tokenizer), or the MLP's weights as ``model.safetensors``."""
    if hasattr(model, "save_pretrained"):
        model.save_pretrained(mdir)
        if tokenizer is not None:
            tokenizer.save_pretrained(mdir)
        return
    from safetensors.torch import save_file

    os.makedirs(mdir, exist_ok=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()},
              os.path.join(mdir, "model.safetensors"))


def _card_task(info: dict, d: ContinualDataConfig, source: TextSource | None) -> dict:
    """A task's entry of the model card: ``dataset`` (its Hub id, for a built-in dataset) and ``data`` (what it is)."""
    from tl_hf.run.outputs import DATASET_HUB_IDS

    if d.kind == "mnist":
        return {**info, "dataset": DATASET_HUB_IDS["mnist"],
                "data": "MNIST t10k digits " + ", ".join(str(x) for x in info["digits"])}
    if source is not None and source.data.dataset:
        return {**info, "dataset": DATASET_HUB_IDS.get(source.data.dataset),
                "data": f"built-in `{source.data.dataset}`"}
    name = os.path.basename(str(source.data.train_file)) if source is not None else info["name"]
    return {**info, "dataset": None, "data": f"file `{name}`"}


def _write_card(cfg: RunConfig, results: dict, prep: Prepared, runner, args, mdir: str, *, llrd, freezing, lmap,
                n_params: int) -> str:
    """``output_dir/model/README.md`` (:func:`tl_hf.hub.write_continual_model_card`)."""
    from tl_hf.hub import write_continual_model_card

    d: ContinualDataConfig = cfg.data
    summary = dict(results)
    sources = d.text_sources() if d.kind == "text" else [None] * len(prep.info)
    summary["tasks"] = [_card_task(t, d, src) for t, src in zip(prep.info, sources)]
    summary["architecture"] = type(runner.model).__name__
    summary["num_parameters"] = n_params
    if runner.heads:
        from tl_hf.continual.tasks import task_slug

        summary["heads"] = [f"heads/{task_slug(name)}.safetensors" for name in runner.heads]
    from tl_hf.run.models import hub_origin

    base = hub_origin(cfg.model.name_or_path)
    if base:
        summary["base_model"] = base
    name = cfg.hub.repo_id.split("/")[-1] if cfg.hub.repo_id else os.path.basename(os.path.normpath(args.output_dir))
    return write_continual_model_card(mdir, summary, model_name=name,
                                      regularizers=runner.regularizers, llrd=llrd, freezing=freezing,
                                      layer_map=lmap, learning_rate=args.learning_rate,
                                      weight_decay=args.weight_decay)


def _format_matrix(R, names) -> list[str]:
    w = max(8, *(len(n) for n in names)) + 1
    lines = ["accuracy matrix R[i][j] (row: after training task i; column: evaluated on task j):",
             " " * (w + 6) + "".join(f"{n:>{w}}" for n in names)]
    for i, row in enumerate(R):
        cells = "".join(f"{v:>{w}.4f}" if v is not None else " " * w for v in row)
        lines.append(f"after {names[i]:<{w}}" + cells)
    return lines


def _report(results: dict, scenario: str, out: str, log: Callable) -> None:
    """The accuracy matrix, each task's accuracy right after training and at the end, ACC / BWT / forgetting."""
    for line in _format_matrix(results["R"], results["task_names"]):
        log(line)
    for t in results["per_task"]:
        f = f", forgetting {t['forgetting']:+.4f}" if t["forgetting"] is not None else ""
        log(f"  {t['name']}: accuracy right after training {t['accuracy_after_training']:.4f}, final "
            f"{t['final_accuracy']:.4f}{f}")
    bwt = f"{results['BWT']:+.4f}" if results["BWT"] is not None else "n/a"
    fg = f"{results['avg_forgetting']:.4f}" if results["avg_forgetting"] is not None else "n/a"
    log(f"ACC={results['ACC']:.4f} BWT={bwt} avg forgetting={fg} ({scenario}, {len(results['task_names'])} tasks); "
        f"accuracy_matrix.json/png and all_results.json in {out}")


def _push(cfg: RunConfig, mdir: str, result, results: dict, out: str, state_dir: str, log: Callable) -> None:
    """Upload ``model/`` (and ``heads/``) in one commit; an unreachable Hub says how to push later."""
    from tl_hf.hub import HubUnavailableError, push_folder

    extra = {"heads": os.path.join(out, "heads")} if result.heads else None
    n, acc = len(results["task_names"]), results["ACC"]
    try:
        commit = push_folder(mdir, repo_id=cfg.hub.repo_id, private=cfg.hub.private, extra_folders=extra,
                             commit_message=f"tl_hf continual run: {n} tasks ({cfg.data.scenario}), ACC {acc:.4f}")
    except HubUnavailableError as exc:
        raise HubUnavailableError(f"{exc}; or rerun this config then: the finished run is restored from "
                                  f"{state_dir} (not trained again) and pushed"
                                  + (" with heads/" if extra else "")) from None
    log(f"pushed to the Hub: {cfg.hub.repo_id} ({getattr(commit, 'commit_url', commit)})")
