# cython: language_level=3
"""Evaluation of isotonic step functions by the paper's step rule.

A fitted step function has knots ``u[0] < ... < u[B-1]`` (the last covariate
of each block) and one value per block. A query ``c`` takes the value of the
block with the smallest knot ``>= c``; queries above the last knot take the
last block's value (Appendix B.1 of the SLaM paper, clipped at both ends).

Finding that block is the whole cost. Each step function carries a small
uniform grid over ``[u[0], u[B-1]]`` with ``G`` cells (``G`` at least twice
``B``); ``table[g]`` is the first knot whose cell is ``>= g``. A query looks
up its cell and then finds its knot among the cell's few by a fixed number of
branch-free steps (see ``_locate``), so the work per query does not grow
with ``B`` and does not depend on where queries fall (random queries would
defeat branch prediction). Cells are computed by the
same floating-point expression for knots and for queries; it is monotone in
its argument, which is all correctness needs.

Several step functions live side by side in one ragged layout: ``knot_off``
delimits each function's knots and values, ``table_off`` its grid.
"""

from libc.math cimport isfinite
from cython cimport floating

import numpy as np


cdef inline Py_ssize_t _cell(double c, double lo, double scale, Py_ssize_t G) noexcept nogil:
    # Clamped to [0, G - 1] with selects rather than branches: which side of
    # the grid a query falls is data-dependent and would mispredict. The top
    # clamp is a float min; the bottom one is done on the integer, where
    # negative positions, -inf and NaN (callers reject NaN first; this only
    # keeps the kernel memory-safe) all convert to negative numbers.
    cdef double pos = (c - lo) * scale
    cdef double top = <double>(G - 1)
    cdef Py_ssize_t g
    pos = top if pos > top else pos
    g = <Py_ssize_t>pos
    return g if g > 0 else 0


cdef inline Py_ssize_t _locate(double c, const double* u, Py_ssize_t nk,
                               const Py_ssize_t* table, Py_ssize_t G,
                               double lo, double scale, Py_ssize_t top_step) noexcept nogil:
    """Index of the first knot ``>= c`` (the last knot when none is).

    The first knot ``>= c`` lies in ``[table[g], table[g + 1]]`` for the
    query's cell ``g`` (``nk`` standing for "none"). Within the cell the
    knots below ``c`` form a prefix; its length is found by binary lifting
    with steps ``top_step, top_step / 2, ..., 1`` (``top_step``: the largest
    power of two not above the most knots any cell holds), each a select
    rather than a branch, so every query of a function runs the same
    instructions and nothing depends on where the query falls. Reads are
    clamped to the last knot; queries above it end at ``nk`` and are brought
    back to ``nk - 1``.
    """
    cdef Py_ssize_t g, i, end, t, step = top_step
    cdef bint below
    g = _cell(c, lo, scale, G)
    i = table[g]
    end = table[g + 1]
    while step > 0:
        t = i + step - 1
        below = (t < end) & (u[t if t < nk else nk - 1] < c)
        i = t + 1 if below else i
        step >>= 1
    return i if i < nk else nk - 1


cdef inline double _grid_scale(const double* u, Py_ssize_t nk, Py_ssize_t G) noexcept nogil:
    cdef double span = u[nk - 1] - u[0]
    cdef double sc = <double>G / span if span > 0.0 else 0.0
    return sc if isfinite(sc) else 0.0


cdef inline Py_ssize_t _most_per_cell(const double* u, Py_ssize_t nk, Py_ssize_t G) noexcept nogil:
    """Most knots sharing one cell of a ``G``-cell grid (cells of sorted
    knots are sorted, so this is the longest run of equal cells)."""
    cdef double sc = _grid_scale(u, nk, G)
    cdef Py_ssize_t b, run = 1, most = 1, prev = _cell(u[0], u[0], sc, G), g
    for b in range(1, nk):
        g = _cell(u[b], u[0], sc, G)
        run = run + 1 if g == prev else 1
        most = run if run > most else most
        prev = g
    return most


cdef inline Py_ssize_t _grid_size(const double* u, Py_ssize_t nk) noexcept nogil:
    """Number of grid cells for a step function: the power of two at or
    above twice the knots (at least 64), doubled while some cell holds more
    than one knot, up to eight times the knots (and at most 2**22). Fewer
    knots per cell means fewer search steps per query."""
    cdef Py_ssize_t G = 64
    while G < 2 * nk and G < (1 << 22):
        G <<= 1
    while G < 8 * nk and G < (1 << 22) and _most_per_cell(u, nk, G) > 1:
        G <<= 1
    return G


def build_tables(const double[::1] knots, const Py_ssize_t[::1] knot_off):
    """Build the lookup grids of several step functions.

    Returns ``(table_off, tables, lo, scale, top_step)``.
    """
    cdef Py_ssize_t m = knot_off.shape[0] - 1, r, b, g, nk, G, crowd, total = 0
    cdef double sc
    table_off = np.zeros(m + 1, dtype=np.intp)
    cdef Py_ssize_t[::1] t_off = table_off
    with nogil:
        for r in range(m):
            nk = knot_off[r + 1] - knot_off[r]
            G = _grid_size(&knots[knot_off[r]], nk) if nk > 0 else 1
            t_off[r + 1] = t_off[r] + G + 1
    tables = np.empty(max(table_off[m], 1), dtype=np.intp)
    lo = np.zeros(m, dtype=np.float64)
    scale = np.zeros(m, dtype=np.float64)
    top_step = np.zeros(m, dtype=np.intp)
    cdef Py_ssize_t[::1] tab = tables
    cdef Py_ssize_t[::1] steps = top_step
    cdef double[::1] lo_v = lo, sc_v = scale
    cdef const double* u
    with nogil:
        for r in range(m):
            nk = knot_off[r + 1] - knot_off[r]
            G = t_off[r + 1] - t_off[r] - 1
            if nk == 0:
                continue
            u = &knots[knot_off[r]]
            sc = _grid_scale(u, nk, G)
            lo_v[r] = u[0]
            sc_v[r] = sc
            # table[g] = first knot whose cell is >= g; table[G] = nk.
            b = 0
            for g in range(G + 1):
                while b < nk and _cell(u[b], u[0], sc, G) < g:
                    b += 1
                tab[t_off[r] + g] = b
            tab[t_off[r] + G] = nk
            crowd = 0
            for g in range(G):
                if tab[t_off[r] + g + 1] - tab[t_off[r] + g] > crowd:
                    crowd = tab[t_off[r] + g + 1] - tab[t_off[r] + g]
            steps[r] = 1
            while 2 * steps[r] <= crowd:
                steps[r] <<= 1
    return table_off, tables, lo, scale, top_step


def predict_one(const floating[::1] queries, const double[::1] knots,
                const double[::1] values, const Py_ssize_t[::1] table,
                double lo, double scale, Py_ssize_t top_step, floating[::1] out):
    """Evaluate one step function at every query (no validation)."""
    cdef Py_ssize_t n = queries.shape[0], i, nk = knots.shape[0]
    cdef Py_ssize_t G = table.shape[0] - 1
    with nogil:
        for i in range(n):
            out[i] = <floating>values[_locate(queries[i], &knots[0], nk,
                                              &table[0], G, lo, scale, top_step)]


def predict_many(const floating[:, ::1] queries, const double[::1] knots,
                 const double[::1] values, const Py_ssize_t[::1] knot_off,
                 const Py_ssize_t[::1] tables, const Py_ssize_t[::1] table_off,
                 const double[::1] lo, const double[::1] scale,
                 const Py_ssize_t[::1] top_step, floating[:, ::1] out):
    """Evaluate step function ``j`` at ``queries[:, j]`` for every column."""
    cdef Py_ssize_t n = queries.shape[0], m = queries.shape[1], i, j, k0
    with nogil:
        for i in range(n):
            for j in range(m):
                k0 = knot_off[j]
                out[i, j] = <floating>values[k0 + _locate(
                    queries[i, j], &knots[k0], knot_off[j + 1] - k0,
                    &tables[table_off[j]], table_off[j + 1] - table_off[j] - 1,
                    lo[j], scale[j], top_step[j])]


def first_crossing(const floating[:, ::1] queries, const double[::1] knots,
                   const double[::1] values, const Py_ssize_t[::1] knot_off,
                   const Py_ssize_t[::1] tables, const Py_ssize_t[::1] table_off,
                   const double[::1] lo, const double[::1] scale,
                   const Py_ssize_t[::1] top_step, double threshold, Py_ssize_t k_min, Py_ssize_t[::1] out):
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
                        lo[j], scale[j], top_step[j])] >= threshold:
                    k = j + 1
                    break
            out[i] = k if k > k_min else k_min
