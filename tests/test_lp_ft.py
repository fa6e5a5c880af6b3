"""LP-FT as a two-phase schedule: head only, then everything; resumes exactly across the phase change."""

import pytest
import torch
from transformers import TrainerCallback

from tiny import TokenDataset, params_snapshot, tiny_bert, training_args
from tl_hf import TransferTrainer
from tl_hf.core.lp_ft import lp_ft_freezing


class Snap(TrainerCallback):
    def __init__(self):
        self.at = {}

    def on_step_end(self, args, state, control, model=None, **kw):
        self.at[state.global_step] = params_snapshot(model)


def _trainer(out, callbacks=(), **kw):
    args = training_args(out, max_steps=6, optim="sgd", learning_rate=0.5, lr_scheduler_type="constant",
                         train_sampling_strategy="sequential", **kw)
    return TransferTrainer(tiny_bert(seed=0), args, train_dataset=TokenDataset(n=48), callbacks=list(callbacks),
                           freezing=lp_ft_freezing(3, unit="step"), llrd={"decay": 0.8})


def test_phases_are_head_only_then_everything(tmp_path):
    start = params_snapshot(tiny_bert(seed=0))
    snap = Snap()
    _trainer(tmp_path, [snap]).train()
    s3, s6 = snap.at[3], snap.at[6]
    backbone = [n for n in start if n.startswith("bert.") and "pooler" not in n]
    assert all(torch.equal(s3[n], start[n]) for n in backbone)  # linear probe: the backbone did not move
    assert not torch.equal(s3["classifier.weight"], start["classifier.weight"])
    assert all(not torch.equal(s6[n], s3[n]) for n in backbone if "word_embeddings" not in n and "LayerNorm" not in n
               and "token_type" not in n and "position" not in n)


def test_resume_inside_the_probe_phase_equals_the_uninterrupted_run(tmp_path):
    full = _trainer(tmp_path / "full")
    full.train()
    part = _trainer(tmp_path / "part", save_strategy="steps", save_steps=2)
    part.train()
    resumed = _trainer(tmp_path / "part")
    resumed.train(resume_from_checkpoint=str(tmp_path / "part" / "checkpoint-2"))
    assert resumed.freezer.phase == 1
    for (n, p), (_, q) in zip(full.model.named_parameters(), resumed.model.named_parameters()):
        assert torch.equal(p, q), n


def test_bad_lp_end_is_refused():
    with pytest.raises(ValueError, match="LP-FT lp_end must be an int >= 1"):
        lp_ft_freezing(0)
