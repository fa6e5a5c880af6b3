"""Token classification (NER): CoNLL / table reading, tag sets and BIO checks, word-to-subword alignment, strict
IOB2 entity metrics (checked against seqeval), and a complete tiny run with per-word predictions."""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import pytest
from test_config_cli import tiny_model_dir  # noqa: F401  (fixture)

from tl_hf.run.data.conll import read_conll, sentences_from_table
from tl_hf.run.data.paths import DataError
from tl_hf.run.data.tags import check_bio, encode_tags, tag_set
from tl_hf.run.data.tokens import TokenDataConfig, align_labels, load_token_data, tokenize_sentences
from tl_hf.run.metrics.entities import entity_scores, entity_spans

TRAIN = [(["john", "smith", "went", "to", "paris"], ["B-PER", "I-PER", "O", "O", "B-LOC"]),
         (["mary", "saw", "berlin", "and", "london"], ["B-PER", "O", "B-LOC", "O", "B-LOC"]),
         (["the", "big", "city"], ["O", "O", "O"]),
         (["alice", "jones", "lives", "in", "new", "york"], ["B-PER", "I-PER", "O", "O", "B-LOC", "I-LOC"])]


def write_conll(path: Path, sents, sep: str = "\n") -> Path:
    path.write_text("".join("".join(f"{t}\t{g}\n" for t, g in zip(*s)) + sep for s in sents), encoding="utf-8")
    return path


# -- reading ----------------------------------------------------------------------------------------------------------

def test_conll_splits_on_whitespace_only_lines_and_skips_docstart(tmp_path):
    p = tmp_path / "a.conll"
    p.write_text("-DOCSTART- -X- O O\n\njohn\tB-PER\nsmith\tI-PER\n\t\nwent\tO\r\n  \nto\tO\nparis\tB-LOC\n",
                 encoding="utf-8")
    s = read_conll(p)
    assert s.tokens == [["john", "smith"], ["went"], ["to", "paris"]]
    assert s.tags == [["B-PER", "I-PER"], ["O"], ["O", "B-LOC"]]
    assert s.where(2, 1) == f"{p}:9"  # the line of "paris"


def test_wnut17_counts_match_the_source_notes():
    from conftest import real_data_root

    root = real_data_root("wnut17")
    d = load_token_data(TokenDataConfig(dataset="wnut17", root=str(root), eval_split="test"))
    assert (len(d.train), len(d.eval)) == (3394, 1287)  # train's 2,394 tab-only separators split sentences
    assert sum(map(len, d.train.tokens)) == 62730 and sum(map(len, d.eval.tokens)) == 23394
    assert d.label_names[0] == "O" and len(d.label_names) == 13
    assert d.label_names[1:3] == ["B-corporation", "I-corporation"]
    assert sum(len(entity_spans(t)) for t in d.eval.tags) == 1079


@pytest.mark.parametrize("text,pattern", [
    ("john\tB-PER\textra\n", r"a\.conll:1 has 3 column\(s\)"),
    ("\n\t\n  \n", r"has no sentences"),
    ("", r"has no sentences"),
])
def test_conll_refuses_bad_files(tmp_path, text, pattern):
    p = tmp_path / "a.conll"
    p.write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match=pattern):
        read_conll(p)


def test_tables_with_names_ids_and_classlabels():
    import datasets

    ds = datasets.Dataset.from_dict({"tokens": [["a", "b"], ["c"]], "ner_tags": [[1, 0], [0]]})
    with pytest.raises(DataError, match="integer ids but no tag names"):
        sentences_from_table(ds, "tokens", "ner_tags", "t.jsonl")
    s = sentences_from_table(ds, "tokens", "ner_tags", "t.jsonl", ["O", "B-X", "I-X"])
    assert s.tags == [["B-X", "O"], ["O"]]
    feat = datasets.Features({"tokens": datasets.Sequence(datasets.Value("string")),
                              "ner_tags": datasets.Sequence(datasets.ClassLabel(names=["O", "B-X", "I-X"]))})
    ds2 = datasets.Dataset.from_dict({"tokens": [["a", "b"]], "ner_tags": [[1, 2]]}, features=feat)
    assert sentences_from_table(ds2, "tokens", "ner_tags", "hub").tags == [["B-X", "I-X"]]
    bad = datasets.Dataset.from_dict({"tokens": [["a", "b"]], "ner_tags": [["O"]]})
    with pytest.raises(DataError, match="row 1: 2 tokens but 1 tags"):
        sentences_from_table(bad, "tokens", "ner_tags", "t.jsonl")


# -- tags -------------------------------------------------------------------------------------------------------------

def test_tag_set_order_and_unknown_tags(tmp_path):
    train = read_conll(write_conll(tmp_path / "t.conll", TRAIN))
    assert tag_set(train, None) == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    ev = read_conll(write_conll(tmp_path / "e.conll", [(["x", "acme"], ["O", "B-ORG"])]))
    with pytest.raises(DataError, match=r"e\.conll:2: tag 'B-ORG' is not in the tag set"):
        encode_tags(ev, tag_set(train, None))
    with pytest.raises(DataError, match="is not IOB2"):
        tag_set(train, ["O", "PER"])
    with pytest.raises(DataError, match="B- tags without their I- tags"):
        tag_set(train, ["O", "B-PER"])


def test_bio_warn_repair_error(tmp_path, caplog):
    bad = [(["a", "b", "c", "d"], ["I-PER", "O", "I-LOC", "O"]), (["e", "f"], ["B-PER", "I-LOC"]),
           (["g"], ["O"])]
    s = read_conll(write_conll(tmp_path / "b.conll", bad))
    with caplog.at_level(logging.WARNING, logger="tl_hf.run.data.tags"):
        kept, n = check_bio(s, "warn", "train")
    assert n == 3 and kept.tags == s.tags
    assert "3 malformed IOB2 tag(s) in 2 sentence(s)" in caplog.text and "b.conll lines 1, 3, 7;" in caplog.text
    fixed, _ = check_bio(s, "repair", "train")
    assert fixed.tags[:2] == [["B-PER", "O", "B-LOC", "O"], ["B-PER", "B-LOC"]]
    with pytest.raises(DataError, match=r"b\.conll lines 1, 3, 7; fix the file"):
        check_bio(s, "error", "train")


# -- alignment --------------------------------------------------------------------------------------------------------

def test_align_first_subword_and_all_subwords():
    #         CLS  w0  w0  w1  w2  w2  w2  SEP ;  tags: w0 B-PER(3) w1 O(0) w2 B-LOC(1)
    wids = [None, 0, 0, 1, 2, 2, 2, None]
    assert align_labels(wids, [3, 0, 1], None) == [-100, 3, -100, 0, 1, -100, -100, -100]
    cont = [0, 2, 2, 4, 4]  # B-LOC -> I-LOC, B-PER -> I-PER
    assert align_labels(wids, [3, 0, 1], cont) == [-100, 3, 4, 0, 1, 2, 2, -100]


def test_tokenize_counts_truncation_and_needs_a_fast_tokenizer(tmp_path, tiny_model_dir):  # noqa: F811
    import transformers as T

    from tl_hf._errors import ConfigError
    from tl_hf.run.data.tokens import check_fast_tokenizer

    tok = T.AutoTokenizer.from_pretrained(tiny_model_dir)
    s = read_conll(write_conll(tmp_path / "t.conll", TRAIN))
    names = tag_set(s, None)
    ds, info = tokenize_sentences(s, names, tok, 6, all_subwords=False, split="eval")
    assert all(len(tok.tokenize(w)) == 1 for sent in s.tokens for w in sent)  # one subword per word here
    # 4 positions between [CLS] and [SEP]: sentences of 5, 5, 3 and 6 words lose 1, 1, 0 and 2 words
    assert info["truncated_sentences"] == 3 and info["truncated_words"] == 4
    assert [len(w) for w in info["words"]] == [4, 4, 3, 4]
    assert all(sum(y != -100 for y in row) == len(w) for row, w in zip(ds["labels"], info["words"]))
    check_fast_tokenizer(tok, "x")
    with pytest.raises(ConfigError, match="needs a fast tokenizer .* ByT5Tokenizer"):
        check_fast_tokenizer(T.ByT5Tokenizer(), "some/folder")


# -- metrics ----------------------------------------------------------------------------------------------------------

def test_entity_scores_hand_computed():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-LOC", "I-LOC", "O"]]
    pred = [["B-PER", "I-PER", "O", "O"], ["I-LOC", "I-LOC", "B-PER"]]  # I-LOC start: no entity (strict)
    s = entity_scores(gold, pred)
    # gold: PER(0,2) LOC(3,4) LOC(0,2); predicted: PER(0,2) PER(2,3); correct: PER(0,2)
    assert (s["precision"], s["recall"]) == (0.5, pytest.approx(1 / 3))
    assert s["f1"] == pytest.approx(2 * 0.5 * (1 / 3) / (0.5 + 1 / 3))
    assert s["accuracy"] == pytest.approx(4 / 7) and s["number"] == 3
    assert s["per_type"]["LOC"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "number": 2}
    assert s["per_type"]["PER"]["precision"] == 0.5 and s["per_type"]["PER"]["recall"] == 1.0


def test_entity_scores_equal_seqeval_strict_iob2():
    import seqeval.metrics as seqeval  # a dev dependency: the independent oracle
    from seqeval.scheme import IOB2

    rng = random.Random(0)
    tags = ["O", "O", "O", "B-A", "I-A", "B-B", "I-B", "B-C-D", "I-C-D"]
    for _ in range(60):
        n = rng.randint(1, 12)
        gold = [[rng.choice(tags) for _ in range(rng.randint(1, 9))] for _ in range(n)]
        pred = [[t if rng.random() < 0.6 else rng.choice(tags) for t in g] for g in gold]
        ours = entity_scores(gold, pred)
        rep = seqeval.classification_report(gold, pred, mode="strict", scheme=IOB2, output_dict=True,
                                            zero_division=0)
        micro = rep["micro avg"]
        assert (ours["precision"], ours["recall"], ours["f1"]) == pytest.approx(
            (micro["precision"], micro["recall"], micro["f1-score"]))
        assert ours["number"] == micro["support"]
        assert ours["accuracy"] == pytest.approx(seqeval.accuracy_score(gold, pred))
        for ty, r in rep.items():
            if ty.endswith(" avg"):
                continue
            got = ours["per_type"][ty]
            assert (got["precision"], got["recall"], got["f1"], got["number"]) == pytest.approx(
                (r["precision"], r["recall"], r["f1-score"], r["support"]))


def test_entity_f1_is_a_packaged_evaluate_module():
    from tl_hf.run.metrics import LOCAL_METRICS, load_metric

    assert "entity_f1" in LOCAL_METRICS
    m = load_metric("entity_f1")
    m.add_batch(predictions=[["B-X", "O"]], references=[["B-X", "O"]])
    m.add_batch(predictions=[["O"]], references=[["B-X"]])
    r = m.compute()
    assert (r["precision"], r["recall"], r["number"]) == (1.0, 0.5, 2)


# -- a complete run ---------------------------------------------------------------------------------------------------

def token_run_config(tmp_path: Path, model_dir: Path, *extra: str) -> Path:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    write_conll(data / "train.conll", TRAIN * 3, sep="\t\n")
    long = ["a", "very", "long", "sentence", "about", "the", "city", "of", "rome"]  # 11 positions > max_length 8
    write_conll(data / "dev.conll", TRAIN[:2] + [(long, ["O"] * 8 + ["B-LOC"])])
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"""task: token_classification
model: {{name_or_path: {model_dir}, ignore_mismatched_sizes: true}}
data: {{root: {data}, train_file: train.conll, eval_file: dev.conll, max_length: 8}}
training:
  output_dir: {tmp_path / 'out'}
  max_steps: 3
  per_device_train_batch_size: 4
  learning_rate: 1.0e-3
  logging_steps: 1
  disable_tqdm: true
  use_cpu: true
  seed: 0
llrd: {{decay: 0.8}}
""" + "\n".join(extra) + "\n", encoding="utf-8")
    return cfg


def test_run_writes_per_word_predictions_and_per_type_scores(tmp_path, tiny_model_dir, capsys):  # noqa: F811
    from tl_hf.cli import main

    assert main(["run", str(token_run_config(tmp_path, tiny_model_dir)), "model.save_model=true"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    out = tmp_path / "out"
    res = json.loads((out / "all_results.json").read_text())
    assert last.startswith("dev entity F1: ")
    preds = [json.loads(line) for line in (out / "eval_predictions.jsonl").read_text().splitlines()]
    assert [len(p["tokens"]) for p in preds] == [5, 5, 9]
    assert all(len(p["gold"]) == len(p["predicted"]) == len(p["tokens"]) for p in preds)
    assert preds[2]["predicted"][-1] == "O"  # "rome" is cut off by max_length 8: predicted O, its entity missed
    assert res["eval_truncated_sentences"] == 1 and res["eval_truncated_words"] >= 1
    ours = entity_scores([p["gold"] for p in preds], [p["predicted"] for p in preds])
    assert res["eval_f1"] == pytest.approx(ours["f1"]) and res["eval_accuracy"] == pytest.approx(ours["accuracy"])
    assert res["eval_entities"] == 6 and set(res["eval_per_type"]) >= {"LOC", "PER"}
    assert res["eval_LOC_number"] == 4 and res["tag_set"] == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    card = (out / "README.md").read_text()
    assert "pipeline_tag: token-classification" in card or "token-classification" in card
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architectures"] == ["BertForTokenClassification"] and cfg["id2label"]["3"] == "B-PER"


def test_label_all_subwords_trains_continuations(tmp_path, tiny_model_dir):  # noqa: F811
    import transformers as T

    tok = T.AutoTokenizer.from_pretrained(tiny_model_dir)
    s = read_conll(write_conll(tmp_path / "t.conll", [(["johnsonville", "x"], ["B-PER", "O"])]))
    names = ["O", "B-PER", "I-PER"]
    first, _ = tokenize_sentences(s, names, tok, 32, all_subwords=False, split="train")
    every, _ = tokenize_sentences(s, names, tok, 32, all_subwords=True, split="train")
    n_sub = len(tok.tokenize("johnsonville"))
    assert n_sub > 1
    assert first["labels"][0][1:n_sub + 2] == [1] + [-100] * (n_sub - 1) + [0]
    assert every["labels"][0][1:n_sub + 2] == [1] + [2] * (n_sub - 1) + [0]


def test_strategy_auto_knows_the_token_task(tmp_path, tiny_model_dir, capsys):  # noqa: F811
    from tl_hf.cli import main

    assert main(["run", str(token_run_config(tmp_path, tiny_model_dir)), "strategy.mode=auto"]) == 0
    out = capsys.readouterr().out
    assert "strategy auto: 12 training examples < small_max=100: feature extraction" in out
    assert "freezing feature_extraction" in out


def test_inspect_builds_the_token_head(tiny_model_dir):  # noqa: F811
    from tl_hf.cli import inspect_model

    rows, cls_name, lmap = inspect_model(str(tiny_model_dir), num_labels=5, head="token-classification")
    assert cls_name == "BertForTokenClassification" and lmap.num_blocks == 2
    assert rows[-1]["name"] == "head" and rows[-1]["params"] == 32 * 5 + 5  # the token classifier (no pooler)
