"""Pulls trials of tuning studies from the shared Optuna storage, trains SB3 agents, reports back."""
