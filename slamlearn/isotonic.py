"""Isotonic regression over the native pool-adjacent-violators kernel.

Two kinds of fit live here:

* :func:`isotonic_regression` -- responses already in order, one fitted value
  per response, with the semantics of :func:`scipy.optimize.isotonic_regression`
  followed by clipping to ``[y_min, y_max]``.
* :func:`fit_step_function` / :func:`fit_step_functions` -- responses against a
  covariate, returning compact :class:`StepFunctions` that predict by the SLaM
  paper's step rule (Appendix B.1): a query ``c`` takes the value of the block
  with the smallest knot ``>= c``, clipped at both ends. This is what the
  teacher calibration uses; it is not scikit-learn's linear interpolation.

Validation and conversion happen here; the kernels in ``slamlearn._ext`` do
none. Where the time goes is sorting, not pooling, so binary responses with
unit weights on a non-negative covariate (every fit SLaM makes) take a fast
path: the response rides in the lowest bit of an integer sort key built from
the covariate's bits, so one plain ``np.sort`` orders the data and the kernel
pools ties and violators in one pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ._ext import _pav, _steps
from ._parallel import map_row_chunks, n_threads
from ._validation import as_float_array, check_sample_weight

__all__ = [
    "IsotonicRegressionResult",
    "StepFunctions",
    "fit_step_function",
    "fit_step_functions",
    "isotonic_regression",
]


@dataclass(frozen=True)
class IsotonicRegressionResult:
    """Result of :func:`isotonic_regression`.

    Attributes
    ----------
    fitted : ndarray of shape (n,)
        One fitted value per response.
    values : ndarray of shape (n_blocks,)
        The value of each block.
    weights : ndarray of shape (n_blocks,)
        The summed weight of each block.
    blocks : ndarray of shape (n_blocks + 1,)
        Start index of each block, then ``n``; block ``b`` is
        ``fitted[blocks[b]:blocks[b + 1]]`` (as in scipy's result).
    """

    fitted: np.ndarray
    values: np.ndarray
    weights: np.ndarray
    blocks: np.ndarray


def _bounds(y_min, y_max) -> tuple[float, float]:
    lo = -np.inf if y_min is None else float(y_min)
    hi = np.inf if y_max is None else float(y_max)
    if np.isnan(lo) or np.isnan(hi):
        raise ValueError("y_min and y_max must not be NaN")
    if lo > hi:
        raise ValueError(f"y_min must be <= y_max; got y_min={lo}, y_max={hi}")
    return lo, hi


def isotonic_regression(y, *, sample_weight=None, y_min=None, y_max=None, increasing=True):
    """Weighted least-squares isotonic regression of responses in order.

    Solves ``min sum_i w_i (y_i - r_i)^2`` subject to ``r`` increasing (or
    decreasing) and ``y_min <= r_i <= y_max``. The bounded solution is the
    unbounded one clipped to the bounds, so this equals
    ``np.clip(scipy.optimize.isotonic_regression(y, weights=w).x, y_min, y_max)``
    where scipy accepts the weights.

    Parameters
    ----------
    y : array-like of shape (n,)
        Responses, in the order of the (implicit) covariate.
    sample_weight : array-like of shape (n,), optional
        Non-negative weights. Zero-weight responses do not affect the fit and
        take the value of the nearest block on their left (the first block
        for leading ones). At least one weight must be positive.
    y_min, y_max : float, optional
        Bounds on the fitted values.
    increasing : bool, default=True
        Fit an increasing (True) or decreasing (False) sequence.

    Returns
    -------
    IsotonicRegressionResult
    """
    y = as_float_array(y, name="y", ndim=1)
    n = y.shape[0]
    w = check_sample_weight(sample_weight, n)
    if w is not None:
        w = w.astype(y.dtype, copy=False)
    lo, hi = _bounds(y_min, y_max)
    fitted = np.empty_like(y)
    values, weights, last = _pav.pav_ordered(y, y if w is None else w, w is not None, bool(increasing), lo, hi, fitted)
    blocks = np.empty(values.shape[0] + 1, dtype=np.intp)
    blocks[0] = 0
    blocks[1:] = last + 1
    blocks[-1] = n
    return IsotonicRegressionResult(fitted=fitted, values=values, weights=weights, blocks=blocks)


@dataclass
class StepFunctions:
    """One or several fitted isotonic step functions in a ragged layout.

    Function ``j`` has blocks ``offsets[j]:offsets[j + 1]``; block ``b``
    covers covariates ``lower[b] .. knots[b]``, has value ``values[b]`` and
    total weight ``weights[b]``. Knots increase strictly within a function.

    Prediction follows the step rule: a query ``c`` takes the value of the
    first block whose knot is ``>= c``; queries above the last knot take the
    last value. Queries are looked up through a small uniform grid over the
    knots, so the cost per query does not grow with the number of blocks.
    """

    offsets: np.ndarray
    lower: np.ndarray
    knots: np.ndarray
    values: np.ndarray
    weights: np.ndarray
    _grid: tuple | None = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self):
        self.offsets = np.ascontiguousarray(self.offsets, dtype=np.intp)
        for name in ("lower", "knots", "values", "weights"):
            setattr(self, name, np.ascontiguousarray(getattr(self, name), dtype=np.float64))
        if (np.diff(self.offsets) < 1).any():
            raise ValueError("every step function needs at least one block")

    @property
    def _tables(self) -> tuple:
        # The search grids serve predictions only: built on first use, so a
        # fit that is never evaluated (or only pickled) does not pay for them.
        if self._grid is None:
            self._grid = _steps.build_tables(self.knots, self.offsets)
        return self._grid

    @property
    def n_functions(self) -> int:
        """Number of step functions held."""
        return self.offsets.shape[0] - 1

    def function(self, j: int) -> dict:
        """Blocks of function ``j`` as a dict of arrays (for plots and reports)."""
        s = slice(self.offsets[j], self.offsets[j + 1])
        return {"lower": self.lower[s], "knots": self.knots[s], "values": self.values[s], "weights": self.weights[s]}

    def subset(self, j: int) -> "StepFunctions":
        """A :class:`StepFunctions` holding only function ``j``."""
        s = slice(self.offsets[j], self.offsets[j + 1])
        return StepFunctions(
            np.array([0, s.stop - s.start]), self.lower[s], self.knots[s], self.values[s], self.weights[s]
        )

    def _queries(self, queries, ndim):
        q = as_float_array(queries, name="queries", ndim=ndim)
        if ndim == 2 and q.shape[1] != self.n_functions:
            raise ValueError(f"queries must have {self.n_functions} columns (one per function); got {q.shape[1]}")
        return q

    def predict(self, queries) -> np.ndarray:
        """Evaluate the functions.

        Parameters
        ----------
        queries : array-like of shape (n,) or (n, n_functions)
            With one function, a 1-D array of covariates; otherwise column
            ``j`` is evaluated by function ``j``.

        Returns
        -------
        ndarray of the queries' shape and float dtype.
        """
        if self.n_functions == 1 and np.ndim(queries) == 1:
            q = self._queries(queries, 1)
            out = np.empty_like(q)
            table_off, tables, lo, scale, top_step = self._tables
            _steps.predict_one(q, self.knots, self.values, tables, lo[0], scale[0], top_step[0], out)
            return out
        q = self._queries(queries, 2)
        out = np.empty_like(q)
        _steps.predict_many(q, self.knots, self.values, self.offsets, *self._kernel_tables(), out)
        return out

    def first_crossing(self, queries, threshold: float, k_min: int = 1) -> np.ndarray:
        """For each row of ``queries``, the smallest ``j >= 1`` with
        ``f_j(queries[i, j - 1]) >= threshold`` (``n_functions + 1`` if none),
        raised to at least ``k_min``. Stops evaluating at the first crossing.
        """
        q = self._queries(queries, 2)
        out = np.empty(q.shape[0], dtype=np.intp)
        _steps.first_crossing(
            q, self.knots, self.values, self.offsets, *self._kernel_tables(), float(threshold), int(k_min), out
        )
        return out

    def _kernel_tables(self):
        table_off, tables, lo, scale, top_step = self._tables
        return tables, table_off, lo, scale, top_step

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_grid"] = None  # rebuilt when needed: cheap, and keeps pickles small
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)


def _is_binary(y: np.ndarray) -> bool:
    if y.dtype == np.bool_:
        return True
    return bool(((y == 0) | (y == 1)).all())


def _pack_keys(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Integer keys whose order is the covariate's, response in the low bit.

    For finite ``x >= 0`` the IEEE bit pattern is ordered like the value, and
    shifting it left by one bit cannot overflow (the sign bit is zero; -0.0
    loses its sign bit and becomes +0.0, as it should).
    """
    utype = np.uint32 if x.dtype == np.float32 else np.uint64
    keys = x.view(utype) << utype(1)
    keys |= y.astype(utype, copy=False)
    return keys


def fit_step_function(x, y, *, sample_weight=None, y_min=None, y_max=None, increasing=True) -> StepFunctions:
    """Fit an isotonic step function of ``y`` on the covariate ``x``.

    Parameters
    ----------
    x : array-like of shape (n,)
        Covariate (for SLaM: the teacher's margin). Need not be sorted;
        equal values are pooled into one block.
    y : array-like of shape (n,)
        Responses (for SLaM: 0/1 correctness of the teacher).
    sample_weight : array-like of shape (n,), optional
        Non-negative weights; zero-weight points are ignored.
    y_min, y_max : float, optional
        Bounds on the fitted values (the paper uses ``[lb, 1]``).
    increasing : bool, default=True

    Returns
    -------
    StepFunctions
        Holding one function.
    """
    x = as_float_array(x, name="x", ndim=1)
    y = np.asarray(y)
    if y.shape != x.shape:
        raise ValueError(f"x and y must have the same shape; got {x.shape} and {y.shape}")
    if y.dtype != np.bool_:
        y = as_float_array(y, name="y", ndim=1)
    lo, hi = _bounds(y_min, y_max)
    w = check_sample_weight(sample_weight, x.shape[0])
    if w is None and increasing and x.min() >= 0 and _is_binary(y):
        keys = _pack_keys(x, y)
        keys.sort()
        lower, knots, values, weights = _pav.pav_packed(keys, lo, hi)
        return StepFunctions(np.array([0, values.shape[0]]), lower, knots, values, weights)
    order = np.argsort(x, kind="stable")
    xs = x[order]
    ys = y[order].astype(x.dtype, copy=False)
    ws = ys if w is None else w[order].astype(x.dtype, copy=False)
    lower, knots, values, weights, _ = _pav.pav_xy(xs, ys, ws, w is not None, bool(increasing), lo, hi)
    if values.shape[0] == 0:
        raise ValueError("sample_weight must have a positive sum")
    return StepFunctions(np.array([0, values.shape[0]]), lower, knots, values, weights)


def fit_step_functions(x, y, *, sample_weight=None, y_min=None, y_max=None, n_jobs: int | None = None) -> StepFunctions:
    """Fit many independent increasing step functions of 0/1 responses at once.

    This is the batched entry point behind Algorithm 2 of the SLaM paper (one
    fit per top-j margin). Row ``j`` of ``x`` and ``y`` is problem ``j``.

    Parameters
    ----------
    x : array-like of shape (n_functions, n)
        Non-negative covariates, one problem per row.
    y : array-like of shape (n_functions, n) or (n,)
        0/1 responses (bool or numbers); a 1-D ``y`` is shared by every row.
    sample_weight : array-like of shape (n,), optional
        Non-negative weights of the ``n`` points, shared by every problem.
    y_min, y_max : float, optional
        Bounds on the fitted values.
    n_jobs : int or None, default=None
        Threads to split the rows over (the sort and the kernel release the
        GIL). None uses every core for large batches (at least 2**18
        covariates) and one thread otherwise, where a pool costs more than
        it saves; -1 always uses every core.

    Returns
    -------
    StepFunctions
        Holding ``n_functions`` functions.
    """
    x = as_float_array(x, name="x", ndim=2)
    y = np.asarray(y)
    if y.ndim == 1:
        y = np.broadcast_to(y, x.shape)
    if y.shape != x.shape:
        raise ValueError(f"y must have shape {x.shape} or ({x.shape[1]},); got {y.shape}")
    if not _is_binary(y):
        raise ValueError("y must hold 0/1 responses for the batched fit")
    if not x.min() >= 0:
        raise ValueError("x must be non-negative for the batched fit (margins are)")
    lo, hi = _bounds(y_min, y_max)
    w = check_sample_weight(sample_weight, x.shape[1])
    if w is None:
        return _fit_rows_packed(x, y, lo, hi, n_jobs)
    # Weighted: sort each row, then one ragged kernel call.
    m, n = x.shape
    order = np.argsort(x, axis=1, kind="stable")
    xs = np.take_along_axis(x, order, axis=1).ravel()
    ys = np.take_along_axis(y, order, axis=1).astype(x.dtype).ravel()
    ws = w.astype(x.dtype)[order].ravel()
    problems = np.arange(0, m * n + 1, n, dtype=np.intp)
    offsets, lower, knots, values, weights = _pav.pav_xy_ragged(xs, ys, ws, True, problems, True, lo, hi)
    return StepFunctions(offsets, lower, knots, values, weights)


def _fit_rows_packed(x: np.ndarray, y: np.ndarray, lo: float, hi: float, n_jobs: int) -> StepFunctions:
    def run(rows: slice):
        keys = _pack_keys(x[rows], y[rows])
        keys.sort(axis=1)
        return _pav.pav_packed_rows(keys, lo, hi)

    parts = map_row_chunks(run, x.shape[0], n_threads(n_jobs, x.size))
    if len(parts) == 1:
        return StepFunctions(*parts[0])
    shift = np.cumsum([0] + [p[0][-1] for p in parts[:-1]])
    offsets = np.concatenate([[0]] + [p[0][1:] + s for p, s in zip(parts, shift)])
    cat = [np.concatenate([p[i] for p in parts]) for i in range(1, 5)]
    return StepFunctions(offsets, *cat)
