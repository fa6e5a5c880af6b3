"""Re-init and weight averaging in the continual runner (per task, as ContinualRunner documents), and evaluation
through ``predict`` on the averaged weights."""

import copy

import pytest
import torch

from tiny import TokenDataset, tiny_bert
from tl_hf.continual import ContinualRunner, Task
from tl_hf.core.trainer import TransferTrainer


class _Labelled(torch.utils.data.Dataset):
    """TokenDataset with its labels shifted into a task's own classes (class-incremental)."""

    def __init__(self, n, labels, seed):
        self.base = TokenDataset(n=n, length=6, num_labels=2, seed=seed)
        self.labels = labels

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        ex = dict(self.base[i])
        ex["labels"] = torch.tensor(self.labels[int(ex["labels"])])
        return ex


def _tasks():
    return [Task(f"task{k + 1}", _Labelled(16, pair, k), _Labelled(8, pair, 10 + k), labels=list(pair))
            for k, pair in enumerate([(0, 1), (2, 3)])]


def _runner(tmp_path, model, **trainer_kwargs):
    args = dict(max_steps=3, per_device_train_batch_size=8, learning_rate=1e-2, logging_steps=1000, seed=0,
                report_to="none", disable_tqdm=True)
    return ContinualRunner(model, _tasks(), scenario="class_incremental", output_dir=str(tmp_path / "out"),
                           training_args=args, trainer_kwargs=trainer_kwargs, num_labels=4, plot=False)


def test_reinit_in_the_continual_runner_happens_before_the_first_task_only(tmp_path, monkeypatch):
    import tl_hf.core.trainer as tr

    calls = []
    real = tr.reinit_top_blocks

    def spy(model, top_k, **kw):
        calls.append(top_k)
        return real(model, top_k, **kw)

    monkeypatch.setattr(tr, "reinit_top_blocks", spy)
    model = tiny_bert(num_layers=2, num_labels=4)
    before = copy.deepcopy(model.state_dict())
    runner = _runner(tmp_path, model, reinit={"top_k": 1, "seed": 3})
    runner.run()
    assert calls == [1]  # task 1 only, not task 2
    # and it did re-initialise the top block before task 1: a fresh copy re-initialised alike gives the weights that
    # task 1 started from, which differ from the pretrained ones
    fresh = tiny_bert(num_layers=2, num_labels=4)
    real(fresh, 1, seed=3)
    k = "bert.encoder.layer.1.attention.self.query.weight"
    assert not torch.equal(fresh.state_dict()[k], before[k])


def test_continual_averaging_restarts_per_task_and_the_model_after_a_task_is_the_average(tmp_path):
    model = tiny_bert(num_layers=2, num_labels=4)
    seen = {}

    class Probe(ContinualRunner):
        def _end_task(self, k, args):
            av = self._trainer.averager
            seen[k] = (av.num_averaged, {n: t.clone() for n, t in av.shadow.items()},
                       {n: p.detach().clone() for n, p in self.model.named_parameters()})
            super()._end_task(k, args)

    args = dict(max_steps=3, per_device_train_batch_size=8, learning_rate=1e-2, logging_steps=1000, seed=0,
                report_to="none", disable_tqdm=True)
    Probe(model, _tasks(), scenario="class_incremental", output_dir=str(tmp_path / "out"), training_args=args,
          trainer_kwargs={"averaging": {"method": "swa"}}, num_labels=4, plot=False).run()
    for k in (0, 1):
        n, shadow, params = seen[k]
        assert n == 3  # SWA over this task's 3 steps: restarted at the task, not carried from task 1
        for name, t in shadow.items():
            assert torch.equal(params[name], t)  # final_average: the model after the task is the average


def _trained_without_final_average(tmp_path):
    model = tiny_bert(num_layers=2, num_labels=2)
    from transformers import TrainingArguments

    args = TrainingArguments(output_dir=str(tmp_path / "t"), max_steps=4, per_device_train_batch_size=8,
                             learning_rate=5e-2, report_to="none", use_cpu=True, disable_tqdm=True, save_strategy="no")
    trainer = TransferTrainer(model, args, train_dataset=TokenDataset(32, 6),
                              averaging={"method": "ema", "decay": 0.5, "final_average": False})
    trainer.train()
    return model, trainer


def test_predict_runs_on_the_averaged_weights_and_leaves_the_raw_ones(tmp_path):
    model, trainer = _trained_without_final_average(tmp_path)
    data = TokenDataset(8, 6, seed=5)
    raw = {n: p.detach().clone() for n, p in model.named_parameters()}
    avg = copy.deepcopy(model)
    with torch.no_grad():
        for n, p in avg.named_parameters():
            if n in trainer.averager.shadow:
                p.copy_(trainer.averager.shadow[n])
    batch = {k: torch.stack([data[i][k] for i in range(8)]) for k in ("input_ids", "attention_mask")}
    with torch.no_grad():
        want = avg.eval()(**batch).logits
        raw_logits = copy.deepcopy(model).eval()(**batch).logits
    got = torch.as_tensor(trainer.predict(data).predictions)
    assert torch.allclose(got, want, atol=1e-5) and not torch.allclose(got, raw_logits, atol=1e-3)
    for n, p in model.named_parameters():
        assert torch.equal(p.detach(), raw[n])  # swapped back afterwards


def test_continual_evaluation_scores_the_averaged_weights(tmp_path):
    model = tiny_bert(num_layers=2, num_labels=4)
    runner = _runner(tmp_path, model, averaging={"method": "ema", "decay": 0.5, "final_average": False})
    res = runner.run()
    av = runner._trainer.averager
    task = runner.tasks[1]
    ref = copy.deepcopy(runner.model).eval()
    with torch.no_grad():
        for n, p in ref.named_parameters():
            if n in av.shadow:
                p.copy_(av.shadow[n])
        batch = {k: torch.stack([task.eval[i][k] for i in range(len(task.eval))])
                 for k in ("input_ids", "attention_mask", "labels")}
        pred = ref(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.argmax(-1)
    assert res.R[1][1] == pytest.approx(float((pred == batch["labels"]).float().mean()))


def test_the_continual_config_hands_reinit_and_averaging_to_every_task(tmp_path, monkeypatch):
    from tl_hf.run.config import load_config
    from tl_hf.run.tasks.continual import run as crun

    cfg = load_config(None, ["task=continual", "averaging.method=ema", "reinit.top_k=1", "data.kind=mnist"])
    captured = {}

    class Fake:
        def __init__(self, model, tasks, **kw):
            captured.update(kw["trainer_kwargs"])

    from types import SimpleNamespace

    prep = SimpleNamespace(tasks=[], num_labels=10, collator=None)
    args = SimpleNamespace(output_dir=str(tmp_path), per_device_eval_batch_size=8)
    import tl_hf.continual as cont

    monkeypatch.setattr(cont, "ContinualRunner", Fake)
    crun._runner(cfg, args, None, None, prep, cfg.llrd, cfg.freezing, str(tmp_path / "s"))
    assert captured["averaging"].method == "ema" and captured["reinit"].top_k == 1
