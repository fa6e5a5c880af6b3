"""NLP task families (issue 11): plain ``transformers.Trainer`` full fine-tuning vs tl_hf's strategy, same data,
steps and seeds, on the bundled all-MiniLM-L6-v2 (22.7 M parameters, uncased).

Every cell is built through the run layer's own code: the task module's ``check`` / ``build`` (data, tokenizer,
model, collator), its ``compute_metrics`` and its evaluation step (``tl_hf.run.tasks.*``), from a config written
for the cell (run in a temporary folder: no model, card or lock; the template's ``check_run`` is skipped). Only the
trainer differs per strategy:

* ``plain`` -- ``transformers.Trainer``, full fine-tuning at the cell's learning rate (no LLRD, no freezing);
* ``tl_hf`` -- the run template's ``build_trainer`` (TransferTrainer) with the shipped config's strategy.

Settings (2 CPU cores; every cell aims at <= ~4 min, shorter than the shipped configs). The minutes are
ESTIMATES, extrapolated from the seconds per step in the shipped configs' measured headers, not measured at these
settings; a plain (full) cell on RTE / MRPC is slower than its tl_hf (top 4) cell. Batch, max length and lr as
the shipped config; AdamW (bias-corrected), weight decay 0.01, linear schedule, 10 % warm-up; no evaluation
during training, one at the end.

| dataset | task, shipped config | train / eval rows | epochs (steps, batch) | lr | tl_hf strategy | seeds | est. min |
|---|---|---|---|---|---|---|---|
| glue_rte | pairs, rte_minilm.yaml | 2,490 / dev 277 | 1 (156, 16) | 5e-5 | top 4 of 6 + LLRD 0.9 | 0,1,2 | 3.5 |
| glue_mrpc | pairs, mrpc_minilm.yaml (full + LLRD; the cell uses RTE's top-4 recipe, fixed before that config) | 3,668 / dev 408 | 1 (230, 16) | 5e-5 | top 4 of 6 + LLRD 0.9 | 0,1,2 | 3.5 |
| glue_stsb | regression, stsb_minilm.yaml | 5,749 / dev 1,500 | 1 (180, 32) | 5e-5 | full + LLRD 0.9 | 0,1,2 | 3.5 |
| wnut17 | tokens, wnut17_minilm.yaml | 3,394 / test 1,287 | 1 (107, 32) | 1e-4 | full + LLRD 0.9 | 0,1,2 | 3.5 |
| squad | QA, squad_minilm.yaml | 700 / 250 questions | 1 (~60, 16) | 1e-4 | full + LLRD 0.9 (*) | 0 | 4.5 |
| goemotions | labels, goemotions_minilm.yaml | 5,000 / 2,000 + 2,000 | 1 (157, 32) | 1e-4 | full + LLRD 0.9 | 0 | 3.5 |

(*) ``squad_minilm.yaml`` sets no strategy (plain full fine-tuning through TransferTrainer); LLRD 0.9 is the
strategy every other family ships. Pairs and STS-B train with ``group_by_length`` (both strategies). The SQuAD split
is non-standard (dev-v1.1 split by article, seed 0). GoEmotions (multi-label) tunes its threshold on a dev subset
(2,000) and scores a test subset (2,000); ``data.prior_bias`` (head bias at the label log-odds) is part of the
task's model build, so both strategies get it. Subsets are seeded with ``data.seed 0`` in every cell: the seeds vary
only the training randomness (head init, dropout, order). RTE / MRPC rows count degenerate runs: accuracy within 1
point of the majority-class rate of the eval labels (Zhang et al. 2021, https://arxiv.org/abs/2006.05987).

Whole grid: 4 datasets x 2 strategies x 3 seeds + 2 x 2 single-seed cells = 28 cells, about 100 min of CPU
(estimated). One (dataset, strategy, seed) cell per invocation is appended to
``benchmarks/results/nlp_families.jsonl``; a finished cell is skipped.

    python benchmarks/nlp_families.py --print-plan           # every remaining cell's command, one per line
    python benchmarks/nlp_families.py --print-plan --plan-prefix "flock /tmp/tl_hf_cpu.lock timeout 600"
    python benchmarks/nlp_families.py --dataset glue_rte --strategy plain --seed 0
    python benchmarks/nlp_families.py --report   # mean ± std, degenerate runs -> benchmarks/results/nlp_families.json
    python benchmarks/nlp_families.py --small    # smoke: 16 rows per split, 2 steps per cell, writes nothing
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, append_jsonl, markdown_table, read_jsonl, write_result

JSONL = RESULTS / "nlp_families.jsonl"
STRATEGIES = ("plain", "tl_hf")
MODEL = "bundled:all-MiniLM-L6-v2"
_LLRD = {"decay": 0.9}
_TOP4 = {"policy": "top_k", "k": 4}
#: per dataset: task, data section, training settings, tl_hf's strategy, the main metric (key, points per unit)
SETTINGS = {
    "glue_rte": {"task": "text_classification", "data": {"dataset": "rte", "max_length": 128},
                 "epochs": 1, "batch": 16, "lr": 5e-5, "group_by_length": True, "llrd": _LLRD, "freezing": _TOP4,
                 "main": "eval_accuracy", "scale": 100, "seeds": (0, 1, 2), "est_min": 3.5},
    "glue_mrpc": {"task": "text_classification", "data": {"dataset": "mrpc", "max_length": 128},
                  "epochs": 1, "batch": 16, "lr": 5e-5, "group_by_length": True, "llrd": _LLRD, "freezing": _TOP4,
                  "main": "eval_accuracy", "scale": 100, "seeds": (0, 1, 2), "est_min": 3.5},
    "glue_stsb": {"task": "text_classification",
                  "data": {"dataset": "stsb", "problem_type": "regression", "max_length": 128},
                  "epochs": 1, "batch": 32, "lr": 5e-5, "group_by_length": True, "llrd": _LLRD, "freezing": None,
                  "main": "eval_pearsonr", "scale": 100, "seeds": (0, 1, 2), "est_min": 3.5},
    "wnut17": {"task": "token_classification", "data": {"dataset": "wnut17", "eval_split": "test", "max_length": 128},
               "epochs": 1, "batch": 32, "lr": 1e-4, "group_by_length": False, "llrd": _LLRD, "freezing": None,
               "main": "eval_f1", "scale": 100, "seeds": (0, 1, 2), "est_min": 3.5},
    "squad": {"task": "question_answering",
              "data": {"dataset": "squad_v1.1", "eval_articles": 8, "split_seed": 0, "max_train_samples": 700,
                       "max_eval_samples": 250, "max_length": 192, "doc_stride": 48, "n_best": 20,
                       "max_answer_length": 30},
              "epochs": 1, "batch": 16, "lr": 1e-4, "group_by_length": False, "llrd": _LLRD, "freezing": None,
              "main": "eval_f1", "scale": 1, "seeds": (0,), "est_min": 4.5},
    "goemotions": {"task": "text_multilabel",
                   "data": {"dataset": "goemotions", "max_train_samples": 5000, "max_eval_samples": 2000,
                            "max_test_samples": 2000, "max_length": 64, "threshold": "tune",
                            "threshold_objective": "f1_macro", "prior_bias": True},
                   "epochs": 1, "batch": 32, "lr": 1e-4, "group_by_length": False, "llrd": _LLRD, "freezing": None,
                   "main": "test_f1_macro", "scale": 100, "seeds": (0,), "est_min": 3.5},
}
#: published numbers for models of this class (issue 11), in points, and how their setting differs from ours
PUBLISHED = {
    "glue_rte": {"model": "MiniLM-L6-H384 (microsoft/unilm minilm README)", "score": 68.8, "metric": "dev accuracy",
                 "differs": "Microsoft's MiniLM distilled from UniLMv2, not the sentence-embedding all-MiniLM-L6-v2; "
                            "longer training, tuned per task"},
    "glue_mrpc": {"model": "MiniLM-L6-H384 (microsoft/unilm minilm README)", "score": 88.9,
                  "metric": "dev (as published; compare with eval_f1 and eval_accuracy)",
                  "differs": "as RTE; GLUE usually reports MRPC as F1 of the positive class"},
    "glue_stsb": {"model": "DistilBERT (Sanh et al. 2019)", "score": 86.9, "metric": "dev Pearson",
                  "differs": "66 M parameters, 768 hidden, more epochs"},
    "wnut17": {"model": "BERT-large-cased", "score": 47.4, "metric": "test entity F1",
               "differs": "cased, 24 x 1024 (335 M); our model is uncased and 15x smaller"},
    "squad": {"model": "DistilBERT (Sanh et al. 2019)", "score": 85.8, "exact_match": 77.7,
              "metric": "dev F1 (EM 77.7)",
              "differs": "trained on the 87,599 official train questions with 384-token windows; ours: 700 questions "
                         "of 40 dev articles, scored on 8 held-out dev articles (non-standard split)"},
    "goemotions": {"model": "BERT-base (Demszky et al. 2020)", "score": 46.0, "metric": "test macro F1",
                   "differs": "110 M parameters, the full 43k train rows, 4 epochs, the full test split"},
}
DEGENERATE = ("glue_rte", "glue_mrpc")  # datasets whose rows count degenerate runs
SMALL = {"max_train_samples": 16, "max_eval_samples": 16}


def cell_config(dataset: str, strategy: str, seed: int, out: str, small: bool = False) -> dict:
    """The run config of one cell (what ``tl-hf run`` would read)."""
    s = SETTINGS[dataset]
    data = {**s["data"], "seed": 0}
    if small:
        data.update(SMALL, **({"max_test_samples": 16} if s["task"] == "text_multilabel" else {}))
    training = {"output_dir": out, "num_train_epochs": s["epochs"], "max_steps": 2 if small else -1,
                "per_device_train_batch_size": s["batch"], "per_device_eval_batch_size": 64,
                "learning_rate": s["lr"], "weight_decay": 0.01, "warmup_steps": 0.1, "lr_scheduler_type": "linear",
                "logging_steps": 25, "eval_strategy": "no", "save_strategy": "no", "report_to": "none",
                "seed": seed, "dataloader_num_workers": 0, "disable_tqdm": True}
    if s["group_by_length"]:
        training["train_sampling_strategy"] = "group_by_length"
    raw = {"task": s["task"], "model": {"name_or_path": MODEL, "save_model": False}, "data": data,
           "training": training}
    if strategy == "tl_hf":
        raw["llrd"] = dict(s["llrd"])
        if s["freezing"]:
            raw["freezing"] = dict(s["freezing"])
    elif strategy != "plain":
        raise SystemExit(f"unknown strategy {strategy!r}; valid: {', '.join(STRATEGIES)}")
    return raw


def _task(name: str):
    """The task module's :class:`~tl_hf.run.template.ClassificationTask` (a fresh one for QA: it holds state)."""
    from tl_hf.run.tasks.question_answering import question_answering_task
    from tl_hf.run.tasks.text_classification import TEXT_CLASSIFICATION
    from tl_hf.run.tasks.text_multilabel import TEXT_MULTILABEL
    from tl_hf.run.tasks.token_classification import TOKEN_CLASSIFICATION

    if name == "question_answering":
        return question_answering_task()
    return {"text_classification": TEXT_CLASSIFICATION, "text_multilabel": TEXT_MULTILABEL,
            "token_classification": TOKEN_CLASSIFICATION}[name]


def build_cell(dataset: str, strategy: str, seed: int, out: str, small: bool = False):
    """``(trainer, task, built, cfg)``: the run template's steps up to the trainer, then plain Trainer or the
    template's TransferTrainer."""
    import transformers
    import yaml
    from transformers import Trainer

    from tl_hf.core.layers import get_layer_map
    from tl_hf.run.config import load_config
    from tl_hf.run.pooling import apply_run_pooling
    from tl_hf.run.template import (
        build_trainer,
        build_training_args,
        maybe_wrap_peft,
        resolve_strategy,
    )

    path = Path(out) / "cell.yaml"
    path.write_text(yaml.safe_dump(cell_config(dataset, strategy, seed, out, small)))
    cfg = load_config(path)
    task = _task(cfg.task)
    args = build_training_args(cfg)
    checked = task.check(cfg, args)
    metrics = task.metrics(cfg)
    transformers.set_seed(args.seed)
    built = task.build(cfg, args, checked, lambda *a: None)
    if hasattr(metrics, "bind_label_names"):
        metrics.bind_label_names(built.label_names)
    metrics.check(len(built.label_names))
    lmap = get_layer_map(built.model)
    llrd, freezing = resolve_strategy(cfg, len(built.train_dataset), lmap.num_blocks)
    apply_run_pooling(cfg, built.model, freezing, lmap, lambda *a: None)
    kw = {"train_dataset": built.train_dataset, "eval_dataset": built.eval_dataset,
          "data_collator": built.data_collator, "processing_class": built.processing_class,
          "compute_metrics": metrics}
    if strategy == "plain":
        return Trainer(built.model, args, **kw), task, built, cfg
    model = maybe_wrap_peft(built.model, cfg, task_type=task.peft_task_type)
    return build_trainer(cfg, model, args, llrd=llrd, freezing=freezing, **kw), task, built, cfg


def class_rates(labels) -> dict:
    """The eval set's label counts and its majority-class rate (what a one-class predictor scores)."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64))
    return {"eval_label_counts": counts.tolist(), "majority_rate": float(counts.max() / counts.sum())}


def is_degenerate(accuracy: float, majority_rate: float) -> bool:
    """Accuracy within 1 point of the majority-class rate (both fractions)."""
    return abs(accuracy - majority_rate) * 100 <= 1.0


def run_cell(dataset: str, strategy: str, seed: int, small: bool = False) -> dict:
    import torch

    s = SETTINGS[dataset]
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        tr, task, built, cfg = build_cell(dataset, strategy, seed, out, small)
        t1 = time.perf_counter()
        res = tr.train()
        train_s = time.perf_counter() - t1
        t2 = time.perf_counter()
        results = task.evaluate(tr, built, cfg)
        eval_s = time.perf_counter() - t2
    scores = {k: v for k, v in results.items() if k.startswith(("eval_", "test_")) and isinstance(v, (int, float))
              and not isinstance(v, bool)}
    row = {"dataset": dataset, "strategy": strategy, "seed": seed, "main_metric": s["main"],
           "main": scores.get(s["main"]), "scores": scores, "wall_s": round(time.perf_counter() - t0, 1),
           "train_s": round(train_s, 1), "eval_s": round(eval_s, 1), "steps": res.global_step,
           "train_loss": res.training_loss, "train_rows": len(built.train_dataset),
           "trainable_params_end": sum(p.numel() for p in tr.model.parameters() if p.requires_grad),
           "total_params": sum(p.numel() for p in tr.model.parameters()), "trainer": type(tr).__name__,
           "lr": s["lr"], "epochs": s["epochs"], "batch": s["batch"], "torch_threads": torch.get_num_threads()}
    if "threshold" in results:
        row["threshold"] = results["threshold"]
    if dataset in DEGENERATE:
        row.update(class_rates(built.eval_dataset["label"]))
        cm = np.asarray(results.get("confusion_matrix", [[0]]))
        row["predicted_counts"] = cm.sum(axis=0).tolist()
        row["degenerate"] = is_degenerate(row["main"], row["majority_rate"])
    return row


def _stats(xs: list[float]) -> dict:
    return {"mean": statistics.mean(xs), "std": statistics.stdev(xs) if len(xs) > 1 else 0.0, "min": min(xs),
            "max": max(xs)}


def aggregate(rows: list[dict]) -> dict:
    """Per ``dataset/strategy``: the main metric in points (mean ± std, per seed), every other score's mean, wall
    time, and (RTE / MRPC) the degenerate runs."""
    table = {}
    for ds in SETTINGS:
        for st in STRATEGIES:
            rs = sorted((r for r in rows if r["dataset"] == ds and r["strategy"] == st), key=lambda r: r["seed"])
            if not rs:
                continue
            scale = SETTINGS[ds]["scale"]
            keys = sorted(set().union(*(r["scores"] for r in rs)))
            a = {"n": len(rs), "metric": SETTINGS[ds]["main"], **_stats([r["main"] * scale for r in rs]),
                 "per_seed": {str(r["seed"]): r["main"] * scale for r in rs},
                 "scores_mean": {k: statistics.mean(r["scores"][k] for r in rs if k in r["scores"]) for k in keys},
                 "wall_s_mean": statistics.mean(r["wall_s"] for r in rs),
                 "train_s_mean": statistics.mean(r["train_s"] for r in rs), "steps": rs[0]["steps"],
                 "trainable_params": rs[0]["trainable_params_end"], "total_params": rs[0]["total_params"]}
            if ds in DEGENERATE:
                a["majority_rate"] = rs[0]["majority_rate"] * 100
                a["degenerate_runs"] = sum(is_degenerate(r["main"], r["majority_rate"]) for r in rs)
            table[f"{ds}/{st}"] = a
    return table


def paired(table: dict) -> dict:
    """Per dataset with both strategies: tl_hf minus plain in points, of the means and seed by seed (same seed)."""
    out = {}
    for ds in SETTINGS:
        p, t = table.get(f"{ds}/plain"), table.get(f"{ds}/tl_hf")
        if p and t:
            seeds = sorted(set(p["per_seed"]) & set(t["per_seed"]))
            out[ds] = {"tl_hf_minus_plain": t["mean"] - p["mean"],
                       "per_seed": {s: t["per_seed"][s] - p["per_seed"][s] for s in seeds},
                       "wall_ratio": t["wall_s_mean"] / p["wall_s_mean"]}
    return out


def report(rows: list[dict]) -> dict:
    """Aggregate the jsonl into ``benchmarks/results/nlp_families.json`` and print the table."""
    table = aggregate(rows)
    diffs = paired(table)
    write_result("nlp_families", {"model": MODEL, "settings": SETTINGS, "published": PUBLISHED, "table": table,
                                  "tl_hf_vs_plain": diffs, "runs": rows})
    for key, a in table.items():
        ds = key.split("/")[0]
        deg = f", degenerate {a['degenerate_runs']}/{a['n']} (majority {a['majority_rate']:.1f})" \
            if "degenerate_runs" in a else ""
        seeds = ", ".join(f"{v:.1f}" for v in a["per_seed"].values())
        print(f"{key}: {a['metric']} {a['mean']:.1f} ± {a['std']:.1f} (n={a['n']}: {seeds}){deg}, "
              f"wall {a['wall_s_mean']:.0f} s; published {PUBLISHED[ds]['score']} ({PUBLISHED[ds]['model']})")
    for ds, d in diffs.items():
        print(f"{ds}: tl_hf - plain {d['tl_hf_minus_plain']:+.1f} points (per seed {_per_seed(d)}), "
              f"wall ratio {d['wall_ratio']:.2f}")
    print("\n" + families_table(table, diffs))
    return table


def _per_seed(diff: dict) -> str:
    """The paired per-seed differences of one dataset, signed: ``+1.2, -0.4, ...``."""
    return ", ".join(f"{v:+.1f}" for v in diff["per_seed"].values())


def families_table(table: dict, diffs: dict) -> str:
    """The docs table: per dataset, plain vs tl_hf (mean ± std, n, degenerate runs), the paired difference, the
    wall times, and the published number beside them."""

    def cell(a):
        if a is None:
            return "not run"
        deg = f", degenerate {a['degenerate_runs']}/{a['n']}" if "degenerate_runs" in a else ""
        return f"{a['mean']:.1f} ± {a['std']:.1f} (n={a['n']}{deg})"

    rows = []
    for ds in SETTINGS:
        p, t = table.get(f"{ds}/plain"), table.get(f"{ds}/tl_hf")
        if p is None and t is None:
            continue
        d = diffs.get(ds)
        diff = f"{d['tl_hf_minus_plain']:+.1f} ({_per_seed(d)})" if d else "-"
        wall = " / ".join(f"{a['wall_s_mean']:.0f}" if a else "-" for a in (p, t))
        pub = PUBLISHED[ds]
        rows.append([ds, SETTINGS[ds]["main"], cell(p), cell(t), diff, wall,
                     f"{pub['score']} {pub['metric']}, {pub['model']}"])
    return markdown_table(["dataset", "metric", "plain `Trainer`", "tl_hf", "tl_hf - plain (per seed)",
                           "wall s plain / tl_hf", "published"], rows)


def plan(done: list[dict], prefix: str = "") -> list[tuple[str, float]]:
    """``(command, estimated minutes)`` of every cell not yet in the jsonl: dataset by dataset, seed by seed, the
    two strategies next to each other (a grid stopped half-way still has paired cells)."""
    have = {(r["dataset"], r["strategy"], r["seed"]) for r in done}
    head = f"{prefix} " if prefix else ""
    return [(f"{head}python benchmarks/nlp_families.py --dataset {ds} --strategy {st} --seed {seed}", s["est_min"])
            for ds, s in SETTINGS.items() for seed in s["seeds"] for st in STRATEGIES if (ds, st, seed) not in have]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--small", action="store_true", help="smoke: every dataset and strategy, 2 steps, writes nothing")
    ap.add_argument("--report", action="store_true", help="only aggregate the jsonl into the json")
    ap.add_argument("--print-plan", action="store_true", help="print the command of every remaining cell")
    ap.add_argument("--plan-prefix", default="", help="put before each planned command (e.g. a lock and a timeout)")
    ap.add_argument("--dataset", choices=list(SETTINGS))
    ap.add_argument("--strategy", choices=STRATEGIES)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    done = read_jsonl(JSONL)
    if args.print_plan:
        cells = plan(done, args.plan_prefix)
        for cmd, est in cells:
            print(f"{cmd}  # ~{est} min")
        print(f"# {len(cells)} cells left, about {sum(e for _, e in cells):.0f} min of CPU; then: python "
              "benchmarks/nlp_families.py --report")
        return 0
    if args.report:
        report(done)
        return 0
    import transformers

    transformers.logging.set_verbosity_error()
    if args.small:
        rows = [run_cell(ds, st, 0, small=True) for ds in SETTINGS for st in STRATEGIES]
        for row in rows:
            print(json.dumps(row), flush=True)
        bad = [(r["dataset"], r["strategy"]) for r in rows if r["main"] is None or not np.isfinite(r["main"])]
        if bad:
            raise SystemExit(f"--small: no finite main metric in {bad}")
        for key, a in aggregate(rows).items():  # the report's aggregation, printed only
            print(f"{key}: {a['metric']} {a['mean']:.2f}, {a['steps']} steps, trainable {a['trainable_params']:,}")
        return 0
    if args.dataset is None or args.strategy is None:
        ap.error("--dataset and --strategy are required (or --print-plan / --report / --small)")
    cell = (args.dataset, args.strategy, args.seed)
    if any((r["dataset"], r["strategy"], r["seed"]) == cell for r in done):
        print(f"already done: {cell}")
        return 0
    row = run_cell(*cell)
    print(json.dumps(row), flush=True)
    append_jsonl(JSONL, row)
    print(f"{cell}: {row['main_metric']} {row['main']:.4f}, wall {row['wall_s']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
