"""Mean squared error of predicted and true scores: tl_hf's packaged evaluate module for regression (sklearn.metrics.mean_squared_error semantics)."""

from tl_hf.run.metrics import base


class Mse(base.RegressionMetric):
    NAME = "mse"
    WHAT = "Mean squared error of predicted and true scores"
    RANGE = "a float >= 0 (0.0 for no examples)."
