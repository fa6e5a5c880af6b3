"""File formats, held-out splits, explicit label sets and Hub ids for text data."""

import time

import pytest

from tl_hf._errors import ConfigError
from tl_hf.run.data.paths import DataError
from tl_hf.run.data.text import DataConfig, load_text_classification


@pytest.fixture
def parquet_file(tmp_path):
    import datasets

    path = tmp_path / "t.parquet"
    datasets.Dataset.from_dict({"review": list("abcdefghij"), "y": ["pos", "neg"] * 5}).to_parquet(str(path))
    return path


def test_parquet_with_a_seeded_held_out_split(parquet_file):
    cfg = DataConfig(train_file=str(parquet_file), text_column="review", label_column="y", eval_fraction=0.3)
    a = load_text_classification(cfg, seed=1)
    b = load_text_classification(cfg, seed=1)
    assert (len(a.train), len(a.eval)) == (7, 3) and a.label_names == ["neg", "pos"]
    assert a.eval["text"] == b.eval["text"] and set(a.eval["text"]).isdisjoint(a.train["text"])


def test_labels_outside_the_label_set_are_named(parquet_file):
    with pytest.raises(DataError, match=r"labels \['neg'\] are outside the label set"):
        load_text_classification(DataConfig(train_file=str(parquet_file), text_column="review", label_column="y",
                                            label_names=["pos", "neutral"]))
    ok = load_text_classification(DataConfig(train_file=str(parquet_file), text_column="review", label_column="y",
                                             label_names=["pos", "neg"]))
    assert ok.label_names == ["pos", "neg"] and ok.train["label"][0] == 0  # 'pos' is id 0 as declared


def test_hub_dataset_fails_fast_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t = time.monotonic()
    with pytest.raises(DataError, match="needs the Hugging Face Hub, but HF_HUB_OFFLINE is set"):
        load_text_classification(DataConfig(hub_id="stanfordnlp/sst2", text_column="sentence"))
    assert time.monotonic() - t < 5


def test_bad_data_options():
    with pytest.raises(ConfigError, match=r"eval_fraction must be in \(0, 1\)"):
        DataConfig(train_file="x.csv", eval_fraction=1.5)
    with pytest.raises(ConfigError, match="set one of data.dataset, data.hub_id"):
        DataConfig(dataset="sst2", hub_id="stanfordnlp/sst2")
