"""Progress bars outside the Trainer loop (issue 13): the WiSE-FT sweep and the continual evaluation show a bar on the
local main process only, and none with ``disable_tqdm``; the continual task refuses ``evaluation.metrics``, which it
would otherwise ignore (it scores by accuracy: the accuracy matrix, ACC, BWT)."""

from __future__ import annotations

import pytest
import torch

from tiny import TokenDataset, tiny_bert, training_args
from tl_hf import TransferTrainer
from tl_hf._errors import ConfigError
from tl_hf.core import progress
from tl_hf.core.wise_ft import snapshot
from tl_hf.run.wise_ft import wise_ft_sweep


def _sweep_err(tmp_path, capsys, disable: bool) -> str:
    model = tiny_bert(seed=0)
    init = snapshot(model)
    tr = TransferTrainer(model, training_args(tmp_path, max_steps=1, disable_tqdm=disable),
                         train_dataset=TokenDataset(n=8), eval_dataset=TokenDataset(n=8, seed=3))
    capsys.readouterr()
    wise_ft_sweep(tr, init, [0.0, 0.5, 1.0], metric="loss", greater_is_better=False)
    return capsys.readouterr().err


def test_wise_ft_sweep_shows_a_bar_unless_disabled(tmp_path, capsys, monkeypatch):
    shown = _sweep_err(tmp_path, capsys, disable=False)
    assert "WiSE-FT sweep" in shown and "0/3" in shown  # one step per alpha
    assert "WiSE-FT sweep" not in _sweep_err(tmp_path, capsys, disable=True)
    monkeypatch.setattr(progress, "is_local_main_process", lambda: False)  # another local rank: no bar
    assert "WiSE-FT sweep" not in _sweep_err(tmp_path, capsys, disable=False)


def _continual_err(tmp_path, capsys, disable: bool) -> str:
    from tl_hf.continual import MLP_LAYER_MAP, ContinualRunner, SmallMLP, Task, TensorDictDataset

    g = torch.Generator().manual_seed(0)

    def data(pair):
        ys = torch.tensor([pair[i % 2] for i in range(8)])
        return TensorDictDataset(pixel_values=torch.rand(8, 1, 28, 28, generator=g), labels=ys)

    tasks = [Task(f"t{k}", data(p), data(p), labels=list(p)) for k, p in enumerate([(0, 1), (2, 3)])]
    runner = ContinualRunner(SmallMLP(4, hidden=8, seed=0), tasks, scenario="class_incremental",
                             output_dir=str(tmp_path / f"c{int(disable)}"), num_labels=4, plot=False,
                             trainer_kwargs={"layer_map": MLP_LAYER_MAP},
                             training_args=dict(max_steps=1, per_device_train_batch_size=8, logging_steps=100,
                                                disable_tqdm=disable, use_cpu=True, report_to="none"))
    capsys.readouterr()
    runner.run()
    return capsys.readouterr().err


def test_continual_evaluation_shows_a_bar_unless_disabled(tmp_path, capsys):
    torch.set_num_threads(1)
    assert "evaluating after task 2" in _continual_err(tmp_path, capsys, disable=False)
    assert "evaluating after task" not in _continual_err(tmp_path, capsys, disable=True)


def test_continual_refuses_evaluation_metrics_before_reading_data(tmp_path):
    from tl_hf.run.config import load_config
    from tl_hf.run.tasks.continual.run import run_continual_recipe

    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(f"task: continual\ndata: {{root: {tmp_path / 'nowhere'}, scenario: class_incremental}}\n"
                        "evaluation: {metrics: [{name: f1, average: macro}]}\n"
                        f"training: {{output_dir: {tmp_path / 'out'}}}\n")
    with pytest.raises(ConfigError, match=r"^evaluation\.metrics is not used by task: continual .*accuracy.*drop "
                                          r"evaluation\.metrics$"):
        run_continual_recipe(load_config(cfg_file), log=lambda *_: None)
    assert not (tmp_path / "out").exists()
