"""The run layer: typed configs, data, task modules on one run template."""
