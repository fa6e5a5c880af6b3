"""Every shipped config opens with the exact command that runs it and passes validation (types, keys, ranges)."""

from pathlib import Path

import pytest

from tl_hf.config import load_config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "recipes" / "configs").glob("*.yaml"))


def test_the_shipped_configs_exist():
    names = {p.stem for p in CONFIGS}
    assert {"sst2_minilm_llrd", "sst2_minilm_full", "sst2_minilm_feature_extraction", "sst2_minilm_gradual",
            "trec_minilm_llrd", "emotion_minilm_llrd"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_opens_with_its_command_and_validates(path):
    first = path.read_text().splitlines()[0]
    assert first.startswith("# Run: ") and f"recipes/configs/{path.name}" in first
    cfg = load_config(path)
    assert cfg.training["output_dir"].startswith("outputs/")
