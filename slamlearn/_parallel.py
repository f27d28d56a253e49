"""Splitting row-wise work over threads.

The native kernels release the GIL, so plain threads use every core without
copying data. Small inputs stay on one thread: starting a pool costs more
than it saves below about 2**18 entries.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numpy as np

#: Inputs with fewer entries than this run on one thread when ``n_jobs`` is None.
PARALLEL_MIN_SIZE = 1 << 18


def n_threads(n_jobs: int | None, size: int) -> int:
    """Threads to use: ``n_jobs`` threads (``-1`` = every core, ``-2`` = all
    but one, ...), or, when ``n_jobs`` is None, every core for inputs of at
    least :data:`PARALLEL_MIN_SIZE` entries and one thread otherwise."""
    cores = os.cpu_count() or 1
    if n_jobs is None:
        return cores if size >= PARALLEL_MIN_SIZE else 1
    if n_jobs < 0:
        return max(1, cores + 1 + n_jobs)
    return max(1, int(n_jobs))


def map_row_chunks(fn: Callable[[slice], object], n_rows: int, threads: int) -> list:
    """Call ``fn`` on contiguous row slices covering ``range(n_rows)``, one per
    thread, and return the results in row order."""
    threads = max(1, min(threads, n_rows))
    if threads == 1:
        return [fn(slice(0, n_rows))]
    bounds = np.linspace(0, n_rows, threads + 1).astype(int)
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(fn, [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]))
