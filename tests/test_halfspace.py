"""Algorithm 3 (SLaM for linear students), its baselines and the halfspace data generator."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from sklearn.base import clone
from sklearn.utils.estimator_checks import parametrize_with_checks

from slamlearn.datasets import make_margin_halfspace, margin_halfspace_stream
from slamlearn.halfspace import (
    R_MIN,
    SLaMHalfspaceClassifier,
    _online_updates,
    slam_gradient,
    slam_step_scale,
)
from slamlearn.mixing import mix

# -- Lemma E.3 ------------------------------------------------------------------------------


def _autograd_slam_gradient(w, x, y0, alpha):
    """Gradient of ce(y, mix(f(x; w); alpha)) by torch autograd, in float64."""
    wt = torch.tensor(w, dtype=torch.float64, requires_grad=True)
    s = torch.tensor(x, dtype=torch.float64) @ wt
    f = torch.stack([torch.sigmoid(s), torch.sigmoid(-s)])[None, :]
    m = mix(f, torch.tensor([alpha], dtype=torch.float64), torch.ones(1, 2, dtype=torch.float64))
    y = torch.tensor([[y0, 1.0 - y0]], dtype=torch.float64)
    loss = -(y * torch.log(m)).sum()
    loss.backward()
    return wt.grad.numpy(), float(m[0, 0].detach())


@st.composite
def _instances(draw):
    d = draw(st.integers(1, 6))
    unit = st.floats(-1.0, 1.0, allow_nan=False)
    w = np.array(draw(st.lists(st.floats(-4.0, 4.0, allow_nan=False), min_size=d, max_size=d)))
    x = np.array(draw(st.lists(unit, min_size=d, max_size=d)))
    alpha = draw(st.floats(0.0, 1.0).filter(lambda a: a != 0.5))
    y0 = float(draw(st.integers(0, 1)))
    return w, x, y0, alpha


@given(_instances())
def test_gradient_matches_autograd(inst):
    w, x, y0, alpha = inst
    expected, m0 = _autograd_slam_gradient(w, x, y0, alpha)
    got = slam_gradient(w, x, y0, alpha)[0]
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-13)
    # Lemma E.3's factorisation, and the adaptive step (1/r) g = sgn(2a - 1)(m0 - y0) x.
    r = slam_step_scale(w, x, alpha)[0]
    np.testing.assert_allclose(got, r * np.sign(2 * alpha - 1) * (m0 - y0) * x, rtol=1e-9, atol=1e-13)


def test_gradient_batches_and_shapes():
    rng = np.random.default_rng(0)
    X, w = rng.uniform(-1, 1, (7, 3)), rng.normal(size=3)
    y, a = rng.integers(0, 2, 7).astype(float), rng.uniform(0.6, 1.0, 7)
    G = slam_gradient(w, X, y, a)
    rows = np.vstack([slam_gradient(w, X[i], y[i], a[i]) for i in range(7)])
    np.testing.assert_allclose(G, rows)
    with pytest.raises(ValueError, match="w must have shape"):
        slam_gradient(w[:2], X, y, a)
    with pytest.raises(ValueError, match="alpha"):
        slam_gradient(w, X, y, a[:3])


@pytest.mark.parametrize("alpha", [1.0, 0.8, 0.2, 0.0, 0.5 + 1e-9])
@pytest.mark.parametrize("s", [0.0, 3.0, -40.0, 705.0, -800.0, 1e6])
def test_adaptive_step_is_exact_and_finite(alpha, s):
    """One adaptive step equals sgn(2a - 1)(y0 - m0) x wherever r is tiny or zero."""
    x = np.array([0.6, -0.8])
    w0 = s * x  # w . x = s since ||x|| = 1
    for y0 in (0.0, 1.0):
        W = w0[None, :].copy()
        _online_updates(W, x[None, None, :], np.array([[y0]]), np.array([[alpha]]))
        step = W[0] - w0
        f0 = 1.0 / (1.0 + np.exp(-np.clip(s, -700, 700)))
        m0 = mix(np.array([[f0, 1.0 - f0]]), np.array([alpha]), np.ones((1, 2)))[0, 0]
        expected = np.sign(2 * alpha - 1) * (y0 - m0) * x
        tol = 1e-12 * max(1.0, abs(s))  # step = W - w0 loses the digits of |w0|
        assert np.all(np.isfinite(step))
        np.testing.assert_allclose(step, expected, rtol=1e-9, atol=tol)
        assert np.linalg.norm(step) <= np.linalg.norm(x) + tol
    if abs(s) > 700 and 0.0 < alpha < 1.0:  # alpha in {0, 1}: r = 1 exactly
        assert slam_step_scale(w0, x, alpha)[0] < R_MIN


def test_first_step_from_zero():
    """At w = 0, f0 = mix(f0) = 1/2, so Algorithm 3's first update is sgn(2a - 1)(y0 - 1/2) x."""
    x = np.array([[0.3, -0.4, 0.5]])
    for alpha, label, sign in [(0.8, 1, 1.0), (0.8, 0, 1.0), (0.3, 1, -1.0)]:
        clf = SLaMHalfspaceClassifier(noise_rate=1 - alpha).partial_fit(x, [label], classes=[0, 1])
        np.testing.assert_allclose(clf.coef_[0], sign * (label - 0.5) * x[0])
        assert clf.t_ == 1


# -- learning noisy halfspaces --------------------------------------------------------------


def _error(clf, data):
    return 1.0 - clf.score(data.X, data.y)


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_algorithm3_learns_easy_rcn_instance(seed):
    """gamma = 0.2, RCN 0.2 (beta = 0.3), eps = 0.05: Theorem 5.1's T = 1/(beta gamma eps)^2 is
    about 1.1e5 samples; Algorithm 3 gets below 5% test error well within it."""
    gamma, noise, eps = 0.2, 0.2, 0.05
    budget = 1.0 / ((0.5 - noise) * gamma * eps) ** 2
    n = 3000
    assert n <= budget
    stream = margin_halfspace_stream(10, gamma=gamma, noise=noise, chunk_size=n, random_state=seed)
    train, test = next(stream), next(stream)
    clf = SLaMHalfspaceClassifier(noise_rate=noise, random_state=seed).fit(train.X, train.y_noisy)
    assert _error(clf, test) < eps


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_algorithm3_with_instance_dependent_alpha(seed):
    stream = margin_halfspace_stream(
        10, gamma=0.2, noise=(0.05, 0.35), distribution="margin", chunk_size=4000, random_state=seed
    )
    train, test = next(stream), next(stream)
    assert train.alpha.min() < 0.75 < train.alpha.max()
    clf = SLaMHalfspaceClassifier(random_state=seed).fit(train.X, train.y_noisy, alpha=train.alpha)
    assert _error(clf, test) < 0.05


def test_backward_log_loss_adaptive_equals_slam():
    """With the logistic base loss, dl~/ds = (mix(f0) - y0) / (2a - 1): normalised by
    |2a - 1| it is SLaM's adaptive update, step for step."""
    data = make_margin_halfspace(500, 6, gamma=0.1, noise=(0.1, 0.4), random_state=3)
    kw = dict(shuffle=False)
    slam = SLaMHalfspaceClassifier(**kw).fit(data.X, data.y_noisy, alpha=data.alpha)
    back = SLaMHalfspaceClassifier("backward", **kw).fit(data.X, data.y_noisy, alpha=data.alpha)
    np.testing.assert_allclose(back.coef_, slam.coef_, rtol=1e-9, atol=1e-12)


def test_baselines_learn_and_schedules_run():
    stream = margin_halfspace_stream(8, gamma=0.25, noise=0.1, chunk_size=3000, random_state=0)
    train, test = next(stream), next(stream)
    for params in [
        dict(method="backward", loss="perceptron"),
        dict(method="backward", learning_rate="constant"),
        dict(method="sgd"),
        dict(method="slam", learning_rate="invscaling", eta0=5.0),
        dict(method="slam", max_step=0.5),
    ]:
        clf = SLaMHalfspaceClassifier(noise_rate=0.1, random_state=0, **params).fit(train.X, train.y_noisy)
        assert _error(clf, test) < 0.1, params


# -- the estimator API ----------------------------------------------------------------------


# Every scikit-learn check passes, so no expected_failed_checks are listed.
@parametrize_with_checks(
    [
        SLaMHalfspaceClassifier(),
        SLaMHalfspaceClassifier(fit_intercept=True, learning_rate="invscaling"),
        SLaMHalfspaceClassifier(method="backward", loss="perceptron", noise_rate=0.1, fit_intercept=True),
        SLaMHalfspaceClassifier(method="sgd", max_iter=3),
    ]
)
def test_sklearn_compatible(estimator, check):
    check(estimator)


def test_partial_fit_continues_fit():
    data = make_margin_halfspace(600, 5, gamma=0.1, noise=0.2, random_state=1)
    X, y = data.X, data.y_noisy
    for params in [dict(), dict(learning_rate="invscaling"), dict(method="backward", loss="perceptron")]:
        whole = SLaMHalfspaceClassifier(noise_rate=0.2, shuffle=False, **params).fit(X, y)
        part = SLaMHalfspaceClassifier(noise_rate=0.2, shuffle=False, **params).fit(X[:250], y[:250])
        part.partial_fit(X[250:400], y[250:400]).partial_fit(X[400:], y[400:])
        np.testing.assert_allclose(part.coef_, whole.coef_, rtol=1e-12, atol=1e-14)
        assert part.t_ == whole.t_ == 600
        stream = SLaMHalfspaceClassifier(noise_rate=0.2, **params)
        for i in range(0, 600, 100):
            stream.partial_fit(X[i : i + 100], y[i : i + 100], classes=[0, 1])
        np.testing.assert_allclose(stream.coef_, whole.coef_, rtol=1e-12, atol=1e-14)


def test_per_example_alpha_in_partial_fit_and_fit_agree():
    data = make_margin_halfspace(300, 4, gamma=0.1, noise=(0.0, 0.3), random_state=2)
    a = SLaMHalfspaceClassifier(shuffle=False).fit(data.X, data.y_noisy, alpha=data.alpha)
    b = SLaMHalfspaceClassifier().partial_fit(data.X, data.y_noisy, classes=[0, 1], alpha=data.alpha)
    np.testing.assert_allclose(a.coef_, b.coef_)


def test_fit_is_deterministic_and_resets():
    data = make_margin_halfspace(300, 4, gamma=0.1, noise=0.2, random_state=2)
    clf = SLaMHalfspaceClassifier(noise_rate=0.2, random_state=7, max_iter=2)
    c1 = clf.fit(data.X, data.y_noisy).coef_.copy()
    c2 = clf.fit(data.X, data.y_noisy).coef_.copy()
    np.testing.assert_array_equal(c1, c2)
    assert clf.t_ == 600 and clf.n_iter_ == 2
    other = clone(clf).set_params(random_state=8).fit(data.X, data.y_noisy).coef_
    assert not np.array_equal(c1, other)


def test_string_labels_and_predict_proba():
    data = make_margin_halfspace(400, 3, gamma=0.3, noise=0.1, random_state=0)
    labels = np.array(["neg", "pos"])[data.y_noisy]
    clf = SLaMHalfspaceClassifier(noise_rate=0.1, random_state=0).fit(data.X, labels)
    assert list(clf.classes_) == ["neg", "pos"]
    proba = clf.predict_proba(data.X)
    np.testing.assert_allclose(proba.sum(1), 1.0)
    np.testing.assert_array_equal(clf.predict(data.X), clf.classes_[(proba[:, 1] > 0.5).astype(int)])
    assert clf.coef_.shape == (1, 3) and clf.intercept_.shape == (1,) and clf.n_features_in_ == 3


X4 = np.array([[0.1, 0.2], [0.3, -0.1], [-0.2, 0.4], [0.0, -0.3]])
Y4 = np.array([0, 1, 1, 0])


@pytest.mark.parametrize(
    "params, fit_kwargs, match",
    [
        (dict(), dict(alpha=[0.9, 1.1, 0.9, 0.9]), "alpha must hold probabilities in \\[0, 1\\]"),
        (dict(), dict(alpha=[0.9, np.nan, 0.9, 0.9]), "alpha must hold probabilities"),
        (dict(), dict(alpha=-0.1), "alpha must hold probabilities"),
        (dict(), dict(alpha=[0.9, 0.5, 0.9, 0.9]), "alpha must not be exactly 1/2.*index 1"),
        (dict(method="backward"), dict(alpha=0.5), "alpha must not be exactly 1/2"),
        (dict(), dict(alpha=[0.9, 0.9]), "alpha must be a scalar or have shape \\(4,\\)"),
        (dict(noise_rate=0.5), dict(), "noise_rate must not be exactly 1/2"),
        (dict(noise_rate=1.5), dict(), "noise_rate must be None or a number in \\[0, 1\\]"),
        (dict(noise_rate=0.1), dict(alpha=0.9), "either a per-example alpha .* or a constant noise_rate"),
        (dict(method="newton"), dict(), "method must be one of"),
        (dict(loss="hinge"), dict(), "loss must be one of"),
        (dict(loss="perceptron"), dict(), "loss='perceptron' is not available with method='slam'"),
        (dict(learning_rate="optimal"), dict(), "learning_rate must be one of"),
        (dict(eta0=0.0), dict(), "eta0 must be a positive"),
        (dict(power_t=-1.0), dict(), "power_t must be"),
        (dict(max_step=0.0), dict(), "max_step must be None or a positive"),
        (dict(max_iter=0), dict(), "max_iter must be a positive integer"),
        (dict(fit_intercept="yes"), dict(), "fit_intercept must be True or False"),
        (dict(shuffle=None), dict(), "shuffle must be True or False"),
    ],
)
def test_errors_name_the_argument(params, fit_kwargs, match):
    with pytest.raises(ValueError, match=match):
        SLaMHalfspaceClassifier(**params).fit(X4, Y4, **fit_kwargs)


def test_alpha_half_is_fine_for_plain_sgd():
    SLaMHalfspaceClassifier("sgd").fit(X4, Y4, alpha=0.5)


def test_label_and_shape_errors():
    clf = SLaMHalfspaceClassifier()
    with pytest.raises(ValueError, match="Only binary classification is supported"):
        clf.fit(X4, [0, 1, 2, 1])
    with pytest.raises(ValueError, match="exactly two classes.*got 1 class"):
        clf.fit(X4, [1, 1, 1, 1])
    with pytest.raises(ValueError, match="Unknown label type"):
        clf.fit(X4, [0.1, 0.7, 0.2, 0.3])
    with pytest.raises(ValueError, match="X has 4 rows but y has 3 labels"):
        clf.fit(X4, Y4[:3])
    with pytest.raises(ValueError, match="X has 4 rows but y has 3 labels"):
        SLaMHalfspaceClassifier().partial_fit(X4, Y4[:3], classes=[0, 1])
    with pytest.raises(ValueError, match="classes must be passed on the first call"):
        SLaMHalfspaceClassifier().partial_fit(X4, Y4)
    fitted = SLaMHalfspaceClassifier().fit(X4, Y4)
    with pytest.raises(ValueError, match="not in classes"):
        fitted.partial_fit(X4, [0, 1, 5, 0])
    with pytest.raises(ValueError, match="differ from the classes of the first call"):
        fitted.partial_fit(X4, Y4, classes=[0, 2])
    with pytest.raises(ValueError, match="X has 3 features"):
        fitted.predict(np.ones((2, 3)))
    with pytest.raises(ValueError, match="X has 3 features"):
        fitted.partial_fit(np.ones((2, 3)), [0, 1])


# -- the data generator ---------------------------------------------------------------------


@pytest.mark.parametrize("distribution", ["ball", "margin"])
@pytest.mark.parametrize("d", [1, 2, 30])
def test_margin_halfspace_geometry(distribution, d):
    data = make_margin_halfspace(3000, d, gamma=0.15, noise=0.2, distribution=distribution, random_state=0)
    assert data.X.shape == (3000, d)
    np.testing.assert_allclose(np.linalg.norm(data.coef), 1.0)
    proj = data.X @ data.coef
    assert np.all(np.abs(proj) >= 0.15 - 1e-12)
    assert np.all(np.linalg.norm(data.X, axis=1) <= 1 + 1e-12)
    np.testing.assert_array_equal(data.y, (proj > 0).astype(int))
    np.testing.assert_allclose(data.alpha, 0.8)
    assert abs((data.y != data.y_noisy).mean() - 0.2) < 0.03
    assert abs(data.y.mean() - 0.5) < 0.05
    if distribution == "margin":
        np.testing.assert_allclose(np.abs(proj), 0.15, atol=1e-12)


def test_margin_halfspace_ball_is_uniform():
    """d = 3: for the uniform ball ||x||^3 is uniform on [0, 1] (before conditioning; gamma tiny)."""
    data = make_margin_halfspace(20000, 3, gamma=1e-4, random_state=0)
    r3 = np.linalg.norm(data.X, axis=1) ** 3
    assert abs(np.mean(r3 < 0.5) - 0.5) < 0.02
    assert abs(np.mean(np.abs(data.X[:, 1]) < 0.5) - np.mean(np.abs(data.X @ data.coef) < 0.5)) < 0.02


def test_margin_halfspace_instance_noise_and_determinism():
    a = make_margin_halfspace(2000, 5, gamma=0.1, noise=(0.1, 0.3), random_state=4)
    b = make_margin_halfspace(2000, 5, gamma=0.1, noise=(0.1, 0.3), random_state=4)
    for field in ("X", "y", "y_noisy", "alpha", "coef"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert a.alpha.min() >= 0.7 - 1e-12 and a.alpha.max() <= 0.9 + 1e-12 and np.ptp(a.alpha) > 0.1
    first = next(margin_halfspace_stream(5, gamma=0.1, noise=(0.1, 0.3), chunk_size=2000, random_state=4))
    np.testing.assert_array_equal(first.X, a.X)
    c = make_margin_halfspace(50, 5, gamma=0.1, noise=lambda X: np.full(len(X), 0.25), coef=np.ones(5), random_state=0)
    np.testing.assert_allclose(c.coef, np.ones(5) / np.sqrt(5))
    np.testing.assert_allclose(c.alpha, 0.75)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(gamma=0.0), "gamma must be a number in \\(0, 1\\]"),
        (dict(gamma=1.5), "gamma"),
        (dict(noise=0.5), "noise must give flip probabilities in \\[0, 1/2\\)"),
        (dict(noise=-0.1), "noise"),
        (dict(noise=(0.3, 0.1)), "noise as a pair"),
        (dict(noise=(0.1, 0.5)), "noise as a pair"),
        (dict(noise="lots"), "noise must be a flip rate"),
        (dict(noise=lambda X: np.full(len(X), 0.7)), "noise must give flip probabilities"),
        (dict(distribution="cube"), "distribution must be one of"),
        (dict(coef=np.zeros(4)), "coef must be a finite, non-zero"),
        (dict(coef=np.ones(3)), "coef must have shape"),
        (dict(n_features=0), "n_features"),
        (dict(n_samples=0), "n_samples"),
    ],
)
def test_generator_errors_name_the_argument(kwargs, match):
    args = dict(n_samples=10, n_features=4, gamma=0.1)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        make_margin_halfspace(**args)


def test_failed_calls_leave_the_estimator_unchanged():
    clf = SLaMHalfspaceClassifier()
    with pytest.raises(ValueError, match="alpha"):
        clf.partial_fit(X4, Y4, classes=[0, 1], alpha=2.0)
    assert not hasattr(clf, "coef_") and not hasattr(clf, "classes_")
    clf.fit(X4, Y4)
    coef, t = clf.coef_.copy(), clf.t_
    with pytest.raises(ValueError, match="alpha"):
        clf.partial_fit(X4, Y4, alpha=0.5)
    np.testing.assert_array_equal(clf.coef_, coef)
    assert clf.t_ == t
