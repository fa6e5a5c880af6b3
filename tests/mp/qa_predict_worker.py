"""QA evaluation under 1 or 2 processes: the eval windows of the tiny QA set through ``TransferTrainer.predict`` and
the task's metrics object (gathered logits -> n-best post-processing -> SQuAD scores).

Run: python -m torch.distributed.run --nproc_per_node 2 tests/mp/qa_predict_worker.py OUTDIR MODEL_DIR
(or plain ``python`` for the 1-process reference). The main process writes OUTDIR/qa_predictions.json.
"""

import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from qa_tiny import flat_rows  # noqa: E402


def main(out: str, model_dir: str) -> None:
    import datasets
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer, DataCollatorWithPadding, TrainingArguments

    from tl_hf import TransferTrainer
    from tl_hf.run.data.qa_features import EVAL_KEEP, prepare_features
    from tl_hf.run.tasks.question_answering import QAMetrics

    dist = {"ddp_backend": "gloo"} if "WORLD_SIZE" in os.environ else {}  # the 1-process reference: no group
    args = TrainingArguments(output_dir=os.path.join(out, "run"), use_cpu=True, per_device_eval_batch_size=3,
                             report_to="none", disable_tqdm=True, **dist)
    tok = AutoTokenizer.from_pretrained(model_dir)
    examples = datasets.Dataset.from_list(flat_rows())
    feats = prepare_features(examples, tok, max_length=48, doc_stride=16, train=False, where="tiny")
    metrics = QAMetrics(SimpleNamespace(data=SimpleNamespace(n_best=20, max_answer_length=30)))
    metrics.bind(examples, feats)
    model = AutoModelForQuestionAnswering.from_pretrained(model_dir)
    trainer = TransferTrainer(model=model, args=args, data_collator=DataCollatorWithPadding(tok),
                              compute_metrics=metrics)
    pred = trainer.predict(feats.remove_columns(list(EVAL_KEEP)), metric_key_prefix="eval")
    if args.process_index == 0:
        preds, nbest = metrics.last
        Path(out, "qa_predictions.json").write_text(json.dumps({
            "world_size": args.world_size, "n_features": len(feats), "rows": int(len(pred.predictions[0])),
            "predictions": preds, "nbest": nbest,
            "metrics": {k: pred.metrics[k] for k in ("eval_exact_match", "eval_f1", "eval_loss")}}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
