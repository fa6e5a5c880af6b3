"""The continual run (``task: continual``): the template's shared steps (training arguments, the results writer,
main-process rules) around :class:`~tl_hf.continual.ContinualRunner`, which trains the tasks in order, evaluates
every task seen so far after each one and saves what a resume needs."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from typing import Any, Callable

from tl_hf._errors import ConfigError
from tl_hf.regularizers.replay import check_replay_scenario
from tl_hf.run.sections import RunConfig
from tl_hf.run.validate import resume_fingerprint
from tl_hf.run.tasks.continual.config import ContinualDataConfig
from tl_hf.run.tasks.continual.data import Prepared

__all__ = ["STATE_DIR", "resume_fingerprint", "run_continual_recipe"]

STATE_DIR = "continual_state"
_REPLAY_TASK_IL = ("regularizers: replay is not supported with data.scenario task_incremental (one head per task: "
                   "replayed examples would be trained through the current task's head with labels that belong to "
                   "their own head); use class_incremental or domain_incremental, or EWC / L2-SP")


def run_continual_recipe(cfg: RunConfig, *, log: Callable = print,
                         task_callbacks: Callable[[int], list] | None = None,
                         on_task_end: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Run the continual-learning sequence ``cfg`` describes (see :mod:`tl_hf.run.tasks.continual`); returns the
    results written to ``training.output_dir/all_results.json`` plus ``eval_accuracy`` (= ACC) and ``eval_split`` for
    the CLI. ``task_callbacks`` / ``on_task_end`` go to the runner (extra Trainer callbacks for task k, 1-based; a
    call after task k is saved)."""
    from tl_hf.run.lock import output_dir_lock
    from tl_hf.run.outputs import is_main, main_process_log
    from tl_hf.run.validate import check_run

    log = main_process_log(log)  # under accelerate launch / torchrun only the main process reports
    start = time.perf_counter()
    args, budgets = _check(cfg)
    check_run(cfg, args, log, resume=False)  # the runner resumes per task (check_state_fingerprint)
    with output_dir_lock(args.output_dir, enabled=is_main()):  # one run at a time in an output_dir
        return _run_locked(cfg, args, budgets, start, log, task_callbacks, on_task_end)


def _run_locked(cfg: RunConfig, args, budgets: list[int], start: float, log: Callable, task_callbacks,
                on_task_end) -> dict[str, Any]:
    import transformers

    from tl_hf.core.layers import get_layer_map
    from tl_hf.run.tasks.continual.model import build_model
    from tl_hf.run.template import resolve_strategy

    state_dir = os.path.join(args.output_dir, STATE_DIR)
    prep = _prepare(cfg, args, budgets, state_dir, log)
    transformers.set_seed(args.seed)
    model, layer_map = build_model(cfg, prep.num_labels, prep.label_names, args.seed)
    lmap = get_layer_map(model, layer_map)
    llrd, freezing = resolve_strategy(cfg, len(prep.tasks[0].train), lmap.num_blocks, log)
    runner = _runner(cfg, args, model, layer_map, prep, llrd, freezing, state_dir,
                     task_callbacks=task_callbacks, on_task_end=on_task_end)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model {cfg.model.name_or_path}: {n_params:,} parameters, head {prep.num_labels} outputs; scenario "
        f"{cfg.data.scenario}; {len(prep.tasks)} tasks; regularizers {[r['name'] for r in cfg.regularizers] or 'none'}"
        f"; llrd decay {llrd.decay}, freezing {freezing.policy}")
    done = _restore(runner, prep, cfg.data.scenario, state_dir, log)
    with _forward_runner_logs(log):
        result = runner.run()
    from tl_hf.run.tasks.continual.outputs import finish

    return finish(cfg, args, prep, runner, result, done=done, state_dir=state_dir, start=start, log=log,
                  card_args=dict(llrd=llrd, freezing=freezing, lmap=lmap, n_params=n_params))


def _check(cfg: RunConfig):
    """``(TrainingArguments, replay budgets)``; everything refused before any data is read."""
    from tl_hf.regularizers import build_regularizer
    from tl_hf.run.template import build_training_args

    d = cfg.data
    if not isinstance(d, ContinualDataConfig):
        raise ConfigError(f"task: continual needs a continual data section, got {type(d).__name__}")
    _check_unsupported(cfg)
    args = build_training_args(cfg)  # validates TrainingArguments before any slow step
    budgets = []
    for r in cfg.regularizers:
        if r["name"] == "replay":
            check_replay_scenario(d.scenario, _REPLAY_TASK_IL, error=ConfigError)
            budgets.append(build_regularizer(dict(r)).config.budget)
    if d.replay_source is not None and not budgets:
        raise ConfigError("data.replay_source fills the replay memory, but no replay regularizer is configured: add "
                          "regularizers: [{name: replay, budget: N}] or drop data.replay_source")
    return args, budgets


def _check_unsupported(cfg: RunConfig) -> None:
    if cfg.peft.enabled:
        raise ConfigError("peft.enabled is not supported by task: continual (the runner swaps classifier weights "
                          "per task and carries regularizers over the full parameter names); set peft.enabled=false")
    if cfg.wise_ft.enabled or cfg.evaluation.extra_eval_sets:
        raise ConfigError("wise_ft and evaluation.extra_eval_sets are not supported by task: continual (it scores "
                          "every task seen so far itself: accuracy_matrix.json); drop them")
    if cfg.evaluation.metrics:
        raise ConfigError("evaluation.metrics is not used by task: continual (it scores every task seen so far by "
                          "accuracy: accuracy_matrix.json with ACC, BWT and forgetting); drop evaluation.metrics")
    if cfg.early_stopping.patience > 0:
        raise ConfigError("early_stopping is not supported by task: continual (the runner evaluates every task "
                          "after each task itself); set early_stopping.patience=0")
    if cfg.training.get("resume_from_checkpoint"):
        raise ConfigError("training.resume_from_checkpoint is not used by task: continual: rerunning with the same "
                          "training.output_dir resumes by itself (after the last finished task, and an interrupted "
                          "task from its newest checkpoint-*); drop training.resume_from_checkpoint")
    es = cfg.training.get("eval_strategy", "no")
    if str(getattr(es, "value", es)) != "no" or cfg.training.get("load_best_model_at_end"):
        raise ConfigError("training.eval_strategy must be 'no' for task: continual (the runner evaluates every task "
                          "seen so far after each task and writes accuracy_matrix.json)")


def _prepare(cfg: RunConfig, args, budgets: list[int], state_dir: str, log: Callable) -> Prepared:
    """Refuse a changed config on a resumed folder, then load and prepare the tasks (and the replay source)."""
    import transformers

    from tl_hf.continual import check_state_fingerprint
    from tl_hf.run.tasks.continual.data import prepare_text
    from tl_hf.run.tasks.continual.mnist import prepare_mnist

    d = cfg.data
    check_state_fingerprint(state_dir, args.output_dir, resume_fingerprint(cfg))  # before any data is read
    transformers.set_seed(args.seed)
    seed = d.seed if d.seed is not None else args.seed
    if d.kind == "text":
        from tl_hf.run.models import resolve_model_path

        resolve_model_path(cfg.model.name_or_path)
        if cfg.model.tokenizer:
            resolve_model_path(cfg.model.tokenizer)
        prep = prepare_text(cfg, seed, budgets)
    else:
        prep = prepare_mnist(cfg, seed, budgets)
    for t in prep.info:
        log(f"task {t['name']}: {t['train_samples']:,} train / {t['eval_samples']:,} eval examples, labels "
            f"{t['labels']} ({', '.join(t['class_names'])})")
    if prep.source_info:
        s = prep.source_info
        log(f"replay source {s['name']}: {s['samples']:,} examples ({s['source']}), labels {s['labels']}")
    return prep


def _runner(cfg: RunConfig, args, model, layer_map, prep: Prepared, llrd, freezing, state_dir: str, **hooks):
    """The :class:`~tl_hf.continual.ContinualRunner` of this run (every task's ``TrainingArguments`` from the
    ``training`` section, in ``output_dir/<task>``)."""
    from tl_hf.continual import ContinualRunner
    from tl_hf.core.device import has_accelerator

    training = {k: v for k, v in cfg.training.items() if k != "output_dir"}
    accel = has_accelerator()
    # on a machine without an accelerator, use_cpu=True is what makes transformers use DDP (gloo) under a
    # multi-process launch; without it every rank would train on its own (parallel_mode NOT_PARALLEL)
    training.setdefault("use_cpu", not accel)
    if not accel:
        training.setdefault("dataloader_pin_memory", False)
    trainer_kwargs: dict[str, Any] = {"llrd": llrd, "freezing": freezing, "reinit": cfg.reinit,
                                      "averaging": cfg.averaging}  # per task as ContinualRunner documents
    if layer_map is not None:
        trainer_kwargs["layer_map"] = layer_map
    return ContinualRunner(model, prep.tasks, scenario=cfg.data.scenario, output_dir=args.output_dir,
                           regularizers=[dict(r) for r in cfg.regularizers], training_args=training,
                           trainer_kwargs=trainer_kwargs, num_labels=prep.num_labels, data_collator=prep.collator,
                           eval_batch_size=args.per_device_eval_batch_size, state_dir=state_dir,
                           fingerprint=resume_fingerprint(cfg), **hooks)


def _restore(runner, prep: Prepared, scenario: str, state_dir: str, log: Callable) -> int:
    """Restore a resumed run (the number of finished tasks) and fill the replay memory from the replay source
    before task 1 (a resumed run restores the memory instead)."""
    from tl_hf.regularizers import Replay

    n_tasks = len(prep.tasks)
    done = runner.restore()  # a rerun on the same output_dir continues after its last finished task
    if done:
        what = ["model weights", "accuracy-matrix rows", "train metrics"]
        what += ["per-task heads"] if scenario == "task_incremental" else []
        what += [f"{r.name} state" for r in runner.regularizers]
        log(f"resuming after task {done}/{n_tasks} ({prep.tasks[done - 1].name}): restored the {', '.join(what)} "
            f"from {state_dir}" + (f"; continuing with task {done + 1}/{n_tasks}" if done < n_tasks else
                                  "; every task is finished, writing the outputs"))
    if prep.source is None:
        return done
    replays = [r for r in runner.regularizers if isinstance(r, Replay)]
    if done == 0:
        for r in replays:
            r.memory.add_dataset(prep.source, source=f"replay_source:{prep.source_info['name']}")
        log(f"replay memory filled from {prep.source_info['name']} before task 1: {len(replays[0].memory)} examples")
    else:
        log(f"replay memory restored: {len(replays[0].memory)} examples (filled from {prep.source_info['name']} "
            "before task 1)")
    return done


class _Forward(logging.Handler):
    def __init__(self, log: Callable) -> None:
        super().__init__(logging.INFO)
        self.log = log

    def emit(self, record) -> None:
        try:
            self.log(f"[continual] {record.getMessage()}")
        except Exception:  # noqa: BLE001
            self.handleError(record)


@contextlib.contextmanager
def _forward_runner_logs(log: Callable):
    """Show the runner's progress lines ("task 2/3 ...", "after task 2: acc[...]") through ``log`` while it runs."""
    lg = logging.getLogger("tl_hf.continual")
    handler, level = _Forward(log), lg.level
    lg.addHandler(handler)
    if lg.getEffectiveLevel() > logging.INFO:
        lg.setLevel(logging.INFO)
    try:
        yield
    finally:
        lg.removeHandler(handler)
        lg.setLevel(level)
