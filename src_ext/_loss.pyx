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


cdef extern from "_loss_helpers.h":
    float slam_expf_nonpos(float x) noexcept nogil
    Py_ssize_t slam_mask_positions(const unsigned char* m, Py_ssize_t L, Py_ssize_t* idx) noexcept nogil


cdef inline floating _exp_nonpos(floating x) noexcept nogil:
    if floating is float:
        return slam_expf_nonpos(x)
    else:
        return exp(x)


cdef inline floating _row_max(const floating* r, Py_ssize_t L) noexcept nogil:
    # Four running maxima: one would serialise on the compare's latency.
    # NaN entries are skipped here; they reach the loss through exp anyway.
    cdef floating m0 = r[0], m1 = r[0], m2 = r[0], m3 = r[0]
    cdef Py_ssize_t j = 0
    while j + 4 <= L:
        m0 = r[j] if r[j] > m0 else m0
        m1 = r[j + 1] if r[j + 1] > m1 else m1
        m2 = r[j + 2] if r[j + 2] > m2 else m2
        m3 = r[j + 3] if r[j + 3] > m3 else m3
        j += 4
    while j < L:
        m0 = r[j] if r[j] > m0 else m0
        j += 1
    m0 = m1 if m1 > m0 else m0
    m2 = m3 if m3 > m2 else m2
    return m2 if m2 > m0 else m0


def slam_xent(const floating[:, ::1] z, const floating[:, ::1] y,
              const unsigned char[:, ::1] mask, const floating[::1] c_off,
              const floating[::1] c_on, const floating[::1] d_on,
              const floating[::1] weight, double scale, double eps,
              floating[::1] loss, floating[:, ::1] grad):
    """``affine_softmax_xent`` for SLaM's row-structured coefficients.

    Row ``i`` has ``c = c_off[i], d = 0`` off the mask and ``c = c_on[i],
    d = d_on[i]`` on it, so the dense coefficient matrices are never built.
    Off the mask ``log m_j = log c_off + log f_j`` and ``h_j = -y_j``, so
    those entries reduce to two row sums; only the few mask entries are
    visited one by one. The clamping rules of ``affine_softmax_xent`` apply
    entry by entry. The per-entry loops run in the input precision (and
    vectorize); row totals are accumulated in double.

    Mask entries are where float32 loses accuracy: with ``c < 0`` (alpha <
    1/2) and ``f`` near 1, ``m = c f + d`` and ``h - f H`` both cancel. So
    ``1 - f`` is kept as the sum of the *other* entries (the softmax sum is
    accumulated as "entries at the row maximum" plus "the rest"), ``m`` is
    taken as ``(c + d) - c (1 - f)`` when ``f > 1/2``, and the gradient as
    ``h (1 - f) - f (H - h)``, all in double.

    ``loss`` receives each row's loss; the gradient rows are those of
    ``scale * sum_i weight[i] * loss[i]`` (``weight`` may be empty: all ones),
    which is also returned, so a mean or a weighted sum needs no extra pass.
    """
    cdef Py_ssize_t n = z.shape[0], L = z.shape[1], i, j, t, n_on
    cdef double mx, s, log_s, f, omf, m, h, H, A, Y, A_on, Y_on, part, yj, co, cn, dn, wi, n_top
    cdef double log_eps = log(eps), total = 0.0
    cdef bint weighted = weight.shape[0] > 0
    cdef const floating* zr
    cdef const floating* yr
    cdef floating* gr
    cdef floating mxf, rest, tops, Af, Yf, go, ish, inv_s
    cdef vector[floating] ebuf
    cdef vector[Py_ssize_t] on_idx
    cdef vector[double] on_h
    cdef floating* e
    with nogil:
        ebuf.resize(L)
        on_idx.resize(L)
        on_h.resize(L)
        e = ebuf.data()
        for i in range(n):
            zr = &z[i, 0]
            yr = &y[i, 0]
            gr = &grad[i, 0]
            mxf = _row_max(zr, L)
            mx = mxf
            rest = 0
            tops = 0
            Af = 0
            Yf = 0
            for j in range(L):
                e[j] = _exp_nonpos(<floating>(zr[j] - mxf))
                # the softmax sum as (entries at the maximum, exp = 1) + rest
                rest = rest + (e[j] if zr[j] < mxf else 0)
                tops = tops + (0 if zr[j] < mxf else 1)
                # sum_j y_j (z_j - max) and sum_j y_j over the whole row
                Af = Af + yr[j] * (zr[j] - mxf)
                Yf = Yf + yr[j]
            n_top = tops
            s = n_top + <double>rest
            A = Af
            Y = Yf
            inv_s = <floating>(1.0 / s)
            log_s = _log(s, zr[0])
            co = c_off[i]
            cn = c_on[i]
            dn = d_on[i]
            # entries on the mask: their own terms, and what to take back out
            # of the off-mask sums
            n_on = slam_mask_positions(&mask[i, 0], L, on_idx.data())
            A_on = 0.0
            Y_on = 0.0
            part = 0.0
            H = 0.0
            for t in range(n_on):
                j = on_idx[t]
                yj = yr[j]
                f = e[j] / s
                # 1 - f as the other entries' share (no cancellation at f ~ 1)
                omf = ((n_top - 1.0) + rest if zr[j] >= mxf else s - e[j]) / s
                A_on += yj * (zr[j] - mx)
                Y_on += yj
                if dn == 0.0:
                    if cn > eps:
                        part += yj * (_log(cn, zr[0]) + (zr[j] - mx - log_s))
                        h = -yj
                    else:
                        part += yj * log_eps
                        h = 0.0
                else:
                    m = (cn + dn) - cn * omf if f > 0.5 else cn * f + dn
                    if m > eps:
                        if yj != 0.0:
                            part += yj * _log(m, zr[0])
                        h = -yj * cn * f / m
                    else:
                        part += yj * log_eps
                        h = 0.0
                on_h[t] = h
                H += h
            # entries off the mask: sum_off y_j (log c_off + z_j - max - log s)
            wi = scale * weight[i] if weighted else scale
            if co > eps:
                part += (Y - Y_on) * (_log(co, zr[0]) - log_s) + (A - A_on)
                go = <floating>wi
            else:
                part += (Y - Y_on) * log_eps
                go = 0
            H -= (Y - Y_on) if co > eps else 0.0
            loss[i] = <floating>(-part)
            total -= wi * part
            # dloss/dz_j = h_j - f_j H, with h_j = -y_j off the mask (0 when clamped)
            ish = <floating>(wi * H) * inv_s
            for j in range(L):
                gr[j] = -go * yr[j] - e[j] * ish
            for t in range(n_on):
                # h - f H written as h (1 - f) - f (H - h), in double
                j = on_idx[t]
                f = e[j] / s
                omf = ((n_top - 1.0) + rest if zr[j] >= mxf else s - e[j]) / s
                gr[j] = <floating>(wi * (on_h[t] * omf - f * (H - on_h[t])))
    return total
