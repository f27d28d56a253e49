# cython: language_level=3
# distutils: language = c++
"""Row-wise kernels over score matrices (one row per example).

No validation happens here: ``slamlearn.margins`` checks inputs first.

Tie rule (shared with the torch implementation in ``slamlearn.margins``):
classes are ranked by decreasing score and, among equal scores, by
increasing class index -- the order a stable sort by decreasing score gives.
"""

from libcpp.algorithm cimport nth_element
from libcpp.functional cimport greater
from libcpp.vector cimport vector
from libc.stdint cimport uint8_t
from cython cimport floating


def top1_margin(const floating[:, ::1] p, floating[::1] out):
    """Largest minus second largest entry of each row (0 when one column)."""
    cdef Py_ssize_t n = p.shape[0], L = p.shape[1], i, j
    cdef double a, b, v
    with nogil:
        for i in range(n):
            a = p[i, 0]
            b = -1e308
            for j in range(1, L):
                v = p[i, j]
                if v > a:
                    b = a
                    a = v
                elif v > b:
                    b = v
            out[i] = <floating>(a - b) if L > 1 else 0


def topj_margins_sorted(const floating[:, ::1] ascending, floating[:, ::1] out):
    """Top-j margins from rows sorted in increasing order (NumPy's sort is
    faster than a per-row sort here): ``out[i, j-1]`` = sum of the ``j``
    largest entries minus the ``(j+1)``-th largest, for ``j = 1 .. L-1``.
    Sums are accumulated in double precision."""
    cdef Py_ssize_t n = ascending.shape[0], L = ascending.shape[1], i, j
    cdef double s
    with nogil:
        for i in range(n):
            s = 0.0
            for j in range(L - 1):
                s = s + ascending[i, L - 1 - j]
                out[i, j] = <floating>(s - ascending[i, L - 2 - j])


def label_rank(const floating[:, ::1] p, const Py_ssize_t[::1] y,
               Py_ssize_t[::1] out):
    """0-based rank of class ``y[i]`` in row ``i`` under the tie rule:
    entries before the label count when ``>=`` it, entries after when ``>``
    (two branch-free loops the compiler vectorises)."""
    cdef Py_ssize_t n = p.shape[0], L = p.shape[1], i, j, r, c
    cdef floating t
    with nogil:
        for i in range(n):
            c = y[i]
            t = p[i, c]
            r = 0
            for j in range(c):
                r += p[i, j] >= t
            for j in range(c + 1, L):
                r += p[i, j] > t
            out[i] = r


cdef inline void _mask_small(const floating* row, Py_ssize_t L, Py_ssize_t k,
                             double* bval, Py_ssize_t* bidx,
                             uint8_t* out) noexcept nogil:
    """Top-k by a sorted buffer of the k best so far: one comparison per entry
    in the common case. A new entry enters only when strictly greater than
    the current k-th, so the earlier index wins ties."""
    cdef Py_ssize_t j, q, cnt = 0
    cdef double v
    for j in range(L):
        v = row[j]
        if cnt == k:
            if not (v > bval[k - 1]):
                continue
            q = k - 1
        else:
            q = cnt
            cnt += 1
        # insert v after every buffered value >= v
        while q > 0 and bval[q - 1] < v:
            bval[q] = bval[q - 1]
            bidx[q] = bidx[q - 1]
            q -= 1
        bval[q] = v
        bidx[q] = j
    for j in range(L):
        out[j] = 0
    for j in range(cnt):
        out[bidx[j]] = 1


cdef inline void _mask_select(const floating* row, Py_ssize_t L, Py_ssize_t k,
                              vector[double]& tmp, uint8_t* out) noexcept nogil:
    """Top-k by selecting the k-th largest value, then taking everything
    above it and the first tied entries (in index order) up to k."""
    cdef Py_ssize_t j, above = 0
    cdef double kth, v
    for j in range(L):
        tmp[j] = row[j]
    nth_element(tmp.begin(), tmp.begin() + (k - 1), tmp.end(), greater[double]())
    kth = tmp[k - 1]
    for j in range(L):
        if row[j] > kth:
            above += 1
    for j in range(L):
        v = row[j]
        if v > kth:
            out[j] = 1
        elif v == kth and above < k:
            out[j] = 1
            above += 1
        else:
            out[j] = 0


def topk_mask(const floating[:, ::1] scores, const Py_ssize_t[::1] k,
              uint8_t[:, ::1] out):
    """``out[i]`` marks the ``k[i]`` top entries of ``scores[i]`` (tie rule in
    the module docstring). ``1 <= k[i] <= L`` is the caller's job."""
    cdef Py_ssize_t n = scores.shape[0], L = scores.shape[1], i, j, ki
    cdef vector[double] bval
    cdef vector[Py_ssize_t] bidx
    cdef vector[double] tmp
    with nogil:
        bval.resize(L + 1)
        bidx.resize(L + 1)
        tmp.resize(L + 1)
        for i in range(n):
            ki = k[i]
            if ki >= L:
                for j in range(L):
                    out[i, j] = 1
            elif ki <= 16:
                _mask_small(&scores[i, 0], L, ki, bval.data(), bidx.data(),
                            &out[i, 0])
            else:
                _mask_select(&scores[i, 0], L, ki, tmp, &out[i, 0])
