"""WiSE-FT: the endpoints are the two models, the midpoint is the mean, alpha chosen on validation only."""

import json

import pytest
import torch

from tiny import TokenDataset, tiny_bert, training_args
from tl_hf import TransferTrainer
from tl_hf.core.wise_ft import interpolate_state, load_interpolated, snapshot
from tl_hf.run.wise_ft import wise_ft_sweep


def _pair():
    init, ft = tiny_bert(seed=0), tiny_bert(seed=1)
    return snapshot(init), snapshot(ft)


def test_interpolation_endpoints_equal_the_two_models():
    a, b = _pair()
    zero, one, half = (interpolate_state(a, b, x) for x in (0.0, 1.0, 0.5))
    for k in b:
        assert torch.equal(zero[k], a[k]) and torch.equal(one[k], b[k]), k
        if torch.is_floating_point(b[k]):
            torch.testing.assert_close(half[k], (a[k] + b[k]) / 2)
    model = tiny_bert(seed=5)
    load_interpolated(model, a, b, 0.0)
    assert all(torch.equal(v, a[k]) for k, v in model.state_dict().items())


def test_bad_alpha_and_changed_head_are_refused():
    a, b = _pair()
    for bad in (-0.1, 1.5, True):
        with pytest.raises(ValueError, match=r"wise_ft alpha must be a number in \[0, 1\]"):
            interpolate_state(a, b, bad)
    c = snapshot(tiny_bert(num_labels=3))
    with pytest.raises(ValueError, match=r"'classifier.weight' has shape \(2, 32\) initially and \(3, 32\) after"):
        interpolate_state(a, c, 0.5)


def test_sweep_writes_the_curve_and_chooses_on_validation_only(tmp_path):
    model = tiny_bert(seed=0)
    init = snapshot(model)
    args = training_args(tmp_path, max_steps=6, learning_rate=5e-3)
    tr = TransferTrainer(model, args, train_dataset=TokenDataset(n=48), eval_dataset=TokenDataset(n=16, seed=3),
                         compute_metrics=lambda p: {"accuracy": float((p.predictions.argmax(-1) == p.label_ids)
                                                                      .mean())})
    tr.train()
    ft = snapshot(model)
    res = wise_ft_sweep(tr, init, [0.0, 0.5, 1.0], extra_eval_sets={"ood": TokenDataset(n=16, seed=9)},
                        metric="loss", greater_is_better=False, output_dir=str(tmp_path / "w"), save=True)
    curve = res["curve"]
    assert [c["alpha"] for c in curve] == [0.0, 0.5, 1.0]
    assert all("eval_loss" in c and "ood_loss" in c for c in curve)
    best = min(curve, key=lambda c: c["eval_loss"])
    assert res["alpha"] == best["alpha"] and res["metric"] == "eval_loss"
    expected = interpolate_state(init, ft, res["alpha"])
    assert all(torch.equal(v, expected[k]) for k, v in model.state_dict().items())
    doc = json.loads((tmp_path / "w" / "wise_ft.json").read_text())
    assert doc["alpha"] == res["alpha"] and len(doc["curve"]) == 3
    assert (tmp_path / "w" / "wise_ft.png").stat().st_size > 1000
    assert (tmp_path / "w" / "wise_ft" / "model.safetensors").exists()
    with pytest.raises(ValueError, match="wise_ft alpha must be a number in"):
        wise_ft_sweep(tr, init, [0.5, 2.0])
