"""Tiny extractive-QA fixtures shared by the QA tests: a 2-layer BERT QA model with the bundled MiniLM tokenizer, and
small SQuAD-format files (one context long enough to need several windows at max_length 48)."""

from __future__ import annotations

import json
from pathlib import Path

LONG = ("The Normans were the people who in the 10th and 11th centuries gave their name to Normandy, a region in "
        "France. They were descended from Norse raiders and pirates from Denmark, Iceland and Norway who, under "
        "their leader Rollo, agreed to swear fealty to King Charles III of West Francia. Through generations of "
        "assimilation and mixing with the native Frankish and Roman-Gaulish populations, their descendants would "
        "gradually merge with the Carolingian-based cultures of West Francia. The distinct cultural and ethnic "
        "identity of the Normans emerged initially in the first half of the 10th century.")

ARTICLES = [
    {"title": "Normans", "paragraphs": [{"context": LONG, "qas": [
        {"id": "q1", "question": "In what country is Normandy located?",
         "answers": [{"text": "France", "answer_start": LONG.index("France")},
                     {"text": "France.", "answer_start": LONG.index("France")}]},
        {"id": "q2", "question": "Who was the leader of the raiders?",
         "answers": [{"text": "Rollo", "answer_start": LONG.index("Rollo")}]},
        {"id": "q3", "question": "When did the identity of the Normans emerge?",
         "answers": [{"text": "the first half of the 10th century",
                      "answer_start": LONG.index("the first half of the 10th century")}]},
    ]}]},
    {"title": "Tesla", "paragraphs": [{"context": "Nikola Tesla was born in 1856 in Smiljan.", "qas": [
        {"id": "q4", "question": "When was Tesla born?", "answers": [{"text": "1856", "answer_start": 25}]},
        {"id": "q5", "question": "Where was Tesla born?", "answers": [{"text": "Smiljan", "answer_start": 33}]},
    ]}, {"context": "Tesla worked for Edison in New York.", "qas": [
        {"id": "q6", "question": "For whom did Tesla work?", "answers": [{"text": "Edison", "answer_start": 17}]},
        {"id": "q7", "question": "In which city did he work?",
         "answers": [{"text": "New York", "answer_start": 27}, {"text": "New York.", "answer_start": 27}]},
    ]}]},
]


def write_squad(path: Path, articles=None) -> Path:
    path.write_text(json.dumps({"version": "1.1", "data": ARTICLES if articles is None else articles}),
                    encoding="utf-8")
    return path


def flat_rows(articles=None) -> list[dict]:
    rows = []
    for a in ARTICLES if articles is None else articles:
        for p in a["paragraphs"]:
            for q in p["qas"]:
                rows.append({"id": q["id"], "question": q["question"], "context": p["context"],
                             "answers": {"text": [x["text"] for x in q["answers"]],
                                         "answer_start": [x["answer_start"] for x in q["answers"]]}})
    return rows


def save_tiny_qa_model(out: Path, model_type: str = "bert") -> Path:
    import transformers as T
    from tiny import save_tiny_text_model

    return save_tiny_text_model(out, T.BertForQuestionAnswering)


def qa_config_text(model: Path, data: str = "data", out: str = "out", extra: str = "") -> str:
    return f"""task: question_answering
model: {{name_or_path: {model}}}
data: {{root: {data}, train_file: train.json, eval_file: train.json, max_length: 48, doc_stride: 16}}
training:
  output_dir: {out}
  max_steps: 2
  per_device_train_batch_size: 4
  per_device_eval_batch_size: 3
  learning_rate: 1e-3
  logging_steps: 1
  disable_tqdm: true
  use_cpu: true
{extra}"""
