"""2-process FSDP2 worker: TransferTrainer on a tiny BERT and a tiny ViT sharded with ``fully_shard`` (gloo, CPU).

Run: python -m torch.distributed.run --nproc_per_node 2 tests/mp/fsdp2_worker.py OUTDIR [main | crash | resume]

Which layer: Accelerate enables FSDP only for GPU processes; on CPU it silently builds a DDP (MULTI_CPU) state and
ignores the FSDP plugin (tl_hf refuses that, :func:`tl_hf.core.fsdp.check_fsdp`). So the worker goes one layer down:
:func:`enable_cpu_fsdp` lets Accelerate's own FSDP state stand on CPU (``distributed_type = FSDP`` with the plugin
the Trainer built from ``TrainingArguments(fsdp=True, fsdp_config={"version": 2, ...})``). Everything after that is
the real path: the Trainer's ``accelerator.prepare`` runs Accelerate's ``fsdp2_prepare_model`` (``fully_shard`` per
``BertLayer`` / ``ViTLayer`` and the root), its FSDP2 optimizer / checkpoint / full-state-dict code, and TransferTrainer
unchanged. The scenarios are plain functions, so the test runs the same ones in one process (no FSDP) as reference.

Each rank writes OUTDIR/<mode>/rank{R}.safetensors (gathered full weights, Fisher, ...) and rank{R}.json.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tiny import TokenDataset, tiny_bert, tiny_model

GRADUAL = {"policy": "gradual", "schedule": {"unit": "step", "phases": [{"start": 0, "depths": 1},
                                                                        {"start": 2, "depths": 2}]}}


def enable_cpu_fsdp() -> None:
    """Keep Accelerate's FSDP state on CPU processes (it would fall back to DDP): the test-only step described above."""
    import accelerate
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType

    orig = accelerate.Accelerator.__init__

    def init(self, *a, fsdp_plugin=None, **kw):
        orig(self, *a, fsdp_plugin=fsdp_plugin, **kw)
        if fsdp_plugin is not None and self.state.distributed_type == DistributedType.MULTI_CPU:
            self.state.distributed_type = DistributedType.FSDP
            self.state.fsdp_plugin = fsdp_plugin
            PartialState._shared_state["distributed_type"] = DistributedType.FSDP  # AcceleratorState() re-reads it

    accelerate.Accelerator.__init__ = init


class PixelDataset(torch.utils.data.Dataset):
    def __init__(self, n: int = 32, num_labels: int = 3, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 3, 16, 16, generator=g)
        self.y = (self.x[:, 0, 0, 0] > 0).long() + (self.x[:, 1, 0, 0] > 0).long()

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return {"pixel_values": self.x[i], "labels": self.y[i]}


def args(out: str, name: str, fsdp: bool, layer: str = "BertLayer", **kw):
    from transformers import TrainingArguments

    base = dict(  # noqa: C408
        output_dir=os.path.join(out, name), use_cpu=True, max_steps=4, per_device_train_batch_size=4 if fsdp
                else 8, optim="sgd", learning_rate=0.5, lr_scheduler_type="constant", max_grad_norm=0.0,
                train_sampling_strategy="sequential", save_strategy="no", report_to="none", seed=0,
                disable_tqdm=True, logging_steps=1, dataloader_num_workers=0)
    if fsdp:
        base.update(ddp_backend="gloo", fsdp=True, fsdp_config={
            "version": 2, "transformer_layer_cls_to_wrap": [layer], "state_dict_type": "FULL_STATE_DICT"})
    base.update(kw)
    return TrainingArguments(**base)


def full(model) -> dict[str, torch.Tensor]:
    from tl_hf.core.fsdp import full_state_dict

    return {k: v.detach().clone().contiguous() for k, v in full_state_dict(model).items()}


def reg_tensors(regs, tag: str) -> dict[str, torch.Tensor]:
    from tl_hf.core.fsdp import full_state

    out = {}
    with full_state(regs):
        for r in regs:
            tensors, _ = r.state_dict()
            out.update({f"{tag}/{r.name}/{k}": v.detach().clone().contiguous() for k, v in tensors.items()})
    return out


def trainer_record(tr) -> dict:
    return {"groups": [[g["name"], g["depth"], g["initial_lr"], len(g["params"])] for g in tr.optimizer.param_groups],
            "lr_logs": [{k: v for k, v in h.items() if k.startswith("lr/")} for h in tr.state.log_history
                        if "lr/head" in h],
            "trainable": [h["trainable_params"] for h in tr.state.log_history if "trainable_params" in h],
            "loss": [h["loss"] for h in tr.state.log_history if "loss" in h],
            "penalty": {k: [h[k] for h in tr.state.log_history if k in h] for k in ("penalty/ewc", "penalty/l2sp")}}


def bert_llrd_gradual(out: str, fsdp: bool):
    from tl_hf import TransferTrainer

    model = tiny_bert(num_layers=2, num_labels=3, seed=0)
    tensors = {f"init/{k}": v.clone() for k, v in model.state_dict().items()}
    tr = TransferTrainer(model, args(out, "bert_gradual", fsdp), train_dataset=TokenDataset(n=32, num_labels=3),
                         llrd={"decay": 0.8}, freezing=GRADUAL)
    tr.train()
    tensors.update({f"final/{k}": v for k, v in full(tr.model).items()})
    return {**trainer_record(tr), "dtensor": type(next(tr.model.parameters())).__name__}, tensors


def vit_topk_online_ewc(out: str, fsdp: bool):
    from tl_hf import TransferTrainer
    from tl_hf.regularizers import OnlineEWC

    model = tiny_model("vit", num_labels=3, seed=0)
    tensors = {f"init/{k}": v.clone() for k, v in model.state_dict().items()}
    tr = TransferTrainer(model, args(out, "vit_topk", fsdp, layer="ViTLayer", max_steps=3),
                         train_dataset=PixelDataset(32), llrd={"decay": 0.7}, freezing={"policy": "top_k", "k": 1})
    tr.train()
    tensors.update({f"final/{k}": v for k, v in full(tr.model).items()})
    ewc = OnlineEWC(lambda_=10.0, gamma=0.5, num_samples=13, batch_size=4)
    tr.regularizers = [ewc]
    tr.end_task(PixelDataset(13, seed=5))  # 13 examples: uneven shares of the ranks
    tr.end_task(PixelDataset(13, seed=6))
    tensors.update(reg_tensors([ewc], "fisher"))
    return trainer_record(tr), tensors


def bert_ewc_l2sp(out: str, fsdp: bool):
    from tl_hf import TransferTrainer
    from tl_hf.regularizers import DER, EWC, L2SP, Replay
    from tl_hf.regularizers.der import LOGITS_KEY

    model = tiny_bert(num_layers=2, num_labels=3, seed=0)
    first = TransferTrainer(model, args(out, "task1", fsdp, max_steps=2),
                            train_dataset=TokenDataset(n=32, num_labels=3))
    first.train()
    ewc, l2sp = EWC(lambda_=30.0, num_samples=13, batch_size=4), L2SP(alpha=2.0)
    rep, der = Replay(budget=6, selection="class_balanced", mode="term", batch_size=3), DER(budget=5, alpha=0.5)
    first.regularizers = [ewc, rep, der]
    first.end_task(TokenDataset(n=13, num_labels=3, seed=5), source="t1")
    tensors = reg_tensors([ewc], "fisher")
    meta = {"replay": [list(p) for p in rep.memory.provenance], "der": [list(p) for p in der.memory.provenance]}
    tensors.update({f"der/{i}": ex[LOGITS_KEY].clone() for i, ex in enumerate(der.memory.examples)})
    tr = TransferTrainer(model, args(out, "task2", fsdp, max_steps=3, learning_rate=0.05),
                         train_dataset=TokenDataset(n=32, seed=3, num_labels=3),
                         regularizers=[ewc, l2sp], llrd={"decay": 0.8})
    tr.train()
    tensors.update({f"final/{k}": v for k, v in full(tr.model).items()})
    return {**meta, **trainer_record(tr)}, tensors


def resume_trainer(out: str, run: str, fsdp: bool, fresh: bool, kill_at: int | None = None):
    """BERT + gradual unfreezing + EWC + L2-SP, 6 steps, checkpoints every 3; ``fresh``: regularizers without state."""
    from transformers import TrainerCallback

    from tl_hf import TransferTrainer
    from tl_hf.regularizers import EWC, L2SP

    model = tiny_bert(num_layers=2, num_labels=3, seed=0)
    ewc, l2sp = EWC(lambda_=300.0, num_samples=8, batch_size=4), L2SP(alpha=2.0)
    cbs = []
    if kill_at is not None:
        class Kill(TrainerCallback):
            def on_save(self, a, state, control, **kw):
                if state.global_step == kill_at:
                    os.kill(os.getpid(), signal.SIGKILL)
        cbs.append(Kill())
    # AdamW: torch cannot load a full optimizer state dict with no tensors in it (plain SGD) into FSDP2
    tr = TransferTrainer(model, args(out, run, fsdp, max_steps=6, save_strategy="steps", save_steps=3,
                                     optim="adamw_torch", learning_rate=1e-2,
                                     restore_callback_states_from_checkpoint=True),
                         train_dataset=TokenDataset(n=48, seed=3, num_labels=3), regularizers=[ewc, l2sp],
                         freezing={"policy": "gradual", "schedule": {"unit": "step", "phases": [
                             {"start": 0, "depths": 1}, {"start": 4, "depths": 3}]}}, callbacks=cbs)
    if not fresh:
        tr.end_task(TokenDataset(n=8, num_labels=3, seed=5))
    return tr


def run_resume(out: str, run: str, fsdp: bool, mode: str):
    tr = resume_trainer(out, run, fsdp, fresh=mode == "resume", kill_at=3 if mode == "crash" else None)
    tr.train(resume_from_checkpoint=True if mode == "resume" else None)
    tensors = {f"final/{k}": v for k, v in full(tr.model).items()}
    tensors.update(reg_tensors(tr.regularizers, "state"))
    tr.save_model(os.path.join(out, run, "saved"))
    return {"phase": tr.freezer.phase, **trainer_record(tr)}, tensors


def main(out: str, mode: str) -> None:
    from safetensors.torch import save_file

    enable_cpu_fsdp()
    rank = int(os.environ["RANK"])
    meta, tensors = {"rank": rank}, {}
    if mode == "main":
        for name, fn in [("bert", bert_llrd_gradual), ("vit", vit_topk_online_ewc), ("ewc", bert_ewc_l2sp)]:
            m, t = fn(out, True)
            meta[name] = m
            tensors.update({f"{name}/{k}": v for k, v in t.items()})
        m, t = run_resume(out, "uninterrupted", True, "plain")
    else:
        m, t = run_resume(out, "crashed", True, mode)
    meta["resume"] = m
    tensors.update({f"resume/{k}": v for k, v in t.items()})
    folder = Path(out, mode)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / f"rank{rank}.safetensors"))
    (folder / f"rank{rank}.json").write_text(json.dumps(meta))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "main")
