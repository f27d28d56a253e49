# cython: language_level=3
"""Pool-adjacent-violators (PAV) kernels.

These kernels do no validation: ``slamlearn.isotonic`` checks shapes, dtypes,
finiteness and weights before calling them. Every loop runs without the GIL.

Every variant feeds one primitive, :c:func:`_pool`, which pushes a block of
positive weight onto a stack and pools violators. A block keeps its weighted
sum of responses, its weight, the first and last covariate it covers, and the
last input index it covers (for expanding a fit back to one value per input).
Sums are kept in double precision whatever the input dtype. Loop state lives
in local variables, not in memory the output arrays could alias, so that the
compiler keeps it in registers.

Conventions shared by every kernel:

* Points with zero weight never change a fit; they are covered by the block
  to their left (the first block for leading ones) when the fit is expanded.
* Points with equal covariates are gathered into one block before any
  pooling (the "primary" tie rule, as in scikit-learn). Pooling a partial tie
  group could merge it with a neighbour whose mean equals the partial mean,
  which the complete group's mean may not.
* Adjacent blocks with equal means are pooled too, so the output is compact.
* Bounds are applied after pooling by clipping, which is exact for box
  constraints on isotonic regression; blocks clipped to the same bound merge.
"""

from libc.stdint cimport uint32_t, uint64_t
from libc.string cimport memcpy
from cython cimport floating

import numpy as np

ctypedef fused key_t:
    uint32_t
    uint64_t


cdef struct Out:
    double* swy      # weighted sum of responses, then the block value
    double* sw       # sum of weights
    double* lo       # first covariate in the block
    double* hi       # last covariate in the block (the step rule's knot)
    Py_ssize_t* last # last input index covered by the block


cdef inline Py_ssize_t _pool(Out o, Py_ssize_t nb, double x_lo, double x_hi,
                             double s, double w, Py_ssize_t last,
                             bint increasing) noexcept nogil:
    """Push the block covering ``x_lo .. x_hi`` (sum ``s``, weight ``w > 0``)
    onto ``nb`` blocks; pool while the previous mean is not strictly below
    (above, when decreasing) the new one. Means are compared by cross
    products: no division in the loop."""
    cdef Py_ssize_t t = nb
    while t > 0:
        if increasing:
            if o.swy[t - 1] * w < s * o.sw[t - 1]:
                break
        else:
            if o.swy[t - 1] * w > s * o.sw[t - 1]:
                break
        t -= 1
        s += o.swy[t]
        w += o.sw[t]
        x_lo = o.lo[t]
    o.swy[t] = s
    o.sw[t] = w
    o.lo[t] = x_lo
    o.hi[t] = x_hi
    o.last[t] = last
    return t + 1


cdef inline Py_ssize_t _finish(Out o, Py_ssize_t nb, double y_min, double y_max) noexcept nogil:
    """Turn sums into clipped block values (in ``swy``) and merge neighbours
    that became equal. Returns the number of blocks."""
    cdef Py_ssize_t i, m = 0
    cdef double v
    for i in range(nb):
        v = o.swy[i] / o.sw[i]
        if v < y_min:
            v = y_min
        elif v > y_max:
            v = y_max
        if m > 0 and o.swy[m - 1] == v:
            o.sw[m - 1] += o.sw[i]
            o.hi[m - 1] = o.hi[i]
            o.last[m - 1] = o.last[i]
        else:
            o.swy[m] = v
            o.sw[m] = o.sw[i]
            o.lo[m] = o.lo[i]
            o.hi[m] = o.hi[i]
            o.last[m] = o.last[i]
            m += 1
    return m


cdef inline Out _out_at(double[::1] swy, double[::1] sw, double[::1] lo,
                        double[::1] hi, Py_ssize_t[::1] last,
                        Py_ssize_t start) noexcept nogil:
    cdef Out o
    o.swy = &swy[start]
    o.sw = &sw[start]
    o.lo = &lo[start]
    o.hi = &hi[start]
    o.last = &last[start]
    return o


def _alloc(Py_ssize_t n):
    return (np.empty(n, dtype=np.float64), np.empty(n, dtype=np.float64),
            np.empty(n, dtype=np.float64), np.empty(n, dtype=np.float64),
            np.empty(n, dtype=np.intp))


# -- ordered responses (no covariate) -------------------------------------------

cdef inline Py_ssize_t _ordered_run(const floating* y, const floating* w,
                                    bint has_weights, Py_ssize_t n,
                                    bint increasing, double* swy, double* sw,
                                    Py_ssize_t* last) noexcept nogil:
    """PAV without a covariate, so without knots to track: the hot loop of
    :func:`pav_ordered`. Returns the number of blocks (before clipping)."""
    cdef Py_ssize_t i, t, nb = 0
    cdef double wi, s
    for i in range(n):
        wi = w[i] if has_weights else 1.0
        if wi == 0.0:
            if nb > 0:
                last[nb - 1] = i
            continue
        s = wi * y[i]
        t = nb
        while t > 0:
            if increasing:
                if swy[t - 1] * wi < s * sw[t - 1]:
                    break
            else:
                if swy[t - 1] * wi > s * sw[t - 1]:
                    break
            t -= 1
            s += swy[t]
            wi += sw[t]
        swy[t] = s
        sw[t] = wi
        last[t] = i
        nb = t + 1
    return nb


def pav_ordered(const floating[::1] y, const floating[::1] w, bint has_weights,
                bint increasing, double y_min, double y_max,
                floating[::1] fitted):
    """Isotonic regression of ``y`` in the given order (no covariate).

    Writes one fitted value per input into ``fitted`` and returns
    ``(values, weights, last)`` per block, with ``last`` the index of the last
    input each block covers.
    """
    cdef Py_ssize_t n = y.shape[0], i, j, start, nb, m
    swy, sw, _, _, last = _alloc(max(n, 1))
    cdef double[::1] swy_v = swy, sw_v = sw
    cdef Py_ssize_t[::1] last_v = last
    cdef double v
    with nogil:
        nb = _ordered_run(&y[0], &w[0], has_weights, n, increasing,
                          &swy_v[0], &sw_v[0], &last_v[0])
        # clip, merge blocks clipped to the same bound, expand
        m = 0
        start = 0
        for j in range(nb):
            v = swy_v[j] / sw_v[j]
            if v < y_min:
                v = y_min
            elif v > y_max:
                v = y_max
            for i in range(start, last_v[j] + 1):
                fitted[i] = <floating>v
            start = last_v[j] + 1
            if m > 0 and swy_v[m - 1] == v:
                sw_v[m - 1] += sw_v[j]
                last_v[m - 1] = last_v[j]
            else:
                swy_v[m] = v
                sw_v[m] = sw_v[j]
                last_v[m] = last_v[j]
                m += 1
    return swy[:m], sw[:m], last[:m]


# -- responses on a sorted covariate -------------------------------------------

cdef inline Py_ssize_t _xy_run(const floating* x, const floating* y,
                               const floating* w, bint has_weights,
                               Py_ssize_t n, Out o, bint increasing) noexcept nogil:
    """PAV on (x, y, w) sorted by x, ties gathered first. Returns the number
    of blocks (before clipping)."""
    cdef Py_ssize_t i, nb = 0, glast = 0
    cdef bint open_group = False
    cdef double gx = 0.0, gs = 0.0, gw = 0.0, wi
    for i in range(n):
        wi = w[i] if has_weights else 1.0
        if wi == 0.0:
            if open_group:
                glast = i
            elif nb > 0:
                o.last[nb - 1] = i
            continue
        if open_group and x[i] == gx:
            gs += wi * y[i]
            gw += wi
            glast = i
            continue
        if open_group:
            nb = _pool(o, nb, gx, gx, gs, gw, glast, increasing)
        open_group = True
        gx = x[i]
        gs = wi * y[i]
        gw = wi
        glast = i
    if open_group:
        nb = _pool(o, nb, gx, gx, gs, gw, glast, increasing)
    return nb


def pav_xy(const floating[::1] x, const floating[::1] y, const floating[::1] w,
           bint has_weights, bint increasing, double y_min, double y_max):
    """Isotonic regression of ``y`` on ``x`` (sorted ascending), ties pooled.

    Returns ``(lo, hi, values, weights, last)`` per block.
    """
    cdef Py_ssize_t n = x.shape[0], nb
    swy, sw, lo, hi, last = _alloc(max(n, 1))
    cdef Out o = _out_at(swy, sw, lo, hi, last, 0)
    with nogil:
        nb = _xy_run(&x[0], &y[0], &w[0], has_weights, n, o, increasing)
        nb = _finish(o, nb, y_min, y_max)
    return lo[:nb], hi[:nb], swy[:nb], sw[:nb], last[:nb]


def pav_xy_ragged(const floating[::1] x, const floating[::1] y,
                  const floating[::1] w, bint has_weights,
                  const Py_ssize_t[::1] problem_offsets, bint increasing,
                  double y_min, double y_max):
    """Batched :func:`pav_xy` over a ragged batch.

    Problem ``r`` is ``x[problem_offsets[r]:problem_offsets[r + 1]]`` (and the
    same slice of ``y``, ``w``), sorted by ``x``. Returns ``(offsets, lo, hi,
    values, weights)`` with blocks of problem ``r`` at
    ``offsets[r]:offsets[r + 1]``.
    """
    cdef Py_ssize_t m = problem_offsets.shape[0] - 1, r, a, total = 0, nb
    offsets = np.zeros(m + 1, dtype=np.intp)
    cdef Py_ssize_t[::1] off_v = offsets
    swy, sw, lo, hi, last = _alloc(max(x.shape[0], 1))
    cdef double[::1] swy_v = swy, sw_v = sw, lo_v = lo, hi_v = hi
    cdef Py_ssize_t[::1] last_v = last
    cdef Out o
    with nogil:
        for r in range(m):
            a = problem_offsets[r]
            # Earlier problems occupy [0, total) with total <= a, so this
            # problem may use the slots from ``total`` on: compact as it grows.
            o = _out_at(swy_v, sw_v, lo_v, hi_v, last_v, total)
            nb = _xy_run(&x[a], &y[a], &w[a], has_weights,
                         problem_offsets[r + 1] - a, o, increasing)
            total += _finish(o, nb, y_min, y_max)
            off_v[r + 1] = total
    return offsets, lo[:total], hi[:total], swy[:total], sw[:total]


# -- 0/1 responses packed into sort keys ----------------------------------------

cdef inline double _decode(key_t bits) noexcept nogil:
    """Covariate of a packed key shifted right by one: the bits of a
    non-negative float (the response sat in the lowest bit)."""
    cdef uint32_t b32
    cdef uint64_t b64
    cdef float f32
    cdef double f64
    if key_t is uint32_t:
        b32 = bits
        memcpy(&f32, &b32, 4)
        return f32
    else:
        b64 = bits
        memcpy(&f64, &b64, 8)
        return f64


cdef inline Py_ssize_t _packed_run(const key_t* keys, Py_ssize_t n, Out o,
                                   double y_min, double y_max) noexcept nogil:
    """Increasing PAV over sorted packed keys.

    Each run of equal covariate bits is a tie group; its response sum is its
    count of set low bits. Consecutive groups that are all 0 (or all 1) enter
    as one segment: in the least-squares solution consecutive points with
    equal responses always share a value (averaging two unequal fitted values
    keeps the order and lowers the loss), so this gives the same fit with far
    fewer pooling steps -- and far fewer mispredicted branches.
    """
    cdef Py_ssize_t i = 0, j, nb = 0, cnt, seg_last = 0
    cdef key_t bits, seg_hi = 0
    cdef Py_ssize_t ones
    cdef double seg_s = 0.0, seg_w = 0.0, seg_lo = 0.0
    cdef int seg_kind = -1   # -1: none open, 0/1: pure run of that response, 2: mixed
    cdef int kind
    while i < n:
        bits = keys[i] >> 1
        ones = <Py_ssize_t>(keys[i] & 1)
        j = i + 1
        while j < n and (keys[j] >> 1) == bits:
            ones += <Py_ssize_t>(keys[j] & 1)
            j += 1
        cnt = j - i
        kind = 0 if ones == 0 else (1 if ones == cnt else 2)
        if kind == seg_kind and kind != 2:
            seg_s += <double>ones
            seg_w += <double>cnt
            seg_hi = bits
            seg_last = j - 1
        else:
            if seg_kind >= 0:
                nb = _pool(o, nb, seg_lo, _decode(seg_hi), seg_s, seg_w, seg_last, True)
            seg_kind = kind
            seg_lo = _decode(bits)
            seg_hi = bits
            seg_s = <double>ones
            seg_w = <double>cnt
            seg_last = j - 1
        i = j
    if seg_kind >= 0:
        nb = _pool(o, nb, seg_lo, _decode(seg_hi), seg_s, seg_w, seg_last, True)
    return _finish(o, nb, y_min, y_max)


def pav_packed(const key_t[::1] keys, double y_min, double y_max):
    """Increasing isotonic regression of 0/1 responses on non-negative
    covariates packed into sorted keys (covariate bits << 1 | response).

    Returns ``(lo, hi, values, weights)`` per block.
    """
    cdef Py_ssize_t n = keys.shape[0], nb
    swy, sw, lo, hi, last = _alloc(max(n, 1))
    cdef Out o = _out_at(swy, sw, lo, hi, last, 0)
    with nogil:
        nb = _packed_run(&keys[0], n, o, y_min, y_max)
    return lo[:nb], hi[:nb], swy[:nb], sw[:nb]


def pav_packed_rows(const key_t[:, ::1] keys, double y_min, double y_max):
    """Batched :func:`pav_packed`: one independent problem per row.

    Returns the ragged result ``(offsets, lo, hi, values, weights)``: the
    blocks of problem ``r`` are ``offsets[r]:offsets[r + 1]``.
    """
    cdef Py_ssize_t m = keys.shape[0], n = keys.shape[1], r, total = 0
    offsets = np.zeros(m + 1, dtype=np.intp)
    cdef Py_ssize_t[::1] off_v = offsets
    swy, sw, lo, hi, last = _alloc(max(m * n, 1))
    cdef double[::1] swy_v = swy, sw_v = sw, lo_v = lo, hi_v = hi
    cdef Py_ssize_t[::1] last_v = last
    cdef Out o
    with nogil:
        if n > 0:
            for r in range(m):
                o = _out_at(swy_v, sw_v, lo_v, hi_v, last_v, total)
                total += _packed_run(&keys[r, 0], n, o, y_min, y_max)
                off_v[r + 1] = total
    return offsets, lo[:total], hi[:total], swy[:total], sw[:total]
