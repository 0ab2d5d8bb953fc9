"""The store: where studies live (PostgreSQL or an embedded SQLite file), per-study locks, the read-only
catalog queries, the claim and heartbeat SQL, whole-study inserts and the artifact store. The only code
that knows Optuna's tables.
"""
