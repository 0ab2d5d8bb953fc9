"""Writes tuning-study definitions into the shared Optuna storage. Imports no torch, SB3 or MuJoCo."""
