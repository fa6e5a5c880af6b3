"""Split-CIFAR-10 on a pretrained MobileNetV2: naive vs EWC vs replay vs DER++, task- and class-incremental.

Five tasks of two classes (0/1 airplane/automobile, 2/3 bird/cat, 4/5 deer/dog, 6/7 frog/horse, 8/9 ship/truck)
learned in order by the ImageNet MobileNetV2 of ``../shared/models/mobilenetv2-imagenet`` (a 10-unit head, new) with
:class:`tl_hf.continual.ContinualRunner` and :class:`tl_hf.TransferTrainer`. The scenarios, the task-IL masking
(``task_ids``: each example only sees its task's two output units), the regularizer specs and the summary are those of
``benchmarks/split_mnist.py`` (imported, not copied).

* **Data -- a subset of a subset.** ``cifar10_subset`` (an imagefolder of 5,000 train / 2,000 test images, 32 px):
  per task a seeded 500 of the 1,000 training images of its two classes and 200 of its 400 test images (to fit the
  2-core CPU budget). The 32 px images are **upscaled** by the model's
  own processor (``tl_hf.run.data.image_pipeline.eval_processor`` at ``image_size``: shorter side to 73, center crop
  64 for 64 px), once, into a tensor cache; no augmentation (every epoch sees the same pixels).
* **Model.** Only the top ``k`` of the 16 inverted-residual blocks, the final 1x1 conv and the head train
  (``freezing: top_k``); the lower blocks and their BatchNorm statistics stay frozen (eval mode) -- every run checks
  that a frozen block's running mean is bit-identical after the 5 tasks (``frozen_bn_unchanged``).
* Training per task: AdamW (no decay), constant lr, batch 32, ``epochs`` per task. EWC: empirical Fisher on 256
  examples, lambda from ``EWC_GRID`` by ACC on a tuning split (seed 100, task-IL; reused for class-IL to save CPU).
  Replay: class-balanced memory of 200 (8 % of the 2,500-image stream), interleaved at ratio 0.5 (as Split-MNIST).
  DER++: class-balanced memory of 200 storing logits, replay batch 32, alpha / beta as chosen on Split-MNIST's tuning
  split (not re-tuned here).

One (method, scenario, seed) run per invocation is appended to ``benchmarks/results/split_cifar10.jsonl`` (a finished
run is skipped), so the grid runs in short pieces; ``--report`` aggregates it.

    python benchmarks/split_cifar10.py                     # the whole grid (~17 min on 2 idle cores), then --report
    python benchmarks/split_cifar10.py --method ewc --scenario task_il --seed 0
    python benchmarks/split_cifar10.py --scenario class_il --seed 1   # every method of one (scenario, seed)
    python benchmarks/split_cifar10.py --tune-ewc          # the EWC lambda grid on seed 100 (task-IL)
    python benchmarks/split_cifar10.py --report            # -> results/split_cifar10.json + docs table + plot
    python benchmarks/split_cifar10.py --small             # smoke: 2 tasks, 16 images each, 1 step; writes nothing

Reference (van de Ven's Split-CIFAR-10, task-IL, as quoted in issue 15): EWC 84.9 vs none 69.5, trained from scratch.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (RESULTS, append_jsonl, markdown_table, masked_outputs, read_jsonl, task_mask,  # noqa: E402
                    update_docs_section, with_task_ids, write_result)
from split_mnist import method_specs, summarize  # noqa: E402

MODEL = Path(__file__).resolve().parents[2] / "shared" / "models" / "mobilenetv2-imagenet"
PAIRS = ((0, 1), (2, 3), (4, 5), (6, 7), (8, 9))
METHODS = ("naive", "ewc", "replay_200", "derpp_200")
SCENARIOS = ("task_il", "class_il")
SETTINGS = {"image_size": 64, "top_k": 6, "epochs": 1, "batch": 32, "lr": 1e-3, "fisher_samples": 256,
            "train_per_task": 500, "eval_per_task": 200,
            "replay_batch": 32, "derpp": (0.2, 1.0)}
EWC_GRID = [1e2, 1e4, 1e6]
TUNE_SEED = 100
JSONL = RESULTS / "split_cifar10.jsonl"
PUBLISHED_TASK_IL = {"naive": 69.5, "ewc": 84.9}  # van de Ven et al., Split-CIFAR-10 task-IL, from scratch


def load_arrays(size: int, cache_dir: str) -> dict[str, torch.Tensor]:
    """All cifar10_subset images through the model's processor at ``size`` px, as tensors (cached on disk)."""
    from safetensors.torch import load_file, save_file

    path = Path(cache_dir) / f"tl_hf_cifar10_subset_mobilenetv2_{size}px.safetensors"
    if path.exists():
        return load_file(path)
    from tl_hf.run.data.image_pipeline import ProcessorTransform, eval_processor
    from tl_hf.run.data.images import ImageDataConfig, load_image_classification

    tf = ProcessorTransform(eval_processor(str(MODEL), mean=None, std=None, image_size=size, model_size=None,
                                           model_name=str(MODEL)))
    data = load_image_classification(ImageDataConfig(train_dir="cifar10_subset/train",
                                                     eval_dir="cifar10_subset/test"), train_tf=tf, eval_tf=tf)
    out = {}
    for split, ds in (("train", data.train), ("test", data.eval)):
        out[f"{split}_x"] = torch.stack([torch.as_tensor(tf(ds.image(i))) for i in range(len(ds))])
        out[f"{split}_y"] = torch.as_tensor(ds.labels, dtype=torch.long)
    save_file(out, path)
    return out


def make_tasks(arrays, seed: int, task_il: bool, n_tasks: int = 5, n_train: int | None = None,
               n_eval: int | None = None):
    """One task per class pair, labels = the CIFAR class ids; a ``seed``-shuffled ``n_train`` / ``n_eval`` of the pair's
    train / test images."""
    from tl_hf.continual import Task, TensorDictDataset

    g = torch.Generator().manual_seed(seed)
    tasks = []
    for k, pair in enumerate(PAIRS[:n_tasks]):
        split = {}
        for name, cap in (("train", n_train), ("test", n_eval)):
            y = arrays[f"{name}_y"]
            idx = torch.nonzero((y == pair[0]) | (y == pair[1])).flatten()
            idx = idx[torch.randperm(len(idx), generator=g)][:cap]
            split[name] = TensorDictDataset(pixel_values=arrays[f"{name}_x"][idx], labels=y[idx])
        tasks.append(Task(name=f"task{k + 1}", train=split["train"], eval=split["test"], labels=list(pair)))
    return with_task_ids(tasks) if task_il else tasks


def masked_mobilenet(seed: int):
    """The pretrained MobileNetV2 with a new 10-unit head whose forward takes ``task_ids`` (task-IL masking). A
    subclass keeps the parameter names and ``model_type``, so tl_hf's MobileNetV2 layer map and freezing apply."""
    import transformers
    from transformers import MobileNetV2ForImageClassification

    class MaskedMobileNetV2(MobileNetV2ForImageClassification):
        def forward(self, pixel_values, labels=None, task_ids=None):
            logits = super().forward(pixel_values=pixel_values).logits
            return masked_outputs(logits, labels, task_ids, self.task_mask)

    transformers.set_seed(seed)
    model = MaskedMobileNetV2.from_pretrained(str(MODEL), num_labels=10, ignore_mismatched_sizes=True)
    model.register_buffer("task_mask", task_mask(PAIRS, 10), persistent=False)
    return model


def specs(method: str, strength, small: bool = False):
    if method == "ewc":
        return [{"name": "ewc", "lambda": strength, "estimator": "empirical",
                 "num_samples": SETTINGS["fisher_samples"]}]
    out = method_specs(method, None, SETTINGS["derpp"] if method.startswith("derpp") else strength)
    for s in out:  # the replay batch of DER++ is the training batch here
        if s["name"] == "der":
            s["batch_size"] = SETTINGS["replay_batch"]
        if small and "budget" in s:
            s["budget"] = 8
    return out


def run_cell(method: str, scenario: str, seed: int, strength=None, small: bool = False, cache_dir=None) -> dict:
    from tl_hf.continual import ContinualRunner

    t0 = time.perf_counter()
    s = SETTINGS
    size = 32 if small else s["image_size"]
    arrays = load_arrays(size, cache_dir or tempfile.gettempdir())
    tasks = make_tasks(arrays, seed, scenario == "task_il", 2 if small else 5, 16 if small else s["train_per_task"],
                       16 if small else s["eval_per_task"])
    model = masked_mobilenet(seed)
    frozen_bn = "mobilenet_v2.layer.0.expand_1x1.normalization.running_mean"
    frozen_bn = frozen_bn if frozen_bn in model.state_dict() else "mobilenet_v2.conv_stem.first_conv.normalization.running_mean"
    bn_before = model.state_dict()[frozen_bn].clone()
    train = dict(num_train_epochs=s["epochs"], max_steps=1 if small else -1, per_device_train_batch_size=s["batch"],
                 learning_rate=s["lr"], lr_scheduler_type="constant", weight_decay=0.0, logging_steps=10_000,
                 seed=seed, per_device_eval_batch_size=128)
    with tempfile.TemporaryDirectory() as out:
        runner = ContinualRunner(model, tasks, scenario="class_incremental", output_dir=out,
                                 regularizers=specs(method, strength, small), training_args=train,
                                 trainer_kwargs={"freezing": {"policy": "top_k", "k": s["top_k"]}}, num_labels=10,
                                 plot=False)
        res = runner.run()
    m = runner.model
    return {"method": method, "scenario": scenario, "seed": seed, "strength": strength, "R": res.R,
            "ACC": res.metrics["ACC"], "BWT": res.metrics["BWT"], "final": res.R[-1],
            "frozen_bn_unchanged": bool(torch.equal(m.state_dict()[frozen_bn].cpu(), bn_before)),
            "trainable_params": sum(p.numel() for p in m.parameters() if p.requires_grad),
            "total_params": sum(p.numel() for p in m.parameters()), "image_size": size,
            "train_per_task": len(tasks[0].train), "eval_per_task": len(tasks[0].eval),
            "wall_s": round(time.perf_counter() - t0, 1), "torch_threads": torch.get_num_threads(), "small": small}


def chosen_ewc(rows) -> float | None:
    tune = [r for r in rows if r["seed"] == TUNE_SEED and r["method"] == "ewc"]
    return max(tune, key=lambda r: r["ACC"])["strength"] if len(tune) == len(EWC_GRID) else None


def report(rows) -> dict:
    runs = [r for r in rows if r["seed"] != TUNE_SEED]
    for r in runs:
        r["final"] = r["R"][-1]
    table = summarize(runs, METHODS, SCENARIOS)
    lam = chosen_ewc(rows)
    write_result("split_cifar10", {"settings": {**SETTINGS, "ewc_grid": EWC_GRID, "ewc_lambda": lam,
                                                "tune_seed": TUNE_SEED},
                                   "table": table, "runs": runs, "tuning_runs": [r for r in rows if r not in runs],
                                   "published_task_il_from_scratch": PUBLISHED_TASK_IL})
    plot_matrices(runs, Path(__file__).resolve().parents[1] / "docs" / "img" / "split_cifar10_R.png")
    text = docs_section(table, runs, lam)
    update_docs_section("split_cifar10", text)
    print(text)
    return table


def docs_section(table, runs, lam) -> str:
    s = SETTINGS
    seeds = sorted({r["seed"] for r in runs})
    lines = ["### Continual: Split-CIFAR-10 on a pretrained MobileNetV2 (`benchmarks/split_cifar10.py`)", "",
             f"5 tasks of 2 classes (airplane/automobile, bird/cat, deer/dog, frog/horse, ship/truck) from "
             f"`cifar10_subset`: per task a seeded {s['train_per_task']} training / {s['eval_per_task']} test images "
             f"(**a subset of the subset**), 32 px **upscaled to {s['image_size']} px** by the model's processor, no "
             f"augmentation. ImageNet MobileNetV2, new 10-unit head; top {s['top_k']} of 16 blocks + head train, "
             "the lower blocks and their BatchNorm statistics frozen (checked: a frozen block's running mean is "
             "bit-identical after the 5 tasks in every run). "
             f"{s['epochs']} epoch per task, batch {s['batch']}, AdamW lr {s['lr']:g} constant, no decay. Task-IL = "
             "each example sees only its task's two output units (as Split-MNIST); class-IL = argmax over 10. "
             f"EWC: empirical Fisher on {s['fisher_samples']} examples, λ = {lam if lam is None else f'{lam:g}'} (best ACC of "
             f"{', '.join(f'{v:g}' for v in EWC_GRID)} on a tuning split, seed {TUNE_SEED}, task-IL; reused for "
             "class-IL). Replay: class-balanced memory of 200, interleaved at ratio 0.5. DER++: class-balanced "
             f"memory of 200 with logits, replay batch {s['replay_batch']}, α {s['derpp'][0]:g} / β "
             f"{s['derpp'][1]:g} (chosen on Split-MNIST, not re-tuned). Seeds {', '.join(map(str, seeds))} "
             "(mean ± std of the mean final accuracy over the 5 tasks; BWT in points). One run per invocation, "
             "each under the CPU lock; raw rows: `benchmarks/results/split_cifar10.json`.", ""]
    table_rows = []
    for m in METHODS:
        cells, n = [], []
        for sc in SCENARIOS:
            c = table.get(f"{sc}/{m}")
            cells += [f"{c['acc_mean']:.1f} ± {c['acc_std']:.1f}", f"{c['bwt_mean']:+.1f}"] if c else ["-", "-"]
            n.append(str(c["n"]) if c else "0")
        pub = f"{PUBLISHED_TASK_IL[m]}" if m in PUBLISHED_TASK_IL else "-"
        table_rows.append([m, *cells, " / ".join(n), pub])
    lines.append(markdown_table(["method", "task-IL ACC (%)", "task-IL BWT", "class-IL ACC (%)", "class-IL BWT",
                                 "seeds", "van de Ven task-IL (from scratch)"], table_rows))
    lines += ["", f"Accuracy matrices R[i][j] (%, accuracy on task j after training task i), seed {seeds[0]}:", ""]
    for sc in SCENARIOS:
        for m in METHODS:
            r = next((r for r in runs if r["scenario"] == sc and r["method"] == m and r["seed"] == seeds[0]), None)
            if r is None:
                continue
            rows = " · ".join("[" + " ".join(f"{v * 100:.0f}" for v in row if v is not None) + "]" for row in r["R"])
            lines.append(f"- {sc.replace('_', '-')} {m}: {rows}")
    lines += ["", "![Split-CIFAR-10 accuracy matrices](img/split_cifar10_R.png)"]
    return "\n".join(lines)


def plot_matrices(runs, path: Path) -> None:
    """The accuracy matrices of seed 0, one panel per (scenario, method)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = [(sc, m) for sc in SCENARIOS for m in METHODS
             if any(r["scenario"] == sc and r["method"] == m and r["seed"] == 0 for r in runs)]
    if not cells:
        return
    fig, axes = plt.subplots(len(SCENARIOS), len(METHODS), figsize=(2.6 * len(METHODS), 2.6 * len(SCENARIOS)),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for sc, m in cells:
        r = next(r for r in runs if r["scenario"] == sc and r["method"] == m and r["seed"] == 0)
        ax = axes[SCENARIOS.index(sc)][METHODS.index(m)]
        ax.axis("on")
        grid = [[v * 100 if v is not None else float("nan") for v in row] for row in r["R"]]
        ax.imshow(grid, vmin=0, vmax=100, cmap="viridis")
        for i, row in enumerate(grid):
            for j, v in enumerate(row):
                if not math.isnan(v):
                    ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=7,
                            color="white" if v < 60 else "black")
        ax.set_title(f"{sc.replace('_', '-')} {m}\nACC {r['ACC'] * 100:.1f}", fontsize=8)
        ax.set_xticks(range(5), [f"T{j + 1}" for j in range(5)], fontsize=6)
        ax.set_yticks(range(5), [f"after {i + 1}" for i in range(5)], fontsize=6)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--small", action="store_true", help="smoke: 2 tasks of 16 images at 32 px, 1 step each")
    ap.add_argument("--report", action="store_true", help="aggregate the jsonl into the json, plot and print")
    ap.add_argument("--tune-ewc", action="store_true", help="run the EWC lambda grid on the tuning split")
    ap.add_argument("--method", choices=METHODS)
    ap.add_argument("--scenario", choices=SCENARIOS)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache-dir", default=None, help="where the preprocessed pixels are cached (default: tmp)")
    args = ap.parse_args(argv)
    import transformers

    transformers.logging.set_verbosity_error()
    rows = read_jsonl(JSONL)
    if args.report:
        report(rows)
        return 0
    if args.small:
        for sc in SCENARIOS:
            for m in METHODS:
                print(json.dumps(run_cell(m, sc, 0, 100.0 if m == "ewc" else None, small=True,
                                          cache_dir=args.cache_dir)), flush=True)
        return 0
    tune = [("ewc", "task_il", TUNE_SEED, lam) for lam in EWC_GRID]
    if args.tune_ewc:
        cells = tune
    elif args.method is None and args.scenario is None:  # the whole grid, then the report
        run_cells(tune, rows, args.cache_dir)
        cells = [(m, sc, seed, None) for seed in range(3) for sc in SCENARIOS for m in METHODS]
    elif args.scenario is None:
        ap.error("--method needs --scenario")
    else:  # one method, or every method of one (scenario, seed)
        cells = [(m, args.scenario, args.seed, None) for m in ([args.method] if args.method else METHODS)]
    run_cells(cells, rows, args.cache_dir)
    if args.method is None and args.scenario is None and not args.tune_ewc:
        report(rows)
    return 0


def run_cells(cells, rows, cache_dir) -> None:
    """Run the (method, scenario, seed, strength) cells not in ``rows`` yet, appending each to the jsonl."""
    for m, sc, seed, strength in cells:
        if m == "ewc" and strength is None:
            strength = chosen_ewc(rows)
            if strength is None:
                raise SystemExit("run --tune-ewc first: the EWC lambda comes from the tuning split")
        if any((r["method"], r["scenario"], r["seed"], r["strength"]) == (m, sc, seed, strength) for r in rows):
            print(f"already done: {(m, sc, seed, strength)}")
            continue
        row = run_cell(m, sc, seed, strength, cache_dir=cache_dir)
        print(json.dumps(row), flush=True)
        append_jsonl(JSONL, row)
        rows.append(row)


if __name__ == "__main__":
    raise SystemExit(main())
