"""Pearson's correlation r of predicted and true scores: tl_hf's packaged evaluate module for regression (scipy.stats.pearsonr semantics)."""

from tl_hf.run.metrics import base


class Pearsonr(base.RegressionMetric):
    NAME = "pearsonr"
    WHAT = "Pearson's correlation r of predicted and true scores"
    RANGE = "a float in [-1, 1]; NaN when either side is constant."
