"""The run layer: the task registry, run configs, launching runs, their reports and loss curves."""
