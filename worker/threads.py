"""Thread pinning: N workers on C cores only scale when each uses few threads (docs/operations.md)."""

from __future__ import annotations

import os

THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
)


def pin_threads(n: int) -> None:
    """Limit torch, BLAS and JAX's XLA to ``n`` threads. Call before anything imports numpy, torch or JAX."""
    for name in THREAD_VARIABLES:
        os.environ[name] = str(n)
    os.environ["XLA_FLAGS"] = (
        f"--xla_cpu_multi_thread_eigen={'false' if n == 1 else 'true'} intra_op_parallelism_threads={n}"
    )
    import torch

    torch.set_num_threads(n)
    torch.set_num_interop_threads(n)
