"""Text files read through ``datasets`` builders: TSV quoting, rows counted against lines, label encoding from the
training split (by name), and one-line errors for the label / text / file shapes that used to pass silently."""

from __future__ import annotations

import json
import time
import warnings

import pytest

from tl_hf._errors import ConfigError
from tl_hf.run.data.labels import LabelWarning
from tl_hf.run.data.paths import DataError
from tl_hf.run.data.text import DataConfig, load_text_classification


def _load(tmp_path, train: str, eval_: str | None = None, **kw):
    cfg = DataConfig(train_file=str(tmp_path / train), eval_file=str(tmp_path / eval_) if eval_ else None, **kw)
    return load_text_classification(cfg)


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _one_line(exc_info) -> str:
    msg = str(exc_info.value)
    assert "\n" not in msg
    return msg


def test_tsv_text_starting_with_a_quote_keeps_every_row(tmp_path):
    (tmp_path / "t.tsv").write_text('text\tlabel\n"so good\tpos\nbad\tneg\n"quoted" too\tpos\nNA\tneg\n')
    d = _load(tmp_path, "t.tsv")
    assert len(d.train) == 4
    assert d.train["text"] == ['"so good', "bad", '"quoted" too', "NA"]  # verbatim: quotes and NA are text
    assert d.label_names == ["neg", "pos"] and d.train["label"] == [1, 0, 1, 0]
    assert d.train.features["label"].names == ["neg", "pos"]  # a ClassLabel feature


def test_csv_quoting_that_would_merge_rows_is_refused(tmp_path):
    (tmp_path / "t.tsv").write_text('text\tlabel\n"so good\tpos\nbad" one\tneg\nfine\tpos\n')
    with pytest.raises(DataError) as e:
        _load(tmp_path, "t.tsv", quoting="csv")
    msg = _one_line(e)
    assert "t.tsv: 2 rows were read but the file has 3 data lines" in msg and "data.quoting=none" in msg
    assert "row 1, line 2" in msg
    (tmp_path / "u.tsv").write_text('text\tlabel\n"so good\tpos\nbad\tneg\n')  # never closed
    with pytest.raises(DataError, match=r"u.tsv as tsv: .*never closes: if quotes are part of the text, set "
                                        r"data.quoting=none"):
        _load(tmp_path, "u.tsv", quoting="csv")
    (tmp_path / "t.csv").write_text('text,label\n"a, b",pos\nc,neg\n')  # ordinary CSV quoting still works
    assert _load(tmp_path, "t.csv").train["text"] == ["a, b", "c"]
    with pytest.raises(ConfigError, match=r"data.quoting must be one of none, csv, got 'QUOTE_ALL'"):
        DataConfig(train_file="x.tsv", quoting="QUOTE_ALL")


def test_float_labels_in_train_and_ints_in_eval_are_one_class_set(tmp_path):
    _jsonl(tmp_path / "t.jsonl", [{"text": "a", "label": 1.0}, {"text": "b", "label": 2.0}, {"text": "c", "label": 0.0}])
    _jsonl(tmp_path / "e.jsonl", [{"text": "d", "label": 2}, {"text": "e", "label": 1}])
    d = _load(tmp_path, "t.jsonl", "e.jsonl")
    assert d.label_names == ["0", "1", "2"]
    assert d.train["label"] == [1, 2, 0] and d.eval["label"] == [2, 1]


def test_eval_is_mapped_by_name_onto_the_training_set(tmp_path):
    (tmp_path / "t.csv").write_text("text,label\na,pos\nb,neg\nc,pos\n")
    (tmp_path / "e.csv").write_text("text,label\nd,neg\n")  # only 'neg': id 0 of the *training* set
    d = _load(tmp_path, "t.csv", "e.csv")
    assert d.label_names == ["neg", "pos"] and d.eval["label"] == [0]
    _jsonl(tmp_path / "n.jsonl", [{"text": "a", "label": "1"}, {"text": "b", "label": "0"}])
    d = _load(tmp_path, "n.jsonl", label_names=["1", "0"])  # declared names win over digit-looking ids
    assert d.train["label"] == [0, 1]


def test_labels_one_to_n_warn_about_the_phantom_class_zero(tmp_path):
    _jsonl(tmp_path / "t.jsonl", [{"text": t, "label": y} for t, y in [("a", 1), ("b", 2), ("c", 3)]])
    with pytest.warns(LabelWarning, match=r"labels run 1..3 with no 0: class 0 is a phantom class.*"
                                          r"subtract 1.*data.label_names=\[1, 2, 3\]"):
        d = _load(tmp_path, "t.jsonl")
    assert d.label_names == ["0", "1", "2", "3"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the fix it offers: map by name, no warning
        d = _load(tmp_path, "t.jsonl", label_names=["1", "2", "3"])
    assert d.label_names == ["1", "2", "3"] and d.train["label"] == [0, 1, 2]


def test_an_absurd_label_is_refused_without_allocating(tmp_path):
    _jsonl(tmp_path / "t.jsonl", [{"text": "a", "label": 0}, {"text": "b", "label": 10 ** 9}])
    t = time.monotonic()
    with pytest.raises(DataError) as e:
        _load(tmp_path, "t.jsonl")
    assert time.monotonic() - t < 5
    msg = _one_line(e)
    assert "t.jsonl" in msg and "label 1000000000" in msg and "1,000,000,001 classes" in msg and "renumber" in msg
    _jsonl(tmp_path / "neg.jsonl", [{"text": "a", "label": -1}, {"text": "b", "label": 0}])
    with pytest.raises(DataError, match=r"neg.jsonl: integer labels must be >= 0"):
        _load(tmp_path, "neg.jsonl")


@pytest.mark.parametrize("label, kind", [([0, 1], "lists"), ({"y": 1}, "dicts")])
def test_list_and_dict_labels_are_one_line_errors(tmp_path, label, kind):
    _jsonl(tmp_path / "t.jsonl", [{"text": "a", "label": label}, {"text": "b", "label": label}])
    with pytest.raises(DataError) as e:
        _load(tmp_path, "t.jsonl")
    msg = _one_line(e)
    assert "t.jsonl" in msg and f"column 'label' (data.label_column) holds {kind}" in msg and "one label per row" in msg


def test_list_texts_in_parquet_and_jsonl_are_one_line_errors(tmp_path):
    import datasets

    datasets.Dataset.from_dict({"text": [["a", "b"], ["c"]], "label": [0, 1]}).to_parquet(str(tmp_path / "t.parquet"))
    with pytest.raises(DataError) as e:
        _load(tmp_path, "t.parquet")
    msg = _one_line(e)
    assert "t.parquet" in msg and "(data.text_column) holds lists" in msg and "join the pieces" in msg
    _jsonl(tmp_path / "t.jsonl", [{"text": ["a"], "label": 0}, {"text": ["b"], "label": 1}])
    with pytest.raises(DataError, match=r"t.jsonl: column 'text' \(data.text_column\) holds lists"):
        _load(tmp_path, "t.jsonl")


def test_numeric_text_column_is_named(tmp_path):
    _jsonl(tmp_path / "t.jsonl", [{"id": 1, "text": "a", "label": 0}, {"id": 2, "text": "b", "label": 1}])
    with pytest.raises(DataError, match=r"t.jsonl: column 'id' \(data.text_column\) holds int64 numbers, not text; "
                                        r"set data.text_column to the text column \(columns: id, text, label\)"):
        _load(tmp_path, "t.jsonl", text_column="id")
    (tmp_path / "t.csv").write_text("id,text,label\n1,a,0\n2,b,1\n")
    with pytest.raises(DataError, match=r"t.csv: column 'id' \(data.text_column\) holds only numbers"):
        _load(tmp_path, "t.csv", text_column="id")


def test_same_column_as_text_and_label_is_refused():
    with pytest.raises(ConfigError, match=r"data.text_column and data.label_column are both 'text'"):
        DataConfig(train_file="x.csv", text_column="text", label_column="text")
    with pytest.raises(ConfigError, match=r"data.text_column and data.text_pair_column are both 'q'"):
        DataConfig(train_file="x.csv", text_column="q", text_pair_column="q", label_column="y")


def test_empty_files_and_directories_are_named(tmp_path):
    (tmp_path / "zero.csv").write_bytes(b"")
    with pytest.raises(DataError, match=r"data.train_file: .*zero.csv is empty"):
        _load(tmp_path, "zero.csv")
    (tmp_path / "head.tsv").write_text("text\tlabel\r\n\r\n")
    with pytest.raises(DataError, match=r"data.train_file: .*head.tsv is empty: a header line \(text, label\) and no "
                                        r"data rows"):
        _load(tmp_path, "head.tsv")
    (tmp_path / "blank.jsonl").write_text("\n\n")
    with pytest.raises(DataError, match=r"blank.jsonl is empty"):
        _load(tmp_path, "blank.jsonl")
    (tmp_path / "folder.csv").mkdir()
    with pytest.raises(DataError) as e:
        _load(tmp_path, "folder.csv")
    assert "data.train_file:" in _one_line(e) and "is a directory, not a file" in str(e.value)


def test_mixed_ids_and_names_and_fractional_labels_are_refused(tmp_path):
    (tmp_path / "m.csv").write_text("text,label\na,pos\nb,1\n")
    with pytest.raises(DataError, match=r"m.csv: column 'label' mixes integer ids and names \(e.g. 1 and 'pos'\)"):
        _load(tmp_path, "m.csv")
    (tmp_path / "f.csv").write_text("text,label\na,0.5\nb,1\n")
    with pytest.raises(DataError, match=r"f.csv: label 0.5 is not a class"):
        _load(tmp_path, "f.csv")
    (tmp_path / "e.csv").write_text("text,label\na,\nb,1\n")
    with pytest.raises(DataError, match=r"e.csv: row 1 has an empty label in column 'label'"):
        _load(tmp_path, "e.csv")
