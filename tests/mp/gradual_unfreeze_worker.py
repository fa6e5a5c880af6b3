"""Worker for ``tests/test_multiprocess.py``: gradual unfreezing under 2-process DDP (CPU, gloo).

Run as::

    python -m torch.distributed.run --nproc_per_node 2 --master_port PORT tests/mp/gradual_unfreeze_worker.py OUTDIR

Each rank trains a tiny 2-block BERT for 8 optimizer steps with ``TransferTrainer`` and a step-based gradual schedule:
only the head (classifier + pooler) trains in steps 1-4, the top block ``bert.encoder.layer.1`` (depth 2) also trains
from step 5 on. Every rank writes (no pickle):

* ``OUTDIR/rank{R}.safetensors`` -- ``init/<name>`` (every parameter at ``on_train_begin``), ``step{S}/<name>`` (the
  top block's parameters at ``on_step_end`` of step ``S``) and ``final/<name>`` (the final state dict);
* ``OUTDIR/rank{R}.json`` -- world size, the DDP wrapper class, the parameters that required grad during each step,
  a hash of the initial top block.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys

_TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)  # for tiny.py
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import TrainerCallback, TrainingArguments  # noqa: E402

from tiny import TokenDataset, tiny_bert  # noqa: E402
from tl_hf import TransferTrainer  # noqa: E402

TOP_BLOCK = "bert.encoder.layer.1."
MAX_STEPS = 8
UNFREEZE_AT = 4  # global_step at whose end the top block is unfrozen -> it trains from step 5 on


class Recorder(TrainerCallback):
    """Snapshots the weights; gets the unwrapped model (``trainer.model``) from the Trainer's callback kwargs."""

    def __init__(self) -> None:
        self.init: dict[str, torch.Tensor] = {}
        self.steps: dict[int, dict[str, torch.Tensor]] = {}
        self.trainable: dict[int, list[str]] = {}

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.init = {n: p.detach().clone() for n, p in model.named_parameters()}

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        # requires_grad only changes in on_step_end, so this is the set in force during step global_step + 1
        self.trainable[state.global_step + 1] = sorted(n for n, p in model.named_parameters() if p.requires_grad)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.steps[state.global_step] = {n: p.detach().clone() for n, p in model.named_parameters()
                                         if n.startswith(TOP_BLOCK)}


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for n in sorted(tensors):
        h.update(n.encode())
        h.update(tensors[n].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def main(outdir: str) -> None:
    os.makedirs(outdir, exist_ok=True)
    model = tiny_bert(num_layers=2, seed=0)
    recorder = Recorder()
    args = TrainingArguments(
        output_dir=os.path.join(outdir, "trainer_output"),
        use_cpu=True,
        ddp_backend="gloo",
        max_steps=MAX_STEPS,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        weight_decay=0.01,  # AdamW decays every param with a .grad: catches "freezing" by zeroing grads
        save_strategy="no",
        report_to="none",
        seed=0,
        logging_steps=1,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    trainer = TransferTrainer(
        model,
        args,
        train_dataset=TokenDataset(n=64),
        callbacks=[recorder],
        freezing={"policy": "gradual",
                  "schedule": {"unit": "step", "phases": [{"start": 0, "depths": 0},
                                                          {"start": UNFREEZE_AT, "depths": 1}]}},
    )
    result = trainer.train()

    rank = args.process_index
    tensors: dict[str, torch.Tensor] = {}
    for n, t in recorder.init.items():
        tensors[f"init/{n}"] = t
    for step, snap in recorder.steps.items():
        for n, t in snap.items():
            tensors[f"step{step}/{n}"] = t
    for n, t in trainer.model.state_dict().items():
        tensors[f"final/{n}"] = t.detach().clone()  # clone: safetensors refuses shared storage
    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(outdir, f"rank{rank}.safetensors"))

    meta = {
        "rank": rank,
        "world_size": args.world_size,
        "dist_world_size": dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1,
        "wrapped": type(trainer.model_wrapped).__name__,
        "global_step": trainer.state.global_step,
        "steps_recorded": sorted(recorder.steps),
        "trainable_during_step": {str(k): v for k, v in sorted(recorder.trainable.items())},
        "init_top_block_sha256": _digest({n: t for n, t in recorder.init.items() if n.startswith(TOP_BLOCK)}),
        "train_loss": result.training_loss,
    }
    with open(os.path.join(outdir, f"rank{rank}.json"), "w") as f:
        json.dump(meta, f, indent=1)
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} OUTDIR")
    main(sys.argv[1])
