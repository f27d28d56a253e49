"""Algorithm 3 of the SLaM paper: linear students and noisy halfspaces.

Section 5 and Appendix E of the SLaM paper study a linear student
``f(x; w) = (sigma(w . x), sigma(-w . x))`` trained online, one teacher-labeled
example per step, on the SLaM objective ``ce(y, mix(f(x; w); alpha(x)))``,
where the teacher's label is right with probability ``alpha(x)`` (Definition
3.2 with k = 2). Algorithm 3 starts at ``w = 0`` and takes the step
``w <- w - lambda g`` with ``g`` the exact gradient and the adaptive step size
``lambda = 1 / r`` of Lemma E.3. Theorem 5.1: on gamma-margin data in the unit
ball with ``|1/2 - alpha(x)| >= beta``, some iterate ``t <= T = O(1 / (beta^2
gamma^2 eps^2))`` has error at most eps (with probability 99%).

Notation used below, with ``s = w . x`` and ``y0`` the indicator that the
teacher's label is the positive class (``classes_[1]``; the paper's first
coordinate):

* ``f0 = sigma(s)``, ``f1 = sigma(-s) = 1 - f0``;
* ``m0 = mix(f; alpha)_0 = alpha f0 + (1 - alpha) f1``, ``m1 = 1 - m0``
  (computed by :func:`slamlearn.mixing.mix_coefficients`, the single home of
  the formula);
* the SLaM loss ``-y0 log m0 - (1 - y0) log m1``.

Lemma E.3 (the chain rule through ``m0`` and the sigmoid)::

    grad = r * sgn(2 alpha - 1) * (m0 - y0) * x,
    r    = f0 f1 |2 alpha - 1| / (m0 m1).                         (Lemma E.3)

So with ``lambda = 1 / r`` the update is ``w <- w - sgn(2 alpha - 1) (m0 - y0)
x``, whose length is at most ``||x||``: the factor ``f0 f1`` that makes the
plain gradient vanish where the student is confident (right or wrong) is
divided out.

Two baselines share the same online loop, schedules and input checks:

* ``method="backward"``: backward loss adjustment for known noise (the
  unbiased loss of Natarajan et al., 2013). For a base loss ``l(s, y)``::

      l~(s, y) = (alpha l(s, y) - (1 - alpha) l(s, 1 - y)) / (2 alpha - 1),

  whose expectation over the teacher's noise is the clean loss. With the
  perceptron loss ``l(s, y) = max(0, -(2y - 1) s)`` it is the convex
  leaky-ReLU loss of Bylander-style RCN learners -- the kind of convex
  backward-adjusted objective for which Remark 5.2 quotes the
  ``O~(1 / (gamma^4 eps^2))`` bound. Its update is ``w += (2y - 1) x`` times
  ``alpha / (2 alpha - 1)`` on a mistake w.r.t. the noisy label and
  ``(1 - alpha) / (2 alpha - 1)`` otherwise. With the logistic loss,
  ``dl~/ds = (m0 - y0) / (2 alpha - 1)``: the same direction as SLaM's
  adaptive step, only scaled by ``1 / |2 alpha - 1|``.
* ``method="sgd"``: SGD on the teacher's labels as if they were right.

Numerical safeguards (documented in :class:`SLaMHalfspaceClassifier`):
``f0`` and ``f1`` are both computed as sigmoids (never ``1 - f0``) and the
mixing coefficients are taken at ``max(alpha, 1 - alpha)`` with the student's
classes swapped when ``alpha < 1/2`` (an identity of the mixing operation), so
``m0``, ``m1`` and ``r`` carry no cancellation error; where ``r`` is below
:data:`R_MIN` (``|w . x| > ~690``), ``lambda g`` is replaced by its exact
value ``sgn(2 alpha - 1) (m0 - y0) x`` instead of dividing two underflowed
numbers; and the adaptive step's length is capped at ``eta0 ||x||``, the bound
Lemma E.3 gives in exact arithmetic.
"""

from __future__ import annotations

import numbers
from typing import Callable

import numpy as np
from scipy.special import expit
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import check_is_fitted, validate_data

from .mixing import mix_coefficients

__all__ = [
    "LEARNING_RATES",
    "LOSSES",
    "METHODS",
    "R_MIN",
    "SLaMHalfspaceClassifier",
    "slam_gradient",
    "slam_step_scale",
]

METHODS = ("slam", "backward", "sgd")
LOSSES = ("log_loss", "perceptron")
LEARNING_RATES = ("adaptive", "constant", "invscaling")

#: Below this value of Lemma E.3's ``r`` the adaptive step is taken as its
#: exact value rather than ``(1 / r) * g``. Above it ``1 / r`` is finite and
#: ``g = r sgn(2 alpha - 1)(m0 - y0)`` is a normal float (full relative
#: precision), because ``|m0 - y0| >= 1 - max(alpha, 1 - alpha) >= 1.1e-16``
#: for any float64 alpha other than 0 and 1 (where ``r = 1``).
R_MIN = 1e-290

_HALF_MESSAGE = (
    "{name} must not be exactly 1/2 with method={method!r}: a teacher right half of the time carries no "
    "information, and both SLaM's step (r = 0) and the backward loss (division by 2 alpha - 1) are undefined"
)


# -- formulas -----------------------------------------------------------------------


def _binary_mix_terms(alpha: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``sgn(2 alpha - 1)`` and the mixing coefficients ``(c, d)`` at
    ``alpha_hat = max(alpha, 1 - alpha)``, so that ``mix = c f + d`` with
    ``c = |2 alpha - 1| >= 0`` and ``d >= 0``.

    For ``alpha < 1/2``, ``mix(f; alpha) = mix(f_swapped; 1 - alpha)``, with
    the student's two probabilities swapped (``s -> -s``); non-negative
    coefficients keep ``c f + d`` free of cancellation for confident students.
    """
    alpha = np.asarray(alpha, dtype=np.float64)
    flat = alpha.reshape(-1)
    alpha_hat = np.maximum(flat, 1.0 - flat)
    # k = 2 and both classes in the teacher's top-2: the binary mixing.
    c, d = mix_coefficients(alpha_hat, np.ones((flat.shape[0], 2)))
    sign = np.where(flat >= 0.5, 1.0, -1.0)
    return sign.reshape(alpha.shape), c[:, 0].reshape(alpha.shape), d[:, 0].reshape(alpha.shape)


def _slam_terms(s, y0, sign, c, d):
    """Derivative of the SLaM loss in ``s = w . x`` (the gradient is it times
    ``x``), Lemma E.3's ``r``, and ``m0 - y0``. All arguments broadcast."""
    sp = sign * s
    f0 = expit(sp)
    f1 = expit(-sp)
    m0 = c * f0 + d
    m1 = c * f1 + d
    with np.errstate(divide="ignore", invalid="ignore", under="ignore"):
        r = (c * f0 * f1) / (m0 * m1)
    # alpha in {0, 1}: mix is the identity (up to the swap) and r = 1 exactly,
    # also where f0 f1 underflows and the ratio above is 0 / 0.
    r = np.where(d == 0.0, 1.0, r)
    resid = m0 - y0
    return sign * r * resid, r, sign * resid


def _base_dloss(loss: str, s, y0):
    """Derivative in ``s`` of the base loss at label ``y0`` (1 = positive)."""
    if loss == "log_loss":
        return expit(s) - y0
    pm = 2.0 * y0 - 1.0
    # Perceptron loss max(0, -pm s); a tie (s = 0, e.g. at w = 0) counts as a mistake.
    return -pm * (pm * s <= 0.0)


def _backward_terms(loss: str, s, y0, alpha):
    """Derivative in ``s`` of the backward-adjusted loss and its normaliser
    ``r = 1 / |2 alpha - 1|`` (the step ``1 / r`` bounds the update by ``||x||``)."""
    b = 2.0 * alpha - 1.0
    k = (alpha * _base_dloss(loss, s, y0) - (1.0 - alpha) * _base_dloss(loss, s, 1.0 - y0)) / b
    return k, 1.0 / np.abs(b)


def _as_2d_float(a, name: str) -> np.ndarray:
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 1-D or 2-D array; got shape {arr.shape}")
    return arr


def _broadcast_rows(a, n: int, name: str) -> np.ndarray:
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim == 0:
        arr = np.full(n, float(arr))
    if arr.shape != (n,):
        raise ValueError(f"{name} must be a scalar or have shape ({n},); got shape {arr.shape}")
    return arr


def slam_gradient(w, X, y, alpha) -> np.ndarray:
    """Gradient in ``w`` of the binary SLaM loss, one row per example (Lemma E.3).

    ``grad = r sgn(2 alpha - 1) (mix(f0; alpha) - y0) x`` with ``f0 = sigma(w . x)``
    and ``r`` from :func:`slam_step_scale`: the exact gradient of
    ``-y0 log m0 - (1 - y0) log(1 - m0)``, ``m0 = alpha f0 + (1 - alpha)(1 - f0)``.

    Parameters
    ----------
    w : array-like of shape (n_features,)
    X : array-like of shape (n_samples, n_features) or (n_features,)
    y : array-like of shape (n_samples,) or scalar
        1 where the teacher's label is the positive class (the class of
        ``w . x > 0``), 0 otherwise.
    alpha : array-like of shape (n_samples,) or scalar
        Probability that the teacher's label is right.

    Returns
    -------
    ndarray of shape (n_samples, n_features)
    """
    X = _as_2d_float(X, "X")
    w = np.asarray(w, dtype=np.float64)
    if w.shape != (X.shape[1],):
        raise ValueError(f"w must have shape ({X.shape[1]},) to match X; got {w.shape}")
    y0 = _broadcast_rows(y, X.shape[0], "y")
    sign, c, d = _binary_mix_terms(_broadcast_rows(alpha, X.shape[0], "alpha"))
    k, _, _ = _slam_terms(X @ w, y0, sign, c, d)
    return k[:, None] * X


def slam_step_scale(w, X, alpha) -> np.ndarray:
    """Lemma E.3's ``r = f0 f1 |2 alpha - 1| / (m0 m1)``, one value per example.

    Algorithm 3's step size is ``1 / r``. Here ``f0 = sigma(w . x)``,
    ``f1 = 1 - f0``, ``m0 = mix(f0; alpha)`` and ``m1 = 1 - m0``.

    Parameters
    ----------
    w : array-like of shape (n_features,)
    X : array-like of shape (n_samples, n_features) or (n_features,)
    alpha : array-like of shape (n_samples,) or scalar

    Returns
    -------
    ndarray of shape (n_samples,)
    """
    X = _as_2d_float(X, "X")
    w = np.asarray(w, dtype=np.float64)
    if w.shape != (X.shape[1],):
        raise ValueError(f"w must have shape ({X.shape[1]},) to match X; got {w.shape}")
    sign, c, d = _binary_mix_terms(_broadcast_rows(alpha, X.shape[0], "alpha"))
    _, r, _ = _slam_terms(X @ w, 0.0, sign, c, d)
    return r


# -- the online loop, vectorised over independent problems ----------------------------------


def _online_updates(
    W: np.ndarray,
    X: np.ndarray,
    Y0: np.ndarray,
    alpha: np.ndarray,
    *,
    method: str = "slam",
    loss: str = "log_loss",
    learning_rate: str = "adaptive",
    eta0: float = 1.0,
    power_t: float = 0.5,
    max_step: float | None = None,
    t0: int = 0,
) -> None:
    """Run one online step per row of ``X`` on ``P`` independent problems.

    The estimator runs it with ``P = 1``; the benchmark runs many seeds at
    once, since a Python loop costs about the same per step for one problem
    as for many.

    Parameters
    ----------
    W : ndarray of shape (P, n_features)
        Weights, updated in place.
    X : ndarray of shape (n_steps, P, n_features)
    Y0 : ndarray of shape (n_steps, P)
        1.0 where the teacher's label is the positive class.
    alpha : ndarray of shape (n_steps, P)
        The teacher's accuracy per example (validated by the caller).
    method, loss, learning_rate, eta0, power_t, max_step
        As in :class:`SLaMHalfspaceClassifier`.
    t0 : int
        Steps already taken (the invscaling schedule continues from it).
    """
    n_steps = X.shape[0]
    terms: Callable[[int, np.ndarray], tuple]
    if method == "slam":
        sign, c, d = _binary_mix_terms(alpha)

        def terms(i, s):
            return _slam_terms(s, Y0[i], sign[i], c[i], d[i])

    elif method == "backward":

        def terms(i, s):
            return _backward_terms(loss, s, Y0[i], alpha[i]) + (None,)

    else:
        ones = np.ones(W.shape[0])

        def terms(i, s):
            return _base_dloss(loss, s, Y0[i]), ones, None

    x_norm = np.linalg.norm(X, axis=2) if max_step is not None else None
    adaptive_slam = method == "slam" and learning_rate == "adaptive"
    for i in range(n_steps):
        x = X[i]
        s = np.einsum("pj,pj->p", W, x)
        k, r, limit = terms(i, s)
        if learning_rate == "adaptive":
            with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
                step = (eta0 / r) * k
            if adaptive_slam:
                # Lemma E.3: (1 / r) g = sgn(2 alpha - 1)(m0 - y0) x exactly; use that
                # where r is too small for the division, and cap the length at
                # eta0 ||x||, which rounding alone could exceed.
                tiny = ~(r >= R_MIN)
                if tiny.any():
                    step = np.where(tiny, eta0 * limit, step)
                step = np.clip(step, -eta0, eta0)
        elif learning_rate == "constant":
            step = eta0 * k
        else:
            step = (eta0 / float(t0 + i + 1) ** power_t) * k
        if max_step is not None:
            length = np.abs(step) * x_norm[i]
            with np.errstate(divide="ignore"):
                step = step * np.minimum(1.0, max_step / length)
        W -= step[:, None] * x


# -- the estimator ---------------------------------------------------------------------------


class SLaMHalfspaceClassifier(ClassifierMixin, BaseEstimator):
    """Online linear student trained on noisy teacher labels (Algorithm 3).

    Binary classification with a linear student ``f(x; w) = sigma(w . x)``,
    ``w`` starting at 0 and updated once per example. With the defaults it is
    Algorithm 3 of the SLaM paper: the exact SLaM gradient and the adaptive
    step size ``1 / r`` of Lemma E.3, with
    ``r = f0 f1 |2 alpha - 1| / (m0 m1)`` (see :mod:`slamlearn.halfspace`).

    Parameters
    ----------
    method : {"slam", "backward", "sgd"}, default="slam"
        ``"slam"``: SGD on the SLaM loss ``ce(y, mix(f; alpha))`` (Algorithm 3).
        ``"backward"``: SGD on the backward-adjusted unbiased loss
        ``(alpha l(s, y) - (1 - alpha) l(s, 1 - y)) / (2 alpha - 1)``
        (Natarajan et al., 2013; with ``loss="perceptron"`` the update of
        Bylander, 1994). ``"sgd"``: SGD on the base loss with the teacher's
        labels taken as right.
    loss : {"log_loss", "perceptron"}, default="log_loss"
        Base loss of ``"backward"`` and ``"sgd"``. SLaM needs a probabilistic
        student, so ``method="slam"`` takes only ``"log_loss"`` (cross entropy).
    noise_rate : float in [0, 1] or None, default=None
        A constant teacher error rate ``1 - alpha`` (random classification
        noise). None: pass a per-example ``alpha`` to :meth:`fit`, or the
        teacher is taken as always right (``alpha = 1``). Must not be 1/2 for
        ``"slam"`` and ``"backward"``.
    learning_rate : {"adaptive", "constant", "invscaling"}, default="adaptive"
        Step size ``lambda_t``. ``"adaptive"``: ``eta0 / r_t``, with ``r`` of
        Lemma E.3 for ``"slam"`` (Algorithm 3), ``r = 1 / |2 alpha - 1|`` for
        ``"backward"`` (so updates are at most ``eta0 ||x||`` long, like
        SLaM's; with the log loss it then coincides with SLaM) and ``r = 1``
        for ``"sgd"`` (Lemma E.3's ``r`` at ``alpha = 1``). ``"constant"``:
        ``eta0``. ``"invscaling"``: ``eta0 / t ** power_t`` at step ``t >= 1``.
    eta0 : float > 0, default=1.0
        Scale of the step size (1 in Algorithm 3).
    power_t : float >= 0, default=0.5
        Exponent of ``"invscaling"``.
    max_step : float > 0 or None, default=None
        If set, an update longer than this (Euclidean norm of
        ``w_t - w_{t-1}``) is shortened to it. Independently, SLaM's adaptive
        steps are always capped at ``eta0 ||x||`` (see Notes).
    fit_intercept : bool, default=False
        Learn a bias by appending a constant feature 1 to every ``x``. The
        paper's halfspaces pass through the origin, so the default is the
        homogeneous Algorithm 3.
    max_iter : int >= 1, default=1
        Passes over the data in :meth:`fit`. One pass (each example used
        once, as a fresh sample) is the setting of Theorem 5.1.
    shuffle : bool, default=True
        Visit the examples of each pass of :meth:`fit` in a random order.
        :meth:`partial_fit` always keeps the given order (a stream).
    random_state : int, RandomState instance or None, default=None
        Seeds the order of the examples.

    Attributes
    ----------
    coef_ : ndarray of shape (1, n_features)
        The student's weights ``w`` (the positive class is ``classes_[1]``).
    intercept_ : ndarray of shape (1,)
        The bias (0 unless ``fit_intercept``).
    classes_ : ndarray of shape (2,)
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Defined only when ``X`` has string column names.
    t_ : int
        Online steps taken (examples seen, counting repeats).
    n_iter_ : int
        Passes over the data done by the last :meth:`fit` (1 per
        :meth:`partial_fit` call after it).

    Notes
    -----
    Safeguards of the adaptive SLaM step. In exact arithmetic Lemma E.3 gives
    ``lambda g = sgn(2 alpha - 1) (m0 - y0) x``, of length below ``||x||``,
    but ``r`` becomes tiny where the student is confident (``f0 f1`` is about
    ``exp(-|w . x|)``) -- exactly where the plain gradient vanishes and the
    adaptive step matters. So:

    * ``f0`` and ``f1`` are separate sigmoids and the mixing is done with
      non-negative coefficients (``alpha < 1/2`` by swapping the classes), so
      ``r`` keeps full relative precision until ``f0 f1`` leaves the normal
      floats;
    * where ``r < R_MIN`` (1e-290; ``|w . x|`` above about 690) or ``r`` is not
      a finite number, ``lambda g`` is set to its exact value above instead of
      ``(1 / r) * g`` -- never a cap on ``lambda``, which would bring back the
      vanishing steps the adaptive rule is there to avoid;
    * the step length is capped at ``eta0 ||x||``, which removes rounding
      overshoot and otherwise never binds.

    Theorem 5.1 bounds the error of *some* iterate ``t <= T``; the estimator
    keeps the last one.

    Examples
    --------
    >>> from slamlearn.datasets import make_margin_halfspace
    >>> from slamlearn.halfspace import SLaMHalfspaceClassifier
    >>> train = make_margin_halfspace(4000, 5, gamma=0.2, noise=0.2, random_state=0)
    >>> clf = SLaMHalfspaceClassifier(noise_rate=0.2, random_state=0)
    >>> clf = clf.fit(train.X, train.y_noisy)
    >>> bool(clf.score(train.X, train.y) > 0.95)
    True
    """

    def __init__(
        self,
        method: str = "slam",
        *,
        loss: str = "log_loss",
        noise_rate: float | None = None,
        learning_rate: str = "adaptive",
        eta0: float = 1.0,
        power_t: float = 0.5,
        max_step: float | None = None,
        fit_intercept: bool = False,
        max_iter: int = 1,
        shuffle: bool = True,
        random_state=None,
    ):
        self.method = method
        self.loss = loss
        self.noise_rate = noise_rate
        self.learning_rate = learning_rate
        self.eta0 = eta0
        self.power_t = power_t
        self.max_step = max_step
        self.fit_intercept = fit_intercept
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = False
        return tags

    # -- checks ------------------------------------------------------------------------------
    def _check_params(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}; got {self.method!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}; got {self.loss!r}")
        if self.method == "slam" and self.loss != "log_loss":
            raise ValueError(
                f"loss={self.loss!r} is not available with method='slam': mixing needs the student's "
                "probabilities, so SLaM uses the cross entropy (loss='log_loss')"
            )
        if self.learning_rate not in LEARNING_RATES:
            raise ValueError(f"learning_rate must be one of {LEARNING_RATES}; got {self.learning_rate!r}")
        if not _is_real(self.eta0) or not 0.0 < self.eta0 < np.inf:
            raise ValueError(f"eta0 must be a positive finite number; got {self.eta0!r}")
        if not _is_real(self.power_t) or not 0.0 <= self.power_t < np.inf:
            raise ValueError(f"power_t must be a non-negative finite number; got {self.power_t!r}")
        if self.max_step is not None and (not _is_real(self.max_step) or not 0.0 < self.max_step < np.inf):
            raise ValueError(f"max_step must be None or a positive finite number; got {self.max_step!r}")
        if not isinstance(self.fit_intercept, (bool, np.bool_)):
            raise ValueError(f"fit_intercept must be True or False; got {self.fit_intercept!r}")
        if not isinstance(self.shuffle, (bool, np.bool_)):
            raise ValueError(f"shuffle must be True or False; got {self.shuffle!r}")
        if (
            isinstance(self.max_iter, (bool, np.bool_))
            or not isinstance(self.max_iter, numbers.Integral)
            or self.max_iter < 1
        ):
            raise ValueError(f"max_iter must be a positive integer; got {self.max_iter!r}")
        if self.noise_rate is not None:
            if not _is_real(self.noise_rate) or not 0.0 <= self.noise_rate <= 1.0:
                raise ValueError(f"noise_rate must be None or a number in [0, 1]; got {self.noise_rate!r}")
            if self.method != "sgd" and self.noise_rate == 0.5:
                raise ValueError(_HALF_MESSAGE.format(name="noise_rate", method=self.method))

    def _check_alpha(self, alpha, n_samples: int) -> np.ndarray:
        """Per-example teacher accuracy, from ``alpha`` or ``noise_rate``."""
        if alpha is None:
            rate = 0.0 if self.noise_rate is None else float(self.noise_rate)
            return np.full(n_samples, 1.0 - rate)
        if self.noise_rate is not None:
            raise ValueError(
                "pass either a per-example alpha to fit/partial_fit or a constant noise_rate, not both "
                f"(noise_rate={self.noise_rate!r})"
            )
        if hasattr(alpha, "detach") and hasattr(alpha, "cpu"):  # a torch tensor
            alpha = alpha.detach().cpu().numpy()
        try:
            arr = np.asarray(alpha, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"alpha must be numeric: {exc}") from exc
        if arr.ndim == 0:
            arr = np.full(n_samples, float(arr))
        if arr.ndim != 1 or arr.shape[0] != n_samples:
            raise ValueError(
                f"alpha must be a scalar or have shape ({n_samples},), one value per row of X; got shape {arr.shape}"
            )
        bad = ~((arr >= 0.0) & (arr <= 1.0))  # also catches NaN
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(f"alpha must hold probabilities in [0, 1]; got {arr[i]!r} at index {i}")
        if self.method != "sgd" and (arr == 0.5).any():
            i = int(np.argmax(arr == 0.5))
            raise ValueError(_HALF_MESSAGE.format(name="alpha", method=self.method) + f" (index {i})")
        return arr

    def _check_y(self, y) -> np.ndarray:
        check_classification_targets(y)
        y_type = type_of_target(y, input_name="y")
        if y_type != "binary":
            raise ValueError(f"Only binary classification is supported. The type of the target is {y_type}.")
        return y

    @staticmethod
    def _two_classes(classes) -> np.ndarray:
        classes = np.unique(np.asarray(classes))
        if classes.shape[0] != 2:
            raise ValueError(
                f"y must hold exactly two classes (binary classification); got {classes.shape[0]} "
                f"class{'es' if classes.shape[0] != 1 else ''}: {classes.tolist()}"
            )
        return classes

    # -- training ----------------------------------------------------------------------------
    def _augment(self, X: np.ndarray) -> np.ndarray:
        if self.fit_intercept:
            return np.hstack([X, np.ones((X.shape[0], 1))])
        return X

    def _run(self, w: np.ndarray, X: np.ndarray, y0: np.ndarray, alpha: np.ndarray, t0: int) -> int:
        """Online steps on ``w`` (in place); returns the new step count."""
        W = w[None, :]
        _online_updates(
            W,
            X[:, None, :],
            y0[:, None],
            alpha[:, None],
            method=self.method,
            loss=self.loss,
            learning_rate=self.learning_rate,
            eta0=float(self.eta0),
            power_t=float(self.power_t),
            max_step=None if self.max_step is None else float(self.max_step),
            t0=t0,
        )
        return t0 + X.shape[0]

    def _store(self, w: np.ndarray, n_features: int, classes: np.ndarray, t: int) -> None:
        # Fitted attributes are set together at the end, so a call that fails
        # validation leaves the estimator as it was.
        self.classes_ = classes
        self.coef_ = w[None, :n_features].copy()
        self.intercept_ = np.array([w[n_features] if self.fit_intercept else 0.0])
        self.t_ = int(t)

    def fit(self, X, y, alpha=None):
        """Train from ``w = 0``, one online step per example and pass.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
            The teacher's (noisy) labels; exactly two classes.
        alpha : float or array-like of shape (n_samples,), optional
            Probability that each label is right (Definition 3.2); the
            default comes from ``noise_rate``.

        Returns
        -------
        self
        """
        self._check_params()
        _check_same_length(X, y)
        X, y = validate_data(self, X, y, dtype=np.float64)
        classes = self._two_classes(self._check_y(y))
        a = self._check_alpha(alpha, X.shape[0])
        y0 = (y == classes[1]).astype(np.float64)
        Xa = self._augment(X)
        w = np.zeros(Xa.shape[1])
        rng = check_random_state(self.random_state)
        t = 0
        for _ in range(self.max_iter):
            order = rng.permutation(X.shape[0]) if self.shuffle else np.arange(X.shape[0])
            t = self._run(w, Xa[order], y0[order], a[order], t)
        self.n_iter_ = int(self.max_iter)
        self._store(w, X.shape[1], classes, t)
        return self

    def partial_fit(self, X, y, classes=None, alpha=None):
        """One online step per example of ``X``, in the given order.

        The first call starts from ``w = 0`` and needs ``classes``; later
        calls continue from the current weights and step count, so
        ``fit(X1, y1, shuffle=False)`` then ``partial_fit(X2, y2)`` equals one
        unshuffled pass over the concatenated data.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        classes : array-like of shape (2,), optional
            Both class labels; required on the first call.
        alpha : float or array-like of shape (n_samples,), optional
            As in :meth:`fit`.

        Returns
        -------
        self
        """
        self._check_params()
        _check_same_length(X, y)
        first = not hasattr(self, "coef_")
        if first:
            if classes is None:
                raise ValueError("classes must be passed on the first call to partial_fit")
            X, y = validate_data(self, X, y, dtype=np.float64, reset=True)
            classes = self._two_classes(classes)
        else:
            X, y = validate_data(self, X, y, dtype=np.float64, reset=False)
            if classes is not None and not np.array_equal(np.unique(np.asarray(classes)), self.classes_):
                raise ValueError(
                    f"classes {np.unique(np.asarray(classes)).tolist()} differ from the classes of the "
                    f"first call {self.classes_.tolist()}"
                )
            classes = self.classes_
        check_classification_targets(y)
        unknown = ~np.isin(y, classes)
        if unknown.any():
            raise ValueError(
                f"y holds labels that are not in classes {classes.tolist()}: "
                f"{np.unique(np.asarray(y)[unknown]).tolist()}"
            )
        a = self._check_alpha(alpha, X.shape[0])
        y0 = (y == classes[1]).astype(np.float64)
        Xa = self._augment(X)
        if first:
            w, t = np.zeros(Xa.shape[1]), 0
        else:
            w, t = self.coef_.ravel().copy(), self.t_
            if self.fit_intercept:
                w = np.append(w, self.intercept_[0])
            if w.shape[0] != Xa.shape[1]:
                raise ValueError(
                    "fit_intercept was changed since the first call to partial_fit; call fit to start over"
                )
        t = self._run(w, Xa, y0, a, t)
        self.n_iter_ = 1
        self._store(w, X.shape[1], classes, t)
        return self

    # -- prediction --------------------------------------------------------------------------
    def decision_function(self, X) -> np.ndarray:
        """Student score ``w . x + b``; positive means ``classes_[1]``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        return X @ self.coef_[0] + self.intercept_[0]

    def predict(self, X) -> np.ndarray:
        """Predicted class: ``classes_[1]`` where the score is positive.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        scores = self.decision_function(X)
        return self.classes_[(scores > 0).astype(np.intp)]

    def predict_proba(self, X) -> np.ndarray:
        """The student's output ``(sigma(-s), sigma(s))`` for ``(classes_[0], classes_[1])``.

        SLaM fits these to the *clean* labels, but a linear student trained
        online by Algorithm 3 is not calibrated (its norm keeps growing).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, 2)
        """
        s = self.decision_function(X)
        return np.column_stack([expit(-s), expit(s)])

    def score(self, X, y, sample_weight=None) -> float:
        """Accuracy of :meth:`predict` against ``y`` (use clean labels to get
        the error of Theorem 5.1).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        sample_weight : array-like of shape (n_samples,), optional

        Returns
        -------
        float
        """
        return super().score(X, y, sample_weight=sample_weight)



def _n_rows(a) -> int | None:
    shape = getattr(a, "shape", None)
    if shape is not None and len(shape) > 0:
        return int(shape[0])
    try:
        return len(a)
    except TypeError:
        return None


def _check_same_length(X, y) -> None:
    """Name both arguments when their lengths differ (before scikit-learn's generic check)."""
    n_x, n_y = _n_rows(X), _n_rows(y)
    if n_x is not None and n_y is not None and n_x != n_y:
        raise ValueError(f"X and y have inconsistent numbers of samples: X has {n_x} rows but y has {n_y} labels")


def _is_real(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_)) and np.isfinite(float(v))
