"""What study_admin (writes studies) and worker (runs them) share: the study contract and its storage.

The study definition and its schema versions, the search spaces, the algorithm registry, the
learning-rate schedules, opening the storage, the per-study lock, and the read-only queries both sides
use. Imports no torch, SB3 or MuJoCo.
"""
