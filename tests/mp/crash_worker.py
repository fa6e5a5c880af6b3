"""Single-process worker for the crash/resume tests: trains a tiny BERT with TransferTrainer and can SIGKILL itself.

Run: python tests/mp/crash_worker.py CONFIG RUN_DIR [--max-steps N] [--save-steps k]
                                     [--kill-after-checkpoint K] [--resume [CHECKPOINT]]

CONFIG is one of ``CONFIGS``, or several joined by commas (one process, each config in RUN_DIR/<config>; used for the
uninterrupted references, without --kill-after-checkpoint or --resume). Checkpoints go to RUN_DIR; at the end the worker writes RUN_DIR/final.safetensors (every
named parameter) and RUN_DIR/logs.json (the log_history entries that carry a training ``loss``).

``--kill-after-checkpoint K`` sends SIGKILL to this process from ``on_save`` of checkpoint-K, which the Trainer calls
after ``_save_checkpoint`` returned, i.e. after TransferTrainer wrote its regularizer files and tl_hf_state.json (the
worker checks that they are there before killing itself; if not it exits with status 3).

``--resume`` (a fresh process): the model is rebuilt from its seed and the regularizers are built empty, with no
``end_task``; all their state must come from the checkpoint. Without a value it resumes from the newest checkpoint in
RUN_DIR (``resume_from_checkpoint=True``); with one, from that checkpoint folder.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tiny import TagDataset, TokenDataset, tag_collator, tiny_bert, tiny_token_bert, training_args

torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

#: phase changes at steps 2 and 6 straddle checkpoint-3 (and 6); the 4-step re-warm of layer.1 spans step 3
GRADUAL = {"policy": "gradual", "schedule": {"unit": "step", "rewarm_steps": 4,
                                             "phases": [{"start": 0, "depths": 0}, {"start": 2, "depths": 1},
                                                        {"start": 6, "depths": 3}]}}

CONFIGS = ("gradual", "ewc", "online_ewc", "replay_term", "replay_interleave", "lora", "token")


def _regularizers(config: str, model, fresh: bool) -> list:
    """The regularizers for ``config``; ``fresh`` builds them with no state (a resumed process)."""
    from tl_hf.regularizers import EWC, OnlineEWC, Replay

    if config == "ewc":
        reg = EWC(lambda_=100.0, num_samples=16)
        tasks = [TokenDataset(n=16, seed=5)]
    elif config == "online_ewc":
        reg = OnlineEWC(lambda_=100.0, gamma=0.7, num_samples=16)
        tasks = [TokenDataset(n=16, seed=5), TokenDataset(n=16, seed=6)]  # two earlier tasks: gamma is used
    elif config == "replay_term":
        reg = Replay(budget=8, mode="term", batch_size=4)
        tasks = [TokenDataset(n=16, seed=5)]
    elif config == "replay_interleave":
        reg = Replay(budget=8, mode="interleave", ratio=0.25)
        tasks = [TokenDataset(n=16, seed=5)]
    elif config == "token":  # token classification: EWC over the per-sentence token loss (-100 ignored)
        reg = EWC(lambda_=100.0, num_samples=16)
        tasks = [TagDataset(n=16, seed=5)]
    else:
        return []
    if not fresh:
        for data in tasks:
            reg.end_task(model, data, **({"collate_fn": tag_collator()} if config == "token" else {}))
    return [reg]


class KillAfterCheckpoint:
    """SIGKILL this process once checkpoint-K (with tl_hf's extra state) is on disk."""

    def __init__(self, k: int, run_dir: str, expected: list[str]) -> None:
        from transformers import TrainerCallback

        outer = self

        class _CB(TrainerCallback):
            def on_save(self, args, state, control, **kwargs):
                if state.global_step == outer.k:
                    outer.kill()

        self.k, self.run_dir, self.expected = k, run_dir, expected
        self.callback = _CB()

    def kill(self) -> None:
        folder = Path(self.run_dir, f"checkpoint-{self.k}")
        missing = [f for f in self.expected if not (folder / f).exists()]
        if missing:
            print(f"on_save of checkpoint-{self.k}: {missing} not on disk yet", file=sys.stderr, flush=True)
            os._exit(3)
        sys.stdout.flush()
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)


def main(argv=None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("config")
    p.add_argument("run_dir")
    p.add_argument("--max-steps", type=int, default=9)
    p.add_argument("--save-steps", type=int, default=3)
    p.add_argument("--kill-after-checkpoint", type=int, default=None)
    p.add_argument("--resume", nargs="?", const=True, default=None)
    a = p.parse_args(argv)
    configs = a.config.split(",")
    if unknown := [c for c in configs if c not in CONFIGS]:
        p.error(f"unknown config(s) {unknown}; choose from {CONFIGS}")
    if len(configs) > 1:
        if a.kill_after_checkpoint is not None or a.resume is not None:
            p.error("several configs only for uninterrupted runs")
        for c in configs:
            run(c, os.path.join(a.run_dir, c), a)
    else:
        run(configs[0], a.run_dir, a)


def run(config: str, run_dir: str, a) -> None:
    from safetensors.torch import save_file

    from tl_hf import TransferTrainer
    from tl_hf.core.state import STATE_FILE

    model = tiny_token_bert(seed=0, dropout=True) if config == "token" else tiny_bert(seed=0, dropout=True)
    kw: dict = {}
    if config == "gradual":
        kw = {"llrd": {"decay": 0.7}, "freezing": GRADUAL}
    elif config == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=2, target_modules=["query", "value"], task_type="SEQ_CLS"))
    else:
        kw = {"llrd": {"decay": 0.8}}
    regs = _regularizers(config, model, fresh=a.resume is not None)
    args = training_args(run_dir, max_steps=a.max_steps, save_strategy="steps", save_steps=a.save_steps,
                         weight_decay=0.01, warmup_steps=2, per_device_train_batch_size=4,
                         learning_rate=1e-2 if config == "lora" else 1e-3)
    if config == "token":  # variable-length tagged sentences, padded per batch
        kw["train_dataset"], kw["data_collator"] = TagDataset(n=40), tag_collator()
    else:
        kw["train_dataset"] = TokenDataset(n=40)
    tr = TransferTrainer(model, args, regularizers=regs, **kw)
    if a.kill_after_checkpoint is not None:
        expected = [STATE_FILE, "trainer_state.json"] + [f"tl_hf_reg_{r.name}.json" for r in regs]
        tr.add_callback(KillAfterCheckpoint(a.kill_after_checkpoint, run_dir, expected).callback)
    tr.train(resume_from_checkpoint=a.resume)

    out = Path(run_dir)
    save_file({n: p.detach().contiguous().cpu() for n, p in model.named_parameters()}, str(out / "final.safetensors"))
    logs = [h for h in tr.state.log_history if "loss" in h]
    meta = {"logs": logs, "phase": tr.freezer.phase,
            "reg_state": {r.name: sorted(r.state_dict()[0]) for r in regs}}
    (out / "logs.json").write_text(json.dumps(meta))


if __name__ == "__main__":
    main()
