"""The Student-Label Mixing operation (SLaM paper, Equation 1 and Remark B.1).

This module is the one home of the formula. For a student prediction ``f``
(a probability vector over ``L`` classes), the teacher's accuracy ``alpha``
and its top-k mask ``m = top(ys; k)``::

    mix(f) = alpha * f + (1 - alpha) * m * (1 - f) / (k - 1)   # normalised (Eq. 1)
    mix(f) = alpha * f + (1 - alpha) * m * (1 - f)             # un-normalised (Remark B.1)

The paper's experiments use the un-normalised form, so it is the default
here; both coincide for ``k = 2`` (binary classification).

Written as ``mix(f) = c * f + d`` with per-example coefficients
``d = beta = (1 - alpha) * m [/ (k - 1)]`` and ``c = alpha - beta``, the
operation is affine in ``f`` with coefficients that never change during
training, which is what the loss in :mod:`slamlearn.losses` exploits. The
coefficients take only two values per example: ``(alpha, 0)`` off the mask
and ``(alpha - beta, beta)`` on it (:func:`mix_row_coefficients`); the dense
``(c, d)`` are built from those.

The functions accept NumPy arrays and torch tensors alike (only broadcasting
arithmetic is used).
"""

from __future__ import annotations

__all__ = ["mix", "mix_coefficients", "mix_row_coefficients"]


def mix_row_coefficients(alpha, k=None, *, normalize: bool = False):
    """Per-example coefficients of ``mix(f) = c * f + d`` in row form.

    Off the teacher's top-k mask ``c = alpha`` and ``d = 0``; on it
    ``c = c_on`` and ``d = d_on``.

    Parameters
    ----------
    alpha : array or tensor of shape (n,)
        Probability that the teacher's top-1 class is right.
    k : array or tensor of shape (n,), optional
        ``k(x)``; needed only with ``normalize=True``.
    normalize : bool, default=False
        Divide the mixing term by ``k - 1`` (Equation 1); the default is the
        un-normalised form of Remark B.1.

    Returns
    -------
    c_off, c_on, d_on : arrays or tensors of shape (n,), in the dtype of ``alpha``.
    """
    beta = 1 - alpha
    if normalize:
        if k is None:
            raise ValueError("k is required when normalize=True")
        beta = beta / (k - 1)
    return alpha, alpha - beta, beta


def mix_coefficients(alpha, mask, k=None, *, normalize: bool = False):
    """Per-example coefficients ``(c, d)`` with ``mix(f) = c * f + d``.

    Parameters
    ----------
    alpha : array or tensor of shape (n,)
        Probability that the teacher's top-1 class is right.
    mask : array or tensor of shape (n, L)
        ``top(ys; k)``: 1 on the teacher's ``k(x)`` top classes, 0 elsewhere
        (bool or float).
    k : array or tensor of shape (n,), optional
        ``k(x)``; needed only with ``normalize=True``.
    normalize : bool, default=False
        Divide the mixing term by ``k - 1`` (Equation 1). The default is the
        un-normalised form of Remark B.1, which the paper's experiments use.

    Returns
    -------
    c, d : arrays or tensors of shape (n, L), in the dtype of ``alpha``.
    """
    c_off, c_on, d_on = mix_row_coefficients(alpha, k, normalize=normalize)
    d = d_on[:, None] * mask
    return c_off[:, None] - d, d


def mix(f, alpha, mask, k=None, *, normalize: bool = False):
    """Mix student probabilities ``f`` (shape (n, L)) with the teacher's noise
    model: Equation 1 of the SLaM paper (see :func:`mix_coefficients`)."""
    c, d = mix_coefficients(alpha, mask, k, normalize=normalize)
    return c * f + d
