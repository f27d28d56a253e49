"""Synthetic data with known ground truth and a teacher of known noise.

Everything here is generated from a seed; nothing is downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.utils import check_random_state

__all__ = ["NoisyTeacherData", "make_noisy_teacher"]


@dataclass
class NoisyTeacherData:
    """Output of :func:`make_noisy_teacher`.

    Attributes
    ----------
    X : ndarray of shape (n_samples, n_features)
        Features.
    y : ndarray of shape (n_samples,)
        Ground-truth labels g(x).
    teacher_proba : ndarray of shape (n_samples, n_classes)
        The teacher's soft labels ys(x).
    alpha : ndarray of shape (n_samples,)
        The true probability alpha(x) that the teacher's top-1 is right.
    k : ndarray of shape (n_samples,)
        The true k(x): the truth is always in the teacher's top-k(x).
    """

    X: np.ndarray
    y: np.ndarray
    teacher_proba: np.ndarray
    alpha: np.ndarray
    k: np.ndarray


def make_noisy_teacher(
    n_samples: int = 5000,
    n_features: int = 20,
    n_classes: int = 10,
    *,
    alpha_range: tuple[float, float] = (0.3, 0.95),
    k_range: tuple[int, int] = (2, 4),
    class_sep: float = 1.0,
    confusions: str = "nearest",
    overconfidence: float = 6.0,
    random_state=None,
) -> NoisyTeacherData:
    """Labeled data and a teacher that follows the noise model of Definition 3.2.

    The ground truth is linear: ``g(x) = argmax(W x)`` for a random ``W``, with
    Gaussian features, so linear and MLP students can represent it.

    For every example the teacher has an accuracy ``alpha(x)`` that varies
    smoothly over the feature space (there are regions where the teacher is
    weak) and a ``k(x)`` drawn from ``k_range``. The teacher's top-k(x) set
    holds the truth and, by default, the classes most easily confused with
    it (``confusions="nearest"``: the runners-up of the ground truth's
    scores), so its mistakes are systematic, as a real teacher's are. Its
    top-1 class is the truth with probability alpha(x) and otherwise a
    uniformly random other class of that set -- exactly Definition 3.2. Its soft label ranks the
    top-1 first, the rest of the top-k set next and everything else last, and
    its confidence (top-1 margin) increases with alpha(x), so alpha and k can
    be estimated from the soft labels as the SLaM paper does.

    Parameters
    ----------
    n_samples, n_features, n_classes : int
        Sizes (``n_classes >= 2``).
    alpha_range : (float, float)
        alpha(x) spans this range, from the hardest to the easiest examples.
    k_range : (int, int)
        Inclusive range of k(x), within ``[2, n_classes]``.
    class_sep : float
        Scale of the ground-truth weights (larger = more separable classes).
    confusions : {"nearest", "random"}, default="nearest"
        Whether the other members of the top-k set are the classes closest
        to the truth or random classes.
    overconfidence : float, default=6.0
        The teacher's top-1 logit where it is least accurate (the other top-k
        members sit near 1.5, the rest below 1); it rises by 4 towards the
        most accurate examples. Lower values give humbler soft labels.
    random_state : int, RandomState or None

    Returns
    -------
    NoisyTeacherData
    """
    if n_classes < 2:
        raise ValueError(f"n_classes must be at least 2; got {n_classes}")
    lo_k, hi_k = k_range
    if not 2 <= lo_k <= hi_k <= n_classes:
        raise ValueError(f"k_range must satisfy 2 <= low <= high <= n_classes ({n_classes}); got {k_range}")
    a_lo, a_hi = alpha_range
    if not 0.0 <= a_lo <= a_hi <= 1.0:
        raise ValueError(f"alpha_range must satisfy 0 <= low <= high <= 1; got {alpha_range}")
    rng = check_random_state(random_state)
    n, L = int(n_samples), int(n_classes)

    X = rng.normal(size=(n, n_features))
    W = rng.normal(size=(n_features, L)) * class_sep
    scores = X @ W
    y = scores.argmax(1)
    # alpha(x) varies smoothly along a random direction: there are whole
    # regions where the teacher is weak, as for a real teacher. It is
    # uniform over alpha_range across the sample.
    v = rng.normal(size=n_features)
    proj = X @ v
    alpha = a_lo + (a_hi - a_lo) * np.argsort(np.argsort(proj)) / max(n - 1, 1)

    k = rng.randint(lo_k, hi_k + 1, size=n)
    # The top-k set is the truth plus its k-1 most confusable classes (the
    # runners-up of the ground-truth scores), or k-1 classes at random.
    if confusions == "nearest":
        order = np.argsort(-scores, axis=1)  # order[:, 0] is the truth
    elif confusions == "random":
        order = np.argsort(rng.random((n, L)) - 2.0 * (np.arange(L)[None, :] == y[:, None]), axis=1)
    else:
        raise ValueError(f"confusions must be 'nearest' or 'random'; got {confusions!r}")
    others = order[:, 1:]  # candidates for the teacher's mistakes, best first
    right = rng.random(n) < alpha
    # When wrong, the top-1 is uniform over the other k-1 members.
    wrong_pick = others[np.arange(n), (rng.random(n) * (k - 1)).astype(int)]
    top1 = np.where(right, y, wrong_pick)

    # Teacher logits by rank: top-1, then the rest of the top-k set, then the others.
    logits = np.empty((n, L))
    in_set = np.zeros((n, L), dtype=bool)
    in_set[np.arange(n)[:, None], order] = np.arange(L)[None, :] < k[:, None]
    logits[:] = -1.0 + 0.3 * rng.normal(size=(n, L))
    set_logit = 1.5 + 0.3 * rng.random((n, L))
    logits = np.where(in_set, set_logit, np.minimum(logits, 0.9))
    # Over-confident, like trained networks: the top-1 takes most of the
    # mass even where the teacher is usually wrong, and more where it is right.
    confidence = overconfidence + 4.0 * (alpha - a_lo) / max(a_hi - a_lo, 1e-12) + 0.5 * rng.normal(size=n)
    logits[np.arange(n), top1] = np.maximum(confidence, 1.9)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    return NoisyTeacherData(X=X, y=y, teacher_proba=p, alpha=alpha, k=k)


# -- gamma-margin halfspaces with a noisy binary teacher (Section 5, Appendix E) --------------

# Imported here rather than at the top so that this section stays self-contained.
import numbers  # noqa: E402
from collections.abc import Iterator  # noqa: E402

from scipy import stats  # noqa: E402

HALFSPACE_DISTRIBUTIONS = ("ball", "margin")


@dataclass
class HalfspaceData:
    """Output of :func:`make_margin_halfspace` and :func:`margin_halfspace_stream`.

    Attributes
    ----------
    X : ndarray of shape (n_samples, n_features)
        Points in the closed unit ball with ``|coef @ x| >= gamma``.
    y : ndarray of shape (n_samples,)
        Ground-truth labels ``g(x) = 1{coef @ x > 0}`` (0 or 1).
    y_noisy : ndarray of shape (n_samples,)
        The teacher's labels: ``y`` with probability ``alpha``, ``1 - y`` otherwise.
    alpha : ndarray of shape (n_samples,)
        The teacher's accuracy alpha(x) = P(y_noisy = y | x) (Definition 3.2, k = 2).
    coef : ndarray of shape (n_features,)
        The ground-truth normal vector ``w*``, of unit length.
    gamma : float
        The margin.
    """

    X: np.ndarray
    y: np.ndarray
    y_noisy: np.ndarray
    alpha: np.ndarray
    coef: np.ndarray
    gamma: float


def _check_halfspace_args(n_features, gamma, distribution, coef, chunk_size):
    if isinstance(n_features, bool) or not isinstance(n_features, numbers.Integral) or n_features < 1:
        raise ValueError(f"n_features must be a positive integer; got {n_features!r}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, numbers.Integral) or chunk_size < 1:
        raise ValueError(f"n_samples must be a positive integer; got {chunk_size!r}")
    if isinstance(gamma, bool) or not isinstance(gamma, numbers.Real) or not 0.0 < float(gamma) <= 1.0:
        raise ValueError(f"gamma must be a number in (0, 1]; got {gamma!r}")
    if distribution not in HALFSPACE_DISTRIBUTIONS:
        raise ValueError(f"distribution must be one of {HALFSPACE_DISTRIBUTIONS}; got {distribution!r}")
    if coef is not None:
        coef = np.asarray(coef, dtype=np.float64)
        if coef.shape != (n_features,):
            raise ValueError(f"coef must have shape ({n_features},) (n_features,); got {coef.shape}")
        norm = float(np.linalg.norm(coef))
        if not np.isfinite(norm) or norm == 0.0:
            raise ValueError("coef must be a finite, non-zero vector")
        coef = coef / norm
    return coef


def _check_flip_rates(eta, *, name: str) -> None:
    if not np.all((eta >= 0.0) & (eta < 0.5)):
        bad = eta[~((eta >= 0.0) & (eta < 0.5))]
        raise ValueError(
            f"{name} must give flip probabilities in [0, 1/2) so that |1/2 - alpha(x)| is bounded away "
            f"from 0 (Theorem 5.1); got {bad[:3]}"
        )


def _flip_rate_function(noise, coef: np.ndarray, rng):
    """Turn the ``noise`` argument into a function ``X -> eta(x) = 1 - alpha(x)``."""
    if callable(noise):
        return noise
    if isinstance(noise, numbers.Real) and not isinstance(noise, bool):
        _check_flip_rates(np.array([float(noise)]), name="noise")
        rate = float(noise)
        return lambda X: np.full(X.shape[0], rate)
    try:
        lo, hi = (float(v) for v in noise)
    except (TypeError, ValueError):
        raise ValueError(
            f"noise must be a flip rate in [0, 1/2), a pair (low, high) or a callable; got {noise!r}"
        ) from None
    if not 0.0 <= lo <= hi < 0.5:
        raise ValueError(f"noise as a pair (low, high) needs 0 <= low <= high < 1/2; got {noise!r}")
    # A fixed direction orthogonal to w*: the flip rate varies across points
    # of the same class, so the noise is not symmetric about w* and plain
    # training on the noisy labels is pulled off w*.
    u = rng.normal(size=coef.shape[0])
    u -= (u @ coef) * coef
    norm = np.linalg.norm(u)
    u = u / norm if norm > 1e-12 else np.zeros_like(u)
    # |u @ x| <= ||x|| <= 1, so eta(x) stays in [low, high].
    return lambda X: lo + (hi - lo) * 0.5 * (1.0 + np.clip(X @ u, -1.0, 1.0))


def _sample_margin_points(n: int, d: int, gamma: float, distribution: str, coef: np.ndarray, rng) -> np.ndarray:
    """Points with ``|coef @ x| >= gamma`` in the unit ball, built with ``coef = e_1`` and then
    reflected onto ``coef``."""
    if distribution == "margin":
        t = np.full(n, gamma)
    else:
        # Uniform in the d-ball: the squared first coordinate is Beta(1/2, (d+1)/2).
        # Sampling it by inverse survival function on [gamma^2, 1] conditions on
        # the margin exactly, with no rejection (which fails for large d).
        marginal = stats.beta(0.5, 0.5 * (d + 1))
        tail = marginal.sf(gamma**2)
        t = np.sqrt(marginal.isf(rng.uniform(size=n) * tail))
        t = np.clip(t, gamma, 1.0)
    t = t * np.where(rng.uniform(size=n) < 0.5, -1.0, 1.0)
    Xc = np.empty((n, d))
    Xc[:, 0] = t
    if d > 1:
        rest = rng.normal(size=(n, d - 1))
        rest /= np.maximum(np.linalg.norm(rest, axis=1, keepdims=True), 1e-300)
        radius = np.sqrt(np.maximum(1.0 - t**2, 0.0))
        if distribution == "ball":
            # Given the first coordinate, the rest is uniform in a (d-1)-ball.
            radius = radius * rng.uniform(size=n) ** (1.0 / (d - 1))
        Xc[:, 1:] = rest * radius[:, None]
    # Householder reflection that maps e_1 to coef (an isometry, so norms and
    # the margin are kept).
    v = -coef.copy()
    v[0] += 1.0
    vv = v @ v
    if vv > 1e-24:
        Xc -= np.outer(Xc @ v, v * (2.0 / vv))
    return Xc


def margin_halfspace_stream(
    n_features: int = 10,
    *,
    gamma: float = 0.1,
    noise=0.0,
    distribution: str = "ball",
    chunk_size: int = 1000,
    coef=None,
    random_state=None,
) -> Iterator[HalfspaceData]:
    """An endless stream of gamma-margin halfspace data with a noisy teacher.

    Every chunk comes from the same ground truth ``w*`` and noise model, so a
    stream gives as many fresh samples as an online learner asks for, and the
    first chunk equals ``make_margin_halfspace(chunk_size, ...)`` with the same
    arguments. Parameters are those of :func:`make_margin_halfspace`
    (``chunk_size`` is the number of samples per chunk).

    Yields
    ------
    HalfspaceData
    """
    coef = _check_halfspace_args(n_features, gamma, distribution, coef, chunk_size)
    rng = check_random_state(random_state)
    d = int(n_features)
    if coef is None:
        coef = rng.normal(size=d)
        coef /= np.linalg.norm(coef)
    flip_rate = _flip_rate_function(noise, coef, rng)
    gamma = float(gamma)

    def chunks() -> Iterator[HalfspaceData]:
        while True:
            X = _sample_margin_points(int(chunk_size), d, gamma, distribution, coef, rng)
            y = (X @ coef > 0).astype(np.int64)
            eta = np.asarray(flip_rate(X), dtype=np.float64).reshape(-1)
            if eta.shape != (X.shape[0],):
                raise ValueError(f"noise(X) must return one flip rate per row of X; got shape {eta.shape}")
            _check_flip_rates(eta, name="noise")
            flip = rng.uniform(size=X.shape[0]) < eta
            yield HalfspaceData(
                X=X, y=y, y_noisy=np.where(flip, 1 - y, y), alpha=1.0 - eta, coef=coef.copy(), gamma=gamma
            )

    return chunks()


def make_margin_halfspace(
    n_samples: int = 1000,
    n_features: int = 10,
    *,
    gamma: float = 0.1,
    noise=0.0,
    distribution: str = "ball",
    coef=None,
    random_state=None,
) -> HalfspaceData:
    """Data separated by a halfspace with margin gamma, labeled by a noisy teacher.

    The setting of Section 5 and Appendix E of the SLaM paper: a unit normal
    vector ``w*``, points ``x`` with ``||x|| <= 1`` and ``|w* . x| >= gamma``,
    ground truth ``g(x) = 1{w* . x > 0}``, and a teacher label that is right
    with probability alpha(x) and flipped otherwise (Definition 3.2 with
    k = 2). With a constant alpha this is random classification noise (RCN).

    Parameters
    ----------
    n_samples : int, default=1000
    n_features : int, default=10
    gamma : float in (0, 1], default=0.1
        The margin.
    noise : float, (float, float) or callable, default=0.0
        The teacher's flip probability ``eta(x) = 1 - alpha(x)``, always in
        ``[0, 1/2)`` so that ``|1/2 - alpha(x)| >= 1/2 - max eta > 0`` as
        Theorem 5.1 needs:

        * a float: the same rate for every point (RCN);
        * a pair ``(low, high)``: instance-dependent,
          ``eta(x) = low + (high - low) (1 + u . x) / 2`` for a random unit
          vector ``u`` orthogonal to ``w*`` (fixed per stream), so points of
          one class get different flip rates;
        * a callable ``noise(X) -> eta`` of shape (n_samples,).
    distribution : {"ball", "margin"}, default="ball"
        ``"ball"``: uniform on the unit ball conditioned on ``|w* . x| >=
        gamma``. ``"margin"``: every point on the unit sphere with
        ``|w* . x| = gamma`` exactly and the rest of ``x`` uniform on the
        sphere orthogonal to ``w*`` -- the hardest points a gamma-margin
        learner can get, so sample complexities depend on gamma most clearly.
        Both give each class probability 1/2.
    coef : array-like of shape (n_features,), optional
        The ground truth ``w*`` (normalised to unit length); random if None.
    random_state : int, RandomState instance or None, default=None
        Makes the output deterministic.

    Returns
    -------
    HalfspaceData

    Examples
    --------
    >>> from slamlearn.datasets import make_margin_halfspace
    >>> data = make_margin_halfspace(500, 5, gamma=0.2, noise=0.1, random_state=0)
    >>> bool((abs(data.X @ data.coef) >= 0.2 - 1e-12).all())
    True
    """
    stream = margin_halfspace_stream(
        n_features,
        gamma=gamma,
        noise=noise,
        distribution=distribution,
        chunk_size=n_samples,
        coef=coef,
        random_state=random_state,
    )
    return next(stream)


__all__ += ["HalfspaceData", "make_margin_halfspace", "margin_halfspace_stream"]
