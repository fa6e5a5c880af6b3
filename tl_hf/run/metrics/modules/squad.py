"""SQuAD v1.1 exact match and F1 (tl_hf's packaged evaluate module; the inputs of evaluate's own ``squad`` module,
which needs the Hub). The scores are :func:`tl_hf.run.metrics.squad.squad_scores`: the official v1.1 normalisation,
the maximum over all gold answers, in percent."""

import datasets
import evaluate

from tl_hf.run.metrics import base
from tl_hf.run.metrics import squad

_INPUTS = """
Args:
    predictions (list of dict): {'id': question id, 'prediction_text': the answer text}.
    references (list of dict): {'id': question id, 'answers': {'text': [gold answers], 'answer_start': [offsets]}}.
Returns:
    exact_match: percent of questions whose normalised prediction equals a normalised gold answer (0-100).
    f1: mean over questions of the best token F1 against any gold answer, in percent (0-100).
"""

_FEATURES = datasets.Features({
    "predictions": {"id": datasets.Value("string"), "prediction_text": datasets.Value("string")},
    "references": {"id": datasets.Value("string"),
                   "answers": datasets.Sequence({"text": datasets.Value("string"),
                                                 "answer_start": datasets.Value("int32")})},
})


class Squad(evaluate.Metric):
    def _info(self):
        return base.metric_info("SQuAD v1.1 exact match and F1 (official normalisation; tl_hf, no Hub).", _INPUTS,
                                features=_FEATURES)

    def _compute(self, predictions, references):
        preds = {p["id"]: p["prediction_text"] for p in predictions}
        refs = {r["id"]: r["answers"]["text"] for r in references}
        return squad.squad_scores(preds, refs)
