"""Isotonic regression: alpha fit end to end, the PAV kernel, and alpha predict.

Targets (issue 2, 2-core machine):

* fit, n=1e6: >= 3x faster than sklearn IsotonicRegression.fit and at most
  1.3x the time of a bare ``np.argsort(x)``; n=1e3: >= 10x faster than sklearn.
* kernel on sorted y, n=1e6: >= 1.2x faster than scipy.optimize.isotonic_regression;
  all-pool worst case at most 1.3x scipy's time.
* predict, 1e7 queries, one thread: >= 5x faster than sklearn's predict and
  >= 3x faster than ``np.searchsorted(knots, q)``, at any number of blocks.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.optimize
from sklearn.isotonic import IsotonicRegression
from threadpoolctl import threadpool_limits

import slamlearn
from _common import faster, fmt_n, info, pool, rng, run, size, slower_at_most


def bernoulli_xy(n: int, seed: int):
    """x uniform in [0, 1], y ~ Bernoulli(x) as 0.0/1.0."""
    g = rng(seed)
    x = g.random(n)
    y = (g.random(n) < x).astype(np.float64)
    return x, y


# -- alpha fit end to end --------------------------------------------------------------

FIT_SIZES = [size(10**6, 20_000), 10**3]
FIT_TARGETS = {
    10**6: [faster("sklearn", 3.0), slower_at_most("np.argsort", 1.3)],
    10**3: [faster("sklearn", 10.0), info("np.argsort", as_speedup=False)],
}

FIT_VARIANTS = {
    "slamlearn": lambda x, y: slamlearn.fit_step_function(x, y, y_min=0.5, y_max=1.0),
    "sklearn": lambda x, y: IsotonicRegression(y_min=0.5, y_max=1).fit(x, y),
    "np.argsort": lambda x, y: np.argsort(x),
}


@pytest.mark.parametrize("n", FIT_SIZES, ids=fmt_n)
@pytest.mark.parametrize("variant", list(FIT_VARIANTS))
def test_alpha_fit(benchmark, variant, n, bench_pass):
    n_inputs = 6 if n >= 10**5 else size(256, 32)
    items = pool(("fit", n), lambda: [bernoulli_xy(n, seed) for seed in range(n_inputs)])
    targets = FIT_TARGETS.get(n, [faster("sklearn", 3.0), slower_at_most("np.argsort", 1.3)])
    run(
        benchmark,
        group=f"alpha fit, n={fmt_n(n)}",
        variant=variant,
        target=FIT_VARIANTS[variant],
        items=items,
        bench_pass=bench_pass,
        targets=targets if variant == "slamlearn" else (),
    )


# -- PAV kernel on responses already in order --------------------------------------------

KERNEL_N = size(10**6, 20_000)


def sorted_bernoulli(n: int, seed: int):
    g = rng(seed)
    x = np.sort(g.random(n))
    return (g.random(n) < x).astype(np.float64)


def strictly_decreasing(n: int, seed: int):
    """Every new response violates the fit so far: one block in the end."""
    return np.sort(rng(seed).random(n))[::-1] + np.linspace(1.0, 0.0, n)


KERNEL_VARIANTS = {
    "slamlearn": lambda y: slamlearn.isotonic_regression(y, increasing=True),
    "scipy": lambda y: scipy.optimize.isotonic_regression(y, increasing=True),
}


def _kernel_inputs(name, make):
    items = [np.ascontiguousarray(make(KERNEL_N, seed)) for seed in range(6)]
    # Same answer as the reference, so the two do the same work.
    ours = slamlearn.isotonic_regression(items[0])
    np.testing.assert_allclose(ours.fitted, scipy.optimize.isotonic_regression(items[0]).x, rtol=1e-9, atol=1e-12)
    if make is strictly_decreasing:
        assert ours.values.shape[0] == 1
    return items


@pytest.mark.parametrize(
    "case",
    [
        ("Bernoulli(sorted x)", sorted_bernoulli, [faster("scipy", 1.2)]),
        ("all-pool worst case (strictly decreasing y)", strictly_decreasing, [slower_at_most("scipy", 1.3)]),
    ],
    ids=["bernoulli", "all-pool"],
)
@pytest.mark.parametrize("variant", list(KERNEL_VARIANTS))
def test_pav_kernel(benchmark, variant, case, bench_pass):
    name, make, targets = case
    items = pool(("kernel", name), lambda: _kernel_inputs(name, make))
    run(
        benchmark,
        group=f"PAV kernel on sorted data, n={fmt_n(KERNEL_N)}, {name}",
        variant=variant,
        target=KERNEL_VARIANTS[variant],
        items=items,
        bench_pass=bench_pass,
        targets=targets if variant == "slamlearn" else (),
    )


# -- alpha predict ------------------------------------------------------------------------

N_QUERIES = size(10**7, 100_000)

def continuous_xy(n: int, seed: int):
    """A continuous response close to x: thousands of blocks."""
    g = rng(seed)
    x = g.random(n)
    return x, x + g.normal(0.0, 0.002, n)


# (label, builder of the training data, isotonic bounds)
PREDICT_CASES = {
    "few blocks": (lambda: bernoulli_xy(1_000, 101), (0.5, 1.0)),
    "~100 blocks": (lambda: bernoulli_xy(size(10**6, 200_000), 102), (0.5, 1.0)),
    "thousands of blocks": (lambda: continuous_xy(size(10**5, 20_000), 103), (None, None)),
}


def _predict_models(case: str):
    build, (lo, hi) = PREDICT_CASES[case]
    x, y = build()
    steps = slamlearn.fit_step_function(x, y, y_min=lo, y_max=hi)
    skl = IsotonicRegression(y_min=lo, y_max=hi, out_of_bounds="clip").fit(x, y)
    queries = [rng(200 + i).random(N_QUERIES) for i in range(3)]
    return steps, skl, queries


@pytest.mark.parametrize("case", list(PREDICT_CASES))
@pytest.mark.parametrize("variant", ["slamlearn", "sklearn", "np.searchsorted"])
def test_alpha_predict(benchmark, variant, case, bench_pass):
    steps, skl, queries = pool(("predict", case), lambda: _predict_models(case))
    knots = steps.knots
    fn = {
        "slamlearn": steps.predict,
        "sklearn": skl.predict,
        "np.searchsorted": lambda q: np.searchsorted(knots, q),
    }[variant]
    n_blocks = int(steps.values.shape[0])
    with threadpool_limits(limits=1):
        run(
            benchmark,
            group=f"alpha predict, {fmt_n(N_QUERIES)} queries, 1 thread, {case} ({n_blocks})",
            variant=variant,
            target=fn,
            items=queries,
            bench_pass=bench_pass,
            targets=[faster("sklearn", 5.0), faster("np.searchsorted", 3.0)] if variant == "slamlearn" else (),
            extra={"n_blocks": n_blocks},
        )
