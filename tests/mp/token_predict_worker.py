"""Token-classification evaluation under 1 or 2 processes: a CoNLL eval file through the task's alignment,
``TransferTrainer.predict`` and its metrics (gathered logits -> per-word tags -> strict IOB2 entity scores).

Run: python -m torch.distributed.run --nproc_per_node 2 tests/mp/token_predict_worker.py OUTDIR MODEL_DIR CONLL
(or plain ``python`` for the 1-process reference). The main process writes OUTDIR/token_predictions.json.
"""

import json
import os
import sys
from pathlib import Path


def main(out: str, model_dir: str, conll: str) -> None:
    from transformers import AutoModelForTokenClassification, AutoTokenizer, DataCollatorForTokenClassification
    from transformers import TrainingArguments

    from tl_hf import TransferTrainer
    from tl_hf.run.data.conll import read_conll
    from tl_hf.run.data.tokens import tokenize_sentences
    from tl_hf.run.metrics.entities import TokenMetrics, flat_scores
    from tl_hf.run.tasks.token_classification import word_predictions

    launched = "WORLD_SIZE" in os.environ  # under torch.distributed.run; a plain process has no process group
    args = TrainingArguments(output_dir=os.path.join(out, "run"), use_cpu=True,
                             ddp_backend="gloo" if launched else None, per_device_eval_batch_size=2,
                             report_to="none", disable_tqdm=True)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForTokenClassification.from_pretrained(model_dir)
    names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    sents = read_conll(Path(conll))
    ds, info = tokenize_sentences(sents, names, tok, 12, all_subwords=False, split="eval")
    metrics = TokenMetrics()
    metrics.bind_label_names(names)
    trainer = TransferTrainer(model=model, args=args, data_collator=DataCollatorForTokenClassification(tok),
                              compute_metrics=metrics)
    pred = trainer.predict(ds, metric_key_prefix="eval")
    predicted = word_predictions(pred.predictions, pred.label_ids, info["words"], [len(t) for t in sents.tokens],
                                 names)
    if args.process_index == 0:
        Path(out, "token_predictions.json").write_text(json.dumps({
            "world_size": args.world_size, "rows": int(len(pred.predictions)), "predicted": predicted,
            "trainer_metrics": {k: v for k, v in pred.metrics.items() if not k.endswith(("runtime", "_second"))},
            "final": flat_scores(metrics.score(sents.tags, predicted))}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3])
