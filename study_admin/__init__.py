"""Writes and inspects tuning-study definitions in the shared storage. Imports no torch, SB3 or MuJoCo."""
