"""tl_hf's evaluate modules: one metric script each, loaded with ``evaluate.load(<path>)`` fully offline
(:func:`tl_hf.run.metrics.load_metric` finds the path)."""
