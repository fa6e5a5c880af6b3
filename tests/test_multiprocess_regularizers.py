"""2-process (gloo) checks of the regularizers: the Fisher equals the single-process Fisher over the same examples,
every rank builds the same replay memory, a DDP run with EWC + L2-SP + replay keeps the ranks identical, and LwF + EMA
under DDP equal the same run in one process."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from test_multiprocess import _tail, run_worker
from tiny import TokenDataset, tiny_bert

WORKER = Path(__file__).resolve().parent / "mp" / "regularizers_worker.py"


@pytest.mark.slow
@pytest.mark.multiprocess
def test_regularizers_under_two_processes(tmp_path):
    from mp.regularizers_worker import CASES, batches

    from tl_hf.regularizers import estimate_fisher

    res = run_worker(tmp_path, worker=WORKER)
    assert res.returncode == 0, f"worker failed\n{_tail(res.stderr)}"
    ranks = [(json.loads((tmp_path / f"rank{r}.json").read_text()), load_file(str(tmp_path / f"rank{r}.safetensors")))
             for r in range(2)]
    model = tiny_bert(num_labels=3, seed=0)
    data = TokenDataset(n=13, num_labels=3, seed=1)
    for est, per_ex in CASES:
        ref, n = estimate_fisher(model, batches(data, 4), estimator=est, per_example=per_ex, seed=7)
        assert n == 13
        for meta, t in ranks:
            assert meta[f"n_{est}_{per_ex}"] == 13
            for k, v in ref.items():
                torch.testing.assert_close(t[f"fisher/{est}/{per_ex}/{k}"], v, rtol=1e-4, atol=1e-10,
                                           msg=f"{est} per_example={per_ex} {k} on rank {meta['rank']}")
    (m0, t0), (m1, t1) = ranks
    assert m0["memory"] == m1["memory"] and len(m0["memory"]) == 6, "ranks built different replay memories"
    # LLRD groups and their learning rates are the same on both ranks, and the single-process function's
    from tl_hf import param_groups_layer_decay

    assert m0["groups"] == m1["groups"] and m0["group_lr_logs"] == m1["group_lr_logs"]
    ref_groups = param_groups_layer_decay(tiny_bert(num_labels=3, seed=0), lr=1e-3, decay=0.8, weight_decay=0.0)
    assert [[g["name"], g["depth"], len(g["params"])] for g in ref_groups] == [[n, d, k] for n, d, _, _, k in m0["groups"]]
    assert [g["lr"] for g in ref_groups] == pytest.approx([lr for _, _, lr, _, _ in m0["groups"]], rel=1e-12)
    assert len({lr for _, _, lr, _, _ in m0["groups"]}) == 4  # embeddings, layer.0, layer.1, head: all different
    assert m0["penalty_logged"] and m0["penalty_logged"][-1] > 0
    finals = [k for k in t0 if k.startswith("final/")]
    diff = [k for k in finals if not torch.equal(t0[k], t1[k])]
    assert not diff, f"parameters differ across ranks after regularized DDP training: {diff[:5]}"

    # the loss-scaling fix under DDP: the 2 x 4 update and logged loss equal the single-process 8-example ones
    from tiny import training_args

    from tl_hf import TransferTrainer

    single = tiny_bert(num_labels=2, seed=0)
    tr = TransferTrainer(single, training_args(tmp_path / "single", per_device_train_batch_size=8, max_steps=1,
                                               optim="sgd", learning_rate=1.0, lr_scheduler_type="constant",
                                               max_grad_norm=0.0, train_sampling_strategy="sequential"),
                         train_dataset=TokenDataset(n=8))
    tr.train()
    loss = next(h["loss"] for h in tr.state.log_history if "loss" in h)
    assert m0["sgd_loss"] == pytest.approx(loss, rel=1e-5), "DDP logged loss differs from the single-process loss"
    for n, p in single.named_parameters():
        torch.testing.assert_close(t0[f"sgd/{n}"], p.detach(), rtol=1e-5, atol=1e-6, msg=n)

    # LwF + EMA under DDP: the distillation term and the average of 2 x 4 examples equal those of 8 in one process
    from mp.regularizers_worker import LWF_EMA

    tr = TransferTrainer(tiny_bert(num_labels=2, seed=0),
                         training_args(tmp_path / "lwf_single", per_device_train_batch_size=8, max_steps=2,
                                       optim="sgd", learning_rate=0.5, lr_scheduler_type="constant",
                                       max_grad_norm=0.0, train_sampling_strategy="sequential"),
                         train_dataset=TokenDataset(n=16), **LWF_EMA)
    tr.train()
    losses = [h["lwf/loss"] for h in tr.state.log_history if "lwf/loss" in h]
    assert len(losses) == 2 and losses[0] == pytest.approx(0.0, abs=1e-7) and losses[1] > 1e-6
    assert m0["lwf_losses"] == m1["lwf_losses"] and m0["lwf_losses"] == pytest.approx(losses, rel=1e-4, abs=1e-9)
    shadow = tr.averager.shadow
    for n, p in tr.model.named_parameters():
        assert torch.equal(t0[f"lwf/{n}"], t1[f"lwf/{n}"]) and torch.equal(t0[f"ema/{n}"], t1[f"ema/{n}"]), n
        torch.testing.assert_close(t0[f"lwf/{n}"], p.detach(), rtol=1e-5, atol=1e-6, msg=n)
        torch.testing.assert_close(t0[f"ema/{n}"], shadow[n], rtol=1e-5, atol=1e-6, msg=n)
    moved = [n for n, p in tr.model.named_parameters() if not torch.equal(shadow[n], p.detach())]
    assert moved, "the EMA equals the raw weights: the average did not average"
