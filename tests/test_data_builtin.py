"""The built-in text datasets, read from the shared data root exactly as their SOURCE.md files describe them."""

import collections

import pytest
from conftest import real_data_root

from tl_hf._errors import ConfigError
from tl_hf.run.data.paths import DataError
from tl_hf.run.data.text import DataConfig, load_text_classification


def test_trec_coarse_labels_match_the_official_counts():
    root = real_data_root("trec/train_5500.label")
    d = load_text_classification(DataConfig(dataset="trec", root=str(root)))
    assert (len(d.train), len(d.eval)) == (5452, 500)
    assert d.label_names == ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"]
    counts = collections.Counter(d.train["label"])
    assert [counts[i] for i in range(6)] == [86, 1162, 1250, 1223, 835, 896]  # trec/SOURCE.md
    assert [collections.Counter(d.eval["label"])[i] for i in range(6)] == [9, 138, 94, 65, 81, 113]
    assert d.train["text"][0] and ":" not in d.train["text"][0].split(" ")[0]
    assert any("\xf0" in t for t in d.train["text"])  # the one Latin-1 byte decoded, not an error


def test_emotion_splits_and_labels():
    root = real_data_root("emotion/train.txt")
    d = load_text_classification(DataConfig(dataset="emotion", root=str(root)))
    assert (len(d.train), len(d.eval)) == (16000, 2000)
    assert d.label_names == ["sadness", "joy", "love", "anger", "fear", "surprise"]
    assert d.train["text"][0] == "i didnt feel humiliated" and d.train["label"][0] == 0
    test = load_text_classification(DataConfig(dataset="emotion", root=str(root), eval_split="test"))
    assert len(test.eval) == 2000


def test_unknown_split_and_dataset_are_named():
    root = real_data_root("trec")
    with pytest.raises(DataError, match=r"trec has splits train, test; got 'dev'"):
        load_text_classification(DataConfig(dataset="trec", root=str(root), eval_split="dev"))
    with pytest.raises(ConfigError, match=r"unknown dataset 'emotions'; did you mean 'emotion'"):
        DataConfig(dataset="emotions")
