"""SLaMClassifier: SLaM beats vanilla on a Definition 3.2 teacher, and the
estimator behaves as scikit-learn and PyTorch users expect."""

import pickle

import numpy as np
import pytest
import torch
from sklearn import config_context
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import GridSearchCV, cross_validate
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks
from torch import nn

from slamlearn import SLaMClassifier, TeacherCalibrator
from slamlearn.datasets import make_noisy_teacher


def _split(seed, n=6000, n_test=2000, n_a=200, n_v=500, **kw):
    d = make_noisy_teacher(n + n_test, 20, 10, random_state=seed, alpha_range=(0.1, 0.9), k_range=(2, 3), **kw)
    y = d.y[:n].copy()
    teacher_rows = np.arange(n_a + n_v, n)
    y[teacher_rows] = -1
    cal = np.zeros(n, dtype=bool)
    cal[n_a:n_a + n_v] = True
    return d, y, cal, teacher_rows, slice(n, n + n_test)


@pytest.mark.parametrize("seed", [0, 1])
def test_slam_beats_vanilla_on_a_definition_3_2_teacher(seed):
    d, y, cal, U, test = _split(seed)
    X, P = d.X[:6000], d.teacher_proba[:6000]
    common = dict(student="linear", max_epochs=60, lr=1e-2, random_state=seed)
    vanilla = SLaMClassifier(method="vanilla", **common).fit(X, y, teacher_proba=P)
    oracle = SLaMClassifier(**common).fit(X, y, teacher_proba=P, alpha=d.alpha[U], k=d.k[U])
    calibrated = SLaMClassifier(**common).fit(X, y, teacher_proba=P, calibration_mask=cal)
    acc = {name: m.score(d.X[test], d.y[test]) for name, m in
           [("vanilla", vanilla), ("oracle", oracle), ("calibrated", calibrated)]}
    teacher = (d.teacher_proba[test].argmax(1) == d.y[test]).mean()
    # Observed margins are 4-6 points; seed-to-seed noise is about 1 point.
    assert acc["oracle"] >= acc["vanilla"] + 0.025, (acc, teacher)
    assert acc["calibrated"] >= acc["vanilla"] + 0.025, (acc, teacher)
    assert acc["vanilla"] > teacher + 0.2  # the task is learnable; the teacher is noisy


def test_fitted_calibrator_and_precomputed_alpha_paths_agree():
    d, y, cal, U, _ = _split(3, n=1500, n_test=10)
    X, P = d.X[:1500], d.teacher_proba[:1500]
    fitted = TeacherCalibrator().fit(P[cal], d.y[:1500][cal])
    common = dict(student="linear", max_epochs=3, random_state=0)
    a = SLaMClassifier(calibrator=fitted, **common).fit(X, y, teacher_proba=P)
    b = SLaMClassifier(**common).fit(X, y, teacher_proba=P, calibration_mask=cal)
    c = SLaMClassifier(**common).fit(X, y, teacher_proba=P, alpha=fitted.predict(P[U]), k=fitted.predict_k(P[U]))
    np.testing.assert_allclose(a.predict_proba(X), b.predict_proba(X), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(a.predict_proba(X), c.predict_proba(X), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(a.teacher_alpha_, fitted.predict(P[U]))
    assert isinstance(b.calibrator_, TeacherCalibrator) and b.calibrator is None


def test_deterministic_on_cpu_and_mask_modes_agree():
    d, y, cal, _, _ = _split(4, n=1200, n_test=10)
    X, P = d.X[:1200], d.teacher_proba[:1200]
    kw = dict(max_epochs=4, random_state=7, module__dropout=0.2, device="cpu")
    p1 = SLaMClassifier(**kw).fit(X, y, teacher_proba=P, calibration_mask=cal).predict_proba(X)
    p2 = SLaMClassifier(**kw).fit(X, y, teacher_proba=P, calibration_mask=cal).predict_proba(X)
    p3 = SLaMClassifier(precompute_masks=False, **kw).fit(X, y, teacher_proba=P, calibration_mask=cal).predict_proba(X)
    np.testing.assert_array_equal(p1, p2)
    np.testing.assert_allclose(p1, p3, rtol=1e-6, atol=1e-7)
    # the global RNG is left alone
    torch.manual_seed(0)
    before = torch.rand(1)
    torch.manual_seed(0)
    SLaMClassifier(max_epochs=1, random_state=1).fit(X, y, teacher_proba=P, calibration_mask=cal)
    assert torch.equal(torch.rand(1), before)


class TinyCNN(nn.Module):
    """A user-defined deep student, passed as a class with module__ arguments."""

    def __init__(self, n_classes, width=8):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                  nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.fc = nn.Linear(2 * width, n_classes)

    def forward(self, x):
        return self.fc(self.conv(x).flatten(1))


@pytest.mark.parametrize("student, extra", [(TinyCNN, {"module__width": 12}), ("cnn", {"module__channels": (16, 32)})])
def test_deep_student_on_digit_images(student, extra):
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).reshape(-1, 1, 8, 8).astype(np.float32)
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(y))
    train, test = idx[:1400], idx[1400:]
    # a noisy teacher: right 70% of the time, confident either way
    wrong = (y[train] + rng.integers(1, 10, train.size)) % 10
    top = np.where(rng.random(train.size) < 0.7, y[train], wrong)
    P = np.full((train.size, 10), 0.02)
    P[np.arange(train.size), top] = 0.82
    yy = y[train].copy()
    yy[300:] = -1
    cal = np.zeros(train.size, dtype=bool)
    cal[100:300] = True
    clf = SLaMClassifier(student=student, max_epochs=25, lr=3e-3, batch_size=64, random_state=0, **extra)
    clf.fit(X[train], yy, teacher_proba=P, calibration_mask=cal)
    assert clf.score(X[test], y[test]) > 0.8
    assert clf.predict_proba(X[test]).shape == (test.size, 10)


def test_pipeline_with_metadata_routing_and_step_params():
    d, y, cal, _, test = _split(5, n=1500, n_test=300)
    X, P = d.X[:1500] * 10 + 3, d.teacher_proba[:1500]
    frozen = FrozenEstimator(TeacherCalibrator().fit(P[cal], d.y[:1500][cal]))
    # 1) without routing: step__param names
    pipe = make_pipeline(StandardScaler(), SLaMClassifier(calibrator=frozen, max_epochs=3, random_state=0))
    pipe.fit(X, y, slamclassifier__teacher_proba=P)
    assert pipe.score(d.X[test] * 10 + 3, d.y[test]) > 0.3
    # 2) with metadata routing: teacher_proba requested by the classifier
    with config_context(enable_metadata_routing=True):
        clf = SLaMClassifier(max_epochs=3, random_state=0).set_fit_request(teacher_proba=True,
                                                                          calibration_mask=True)
        pipe2 = make_pipeline(StandardScaler(), clf)
        pipe2.fit(X, y, teacher_proba=P, calibration_mask=cal)
        assert pipe2.predict(X).shape == (1500,)


def test_grid_search_and_cross_validate_reuse_a_frozen_calibrator():
    d, y, cal, _, _ = _split(6, n=1200, n_test=10)
    X, P = d.X[:1200], d.teacher_proba[:1200]
    calibrator = TeacherCalibrator().fit(P[cal], d.y[:1200][cal])
    frozen = FrozenEstimator(calibrator)
    fingerprint = calibrator.alpha_steps_.knots.copy()
    est = SLaMClassifier(calibrator=frozen, max_epochs=2, random_state=0)
    grid = GridSearchCV(est, {"lr": [1e-3, 1e-2], "module__hidden_layer_sizes": [(16,), (32,)]}, cv=2)
    grid.fit(X, y, teacher_proba=P)
    assert grid.best_estimator_.calibrator_ is frozen  # the very object, never refit
    np.testing.assert_array_equal(calibrator.alpha_steps_.knots, fingerprint)
    assert grid.best_params_["module__hidden_layer_sizes"] in [(16,), (32,)]
    res = cross_validate(est, X, y, params={"teacher_proba": P}, cv=3)
    # score() leaves out teacher rows, so the folds are scored on true labels only
    assert np.all((res["test_score"] >= 0) & (res["test_score"] <= 1))


def test_params_clone_and_pickle():
    d, y, cal, _, _ = _split(7, n=800, n_test=10)
    X, P = d.X[:800], d.teacher_proba[:800]
    clf = SLaMClassifier(max_epochs=2, random_state=0, module__hidden_layer_sizes=(20, 10), module__dropout=0.1)
    assert clf.get_params()["module__hidden_layer_sizes"] == (20, 10)
    clf.set_params(module__hidden_layer_sizes=(24,), lr=0.01)
    assert clf.module__hidden_layer_sizes == (24,) and clf.lr == 0.01
    twin = clone(clf)
    assert twin.get_params() == clf.get_params()
    clf.fit(X, y, teacher_proba=P, calibration_mask=cal)
    assert clf.module_.body[0].out_features == 24
    restored = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(restored.predict_proba(X), clf.predict_proba(X))
    assert len(clf.history_) == 2 and {"epoch", "train_loss", "lr", "seconds"} <= set(clf.history_[0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_trained_model_pickles_to_cpu():
    d, y, cal, _, _ = _split(8, n=800, n_test=10)
    clf = SLaMClassifier(max_epochs=2, device="cuda", random_state=0)
    clf.fit(d.X[:800], y, teacher_proba=d.teacher_proba[:800], calibration_mask=cal)
    blob = pickle.dumps(clf)
    restored = pickle.loads(blob)
    assert all(p.device.type == "cpu" for p in restored.module_.parameters())
    restored.device = "cpu"
    np.testing.assert_allclose(restored.predict_proba(d.X[:50]), clf.predict_proba(d.X[:50]), atol=1e-5)


def test_pretraining_warm_start_early_stopping_and_progress(capsys):
    d, y, cal, _, _ = _split(9, n=1500, n_test=10)
    X, P = d.X[:1500], d.teacher_proba[:1500]
    clf = SLaMClassifier(max_epochs=3, pretrain_epochs=2, random_state=0, verbose=1)
    clf.fit(X, y, teacher_proba=P, calibration_mask=cal)
    assert [h["phase"] for h in clf.history_] == ["pretrain"] * 2 + ["train"] * 3
    assert "train" in capsys.readouterr().err  # the tqdm bar
    # warm start continues from the current weights (e.g. pre-trained on A)
    labeled = y != -1
    warm = SLaMClassifier(max_epochs=2, warm_start=True, random_state=0).fit(X[labeled], y[labeled])
    w0 = warm.module_.head.weight.detach().clone()
    warm.fit(X, y, teacher_proba=P, calibration_mask=cal)
    assert len(warm.history_) == 4 and not torch.equal(w0, warm.module_.head.weight)
    es = SLaMClassifier(max_epochs=200, early_stopping=True, n_iter_no_change=3, lr=0.05, random_state=0)
    es.fit(X, y, teacher_proba=P, calibration_mask=cal)
    assert len(es.history_) < 200 and "valid_accuracy" in es.history_[-1]


class _NaNAfter(nn.Module):
    def __init__(self, n_features, n_classes):
        super().__init__()
        self.lin = nn.Linear(n_features, n_classes)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        out = self.lin(x)
        return out * float("nan") if self.calls > 5 else out


def test_nan_loss_names_epoch_and_batch():
    d, y, cal, _, _ = _split(10, n=1000, n_test=10)
    clf = SLaMClassifier(student=_NaNAfter, max_epochs=3, batch_size=100, random_state=0)
    with pytest.raises(FloatingPointError, match="epoch 1, batch 6"):
        clf.fit(d.X[:1000], y, teacher_proba=d.teacher_proba[:1000], calibration_mask=cal)


def test_hard_distillation_and_normalised_mixing_train():
    d, y, cal, _, test = _split(11, n=1500, n_test=300)
    for kw in ({"distillation": "hard"}, {"normalize_mix": True}):
        clf = SLaMClassifier(max_epochs=5, random_state=0, **kw)
        clf.fit(d.X[:1500], y, teacher_proba=d.teacher_proba[:1500], calibration_mask=cal)
        assert clf.score(d.X[test], d.y[test]) > 0.4


def _bad(**overrides):
    d, y, cal, _, _ = _split(12, n=300, n_test=10, n_a=50, n_v=100)
    args = dict(X=d.X[:300], y=y, teacher_proba=d.teacher_proba[:300], calibration_mask=cal)
    args.update(overrides)
    return args


@pytest.mark.parametrize(
    "params, fit_overrides, error, match",
    [
        ({}, {"teacher_proba": None}, ValueError, "marks .* rows as teacher rows .* teacher_proba was not given"),
        ({}, {"teacher_proba": np.full((299, 10), 0.1)}, ValueError, r"teacher_proba must be a 2-D array of shape \(n_samples=300"),
        ({}, {"teacher_proba": np.full((300, 10), 0.5)}, ValueError, "rows of teacher_proba .* must sum to 1"),
        ({}, {"y": np.r_[np.full(299, -1), 12]}, ValueError, r"labels in y must be column indices of teacher_proba"),
        ({"student": "resnet"}, {}, ValueError, "student must be one of"),
        ({}, {"calibration_mask": None}, ValueError, "SLaM needs alpha\\(x\\) and k\\(x\\)"),
        ({}, {"calibration_mask": np.ones(300, dtype=bool)}, ValueError, "calibration_mask must only mark labeled rows"),
        ({}, {"calibration_mask": None, "alpha": np.full(300, 1.5)}, ValueError, r"alpha must hold numbers in \[0, 1\]"),
        ({}, {"calibration_mask": None, "alpha": np.full(300, 0.5)}, ValueError, "k is required with alpha"),
        ({"method": "magic"}, {}, ValueError, "method must be one of"),
        ({"batch_size": 0}, {}, ValueError, "batch_size must be a positive int"),
        ({"device": "tpu"}, {}, RuntimeError, "tpu"),
        ({"module__widht": 3}, {}, TypeError, "could not build the student"),
        ({"hidden": 3}, {}, TypeError, "unexpected parameters"),
    ],
)
def test_bad_input_raises_named_errors(params, fit_overrides, error, match):
    args = _bad(**fit_overrides)
    with pytest.raises(error, match=match):
        SLaMClassifier(max_epochs=1, **params).fit(args.pop("X"), args.pop("y"), **args)


def test_score_leaves_out_teacher_rows():
    d, y, cal, _, _ = _split(13, n=800, n_test=10)
    clf = SLaMClassifier(max_epochs=2, random_state=0).fit(d.X[:800], y, teacher_proba=d.teacher_proba[:800],
                                                           calibration_mask=cal)
    keep = y != -1
    assert clf.score(d.X[:800], y) == pytest.approx(clf.score(d.X[:800][keep], y[keep]))


# -- scikit-learn's estimator checks (plain supervised use: no teacher rows) ---
_EXPECTED = {
    "check_sample_weight_equivalence_on_dense_data": (
        "mini-batch training: repeating a row changes the batches, so weights match repetition only in expectation"),
    "check_classifiers_classes": "-1 marks teacher rows (scikit-learn's semi-supervised convention), not a class",
    "check_methods_subset_invariance": (
        "float32 matrix products depend on the batch (BLAS blocking), differing at the 1e-7 level"),
    "check_do_not_raise_errors_in_init_or_set_params": (
        "the check sets the **module_params catch-all by name; set_params keeps rejecting unknown names "
        "(module__* names are accepted)"),
}


@parametrize_with_checks([SLaMClassifier(max_epochs=30, lr=0.02, batch_size=64, random_state=0, device="cpu")],
                         expected_failed_checks=lambda est: _EXPECTED)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)
