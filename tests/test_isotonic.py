"""Isotonic regression against scipy, scikit-learn and a brute-force QP."""

import pickle

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy.optimize import isotonic_regression as scipy_isotonic
from scipy.optimize import minimize
from sklearn.isotonic import IsotonicRegression

from slamlearn import StepFunctions, fit_step_function, fit_step_functions, isotonic_regression

responses = st.integers(1, 60).flatmap(
    lambda n: st.tuples(
        hnp.arrays(np.float64, n, elements=st.sampled_from([0.0, 0.25, 0.5, 1.0, 2.0, -1.0, 3.5])),
        hnp.arrays(np.float64, n, elements=st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.0])),
    )
)


def _reference(y, w, lo, hi, increasing):
    """scipy on the positive-weight points, clipped; zero-weight points take
    the value on their left (the first value for leading ones)."""
    keep = w > 0
    fit = np.clip(scipy_isotonic(y[keep], weights=w[keep], increasing=increasing).x, lo, hi)
    out = np.empty_like(y)
    pos = np.cumsum(keep) - 1
    out[:] = fit[np.maximum(pos, 0)]
    return out


@given(responses, st.booleans(), st.sampled_from([(None, None), (0.0, 1.0), (0.5, 1.0), (-0.5, 0.25)]),
       st.booleans())
def test_matches_scipy_then_clip(data, increasing, bounds, use_weights):
    y, w = data
    if not use_weights or w.sum() == 0:
        w = np.ones_like(y)
    lo, hi = bounds
    res = isotonic_regression(y, sample_weight=w, y_min=lo, y_max=hi, increasing=increasing)
    ref = _reference(y, w, -np.inf if lo is None else lo, np.inf if hi is None else hi, increasing)
    np.testing.assert_allclose(res.fitted, ref, rtol=1e-12, atol=1e-12)
    # block structure is consistent with the n-length fit
    assert res.blocks[0] == 0 and res.blocks[-1] == y.shape[0]
    for b in range(res.values.shape[0]):
        np.testing.assert_allclose(res.fitted[res.blocks[b]:res.blocks[b + 1]], res.values[b])
    np.testing.assert_allclose(res.weights.sum(), w.sum())


@given(hnp.arrays(np.float32, st.integers(1, 200), elements=st.floats(-5, 5, width=32)), st.booleans())
def test_float32_stays_float32(y, increasing):
    res = isotonic_regression(y, increasing=increasing)
    assert res.fitted.dtype == np.float32
    ref = scipy_isotonic(y.astype(np.float64), increasing=increasing).x
    np.testing.assert_allclose(res.fitted, ref, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("n", [1, 10, 1_000, 100_000])
def test_random_sizes_match_scipy(n):
    rng = np.random.default_rng(n)
    y = rng.normal(size=n) + np.linspace(0, 3, n)
    w = rng.uniform(0.1, 2.0, n)
    np.testing.assert_allclose(
        isotonic_regression(y, sample_weight=w).fitted, scipy_isotonic(y, weights=w).x, rtol=1e-10, atol=1e-10
    )


def _qp(y, w, lo, hi):
    n = y.shape[0]
    cons = [{"type": "ineq", "fun": (lambda r, i=i: r[i + 1] - r[i])} for i in range(n - 1)]
    res = minimize(lambda r: np.sum(w * (y - r) ** 2), np.clip(y, lo, hi), jac=lambda r: -2 * w * (y - r),
                   bounds=[(lo, hi)] * n, constraints=cons, method="SLSQP", options={"ftol": 1e-14, "maxiter": 500})
    return res.x


@given(hnp.arrays(np.float64, st.integers(1, 6), elements=st.floats(-2, 2)),
       hnp.arrays(np.float64, 6, elements=st.floats(0.1, 3)))
def test_matches_brute_force_qp(y, w):
    w = w[: y.shape[0]]
    got = isotonic_regression(y, sample_weight=w, y_min=-0.5, y_max=1.0).fitted
    ref = _qp(y, w, -0.5, 1.0)
    loss = lambda r: np.sum(w * (y - r) ** 2)  # noqa: E731
    assert loss(got) <= loss(ref) + 1e-7
    np.testing.assert_allclose(got, ref, atol=1e-4)


@pytest.mark.parametrize("kind", ["alternating", "decreasing", "increasing", "constant"])
def test_pathological_inputs_are_correct(kind):
    n = 1_000_000
    y = {
        "alternating": np.tile([1.0, 0.0], n // 2),
        "decreasing": -np.arange(n, dtype=float),
        "increasing": np.arange(n, dtype=float),
        "constant": np.ones(n),
    }[kind]
    res = isotonic_regression(y)
    np.testing.assert_allclose(res.fitted, scipy_isotonic(y).x)


def test_zero_weights_are_ignored_and_covered_from_the_left():
    y = np.array([5.0, 0.0, 1.0, -7.0, 2.0, 9.0])
    w = np.array([0.0, 1.0, 1.0, 0.0, 1.0, 0.0])
    res = isotonic_regression(y, sample_weight=w)
    np.testing.assert_allclose(res.fitted, [0.0, 0.0, 1.0, 1.0, 2.0, 2.0])


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="y contains NaN"):
        isotonic_regression([1.0, np.nan])
    with pytest.raises(ValueError, match="y is empty"):
        isotonic_regression([])
    with pytest.raises(ValueError, match="sample_weight must be non-negative"):
        isotonic_regression([1.0, 2.0], sample_weight=[1.0, -1.0])
    with pytest.raises(ValueError, match="sample_weight must not be all zero"):
        isotonic_regression([1.0, 2.0], sample_weight=[0.0, 0.0])
    with pytest.raises(ValueError, match="sample_weight has 1 entries"):
        isotonic_regression([1.0, 2.0], sample_weight=[1.0])
    with pytest.raises(ValueError, match="y_min must be <= y_max"):
        isotonic_regression([1.0, 2.0], y_min=1, y_max=0)
    with pytest.raises(ValueError, match="1-D"):
        isotonic_regression([[1.0, 2.0]])


# -- step functions ------------------------------------------------------------

def _sklearn_step(x, y, w, lo, hi, increasing, queries):
    """Reference step rule on top of scikit-learn's fit: the fitted value at
    the smallest distinct covariate >= c (the largest one above them all)."""
    ir = IsotonicRegression(y_min=lo, y_max=hi, increasing=increasing).fit(x, y, sample_weight=w)
    xs = np.unique(x[w > 0] if w is not None else x)
    idx = np.minimum(np.searchsorted(xs, queries, side="left"), xs.shape[0] - 1)
    return ir.predict(xs[idx])


points = st.integers(1, 80).flatmap(
    lambda n: st.tuples(
        hnp.arrays(np.float64, n, elements=st.sampled_from([0.0, 0.1, 0.2, 0.2, 0.35, 0.5, 0.9, 1.0])),
        hnp.arrays(np.bool_, n),
        hnp.arrays(np.float64, n, elements=st.sampled_from([0.0, 1.0, 2.0])),
    )
)


@given(points, st.sampled_from([0.0, 0.5, 0.8]), st.booleans(), st.booleans())
def test_step_function_matches_sklearn(data, lb, weighted, increasing):
    x, y, w = data
    if not weighted or w.sum() == 0:
        w = None
    queries = np.linspace(-0.1, 1.1, 97)
    sf = fit_step_function(x, y, sample_weight=w, y_min=lb, y_max=1.0, increasing=increasing)
    ref = _sklearn_step(x, y.astype(float), w, lb, 1.0, increasing, queries)
    np.testing.assert_allclose(sf.predict(queries), ref, atol=1e-12)
    assert np.all(np.diff(sf.knots) > 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fast_and_general_paths_agree(dtype):
    rng = np.random.default_rng(0)
    x = rng.random(20_000).astype(dtype)
    y = rng.random(20_000) < x
    fast = fit_step_function(x, y, y_min=0.5, y_max=1.0)  # packed keys
    general = fit_step_function(x, y.astype(float), sample_weight=np.ones(x.shape[0]), y_min=0.5, y_max=1.0)
    for attr in ("lower", "knots", "values", "weights"):
        np.testing.assert_allclose(getattr(fast, attr), getattr(general, attr), rtol=1e-12)


def test_step_rule_not_interpolation():
    sf = fit_step_function([0.1, 0.2, 0.3, 0.4], [0, 0, 1, 1])
    # blocks: x<=0.2 -> 0, x in (0.2, 0.4] -> 1 (smallest knot >= c)
    np.testing.assert_array_equal(sf.predict(np.array([0.0, 0.2, 0.2000001, 0.25, 0.4, 5.0])), [0, 0, 1, 1, 1, 1])


def test_step_predict_is_exact_with_many_blocks_and_clustered_knots():
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.random(5000) * 1e-6, rng.random(5000)])
    y = x + rng.normal(0, 1e-3, x.shape[0])
    sf = fit_step_function(x, y)
    q = np.concatenate([rng.random(20000) * 2e-6, rng.random(20000) * 1.2 - 0.1, sf.knots, sf.lower])
    ref = sf.values[np.minimum(np.searchsorted(sf.knots, q, side="left"), sf.knots.shape[0] - 1)]
    np.testing.assert_array_equal(sf.predict(q), ref)
    q32 = q.astype(np.float32)  # rounded queries: the reference must see the same values
    ref32 = sf.values[np.minimum(np.searchsorted(sf.knots, q32.astype(np.float64)), sf.knots.shape[0] - 1)]
    np.testing.assert_array_equal(sf.predict(q32), ref32.astype(np.float32))


@given(st.lists(st.floats(-3, 3), min_size=1, max_size=60, unique=True),
       st.lists(st.floats(-4, 4), min_size=1, max_size=80), st.integers(0, 3))
def test_step_search_matches_searchsorted(knots, queries, spread):
    """The grid-plus-fixed-steps search against np.searchsorted, for any knot
    layout: one knot, knots crowded into one cell next to lonely ones
    (several search steps), queries below, between, on and above the knots."""
    u = np.sort(np.asarray(knots)) * 10.0 ** -spread
    u[: len(u) // 2] *= 1e-9  # crowd half of the knots together
    u = np.unique(u)
    sf = StepFunctions(np.array([0, u.shape[0]]), u, u, np.arange(u.shape[0], dtype=float), np.ones(u.shape[0]))
    q = np.concatenate([np.asarray(queries), u, np.nextafter(u, -np.inf), np.nextafter(u, np.inf)])
    ref = np.minimum(np.searchsorted(u, q, side="left"), u.shape[0] - 1).astype(float)
    np.testing.assert_array_equal(sf.predict(q), ref)
    # the batched entry points use the same search
    two = StepFunctions(np.array([0, u.shape[0], 2 * u.shape[0]]), np.tile(u, 2), np.tile(u, 2),
                        np.tile(np.arange(u.shape[0], dtype=float), 2), np.ones(2 * u.shape[0]))
    np.testing.assert_array_equal(two.predict(np.stack([q, q[::-1]], 1)), np.stack([ref, ref[::-1]], 1))


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_batched_fits_equal_separate_fits(n_jobs):
    rng = np.random.default_rng(2)
    x = np.round(rng.random((7, 300)), 2)
    y = rng.random((7, 300)) < x
    batch = fit_step_functions(x, y, y_min=0.3, y_max=1.0, n_jobs=n_jobs)
    q = rng.random((1000, 7)) * 1.2 - 0.1
    got = batch.predict(q)
    for j in range(7):
        single = fit_step_function(x[j], y[j], y_min=0.3, y_max=1.0)
        np.testing.assert_array_equal(got[:, j], single.predict(q[:, j]))
        np.testing.assert_array_equal(batch.subset(j).knots, single.knots)
    w = rng.integers(0, 3, 300).astype(float)
    weighted = fit_step_functions(x, y, sample_weight=w, y_min=0.3, y_max=1.0)
    for j in range(7):
        ref = fit_step_function(x[j], y[j], sample_weight=w, y_min=0.3, y_max=1.0)
        np.testing.assert_allclose(weighted.predict(q)[:, j], ref.predict(q[:, j]))


def test_first_crossing_matches_loop():
    rng = np.random.default_rng(3)
    x = rng.random((5, 200))
    y = rng.random((5, 200)) < x
    batch = fit_step_functions(x, y, y_min=0.0, y_max=1.0)
    q = rng.random((500, 5))
    vals = batch.predict(q)
    for t in (0.0, 0.5, 0.9, 1.0):
        ref = np.array([next((j + 1 for j in range(5) if vals[i, j] >= t), 6) for i in range(500)])
        np.testing.assert_array_equal(batch.first_crossing(q, t), ref)
        np.testing.assert_array_equal(batch.first_crossing(q, t, k_min=3), np.maximum(ref, 3))


def test_step_functions_pickle_and_reject_nan_queries():
    sf = fit_step_function([0.1, 0.5, 0.9], [0, 1, 1])
    sf2 = pickle.loads(pickle.dumps(sf))
    assert isinstance(sf2, StepFunctions)
    np.testing.assert_array_equal(sf2.predict(np.array([0.3, 0.7])), sf.predict(np.array([0.3, 0.7])))
    with pytest.raises(ValueError, match="queries contains NaN"):
        sf.predict(np.array([np.nan]))
    with pytest.raises(ValueError, match="x and y must have the same shape"):
        fit_step_function([0.1, 0.2], [1])
