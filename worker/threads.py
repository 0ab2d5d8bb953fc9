"""Thread pinning: N workers on C cores only scale when each uses few threads (see README)."""

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
    """Limit torch and BLAS to ``n`` threads. Call before anything imports numpy or torch."""
    for name in THREAD_VARIABLES:
        os.environ[name] = str(n)
    import torch

    torch.set_num_threads(n)
    torch.set_num_interop_threads(n)
