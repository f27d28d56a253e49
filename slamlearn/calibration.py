"""Estimating the teacher's accuracy statistics alpha(x) and k(x).

:class:`TeacherCalibrator` implements Appendix B.1 and Algorithm 2 of the SLaM
paper as a scikit-learn estimator. Its input ``X`` is the teacher's output on a
labeled validation set the teacher never trained on, and ``y`` the true labels.
"""

from __future__ import annotations

import numbers

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from . import margins
from ._validation import check_labels, check_proba, check_sample_weight, check_unit_interval
from .isotonic import fit_step_function, fit_step_functions

__all__ = ["TeacherCalibrator"]

#: Smallest k(x) used. The paper's noise model (Definition 3.2) has
#: k(x) in {2, ..., L}: when the teacher's top-1 is wrong the truth is one of
#: at least two classes, so Algorithm 2's r = 1 is raised to 2.
K_MIN = 2


class TeacherCalibrator(TransformerMixin, BaseEstimator):
    """Estimate a noisy teacher's accuracy alpha(x) and top-k width k(x).

    alpha(x), the probability that the teacher's top-1 class is right, is the
    bounded isotonic regression of top-1 correctness on the teacher's top-1
    margin (``lower_bound <= alpha <= 1``), evaluated by the paper's step
    rule. k(x), how many of the teacher's top classes hold the truth, is fixed
    or estimated from the validation set.

    Parameters
    ----------
    lower_bound : float in [0, 1], default=0.5
        Lower bound ``lb`` of the isotonic fits. ``1.0`` pins alpha to 1, which
        turns SLaM into vanilla distillation (a useful control).
    k : int, "global" or "auto", default="auto"
        An int in ``[2, L]`` fixes k for every example. ``"global"`` uses the
        smallest k whose validation top-k accuracy is ``>= threshold``.
        ``"auto"`` is Algorithm 2: one isotonic fit of top-j correctness on the
        top-j margin per ``j = 1 .. L-1`` (``alpha_L = 1``), and k(x) is the
        smallest j whose fitted top-j accuracy at x is ``>= threshold``.
        Either way k(x) is at least 2 (Definition 3.2).
    threshold : float in [0, 1], default=0.9
        Top-k accuracy that ``"global"`` and ``"auto"`` aim for.
    input : {"proba", "logits"}, default="proba"
        Whether ``X`` holds probabilities (rows sum to one) or logits, which
        are turned into probabilities by a softmax.
    n_jobs : int or None, default=None
        Threads for the ``"auto"`` fits. None uses every core for large
        validation sets (at least 2**18 margins) and one thread otherwise;
        -1 always uses every core.

    Attributes
    ----------
    n_features_in_ : int
        Number of columns of ``X`` (the number of classes ``L``).
    n_classes_ : int
        Same as ``n_features_in_``.
    alpha_steps_ : StepFunctions
        The fitted alpha step function (knots are top-1 margins).
    topj_steps_ : StepFunctions or None
        With ``k="auto"``, the ``L-1`` fitted top-j accuracy functions
        (function ``j-1`` for the top-j margin); otherwise None.
    k_ : int or None
        The k used for every example (None with ``k="auto"``).
    topk_accuracy_ : ndarray of shape (L,)
        Validation top-k accuracy of the teacher for ``k = 1 .. L``.
    teacher_accuracy_ : float
        Validation top-1 accuracy of the teacher.

    Notes
    -----
    Degenerate validation sets give documented results rather than errors:
    a teacher right on every validation example gives alpha = 1 everywhere
    (SLaM then equals vanilla distillation); one wrong on every example gives
    alpha = ``lower_bound`` everywhere.

    :meth:`score` is the negative multi-class Brier score of the label
    distribution that alpha and k imply (mass alpha on the teacher's top-1,
    ``(1 - alpha) / (k - 1)`` on each other top-k class), so it judges both
    estimates and model selection over ``lower_bound`` and ``threshold`` with
    :class:`~sklearn.model_selection.GridSearchCV` works as is.

    Examples
    --------
    >>> import numpy as np
    >>> from slamlearn import TeacherCalibrator
    >>> rng = np.random.default_rng(0)
    >>> proba = rng.dirichlet(np.ones(5), size=200)
    >>> y = np.where(rng.random(200) < 0.7, proba.argmax(1), rng.integers(0, 5, 200))
    >>> cal = TeacherCalibrator(lower_bound=0.5, k="global").fit(proba, y)
    >>> alpha = cal.predict(proba)
    >>> bool(((alpha >= 0.5) & (alpha <= 1)).all())
    True
    """

    def __init__(self, lower_bound=0.5, k="auto", threshold=0.9, input="proba", n_jobs=None):
        self.lower_bound = lower_bound
        self.k = k
        self.threshold = threshold
        self.input = input
        self.n_jobs = n_jobs

    # -- validation -----------------------------------------------------------------
    def _proba(self, X, y=None, *, reset: bool):
        """scikit-learn's generic checks (with its standard messages), then the
        probability-specific ones; returns probabilities (and labels)."""
        kwargs = dict(dtype=[np.float64, np.float32], ensure_min_features=2, reset=reset)
        if y is None and not reset:
            X = validate_data(self, X, **kwargs)
        else:
            X, y = validate_data(self, X, y, **kwargs)
        proba = check_proba(X, name="X (teacher probabilities)", input=self.input)
        if y is None:
            return proba
        return proba, check_labels(y, n_classes=proba.shape[1], n_samples=proba.shape[0], name="y")

    def _check_params(self, n_classes: int):
        lb = check_unit_interval(self.lower_bound, name="lower_bound")
        t = check_unit_interval(self.threshold, name="threshold")
        k = self.k
        if isinstance(k, str):
            if k not in ("auto", "global"):
                raise ValueError(f"k must be an int, 'global' or 'auto'; got {k!r}")
        elif isinstance(k, numbers.Integral) and not isinstance(k, bool):
            if not K_MIN <= k <= n_classes:
                raise ValueError(f"k must be between {K_MIN} and the number of classes ({n_classes}); got {k}")
        else:
            raise ValueError(f"k must be an int, 'global' or 'auto'; got {k!r}")
        return lb, t

    # -- fitting --------------------------------------------------------------------
    def fit(self, X, y, sample_weight=None):
        """Fit alpha(x) (and k(x)) on a labeled validation set.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_classes)
            Teacher probabilities (or logits with ``input="logits"``) on
            examples the teacher did not train on.
        y : array-like of shape (n_samples,)
            True labels, integers in ``[0, n_classes)`` matching the columns.
        sample_weight : array-like of shape (n_samples,), optional
            Non-negative weights of the validation examples.

        Returns
        -------
        self
        """
        proba, labels = self._proba(X, y, reset=True)
        n, L = proba.shape
        w = check_sample_weight(sample_weight, n)
        lb, t = self._check_params(L)

        rank = margins.label_rank(proba, labels)
        self.n_classes_ = L
        counts = np.bincount(rank, weights=w, minlength=L)
        self.topk_accuracy_ = np.cumsum(counts) / counts.sum()
        self.teacher_accuracy_ = float(self.topk_accuracy_[0])
        self.topj_steps_ = None
        if self.k == "auto":
            # Algorithm 2: problem j-1 regresses top-j correctness on the top-j
            # margin; j = 1 is the alpha fit itself, so it is reused.
            topj = margins.topj_margins(proba).T
            hits = rank[None, :] < np.arange(1, L)[:, None]
            self.topj_steps_ = fit_step_functions(
                topj, hits, sample_weight=w, y_min=lb, y_max=1.0, n_jobs=self.n_jobs
            )
            self.alpha_steps_ = self.topj_steps_.subset(0)
            self.k_ = None
            return self
        self.alpha_steps_ = fit_step_function(
            margins.top1_margin(proba), rank == 0, sample_weight=w, y_min=lb, y_max=1.0
        )
        if self.k == "global":
            reached = np.flatnonzero(self.topk_accuracy_ >= t - 1e-12)
            self.k_ = int(max(K_MIN, reached[0] + 1 if reached.size else L))
        else:
            self.k_ = int(self.k)
        return self

    # -- prediction -----------------------------------------------------------------
    def predict(self, X) -> np.ndarray:
        """Estimated probability alpha(x) that the teacher's top-1 is right.

        Returns
        -------
        ndarray of shape (n_samples,), values in ``[lower_bound, 1]``.
        """
        check_is_fitted(self, "alpha_steps_")
        proba = self._proba(X, reset=False)
        return self.alpha_steps_.predict(margins.top1_margin(proba)).astype(np.float64, copy=False)

    def predict_k(self, X) -> np.ndarray:
        """Estimated number k(x) of the teacher's top classes holding the truth.

        Returns
        -------
        ndarray of int, shape (n_samples,), values in ``[2, n_classes]``.
        """
        check_is_fitted(self, "alpha_steps_")
        proba = self._proba(X, reset=False)
        return self._k_from_proba(proba)

    def _k_from_proba(self, proba: np.ndarray) -> np.ndarray:
        if self.topj_steps_ is None:
            return np.full(proba.shape[0], self.k_, dtype=np.intp)
        t = check_unit_interval(self.threshold, name="threshold")
        return self.topj_steps_.first_crossing(margins.topj_margins(proba), t, k_min=K_MIN)

    def transform(self, X) -> np.ndarray:
        """Stack ``[alpha(x), k(x)]`` as an ``(n_samples, 2)`` float array."""
        check_is_fitted(self, "alpha_steps_")
        proba = self._proba(X, reset=False)
        alpha = self.alpha_steps_.predict(margins.top1_margin(proba))
        return np.column_stack([alpha.astype(np.float64), self._k_from_proba(proba).astype(np.float64)])

    def get_feature_names_out(self, input_features=None):
        """Names of the :meth:`transform` columns."""
        check_is_fitted(self, "alpha_steps_")
        return np.asarray(["alpha", "k"], dtype=object)

    def score(self, X, y, sample_weight=None) -> float:
        """Negative Brier score of the label distribution alpha and k imply.

        For each example the implied distribution puts mass alpha(x) on the
        teacher's top-1 class and ``(1 - alpha) / (k - 1)`` on each of the
        other ``k(x) - 1`` top classes (Definition 3.2). Higher is better;
        0 is perfect.
        """
        check_is_fitted(self, "alpha_steps_")
        proba, labels = self._proba(X, y, reset=False)
        w = check_sample_weight(sample_weight, proba.shape[0])
        alpha = self.alpha_steps_.predict(margins.top1_margin(proba)).astype(np.float64)
        k = self._k_from_proba(proba).astype(np.float64)
        rank = margins.label_rank(proba, labels)
        other = (1.0 - alpha) / (k - 1.0)
        q_true = np.where(rank == 0, alpha, np.where(rank < k, other, 0.0))
        brier = alpha**2 + (k - 1.0) * other**2 - 2.0 * q_true + 1.0
        return -float(np.average(brier, weights=w))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.positive_only = self.input == "proba"
        tags.target_tags.required = True
        return tags
