"""Precision of single-label classification, scikit-learn's ``average`` semantics (tl_hf's packaged evaluate module)."""

from tl_hf.run.metrics import base


class Precision(base.ScoreMetric):
    NAME = "precision"
