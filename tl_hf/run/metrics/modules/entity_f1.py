"""Entity-level precision / recall / F1 (strict IOB2, exact spans, as seqeval's strict mode) and token accuracy
(tl_hf's packaged evaluate module)."""

import datasets
import evaluate

from tl_hf.run.metrics import base
from tl_hf.run.metrics import entities

_INPUTS = """
Args:
    predictions (list of list of str): predicted IOB2 tags (O, B-TYPE, I-TYPE), one list per sentence.
    references (list of list of str): gold IOB2 tags, the same lengths.
Returns:
    precision, recall, f1: micro-averaged over all entities (an entity counts when type, start and end match);
    accuracy: the fraction of tokens whose tag equals the gold tag;
    number: the number of gold entities;
    per_type: {type: {precision, recall, f1, number}}.
"""

_FEATURES = datasets.Features({"predictions": datasets.Sequence(datasets.Value("string")),
                               "references": datasets.Sequence(datasets.Value("string"))})


class EntityF1(evaluate.Metric):
    def _info(self):
        info = base.metric_info("Entity-level P/R/F1 with strict IOB2 exact-span semantics (seqeval mode='strict', "
                                "scheme=IOB2) and token accuracy (tl_hf, pure Python).", _INPUTS, features=_FEATURES)
        info.reference_urls = ["https://github.com/chakki-works/seqeval", "https://www.clips.uantwerpen.be/conll2003/"]
        return info

    def _compute(self, predictions, references):
        return entities.entity_scores(references, predictions)
