"""LwF (Li & Hoiem 2017): T^2-scaled KL to a frozen teacher, zero when student == teacher; the teacher saved once."""

import pytest
import torch
from safetensors.torch import load_file

from tiny import TokenDataset, tiny_bert, training_args
from tl_hf import TransferTrainer
from tl_hf.regularizers import LwF, build_regularizer
from tl_hf.regularizers.lwf import LwFConfig, kd_loss


def test_kd_loss_is_zero_for_equal_logits_and_matches_the_formula():
    torch.manual_seed(0)
    s, t = torch.randn(4, 3), torch.randn(4, 3)
    assert kd_loss(s, s.clone(), 2.0).item() == pytest.approx(0.0, abs=1e-7)
    T = 3.0
    ps, pt = torch.softmax(s / T, -1), torch.softmax(t / T, -1)
    ref = T ** 2 * (pt * (pt.log() - ps.log())).sum(-1).mean()
    torch.testing.assert_close(kd_loss(s, t, T), ref, rtol=1e-5, atol=1e-7)
    # token-level logits (batch, length, classes): every token is a row
    s3, t3 = torch.randn(2, 5, 3), torch.randn(2, 5, 3)
    torch.testing.assert_close(kd_loss(s3, t3, T), kd_loss(s3.reshape(10, 3), t3.reshape(10, 3), T))


def _trainer(tmp_path, lwf, **kw):
    args = training_args(tmp_path, max_steps=4, optim="sgd", learning_rate=0.5, lr_scheduler_type="constant",
                         train_sampling_strategy="sequential", **kw)
    return TransferTrainer(tiny_bert(seed=0), args, train_dataset=TokenDataset(n=32), regularizers=[lwf])


def test_pretrained_teacher_loss_is_zero_at_the_first_step_then_pulls(tmp_path):
    tr = _trainer(tmp_path, {"name": "lwf", "teacher": "pretrained", "weight": 1.0})
    tr.train()
    losses = [h["lwf/loss"] for h in tr.state.log_history if "lwf/loss" in h]
    assert len(losses) == 4 and losses[0] == pytest.approx(0.0, abs=1e-7) and losses[-1] > 1e-6
    lwf = tr.regularizers[0]
    assert not lwf.teacher.training and not any(p.requires_grad for p in lwf.teacher.parameters())
    # the teacher kept the starting weights
    torch.testing.assert_close(lwf.teacher.classifier.weight, tiny_bert(seed=0).classifier.weight)
    # not a submodule of the student
    assert not any("teacher" in k for k in tr.model.state_dict())
    plain = _trainer(tmp_path / "w0", {"name": "lwf", "teacher": "pretrained", "weight": 0.0})
    plain.train()
    assert not torch.allclose(plain.model.classifier.weight, tr.model.classifier.weight)


def test_teacher_saved_once_and_restored_on_resume(tmp_path):
    spec = {"name": "lwf", "teacher": "pretrained", "weight": 2.0, "temperature": 3.0}
    full = _trainer(tmp_path / "full", spec)
    full.train()
    part = _trainer(tmp_path / "part", spec, save_strategy="steps", save_steps=2)
    part.train()
    ckpt = tmp_path / "part" / "checkpoint-2"
    model_keys = set(load_file(str(ckpt / "model.safetensors")))
    assert model_keys == set(tiny_bert().state_dict()) - {"bert.embeddings.position_ids"} or \
        model_keys <= set(tiny_bert().state_dict())
    teacher = load_file(str(ckpt / "tl_hf_reg_lwf.safetensors"))
    torch.testing.assert_close(teacher["classifier.weight"], tiny_bert(seed=0).classifier.weight)
    resumed = _trainer(tmp_path / "part", spec)
    resumed.train(resume_from_checkpoint=str(ckpt))
    for (n, p), (_, q) in zip(full.model.named_parameters(), resumed.model.named_parameters()):
        assert torch.equal(p, q), n


def test_previous_task_teacher_from_end_task():
    model = tiny_bert(seed=0)
    lwf = LwF(LwFConfig(teacher="previous_task"))
    assert not lwf.active
    lwf.end_task(model, TokenDataset(n=4))
    assert lwf.active and lwf.teacher is not model
    with torch.no_grad():
        model.classifier.weight.add_(1.0)
    assert not torch.equal(lwf.teacher.classifier.weight, model.classifier.weight)


def test_lwf_without_a_teacher_is_refused(tmp_path):
    with pytest.raises(ValueError, match="lwf has no teacher"):
        LwF().bind(tiny_bert())
    with pytest.raises(ValueError, match="lwf has no teacher"):
        _trainer(tmp_path, {"name": "lwf"}).train()
    with pytest.raises(ValueError, match="lwf temperature must be a number > 0"):
        build_regularizer({"name": "lwf", "temperature": 0})
    with pytest.raises(ValueError, match="lwf teacher must be one of previous_task, pretrained"):
        build_regularizer({"name": "lwf", "teacher": "ema"})


def test_a_teacher_with_another_head_is_refused():
    lwf = LwF(LwFConfig(teacher="previous_task"))
    lwf.set_teacher(tiny_bert(num_labels=3))
    student = tiny_bert(num_labels=2)
    lwf.bind(student)
    batch = TokenDataset(n=2)[0]
    inputs = {k: v[None] for k, v in batch.items()}
    with pytest.raises(ValueError, match=r"teacher's logits have shape \(1, 3\), the model's \(1, 2\)"):
        lwf.extra_loss(student, inputs, None)


def test_card_line_names_the_teacher_and_settings():
    assert LwF(LwFConfig(weight=0.5, temperature=2.0, teacher="pretrained")).card_line() == (
        "- **LwF**: distillation from the model as training started (frozen, eval mode), weight `0.5`, temperature `2`")
    assert LwF().card_tags() == ["lwf", "continual-learning"]
