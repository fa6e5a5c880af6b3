import json
import os

import pytest
import torch
import torch.nn as nn

from tiny import TokenDataset, params_snapshot, tiny_bert, tiny_model, training_args
from tl_hf import TransferTrainer
from tl_hf.regularizers import (EWC, L2SP, REGULARIZERS, OnlineEWC, Replay, ReplayMemory, build_regularizer,
                                estimate_fisher)
from tl_hf.regularizers.replay import MixedDataset


def _batches(ds, bs):
    for s in range(0, len(ds), bs):
        items = [ds[i] for i in range(s, min(s + bs, len(ds)))]
        yield {k: torch.stack([it[k] for it in items]) for k in items[0]}


class Softmax(nn.Module):
    """Multinomial logistic regression: logits = W x (no bias), for closed-form Fisher checks."""

    def __init__(self, d=3, c=3):
        super().__init__()
        torch.manual_seed(0)
        self.W = nn.Linear(d, c, bias=False)

    def forward(self, x, labels=None):
        return {"logits": self.W(x)}


def _analytic_fisher(model, xs, ys, kind):
    W = model.W.weight.detach()
    total = torch.zeros_like(W)
    for x, y in zip(xs, ys):
        p = (W @ x).softmax(-1)
        grads = [torch.outer(torch.eye(len(p))[c] - p, x) for c in range(len(p))]  # ∇_W log p(c|x)
        total += sum(p[c] * grads[c] ** 2 for c in range(len(p))) if kind == "exact" else grads[y] ** 2
    return total / len(xs)


@pytest.mark.parametrize("kind", ["empirical", "exact"])
def test_fisher_matches_the_closed_form(kind):
    model = Softmax()
    g = torch.Generator().manual_seed(1)
    xs, ys = torch.randn(10, 3, generator=g), torch.randint(0, 3, (10,), generator=g)
    data = [{"x": xs[i:i + 4], "labels": ys[i:i + 4]} for i in range(0, 10, 4)]
    fisher, n = estimate_fisher(model, data, estimator=kind, per_example=True)
    assert n == 10
    torch.testing.assert_close(fisher["W.weight"], _analytic_fisher(model, xs, ys, kind), rtol=1e-5, atol=1e-7)


def test_sampled_fisher_is_an_unbiased_estimate_of_the_exact_one():
    model = Softmax()
    g = torch.Generator().manual_seed(2)
    xs = torch.randn(400, 3, generator=g)
    data = [{"x": xs[i:i + 50], "labels": torch.zeros(50, dtype=torch.long)} for i in range(0, 400, 50)]
    exact, _ = estimate_fisher(model, data, estimator="exact")
    sampled, _ = estimate_fisher(model, data, estimator="sampled", seed=3)
    rel = (sampled["W.weight"] - exact["W.weight"]).abs().sum() / exact["W.weight"].abs().sum()
    assert rel < 0.1  # 400 one-sample draws: measured 0.03-0.05


@pytest.mark.parametrize("model_type", ["bert", "vit"])
@pytest.mark.parametrize("kind", ["empirical", "exact", "sampled"])
def test_per_example_fisher_equals_batch_of_one_passes(model_type, kind):
    if model_type == "bert":
        model = tiny_bert(num_labels=3)
        ds = TokenDataset(n=6, num_labels=3)
        data = list(_batches(ds, 3))
        data[0]["attention_mask"][0, 5:] = 0  # padding must be honoured
    else:
        model = tiny_model("vit", num_labels=3)
        g = torch.Generator().manual_seed(0)
        data = [{"pixel_values": torch.randn(3, 3, 16, 16, generator=g), "labels": torch.tensor([0, 1, 2])}
                for _ in range(2)]
    per_ex, n = estimate_fisher(model, data, estimator=kind, per_example=True, seed=5)
    singles = [{k: v[i:i + 1] for k, v in b.items()} for b in data for i in range(3)]
    loop, _ = estimate_fisher(model, singles, estimator=kind, per_example=False, seed=5)
    assert n == 6 and set(per_ex) == {n for n, _ in model.named_parameters()}
    for k in per_ex:
        torch.testing.assert_close(per_ex[k], loop[k], rtol=1e-4, atol=1e-9, msg=k)
    assert model.training is True or model.training is False  # mode restored below
    assert all(p.requires_grad for p in model.parameters())


def test_batched_fisher_is_scaled_by_the_batch_size():
    model = Softmax()
    g = torch.Generator().manual_seed(1)
    xs, ys = torch.randn(8, 3, generator=g), torch.randint(0, 3, (8,), generator=g)
    data = [{"x": xs[i:i + 4], "labels": ys[i:i + 4]} for i in (0, 4)]
    raw, _ = estimate_fisher(model, data, per_example=False, scale_batched=False)
    scaled, _ = estimate_fisher(model, data, per_example=False)
    torch.testing.assert_close(scaled["W.weight"], 4 * raw["W.weight"])
    W = model.W.weight.detach()
    expect = torch.zeros_like(W)
    for s in (0, 4):  # square of each batch's mean gradient of -log p(y|x)
        gm = sum(torch.outer(torch.eye(3)[y] - (W @ x).softmax(-1), x) for x, y in zip(xs[s:s + 4], ys[s:s + 4])) / 4
        expect += gm ** 2
    torch.testing.assert_close(raw["W.weight"], expect / 2, rtol=1e-5, atol=1e-8)


def test_fisher_runs_in_eval_mode_and_restores_state():
    model = tiny_bert(num_labels=2, dropout=True)
    model.train()
    model.bert.embeddings.word_embeddings.weight.requires_grad_(False)
    seen = []
    model.bert.encoder.layer[0].register_forward_pre_hook(lambda m, a: seen.append(m.training))
    f1, _ = estimate_fisher(model, list(_batches(TokenDataset(n=4), 2)), per_example=False)
    f2, _ = estimate_fisher(model, list(_batches(TokenDataset(n=4), 2)), per_example=False)
    assert seen and not any(seen), "Fisher must run with dropout off"
    torch.testing.assert_close(f1["classifier.weight"], f2["classifier.weight"])  # deterministic
    assert "bert.embeddings.word_embeddings.weight" not in f1  # frozen parameters are skipped by default
    assert model.training and not model.bert.embeddings.word_embeddings.weight.requires_grad
    assert all(p.grad is None for p in model.parameters())


def _trained_ewc(model, cls=EWC, **kw):
    ewc = cls(num_samples=16, **kw)
    ewc.end_task(model, TokenDataset(n=16))
    return ewc


def test_ewc_gradient_is_the_gradient_of_its_penalty():
    model = tiny_bert()
    ewc = _trained_ewc(model, lambda_=50.0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    ewc.bind(model)
    named = list(model.named_parameters())
    for _, p in named:
        p.grad = torch.zeros_like(p)
    ewc.add_penalty_grad(named)
    fused = {n: p.grad.clone() for n, p in named}
    for _, p in named:
        p.grad = None
    fisher, anchors = ewc.tasks[0]
    penalty = 25.0 * sum((fisher[n] * (p - anchors[n]) ** 2).sum() for n, p in named)
    penalty.backward()
    for n, p in named:
        torch.testing.assert_close(fused[n], p.grad, rtol=1e-5, atol=1e-10, msg=n)
    assert ewc.penalty_value(model) == pytest.approx(penalty.item(), rel=1e-5)


def test_online_ewc_decays_the_old_fisher_and_keeps_one_anchor_set():
    model = tiny_bert()
    ewc = _trained_ewc(model, OnlineEWC, gamma=0.5)
    f_old = {k: v.clone() for k, v in ewc.tasks[0][0].items()}
    with torch.no_grad():
        model.classifier.weight.add_(0.1)
    fresh, _ = estimate_fisher(model, _batches(TokenDataset(n=16), 32), num_samples=16)
    ewc.end_task(model, TokenDataset(n=16))
    assert len(ewc.tasks) == 1
    torch.testing.assert_close(ewc.tasks[0][0]["classifier.weight"],
                               0.5 * f_old["classifier.weight"] + fresh["classifier.weight"])
    torch.testing.assert_close(ewc.tasks[0][1]["classifier.weight"], model.classifier.weight.detach())
    plain = _trained_ewc(tiny_bert())
    plain.end_task(model, TokenDataset(n=16))
    assert len(plain.tasks) == 2  # EWC keeps one penalty per task


def test_l2sp_pulls_shared_weights_to_the_source_and_decays_new_ones(tmp_path):
    source = tiny_bert(num_labels=2, seed=0)
    source.save_pretrained(tmp_path / "src")
    model = tiny_bert(num_labels=5, seed=1)  # different head shape, different weights
    with pytest.raises(ValueError, match=r"'classifier.weight' has shape \(5, 32\) but \(2, 32\)"):
        L2SP(alpha=1.0, source=str(tmp_path / "src")).bind(model)
    reg = L2SP(alpha=2.0, beta=0.5, source=str(tmp_path / "src"), exempt=[r"^classifier\."])
    reg.bind(model)
    assert "classifier.weight" not in reg.anchors and "classifier.weight" not in reg.new
    model2 = tiny_bert(num_labels=2, seed=1)
    reg2 = L2SP(alpha=2.0, beta=0.5, new_params=[r"^classifier\."])
    reg2.bind(model2)
    with torch.no_grad():
        for p in model2.parameters():
            p.add_(0.1)
    named = list(model2.named_parameters())
    for _, p in named:
        p.grad = torch.zeros_like(p)
    reg2.add_penalty_grad(named)
    q = dict(named)
    torch.testing.assert_close(q["bert.pooler.dense.weight"].grad, torch.full_like(q["bert.pooler.dense.weight"], 0.2))
    torch.testing.assert_close(q["classifier.weight"].grad, 0.5 * q["classifier.weight"].detach())


@pytest.mark.parametrize("spec,match", [
    ({"name": "ewc", "lambda": -1.0}, r"ewc lambda must be a number >= 0, got -1.0"),
    ({"name": "online_ewc", "gamma": -0.1}, r"gamma must be a number >= 0"),
    ({"name": "l2sp", "alpha": -1}, r"l2sp alpha must be"),
    ({"name": "l2sp", "beta": float("nan")}, r"l2sp beta must be"),
    ({"name": "ewc", "estimator": "true"}, r"unknown Fisher estimator 'true'; valid: empirical, exact, sampled"),
    ({"name": "ewc", "lamda": 1.0}, r"unknown ewc key 'lamda'; did you mean 'lambda_'"),
    ({"name": "si"}, r"unknown regularizer 'si'; valid: der, ewc, l2sp, lwf, online_ewc, replay"),
    ({"name": "replay", "budget": 0}, r"replay budget must be an int >= 1"),
])
def test_bad_regularizer_configs(spec, match):
    with pytest.raises(ValueError, match=match):
        build_regularizer(spec)


def test_registry_is_the_one_place_for_methods():
    assert set(REGULARIZERS) == {"ewc", "online_ewc", "l2sp", "replay", "lwf", "der"}
    assert isinstance(build_regularizer({"name": "ewc", "lambda": 3.0}), EWC)


def test_ewc_without_fisher_fails_before_any_step(tmp_path):
    model = tiny_bert()
    before = params_snapshot(model)
    tr = TransferTrainer(model, training_args(tmp_path), train_dataset=TokenDataset(), regularizers=[EWC()])
    with pytest.raises(ValueError, match=r"ewc has no Fisher yet"):
        tr.train()
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    with pytest.raises(ValueError, match="replay memory is empty"):
        TransferTrainer(tiny_bert(), training_args(tmp_path), train_dataset=TokenDataset(),
                        regularizers=[Replay()]).train()


def test_fisher_from_another_model_is_refused(tmp_path):
    ewc = _trained_ewc(tiny_bert(num_labels=2))
    ewc.save(str(tmp_path))
    vit = tiny_model("vit", num_labels=2)
    with pytest.raises(ValueError, match="computed on a bert model; this model is vit"):
        EWC().load(str(tmp_path)).bind(vit)
    other_head = tiny_bert(num_labels=4)
    with pytest.raises(ValueError, match=r"'classifier\.(weight|bias)' has shape \(4.*\(2.*exempt=\['classifier'\]"):
        EWC().load(str(tmp_path)).bind(other_head)
    reg = EWC(exempt=[r"^classifier\."]).load(str(tmp_path))
    reg.bind(other_head)  # an explicit exemption
    assert "classifier.weight" not in reg._names and "classifier.bias" not in reg._names


def test_ewc_state_round_trip_is_safetensors_and_json(tmp_path):
    ewc = _trained_ewc(tiny_bert(), lambda_=7.0)
    ewc.save(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["tl_hf_ewc.json", "tl_hf_ewc.safetensors"]
    meta = json.loads((tmp_path / "tl_hf_ewc.json").read_text())
    assert meta["config"]["lambda_"] == 7.0 and meta["meta"]["model_type"] == "bert"
    back = EWC().load(str(tmp_path))
    for k, v in ewc.tasks[0][0].items():
        assert torch.equal(back.tasks[0][0][k], v)
    (tmp_path / "tl_hf_ewc.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(ValueError, match="truncated or corrupt"):
        EWC().load(str(tmp_path))


def test_reservoir_memory_is_seeded_and_uniform():
    ds = TokenDataset(n=200)
    a, b = ReplayMemory(20, seed=1), ReplayMemory(20, seed=1)
    a.add_dataset(ds, "t1")
    b.add_dataset(ds, "t1")
    assert a.provenance == b.provenance and len(a) == 20
    counts = torch.zeros(200)
    for seed in range(300):
        m = ReplayMemory(20, seed=seed)
        m.add_dataset(ds, "t1")
        for _, i in m.provenance:
            counts[i] += 1
    # each example is kept with probability 20/200 = 0.1 -> expected 30 of 300 runs
    assert counts[:100].mean() == pytest.approx(30, rel=0.15) and counts[100:].mean() == pytest.approx(30, rel=0.15)


def test_class_balanced_memory_and_budget_errors():
    m = ReplayMemory(12, "class_balanced", seed=0)
    m.add_dataset(TokenDataset(n=60, num_labels=2, seed=0), "t1")
    m.add_dataset(TokenDataset(n=60, num_labels=4, seed=1), "t2")
    assert m.class_counts() == {0: 3, 1: 3, 2: 3, 3: 3}
    small = ReplayMemory(50)
    with pytest.raises(ValueError, match=r"replay budget 50 is larger than the data it draws from \(10 examples"):
        small.add_dataset(TokenDataset(n=10), "t1")
    assert len(small) == 0 and small.seen == 0  # nothing half-added


def test_memory_round_trip_with_variable_lengths(tmp_path):
    rep = Replay(budget=3)
    rep.end_task(None, [{"input_ids": [1, 2, 3], "labels": 0}, {"input_ids": [4], "labels": 1},
                        {"input_ids": [5, 6], "labels": 1, "sentence": "dropped"}], source="t1")
    rep.save(str(tmp_path))
    back = Replay(budget=3).load(str(tmp_path))
    assert [e["input_ids"].tolist() for e in back.memory.examples] == [[1, 2, 3], [4], [5, 6]]
    assert back.memory.provenance == [("t1", 0), ("t1", 1), ("t1", 2)]
    assert not any(f.endswith((".pt", ".pkl", ".bin")) for f in os.listdir(tmp_path))


def test_interleave_uses_all_new_data_and_every_memory_example():
    new = list(range(100))
    mem = [{"m": i} for i in range(10)]
    mix = MixedDataset(new, mem, ratio=0.2, seed=0)
    items = [mix[i] for i in range(len(mix))]
    assert len(mix) == 125  # 100 new + 25 replayed (20 %)
    assert sorted(x for x in items if isinstance(x, int)) == new  # nothing new is dropped
    reps = [x["m"] for x in items if isinstance(x, dict)]
    assert set(reps) == set(range(10)) and max(reps.count(i) for i in range(10)) == 3
    assert [mix[i] for i in range(5)] == [MixedDataset(new, mem, 0.2, seed=0)[i] for i in range(5)]


def _one_sgd_update(tmp_path, bs, ga, regs):
    model = tiny_bert(seed=0)
    before = params_snapshot(model)
    args = training_args(tmp_path / f"{bs}x{ga}", per_device_train_batch_size=bs, gradient_accumulation_steps=ga,
                         max_steps=1, optim="sgd", learning_rate=0.5, lr_scheduler_type="constant",
                         max_grad_norm=0.0, train_sampling_strategy="sequential")
    tr = TransferTrainer(model, args, train_dataset=TokenDataset(n=8), regularizers=regs(model))
    tr.train()
    return torch.cat([(p - before[n]).flatten() for n, p in model.named_parameters()])


def test_penalty_counts_once_under_gradient_accumulation(tmp_path):
    def regs(model):
        ewc = EWC(lambda_=1e4, num_samples=8)
        ewc.end_task(model, TokenDataset(n=8, seed=3))
        with torch.no_grad():  # move away from the anchors so the penalty has a gradient
            for p in model.parameters():
                p.add_(0.05)
        return [ewc, L2SP(alpha=5.0)]

    d1 = _one_sgd_update(tmp_path, 8, 1, regs)
    d2 = _one_sgd_update(tmp_path, 4, 2, regs)
    torch.testing.assert_close(d2, d1, rtol=1e-4, atol=1e-7)
    no_reg = _one_sgd_update(tmp_path / "plain", 8, 1, lambda m: [])
    assert (d1 - no_reg).norm() > 0.1 * no_reg.norm(), "the penalty changed the update"


def _resume_run(out, max_steps, resume=None):
    model = tiny_bert(seed=0, dropout=True)
    ewc = EWC(lambda_=100.0, num_samples=16)
    ewc.end_task(model, TokenDataset(n=16, seed=5))
    rep = Replay(budget=8, mode="term", batch_size=4)
    rep.end_task(model, TokenDataset(n=16, seed=5))
    regs = [ewc, rep, L2SP(alpha=1.0)]
    if resume:  # a fresh process knows nothing: state comes from the checkpoint
        regs = [EWC(lambda_=100.0), Replay(budget=8, mode="term", batch_size=4), L2SP(alpha=1.0)]
    args = training_args(out, max_steps=max_steps, save_strategy="steps", save_steps=3, per_device_train_batch_size=4)
    tr = TransferTrainer(model, args, train_dataset=TokenDataset(n=40), regularizers=regs, llrd={"decay": 0.8})
    tr.train(resume_from_checkpoint=resume)
    return tr, model


def test_resume_restores_fisher_anchors_and_memory(tmp_path):
    ref_tr, ref = _resume_run(tmp_path, 7)
    res_tr, res = _resume_run(tmp_path, 7, resume=str(tmp_path / "checkpoint-3"))
    for (n, p), (_, q) in zip(ref.named_parameters(), res.named_parameters()):
        torch.testing.assert_close(q, p, rtol=0, atol=1e-7, msg=n)
    ref_logs = {h["step"]: h for h in ref_tr.state.log_history if "penalty/ewc" in h}
    res_logs = {h["step"]: h for h in res_tr.state.log_history if "penalty/ewc" in h}
    for step in range(4, 8):
        for key in ("loss", "penalty/ewc", "penalty/l2sp", "replay/loss"):
            assert res_logs[step][key] == pytest.approx(ref_logs[step][key], rel=1e-5), (step, key)


def test_resume_with_other_regularizers_is_refused(tmp_path):
    _resume_run(tmp_path, 3)
    tr = TransferTrainer(tiny_bert(), training_args(tmp_path, max_steps=5), train_dataset=TokenDataset(),
                         regularizers=[L2SP(alpha=1.0)])
    with pytest.raises(ValueError, match=r"written with regularizers \['ewc', 'replay', 'l2sp'\]"):
        tr.train(resume_from_checkpoint=str(tmp_path / "checkpoint-3"))


@pytest.mark.parametrize("per_example", [True, False])
def test_bf16_autocast_fisher_matches_fp32(per_example):
    """Mixed precision: forwards under bf16 autocast, squares summed in fp32. Stated tolerance: the total Fisher
    within 1 %, every tensor within 5 % (relative L2) of the fp32 estimate; measured 0.1 % and < 1 %."""
    model = tiny_bert(num_labels=3)
    data = list(_batches(TokenDataset(n=32, num_labels=3), 8))
    ref, _ = estimate_fisher(model, data, per_example=per_example)
    bf, _ = estimate_fisher(model, data, per_example=per_example, autocast_dtype=torch.bfloat16)
    assert all(v.dtype == torch.float32 for v in bf.values())
    total = sum(v.sum() for v in bf.values()) / sum(v.sum() for v in ref.values())
    assert total.item() == pytest.approx(1.0, abs=0.01)
    for k, v in ref.items():
        if v.norm() > 0:
            assert ((bf[k] - v).norm() / v.norm()).item() < 0.05, k


def test_penalty_of_a_bf16_model_is_computed_in_fp32():
    model = tiny_bert()
    ewc = _trained_ewc(model, lambda_=10.0)
    model = model.to(torch.bfloat16)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)
    ewc.bind(model)
    named = list(model.named_parameters())
    for _, p in named:
        p.grad = torch.zeros_like(p)
    ewc.add_penalty_grad(named)
    fisher, anchors = ewc.tasks[0]
    for n, p in named:
        expect = (10.0 * fisher[n] * (p.detach().float() - anchors[n])).to(torch.bfloat16)
        assert p.grad.dtype == torch.bfloat16
        torch.testing.assert_close(p.grad, expect, rtol=1e-2, atol=1e-6, msg=n)


def test_checkpoint_without_our_state_is_refused_when_regularizers_need_it(tmp_path):
    _resume_run(tmp_path, 3)
    os.remove(tmp_path / "checkpoint-3" / "tl_hf_state.json")
    with pytest.raises(ValueError, match=r"checkpoint-3 has no tl_hf_state.json.*\(ewc, replay, l2sp\) is missing"):
        _resume_run(tmp_path, 7, resume=str(tmp_path / "checkpoint-3"))


def test_penalty_gradients_equal_autograd_of_the_penalty_value():
    """add_penalty_grad must add exactly d(penalty_value)/d(theta) (EWC, online EWC, L2-SP with new parameters)."""
    import torch

    from tl_hf.regularizers import EWC, L2SP, OnlineEWC

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.ReLU(), torch.nn.Linear(4, 3))
    named = list(model.named_parameters())
    ewc, oewc = EWC(lambda_=3.0), OnlineEWC(lambda_=2.0, gamma=0.5)
    for reg in (ewc, oewc):
        reg.tasks = [({n: torch.rand_like(p) for n, p in named}, {n: p.detach() + torch.randn_like(p) for n, p in named})]
        reg.meta = {}
        reg.bind(model)
    l2sp = L2SP(alpha=0.7, beta=0.2, new_params=[r"^2\."])
    l2sp.bind(model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    for reg in (ewc, oewc, l2sp):
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
        reg.add_penalty_grad(named, 1.0)
        ours = [p.grad.clone() for p in model.parameters()]
        value = reg.penalty_value(model)
        # autograd of the same penalty, recomputed from the regularizer's own value on perturbed weights
        eps = 1e-3
        for (n, p), g in zip(named, ours):
            i = tuple(0 for _ in p.shape)
            with torch.no_grad():
                p[i] += eps
                up = reg.penalty_value(model)
                p[i] -= 2 * eps
                down = reg.penalty_value(model)
                p[i] += eps
            assert abs((up - down) / (2 * eps) - float(g[i])) < 1e-2 * max(1.0, abs(float(g[i]))), (reg.name, n)
        assert value > 0


def test_card_line_and_tags_of_every_regularizer():
    """The model card's regularizer bullet and Hub tags come from the regularizer itself (same text as before)."""
    from dataclasses import dataclass

    from tl_hf.regularizers.base import Regularizer, RegularizerConfig, card_tags_of

    @dataclass
    class OtherConfig(RegularizerConfig):
        strength: float = 0.25
        names: list | None = None

    class Other(Regularizer):
        name = "my_other"
        config_cls = OtherConfig

    cases = [
        (EWC(), "- **EWC**: λ = `1`, Fisher estimator `empirical` (per-example gradients, `1024` samples)"),
        (EWC(lambda_=250.0, per_example=False, num_samples=64, exempt=[r"classifier\."]),
         "- **EWC**: λ = `250`, Fisher estimator `empirical` (batch-mean gradients, `64` samples); "
         "exempt: `classifier\\.`"),
        (OnlineEWC(gamma=0.9, lambda_=1e-3),
         "- **online EWC**: λ = `0.001`, γ = `0.9`, Fisher estimator `empirical` (`1024` samples)"),
        (L2SP(), "- **L2-SP**: α = `0.01` (pull to the pretrained weights), β = `0.01` (new parameters), anchors: the "
                 "starting weights"),
        (L2SP(alpha=0.1, beta=0.0, source="x/y.safetensors", exempt=["a", "b"]),
         "- **L2-SP**: α = `0.1` (pull to the pretrained weights), β = `0.0` (new parameters), anchors from "
         "`x/y.safetensors`; exempt: `a, b`"),
        (Replay(), "- **replay**: budget `200` examples, selection `reservoir`, mode `interleave`, ratio `0.2`"),
        (Replay(mode="term", weight=0.5, budget=10, selection="class_balanced"),
         "- **replay**: budget `10` examples, selection `class_balanced`, mode `term`, weight `0.5`"),
        (Other(OtherConfig(strength=1 / 3, names=["a", "b"], exempt=["h"])),
         "- **my_other**: strength = `0.3333`, names = `a, b`; exempt: `h`"),
    ]
    for reg, line in cases:
        assert reg.card_line() == line
    ewc, l2sp, oewc, replay, other = EWC(), L2SP(), OnlineEWC(), Replay(), cases[-1][0]
    assert [r.card_tags() for r in (ewc, oewc, l2sp, replay, other)] == [
        ["ewc", "continual-learning"], ["online-ewc", "continual-learning"], ["l2-sp"],
        ["replay", "continual-learning"], ["my-other"]]
    assert card_tags_of([l2sp, ewc]) == ["l2-sp", "ewc", "continual-learning"]
    assert card_tags_of([replay, l2sp, oewc, other]) == ["replay", "l2-sp", "online-ewc", "my-other",
                                                         "continual-learning"]
    assert card_tags_of([l2sp]) == ["l2-sp"] and card_tags_of([]) == []


def test_the_registry_refuses_a_duplicate_name():
    from tl_hf.regularizers import REGULARIZERS, Regularizer, register_regularizer

    class Impostor(Regularizer):
        name = "ewc"

    with pytest.raises(ValueError, match="regularizer 'ewc' is already registered"):
        register_regularizer(Impostor)
    assert REGULARIZERS["ewc"].__name__ == "EWC"
