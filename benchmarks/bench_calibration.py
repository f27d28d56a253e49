"""Algorithm 2 (k="auto"): the L-1 top-j isotonic fits, alone and end to end.

Targets (issue 2): the batched fits ``slamlearn.fit_step_functions(M, H)`` are
>= 75x faster than a Python loop of sklearn IsotonicRegression over the L-1
problems at 500 rows x 100 classes, and >= 6x at 10,000 rows x 1,000 classes.
End to end (``TeacherCalibrator(k="auto").fit``) against computing the margins
with NumPy and running the same sklearn loop is reported without a target.

Teachers are noisy: random logits with the true class boosted by a random
amount. The 10,000 x 1,000 case uses float32 probabilities.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.isotonic import IsotonicRegression

import slamlearn
from _common import faster, info, noisy_teacher, pool, run, size

# (rows, classes, dtype, target of the fits alone, number of different teachers)
CASES = [
    (size(500, 200), size(100, 20), np.float64, 75.0, size(32, 4)),
    (size(10_000, 1_000), size(1_000, 50), np.float32, 6.0, 3),
]


def _case_id(case):
    n, L, dtype, _, _ = case
    return f"{n}x{L}-{np.dtype(dtype).name}"


def topj_problems(P: np.ndarray, y: np.ndarray):
    """(M, H): row j-1 of M is the top-j margin of every example, row j-1 of
    H whether the label is in the teacher's top j."""
    M = np.ascontiguousarray(slamlearn.topj_margins(P).T)
    rank = slamlearn.label_rank(P, y)
    H = rank[None, :] < np.arange(1, P.shape[1])[:, None]
    return M, H


def sklearn_loop(M: np.ndarray, H: np.ndarray):
    return [IsotonicRegression(y_min=0.5, y_max=1).fit(M[j], H[j]) for j in range(M.shape[0])]


def numpy_problems(P: np.ndarray, y: np.ndarray):
    """The reference's own margins and hits, in plain NumPy."""
    s = np.sort(P, axis=1)[:, ::-1]
    c = np.cumsum(s, axis=1)
    M = (c[:, :-1] - s[:, 1:]).T
    rank = (P > P[np.arange(P.shape[0]), y][:, None]).sum(1)
    H = rank[None, :] < np.arange(1, P.shape[1])[:, None]
    return M, H


def numpy_sklearn_pipeline(P: np.ndarray, y: np.ndarray):
    return sklearn_loop(*numpy_problems(P, y))


def _teachers(case):
    n, L, dtype, _, count = case
    teachers = [noisy_teacher(n, L, seed=1000 + s, dtype=dtype) for s in range(count)]
    # The reference computes the same problems (up to float rounding).
    M, H = topj_problems(*teachers[0])
    M2, H2 = numpy_problems(*teachers[0])
    np.testing.assert_allclose(M, M2, atol=1e-5 if dtype == np.float32 else 1e-12)
    assert (H == H2).all()
    return teachers


@pytest.mark.parametrize("case", CASES, ids=_case_id)
@pytest.mark.parametrize("variant", ["slamlearn", "sklearn loop"])
def test_topj_fits(benchmark, variant, case, bench_pass):
    n, L, dtype, target, _ = case
    teachers = pool(("teachers", n, L), lambda: _teachers(case))
    problems = pool(("problems", n, L), lambda: [topj_problems(P, y) for P, y in teachers])
    fn = {
        "slamlearn": lambda M, H: slamlearn.fit_step_functions(M, H, y_min=0.5, y_max=1.0),
        "sklearn loop": sklearn_loop,
    }[variant]
    run(
        benchmark,
        group=f"auto-k: the {L - 1} top-j fits alone, {n} rows x {L} classes ({np.dtype(dtype).name})",
        variant=variant,
        target=fn,
        items=problems,
        bench_pass=bench_pass,
        targets=[faster("sklearn loop", target)] if variant == "slamlearn" else (),
    )


@pytest.mark.parametrize("case", CASES, ids=_case_id)
@pytest.mark.parametrize("variant", ["slamlearn", "numpy margins + sklearn loop"])
def test_autok_end_to_end(benchmark, variant, case, bench_pass):
    n, L, dtype, _, _ = case
    teachers = pool(("teachers", n, L), lambda: _teachers(case))
    fn = {
        "slamlearn": lambda P, y: slamlearn.TeacherCalibrator(k="auto").fit(P, y),
        "numpy margins + sklearn loop": numpy_sklearn_pipeline,
    }[variant]
    run(
        benchmark,
        group=f"auto-k end to end (margins + fits), {n} rows x {L} classes ({np.dtype(dtype).name})",
        variant=variant,
        target=fn,
        items=teachers,
        bench_pass=bench_pass,
        targets=[info("numpy margins + sklearn loop")] if variant == "slamlearn" else (),
    )
