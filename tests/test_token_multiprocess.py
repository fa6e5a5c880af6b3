"""Token-classification evaluation under 2 processes (gloo, CPU) equals 1 process: the Trainer gathers the padded
logits of the whole eval set (7 sentences in batches of 2 per rank: the last batch is padded with repeats that
``gather_for_metrics`` drops), the entity metrics run once on all of them, and the per-word predictions cover every
sentence once, in order."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_multiprocess import _DIST_ENV, REPO, _free_port
from test_token_classification import TRAIN, write_conll

WORKER = REPO / "tests" / "mp" / "token_predict_worker.py"
NAMES = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]


def _tiny_token_model(out: Path) -> Path:
    import torch
    import transformers as T
    from tiny import save_tiny_text_model

    def confident(model) -> None:
        with torch.no_grad():
            model.classifier.weight.mul_(40.0)  # confident random tags: entities are predicted, some right

    return save_tiny_text_model(out, T.BertForTokenClassification, seed=3, max_positions=64, prepare=confident,
                                num_labels=len(NAMES), id2label=dict(enumerate(NAMES)),
                                label2id={n: i for i, n in enumerate(NAMES)})


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_process_token_evaluation_equals_one_process(tmp_path):
    model = _tiny_token_model(tmp_path / "model")
    long = (["a", "very", "long", "sentence", "that", "goes", "on", "about", "rome", "and", "paris"],
            ["O", "O", "O", "O", "O", "O", "O", "O", "B-LOC", "O", "B-LOC"])
    conll = write_conll(tmp_path / "eval.conll", TRAIN + [long] + TRAIN[:2])  # 7 sentences
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    # a clean process: no launcher variables, none an earlier test in this process set (accelerate's ACCELERATE_*)
    env = {k: v for k, v in os.environ.items() if k not in _DIST_ENV
           and not k.startswith(("ACCELERATE_", "TORCHELASTIC_", "PET_", "FSDP_"))}
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", PYTHONPATH=str(REPO))
    args = [str(WORKER), str(one), str(model), str(conll)]
    ref = subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr[-3000:]
    args[1] = str(two)
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
                          "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), *args], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    a = json.loads((one / "token_predictions.json").read_text())
    b = json.loads((two / "token_predictions.json").read_text())
    assert (a["world_size"], b["world_size"]) == (1, 2)
    assert a["rows"] == b["rows"] == 7  # gathered: every sentence once, no padding repeats
    assert b["predicted"] == a["predicted"] and [len(p) for p in a["predicted"]] == [5, 5, 3, 6, 11, 5, 5]
    assert a["predicted"][4][-1] == "O"  # cut off by max_length 12: predicted O in the per-word output
    assert b["final"] == pytest.approx(a["final"])
    # the Trainer's entity scores too; not eval_loss (a mean of per-batch means: other batches, other mean) or times
    scores = {k: v for k, v in a["trainer_metrics"].items() if k not in ("eval_loss", "eval_model_preparation_time")}
    assert len(scores) >= 8 and {k: b["trainer_metrics"][k] for k in scores} == pytest.approx(scores, rel=1e-9)
    assert any(t != "O" for p in a["predicted"] for t in p), "the model predicts entities"
