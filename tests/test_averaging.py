"""EMA / SWA of the trainable weights: the closed forms, evaluation and saving on the average, exact resume."""

import os

import pytest
import torch
from transformers import TrainerCallback

from tiny import TokenDataset, tiny_bert, training_args
from tl_hf import TransferTrainer
from tl_hf.core.averaging import AveragingConfig, WeightAverager


class Recorder(TrainerCallback):
    def __init__(self):
        self.thetas, self.at_eval = [], []

    def on_train_begin(self, args, state, control, model=None, **kw):
        if not self.thetas:
            self.thetas.append({n: p.detach().clone() for n, p in model.named_parameters()})

    def on_step_end(self, args, state, control, model=None, **kw):
        self.thetas.append({n: p.detach().clone() for n, p in model.named_parameters()})

    def on_evaluate(self, args, state, control, model=None, **kw):
        self.at_eval.append({n: p.detach().clone() for n, p in model.named_parameters()})


def _ema_closed_form(thetas, d, name):
    """avg_t = d^t theta_0 + (1 - d) sum_{i=1..t} d^(t-i) theta_i."""
    t = len(thetas) - 1
    out = d ** t * thetas[0][name]
    for i in range(1, t + 1):
        out = out + (1 - d) * d ** (t - i) * thetas[i][name]
    return out


def test_ema_equals_the_closed_form_on_a_toy_model():
    torch.manual_seed(0)
    lin = torch.nn.Linear(3, 2)
    av = WeightAverager(AveragingConfig(method="ema", decay=0.8), ["weight", "bias"])
    av.bind(lin)
    thetas = [{n: p.detach().clone() for n, p in lin.named_parameters()}]
    for step in range(1, 6):
        with torch.no_grad():
            for p in lin.parameters():
                p.add_(torch.randn_like(p))
        thetas.append({n: p.detach().clone() for n, p in lin.named_parameters()})
        av.update(step)
    for n in ("weight", "bias"):
        torch.testing.assert_close(av.shadow[n], _ema_closed_form(thetas, 0.8, n), rtol=0, atol=1e-6)
        assert not torch.allclose(av.shadow[n], thetas[-1][n])


def test_swa_is_the_mean_from_start_step_every_k():
    torch.manual_seed(0)
    lin = torch.nn.Linear(3, 2)
    lin.bias.requires_grad_(False)  # not averaged: it must not train
    av = WeightAverager(AveragingConfig(method="swa", start_step=2, every=2), ["weight"])
    av.bind(lin)
    seen = {}
    for step in range(1, 8):
        with torch.no_grad():
            lin.weight.add_(torch.randn_like(lin.weight))
        seen[step] = lin.weight.detach().clone()
        av.update(step)
        if step == 1:  # before the window the average follows the weights
            assert torch.equal(av.shadow["weight"], seen[1])
    mean = torch.stack([seen[s] for s in (2, 4, 6)]).mean(0)
    torch.testing.assert_close(av.shadow["weight"], mean, rtol=0, atol=1e-6)
    assert av.num_averaged == 3


def _trainer(tmp_path, averaging, callbacks=(), freezing=None, **kw):
    args = training_args(tmp_path, max_steps=6, optim="sgd", learning_rate=0.5, lr_scheduler_type="constant",
                         train_sampling_strategy="sequential", **kw)
    return TransferTrainer(tiny_bert(seed=0), args, train_dataset=TokenDataset(n=48), eval_dataset=TokenDataset(n=8),
                           averaging=averaging, callbacks=list(callbacks), freezing=freezing)


def test_trainer_ema_closed_form_eval_and_saved_model(tmp_path):
    rec = Recorder()
    tr = _trainer(tmp_path, {"method": "ema", "decay": 0.5}, [rec], eval_strategy="steps", eval_steps=3)
    tr.train()
    assert len(rec.thetas) == 7 and len(rec.at_eval) == 2
    shadow = tr.averager.shadow
    for n in shadow:
        torch.testing.assert_close(shadow[n], _ema_closed_form(rec.thetas, 0.5, n), rtol=0, atol=1e-6)
    # the evaluation at step 3 ran on the step-3 average; training went on with the raw weights
    some = "classifier.weight"
    torch.testing.assert_close(rec.at_eval[0][some], _ema_closed_form(rec.thetas[:4], 0.5, some), rtol=0, atol=1e-6)
    assert not torch.allclose(rec.thetas[3][some], rec.at_eval[0][some])
    # final_average: the model (what save_model writes) is the average
    for n, p in tr.model.named_parameters():
        assert torch.equal(p.detach(), shadow[n]), n


def test_resume_restores_the_average_exactly(tmp_path):
    cfg = {"method": "ema", "decay": 0.7}
    full = _trainer(tmp_path / "full", cfg)
    full.train()
    part = _trainer(tmp_path / "part", cfg, save_strategy="steps", save_steps=3)
    part.train()
    ckpt = tmp_path / "part" / "checkpoint-3"
    assert (ckpt / "tl_hf_averaging.safetensors").exists() and (ckpt / "tl_hf_averaging.json").exists()
    resumed = _trainer(tmp_path / "part", cfg)
    resumed.train(resume_from_checkpoint=str(ckpt))
    for n, t in full.averager.shadow.items():
        assert torch.equal(resumed.averager.shadow[n], t), n
    for (n, p), (_, q) in zip(full.model.named_parameters(), resumed.model.named_parameters()):
        assert torch.equal(p, q), n
    with pytest.raises(ValueError, match="resume with the same averaging"):
        _trainer(tmp_path / "part", {"method": "swa"}).train(resume_from_checkpoint=str(ckpt))


def test_frozen_then_unfrozen_average_starts_at_unfreezing(tmp_path):
    rec = Recorder()
    sched = {"policy": "gradual", "schedule": {"unit": "step", "phases": [{"start": 0, "depths": 0},
                                                                           {"start": 3, "depths": 3}]}}
    tr = _trainer(tmp_path, {"method": "ema", "decay": 0.5, "final_average": False}, [rec], freezing=sched)
    tr.train()
    n = "bert.encoder.layer.0.attention.self.query.weight"
    assert torch.equal(rec.thetas[3][n], rec.thetas[0][n]) and not torch.equal(rec.thetas[6][n], rec.thetas[0][n])
    # while frozen the average equals the (constant) weight; from the unfreezing on it is the EMA of the new weights
    torch.testing.assert_close(tr.averager.shadow[n], _ema_closed_form(rec.thetas, 0.5, n), rtol=0, atol=1e-6)


def test_a_parameter_the_average_never_saw_is_refused(tmp_path):
    class Unfreeze(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kw):
            model.bert.embeddings.word_embeddings.weight.requires_grad_(True)

    model = tiny_bert(seed=0)
    model.bert.embeddings.word_embeddings.weight.requires_grad_(False)
    args = training_args(tmp_path, max_steps=3)
    tr = TransferTrainer(model, args, train_dataset=TokenDataset(n=24), averaging={"method": "ema"},
                         callbacks=[Unfreeze()])
    with pytest.raises(ValueError, match=r"'bert.embeddings.word_embeddings.weight' trains at step 1 but was frozen"):
        tr.train()


def test_bad_averaging_settings_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"averaging.decay must be in \[0, 1\)"):
        AveragingConfig(method="ema", decay=1.0)
    with pytest.raises(ValueError, match="averaging.method must be one of none, ema, swa"):
        AveragingConfig(method="polyak")
    tr = _trainer(tmp_path, {"method": "ema"}, eval_strategy="steps", save_strategy="steps", eval_steps=3,
                  save_steps=3, load_best_model_at_end=True)
    with pytest.raises(ValueError, match="load_best_model_at_end"):
        tr.train()
    assert not os.path.exists(tmp_path / "checkpoint-3")
