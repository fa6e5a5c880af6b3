"""Worker for ``tests/test_multiprocess_reinit.py``: re-initialised top block under 2-process DDP (CPU, gloo).

Every rank starts from the same tiny 2-block BERT but from a *different* global RNG state (``torch.manual_seed(rank)``
right before the trainer is built), builds a ``TransferTrainer`` with ``reinit={"top_k": 1, "seed": 5}`` and trains 2
steps. It writes ``OUTDIR/rank{R}.safetensors``: ``pre/<name>`` (the top block before the trainer), ``reinit/<name>``
(right after the trainer was built), ``final/<name>`` (after training).
"""

from __future__ import annotations

import os
import sys

_TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)  # for tiny.py
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import TrainingArguments  # noqa: E402

from tiny import TokenDataset, tiny_bert  # noqa: E402
from tl_hf import TransferTrainer  # noqa: E402

TOP = "bert.encoder.layer.1."


def main(outdir: str) -> None:
    rank = int(os.environ["RANK"])
    model = tiny_bert(num_layers=2, num_labels=2, seed=0)
    pre = {f"pre/{n}": p.detach().clone() for n, p in model.named_parameters() if n.startswith(TOP)}
    args = TrainingArguments(output_dir=os.path.join(outdir, "run"), max_steps=2, per_device_train_batch_size=4,
                             learning_rate=1e-2, report_to="none", use_cpu=True, save_strategy="no",
                             disable_tqdm=True, seed=0, ddp_backend="gloo")
    torch.manual_seed(rank)  # the ranks' global RNG streams differ: the re-init must not depend on them
    trainer = TransferTrainer(model, args, train_dataset=TokenDataset(n=32), reinit={"top_k": 1, "seed": 5})
    tensors = dict(pre)
    tensors.update({f"reinit/{n}": p.detach().clone() for n, p in model.named_parameters() if n.startswith(TOP)})
    trainer.train()
    tensors.update({f"final/{n}": p.detach().clone() for n, p in trainer.model.named_parameters()})
    os.makedirs(outdir, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(outdir, f"rank{rank}.safetensors"))


if __name__ == "__main__":
    main(sys.argv[1])
