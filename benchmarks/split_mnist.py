"""Split-MNIST: naive, EWC (empirical / exact Fisher), online EWC, L2-SP, replay, LwF, DER, DER++; task- and class-IL.

Five binary tasks (digits 0/1, 2/3, 4/5, 6/7, 8/9) learned in order by one MLP (784-400-400-10, ReLU) with
:class:`tl_hf.continual.ContinualRunner` and :class:`tl_hf.TransferTrainer`; 3 seeds per cell, mean +- std.

* **Data -- a non-standard split.** Only the MNIST *test* set (t10k, 10,000 images) is available offline, so each
  pair's ~2,000 images are shuffled (seed) and cut 80 / 20 into train (~1,600) and eval (~400)
  (:func:`tl_hf.continual.split_mnist_tasks`). van de Ven et al. train on the 60k training set (~12,000 per task).
* **Task-incremental** is van de Ven's "multi-headed" setup: one 10-unit output layer, and each example (training,
  replay, evaluation, Fisher) only sees its own task's two output units (the others are masked with -1e9 from the
  ``task_ids`` column). **Class-incremental**: argmax over all 10 units, no task identity.
* Training per task: Adam(W, no decay) lr 1e-3 constant, batch 64, 4 epochs (~100 steps). van de Ven: lr 1e-4,
  2,000 iterations of batch 128 per task.
* EWC / online EWC: our Fisher is the mean over examples of squared per-example gradients, penalty
  lambda/2 * sum F (theta - theta*)^2, 1,024 examples per Fisher. L2-SP: the MLP has no pre-training, so task 1
  plays that role -- the anchors are the weights after task 1 (taken from a naive run of task 1 with the same seed);
  the output layer is exempt, as a new head is in L2-SP.
  Strengths (lambda, alpha) are picked per scenario from ``GRID`` by the ACC of a tuning run on another split
  (seed 100), then fixed for the 3 reported seeds. Replay: class-balanced memory of 100 or 500 examples,
  interleaved (half of each later task's training stream comes from memory).
* LwF (Li & Hoiem 2017): distillation (T = 2) from the model after the previous task on the current inputs; weight
  from ``GRID``. Task-IL: per earlier task through its own two units (:func:`multi_head_lwf`); class-IL: over all 10.
* DER / DER++ (Buzzega et al. 2020): class-balanced memory of 100 or 500 examples with their logits at insertion, a
  replay batch of 64 per step, alpha * MSE(logits) (+ beta * CE for DER++); alpha / (alpha, beta) from ``GRID``, tuned
  at budget 500 and reused at 100 (``TUNE_AS``).

    python benchmarks/split_mnist.py            # full: 3 seeds, both scenarios, 12 methods (~25 min on 2 cores)
    python benchmarks/split_mnist.py --methods lwf,der_100 --scenarios class_il   # some cells; keeps the other rows
    python benchmarks/split_mnist.py --small    # smoke: 1 seed, 2 tasks, 1 epoch, writes nothing to docs

Reference (van de Ven & Tolias 2019, "Three scenarios for continual learning", https://arxiv.org/abs/1904.07734;
van de Ven, Tuytelaars & Tolias 2022, Nature Machine Intelligence), Split-MNIST, rounded: task-IL none ~87, EWC and
online EWC ~99; class-IL none, EWC and online EWC ~20, replay ~90 (their replay runs use far larger replay budgets
or generated samples, so the 500-example row is the closest comparison).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (markdown_table, masked_outputs, task_mask, update_docs_section, with_task_ids,  # noqa: E402
                    write_result)

PAIRS = ((0, 1), (2, 3), (4, 5), (6, 7), (8, 9))
#: strengths are chosen per scenario by the ACC of a tuning run on another split (seed TUNE_SEED) over these grids
GRID = {"ewc_empirical": [1e3, 1e5, 1e7], "ewc_exact": [1e3, 1e5, 1e7], "online_ewc": [1e3, 1e5, 1e7],
        "l2sp": [0.01, 0.1, 1.0, 10.0],
        # LwF: distillation weight at temperature 2 (Li & Hoiem's T); DER: alpha; DER++: (alpha, beta)
        "lwf": [0.3, 1.0, 3.0], "der_500": [0.1, 0.3, 1.0],
        "derpp_500": [(a, b) for a in (0.2, 0.5) for b in (0.5, 1.0)]}
#: rows that reuse another row's tuned strength (DER / DER++ are tuned once, at budget 500, to save CPU)
TUNE_AS = {"der_100": "der_500", "derpp_100": "derpp_500"}
METHODS = ["naive", "ewc_empirical", "ewc_exact", "online_ewc", "l2sp", "replay_100", "replay_500", "lwf",
           "der_100", "der_500", "derpp_100", "derpp_500"]
SCENARIOS = ["task_il", "class_il"]
LWF_T = 2.0
TUNE_SEED = 100
PUBLISHED = {  # van de Ven & Tolias 2019 (arXiv:1904.07734), Split-MNIST, mean final accuracy (%), rounded
    "task_il": {"naive": 87, "ewc_empirical": 99, "online_ewc": 99},
    "class_il": {"naive": 20, "ewc_empirical": 20, "online_ewc": 20, "replay_500": 90},
}
#: van de Ven, Tuytelaars & Tolias 2022 (Nature Machine Intelligence), Split-MNIST class-IL, rounded (as in issue 12)
PUBLISHED_2022 = {"class_il": {"lwf": 22, "replay_500": 89}}


class MaskedMLP(torch.nn.Module):
    """784-h-h-10 MLP; with ``task_ids`` every example only sees its task's output units (task-incremental)."""

    def __init__(self, hidden: int, seed: int, pairs=PAIRS) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.embed = torch.nn.Linear(28 * 28, hidden)
        self.blocks = torch.nn.ModuleList([torch.nn.Linear(hidden, hidden)])
        self.classifier = torch.nn.Linear(hidden, 10)
        self.register_buffer("task_mask", task_mask(pairs, 10), persistent=False)

    def forward(self, pixel_values, labels=None, task_ids=None):
        h = torch.relu(self.embed(pixel_values.flatten(-3)))
        for b in self.blocks:
            h = torch.relu(b(h))
        return masked_outputs(self.classifier(h), labels, task_ids, self.task_mask)


def make_tasks(images, labels, seed: int, n_tasks: int, task_il: bool):
    from tl_hf.continual import split_mnist_tasks

    tasks = split_mnist_tasks(images, labels, pairs=PAIRS[:n_tasks], seed=seed, scenario="class_incremental")
    return with_task_ids(tasks) if task_il else tasks


def multi_head_lwf(weight: float, pairs=PAIRS):
    """Task-IL LwF (Li & Hoiem's multi-head form): the previous model's outputs on the current inputs are distilled
    for every earlier task separately, each through the softmax of that task's own two output units. Plain
    :class:`~tl_hf.regularizers.LwF` sees the training forward's logits, which ``task_ids`` masks down to the current
    task's units -- units the teacher never trained -- so the masking is undone here with an unmasked forward."""
    from tl_hf.regularizers import LwF
    from tl_hf.regularizers.lwf import kd_loss

    class MultiHeadLwF(LwF):
        def end_task(self, model, dataset, **kwargs) -> None:
            super().end_task(model, dataset, **kwargs)
            self.tasks_seen = getattr(self, "tasks_seen", 0) + 1

        def extra_loss(self, model, inputs, step):
            x, c = inputs["pixel_values"], self.config
            student = step.unwrap(model)(pixel_values=x)["logits"]
            with torch.no_grad():
                teacher = self.teacher(pixel_values=x)["logits"]
            old = [list(p) for p in pairs[:self.tasks_seen]]
            loss = sum(kd_loss(student[:, p], teacher[:, p], c.temperature) for p in old) / len(old)
            self.record_loss(loss)
            return c.weight * loss

    return MultiHeadLwF(weight=weight, temperature=LWF_T)


def method_specs(method: str, anchor_path: str | None, strength, scenario: str = "class_il"):
    if method == "lwf":
        if scenario == "task_il":
            return [multi_head_lwf(strength)]
        return [{"name": "lwf", "weight": strength, "temperature": LWF_T}]
    if method.startswith("der"):  # der_<budget> (alpha) / derpp_<budget> ((alpha, beta)); replay batch = train batch
        alpha, beta = (strength, 0.0) if method.startswith("der_") else strength
        return [{"name": "der", "budget": int(method.split("_")[1]), "selection": "class_balanced",
                 "alpha": alpha, "beta": beta, "batch_size": 64, "seed": 0}]
    if method == "naive":
        return []
    if method == "ewc_empirical":
        return [{"name": "ewc", "lambda": strength, "estimator": "empirical"}]
    if method == "ewc_exact":
        return [{"name": "ewc", "lambda": strength, "estimator": "exact"}]
    if method == "online_ewc":
        return [{"name": "online_ewc", "lambda": strength, "gamma": 1.0}]
    if method == "l2sp":
        # the output layer is the head: not pulled towards task 1's weights (its rows for later tasks are new)
        return [{"name": "l2sp", "alpha": strength, "beta": 0.0, "source": anchor_path, "exempt": [r"^classifier\."]}]
    if method.startswith("replay_"):
        return [{"name": "replay", "budget": int(method.split("_")[1]), "selection": "class_balanced",
                 "mode": "interleave", "ratio": 0.5, "seed": 0}]
    raise ValueError(method)


def run_one(images, labels, scenario: str, method: str, seed: int, args, workdir: str, anchors: dict,
            strength: float | None = None) -> dict:
    from tl_hf.continual import MLP_LAYER_MAP, ContinualRunner

    task_il = scenario == "task_il"
    tasks = make_tasks(images, labels, seed, args.tasks, task_il)
    model = MaskedMLP(args.hidden, seed)
    train = dict(num_train_epochs=args.epochs, per_device_train_batch_size=64, learning_rate=1e-3,
                 lr_scheduler_type="constant", weight_decay=0.0, logging_steps=10_000, seed=seed)
    out = os.path.join(workdir, f"{scenario}_{method}_{seed}_{strength}")
    runner = ContinualRunner(model, tasks, scenario="class_incremental", output_dir=out,
                             regularizers=method_specs(method, anchors.get((scenario, seed)), strength, scenario),
                             training_args=train,
                             trainer_kwargs={"layer_map": MLP_LAYER_MAP}, num_labels=10, plot=False)
    t0 = time.perf_counter()
    if method == "naive":  # keep the weights after task 1 as the "pretrained" anchors of L2-SP
        from safetensors.torch import save_file

        first = ContinualRunner(MaskedMLP(args.hidden, seed), tasks[:1], scenario="class_incremental",
                                output_dir=out + "_t1", training_args=train,
                                trainer_kwargs={"layer_map": MLP_LAYER_MAP}, num_labels=10, plot=False)
        first.run()
        path = os.path.join(workdir, f"anchor_{scenario}_{seed}.safetensors")
        save_file({k: v.detach().contiguous() for k, v in first.model.state_dict().items()}, path)
        anchors[(scenario, seed)] = path
    res = runner.run()
    R = res.R
    return {"scenario": scenario, "method": method, "seed": seed, "strength": strength, "R": R, "ACC": res.metrics["ACC"],
            "BWT": res.metrics["BWT"], "final": R[-1], "wall_s": round(time.perf_counter() - t0, 1)}


def summarize(runs: list[dict], methods, scenarios) -> dict:
    table = {}
    for sc in scenarios:
        for m in methods:
            accs = [r["ACC"] * 100 for r in runs if r["scenario"] == sc and r["method"] == m]
            bwts = [r["BWT"] * 100 for r in runs if r["scenario"] == sc and r["method"] == m and r["BWT"] is not None]
            if accs:
                table[f"{sc}/{m}"] = {
                    "acc_mean": statistics.mean(accs), "acc_std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
                    "bwt_mean": statistics.mean(bwts) if bwts else None, "n": len(accs)}
    return table


def plot(table, methods, scenarios, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(8.0, 0.75 * len(methods)), 3.6))
    w = 0.8 / len(scenarios)
    for i, sc in enumerate(scenarios):
        ys = [table[f"{sc}/{m}"]["acc_mean"] for m in methods]
        es = [table[f"{sc}/{m}"]["acc_std"] for m in methods]
        ax.bar([x + i * w for x in range(len(methods))], ys, w, yerr=es, label=sc.replace("_", "-"), capsize=2)
    ax.set_xticks([x + w * (len(scenarios) - 1) / 2 for x in range(len(methods))], methods, rotation=20, fontsize=8)
    ax.set_ylabel("mean final accuracy over 5 tasks (%)")
    ax.set_ylim(0, 100)
    ax.axhline(20, color="gray", lw=0.5, ls=":")
    ax.legend(fontsize=8)
    ax.set_title("Split-MNIST (MLP 784-400-400-10, 3 seeds)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def fmt_strength(v) -> str:
    return f"α {v[0]:g} β {v[1]:g}" if isinstance(v, (list, tuple)) else f"{v:g}"


def tune(images, labels, sc, methods, args, work, anchors, show) -> tuple[list, dict]:
    """Strengths: the best ACC of a tuning run on another split (seed TUNE_SEED) over ``GRID``, per scenario/method."""
    tuning, chosen = [], {}
    tune_seed = TUNE_SEED if not args.small else 0
    if "l2sp" in methods:
        run_one(images, labels, sc, "naive", tune_seed, args, work, anchors)  # L2-SP's anchors
    for m in [m for m in GRID if m in methods or m in {TUNE_AS.get(x) for x in methods}]:
        best = None
        for v in (GRID[m] if not args.small else GRID[m][1:2]):
            r = run_one(images, labels, sc, m, tune_seed, args, work, anchors, v)
            tuning.append(r)
            show(r, "[tune] ")
            if best is None or r["ACC"] > best[0] + 1e-9:
                best = (r["ACC"], v)
        chosen[f"{sc}/{m}"] = best[1]
    for m, src in TUNE_AS.items():
        if f"{sc}/{src}" in chosen:
            chosen[f"{sc}/{m}"] = chosen[f"{sc}/{src}"]
    return tuning, chosen


def merged(path: Path, runs, tuning, chosen, cells) -> tuple[list, list, dict]:
    """The rows of an earlier results file for every (scenario, method) cell not rerun now, plus the new ones."""
    import json

    old = json.loads(path.read_text()) if path.exists() else {}
    keep = [r for r in old.get("runs", []) if (r["scenario"], r["method"]) not in cells]
    keep_t = [r for r in old.get("tuning_runs", []) if (r["scenario"], r["method"]) not in cells
              and (r["scenario"], r["method"]) not in {(s, TUNE_AS.get(m)) for s, m in cells}]
    ch = {**old.get("settings", {}).get("chosen_strengths", {}), **chosen}
    return keep + runs, keep_t + tuning, ch


def docs_table(table, chosen, methods, scenarios) -> str:
    lines = ["## Split-MNIST (`benchmarks/split_mnist.py`)", "",
             "5 digit-pair tasks, MLP 784-400-400-10, 4 epochs per task (batch 64, lr 1e-3), 3 seeds (mean ± std of "
             "the mean final accuracy over the 5 tasks, and BWT). **Non-standard split:** only the MNIST test set is "
             "available offline; each pair is split 80/20 into train/eval (~1,600 / ~400). Task-IL = one output "
             "unit pair per task (others masked); class-IL = argmax over all 10 units. "
             "EWC / online EWC (γ=1): 1,024-example Fisher; L2-SP anchored at the weights after task 1 (output layer "
             "exempt). Replay = class-balanced memory, interleaved at ratio 0.5. LwF: T = 2, teacher = the model "
             "after the previous task (task-IL: distilled per earlier task through its own two units). DER / DER++: "
             "class-balanced memory storing logits, replay batch 64 per step (α·MSE of the logits, + β·CE for DER++); "
             "DER / DER++ strengths tuned at budget 500 and reused at 100. Strengths "
             "picked per scenario from a grid by ACC on another split (seed 100): "
             + ", ".join(f"{k} {fmt_strength(v)}" for k, v in chosen.items() if k.split("/")[1] not in TUNE_AS) + ".",
             ""]
    table_rows = []
    for m in methods:
        cells = []
        for sc in scenarios:
            c = table.get(f"{sc}/{m}")
            cells += [f"{c['acc_mean']:.1f} ± {c['acc_std']:.1f}", f"{c['bwt_mean']:+.1f}"] if c else ["-", "-"]
        pub = " / ".join(f"~{PUBLISHED[sc][m]}" if m in PUBLISHED[sc] else "-" for sc in scenarios)
        pub22 = f"~{PUBLISHED_2022['class_il'][m]}" if m in PUBLISHED_2022["class_il"] else "-"
        table_rows.append([m, *cells, pub, pub22])
    lines.append(markdown_table(["method", "task-IL ACC (%)", "task-IL BWT", "class-IL ACC (%)", "class-IL BWT",
                                 "van de Ven & Tolias 2019 task-IL / class-IL", "van de Ven et al. 2022 class-IL"],
                                table_rows))
    lines += ["", "![Split-MNIST](img/split_mnist.png)"]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--small", action="store_true", help="smoke run: 1 seed, 2 tasks, 1 epoch; docs untouched")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=400)
    ap.add_argument("--methods", default=",".join(METHODS),
                    help="comma-separated subset of the rows (tuned and rerun; the results file keeps the other rows)")
    ap.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated subset of task_il,class_il")
    ap.add_argument("--data-root", default=None, help="default: $TL_HF_DATA_ROOT, else ../shared/data")
    args = ap.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    scenarios = [s for s in args.scenarios.split(",") if s]
    bad = [m for m in methods if m not in METHODS] + [s for s in scenarios if s not in SCENARIOS]
    if bad:
        ap.error(f"unknown methods/scenarios {bad}; methods: {METHODS}, scenarios: {SCENARIOS}")
    if "l2sp" in methods and "naive" not in methods:
        methods.insert(0, "naive")  # the naive run writes L2-SP's anchors
    args.tasks = 5
    if args.small:
        args.seeds, args.epochs, args.tasks = 1, 1, 2
    import transformers

    from tl_hf.run.data.mnist import load_mnist_idx

    transformers.logging.set_verbosity_error()
    images, labels = load_mnist_idx(args.data_root)
    runs, anchors, tuning, chosen = [], {}, [], {}
    t0 = time.perf_counter()

    def show(r, tag=""):
        bwt = "n/a" if r["BWT"] is None else f"{r['BWT']:+.4f}"
        print(f"{tag}{r['scenario']:9s} {r['method']:14s} seed {r['seed']} strength {r['strength']}: ACC "
              f"{r['ACC']:.4f} BWT {bwt} final {[round(x, 3) for x in r['final']]} ({r['wall_s']} s)", flush=True)

    with tempfile.TemporaryDirectory() as work:
        for sc in scenarios:
            t, c = tune(images, labels, sc, methods, args, work, anchors, show)
            tuning += t
            chosen.update(c)
        for seed in range(args.seeds):
            for sc in scenarios:
                for m in methods:  # naive first: it writes L2-SP's anchors
                    r = run_one(images, labels, sc, m, seed, args, work, anchors, chosen.get(f"{sc}/{m}"))
                    runs.append(r)
                    show(r)
    if args.small:
        print(summarize(runs, methods, scenarios))
        return 0
    from common import RESULTS

    cells = {(sc, m) for sc in scenarios for m in methods}
    runs, tuning, chosen = merged(RESULTS / "split_mnist.json", runs, tuning, chosen, cells)
    all_methods = [m for m in METHODS if any(r["method"] == m for r in runs)]
    table = summarize(runs, all_methods, SCENARIOS)
    settings = {"seeds": args.seeds, "epochs_per_task": args.epochs, "hidden": args.hidden, "tasks": args.tasks,
                "batch": 64, "lr": 1e-3, "grid": GRID, "tune_as": TUNE_AS, "tune_seed": TUNE_SEED,
                "chosen_strengths": chosen, "online_gamma": 1.0, "fisher_samples": 1024, "lwf_temperature": LWF_T,
                "der_replay_batch": 64, "split": "MNIST t10k only, 80/20 per pair",
                "last_invocation": {"methods": methods, "scenarios": scenarios,
                                    "wall_s": round(time.perf_counter() - t0, 1)}}
    write_result("split_mnist", {"settings": settings, "table": table, "runs": runs, "tuning_runs": tuning,
                                 "published_van_de_ven_tolias_2019_rounded": PUBLISHED,
                                 "published_van_de_ven_et_al_2022_rounded": PUBLISHED_2022})
    have = [m for m in all_methods if all(f"{sc}/{m}" in table for sc in SCENARIOS)]
    plot(table, have, SCENARIOS, Path(__file__).resolve().parents[1] / "docs" / "img" / "split_mnist.png")
    text = docs_table(table, chosen, all_methods, SCENARIOS)
    update_docs_section("split_mnist", text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
