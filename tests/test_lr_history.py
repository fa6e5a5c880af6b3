"""The per-group lr of every optimizer step (warm-up included) is recorded without extra log lines, and the
lr-per-group plot is drawn from that record."""

import pytest
from tiny import TokenDataset, tiny_bert, training_args

from tl_hf import LLRDConfig, TransferTrainer


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    args = training_args(tmp_path_factory.mktemp("lr"), max_steps=9, warmup_steps=4, logging_steps=5,
                         lr_scheduler_type="linear", learning_rate=1e-3)
    tr = TransferTrainer(tiny_bert(num_layers=2), args, train_dataset=TokenDataset(n=72),
                         llrd=LLRDConfig(decay=0.5))
    tr.train()
    return tr


def test_every_step_recorded_warmup_included(trained):
    rec = trained.lr_history
    assert [r["step"] for r in rec] == list(range(1, 10))
    head = [r["lr/head"] for r in rec]
    # linear warm-up over 4 steps from 0 (the lr of step s is 1e-3 * (s - 1) / 4), then linear decay to 0 at step 10
    assert head[:5] == pytest.approx([0.0, 2.5e-4, 5e-4, 7.5e-4, 1e-3])
    assert head[5:] == pytest.approx([1e-3 * (9 - s) / 5 for s in range(5, 9)])
    for r in rec[1:]:  # the LLRD ratios hold at every step: head, layer.1, layer.0, embeddings = lr * 0.5 ** k
        assert r["lr/layer.1"] == pytest.approx(0.5 * r["lr/head"])
        assert r["lr/embeddings"] == pytest.approx(0.125 * r["lr/head"])


def test_record_matches_logged_steps_and_adds_no_log_lines(trained):
    logged = {h["step"]: h for h in trained.state.log_history if "lr/head" in h}
    assert sorted(logged) == [5]  # logging_steps=5 over 9 steps: one training log line, as without the record
    rec = {r["step"]: r for r in trained.lr_history}
    for k in ("lr/embeddings", "lr/layer.0", "lr/layer.1", "lr/head"):
        assert logged[5][k] == pytest.approx(rec[5][k])


def test_plot_draws_every_step(trained, tmp_path):
    from tl_hf.run import plots

    fig_lines = plots.lr_per_group_lines(trained.lr_history)
    assert set(fig_lines) == {"embeddings", "layer.0", "layer.1", "head"}
    assert [s for s, _ in fig_lines["head"]] == list(range(1, 10))
    path = plots.plot_lr_per_group(trained.lr_history, str(tmp_path / "lr.png"))
    assert (tmp_path / "lr.png").stat().st_size > 1000 and path.endswith("lr.png")
