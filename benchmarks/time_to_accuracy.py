"""Time to accuracy on SST-2: how long the toolkit's fast recipe needs to reach the dev accuracy that plain
``transformers.Trainer`` full fine-tuning reaches on 8,000 examples in one epoch (lr 5e-5, batch 32).

Both run in this process, one after the other, on the same 8,000 training examples (the nested seed-0 subset of
`sst2_strategies.py`), the same dev set (872) and the same seed:

1. **baseline**: plain ``Trainer``, full fine-tuning, lr 5e-5, batch 32, one epoch, linear schedule with 10 % warm-up,
   max length 64, dynamic padding. Its training wall time and final dev accuracy (the target) are recorded.
2. **toolkit** (defaults): ``TransferTrainer``, the embeddings frozen and all 6 blocks trainable (``--freeze REGEX``
   freezes the parameters it matches, ``--freeze ''`` none; ``--top-k N`` trains only the top N blocks), the head
   reading the mean pooling all-MiniLM-L6-v2 was trained with (``--pooling cls``: the [CLS] pooler, as before
   issue 12), LLRD 0.9 from a head lr of 2e-4, length-grouped batches
   (``train_sampling_strategy="group_by_length"``: less padding), the same one-epoch schedule, and an evaluation on
   the dev set (the same sentences, sorted by length) every 50 steps that stops training as soon as the dev accuracy
   reaches the baseline's. Its wall time includes those evaluations. ``--target ACC`` skips the baseline (for trying
   recipes); ``--lr``, ``--batch``, ``--epochs``, ``--freeze``, ``--top-k`` and ``--pooling`` change the toolkit's
   recipe. Frozen embeddings make each step cheaper: the word embeddings are half of MiniLM's 22.7 M parameters, and
   their dense gradient and AdamW update go.

``--bf16`` runs the toolkit's recipe in bf16 autocast (on CPUs with AVX512-BF16 or AMX its matmuls run about twice as
fast) and also times the plain Trainer's epoch in bf16, so that the like-for-like ratio is printed next to the ratio
against the fp32 default; its results go to ``time_to_accuracy_bf16``.

Target: toolkit time <= 0.33 x baseline time (``TARGET``; it was 0.5 before issue 12).

    python benchmarks/time_to_accuracy.py           # full (~6-11 min on a 2-core CPU)
    python benchmarks/time_to_accuracy.py --bf16    # the same in bf16 autocast (~7 min)
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


TARGET = 0.33  # toolkit time / plain Trainer time


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
                        "elapsed_s": round(time.perf_counter() - self.t0, 1),
                        "eval_s": (metrics or {}).get("eval_runtime")})
            if acc is not None and acc >= target:
                control.should_training_stop = True

    return StopAtTarget()


def _pooling(mode: str):
    """``prepare_model`` for the toolkit run: mean pooling (the pooling all-MiniLM-L6-v2 was trained with) or none."""
    if mode == "cls":
        return None
    from tl_hf.core.pooling import apply_mean_pooling

    return apply_mean_pooling


def accuracy_table(n: int, runs: list[tuple[str, float, int, float]]) -> str:
    """The docs table: one row per run, ``(name, wall s, steps, dev accuracy)``."""
    return markdown_table(["run", "wall time (s)", "steps", "dev accuracy"],
                          [[name, f"{s:.0f}", steps, f"{acc:.4f}"] for name, s, steps, acc in runs])


def _parse(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--small", action="store_true")
    ap.add_argument("--n", type=int, default=8000)
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--top-k", type=int, default=0, help="trainable top blocks (0: all, i.e. no freezing)")
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--batch", type=int, default=BATCH, help="the toolkit run's training batch size")
    ap.add_argument("--freeze", default="embeddings", metavar="REGEX",
                    help="freeze the parameters whose names match (freezing policy 'patterns'; '' freezes nothing; "
                         "--top-k replaces it)")
    ap.add_argument("--epochs", type=float, default=1.0, help="length of the toolkit's LR schedule, in epochs")
    ap.add_argument("--pooling", choices=("cls", "mean"), default="mean",
                    help="what the toolkit's head reads: the [CLS] pooler or the backbone's own mean pooling")
    ap.add_argument("--bf16", action="store_true",
                    help="the toolkit run in bf16 autocast (TrainingArguments.bf16; CPUs with AVX512-BF16 or AMX run "
                         "its matmuls about 2x faster); the fp32 baseline sets the target, and a bf16 plain Trainer "
                         "is timed too, for the like-for-like ratio. Results go to time_to_accuracy_bf16")
    ap.add_argument("--target", type=float, default=None, help="tuning only: skip the baseline, use this target")
    args = ap.parse_args(argv)
    if args.small:
        args.n, args.eval_every = 64, 1
    return args


def _plain(train, dev, tok, out: str, bf16: bool) -> tuple[float, float]:
    """The plain Trainer's epoch: (training wall s, final dev accuracy)."""
    base = build("plain", train, dev, tok, seed=0, epochs=1, out=out, lr=5e-5, extra_args={"bf16": bf16})
    t0 = time.perf_counter()
    base.train()
    secs = time.perf_counter() - t0
    acc = base.evaluate()["eval_accuracy"]
    print(f"baseline{' bf16' if bf16 else ''}: {secs:.1f} s, dev accuracy {acc:.4f}", flush=True)
    return secs, acc


def _toolkit(args, train, dev_sorted, tok, out: str, target: float):
    """The toolkit's recipe, stopped at ``target``: (wall s incl. evaluations, steps, final accuracy, eval log)."""
    log: list = []
    freezing = {"policy": "patterns", "exclude": [args.freeze]} if args.freeze else None
    if args.top_k:
        freezing = {"policy": "top_k", "k": args.top_k}
    tk = build("llrd", train, dev_sorted, tok, seed=0, epochs=args.epochs, out=out, lr=args.lr,
               freezing=freezing, callbacks=[_stop_at(target, log)], prepare_model=_pooling(args.pooling),
               extra_args={"eval_strategy": "steps", "eval_steps": args.eval_every,
                           "per_device_train_batch_size": args.batch, "bf16": args.bf16,
                           "train_sampling_strategy": "group_by_length"})
    t0 = time.perf_counter()
    res = tk.train()
    tk_s = time.perf_counter() - t0
    final = log[-1]["eval_accuracy"] if log else tk.evaluate()["eval_accuracy"]
    return tk_s, res.global_step, final, log


def _recipe_text(args) -> str:
    return ((f"top {args.top_k} of 6 blocks + head trainable, " if args.top_k
             else f"parameters matching `{args.freeze}` frozen, the rest trainable, " if args.freeze
             else "all blocks trainable, ")
            + ("mean pooling of the last hidden states (the backbone's own pooling), " if args.pooling == "mean"
               else "the [CLS] pooler, ")
            + ("bf16 autocast, " if args.bf16 else "")
            + f"LLRD 0.9 from {args.lr:g}, batch {args.batch}, a linear schedule over {args.epochs:g} epoch(s) of the "
            f"same {args.n:,} examples, length-grouped batches, dev evaluation (the same 872 sentences, sorted by "
            f"length) every {args.eval_every} steps, counted in its time; it stops at the target.")


def main(argv=None) -> int:
    args = _parse(argv)
    import transformers

    transformers.logging.set_verbosity_error()
    train, dev, tok = load_sst2(args.n)
    if args.small:
        dev = dev.select(range(64))
    # the same 872 dev sentences, sorted by length so that the toolkit's evaluation batches carry little padding
    dev_sorted = dev.select(sorted(range(len(dev)), key=lambda i: len(dev[i]["input_ids"])))
    with tempfile.TemporaryDirectory() as out:
        if args.target is None:
            base_s, target = _plain(train, dev, tok, out, bf16=False)
        else:
            target, base_s = args.target, float("nan")
        bf_s, bf_acc = _plain(train, dev, tok, out, bf16=True) if args.bf16 and args.target is None else (None, None)
        tk_s, steps, final, log = _toolkit(args, train, dev_sorted, tok, out, target)
    reached = bool(log) and log[-1]["eval_accuracy"] >= target
    ratio = tk_s / base_s
    print(f"toolkit: {tk_s:.1f} s ({steps} steps), dev accuracy {final:.4f}, reached={reached}, "
          f"ratio {ratio:.2f}", flush=True)
    if args.small or args.target is not None:
        return 0
    name = "time_to_accuracy_bf16" if args.bf16 else "time_to_accuracy"
    path = write_result(name, {
        "settings": {"n_train": args.n, "eval_every": args.eval_every, "top_k": args.top_k,
                     "frozen": None if args.top_k else (args.freeze or None), "toolkit_bf16": args.bf16,
                     "batch": BATCH, "toolkit_batch": args.batch, "max_length": 64, "baseline_lr": 5e-5,
                     "toolkit_lr": args.lr, "llrd_decay": 0.9, "pooling": args.pooling,
                     "toolkit_schedule_epochs": args.epochs, "dev": "same 872 sentences, sorted by length"},
        "baseline": {"train_s": round(base_s, 1), "dev_accuracy": target},
        **({"baseline_bf16": {"train_s": round(bf_s, 1), "dev_accuracy": bf_acc,
                              "toolkit_ratio": tk_s / bf_s}} if args.bf16 else {}),
        "toolkit": {"train_s_incl_evals": round(tk_s, 1), "steps": steps, "dev_accuracy": final,
                    "reached_target": reached, "eval_log": log},
        "ratio": ratio, "target": TARGET, "target_met": reached and ratio <= TARGET})
    epoch_steps = -(-args.n // BATCH)
    runs = [("plain Trainer, full fine-tuning, 1 epoch (fp32: sets the target)", base_s, epoch_steps, target)]
    if args.bf16:
        runs.append(("plain Trainer, the same epoch in bf16", bf_s, epoch_steps, bf_acc))
    runs.append(("tl_hf fast recipe, stopped at the target", tk_s, steps, final))
    like = f" Against the plain Trainer in bf16 too: {tk_s / bf_s:.2f}." if args.bf16 else ""
    md = (f"## Time to accuracy on SST-2{' in bf16' if args.bf16 else ''} (`benchmarks/time_to_accuracy.py"
          f"{' --bf16' if args.bf16 else ''}`)\n\n"
          f"Target accuracy = what plain `transformers.Trainer` full fine-tuning reaches on {args.n:,} SST-2 training "
          "examples in one epoch (lr 5e-5, batch 32, max length 64, fp32), measured in the same run. Toolkit recipe: "
          + _recipe_text(args) + "\n\n" + accuracy_table(args.n, runs) + "\n\n"
          f"Ratio {ratio:.2f} against the fp32 plain Trainer (target ≤ {TARGET}: {yes_no(reached and ratio <= TARGET)})."
          + like + " Evaluations of the toolkit run: "
          + ", ".join(f"step {e['step']}: {e['eval_accuracy']:.4f}" for e in log)
          + f".\n\nRaw numbers: `{path.relative_to(path.parents[2])}`.")
    update_docs_section(name, md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
