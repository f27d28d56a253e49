"""TeacherCalibrator: Algorithm 2 against slow references, and sklearn fit."""

import pickle

import numpy as np
import pytest
from conftest import noisy_teacher
from sklearn.base import clone
from sklearn.isotonic import IsotonicRegression
from sklearn.model_selection import GridSearchCV, cross_validate
from sklearn.utils.estimator_checks import parametrize_with_checks

from slamlearn import TeacherCalibrator, label_rank, top1_margin, topj_margins


def _step_reference(x, y, lb, queries):
    """Step rule over scikit-learn's bounded isotonic fit."""
    ir = IsotonicRegression(y_min=lb, y_max=1.0).fit(x, y.astype(float))
    xs = np.unique(x)
    return ir.predict(xs[np.minimum(np.searchsorted(xs, queries), xs.shape[0] - 1)])


@pytest.mark.parametrize("lb", [0.0, 0.5, 0.7])
def test_alpha_matches_sklearn_reference_and_is_monotone(lb):
    p, y = noisy_teacher(400, 6, seed=1)
    q, _ = noisy_teacher(2000, 6, seed=2)
    cal = TeacherCalibrator(lower_bound=lb, k="global").fit(p, y)
    ref = _step_reference(top1_margin(p), p.argmax(1) == y, lb, top1_margin(q))
    alpha = cal.predict(q)
    np.testing.assert_allclose(alpha, ref)
    assert alpha.min() >= lb and alpha.max() <= 1.0
    order = np.argsort(top1_margin(q), kind="stable")
    assert np.all(np.diff(alpha[order]) >= 0)


@pytest.mark.parametrize("t", [0.6, 0.9, 0.99])
def test_auto_k_matches_per_j_reference(t):
    L = 8
    p, y = noisy_teacher(300, L, seed=3, accuracy_shift=1.0)
    q, _ = noisy_teacher(500, L, seed=4)
    cal = TeacherCalibrator(lower_bound=0.5, k="auto", threshold=t).fit(p, y)
    rank, mv, mq = label_rank(p, y), topj_margins(p), topj_margins(q)
    acc = np.column_stack(
        [_step_reference(mv[:, j - 1], rank < j, 0.5, mq[:, j - 1]) for j in range(1, L)] + [np.ones(len(q))]
    )
    ref = np.array([max(2, 1 + int(np.flatnonzero(row >= t)[0])) for row in acc])
    np.testing.assert_array_equal(cal.predict_k(q), ref)
    np.testing.assert_allclose(cal.predict(q), acc[:, 0])  # alpha is the j = 1 fit
    out = cal.transform(q)
    assert out.shape == (500, 2)
    np.testing.assert_array_equal(out[:, 1], ref)


def test_global_and_fixed_k():
    p, y = noisy_teacher(500, 10, seed=5, accuracy_shift=1.0)
    rank = label_rank(p, y)
    topk_acc = np.array([(rank < j).mean() for j in range(1, 11)])
    cal = TeacherCalibrator(k="global", threshold=0.8).fit(p, y)
    expected = max(2, int(np.flatnonzero(topk_acc >= 0.8)[0]) + 1)
    assert cal.k_ == expected
    np.testing.assert_allclose(cal.topk_accuracy_, topk_acc)
    assert (cal.predict_k(p) == expected).all()
    assert (TeacherCalibrator(k=4).fit(p, y).predict_k(p) == 4).all()


def test_lower_bound_one_pins_alpha_and_degenerate_sets():
    p, y = noisy_teacher(200, 5, seed=6)
    assert (TeacherCalibrator(lower_bound=1.0).fit(p, y).predict(p) == 1.0).all()
    right = p.argmax(1)
    assert (TeacherCalibrator(lower_bound=0.3).fit(p, right).predict(p) == 1.0).all()
    wrong = (right + 1) % 5
    cal = TeacherCalibrator(lower_bound=0.3).fit(p, wrong)
    assert (cal.predict(p) == 0.3).all()
    assert ((cal.predict_k(p) >= 2) & (cal.predict_k(p) <= 5)).all()


def test_logits_input_equals_softmaxed_proba():
    rng = np.random.default_rng(7)
    z = rng.normal(size=(300, 4)) * 3
    y = rng.integers(0, 4, 300)
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    a = TeacherCalibrator(input="logits").fit(z, y)
    b = TeacherCalibrator().fit(p, y)
    np.testing.assert_allclose(a.predict(z), b.predict(p))
    np.testing.assert_array_equal(a.predict_k(z), b.predict_k(p))


def test_float32_input():
    p, y = noisy_teacher(300, 5, seed=8, dtype=np.float32)
    cal = TeacherCalibrator().fit(p, y)
    assert cal.predict(p).dtype == np.float64
    ref = TeacherCalibrator().fit(p.astype(np.float64), y)
    np.testing.assert_allclose(cal.predict(p), ref.predict(p.astype(np.float64)))


@pytest.mark.parametrize(
    "X, y, kwargs, match",
    [
        (np.array([[0.5, np.nan], [0.5, 0.5]]), [0, 1], {}, "NaN"),
        (np.array([[1.2, -0.2], [0.5, 0.5]]), [0, 1], {}, "Negative values in data passed to X"),
        (np.array([[2.0, 3.0], [0.5, 0.5]]), [0, 1], {}, "must sum to 1.*input='logits'"),
        (np.array([[0.5, 0.5], [0.5, 0.5]]), [0, 2], {}, r"y must hold class labels in \[0, 2\)"),
        (np.array([[0.5, 0.5], [0.5, 0.5]]), [0, -1], {}, r"y must hold class labels in \[0, 2\)"),
        (np.ones((2, 1)), [0, 0], {}, "minimum of 2 is required"),
        (np.empty((0, 3)), [], {}, "minimum of 1 is required"),
        (np.array([[0.5, 0.5], [0.5, 0.5]]), [0, 1], {"k": 3}, r"k must be between 2 and the number of classes \(2\)"),
        (np.array([[0.5, 0.5], [0.5, 0.5]]), [0, 1], {"k": "best"}, "k must be an int, 'global' or 'auto'"),
        (np.array([[0.5, 0.5], [0.5, 0.5]]), [0, 1], {"lower_bound": 1.5}, r"lower_bound must be a number in \[0, 1\]"),
        (np.array([[0.5, 0.5], [0.5, 0.5]]), [0, 1], {"threshold": -0.1}, r"threshold must be a number in \[0, 1\]"),
        (np.array([[0.5, 0.5], [0.5, 0.5]]), [0, 1], {"input": "scores"}, "input must be 'proba' or 'logits'"),
    ],
)
def test_bad_input_raises_named_error(X, y, kwargs, match):
    with pytest.raises(ValueError, match=match):
        TeacherCalibrator(**kwargs).fit(X, y)


def test_predict_checks_n_features_and_fitted():
    from sklearn.exceptions import NotFittedError

    p, y = noisy_teacher(100, 5)
    with pytest.raises(NotFittedError):
        TeacherCalibrator().predict(p)
    cal = TeacherCalibrator().fit(p, y)
    with pytest.raises(ValueError, match="expecting 5 features"):
        cal.predict(np.full((3, 4), 0.25))


def test_score_is_negative_brier_of_implied_distribution():
    p, y = noisy_teacher(300, 5, seed=9)
    cal = TeacherCalibrator(k=3).fit(p, y)
    alpha, k, order = cal.predict(p), 3, np.argsort(-p, axis=1, kind="stable")
    q = np.zeros_like(p)
    q[np.arange(300), order[:, 0]] = alpha
    for r in range(1, k):
        q[np.arange(300), order[:, r]] = (1 - alpha) / (k - 1)
    onehot = np.eye(5)[y]
    assert cal.score(p, y) == pytest.approx(-np.mean(((q - onehot) ** 2).sum(1)))


def test_model_selection_and_pickle():
    p, y = noisy_teacher(600, 6, seed=10, accuracy_shift=1.0)
    grid = GridSearchCV(TeacherCalibrator(), {"lower_bound": [0.0, 0.5, 0.9], "threshold": [0.8, 0.95]}, cv=3)
    grid.fit(p, y)
    assert set(grid.best_params_) == {"lower_bound", "threshold"}
    scores = cross_validate(TeacherCalibrator(k="global"), p, y, cv=3)["test_score"]
    assert np.all(scores <= 0) and np.all(np.isfinite(scores))
    cal = TeacherCalibrator(lower_bound=0.6).fit(p, y)
    cal2 = pickle.loads(pickle.dumps(cal))
    np.testing.assert_array_equal(cal2.predict(p), cal.predict(p))
    np.testing.assert_array_equal(cal2.predict_k(p), cal.predict_k(p))
    assert clone(cal).get_params() == cal.get_params()
    assert not hasattr(clone(cal), "alpha_steps_")


# -- scikit-learn's estimator checks -------------------------------------------
# The checks feed arbitrary real matrices as X and labels drawn independently
# of X's width. With input="logits" any real matrix is valid input, so almost
# every check applies; the failures listed are the ones that cannot pass by
# design, with the reason.
_LABELS_WIDER_THAN_X = (
    "y must index X's columns (one column per class), but this check uses 3 classes with 2-column X"
)
_NOT_PROBABILITIES = "input='proba' requires rows that are probabilities; the check passes arbitrary reals"


def _expected_failures(estimator):
    failures = {
        name: _LABELS_WIDER_THAN_X
        for name in (
            "check_estimators_overwrite_params",
            "check_estimators_fit_returns_self",
            "check_readonly_memmap_input",
            "check_n_features_in_after_fitting",
            "check_sample_weights_not_an_array",
            "check_sample_weights_shape",
            "check_sample_weights_not_overwritten",
            "check_sample_weights_pandas_series",
        )
    }
    if estimator.input == "proba":
        for name in (
            "check_fit_score_takes_y", "check_dont_overwrite_parameters", "check_estimators_dtypes",
            "check_sample_weights_list", "check_all_zero_sample_weights_error", "check_sample_weight_equivalence_on_dense_data",
            "check_pipeline_consistency", "check_estimators_nan_inf", "check_estimators_pickle",
            "check_f_contiguous_array_estimator", "check_transformer_data_not_an_array", "check_transformer_general",
            "check_transformer_preserve_dtypes", "check_methods_sample_order_invariance", "check_methods_subset_invariance",
            "check_fit2d_1sample", "check_dict_unchanged", "check_fit_idempotent", "check_fit_check_is_fitted",
            "check_n_features_in", "check_fit2d_predict1d", "check_dtype_object",
        ):
            failures.setdefault(name, _NOT_PROBABILITIES)
    return failures


@parametrize_with_checks(
    [TeacherCalibrator(input="logits"), TeacherCalibrator(input="logits", k="global"), TeacherCalibrator()],
    expected_failed_checks=_expected_failures,
)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def test_chunked_prediction_matches_and_reads_memmaps(tmp_path):
    p, y = noisy_teacher(400, 6, seed=11, dtype=np.float32)
    q, _ = noisy_teacher(30_000, 6, seed=12, dtype=np.float32)
    whole = TeacherCalibrator(k="auto").fit(p, y)
    # 1 KiB of temporaries forces hundreds of chunks, on every core
    tiny = TeacherCalibrator(k="auto", max_memory=1024, n_jobs=-1).fit(p, y)
    path = tmp_path / "teacher.f32"
    mm = np.memmap(path, dtype=np.float32, mode="w+", shape=q.shape)
    mm[:] = q
    mm.flush()
    ro = np.memmap(path, dtype=np.float32, mode="r", shape=q.shape)
    np.testing.assert_array_equal(tiny.transform(ro), whole.transform(q))
    np.testing.assert_array_equal(tiny.predict_k(ro), whole.predict_k(q))
    bad = q.copy()
    bad[29_999, 0] = 2.0  # only in the last chunk
    with pytest.raises(ValueError, match="must sum to 1"):
        tiny.predict(bad)
    with pytest.raises(ValueError, match="max_memory must be a positive number"):
        TeacherCalibrator(max_memory=0).fit(p, y).predict(q)
