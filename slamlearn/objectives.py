"""Baseline distillation objectives from the SLaM paper's comparisons, as
pure functions (one home per formula). :class:`~slamlearn.SLaMClassifier`
selects and composes them; they can also be used on their own.

Every base loss here is linear in the target: ``loss(q, y) = sum_c y_c phi(q_c)``
for a per-class function ``phi`` of the predicted probability, so soft and
hard targets are handled alike and the noise corrections below apply to all
of them.

References
----------
Hinton, Vinyals, Dean (2015). Distilling the knowledge in a neural network.
Feng et al. (2020). Can cross entropy loss be robust to label noise? (Taylor CE)
Leng et al. (2022). PolyLoss: a polynomial expansion perspective of classification loss functions.
Patrini et al. (2017). Making deep neural networks robust to label noise: a loss correction approach.
Liu and Tao (2016). Classification with noisy labels by importance reweighting.
Iliopoulos et al. (2022). Weighted distillation with unlabeled examples.
Dehghani et al. (2017). Fidelity-weighted learning.
Rizve et al. (2021). In defense of pseudo-labeling: an uncertainty-aware pseudo-label selection framework (UPS).
Ahn et al. (2019). Variational information distillation for knowledge transfer (VID).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .mixing import mix

__all__ = [
    "BASE_LOSSES",
    "VIDHead",
    "backward_corrected_loss",
    "base_loss",
    "estimate_transition",
    "fidelity_weights",
    "importance_weights",
    "per_class_loss",
    "temper",
    "ups_loss",
    "ups_selection",
]

BASE_LOSSES = ("ce", "taylor", "poly1")

#: Probabilities are clamped at this value before a log in the torch losses here.
PROB_EPS = 1e-12


def per_class_loss(q: torch.Tensor, kind: str = "ce", *, degree: int = 2, epsilon: float = 2.0) -> torch.Tensor:
    """``phi(q_c)`` for every class: the loss if class ``c`` were the label.

    * ``"ce"``: ``-log q``.
    * ``"taylor"`` (Feng et al. 2020): ``sum_{i=1..degree} (1 - q)^i / i``, the
      Taylor series of ``-log q`` around 1 cut at ``degree`` (the paper's
      Appendix D.6 uses degree 2).
    * ``"poly1"`` (Leng et al. 2022): ``-log q + epsilon * (1 - q)``
      (Appendix D.6 uses epsilon = 2).
    """
    if kind == "ce":
        return -q.clamp_min(PROB_EPS).log()
    if kind == "taylor":
        if int(degree) < 1:
            raise ValueError(f"taylor_degree must be a positive int; got {degree}")
        r = 1.0 - q
        total = torch.zeros_like(q)
        power = torch.ones_like(q)
        for i in range(1, int(degree) + 1):
            power = power * r
            total = total + power / i
        return total
    if kind == "poly1":
        return -q.clamp_min(PROB_EPS).log() + epsilon * (1.0 - q)
    raise ValueError(f"base_loss must be one of {BASE_LOSSES}; got {kind!r}")


def base_loss(q: torch.Tensor, target: torch.Tensor, kind: str = "ce", **kw) -> torch.Tensor:
    """Per-row ``sum_c target_c phi(q_c)`` (see :func:`per_class_loss`)."""
    return (target * per_class_loss(q, kind, **kw)).sum(1)


def temper(proba, temperature: float):
    """Soften (T > 1) or sharpen (T < 1) probability rows: ``softmax(log p / T)``
    (Hinton et al. 2015, applied to stored teacher probabilities). NumPy
    arrays or torch tensors."""
    if not temperature > 0:
        raise ValueError(f"temperatures must be positive; got {temperature}")
    if temperature == 1.0:
        return proba
    if isinstance(proba, torch.Tensor):
        return torch.softmax(proba.clamp_min(torch.finfo(proba.dtype).tiny).log() / temperature, dim=1)
    logp = np.log(np.clip(proba, 1e-300, None)) / temperature
    logp -= logp.max(1, keepdims=True)
    out = np.exp(logp)
    return out / out.sum(1, keepdims=True)


def estimate_transition(proba: np.ndarray, y: np.ndarray, n_classes: int, *, smoothing: float = 1.0,
                        hard: bool = False) -> np.ndarray:
    """Teacher-noise transition matrix from a labeled validation set.

    ``T[i, j]`` estimates P(teacher label = j | true class = i): the mean of
    the teacher's probability for ``j`` (or of its top-1 being ``j`` with
    ``hard=True``) over validation rows of class ``i``, with ``smoothing``
    pseudo-counts spread uniformly (so that every row is a distribution and
    classes missing from the validation set get the uniform row). This is
    Patrini et al. (2017)'s matrix, estimated from labeled rows instead of
    anchor points since SLaM's setting has them.
    """
    if smoothing < 0:
        raise ValueError(f"transition_smoothing must be non-negative; got {smoothing}")
    labels = np.eye(n_classes)[proba.argmax(1)] if hard else proba
    counts = np.zeros((n_classes, n_classes))
    np.add.at(counts, y, labels)
    totals = np.bincount(y, minlength=n_classes).astype(float)
    T = (counts + smoothing / n_classes) / (totals + smoothing)[:, None]
    empty = totals + smoothing == 0
    T[empty] = 1.0 / n_classes
    return T


def backward_corrected_loss(q: torch.Tensor, target: torch.Tensor, T_inv: torch.Tensor, kind: str = "ce",
                            **kw) -> torch.Tensor:
    """Backward loss correction (Patrini et al. 2017; Natarajan et al. 2013):
    the label's loss is replaced by ``(T^{-1} phi(q))_label``, an unbiased
    estimate of the clean loss. Soft targets average it over their mass."""
    return (target * (per_class_loss(q, kind, **kw) @ T_inv.T)).sum(1)


def importance_weights(student_proba, teacher_label, alpha, mask, k=None, *, normalize: bool = False,
                       max_weight: float = 10.0, rescale: bool = True):
    """Per-class importance weights for teacher labels (weighted distillation).

    Importance reweighting (Liu and Tao 2016) makes the loss on noisy labels
    an unbiased estimate of the loss on clean ones:
    ``E_noisy[beta(x, y) l(f(x), y)] = E_clean[l(f(x), y)]`` with
    ``beta(x, y) = P_clean(y | x) / P_noisy(y | x)``. Following Iliopoulos et
    al. (2022), whose code is not public, ``P_clean(. | x)`` is a student
    pre-trained on the labeled rows, and ``P_noisy(. | x)`` follows from it
    through the teacher's noise model fitted on the validation set: under
    Definition 3.2, ``P_noisy(. | x) = mix(P_clean(. | x); alpha(x), k(x))``.
    The weights multiply each class of the teacher's label (a soft label is
    an expectation over hard ones), are clipped at ``max_weight`` and, with
    ``rescale``, are then scaled so that the teacher rows keep their total
    label mass (the estimator computes that factor over all teacher rows).
    NumPy arrays or torch tensors.

    Returns
    -------
    array of shape (n, L): ``beta`` for every row and class.
    """
    if isinstance(student_proba, torch.Tensor):
        noisy = mix(student_proba, alpha, mask.to(student_proba.dtype), k, normalize=normalize)
        beta = (student_proba / noisy.clamp_min(1e-12)).clamp_max(max_weight)
    else:
        noisy = mix(student_proba, alpha, mask.astype(student_proba.dtype), k, normalize=normalize)
        beta = np.minimum(student_proba / np.clip(noisy, 1e-12, None), max_weight)
    if not rescale:
        return beta
    mass = float((teacher_label * beta).sum())
    return beta * (float(teacher_label.sum()) / mass if mass > 0 else 1.0)


def fidelity_weights(uncertainty: np.ndarray, beta: float, *, normalize: str = "total") -> np.ndarray:
    """Fidelity weights ``exp(-beta * u(x))`` (Dehghani et al. 2017; SLaM paper
    Appendix D.4, Equations 3-4).

    ``uncertainty`` is one value per teacher row, or one per row and class
    (then averaged over classes, as the paper averages the variances of the
    classes). ``normalize="total"`` divides by the total uncertainty over the
    teacher rows, as the paper describes -- with many rows this makes the
    weights close to 1 unless ``beta`` is of the order of the number of rows;
    ``"mean"`` divides by the mean instead, which makes ``beta`` of order 1
    meaningful.
    """
    u = np.asarray(uncertainty, dtype=np.float64)
    if u.ndim == 2:
        u = u.mean(1)
    if u.ndim != 1 or not np.isfinite(u).all() or (u < 0).any():
        raise ValueError("teacher_uncertainty must be finite, non-negative, one value per row (or per row and class)")
    if beta < 0:
        raise ValueError(f"fidelity_beta must be non-negative; got {beta}")
    if normalize not in ("total", "mean"):
        raise ValueError(f"fidelity_normalize must be 'total' or 'mean'; got {normalize!r}")
    scale = u.sum() if normalize == "total" else u.mean()
    return np.exp(-beta * (u / scale if scale > 0 else u))


def ups_selection(proba: np.ndarray, uncertainty: np.ndarray, *, tau_pos: float = 0.7, kappa_pos: float = 0.05,
                  tau_neg: float = 0.05, kappa_neg: float = 0.005) -> tuple[np.ndarray, np.ndarray]:
    """UPS pseudo-label selection (Rizve et al. 2021).

    Class ``c`` of a row becomes a positive label when the teacher is
    confident (``p_c >= tau_pos``) and certain (``u_c <= kappa_pos``), and a
    negative label ("not c") when ``p_c <= tau_neg`` and ``u_c <= kappa_neg``.
    Defaults are the UPS paper's. ``uncertainty`` is per row and class, or
    per row (shared by the classes).

    NumPy arrays or torch tensors.

    Returns
    -------
    positive, negative : bool arrays of shape (n, L)
    """
    u = uncertainty if isinstance(uncertainty, torch.Tensor) else np.asarray(uncertainty, dtype=np.float64)
    if u.ndim == 1:
        u = u[:, None]
    if u.shape[0] != proba.shape[0] or u.shape[1] not in (1, proba.shape[1]) or not bool((u >= 0).all()):
        raise ValueError(f"teacher_uncertainty must be non-negative, of shape (n,) or {tuple(proba.shape)}")
    positive = (proba >= tau_pos) & (u <= kappa_pos)
    negative = (proba <= tau_neg) & (u <= kappa_neg)
    return positive, negative


def ups_loss(f: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """Per-row UPS loss: ``-log f_c`` for positive labels and ``-log(1 - f_c)``
    for negative ones, averaged over the selected labels (rows with none
    selected contribute 0)."""
    pos = -(f.clamp_min(PROB_EPS).log() * positive).sum(1)
    neg = -((1.0 - f).clamp_min(PROB_EPS).log() * negative).sum(1)
    count = (positive.sum(1) + negative.sum(1)).clamp_min(1)
    return (pos + neg) / count


class VIDHead(nn.Module):
    """Variational information distillation head (Ahn et al. 2019).

    Models the teacher's feature ``t`` given the student's embedding ``s`` as
    a Gaussian with a trainable mean regressor ``mu(s)`` (one hidden layer)
    and a trainable per-dimension variance ``softplus(a) + eps``. The VID
    loss is its negative log-likelihood,
    ``sum_d [ log sigma_d + (t_d - mu_d(s))^2 / (2 sigma_d^2) ]`` (up to a
    constant), averaged over dimensions.
    """

    def __init__(self, student_dim: int, teacher_dim: int, hidden: int | None = None, eps: float = 1e-5):
        super().__init__()
        hidden = hidden or max(student_dim, teacher_dim)
        self.mean = nn.Sequential(nn.Linear(student_dim, hidden), nn.ReLU(), nn.Linear(hidden, teacher_dim))
        # softplus(a) = 1 at start: unit variance
        self.log_scale = nn.Parameter(torch.full((teacher_dim,), float(np.log(np.e - 1.0))))
        self.eps = eps

    def forward(self, student_embedding: torch.Tensor, teacher_features: torch.Tensor) -> torch.Tensor:
        var = F.softplus(self.log_scale) + self.eps
        mu = self.mean(student_embedding)
        return (0.5 * var.log() + (teacher_features - mu) ** 2 / (2 * var)).mean(1)
