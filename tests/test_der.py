"""DER / DER++ (Buzzega et al. 2020): logits stored at insertion, exact safetensors round trip, the loss formulas."""

import pytest
import torch
import torch.nn.functional as F
from transformers import default_data_collator

from tiny import TokenDataset, tiny_bert, training_args
from tl_hf import TransferTrainer
from tl_hf.regularizers import DER, StepContext, build_regularizer
from tl_hf.regularizers.der import LOGITS_KEY


def _filled(budget=6, n=10, **kw):
    model = tiny_bert(seed=0)
    der = DER(budget=budget, batch_size=4, **kw)
    der.end_task(model, TokenDataset(n=n, seed=1))
    return model, der


def test_logits_are_stored_at_insertion_and_round_trip_exactly(tmp_path):
    model, der = _filled()
    model.eval()
    for ex in der.memory.examples:
        with torch.no_grad():
            z = model(input_ids=ex["input_ids"][None], attention_mask=ex["attention_mask"][None]).logits[0]
        torch.testing.assert_close(ex[LOGITS_KEY], z, rtol=0, atol=1e-6)
    der.save(tmp_path, prefix="der")
    back = DER(budget=6, batch_size=4).load(tmp_path, prefix="der")
    assert back.memory.provenance == der.memory.provenance
    for a, b in zip(der.memory.examples, back.memory.examples):
        assert set(a) == set(b)
        for k in a:
            assert torch.equal(a[k], b[k]), k
    # examples kept from task 1 keep their task-1 logits after the model changed and task 2 came in
    kept = {p: ex[LOGITS_KEY].clone() for p, ex in zip(der.memory.provenance, der.memory.examples)}
    with torch.no_grad():
        model.classifier.weight.mul_(3.0)
    der.end_task(model, TokenDataset(n=10, seed=2), source="task2")
    for p, ex in zip(der.memory.provenance, der.memory.examples):
        if p in kept:
            assert torch.equal(ex[LOGITS_KEY], kept[p])
    assert any(p[0] == "task2" for p in der.memory.provenance)


def _ctx(step=3):
    return StepContext(step, 0, 0, default_data_collator, lambda b: b, lambda m: m)


@pytest.mark.parametrize("beta", [0.0, 0.7])
def test_loss_terms_equal_the_formulas(beta):
    model, der = _filled(alpha=0.4, beta=beta)
    with torch.no_grad():
        model.classifier.weight.add_(0.5)  # the model moved since insertion: the MSE is not zero
    ctx = _ctx()
    idx = der.sample(ctx)
    assert idx == der.sample(ctx) and len(idx) == 4
    exs = [der.memory.examples[i] for i in idx]
    stored = torch.stack([e[LOGITS_KEY] for e in exs])
    z = model(input_ids=torch.stack([e["input_ids"] for e in exs]),
              attention_mask=torch.stack([e["attention_mask"] for e in exs])).logits
    y = torch.stack([e["labels"] for e in exs])
    ref = 0.4 * ((z - stored) ** 2).mean() + beta * F.cross_entropy(z, y)
    got = der.extra_loss(model, {}, ctx)
    assert float(((z - stored) ** 2).mean()) > 1e-4
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-7)
    got.backward()
    assert model.classifier.weight.grad is not None and model.classifier.weight.grad.abs().sum() > 0


def test_logits_of_another_head_size_are_refused():
    _, der = _filled()
    with pytest.raises(ValueError, match=r"der: the memory holds logits of head size \[2\], this model has 3 outputs"):
        der.bind(tiny_bert(num_labels=3))
    with pytest.raises(ValueError, match="der mode must be 'term'"):
        build_regularizer({"name": "der", "mode": "interleave"})
    with pytest.raises(ValueError, match="der takes alpha"):
        build_regularizer({"name": "der", "weight": 0.5})


def test_replay_memory_without_logits_is_refused():
    der = DER(budget=2)
    der.memory.add_dataset(TokenDataset(n=4))
    with pytest.raises(ValueError, match="examples without stored logits"):
        der.bind(tiny_bert())


def test_der_trains_through_the_trainer_and_resumes(tmp_path):
    model, der = _filled(beta=0.5)

    def run(out, **kw):
        d = DER(budget=6, batch_size=4, beta=0.5)
        d.load_state_dict(*der.state_dict())
        args = training_args(out, max_steps=4, optim="sgd", learning_rate=0.5, lr_scheduler_type="constant",
                             train_sampling_strategy="sequential", **kw)
        return TransferTrainer(tiny_bert(seed=0), args, train_dataset=TokenDataset(n=32), regularizers=[d])

    full = run(tmp_path / "full")
    full.train()
    assert all(h["der/loss"] > 0 for h in full.state.log_history if "der/loss" in h)
    part = run(tmp_path / "part", save_strategy="steps", save_steps=2)
    part.train()
    resumed = run(tmp_path / "part")
    resumed.train(resume_from_checkpoint=str(tmp_path / "part" / "checkpoint-2"))
    for (n, p), (_, q) in zip(full.model.named_parameters(), resumed.model.named_parameters()):
        assert torch.equal(p, q), n


def test_card_lines():
    assert DER(budget=50, alpha=0.3).card_line() == (
        "- **DER** (replay with stored logits): budget `50` examples, selection `reservoir`, logit MSE weight α `0.3`, "
        "replay batch `16`")
    assert DER(beta=0.5).card_line().startswith("- **DER++** (replay with stored logits)")
    assert "label CE weight β `0.5`" in DER(beta=0.5).card_line()
    assert DER(beta=0.5).card_tags() == ["der-plus-plus", "replay", "continual-learning"]
