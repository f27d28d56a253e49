"""Estimating the teacher's accuracy statistics alpha(x) and k(x).

:class:`TeacherCalibrator` implements Appendix B.1 and Algorithm 2 of the SLaM
paper as a scikit-learn estimator. Its input ``X`` is the teacher's output on a
labeled validation set the teacher never trained on, and ``y`` the true labels.
``X`` may also be a :class:`~slamlearn.sparse.TopKProba` (each row's top-m
probabilities, as bulk inference stores them).
"""

from __future__ import annotations

import numbers
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from . import margins
from ._parallel import n_threads
from ._validation import check_labels, check_proba, check_sample_weight, check_unit_interval
from .isotonic import fit_step_function, fit_step_functions
from .sparse import TopKProba

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
        are turned into probabilities by a softmax. A :class:`TopKProba`
        ``X`` must hold probabilities: top-m logits cannot be normalised
        without the other classes' logits.
    n_jobs : int or None, default=None
        Threads for the ``"auto"`` fits and for prediction chunks. None uses
        every core for large inputs (at least 2**18 entries) and one thread
        otherwise; -1 always uses every core.
    max_memory : int, default=256 MiB
        Bound on the temporary memory of :meth:`predict`, :meth:`predict_k`
        and :meth:`transform`, in bytes: they work through the rows chunk by
        chunk (all threads together stay within it), so any number of rows,
        e.g. a memory-mapped file, can be processed. The same holds for a
        :class:`TopKProba` ``X``, chunked by rows of its lists.

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
    Every method taking ``X`` also accepts a :class:`TopKProba`, with
    ``n_features_in_ = n_classes``; its unlisted classes share the missing
    mass uniformly (see :mod:`slamlearn.sparse`), so the results are those
    for ``X.to_dense()``, computed without building it. With ``m =
    n_classes`` they equal those for the dense probabilities.

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

    def __init__(self, lower_bound=0.5, k="auto", threshold=0.9, input="proba", n_jobs=None,
                 max_memory=256 * 2**20):
        self.lower_bound = lower_bound
        self.k = k
        self.threshold = threshold
        self.input = input
        self.n_jobs = n_jobs
        self.max_memory = max_memory

    # -- validation -----------------------------------------------------------------
    def _proba(self, X, y=None, *, reset: bool):
        """scikit-learn's generic checks (with its standard messages), then the
        probability-specific ones; returns probabilities (and labels)."""
        if isinstance(X, TopKProba):
            self._check_sparse(X, reset=reset)
            if y is None:
                return X
            return X, check_labels(y, n_classes=X.n_classes, n_samples=len(X), name="y")
        kwargs = dict(dtype=[np.float64, np.float32], ensure_min_features=2, reset=reset)
        if y is None and not reset:
            X = validate_data(self, X, **kwargs)
        else:
            X, y = validate_data(self, X, y, **kwargs)
        proba = check_proba(X, name="X (teacher probabilities)", input=self.input)
        if y is None:
            return proba
        return proba, check_labels(y, n_classes=proba.shape[1], n_samples=proba.shape[0], name="y")

    def _check_sparse(self, X: TopKProba, *, reset: bool) -> None:
        """The checks ``validate_data`` makes, for a TopKProba (whose own
        checks ran when it was built), and its ``n_features_in_``."""
        if self.input == "logits":
            raise ValueError(
                "input='logits' cannot be used with a TopKProba X: top-m logits cannot be normalised without the "
                "other classes' logits. Store top-m probabilities (softmax over all classes) and use input='proba'."
            )
        if self.input != "proba":
            raise ValueError(f"input must be 'proba' or 'logits'; got {self.input!r}")
        L = X.n_classes
        if L < 2:
            raise ValueError(f"Found a TopKProba with {L} class(es) while a minimum of 2 is required by "
                             f"{type(self).__name__}.")
        if len(X) == 0:
            raise ValueError(f"Found a TopKProba with 0 rows while a minimum of 1 is required by "
                             f"{type(self).__name__}.")
        if reset:
            self.n_features_in_ = L
            if hasattr(self, "feature_names_in_"):
                del self.feature_names_in_
        elif L != self.n_features_in_:
            raise ValueError(f"X has {L} features, but {type(self).__name__} is expecting "
                             f"{self.n_features_in_} features as input.")

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
        X : array-like of shape (n_samples, n_classes) or TopKProba
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
    def _check_X(self, X):
        """scikit-learn's generic checks only; probability checks run per chunk
        (a TopKProba was checked when built)."""
        check_is_fitted(self, "alpha_steps_")
        if isinstance(X, TopKProba):
            self._check_sparse(X, reset=False)
            return X
        return validate_data(self, X, reset=False, dtype=[np.float64, np.float32], ensure_min_features=2)

    def _chunk_rows(self, n_classes: int) -> int:
        if not isinstance(self.max_memory, numbers.Real) or not self.max_memory > 0:
            raise ValueError(f"max_memory must be a positive number of bytes; got {self.max_memory!r}")
        # Per row: the input (and a softmax copy), top-j margins and their
        # sort, in float64 at worst: about 4 * 8 * n_classes bytes.
        return max(1, int(self.max_memory // (4 * 8 * n_classes * self._threads(10**9))))

    def _threads(self, size: int) -> int:
        return n_threads(self.n_jobs, size)

    def _by_chunks(self, X, out: np.ndarray, fn) -> np.ndarray:
        """Fill ``out[rows]`` with ``fn(probabilities of rows)`` chunk by chunk:
        memory stays bounded by ``max_memory`` whatever the number of rows,
        and chunks run on several threads (the kernels release the GIL).
        A TopKProba chunk is its rows' lists, read into memory (and put in
        canonical order) once for all the functions applied to it; the sparse
        functions' temporaries per row are of the dense ones' order."""
        n, L = X.shape
        sparse = isinstance(X, TopKProba)
        step = self._chunk_rows(L)
        starts = list(range(0, n, step))

        def work(i: int):
            rows = slice(starts[i], starts[i] + step)
            if sparse:
                out[rows] = fn(X[rows].copy())
            else:
                out[rows] = fn(check_proba(X[rows], name="X (teacher probabilities)", input=self.input))

        threads = min(self._threads(n * L), len(starts))
        if threads <= 1:
            for i in range(len(starts)):
                work(i)
        else:
            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(work, range(len(starts))))
        return out

    def _alpha(self, proba) -> np.ndarray:
        return self.alpha_steps_.predict(margins.top1_margin(proba, n_jobs=1))

    def _k(self, proba) -> np.ndarray:
        if self.topj_steps_ is None:
            return np.full(proba.shape[0], self.k_, dtype=np.intp)
        t = check_unit_interval(self.threshold, name="threshold")
        return self.topj_steps_.first_crossing(margins.topj_margins(proba, n_jobs=1), t, k_min=K_MIN)

    def predict(self, X) -> np.ndarray:
        """Estimated probability alpha(x) that the teacher's top-1 is right.

        Returns
        -------
        ndarray of shape (n_samples,), values in ``[lower_bound, 1]``.
        """
        X = self._check_X(X)
        return self._by_chunks(X, np.empty(X.shape[0]), self._alpha)

    def predict_k(self, X) -> np.ndarray:
        """Estimated number k(x) of the teacher's top classes holding the truth.

        Returns
        -------
        ndarray of int, shape (n_samples,), values in ``[2, n_classes]``.
        """
        X = self._check_X(X)
        return self._by_chunks(X, np.empty(X.shape[0], dtype=np.intp), self._k)

    def transform(self, X) -> np.ndarray:
        """Stack ``[alpha(x), k(x)]`` as an ``(n_samples, 2)`` float array."""
        X = self._check_X(X)
        return self._by_chunks(X, np.empty((X.shape[0], 2)),
                               lambda p: np.column_stack([self._alpha(p), self._k(p)]))

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
        alpha = self._alpha(proba).astype(np.float64)
        k = self._k(proba).astype(np.float64)
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
