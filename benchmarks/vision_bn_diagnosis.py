"""Is MobileNetV2's seed-0 collapse on hymenoptera a BatchNorm-statistics effect? A diagnostic, not a strategy table.

``benchmarks/vision_strategies.py`` (MobileNetV2, 3 epochs at 160 px) gives 55-66 % on seed 0 for every strategy that
trains blocks, against 78-88 % on seeds 1-2, at about the same training loss. This script trains the same cell
(``vision_strategies.build_cell``: same data, augmentation, settings and seed) and evaluates it several ways:

* ``--bn train`` (as in the table): BatchNorm layers train normally (batch statistics, running statistics updated
  with momentum 0.1). The model is evaluated (1) as trained, then with the running statistics of every BatchNorm
  recomputed after training (reset, cumulative average, no gradient, weights untouched) over the 244 training images
  (2) with the deterministic eval transform and (3) with the training augmentation (seeded).
* ``--bn frozen``: every BatchNorm (trainable or not) is kept in eval mode during training (a forward-pre hook, as
  tl_hf's frozen-BatchNorm rule does): it normalizes with, and keeps, the ImageNet running statistics; its affine
  weights still train. Evaluated as trained.

One row per invocation, appended to ``benchmarks/results/vision_bn_diagnosis.jsonl`` and gathered into
``vision_bn_diagnosis.json`` (never into ``vision_strategies.jsonl``).

    python benchmarks/vision_bn_diagnosis.py --strategy plain --seed 0 --bn train    # ~1.5 min on 2 cores
    python benchmarks/vision_bn_diagnosis.py --strategy plain --seed 0 --bn frozen
    python benchmarks/vision_bn_diagnosis.py --small   # smoke: both --bn modes on 16 / 16 images, 1 step, writes nothing
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, append_jsonl, read_jsonl, write_result  # noqa: E402
from vision_strategies import build_cell  # noqa: E402

JSONL = RESULTS / "vision_bn_diagnosis.jsonl"


def _bns(model) -> list[torch.nn.Module]:
    return [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


def _keep_eval(module, args) -> None:
    module.eval()


@torch.no_grad()
def recompute_bn_stats(model, dataset, collator, batch_size: int = 32) -> None:
    """Reset every BatchNorm's running statistics and recompute them as a cumulative average over ``dataset``."""
    bns = _bns(model)
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches
    model.train()
    for batch in torch.utils.data.DataLoader(dataset, batch_size=batch_size, collate_fn=collator):
        model(pixel_values=batch["pixel_values"].to(next(model.parameters()).device))
    for m, mom in zip(bns, momenta):
        m.momentum = mom
    model.eval()


def run(strategy: str, seed: int, bn: str, small: bool = False) -> dict:
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        tr, s = build_cell("hymenoptera", "mobilenetv2", strategy, seed, out, small=small)
        if bn == "frozen":
            for m in _bns(tr.model):
                m.register_forward_pre_hook(_keep_eval)
        res = tr.train()
        row = {"backbone": "mobilenetv2", "strategy": strategy, "seed": seed, "bn": bn, "epochs": s["epochs"],
               "image_size": s["image_size"], "train_loss": res.training_loss,
               "accuracy_as_trained": tr.evaluate()["eval_accuracy"]}
        if bn == "train":
            train = tr.train_dataset
            plain = copy.copy(train)
            plain.transform = tr.eval_dataset.transform
            recompute_bn_stats(tr.model, plain, tr.data_collator)
            row["accuracy_bn_recomputed_eval_transform"] = tr.evaluate()["eval_accuracy"]
            torch.manual_seed(seed)
            recompute_bn_stats(tr.model, train, tr.data_collator)
            row["accuracy_bn_recomputed_train_augmentation"] = tr.evaluate()["eval_accuracy"]
    row.update(n_eval=len(tr.eval_dataset), wall_s=round(time.perf_counter() - t0, 1),
               torch_threads=torch.get_num_threads())
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--strategy", default="plain", choices=("plain", "top_k", "llrd", "lp_ft"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bn", default="train", choices=("train", "frozen"))
    ap.add_argument("--small", action="store_true", help="smoke: both --bn modes on tiny data; writes nothing")
    args = ap.parse_args(argv)
    import transformers

    transformers.logging.set_verbosity_error()
    if args.small:
        for bn in ("train", "frozen"):
            print(json.dumps(run(args.strategy, args.seed, bn, small=True)), flush=True)
        return 0
    row = run(args.strategy, args.seed, args.bn)
    print(json.dumps(row), flush=True)
    append_jsonl(JSONL, row)
    write_result("vision_bn_diagnosis", {"runs": read_jsonl(JSONL)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
