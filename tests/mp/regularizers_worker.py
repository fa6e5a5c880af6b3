"""2-process worker: Fisher estimation, replay memory, a regularized DDP training run, and LwF + EMA under DDP.

Run: python -m torch.distributed.run --nproc_per_node 2 tests/mp/regularizers_worker.py OUTDIR
Each rank writes OUTDIR/rank{R}.safetensors (Fisher estimates, final weights) and OUTDIR/rank{R}.json.
"""

import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tiny import TokenDataset, tiny_bert  # noqa: E402


def batches(ds, bs):
    for s in range(0, len(ds), bs):
        items = [ds[i] for i in range(s, min(s + bs, len(ds)))]
        yield {k: torch.stack([it[k] for it in items]) for k in items[0]}


CASES = [("empirical", True), ("exact", True), ("sampled", True), ("empirical", False), ("exact", False)]
#: the LwF + EMA run's TransferTrainer arguments (the test repeats the run in one process)
LWF_EMA = {"regularizers": [{"name": "lwf", "teacher": "pretrained", "weight": 1.0, "temperature": 2.0}],
           "averaging": {"method": "ema", "decay": 0.5, "final_average": False}}


def main(out: str) -> None:
    from safetensors.torch import save_file
    from transformers import TrainingArguments

    from tl_hf import TransferTrainer
    from tl_hf.regularizers import EWC, L2SP, Replay, estimate_fisher

    args = TrainingArguments(output_dir=os.path.join(out, "run"), use_cpu=True, ddp_backend="gloo", max_steps=3,
                             per_device_train_batch_size=4, learning_rate=1e-3, save_strategy="no",
                             report_to="none", seed=0, disable_tqdm=True, logging_steps=1)
    rank, world = args.process_index, args.world_size  # TrainingArguments initialised the process group
    assert torch.distributed.is_initialized() and world == 2
    tensors, meta = {}, {"rank": rank, "world_size": world}
    model = tiny_bert(num_labels=3, seed=0)
    data = TokenDataset(n=13, num_labels=3, seed=1)  # 13 examples: uneven shards
    for est, per_ex in CASES:
        f, n = estimate_fisher(model, batches(data, 4), estimator=est, per_example=per_ex, seed=7)
        meta[f"n_{est}_{per_ex}"] = n
        tensors.update({f"fisher/{est}/{per_ex}/{k}": v for k, v in f.items()})

    ewc = EWC(lambda_=100.0, num_samples=13)
    ewc.end_task(model, data)
    rep = Replay(budget=6, selection="class_balanced", mode="term", batch_size=3)
    rep.end_task(model, data, source="t1")
    meta["memory"] = [list(p) for p in rep.memory.provenance]
    trainer = TransferTrainer(model, args, train_dataset=TokenDataset(n=32, seed=2),
                              regularizers=[ewc, rep, L2SP(alpha=1.0)], llrd={"decay": 0.8})
    trainer.train()
    meta["groups"] = [[g["name"], g["depth"], g["initial_lr"], g["weight_decay"], len(g["params"])]
                      for g in trainer.optimizer.param_groups]
    meta["group_lr_logs"] = [{k: v for k, v in h.items() if k.startswith("lr/")} for h in trainer.state.log_history
                             if "lr/head" in h]
    meta["penalty_logged"] = [h.get("penalty/ewc") for h in trainer.state.log_history if "penalty/ewc" in h]
    tensors.update({f"final/{k}": v.detach().clone() for k, v in model.named_parameters()})

    # loss scaling under DDP: one SGD step on 2 x 4 examples must equal one step on 8 in one process
    sgd_args = TrainingArguments(output_dir=os.path.join(out, "sgd"), use_cpu=True, ddp_backend="gloo", max_steps=1,
                                 per_device_train_batch_size=4, learning_rate=1.0, optim="sgd",
                                 lr_scheduler_type="constant", max_grad_norm=0.0, train_sampling_strategy="sequential",
                                 save_strategy="no", report_to="none", seed=0, disable_tqdm=True, logging_steps=1)
    plain = tiny_bert(num_labels=2, seed=0)
    tr = TransferTrainer(plain, sgd_args, train_dataset=TokenDataset(n=8))
    tr.train()
    meta["sgd_loss"] = next(h["loss"] for h in tr.state.log_history if "loss" in h)
    tensors.update({f"sgd/{k}": v.detach().clone() for k, v in plain.named_parameters()})
    # LwF (pretrained teacher) + EMA under DDP: 2 SGD steps on 2 x 4 examples equal 2 steps on 8 in one process
    lwf_args = TrainingArguments(output_dir=os.path.join(out, "lwf_ema"), use_cpu=True, ddp_backend="gloo", max_steps=2,
                                 per_device_train_batch_size=4, learning_rate=0.5, optim="sgd",
                                 lr_scheduler_type="constant", max_grad_norm=0.0, train_sampling_strategy="sequential",
                                 save_strategy="no", report_to="none", seed=0, disable_tqdm=True, logging_steps=1)
    tr = TransferTrainer(tiny_bert(num_labels=2, seed=0), lwf_args, train_dataset=TokenDataset(n=16), **LWF_EMA)
    tr.train()
    meta["lwf_losses"] = [h["lwf/loss"] for h in tr.state.log_history if "lwf/loss" in h]
    tensors.update({f"lwf/{k}": v.detach().clone() for k, v in tr.model.named_parameters()})
    tensors.update({f"ema/{k}": v.clone() for k, v in tr.averager.shadow.items()})
    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(out, f"rank{rank}.safetensors"))
    Path(out, f"rank{rank}.json").write_text(json.dumps(meta))


if __name__ == "__main__":
    main(sys.argv[1])
