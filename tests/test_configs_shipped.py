"""Every shipped config opens with the exact command that runs it and passes validation (types, keys, ranges)."""

from pathlib import Path

import pytest

from tl_hf.run.config import load_config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "recipes" / "configs").glob("*.yaml"))


def test_the_shipped_configs_exist():
    names = {p.stem for p in CONFIGS}
    assert {"sst2_minilm_llrd", "sst2_minilm_full", "sst2_minilm_feature_extraction", "sst2_minilm_gradual",
            "trec_minilm_llrd", "emotion_minilm_llrd", "squad_minilm", "rte_minilm",
            "stsb_minilm"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_opens_with_its_command_and_validates(path):
    first = path.read_text().splitlines()[0]
    assert first.startswith("# Run: ") and f"recipes/configs/{path.name}" in first
    cfg = load_config(path)
    assert cfg.training["output_dir"].startswith("outputs/")


@pytest.mark.parametrize("name", ["ddp.yaml", "fsdp.yaml", "fsdp2.yaml"])
def test_accelerate_configs_parse_and_open_with_their_command(name):
    import yaml

    path = CONFIGS[0].parent / "accelerate" / name
    first = path.read_text().splitlines()[0]
    assert first.startswith("# Run: accelerate launch --config_file recipes/configs/accelerate/" + name)
    doc = yaml.safe_load(path.read_text())
    assert doc["distributed_type"] in ("MULTI_GPU", "FSDP") and doc["num_processes"] >= 2
    if doc["distributed_type"] == "FSDP" and doc["fsdp_config"]["fsdp_version"] == 1:
        assert doc["fsdp_config"]["fsdp_use_orig_params"] is True
    elif doc["distributed_type"] == "FSDP":  # FSDP2: the full state dict is what from_pretrained loads
        assert doc["fsdp_config"]["fsdp_version"] == 2
        assert doc["fsdp_config"]["fsdp_state_dict_type"] == "FULL_STATE_DICT"
