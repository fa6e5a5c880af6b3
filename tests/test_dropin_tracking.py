"""TransferTrainer as a drop-in for Trainer on models outside the architecture table; trackers (report_to tensorboard,
read back with tensorboard's EventAccumulator); progress bars outside the Trainer loop; continual evaluation through
Trainer.predict."""

from __future__ import annotations

import glob
import logging

import pytest
import torch
import torch.nn as nn
import transformers as T

from tiny import TokenDataset, params_snapshot, training_args
from tl_hf import TransferTrainer, UnknownArchitectureError


def _gpt2(n_layer=2, seed=0):
    torch.manual_seed(seed)
    cfg = T.GPT2Config(n_layer=n_layer, n_embd=16, n_head=2, vocab_size=99, n_positions=16, num_labels=2,
                       bos_token_id=0, eos_token_id=0, pad_token_id=0)
    return T.GPT2ForSequenceClassification(cfg)


def _events(logdir: str) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict[str, list[tuple[int, float]]] = {}
    for f in sorted(glob.glob(f"{logdir}/**/events.out.tfevents.*", recursive=True)):
        acc = EventAccumulator(f)
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            out.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    return out


# ---------------------------------------------------------------------------------------------------------------------
# drop-in
# ---------------------------------------------------------------------------------------------------------------------

def test_plain_trainer_script_with_transfer_trainer_trains_gpt2(tmp_path, caplog):
    model = _gpt2()
    before = params_snapshot(model)
    args = training_args(tmp_path, max_steps=3)
    with caplog.at_level(logging.INFO, logger="tl_hf"):
        trainer = TransferTrainer(model=model, args=args, train_dataset=TokenDataset(n=24))  # as with Trainer
        out = trainer.train()
    assert trainer.layer_map.is_flat and trainer.layer_map.model_type == "gpt2"
    assert "gpt2 (GPT2ForSequenceClassification) has no built-in layer map" in caplog.text
    assert "every parameter is at one depth" in caplog.text
    assert [g["name"] for g in trainer.optimizer.param_groups] == ["all"]  # weight_decay 0: one group
    assert out.global_step == 3
    moved = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    assert len(moved) == len(before)
    logged = [h for h in trainer.state.log_history if "lr/all" in h]
    assert logged and logged[0]["trainable_params"] == sum(p.numel() for p in model.parameters())


def test_dropin_with_regularizers_and_a_card_without_depths(tmp_path):
    from tl_hf.core.model_card import transfer_card_section

    model = _gpt2()
    trainer = TransferTrainer(model, training_args(tmp_path, max_steps=2), train_dataset=TokenDataset(n=16),
                              regularizers=[{"name": "l2sp", "alpha": 0.1}])
    trainer.train()
    assert any("penalty/l2sp" in h for h in trainer.state.log_history)
    card = transfer_card_section(trainer)
    assert "depth levels: 1 (no layer map: every parameter at one depth" in card
    assert "| depth |" not in card


def test_depth_features_use_the_discovered_map_or_name_what_needs_it(tmp_path):
    model = _gpt2(n_layer=3)
    trainer = TransferTrainer(model, training_args(tmp_path, max_steps=1), train_dataset=TokenDataset(n=8),
                              llrd={"decay": 0.5}, freezing={"policy": "top_k", "k": 1})
    assert (trainer.layer_map.source, trainer.layer_map.num_blocks) == ("discovered", 3)
    trainer.train()
    lrs = {g["name"]: g["initial_lr"] for g in trainer.optimizer.param_groups}
    assert lrs["head"] == pytest.approx(1e-3)
    assert lrs["layer.2"] == pytest.approx(5e-4) and lrs["embeddings"] == pytest.approx(1e-3 / 16)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("transformer.h.2.", "transformer.ln_f.", "score.")) for n in trainable)

    class NoBlocks(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.out = nn.Embedding(99, 8), nn.Linear(8, 2)

        def forward(self, input_ids, attention_mask=None, labels=None):
            logits = self.out(self.emb(input_ids).mean(1))
            return {"loss": nn.functional.cross_entropy(logits, labels), "logits": logits}

    TransferTrainer(NoBlocks(), training_args(tmp_path), train_dataset=TokenDataset(n=8))  # nothing needs depths
    with pytest.raises(UnknownArchitectureError, match=r"^llrd\.decay=0\.8 needs the depth of every parameter.*"
                                                       r"NoBlocks.*layer_map="):
        TransferTrainer(NoBlocks(), training_args(tmp_path), train_dataset=TokenDataset(n=8), llrd={"decay": 0.8})


# ---------------------------------------------------------------------------------------------------------------------
# report_to: tensorboard
# ---------------------------------------------------------------------------------------------------------------------

def test_tensorboard_event_file_holds_group_lrs_trainable_params_and_penalties(tmp_path, monkeypatch):
    from tiny import tiny_bert

    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "tb"))
    trainer = TransferTrainer(tiny_bert(), training_args(tmp_path, max_steps=3, report_to=["tensorboard"]),
                              train_dataset=TokenDataset(n=24), llrd={"decay": 0.5},
                              regularizers=[{"name": "l2sp", "alpha": 0.1}])
    trainer.train()
    ev = _events(str(tmp_path / "tb"))
    for tag in ("train/lr/embeddings", "train/lr/layer.0", "train/lr/layer.1", "train/lr/head",
                "train/trainable_params", "train/penalty/l2sp", "train/loss"):
        assert [s for s, _ in ev[tag]] == [1, 2, 3], tag
    logged = [h for h in trainer.state.log_history if "lr/head" in h]
    for (step, value), h in zip(ev["train/lr/layer.0"], logged):
        assert step == h["step"] and value == pytest.approx(h["lr/layer.0"], rel=1e-6)
    assert ev["train/lr/embeddings"][0][1] == pytest.approx(ev["train/lr/head"][0][1] * 0.125, rel=1e-5)
    assert ev["train/trainable_params"][0][1] == sum(p.numel() for p in trainer.model.parameters())
    assert ev["train/penalty/l2sp"][-1][1] > 0


def test_tensorboard_from_a_run_config(tmp_path):
    """`training.report_to=tensorboard` in a config (here as an override) reaches the Trainer's callbacks."""
    from transformers.integrations import TensorBoardCallback

    from tiny import tiny_bert
    from tl_hf.run.config import load_config
    from tl_hf.run.template import build_training_args

    cfg = load_config("recipes/configs/sst2_minilm_llrd.yaml",
                      ["training.report_to=tensorboard", f"training.output_dir={tmp_path / 'out'}"])
    args = build_training_args(cfg)
    assert args.report_to == ["tensorboard"]
    tr = TransferTrainer(tiny_bert(), args, train_dataset=TokenDataset(n=8))
    assert any(isinstance(cb, TensorBoardCallback) for cb in tr.callback_handler.callbacks)


# ---------------------------------------------------------------------------------------------------------------------
# continual: Trainer.predict, trackers, bars
# ---------------------------------------------------------------------------------------------------------------------

def _continual_runner(tmp_path, **kw):
    from tl_hf.continual import MLP_LAYER_MAP, ContinualRunner, SmallMLP, Task, TensorDictDataset

    g = torch.Generator().manual_seed(0)
    tasks = []
    for k, pair in enumerate([(0, 1), (2, 3)]):
        ys = torch.tensor([pair[i % 2] for i in range(20)])
        make = lambda: TensorDictDataset(pixel_values=torch.rand(20, 1, 28, 28, generator=g), labels=ys.clone())
        tasks.append(Task(f"t{k + 1}", make(), make(), labels=list(pair)))
    args = dict(max_steps=3, per_device_train_batch_size=8, learning_rate=1e-2, logging_steps=1, seed=0)
    args.update(kw.pop("args", {}))
    return ContinualRunner(SmallMLP(4, hidden=16, seed=0), tasks, scenario="class_incremental",
                           output_dir=str(tmp_path / "out"), training_args=args, layer_map=MLP_LAYER_MAP,
                           eval_batch_size=7, plot=False, **kw), tasks


def _hand_accuracy(model, dataset, allowed=None):
    """The evaluation loop the runner had before Trainer.predict: the oracle for identical accuracies."""
    model.eval()
    loader = torch.utils.data.DataLoader(dataset, batch_size=7, shuffle=False,
                                         collate_fn=T.default_data_collator)
    correct = total = 0
    with torch.no_grad():
        for batch in loader:
            logits = model(pixel_values=batch["pixel_values"])["logits"]
            if allowed is not None:
                mask = torch.full_like(logits, float("-inf"))
                mask[..., list(allowed)] = 0.0
                logits = logits + mask
            correct += int((logits.argmax(-1) == batch["labels"]).sum())
            total += batch["labels"].numel()
    return correct / total


def test_continual_evaluation_goes_through_trainer_predict(tmp_path, monkeypatch):
    calls = []
    original = T.Trainer.predict

    def spy(self, dataset, *a, **k):
        calls.append((type(self).__name__, self.args.per_device_eval_batch_size, len(dataset)))
        return original(self, dataset, *a, **k)

    monkeypatch.setattr(T.Trainer, "predict", spy)
    runner, tasks = _continual_runner(tmp_path)
    res = runner.run()
    assert calls == [("TransferTrainer", 7, 20)] * 3  # after task 1: t1; after task 2: t1, t2
    assert res.R[1][0] == _hand_accuracy(runner.model, tasks[0].eval)
    assert res.R[1][1] == _hand_accuracy(runner.model, tasks[1].eval)
    assert runner.evaluate(tasks[0].eval, allowed=[0, 1]) == _hand_accuracy(runner.model, tasks[0].eval, [0, 1])


def test_continual_accuracy_matrix_acc_bwt_in_tensorboard(tmp_path, monkeypatch):
    from tl_hf.continual import accuracy_matrix_metrics

    runner, _ = _continual_runner(tmp_path, args={"report_to": ["tensorboard"]})
    res = runner.run()
    ev1 = _events(str(tmp_path / "out" / "task1_t1"))
    ev2 = _events(str(tmp_path / "out" / "task2_t2"))
    assert ev1["eval/continual/accuracy/t1"][-1] == (3, pytest.approx(res.R[0][0]))
    assert ev1["eval/continual/ACC"][-1][1] == pytest.approx(res.R[0][0])
    assert "eval/continual/BWT" not in ev1  # undefined after one task
    m = accuracy_matrix_metrics(res.R)
    assert ev2["eval/continual/accuracy/t1"][-1][1] == pytest.approx(res.R[1][0])
    assert ev2["eval/continual/accuracy/t2"][-1][1] == pytest.approx(res.R[1][1])
    assert ev2["eval/continual/ACC"][-1][1] == pytest.approx(m["ACC"])
    assert ev2["eval/continual/BWT"][-1][1] == pytest.approx(m["BWT"])
    assert "train/lr/head" in ev2 and "train/trainable_params" in ev2


# ---------------------------------------------------------------------------------------------------------------------
# progress bars
# ---------------------------------------------------------------------------------------------------------------------

def _fisher(capsys):
    from tiny import tiny_bert
    from tl_hf.regularizers.fisher import estimate_fisher

    data = TokenDataset(n=6)
    loader = torch.utils.data.DataLoader(data, batch_size=3, collate_fn=T.default_data_collator)
    capsys.readouterr()
    estimate_fisher(tiny_bert(), loader)
    return capsys.readouterr().err


def test_progress_bars_on_local_main_only_and_off_when_disabled(capsys, monkeypatch):
    from tl_hf.core import progress

    err = _fisher(capsys)
    assert "Fisher" in err and "0/6" in err  # a direct call shows it, with the number of examples
    with progress.progress_bars(False):  # not disable_tqdm == False
        assert "Fisher" not in _fisher(capsys)
    monkeypatch.setattr(progress, "is_local_main_process", lambda: False)
    assert "Fisher" not in _fisher(capsys)


def test_trainer_passes_disable_tqdm_to_the_fisher_and_feature_cache_bars(tmp_path, capsys):
    from tiny import tiny_bert

    for disable in (True, False):
        tr = TransferTrainer(tiny_bert(), training_args(tmp_path, max_steps=1, disable_tqdm=disable),
                             train_dataset=TokenDataset(n=8), regularizers=[{"name": "ewc", "lambda": 1.0}])
        capsys.readouterr()
        tr.end_task()
        assert ("Fisher" in capsys.readouterr().err) is not disable
        tr = TransferTrainer(tiny_bert(), training_args(tmp_path, max_steps=1, disable_tqdm=disable),
                             train_dataset=TokenDataset(n=8),
                             freezing={"policy": "feature_extraction", "cache_features": True})
        capsys.readouterr()
        tr.train()
        assert ("feature cache (training)" in capsys.readouterr().err) is not disable
