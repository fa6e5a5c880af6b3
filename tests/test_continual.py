"""Continual learning: accuracy-matrix metrics, validation before training, outputs, and Split-MNIST forgetting.

Split-MNIST here is built from the MNIST *test* set only (the 10k t10k images under the data root), so every task's
train and eval sets are carved out of it: a non-standard split, and the numbers are not comparable with the literature.
"""

import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import real_data_root
import torch

from tl_hf.continual import (MLP_LAYER_MAP, SmallMLP, ContinualRunner, Task, TensorDictDataset, accuracy_matrix_metrics,
                             plot_accuracy_matrix, run_continual, split_mnist_tasks)
from tl_hf.run.data.mnist import load_mnist_idx
from tl_hf.regularizers import L2SP, Regularizer, RegularizerConfig


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """The models here are tiny; on 2 shared cores two OpenMP threads fighting a busy neighbour made one 3-task MLP
    run take ~21 s instead of ~0.9 s with one thread (same results), so these tests use one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _data_root() -> Path:
    return real_data_root("mnist_t10k")


@pytest.fixture(scope="module")
def mnist():
    return load_mnist_idx(_data_root())


def MLP(num_labels: int, hidden: int = 64, seed: int = 0):  # noqa: N802 - reads like the class it builds
    return SmallMLP(num_labels, hidden=hidden, seed=seed)


def _toy_tasks(pairs, n=16, scenario="class_incremental", seed=0):
    """Random-pixel tasks (no data files needed) for validation and output tests."""
    g = torch.Generator().manual_seed(seed)
    tasks = []
    for k, pair in enumerate(pairs):
        ys = torch.tensor([pair[i % len(pair)] if scenario == "class_incremental" else i % len(pair)
                           for i in range(n)])
        labels = list(pair) if scenario == "class_incremental" else list(range(len(pair)))
        make = lambda: TensorDictDataset(pixel_values=torch.rand(n, 1, 28, 28, generator=g), labels=ys.clone())
        tasks.append(Task(f"task{k + 1}", make(), make(), labels=labels))
    return tasks


def _args(**kw):
    base = dict(max_steps=2, per_device_train_batch_size=8, learning_rate=1e-3, logging_steps=1000, seed=0)
    base.update(kw)
    return base


# ---------------------------------------------------------------------------------------------------------------------
# metrics
# ---------------------------------------------------------------------------------------------------------------------

def test_metrics_on_a_hand_computed_3x3_matrix():
    # upper triangle (never measured) holds junk that must be ignored
    R = [[0.90, 123.0, None],
         [0.95, 0.80, float("nan")],
         [0.50, 0.70, 0.95]]
    m = accuracy_matrix_metrics(R)
    # ACC = (0.50 + 0.70 + 0.95) / 3
    assert m["ACC"] == pytest.approx(2.15 / 3)
    # BWT = ((0.50 - 0.90) + (0.70 - 0.80)) / 2: against the accuracy right after each task, R[j][j]
    assert m["BWT"] == pytest.approx(-0.25)
    # forgetting uses the best earlier accuracy: f_0 = max(0.90, 0.95) - 0.50, f_1 = 0.80 - 0.70
    assert m["forgetting"] == pytest.approx([0.45, 0.10])
    assert m["avg_forgetting"] == pytest.approx(0.275)
    assert m["n_tasks"] == 3


def test_metrics_edge_cases():
    one = accuracy_matrix_metrics([[0.8]])
    assert one == {"ACC": 0.8, "BWT": None, "forgetting": [], "avg_forgetting": None, "n_tasks": 1}
    # positive backward transfer: BWT > 0, and forgetting is negative (the max runs over i <= n-2 only, the final
    # accuracy is not part of it, as in Chaudhry et al. 2018)
    m = accuracy_matrix_metrics([[0.6, 0.0], [0.7, 0.9]])
    assert m["BWT"] == pytest.approx(0.1) and m["forgetting"] == pytest.approx([-0.1])
    with pytest.raises(ValueError, match="n x n"):
        accuracy_matrix_metrics([[1.0, 0.5]])
    with pytest.raises(ValueError, match=r"R\[1\]\[0\]"):
        accuracy_matrix_metrics([[1.0, None], [float("nan"), 1.0]])
    with pytest.raises(ValueError, match="empty"):
        accuracy_matrix_metrics([])


def test_plot_writes_a_png(tmp_path):
    from matplotlib.image import imread

    R = [[0.9, None, None], [0.6, 0.8, None], [0.5, 0.7, 0.95]]
    path = plot_accuracy_matrix(R, ["a", "b", "c"], tmp_path / "sub" / "R.png", title="toy")
    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    img = imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    with pytest.raises(ValueError, match="2 task names"):
        plot_accuracy_matrix(R, ["a", "b"], tmp_path / "bad.png")


# ---------------------------------------------------------------------------------------------------------------------
# validation (everything raises in the constructor, before any training)
# ---------------------------------------------------------------------------------------------------------------------

def _runner(tmp_path, model, tasks, **kw):
    kw.setdefault("training_args", _args())
    kw.setdefault("trainer_kwargs", {"layer_map": MLP_LAYER_MAP})
    return ContinualRunner(model, tasks, output_dir=str(tmp_path / "out"), **kw)


def test_class_incremental_head_too_small_names_task_and_labels(tmp_path):
    tasks = _toy_tasks([(0, 1), (2, 3), (4, 5)])
    with pytest.raises(ValueError, match=r"task 'task3' uses labels \[4, 5\].*num_labels=4.*\[0, 1, 2, 3, 4, 5\]"):
        _runner(tmp_path, MLP(num_labels=4), tasks, scenario="class_incremental")
    assert not (tmp_path / "out").exists()


def test_domain_incremental_needs_one_label_set(tmp_path):
    tasks = _toy_tasks([(0, 1), (0, 1, 2)], scenario="domain_incremental")
    with pytest.raises(ValueError, match=r"task 'task1' has labels \[0, 1\] and task 'task2' has \[0, 1, 2\]"):
        _runner(tmp_path, MLP(num_labels=3), tasks, scenario="domain_incremental")


def test_task_incremental_labels_must_fit_the_task_head(tmp_path):
    tasks = _toy_tasks([(0, 1), (2, 3)])  # digit labels, not relabelled 0/1 within each task
    with pytest.raises(ValueError, match=r"task_incremental: task 'task2' uses labels \[2, 3\].*2 outputs"):
        _runner(tmp_path, MLP(num_labels=2), tasks, scenario="task_incremental")


def test_declared_labels_must_match_the_data(tmp_path):
    tasks = _toy_tasks([(0, 1), (2, 3)])
    tasks[1].labels = [2, 4]
    with pytest.raises(ValueError, match=r"task 'task2' declares labels \[2, 4\] but its data contains labels \[3\]"):
        _runner(tmp_path, MLP(num_labels=10), tasks, scenario="class_incremental")


def test_replay_budget_larger_than_task1_is_an_error(tmp_path):
    tasks = _toy_tasks([(0, 1), (2, 3)], n=16)
    with pytest.raises(ValueError, match=r"replay budget 50 .*task 'task1' has 16 training examples"):
        _runner(tmp_path, MLP(num_labels=10), tasks, scenario="class_incremental",
                regularizers=[{"name": "replay", "budget": 50}])
    assert not (tmp_path / "out").exists()


def test_replay_refused_with_per_task_heads(tmp_path):
    tasks = _toy_tasks([(0, 1), (0, 1)], scenario="task_incremental")
    with pytest.raises(ValueError, match="replay is not supported in the task_incremental scenario"):
        _runner(tmp_path, MLP(num_labels=2), tasks, scenario="task_incremental",
                regularizers=[{"name": "replay", "budget": 8}])


def test_other_setup_errors(tmp_path):
    tasks = _toy_tasks([(0, 1), (2, 3)])
    with pytest.raises(ValueError, match="unknown continual-learning scenario"):
        _runner(tmp_path, MLP(num_labels=10), tasks, scenario="class-incremental")
    with pytest.raises(ValueError, match="unique"):
        _runner(tmp_path, MLP(num_labels=10), [tasks[0], tasks[0]], scenario="class_incremental")
    with pytest.raises(ValueError, match="each regularizer may be given once"):
        _runner(tmp_path, MLP(num_labels=10), tasks, scenario="class_incremental",
                regularizers=[{"name": "ewc"}, {"name": "ewc", "lambda": 2.0}])
    ti = _toy_tasks([(0, 1), (0, 1)], scenario="task_incremental")
    with pytest.raises(ValueError, match="head_patterns"):
        _runner(tmp_path, MLP(num_labels=2), ti, scenario="task_incremental", head_patterns=[r"^nohead\."])
    with pytest.raises(ValueError, match="does not exempt the head parameters"):
        _runner(tmp_path, MLP(num_labels=2), ti, scenario="task_incremental", regularizers=[L2SP(alpha=0.1)])


def test_task_incremental_exempts_the_head_in_dict_specs(tmp_path):
    ti = _toy_tasks([(0, 1), (0, 1)], scenario="task_incremental")
    r = _runner(tmp_path, MLP(num_labels=2), ti, scenario="task_incremental",
                regularizers=[{"name": "ewc", "exempt": ["^embed"]}, {"name": "l2sp"}])
    ewc, l2sp = r.regularizers
    assert ewc.config.exempt == ["^embed", r"(?:^|\.)classifier\."]
    assert ewc.is_exempt("classifier.weight") and l2sp.is_exempt("classifier.bias")
    assert not l2sp.is_exempt("blocks.0.weight")


# ---------------------------------------------------------------------------------------------------------------------
# the run: attachment schedule, heads, outputs, logs
# ---------------------------------------------------------------------------------------------------------------------

class Spy(Regularizer):
    """Records when it is bound (i.e. attached to a task's trainer) and its end_task calls; needs earlier state,
    like EWC / replay: inactive until the first end_task."""

    name = "spy"

    def __init__(self, **kw):
        super().__init__(RegularizerConfig(**kw))
        self.bound_at, self.ended = [], []

    def bind(self, model):
        self.bound_at.append(len(self.ended) + 1)  # 1-based index of the task being trained

    def end_task(self, model, dataset, **kw):
        self.ended.append((len(dataset), kw.get("source")))

    @property
    def active(self):
        return bool(self.ended)


def test_run_attaches_carries_and_writes_outputs(tmp_path, caplog):
    tasks = _toy_tasks([(0, 1), (2, 3), (4, 5)], n=16)
    spy, l2sp = Spy(), L2SP(alpha=0.01)
    with caplog.at_level(logging.INFO, logger="tl_hf.continual"):
        res = _runner(tmp_path, MLP(num_labels=6), tasks, scenario="class_incremental",
                      regularizers=[spy, l2sp]).run()
    # spy (needs a finished task) joins from task 2; L2-SP is attached from task 1 (anchors taken then)
    assert spy.bound_at == [2, 3]
    assert spy.ended == [(16, "task1"), (16, "task2"), (16, "task3")]
    assert l2sp.anchors and set(l2sp.anchors) >= {"embed.weight", "classifier.weight"}
    # R: measured lower triangle, null above
    assert [[v is None for v in row] for row in res.R] == [[False, True, True], [False, False, True],
                                                          [False, False, False]]
    assert all(0.0 <= v <= 1.0 for row in res.R for v in row if v is not None)
    doc = json.loads(Path(res.json_path).read_text())
    assert doc["R"] == res.R and doc["task_names"] == ["task1", "task2", "task3"]
    m = accuracy_matrix_metrics(res.R)
    assert doc["ACC"] == pytest.approx(m["ACC"]) and doc["BWT"] == pytest.approx(m["BWT"])
    assert doc["forgetting"] == pytest.approx(dict(zip(["task1", "task2"], m["forgetting"])))
    assert doc["avg_forgetting"] == pytest.approx(m["avg_forgetting"])
    assert {"R", "ACC", "BWT", "forgetting", "avg_forgetting"} <= set(doc["definitions"])
    assert "1706.08840" in doc["definitions"]["ACC"] and "1801.10112" in doc["definitions"]["forgetting"]
    assert doc["scenario"] == "class_incremental" and doc["regularizers"] == ["spy", "l2sp"]
    assert Path(res.png_path).read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if p.is_dir()) == ["task1", "task2", "task3"]
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("after task")]
    assert len(lines) == 3
    assert lines[1] == f"after task 2: acc[task1]={res.R[1][0]:.2f} acc[task2]={res.R[1][1]:.2f}"


def test_task_callbacks_and_on_task_end(tmp_path):
    """The two extension points: extra Trainer callbacks per task (1-based) and a call after each task's state."""
    from transformers import TrainerCallback

    events = []

    class Steps(TrainerCallback):
        def __init__(self, k):
            self.k = k

        def on_train_end(self, args, state, control, **kwargs):
            events.append(("trained", self.k, state.global_step))

    def on_end(k):
        events.append(("ended", k, sorted(p.name for p in (tmp_path / "state").iterdir())))

    tasks = _toy_tasks([(0, 1), (2, 3)], n=16)
    _runner(tmp_path, MLP(num_labels=4), tasks, scenario="class_incremental", plot=False,
            state_dir=str(tmp_path / "state"), task_callbacks=lambda k: [Steps(k)] if k == 2 else [],
            on_task_end=on_end).run()
    assert events == [("ended", 1, ["after_task1", "run.json"]), ("trained", 2, 2),
                      ("ended", 2, ["after_task2", "run.json"])]


def test_task_incremental_keeps_one_head_per_task(tmp_path):
    from safetensors.torch import load_file

    tasks = _toy_tasks([(0, 1), (0, 1)], n=16, scenario="task_incremental")
    runner = _runner(tmp_path, MLP(num_labels=2), tasks, scenario="task_incremental",
                     regularizers=[{"name": "ewc", "lambda": 1.0, "num_samples": 8}])
    initial = runner._get_head()
    res = runner.run()
    h1, h2 = res.heads["task1"], res.heads["task2"]
    assert set(h1) == {"classifier.weight", "classifier.bias"}
    assert not torch.equal(h1["classifier.weight"], h2["classifier.weight"])
    # the head of task 2 started from the same initial weights as task 1's (not from task 1's trained head)
    assert not torch.equal(h1["classifier.weight"], initial["classifier.weight"])
    # the Fisher never covered the head (exempted), so EWC bound to the backbone only
    fisher = runner.regularizers[0].tasks[0][0]
    assert set(fisher) == {"embed.weight", "embed.bias", "blocks.0.weight", "blocks.0.bias"}
    # R[1][0] was measured with task 1's head swapped back in
    runner._set_head(h1)
    assert runner.evaluate(tasks[0].eval) == pytest.approx(res.R[1][0])
    saved = load_file(str(tmp_path / "out" / "heads" / "task1.safetensors"))
    torch.testing.assert_close(saved["classifier.weight"], h1["classifier.weight"])


def test_domain_incremental_run_with_replay_term(tmp_path):
    tasks = _toy_tasks([(0, 1), (0, 1)], n=16, scenario="domain_incremental")
    runner = _runner(tmp_path, MLP(num_labels=2), tasks, scenario="domain_incremental", plot=False,
                     regularizers=[{"name": "replay", "budget": 8, "mode": "term", "batch_size": 4}])
    res = runner.run()
    replay = runner.regularizers[0]
    assert len(replay.memory) == 8 and replay.last_loss is not None  # the replay loss ran during task 2
    assert {src for src, _ in replay.memory.provenance} <= {"task1", "task2"}
    assert res.heads == {} and res.R[1][0] is not None


def test_hf_vit_model_with_builtin_layer_map(tmp_path):
    """A transformers model: head size from config.num_labels, head found by the default 'classifier.' pattern,
    per-example Fisher through a ViT (28 x 28 grey images, 7 x 7 patches)."""
    import transformers as T

    cfg = T.ViTConfig(image_size=28, patch_size=7, num_channels=1, hidden_size=16, num_hidden_layers=1,
                      num_attention_heads=2, intermediate_size=16, num_labels=2)
    torch.manual_seed(0)
    model = T.ViTForImageClassification(cfg)
    tasks = _toy_tasks([(0, 1), (0, 1)], n=8, scenario="task_incremental")
    res = run_continual(model, tasks, scenario="task_incremental", output_dir=str(tmp_path / "vit"),
                        regularizers=[{"name": "ewc", "lambda": 1.0, "num_samples": 4}, {"name": "l2sp"}],
                        training_args=_args(), plot=False)
    assert res.png_path is None and Path(res.json_path).exists()
    assert set(res.heads["task1"]) == {"classifier.weight", "classifier.bias"}
    assert res.R[1][1] is not None and res.R[0][1] is None


# ---------------------------------------------------------------------------------------------------------------------
# MNIST loading and Split-MNIST
# ---------------------------------------------------------------------------------------------------------------------

def test_load_mnist_idx_matches_the_source_notes(mnist):
    images, labels = mnist
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8 and labels.shape == (10000,)
    assert labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]  # SOURCE.md
    assert np.bincount(labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert images.mean() == pytest.approx(33.79, abs=0.01)
    # the data root may also be the mnist_t10k folder itself, or come from $TL_HF_DATA_ROOT
    again, _ = load_mnist_idx(_data_root() / "mnist_t10k")
    assert np.array_equal(again, images)


def test_load_mnist_idx_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("TL_HF_DATA_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)  # no ../shared/data here
    with pytest.raises(ValueError, match="TL_HF_DATA_ROOT"):
        load_mnist_idx()
    with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte.gz"):
        load_mnist_idx(tmp_path)


def test_load_mnist_idx_falls_back_to_shared_data(tmp_path, monkeypatch, mnist):
    """Without $TL_HF_DATA_ROOT the data root is ../shared/data, as for every other data set (a fresh clone)."""
    (tmp_path / "shared" / "data").mkdir(parents=True)
    (tmp_path / "shared" / "data" / "mnist_t10k").symlink_to(_data_root() / "mnist_t10k")
    (tmp_path / "repo").mkdir()
    monkeypatch.delenv("TL_HF_DATA_ROOT", raising=False)
    monkeypatch.chdir(tmp_path / "repo")
    images, labels = load_mnist_idx()
    assert np.array_equal(images, mnist[0]) and np.array_equal(labels, mnist[1])


def test_split_mnist_tasks(mnist):
    images, labels = mnist
    ti = split_mnist_tasks(images, labels, pairs=((0, 1), (2, 3)), max_per_task=100, seed=3)
    ci = split_mnist_tasks(images, labels, pairs=((0, 1), (2, 3)), max_per_task=100, seed=3,
                           scenario="class_incremental")
    assert [t.name for t in ti] == ["task1", "task2"] and ti[1].class_names == ["2", "3"]
    assert len(ti[0].train) == 80 and len(ti[0].eval) == 20
    ex = ti[1].train[0]
    assert ex["pixel_values"].shape == (1, 28, 28) and ex["pixel_values"].dtype == torch.float32
    assert 0.0 <= float(ex["pixel_values"].min()) and float(ex["pixel_values"].max()) <= 1.0
    assert ti[1].labels == [0, 1] and ci[1].labels == [2, 3]
    y_ti, y_ci = ti[1].train.columns["labels"], ci[1].train.columns["labels"]
    assert set(y_ti.tolist()) == {0, 1} and set(y_ci.tolist()) == {2, 3}
    assert torch.equal(y_ci - 2, y_ti)  # same examples, same order: only the labelling differs
    # train and eval do not share images; the split is seeded
    tr = ti[0].train.columns["pixel_values"].flatten(1)
    ev = ti[0].eval.columns["pixel_values"].flatten(1)
    assert not (torch.cdist(tr, ev).min(dim=0).values == 0).any()
    again = split_mnist_tasks(images, labels, pairs=((0, 1),), max_per_task=100, seed=3)
    assert torch.equal(again[0].train.columns["pixel_values"], ti[0].train.columns["pixel_values"])
    dom = split_mnist_tasks(images, labels, pairs=((0, 1), (2, 3)), max_per_task=50, scenario="domain_incremental")
    assert dom[0].labels == dom[1].labels == [0, 1]


# ---------------------------------------------------------------------------------------------------------------------
# Split-MNIST forgetting (integration)
# ---------------------------------------------------------------------------------------------------------------------

def _split_mnist_run(mnist, tmp_path, scenario, regularizers, seed):
    """3 digit-pair tasks (0/1, 2/3, 4/5), 400 examples each (320 train / 80 eval), MLP 784-64-64, Adam lr 1e-3
    (constant), batch 32, 3 epochs per task (30 steps). About 1 s per 3-task run on one CPU thread."""
    images, labels = mnist
    tasks = split_mnist_tasks(images, labels, pairs=((0, 1), (2, 3), (4, 5)), seed=seed, max_per_task=400,
                              scenario=scenario)
    model = MLP(num_labels=2 if scenario == "task_incremental" else 10, seed=seed)
    tag = "_".join(r["name"] for r in regularizers) or "naive"
    res = run_continual(model, tasks, scenario=scenario, output_dir=str(tmp_path / f"{scenario}_{tag}"),
                        regularizers=regularizers, plot=False, layer_map=MLP_LAYER_MAP,
                        training_args=dict(num_train_epochs=3, per_device_train_batch_size=32, learning_rate=1e-3,
                                           lr_scheduler_type="constant", logging_steps=1000, seed=seed))
    return res.R, res.metrics


@pytest.mark.parametrize("seed", [0, 1])
def test_split_mnist_naive_forgets_replay_and_ewc_keep_task1(mnist, tmp_path, seed):
    # Measured with exactly this setup, seeds 0..7 (T1 = accuracy on task 1 after tasks 1, 2, 3; ranges over seeds):
    #   class-IL naive:   T1 1.0 -> 0.00 -> 0.00 on every seed; ACC 0.13-0.32; avg forgetting 0.75-0.94
    #   class-IL replay (interleave, budget 100, ratio 0.2): final T1 0.537-0.738; ACC 0.43-0.56 (ACC margin over
    #                     naive 0.216-0.296)
    #   task-IL naive:    final T1 0.50-0.725 (drop 0.275-0.50); ACC 0.754-0.817; BWT -0.31..-0.19
    #   task-IL EWC (lambda 1e4, empirical Fisher): final T1 0.938-0.988 (margin over naive 0.25-0.45);
    #                     ACC 0.858-0.950 (margin 0.058-0.15); last task 0.738-0.925; BWT -0.056..+0.006
    # The bounds below leave slack under the worst seed seen.
    # Replay is measured class-incrementally (the runner refuses it with per-task heads), EWC task-incrementally
    # (with one shared head EWC does not beat naive on ACC; van de Ven & Tolias 2019). EWC's protection of T1 comes
    # mostly from task 2's Fisher: 0-vs-1 is fit so well that task 1's empirical Fisher is tiny (sum ~0.2).
    naive_ci, m_naive_ci = _split_mnist_run(mnist, tmp_path, "class_incremental", [], seed)
    replay_ci, m_replay_ci = _split_mnist_run(
        mnist, tmp_path, "class_incremental", [{"name": "replay", "budget": 100, "seed": seed}], seed)
    naive_ti, m_naive_ti = _split_mnist_run(mnist, tmp_path, "task_incremental", [], seed)
    ewc_ti, m_ewc_ti = _split_mnist_run(mnist, tmp_path, "task_incremental",
                                        [{"name": "ewc", "lambda": 1e4}], seed)
    for R in (naive_ci, replay_ci, naive_ti, ewc_ti):
        assert R[0][0] >= 0.95  # 0 vs 1 is learnt in every run before any forgetting is measured

    # Class-incremental naive fine-tuning: the shared head only ever sees the current pair, so T1 collapses to ~0
    # (measured 0.00 on every seed after T2 and after T3).
    assert naive_ci[1][0] <= 0.1 and naive_ci[2][0] <= 0.1
    assert naive_ci[0][0] - naive_ci[2][0] > 0.8
    # Replay keeps a good part of T1 (>= 0.537 measured vs 0.0): margin asserted 0.3.
    assert replay_ci[2][0] - naive_ci[2][0] >= 0.3
    assert m_replay_ci["ACC"] >= m_naive_ci["ACC"] + 0.1  # measured margins 0.216-0.296

    # Task-incremental with a shared backbone: T1's stored head meets a drifted backbone (measured drop >= 0.275).
    assert naive_ti[0][0] - naive_ti[2][0] >= 0.15
    # EWC keeps T1 (measured final T1 - naive final T1 = 0.25-0.45): margin asserted 0.15, and still learns the
    # new tasks (ACC above naive on every seed, by 0.058-0.15; last task >= 0.738).
    assert ewc_ti[2][0] >= 0.85
    assert ewc_ti[2][0] - naive_ti[2][0] >= 0.15
    assert m_ewc_ti["ACC"] > m_naive_ti["ACC"]
    assert ewc_ti[2][2] >= 0.6
    assert m_ewc_ti["avg_forgetting"] < m_naive_ti["avg_forgetting"]
    assert math.isfinite(m_ewc_ti["BWT"]) and m_ewc_ti["BWT"] > m_naive_ti["BWT"]



def test_each_task_starts_from_the_given_trainability_so_a_later_phase_unfreezes(tmp_path):
    """Task 1 stops (2 steps) before the gradual schedule's second phase (step 3) unfreezes the backbone; task 2 runs
    5 steps, so its backbone must train from step 3 on. If the runner let task 1's frozen flags leak into task 2, the
    new freezing policy would take the backbone for 'frozen by someone else' and never train it."""
    from transformers import TrainerCallback

    from tl_hf.continual import MLP_LAYER_MAP

    model = MLP(num_labels=4)
    seen = []

    class Record(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            seen.append(("begin", model.embed.weight.detach().clone()))

        def on_train_end(self, args, state, control, **kw):
            seen.append(("end", model.embed.weight.detach().clone()))

    freezing = {"policy": "gradual", "schedule": {"unit": "step", "phases": [{"start": 0, "depths": 0},
                                                                             {"start": 3, "depths": 2}]}}
    runner = ContinualRunner(model, _toy_tasks([(0, 1), (2, 3)], n=16), scenario="class_incremental",
                             output_dir=str(tmp_path), plot=False,
                             training_args=lambda k, task: _args(max_steps=2 if k == 0 else 5),
                             trainer_kwargs={"layer_map": MLP_LAYER_MAP, "freezing": freezing,
                                             "callbacks": [Record()]})
    runner.run()
    (_, t1_begin), (_, t1_end), (_, t2_begin), (_, t2_end) = seen
    assert torch.equal(t1_begin, t1_end), "task 1 ends before the backbone's phase: the embedding stays frozen"
    assert torch.equal(t1_end, t2_begin)
    assert not torch.equal(t2_begin, t2_end), "task 2 reached step 3: its backbone must have trained"
