"""Time to accuracy on SST-2: how long the toolkit's fast recipe needs to reach the dev accuracy that plain
``transformers.Trainer`` full fine-tuning reaches on 8,000 examples in one epoch (lr 5e-5, batch 32).

Both run in this process, one after the other, on the same 8,000 training examples (the nested seed-0 subset of
`sst2_strategies.py`), the same dev set (872) and the same seed:

1. **baseline**: plain ``Trainer``, full fine-tuning, lr 5e-5, batch 32, one epoch, linear schedule with 10 % warm-up,
   max length 64, dynamic padding. Its training wall time and final dev accuracy (the target) are recorded.
2. **toolkit** (defaults): ``TransferTrainer``, all blocks trainable (``--top-k N`` freezes all but the top N),
   LLRD 0.9 from a head lr of 2e-4, length-grouped batches (``train_sampling_strategy="group_by_length"``: less
   padding), the same one-epoch schedule, and an evaluation on the dev set (the same sentences, sorted by length)
   every 50 steps that stops training as soon as the dev accuracy reaches the baseline's. Its wall time includes
   those evaluations. ``--target ACC`` skips the baseline (for trying recipes).

Target: toolkit time <= 0.5 x baseline time.

    python benchmarks/time_to_accuracy.py           # full (~6 min on an idle 2-core CPU)
    python benchmarks/time_to_accuracy.py --small   # smoke: 64 examples, docs untouched
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import markdown_table, update_docs_section, write_result, yes_no  # noqa: E402
from sst2_strategies import BATCH, build, load_sst2  # noqa: E402


def _stop_at(target: float, log: list):
    from transformers import TrainerCallback

    class StopAtTarget(TrainerCallback):
        def __init__(self):
            self.t0 = None

        def on_train_begin(self, args, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_evaluate(self, args, state, control, metrics=None, **kw):
            acc = (metrics or {}).get("eval_accuracy")
            log.append({"step": state.global_step, "eval_accuracy": acc,
                        "elapsed_s": round(time.perf_counter() - self.t0, 1)})
            if acc is not None and acc >= target:
                control.should_training_stop = True

    return StopAtTarget()


def accuracy_table(n: int, base_s: float, target: float, tk_s: float, steps: int, final: float,
                   batch: int = BATCH) -> str:
    """The docs table: plain Trainer's epoch (which sets the target) against the toolkit run stopped at it."""
    return markdown_table(["run", "wall time (s)", "steps", "dev accuracy"], [
        ["plain Trainer, full fine-tuning, 1 epoch", f"{base_s:.0f}", -(-n // batch), f"{target:.4f}"],
        ["tl_hf fast recipe, stopped at the target", f"{tk_s:.0f}", steps, f"{final:.4f}"]])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--small", action="store_true")
    ap.add_argument("--n", type=int, default=8000)
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--top-k", type=int, default=0, help="trainable top blocks (0: all, i.e. no freezing)")
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--epochs", type=float, default=1.0, help="length of the toolkit's LR schedule, in epochs")
    ap.add_argument("--target", type=float, default=None, help="tuning only: skip the baseline, use this target")
    args = ap.parse_args(argv)
    if args.small:
        args.n, args.eval_every = 64, 1
    import transformers

    transformers.logging.set_verbosity_error()
    train, dev, tok = load_sst2(args.n)
    if args.small:
        dev = dev.select(range(64))
    # the same 872 dev sentences, sorted by length so that the toolkit's evaluation batches carry little padding
    dev_sorted = dev.select(sorted(range(len(dev)), key=lambda i: len(dev[i]["input_ids"])))
    with tempfile.TemporaryDirectory() as out:
        if args.target is None:
            base = build("plain", train, dev, tok, seed=0, epochs=1, out=out, lr=5e-5)
            t0 = time.perf_counter()
            base.train()
            base_s = time.perf_counter() - t0
            target = base.evaluate()["eval_accuracy"]
            print(f"baseline: {base_s:.1f} s, dev accuracy {target:.4f}", flush=True)
            del base
        else:
            target, base_s = args.target, float("nan")
        log: list = []
        freezing = {"policy": "top_k", "k": args.top_k} if args.top_k else None
        tk = build("llrd", train, dev_sorted, tok, seed=0, epochs=args.epochs, out=out, lr=args.lr,
                   freezing=freezing, callbacks=[_stop_at(target, log)],
                   extra_args={"eval_strategy": "steps", "eval_steps": args.eval_every,
                               "train_sampling_strategy": "group_by_length"})
        t0 = time.perf_counter()
        res = tk.train()
        tk_s = time.perf_counter() - t0
        final = log[-1]["eval_accuracy"] if log else tk.evaluate()["eval_accuracy"]
    reached = bool(log) and log[-1]["eval_accuracy"] >= target
    ratio = tk_s / base_s
    print(f"toolkit: {tk_s:.1f} s ({res.global_step} steps), dev accuracy {final:.4f}, reached={reached}, "
          f"ratio {ratio:.2f}", flush=True)
    if args.small or args.target is not None:
        return 0
    path = write_result("time_to_accuracy", {
        "settings": {"n_train": args.n, "eval_every": args.eval_every, "top_k": args.top_k, "batch": BATCH,
                     "max_length": 64, "baseline_lr": 5e-5, "toolkit_lr": args.lr, "llrd_decay": 0.9,
                     "toolkit_schedule_epochs": args.epochs, "dev": "same 872 sentences, sorted by length"},
        "baseline": {"train_s": round(base_s, 1), "dev_accuracy": target},
        "toolkit": {"train_s_incl_evals": round(tk_s, 1), "steps": res.global_step, "dev_accuracy": final,
                    "reached_target": reached, "eval_log": log},
        "ratio": ratio, "target_met": reached and ratio <= 0.5})
    met = yes_no(reached and ratio <= 0.5)
    md = ("## Time to accuracy on SST-2 (`benchmarks/time_to_accuracy.py`)\n\n"
          f"Target accuracy = what plain `transformers.Trainer` full fine-tuning reaches on {args.n:,} SST-2 training "
          "examples in one epoch (lr 5e-5, batch 32, max length 64), measured in the same run. Toolkit recipe: "
          + (f"top {args.top_k} of 6 blocks + head trainable, " if args.top_k else "all blocks trainable, ")
          + f"LLRD 0.9 from {args.lr:g}, a linear schedule over {args.epochs:g} epoch(s) of the same 8,000 examples, "
          f"length-grouped batches, dev evaluation (the same 872 sentences, sorted by length) every {args.eval_every} "
          "steps, counted in its time; it stops at the target.\n\n"
          + accuracy_table(args.n, base_s, target, tk_s, res.global_step, final) + "\n\n"
          f"Ratio {ratio:.2f} (target ≤ 0.5: {met}). Evaluations of the toolkit run: "
          + ", ".join(f"step {e['step']}: {e['eval_accuracy']:.4f}" for e in log)
          + f".\n\nRaw numbers: `{path.relative_to(path.parents[2])}`.")
    update_docs_section("time_to_accuracy", md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
