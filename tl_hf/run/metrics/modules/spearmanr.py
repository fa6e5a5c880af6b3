"""Spearman's rank correlation rho of predicted and true scores (ties at their average rank): tl_hf's packaged evaluate module for regression (scipy.stats.spearmanr semantics)."""

from tl_hf.run.metrics import base


class Spearmanr(base.RegressionMetric):
    NAME = "spearmanr"
    WHAT = "Spearman's rank correlation rho of predicted and true scores (ties at their average rank)"
    RANGE = "a float in [-1, 1]; NaN when either side is constant."
