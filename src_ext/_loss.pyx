# cython: language_level=3
# distutils: language = c++
"""Cross entropy against an affine map of the softmax, forward and gradient
in one pass (CPU).

For logits ``z`` (one row per example), targets ``y`` and coefficients
``c, d`` (see ``slamlearn.mixing.mix_coefficients``) it computes, per row::

    f = softmax(z),  m = c * f + d,  loss = -sum_i y_i log(m_i)
    h_i = -y_i c_i f_i / m_i,        dloss/dz = h - f * sum(h)

Where ``d_i == 0`` the mixed probability is ``c_i f_i`` and its log is taken
as ``log(c_i) + log f_i``, which stays exact when ``f_i`` underflows and makes
``alpha = 1`` reproduce cross entropy. ``m`` is clamped below at ``eps``
(entries at the clamp get no gradient). No validation happens here.

Transcendental calls dominate at training sizes, so each row costs one
``exp`` per entry, one ``log`` for the normaliser and one ``log`` per entry
with ``d != 0`` (the teacher's top-k classes); ``log(c)`` is cached while
``c`` repeats (it is ``alpha`` off the mask). float32 uses ``expf``/``logf``.
"""

from libc.math cimport exp, log, expf, logf
from libcpp.vector cimport vector
from cython cimport floating


cdef inline double _exp(floating x) noexcept nogil:
    if floating is float:
        return expf(x)
    else:
        return exp(x)


cdef inline double _log(double x, floating tag) noexcept nogil:
    if floating is float:
        return logf(<float>x)
    else:
        return log(x)


def affine_softmax_xent(const floating[:, ::1] z, const floating[:, ::1] y,
                        const floating[:, ::1] c, const floating[:, ::1] d,
                        double eps, floating[::1] loss, floating[:, ::1] grad):
    cdef Py_ssize_t n = z.shape[0], L = z.shape[1], i, j
    cdef double mx, s, inv_s, log_s, f, m, h, H, acc, yj, cj, dj
    cdef double last_c, log_c, log_eps = log(eps)
    cdef floating zmx
    cdef vector[double] fbuf, hbuf
    with nogil:
        fbuf.resize(L)
        hbuf.resize(L)
        last_c = -1.0
        log_c = 0.0
        for i in range(n):
            mx = z[i, 0]
            for j in range(1, L):
                if z[i, j] > mx:
                    mx = z[i, j]
            s = 0.0
            for j in range(L):
                zmx = <floating>(z[i, j] - mx)
                fbuf[j] = _exp(zmx)
                s += fbuf[j]
            inv_s = 1.0 / s
            log_s = _log(s, z[i, 0])
            acc = 0.0
            H = 0.0
            for j in range(L):
                f = fbuf[j] * inv_s
                fbuf[j] = f
                yj = y[i, j]
                cj = c[i, j]
                dj = d[i, j]
                if dj == 0.0:
                    if cj > eps:
                        if yj != 0.0:
                            if cj != last_c:
                                last_c = cj
                                log_c = _log(cj, z[i, 0])
                            acc -= yj * (log_c + (z[i, j] - mx - log_s))
                        h = -yj
                    else:
                        acc -= yj * log_eps
                        h = 0.0
                else:
                    m = cj * f + dj
                    if m > eps:
                        if yj != 0.0:
                            acc -= yj * _log(m, z[i, 0])
                        h = -yj * cj * f / m
                    else:
                        acc -= yj * log_eps
                        h = 0.0
                hbuf[j] = h
                H += h
            loss[i] = <floating>acc
            for j in range(L):
                grad[i, j] = <floating>(hbuf[j] - fbuf[j] * H)
