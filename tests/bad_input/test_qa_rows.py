"""Bad-input matrix, extractive-QA rows (``task: question_answering``): an answer whose text is not at its offset, a
context longer than max_length without a stride, a stride that leaves no new context, a question longer than
max_length, a training file without answers, an empty context, duplicate ids, cached features.

Each row: exit code 2, one line naming the fix, and the output folder as it was (no new file).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from matrix_harness import Ctx, expect_refusal, new_ctx, write_jsonl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from qa_tiny import ARTICLES, flat_rows, qa_config_text, save_tiny_qa_model, write_squad  # noqa: E402


@pytest.fixture(scope="module")
def qa_model(tmp_path_factory) -> Path:
    return save_tiny_qa_model(tmp_path_factory.mktemp("tiny_qa_rows"))


@pytest.fixture
def qa_ctx(tmp_path, qa_model, monkeypatch) -> Ctx:
    return new_ctx(tmp_path, monkeypatch, qa_model, qa_config_text(qa_model), lambda d: write_squad(d / "train.json"))


def _articles(edit):
    def prep(c: Ctx):
        arts = json.loads(json.dumps(ARTICLES))
        edit(arts)
        write_squad(c.data / "train.json", arts)
    return prep


def _bad_offset(arts):
    arts[1]["paragraphs"][1]["qas"][0]["answers"][0]["answer_start"] = 2


def _no_answers(arts):
    del arts[0]["paragraphs"][0]["qas"][1]["answers"]


def _empty_context(arts):
    arts[1]["paragraphs"][0]["context"] = "   "


def _long_question(arts):
    arts[0]["paragraphs"][0]["qas"][0]["question"] = "why " * 60


def _duplicate_id(arts):
    arts[1]["paragraphs"][0]["qas"][1]["id"] = "q4"


def _flat_without_answers(c: Ctx):
    write_jsonl(c.data / "flat.jsonl", [{k: v for k, v in r.items() if k != "answers"} for r in flat_rows()])
    return ["data.train_file=flat.jsonl", "data.eval_file=flat.jsonl"]


QA_ROWS = [
    pytest.param(_articles(_bad_offset), [],
                 r"question id 'q6' has the answer 'Edison' at answer_start 2.*data\.on_bad_answer=skip",
                 id="qa-answer-not-at-offset"),
    pytest.param(None, ["data.doc_stride=null"],
                 r"context of question id 'q1' does not fit in data\.max_length=48.*set data\.doc_stride",
                 id="qa-long-context-without-stride"),
    pytest.param(None, ["data.doc_stride=48"], r"data\.doc_stride=48 must be >= 0 and below data\.max_length=48",
                 id="qa-stride-not-below-max-length"),
    pytest.param(None, ["data.doc_stride=40"], r"leaves \d+ context tokens per window.*lower data\.doc_stride",
                 id="qa-stride-leaves-no-new-context"),
    pytest.param(_articles(_long_question), [], r"question id 'q1' is \d+ tokens long.*data\.max_length=48",
                 id="qa-question-longer-than-max-length"),
    pytest.param(_articles(_no_answers), [], r"question 'q2' has no 'answers'", id="qa-train-file-without-answers"),
    pytest.param(_flat_without_answers, [], r"flat\.jsonl has no column\(s\) 'answers'",
                 id="qa-flat-file-without-answers-column"),
    pytest.param(_articles(_empty_context), [], r"question id 'q4' has an empty context", id="qa-empty-context"),
    pytest.param(_articles(_duplicate_id), [], r"question id 'q4' occurs more than once", id="qa-duplicate-id"),
    pytest.param(None, ["freezing.policy=feature_extraction", "freezing.cache_features=true"],
                 r"freezing\.cache_features: cached features are not valid for question_answering",
                 id="qa-cached-features"),
    pytest.param(None, ["data.train_file=null", "data.eval_file=null", "data.dataset=squad"],
                 r"unknown QA dataset 'squad'.*did you mean 'squad_v1\.1'", id="qa-unknown-dataset"),
]


@pytest.mark.parametrize("prep, overrides, expected", QA_ROWS)
def test_qa_row(qa_ctx, prep, overrides, expected, capsys):
    extra = prep(qa_ctx) if prep else None
    argv = ["run", str(qa_ctx.cfg), *overrides, *(extra if isinstance(extra, list) else [])]
    expect_refusal(qa_ctx, argv, expected, capsys)
