"""Worker for ``tests/test_multiprocess_feature_cache.py``: the feature cache under 2-process DDP (CPU, gloo).

Every rank trains the same tiny 2-block BERT twice on 30 variable-length sequences (padded per batch, so the cached
sequence outputs are trimmed per example): once with ``freezing.cache_features`` (and an evaluation from the cache),
once without it (the uncached reference). A forward hook on the first block counts the rows this rank ran through
the backbone. Writes ``OUTDIR/rank{R}.safetensors`` (``cache/<name>``: the gathered training cache in its serialized
form; ``cached/<param>`` and ``plain/<param>``: the weights after each run) and ``OUTDIR/rank{R}.json`` (rows run
through the backbone, rows the cache pass computed on this rank, both eval losses).
"""

from __future__ import annotations

import json
import os
import sys

_TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)  # for tiny.py, test_feature_cache.py
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from safetensors.torch import save_file  # noqa: E402

from test_feature_cache import VarLenDataset, pad_collate  # noqa: E402
from tiny import tiny_bert, training_args  # noqa: E402
from tl_hf import FreezingConfig, TransferTrainer  # noqa: E402

N = 30


def train(outdir: str, cached: bool):
    model = tiny_bert(num_layers=2, seed=0)
    rows: list[int] = []
    model.bert.encoder.layer[0].register_forward_hook(lambda mod, args, out: rows.append(args[0].shape[0]))
    args = training_args(os.path.join(outdir, "cached" if cached else "plain"), per_device_train_batch_size=4,
                         per_device_eval_batch_size=4, max_steps=6, logging_steps=100, ddp_backend="gloo")
    tr = TransferTrainer(model, args, freezing=FreezingConfig(policy="feature_extraction", cache_features=cached),
                         train_dataset=VarLenDataset(n=N), eval_dataset=VarLenDataset(n=12, seed=1),
                         data_collator=pad_collate)
    tr.train()
    eval_loss = tr.evaluate()["eval_loss"]
    return tr, model, sum(rows), eval_loss


def main(outdir: str) -> None:
    rank = int(os.environ["RANK"])
    tr, model, rows, eval_cached = train(outdir, cached=True)
    store = tr.feature_cache.stores["train"]
    tensors = {f"cache/{k}": v for k, v in store.export().items()}
    tensors.update({f"cached/{n}": p.detach().clone() for n, p in model.named_parameters()})
    meta = {"backbone_rows": rows, "computed": store.computed, "n": store.n, "filled": int(store.filled.sum()),
            "roots": store.roots, "eval_cached": eval_cached}
    _, plain, _, eval_plain = train(outdir, cached=False)
    tensors.update({f"plain/{n}": p.detach().clone() for n, p in plain.named_parameters()})
    meta["eval_plain"] = eval_plain
    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(outdir, f"rank{rank}.safetensors"))
    with open(os.path.join(outdir, f"rank{rank}.json"), "w") as f:
        json.dump(meta, f)


if __name__ == "__main__":
    main(sys.argv[1])
