# cython: language_level=3
"""Evaluation of isotonic step functions by the paper's step rule.

A fitted step function has knots ``u[0] < ... < u[B-1]`` (the last covariate
of each block) and one value per block. A query ``c`` takes the value of the
block with the smallest knot ``>= c``; queries above the last knot take the
last block's value (Appendix B.1 of the SLaM paper, clipped at both ends).

Finding that block is the whole cost. Each step function carries a small
uniform grid over ``[u[0], u[B-1]]`` with ``G`` cells (``G`` about twice
``B``); ``table[g]`` is the first knot whose cell is ``>= g``. A query looks
up its cell and then scans (binary search first when the cell is crowded),
so the work per query does not grow with ``B``. Cells are computed by the
same floating-point expression for knots and for queries; it is monotone in
its argument, which is all correctness needs.

Several step functions live side by side in one ragged layout: ``knot_off``
delimits each function's knots and values, ``table_off`` its grid.
"""

from libc.math cimport isfinite
from cython cimport floating

import numpy as np


cdef inline Py_ssize_t _cell(double c, double lo, double scale, Py_ssize_t G) noexcept nogil:
    # Written so that NaN lands in cell 0 rather than in undefined behaviour
    # (callers reject NaN first; this only keeps the kernel memory-safe).
    cdef double pos = (c - lo) * scale
    if not (pos > 0.0):
        return 0
    if not (pos < <double>G):
        return G - 1
    return <Py_ssize_t>pos


cdef inline Py_ssize_t _locate(double c, const double* u, Py_ssize_t nk,
                               const Py_ssize_t* table, Py_ssize_t G,
                               double lo, double scale) noexcept nogil:
    """Index of the first knot ``>= c`` (the last knot when none is)."""
    cdef Py_ssize_t g, i, hi, mid
    if c > u[nk - 1]:
        return nk - 1
    # From here the answer exists and lies in [table[g], table[g + 1]].
    g = _cell(c, lo, scale, G)
    i = table[g]
    hi = table[g + 1]
    if hi - i <= 1:
        # The common case (about one knot per cell): one branch-free step.
        # u[i] is readable because i <= nk - 1 whenever c <= u[nk - 1].
        return i + (u[i] < c)
    while hi - i > 8:
        mid = (i + hi) >> 1
        if u[mid] < c:
            i = mid + 1
        else:
            hi = mid
    while u[i] < c:
        i += 1
    return i


cdef inline Py_ssize_t _grid_size(Py_ssize_t n_knots) noexcept nogil:
    """Number of grid cells for a step function with ``n_knots`` knots: the
    power of two at or above twice the knots (at most 2**22)."""
    cdef Py_ssize_t G = 1
    while G < 2 * n_knots and G < (1 << 22):
        G <<= 1
    return G


def build_tables(const double[::1] knots, const Py_ssize_t[::1] knot_off):
    """Build the lookup grids of several step functions.

    Returns ``(table_off, tables, lo, scale)``.
    """
    cdef Py_ssize_t m = knot_off.shape[0] - 1, r, b, g, nk, G, total = 0
    cdef double span, sc
    table_off = np.zeros(m + 1, dtype=np.intp)
    cdef Py_ssize_t[::1] t_off = table_off
    for r in range(m):
        t_off[r + 1] = t_off[r] + _grid_size(knot_off[r + 1] - knot_off[r]) + 1
    tables = np.empty(max(table_off[m], 1), dtype=np.intp)
    lo = np.zeros(m, dtype=np.float64)
    scale = np.zeros(m, dtype=np.float64)
    cdef Py_ssize_t[::1] tab = tables
    cdef double[::1] lo_v = lo, sc_v = scale
    cdef const double* u
    with nogil:
        for r in range(m):
            nk = knot_off[r + 1] - knot_off[r]
            G = t_off[r + 1] - t_off[r] - 1
            if nk == 0:
                continue
            u = &knots[knot_off[r]]
            span = u[nk - 1] - u[0]
            sc = <double>G / span if span > 0.0 else 0.0
            if not isfinite(sc):
                sc = 0.0
            lo_v[r] = u[0]
            sc_v[r] = sc
            # table[g] = first knot whose cell is >= g; table[G] = nk.
            b = 0
            for g in range(G + 1):
                while b < nk and _cell(u[b], u[0], sc, G) < g:
                    b += 1
                tab[t_off[r] + g] = b
            tab[t_off[r] + G] = nk
    return table_off, tables, lo, scale


def predict_one(const floating[::1] queries, const double[::1] knots,
                const double[::1] values, const Py_ssize_t[::1] table,
                double lo, double scale, floating[::1] out):
    """Evaluate one step function at every query (no validation)."""
    cdef Py_ssize_t n = queries.shape[0], i, nk = knots.shape[0]
    cdef Py_ssize_t G = table.shape[0] - 1
    with nogil:
        for i in range(n):
            out[i] = <floating>values[_locate(queries[i], &knots[0], nk,
                                              &table[0], G, lo, scale)]


def predict_many(const floating[:, ::1] queries, const double[::1] knots,
                 const double[::1] values, const Py_ssize_t[::1] knot_off,
                 const Py_ssize_t[::1] tables, const Py_ssize_t[::1] table_off,
                 const double[::1] lo, const double[::1] scale,
                 floating[:, ::1] out):
    """Evaluate step function ``j`` at ``queries[:, j]`` for every column."""
    cdef Py_ssize_t n = queries.shape[0], m = queries.shape[1], i, j, k0
    with nogil:
        for i in range(n):
            for j in range(m):
                k0 = knot_off[j]
                out[i, j] = <floating>values[k0 + _locate(
                    queries[i, j], &knots[k0], knot_off[j + 1] - k0,
                    &tables[table_off[j]], table_off[j + 1] - table_off[j] - 1,
                    lo[j], scale[j])]


def first_crossing(const floating[:, ::1] queries, const double[::1] knots,
                   const double[::1] values, const Py_ssize_t[::1] knot_off,
                   const Py_ssize_t[::1] tables, const Py_ssize_t[::1] table_off,
                   const double[::1] lo, const double[::1] scale,
                   double threshold, Py_ssize_t k_min, Py_ssize_t[::1] out):
    """For each row, one plus the first column ``j`` whose step function
    value at ``queries[i, j]`` is ``>= threshold`` (``m + 1`` when none is),
    raised to at least ``k_min``. Stops at the first crossing."""
    cdef Py_ssize_t n = queries.shape[0], m = queries.shape[1], i, j, k, k0
    with nogil:
        for i in range(n):
            k = m + 1
            for j in range(m):
                k0 = knot_off[j]
                if values[k0 + _locate(
                        queries[i, j], &knots[k0], knot_off[j + 1] - k0,
                        &tables[table_off[j]], table_off[j + 1] - table_off[j] - 1,
                        lo[j], scale[j])] >= threshold:
                    k = j + 1
                    break
            out[i] = k if k > k_min else k_min
