"""reinit / averaging / LwF / DER / LP-FT are selectable from a run config and reach the TransferTrainer."""

import pytest

from tiny import TokenDataset, tiny_bert
from tl_hf._errors import ConfigError
from tl_hf.run.config import load_config
from tl_hf.run.template import build_trainer


def test_sections_reach_the_trainer(tmp_path):
    cfg = load_config(None, ["reinit.top_k=1", "reinit.seed=3", "averaging.method=ema", "averaging.decay=0.9",
                             f"training.output_dir={tmp_path}", "training.use_cpu=true"])
    assert cfg.reinit.top_k == 1 and cfg.averaging.method == "ema" and cfg.averaging.decay == 0.9
    assert cfg.to_dict()["reinit"]["top_k"] == 1 and cfg.to_dict()["averaging"]["method"] == "ema"
    tr = build_trainer(cfg, tiny_bert(), cfg.training_arguments(), llrd=cfg.llrd, freezing=cfg.freezing,
                       train_dataset=TokenDataset(n=8), eval_dataset=None, data_collator=None)
    assert tr.reinit.top_k == 1 and tr.averager is not None and tr.averaging.decay == 0.9


def test_lwf_der_and_lp_ft_from_yaml(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("regularizers: [{name: lwf, teacher: pretrained, temperature: 2}]\n"
                 "freezing: {policy: gradual, schedule: {unit: epoch, phases: [{start: 0, depths: 0}, "
                 "{start: 1, depths: 3}]}}\n")
    cfg = load_config(p)
    assert cfg.regularizers[0]["name"] == "lwf" and cfg.freezing.policy == "gradual"


@pytest.mark.parametrize("override, match", [
    ("averaging.method=polyak", "averaging.method must be one of none, ema, swa"),
    ("averaging.decay=1.5", r"averaging.decay must be in \[0, 1\)"),
    ("reinit.top_k=-2", "reinit.top_k must be an int >= 0"),
])
def test_bad_values_are_one_line_config_errors(override, match):
    with pytest.raises((ConfigError, ValueError), match=match) as exc:
        load_config(None, [override])
    assert "\n" not in str(exc.value)


def test_the_model_card_names_reinit_and_averaging_with_settings(tmp_path):
    from tl_hf import TransferTrainer
    from tl_hf.core.model_card import transfer_card_section
    from tiny import training_args

    tr = TransferTrainer(tiny_bert(), training_args(tmp_path), train_dataset=TokenDataset(n=8),
                         reinit={"top_k": 1, "seed": 4}, averaging={"method": "ema", "decay": 0.99})
    text = transfer_card_section(tr)
    assert "### Robust fine-tuning" in text
    assert ("- **re-initialised top blocks** (the model's own `_init_weights`, before training): top k `1`, "
            "pooler `False`, seed `4`") in text
    assert ("- **EMA** of the trainable weights: decay `0.99`, from step `0`; evaluation on the average: `True`, "
            "saved model = average: `True`") in text
    plain = TransferTrainer(tiny_bert(), training_args(tmp_path), train_dataset=TokenDataset(n=8))
    assert "Robust fine-tuning" not in transfer_card_section(plain)
