"""SLaMClassifier: a scikit-learn classifier trained by SLaM distillation.

Rows with a true label are trained with cross entropy; rows labeled ``-1``
(scikit-learn's semi-supervised convention) carry the teacher's label in
``teacher_proba`` and are trained on the SLaM loss, in one objective
(Equation 2 of the SLaM paper). alpha(x) and k(x) come from a
:class:`~slamlearn.TeacherCalibrator` (fitted, or fitted here on labeled rows
the teacher never saw: Algorithm 1 in one call) or from the caller.

The paper's baselines and combinations are selected through the same
estimator (``method``, ``base_loss``, temperatures, fidelity weights, VID), so
a comparison of methods is one loop over parameter settings.
"""

from __future__ import annotations

import copy
import numbers
import os

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from . import margins
from ._objective import BatchObjective, ObjectiveConfig, RowStore, prepare_batch, raw_importance
from ._training import BatchPlan, Checkpoint, TrainConfig, dist_info, resolve_device, train
from ._validation import check_proba, check_sample_weight
from .calibration import TeacherCalibrator
from .objectives import BASE_LOSSES, VIDHead, estimate_transition, fidelity_weights
from .sparse import TopKProba
from .students import build_student, logits_and_embedding

__all__ = ["SLaMClassifier"]

UNLABELED = -1

_METHODS = ("slam", "vanilla", "forward", "backward", "weighted", "ups")
#: Methods that need alpha(x), k(x) from a calibrator (or the caller).
_NEEDS_NOISE_MODEL = ("slam", "weighted")


def _seed(random_state) -> int:
    if random_state is None:
        return int(np.random.SeedSequence().generate_state(1)[0])
    if isinstance(random_state, numbers.Integral):
        return int(random_state)
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(0, 2**31 - 1))
    raise ValueError(f"random_state must be None, an int or a RandomState; got {random_state!r}")


def _float_tensor(a: np.ndarray) -> torch.Tensor:
    """float32 tensor sharing memory when possible; torch cannot share
    read-only memory (e.g. a read-only memmap), so that is copied."""
    a = np.asarray(a, dtype=np.float32)
    return torch.from_numpy(a if a.flags.writeable else a.copy())


class _TrainModule(torch.nn.Module):
    """What the optimiser trains: the student and an optional VID head, in one
    module so that DistributedDataParallel synchronises both."""

    def __init__(self, student: torch.nn.Module, vid_head: VIDHead | None = None):
        super().__init__()
        self.student = student
        self.vid_head = vid_head

    def forward(self, x: torch.Tensor, features: torch.Tensor | None = None):
        if self.vid_head is None:
            return self.student(x), None
        logits, emb = logits_and_embedding(self.student, x)
        return logits, self.vid_head(emb.flatten(1).float(), features)


class SLaMClassifier(ClassifierMixin, BaseEstimator):
    """Train a student on true labels plus a noisy teacher's labels with SLaM.

    Parameters
    ----------
    student : {"mlp", "linear", "cnn"}, nn.Module class or callable, default="mlp"
        The student network. Constructor arguments go in ``module__*``
        parameters (e.g. ``module__hidden_layer_sizes=(256,)``); ``n_features``
        / ``in_channels`` / ``n_classes`` are filled in from the data when the
        constructor takes them and they are not given.
    calibrator : TeacherCalibrator or None, default=None
        Source of alpha(x), k(x) for the teacher rows. When ``fit`` gets a
        ``calibration_mask`` it fits a clone of this (a default
        ``TeacherCalibrator()`` when None) on those rows first. Otherwise it
        must be fitted already; wrap it in
        :class:`sklearn.frozen.FrozenEstimator` to keep it fitted across
        ``clone`` (as in ``GridSearchCV`` or ``cross_validate``).
    classes : array-like or None, default=None
        Every class label, in the order of ``teacher_proba``'s columns, for
        when some are missing from ``y`` (a small labeled set). By default
        the classes are ``0 .. n_classes-1`` when ``teacher_proba`` is given
        and the labels seen in ``y`` otherwise.
    method : {"slam", "vanilla", "forward", "backward", "weighted", "ups"}, default="slam"
        How teacher rows are used (labeled rows always get the base loss):

        * ``"slam"``: the base loss on the mixed prediction (Equation 2).
        * ``"vanilla"``: the base loss on the teacher's labels (alpha = 1).
        * ``"forward"`` / ``"backward"``: forward / backward loss correction
          with a transition matrix estimated on the ``calibration_mask`` rows
          (Patrini et al. 2017), see :func:`slamlearn.objectives.estimate_transition`.
        * ``"weighted"``: weighted distillation (Iliopoulos et al. 2022):
          importance weights from the student pre-trained on the labeled rows
          and the calibrated noise model, see
          :func:`slamlearn.objectives.importance_weights`. Needs
          ``pretrain_epochs > 0`` or a warm start.
        * ``"ups"``: UPS pseudo-label selection (Rizve et al. 2021) from the
          ``teacher_uncertainty`` fit parameter, thresholds ``ups_*``.
    base_loss : {"ce", "taylor", "poly1"}, default="ce"
        Cross entropy, Taylor cross entropy of degree ``taylor_degree`` (Feng
        et al. 2020) or Poly-1 with ``poly_epsilon`` (Leng et al. 2022); with
        ``method="slam"`` it is SLaM's base loss (Appendix D.6).
    taylor_degree : int, default=2
    poly_epsilon : float, default=2.0
        Appendix D.6 of the SLaM paper uses degree 2 and epsilon 2.
    temperature_labeled, temperature_teacher : float, default=1.0
        Distillation temperatures (Hinton et al. 2015) for labeled rows and
        for teacher rows, applied to the student's logits (loss scaled by
        T^2) and to the teacher's soft labels; with SLaM the temperature is
        applied before mixing (Appendix D.5).
    fidelity_beta : float or None, default=None
        Fidelity weighting of the teacher rows, ``exp(-beta * u(x))`` from
        the ``teacher_uncertainty`` fit parameter (Dehghani et al. 2017;
        Appendix D.4, Equations 3-4); combines with every method.
    fidelity_normalize : {"total", "mean"}, default="total"
        How uncertainties are normalised first: by their total over the
        teacher rows (as the paper describes) or by their mean.
    vid_weight : float, default=0.0
        Coefficient of the VID feature-matching term (Ahn et al. 2019)
        against the ``teacher_features`` fit parameter; the student must
        expose an embedding (built-in students do).
    ups_tau_pos, ups_kappa_pos, ups_tau_neg, ups_kappa_neg : float
        UPS thresholds (defaults 0.7, 0.05, 0.05, 0.005, as in the UPS paper).
    transition_smoothing : float, default=1.0
        Pseudo-counts added to each row of the estimated transition matrix.
    importance_max_weight : float, default=10.0
        Clip of the weighted-distillation importance weights.
    normalize_mix : bool, default=False
        Use Equation 1's ``1/(k-1)`` normalisation of the mixing term. The
        default is the un-normalised mixing of Remark B.1, which the paper's
        experiments use.
    distillation : {"soft", "hard"}, default="soft"
        Train on the teacher's probabilities, or on one-hot vectors of its
        top-1 class.
    precompute_masks : bool, default=True
        Build each teacher row's top-k mask once before training (it never
        changes). False rebuilds it for every batch from the teacher's
        probabilities, trading time for memory.
    optimizer : {"adam", "adamw", "sgd"} or torch.optim.Optimizer class, default="adam"
    lr : float, default=1e-3
    weight_decay : float, default=0.0
    momentum : float, default=0.9
        Used by ``"sgd"``.
    lr_schedule : None, "cosine", "step" or callable, default=None
        Per-epoch schedule; a callable gets ``(optimizer, epochs)``.
    max_epochs : int, default=50
    batch_size : int, default=256
    pretrain_epochs : int, default=0
        Epochs of plain cross entropy on the labeled rows before the main
        phase (Algorithm 1 pre-trains the student on A). A fresh optimizer
        starts the main phase.
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the labeled rows, stop when their
        accuracy has not improved by ``tol`` for ``n_iter_no_change`` epochs,
        and keep the best weights.
    validation_fraction : float, default=0.1
    n_iter_no_change : int, default=10
    tol : float, default=1e-4
    device : {"auto", "cpu", "cuda"} or torch.device, default="auto"
        Training device. With CUDA and in-memory data, every tensor (rows,
        masks, loss) lives on the device: no host copies per step.
    precision : {"float32", "bfloat16", "float16"}, default="float32"
        Mixed precision: the student runs under ``torch.autocast`` in the
        given dtype while the SLaM loss stays in float32 (float16 also uses a
        gradient scaler).
    in_memory : bool or "auto", default="auto"
        Whether to put every row on the device before training. "auto" does
        unless ``X`` is a memory map or torch ``Dataset`` or ``teacher_proba``
        is a memory map; otherwise batches are read from the host as needed
        (pinned memory on CUDA, ``num_workers`` loader processes), so the data
        may be larger than memory.
    num_workers : int, default=0
        DataLoader worker processes for batches read from the host.
    distributed : "auto" or False, default="auto"
        Under ``torchrun`` (or an initialised default process group), train
        with DistributedDataParallel: gloo on CPU, nccl on CUDA; every rank
        takes an equal share of each global batch of ``batch_size`` rows, so
        the result matches a single-process run; all ranks end with the same
        model. See README for the multi-GPU recipe.
    checkpoint_path : str or None, default=None
        File where rank 0 saves the training state after every epoch.
    resume : bool, default=False
        Continue from ``checkpoint_path`` when it exists (same data and
        parameters); the result equals an uninterrupted run.
    random_state : int, RandomState or None, default=None
        Seeds initialisation, dropout and batch order; on CPU a fixed seed
        gives identical results.
    verbose : int, default=0
        1 shows a progress bar per training phase.
    warm_start : bool, default=False
        Continue from the current weights on the next ``fit`` (e.g. fit on A
        alone, then on everything: the paper's pre-training).
    **module_params
        ``module__<name>=value`` arguments for the student constructor.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    n_features_in_ : int
    module_ : torch.nn.Module
        The trained student (on CPU after unpickling).
    calibrator_ : TeacherCalibrator or None
        The calibrator used (None when alpha was given or without teacher rows).
    history_ : list of dict
        One record per epoch: phase, epoch, train_loss, lr, seconds and,
        with early stopping, valid_accuracy.
    teacher_alpha_, teacher_k_ : ndarray
        alpha(x) and k(x) used for the teacher rows of the last fit.
    """

    def __init__(self, student="mlp", calibrator=None, classes=None, method="slam", base_loss="ce", taylor_degree=2,
                 poly_epsilon=2.0, temperature_labeled=1.0, temperature_teacher=1.0, fidelity_beta=None,
                 fidelity_normalize="total", vid_weight=0.0, ups_tau_pos=0.7, ups_kappa_pos=0.05, ups_tau_neg=0.05,
                 ups_kappa_neg=0.005, transition_smoothing=1.0, importance_max_weight=10.0, normalize_mix=False,
                 distillation="soft", precompute_masks=True, optimizer="adam", lr=1e-3, weight_decay=0.0,
                 momentum=0.9, lr_schedule=None, max_epochs=50, batch_size=256, pretrain_epochs=0,
                 early_stopping=False, validation_fraction=0.1, n_iter_no_change=10, tol=1e-4, device="auto",
                 precision="float32", in_memory="auto", num_workers=0, distributed="auto", checkpoint_path=None,
                 resume=False, random_state=None, verbose=0, warm_start=False, **module_params):
        self.student = student
        self.calibrator = calibrator
        self.classes = classes
        self.method = method
        self.base_loss = base_loss
        self.taylor_degree = taylor_degree
        self.poly_epsilon = poly_epsilon
        self.temperature_labeled = temperature_labeled
        self.temperature_teacher = temperature_teacher
        self.fidelity_beta = fidelity_beta
        self.fidelity_normalize = fidelity_normalize
        self.vid_weight = vid_weight
        self.ups_tau_pos = ups_tau_pos
        self.ups_kappa_pos = ups_kappa_pos
        self.ups_tau_neg = ups_tau_neg
        self.ups_kappa_neg = ups_kappa_neg
        self.transition_smoothing = transition_smoothing
        self.importance_max_weight = importance_max_weight
        self.normalize_mix = normalize_mix
        self.distillation = distillation
        self.precompute_masks = precompute_masks
        self.optimizer = optimizer
        self.lr = lr
        self.weight_decay = weight_decay
        self.momentum = momentum
        self.lr_schedule = lr_schedule
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.pretrain_epochs = pretrain_epochs
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.device = device
        self.precision = precision
        self.in_memory = in_memory
        self.num_workers = num_workers
        self.distributed = distributed
        self.checkpoint_path = checkpoint_path
        self.resume = resume
        self.random_state = random_state
        self.verbose = verbose
        self.warm_start = warm_start
        # Stored as given; fit() rejects names without the module__ prefix
        # (scikit-learn estimators do no validation in __init__).
        for name, value in module_params.items():
            setattr(self, name, value)

    # -- parameters: the module__* ones are dynamic, as in skorch ------------------
    def _module_param_names(self) -> list[str]:
        return sorted(k for k in vars(self) if k.startswith("module__"))

    def _unknown_param_names(self) -> list[str]:
        known = set(self._get_param_names())
        return sorted(k for k in vars(self) if not k.endswith("_") and not k.startswith(("module__", "_"))
                      and k not in known)

    def get_params(self, deep=True):
        params = super().get_params(deep=deep)
        for name in self._module_param_names():
            params[name] = getattr(self, name)
        return params

    def set_params(self, **params):
        module_params = {k: v for k, v in params.items() if k.startswith("module__")}
        for name, value in module_params.items():
            setattr(self, name, value)
        rest = {k: v for k, v in params.items() if k not in module_params}
        return super().set_params(**rest) if rest else self

    def _module_kwargs(self) -> dict:
        return {k[len("module__"):]: getattr(self, k) for k in self._module_param_names()}

    # -- validation ---------------------------------------------------------------
    def _check_params(self):
        unknown = self._unknown_param_names()
        if unknown:
            raise TypeError(f"SLaMClassifier got unexpected parameters {unknown} (student constructor arguments "
                            "take the prefix 'module__')")
        if self.method not in _METHODS:
            raise ValueError(f"method must be one of {_METHODS}; got {self.method!r}")
        if self.base_loss not in BASE_LOSSES:
            raise ValueError(f"base_loss must be one of {BASE_LOSSES}; got {self.base_loss!r}")
        for name in ("temperature_labeled", "temperature_teacher"):
            v = getattr(self, name)
            if not isinstance(v, numbers.Real) or not v > 0:
                raise ValueError(f"{name} must be a positive number; got {v!r}")
        if not isinstance(self.vid_weight, numbers.Real) or self.vid_weight < 0:
            raise ValueError(f"vid_weight must be a non-negative number; got {self.vid_weight!r}")
        if self.distillation not in ("soft", "hard"):
            raise ValueError(f"distillation must be 'soft' or 'hard'; got {self.distillation!r}")
        for name in ("max_epochs", "pretrain_epochs"):
            v = getattr(self, name)
            if not isinstance(v, numbers.Integral) or v < 0:
                raise ValueError(f"{name} must be a non-negative int; got {v!r}")
        for name in ("batch_size", "n_iter_no_change"):
            v = getattr(self, name)
            if not isinstance(v, numbers.Integral) or v < 1:
                raise ValueError(f"{name} must be a positive int; got {v!r}")
        if self.precision not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"precision must be 'float32', 'bfloat16' or 'float16'; got {self.precision!r}")
        if self.in_memory not in (True, False, "auto"):
            raise ValueError(f"in_memory must be True, False or 'auto'; got {self.in_memory!r}")
        if self.distributed not in ("auto", False):
            raise ValueError(f"distributed must be 'auto' or False; got {self.distributed!r}")
        if not isinstance(self.num_workers, numbers.Integral) or self.num_workers < 0:
            raise ValueError(f"num_workers must be a non-negative int; got {self.num_workers!r}")
        if self.resume and self.checkpoint_path is None:
            raise ValueError("resume=True needs checkpoint_path")
        if not 0.0 < self.validation_fraction < 1.0:
            raise ValueError(f"validation_fraction must be in (0, 1); got {self.validation_fraction!r}")
        if self.calibrator is not None and not hasattr(self.calibrator, "predict_k"):
            raise ValueError("calibrator must be a TeacherCalibrator (or an object with predict and predict_k), "
                             f"got {type(self.calibrator).__name__}")

    def _validate_X(self, X, reset: bool):
        if isinstance(X, torch.utils.data.Dataset):
            if not hasattr(X, "__len__") or len(X) == 0:
                raise ValueError("X as a torch Dataset must be map-style, with a length and at least one item")
            return X  # items are checked as batches are read
        if isinstance(X, np.memmap):
            # scikit-learn's checks without a copy: the sum-based finiteness
            # test reads the map once.
            if X.ndim < 2 or X.shape[0] == 0:
                raise ValueError(f"X must have at least 2 dimensions and one row; got shape {X.shape}")
            if not reset and hasattr(self, "n_features_in_") and X.shape[1] != self.n_features_in_:
                raise ValueError(f"X has {X.shape[1]} features, but SLaMClassifier is expecting "
                                 f"{self.n_features_in_} features as input")
            for s in range(0, X.shape[0], 1 << 16):
                if not np.isfinite(np.asarray(X[s:s + (1 << 16)], dtype=np.float64).sum()):
                    raise ValueError("X contains NaN or infinity")
            if reset:
                self.n_features_in_ = X.shape[1]
            return X
        return validate_data(self, X, reset=reset, allow_nd=True, dtype=[np.float32, np.float64])

    def _labels(self, y, n: int, teacher_proba):
        """Split ``y`` into teacher rows and encoded true labels; set classes_."""
        y = column_or_1d(y, warn=True)
        if y.shape[0] != n:
            raise ValueError(f"y has {y.shape[0]} entries but X has {n} rows")
        unlabeled = (y == UNLABELED) if y.dtype.kind in "iuf" else np.zeros(n, dtype=bool)
        labeled_y = y[~unlabeled]
        if labeled_y.size:
            check_classification_targets(labeled_y)
        if teacher_proba is not None:
            shape = np.shape(teacher_proba)
            if len(shape) != 2 or shape[0] != n or shape[1] < 2:
                raise ValueError(f"teacher_proba must be a 2-D array of shape (n_samples={n}, n_classes>=2); "
                                 f"got shape {shape}")
        elif unlabeled.any():
            raise ValueError(f"y marks {int(unlabeled.sum())} rows as teacher rows (-1) but teacher_proba "
                             "was not given")
        if self.classes is not None:
            classes = np.asarray(self.classes)
            if classes.ndim != 1 or classes.shape[0] < 2 or np.unique(classes).shape[0] != classes.shape[0]:
                raise ValueError(f"classes must list at least 2 distinct labels; got {self.classes!r}")
            if teacher_proba is not None and classes.shape[0] != np.shape(teacher_proba)[1]:
                raise ValueError(f"classes has {classes.shape[0]} labels but teacher_proba has "
                                 f"{np.shape(teacher_proba)[1]} columns")
            if labeled_y.size and not np.isin(labeled_y, classes).all():
                raise ValueError(f"y holds labels missing from classes: {list(np.setdiff1d(labeled_y, classes))[:3]}")
        elif teacher_proba is not None:
            n_classes = np.shape(teacher_proba)[1]
            classes = np.arange(n_classes)
            if labeled_y.size and (labeled_y.dtype.kind not in "iuf" or not np.isin(labeled_y, classes).all()):
                bad = labeled_y[~np.isin(labeled_y, classes)][:3] if labeled_y.dtype.kind in "iuf" else labeled_y[:3]
                raise ValueError(
                    f"labels in y must be column indices of teacher_proba, integers in [0, {n_classes}) "
                    f"(or -1 for teacher rows), unless classes is given; got {list(bad)}"
                )
        else:
            classes = np.unique(labeled_y)
            if classes.shape[0] < 2:
                raise ValueError(f"y must contain at least 2 classes when there are no teacher rows; "
                                 f"got {classes.shape[0]} class")
        if self.warm_start and hasattr(self, "classes_") and not np.array_equal(classes, self.classes_):
            raise ValueError("warm_start needs the same classes on every fit; got "
                             f"{list(classes)} after {list(self.classes_)}")
        # position of each label in ``classes`` (which need not be sorted)
        order = np.argsort(classes, kind="stable")
        encoded = np.full(n, UNLABELED, dtype=np.int64)
        encoded[~unlabeled] = order[np.searchsorted(classes, labeled_y, sorter=order)]
        return classes, encoded, unlabeled

    def _teacher_stats(self, chunks, n_u, y_enc, teacher_proba, calibration_mask, alpha, k, n_classes):
        """Validate the teacher rows chunk by chunk and return alpha, k for them
        (and the calibrator used). ``chunks()`` yields (positions, probabilities)."""
        needs_model = self.method in _NEEDS_NOISE_MODEL
        if not needs_model or alpha is not None:
            for _ in chunks():  # validation only
                pass
        if not needs_model:
            return np.ones(n_u), np.full(n_u, 2, dtype=np.intp), None
        if alpha is not None:
            a = np.asarray(alpha, dtype=np.float64)
            if a.shape not in ((n_u,), (y_enc.shape[0],)):
                raise ValueError(f"alpha must have one entry per teacher row ({n_u}) or per row ({y_enc.shape[0]}); "
                                 f"got shape {a.shape}")
            if a.shape[0] != n_u:
                a = a[y_enc == UNLABELED]
            if not (np.isfinite(a).all() and (a >= 0).all() and (a <= 1).all()):
                raise ValueError("alpha must hold numbers in [0, 1]")
            if k is None:
                if n_classes > 2:
                    raise ValueError("k is required with alpha when there are more than 2 classes")
                kk = np.full(n_u, 2, dtype=np.intp)
            else:
                kk = np.asarray(k)
                if kk.ndim == 0:
                    kk = np.full(n_u, int(kk), dtype=np.intp)
                elif kk.shape[0] == y_enc.shape[0] and kk.shape[0] != n_u:
                    kk = kk[y_enc == UNLABELED]
                if kk.shape != (n_u,) or kk.dtype.kind not in "iu":
                    raise ValueError(f"k must be an int or integers with one entry per teacher row ({n_u})")
                if (kk < 2).any() or (kk > n_classes).any():
                    raise ValueError(f"k must be between 2 and the number of classes ({n_classes})")
                kk = kk.astype(np.intp)
            return a, kk, None
        cal = self.calibrator if self.calibrator is not None else TeacherCalibrator()
        if calibration_mask is not None:
            cm = self._calibration_rows(calibration_mask, y_enc)
            cal_p = teacher_proba[cm]
            if not isinstance(cal_p, TopKProba):
                cal_p = check_proba(np.asarray(cal_p), name="teacher_proba (calibration rows)")
            cal = clone(cal).fit(cal_p, y_enc[cm])
        else:
            try:
                check_is_fitted(cal)
            except Exception:
                raise ValueError(
                    "SLaM needs alpha(x) and k(x) for the teacher rows: pass calibration_mask to fit() to calibrate "
                    "on labeled rows the teacher never saw, give calibrator a fitted TeacherCalibrator (wrapped in "
                    "sklearn.frozen.FrozenEstimator to survive clone), or pass alpha= and k= to fit()"
                ) from None
        a = np.empty(n_u)
        kk = np.empty(n_u, dtype=np.intp)
        for pos, proba in chunks():
            a[pos], kk[pos] = cal.predict(proba), cal.predict_k(proba)
        return a, kk, cal

    @staticmethod
    def _calibration_rows(calibration_mask, y_enc) -> np.ndarray:
        cm = np.asarray(calibration_mask)
        if cm.dtype != bool or cm.shape != y_enc.shape:
            raise ValueError(f"calibration_mask must be a boolean array with one entry per row "
                             f"({y_enc.shape[0]}); got dtype {cm.dtype}, shape {cm.shape}")
        if (y_enc[cm] == UNLABELED).any():
            raise ValueError("calibration_mask must only mark labeled rows (y != -1): the calibrator needs "
                             "their true labels")
        if cm.sum() < 2:
            raise ValueError("calibration_mask must mark at least 2 labeled rows")
        return cm

    def _in_memory(self, X, teacher_proba) -> bool:
        if self.in_memory != "auto":
            return bool(self.in_memory)
        return not (isinstance(X, (torch.utils.data.Dataset, np.memmap))
                    or isinstance(teacher_proba, (np.memmap, TopKProba)))

    # -- fitting ------------------------------------------------------------------
    def fit(self, X, y, teacher_proba=None, sample_weight=None, calibration_mask=None, alpha=None, k=None,
            teacher_uncertainty=None, teacher_features=None):
        """Train the student.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...), memory map or torch Dataset
            Features (2-D for "linear"/"mlp"; any shape a custom student
            takes). A ``np.memmap`` or a ``torch.utils.data.Dataset`` (items:
            feature tensors, or tuples starting with one) is read batch by
            batch, never whole.
        y : array-like of shape (n_samples,)
            True labels, or ``-1`` for rows labeled by the teacher.
        teacher_proba : array-like, memory map or TopKProba, shape (n_samples, n_classes), optional
            The teacher's probabilities. Required when some ``y`` is -1; only
            teacher rows and calibration rows are read (other rows may hold
            anything). Column ``j`` is class ``j``. A :class:`TopKProba`
            (only the top-m probabilities per row) is used directly, with its
            missing-mass rule; with m = n_classes it gives the dense result.
        sample_weight : array-like of shape (n_samples,), optional
        calibration_mask : array-like of bool, shape (n_samples,), optional
            Labeled rows that have teacher probabilities and that the teacher
            never trained on; the calibrator (and, for ``forward`` /
            ``backward``, the transition matrix) is fitted on them first.
        alpha, k : array-like, optional
            Precomputed alpha(x) (and k(x)) for the teacher rows, instead of a
            calibrator; one entry per teacher row or per row.
        teacher_uncertainty : array-like of shape (n_samples,) or (n_samples, n_classes), optional
            The teacher's uncertainty per row (or per row and class), e.g. the
            variance of its probabilities over augmentations or MC dropout;
            used by ``fidelity_beta`` and ``method="ups"``.
        teacher_features : array-like of shape (n_samples, n_features_teacher), optional
            The teacher's features for every row (from the bulk-inference
            pass); used by ``vid_weight > 0``.

        Returns
        -------
        self
        """
        self._check_params()
        reset = not (self.warm_start and hasattr(self, "module_"))
        in_memory = self._in_memory(X, teacher_proba)
        X = self._validate_X(X, reset=reset)
        n = len(X)
        classes, y_enc, unlabeled = self._labels(y, n, teacher_proba)
        L = classes.shape[0]
        w = check_sample_weight(sample_weight, n)
        idx_u = np.flatnonzero(unlabeled)
        idx_l = np.flatnonzero(~unlabeled)
        method = self.method
        if idx_u.size == 0 and method not in ("slam", "vanilla"):
            raise ValueError(f"method={method!r} needs teacher rows (y == -1)")
        device = resolve_device(self.device)
        dist = dist_info(self.distributed, device)
        if dist.active and device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", dist.rank)) % torch.cuda.device_count())

        # Teacher rows, validated and calibrated chunk by chunk (bounded memory).
        chunk = max(1, (64 * 2**20) // (8 * max(L, 1)))

        def teacher_chunks():
            for s in range(0, idx_u.size, chunk):
                rows = idx_u[s:s + chunk]
                part = teacher_proba[rows]
                if not isinstance(part, TopKProba):  # a TopKProba is validated when built
                    part = check_proba(np.asarray(part), name="teacher_proba (teacher rows)")
                yield slice(s, s + rows.size), part

        self.calibrator_ = None
        if idx_u.size:
            a_u, k_u, self.calibrator_ = self._teacher_stats(teacher_chunks, idx_u.size, y_enc, teacher_proba,
                                                            calibration_mask, alpha, k, L)
        else:
            a_u, k_u = np.zeros(0), np.zeros(0, dtype=np.intp)
        self.teacher_alpha_, self.teacher_k_ = a_u, k_u

        mixes = method == "slam"
        alpha_all = np.ones(n, dtype=np.float32)
        if mixes or method == "weighted":
            alpha_all[idx_u] = a_u
        k_all = np.full(n, 2, dtype=np.int64)
        k_all[idx_u] = k_u
        weight = None
        if w is not None or (self.fidelity_beta is not None and idx_u.size):
            weight = np.ones(n, dtype=np.float32) if w is None else w.astype(np.float32)
            if self.fidelity_beta is not None and idx_u.size:
                u = self._row_array(teacher_uncertainty, "teacher_uncertainty", n, "fidelity_beta")
                weight[idx_u] *= fidelity_weights(np.asarray(u[idx_u]), float(self.fidelity_beta),
                                                  normalize=self.fidelity_normalize)
        uncertainty = features = None
        if method == "ups":
            uncertainty = self._row_array(teacher_uncertainty, "teacher_uncertainty", n, "method='ups'")
            if uncertainty.ndim == 2 and uncertainty.shape[1] != L:
                raise ValueError(f"teacher_uncertainty must have shape (n_samples,) or (n_samples, {L})")
        if self.vid_weight > 0:
            features = self._row_array(teacher_features, "teacher_features", n, "vid_weight > 0", ndim=2)

        cfg = ObjectiveConfig(method=method, n_classes=L, base=self.base_loss,
                              base_kw={"degree": int(self.taylor_degree), "epsilon": float(self.poly_epsilon)},
                              normalize=bool(self.normalize_mix) and method in ("slam", "weighted"),
                              distillation=self.distillation,
                              temperature_labeled=float(self.temperature_labeled),
                              temperature_teacher=float(self.temperature_teacher), vid_weight=float(self.vid_weight),
                              ups=dict(tau_pos=self.ups_tau_pos, kappa_pos=self.ups_kappa_pos,
                                       tau_neg=self.ups_tau_neg, kappa_neg=self.ups_kappa_neg),
                              importance_max_weight=float(self.importance_max_weight))
        if method in ("forward", "backward"):
            T = self._transition(teacher_proba, y_enc, calibration_mask, L)
            self.transition_ = T
            if method == "forward":
                cfg.transition = torch.as_tensor(T, dtype=torch.float32, device=device)
            else:
                cfg.transition_inv = torch.as_tensor(np.linalg.inv(T), dtype=torch.float32, device=device)

        store = self._row_store(X, y_enc, idx_u, teacher_proba, alpha_all, k_all, weight, uncertainty, features,
                                L, in_memory, device, mixes or method == "weighted")

        # Early stopping holds out labeled rows.
        seed = _seed(self.random_state)
        rng = np.random.default_rng(seed)
        train_rows = np.arange(n)
        holdout = None
        if self.early_stopping:
            n_hold = int(round(self.validation_fraction * idx_l.size))
            if n_hold < 1 or n_hold >= idx_l.size:
                raise ValueError(f"early_stopping needs labeled rows to hold out: validation_fraction="
                                 f"{self.validation_fraction} of {idx_l.size} labeled rows leaves none to hold out "
                                 "or none to train on")
            hold = np.sort(rng.choice(idx_l, size=n_hold, replace=False))
            train_rows = np.setdiff1d(train_rows, hold)
            held = store.take(hold).to(device)
            holdout = (held.X, held.labels)
        labeled_rows = np.intersect1d(train_rows, idx_l)

        checkpoint = None if self.checkpoint_path is None else Checkpoint(str(self.checkpoint_path),
                                                                            resume=bool(self.resume))
        saved = checkpoint.load() if checkpoint is not None else None

        # Seed initialisation and dropout without touching the caller's global RNG state.
        cuda_devices = [device.index if device.index is not None else torch.cuda.current_device()] \
            if device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda_devices):
            torch.manual_seed(seed)
            if reset or not hasattr(self, "module_"):
                shape = tuple(X.shape[1:]) if hasattr(X, "shape") else tuple(store.take(np.arange(1)).X.shape[1:])
                self.module_ = build_student(self.student, shape, L, self._module_kwargs())
                self.history_ = []
            self.module_.to(device)
            self.classes_ = classes
            autocast = self._autocast(device)
            common = dict(batch_size=int(self.batch_size), optimizer=self.optimizer, lr=float(self.lr),
                          weight_decay=float(self.weight_decay), momentum=float(self.momentum),
                          n_iter_no_change=int(self.n_iter_no_change), tol=float(self.tol),
                          verbose=int(self.verbose), seed=seed, num_workers=int(self.num_workers),
                          pin_memory=device.type == "cuda" and not in_memory,
                          grad_scaler=self.precision == "float16", history=self.history_)

            def row_loss_for(objective):
                def row_loss(model, batch):
                    return objective(model, prepare_batch(batch, objective.cfg))
                return row_loss

            pretrained = not reset
            skip_pretrain = saved is not None and saved["phase"] == "train"
            if self.pretrain_epochs and reset and labeled_rows.size and not skip_pretrain:
                plain = ObjectiveConfig(method="vanilla", n_classes=L, base=cfg.base, base_kw=cfg.base_kw,
                                        temperature_labeled=cfg.temperature_labeled)
                trainable = _TrainModule(self.module_).to(device)
                train(self.module_, trainable, BatchPlan(labeled_rows, self.batch_size, seed, dist), store.take,
                      row_loss_for(BatchObjective(plain, autocast)),
                      TrainConfig(epochs=int(self.pretrain_epochs), lr_schedule=None, phase="pretrain", **common),
                      device=device, dist=dist, holdout=holdout, checkpoint=checkpoint,
                      resume_state=saved if saved is not None and saved["phase"] == "pretrain" else None)
                pretrained = True
            elif skip_pretrain:
                pretrained = True
            if method == "weighted" and idx_u.size:
                if not pretrained:
                    raise ValueError("method='weighted' needs a student pre-trained on the labeled rows: set "
                                     "pretrain_epochs > 0, or fit on them first and refit with warm_start=True")
                reference = copy.deepcopy(self.module_).eval()
                if skip_pretrain:
                    reference.load_state_dict(saved["reference"])
                for p in reference.parameters():
                    p.requires_grad_(False)
                cfg.reference = reference
                cfg.importance_scale = self._importance_scale(store, idx_u, cfg, device)
            head = None
            if self.vid_weight > 0:
                with torch.no_grad():
                    _, e = logits_and_embedding(self.module_, store.take(np.arange(1)).X.to(device))
                head = VIDHead(e.flatten(1).shape[1], features.shape[1])
            trainable = _TrainModule(self.module_, head).to(device)
            self.vid_head_ = head
            extra = None if cfg.reference is None else (lambda: {"reference": cfg.reference.state_dict()})
            train(self.module_, trainable, BatchPlan(train_rows, self.batch_size, seed, dist), store.take,
                  row_loss_for(BatchObjective(cfg, autocast)),
                  TrainConfig(epochs=int(self.max_epochs), lr_schedule=self.lr_schedule, phase="train", **common),
                  device=device, dist=dist, holdout=holdout, checkpoint=checkpoint,
                  resume_state=saved if skip_pretrain else None, extra_state=extra)
        self.module_.eval()
        return self

    def _row_store(self, X, y_enc, idx_u, teacher_proba, alpha_all, k_all, weight, uncertainty, features, L,
                   in_memory, device, needs_mask) -> RowStore:
        """Per-row inputs: tensors on the device, or host arrays read per batch."""
        n = len(y_enc)
        if not in_memory:
            return RowStore(X=X, labels=y_enc, alpha=alpha_all, k=k_all, n_classes=L,
                            teacher=None if idx_u.size == 0 else teacher_proba,
                            weight=weight, uncertainty=uncertainty, features=features)
        teacher = mask = None
        if idx_u.size:
            dense = np.zeros((n, L), dtype=np.float32)
            rows = teacher_proba[idx_u]
            dense[idx_u] = rows.to_dense() if isinstance(rows, TopKProba) else np.asarray(rows, dtype=np.float32)
            teacher = torch.from_numpy(dense).to(device)
            if needs_mask and self.precompute_masks:
                # Each teacher row's top-k mask never changes: build it once.
                mask_np = np.zeros((n, L), dtype=bool)
                mask_np[idx_u] = margins.topk_mask(dense[idx_u], k_all[idx_u].astype(np.intp))
                mask = torch.from_numpy(mask_np).to(device)

        def dev(a, dtype=None):
            return None if a is None else torch.as_tensor(np.asarray(a), dtype=dtype).to(device)

        return RowStore(X=_float_tensor(X).to(device), labels=dev(y_enc), alpha=dev(alpha_all), k=dev(k_all),
                        teacher=teacher, mask=mask, weight=dev(weight), uncertainty=dev(uncertainty, torch.float32),
                        features=dev(features, torch.float32), n_classes=L)

    def _importance_scale(self, store: RowStore, idx_u, cfg: ObjectiveConfig, device) -> float:
        """Global factor that keeps the teacher rows' total label mass under the
        importance weights (one pass over the teacher rows)."""
        mass = weighted = 0.0
        for s in range(0, idx_u.size, 4096):
            batch = store.take(idx_u[s:s + 4096]).to(device)
            plain = ObjectiveConfig(method="slam", n_classes=cfg.n_classes, distillation=cfg.distillation,
                                    temperature_teacher=cfg.temperature_teacher, base_kw=cfg.base_kw)
            batch = prepare_batch(batch, plain)
            beta = raw_importance(cfg.reference, batch, cfg, batch.target)
            mass += float(batch.target.sum())
            weighted += float((batch.target * beta).sum())
        return mass / weighted if weighted > 0 else 1.0

    def _autocast(self, device: torch.device) -> dict | None:
        if self.precision == "float32":
            return None
        dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}[self.precision]
        return {"device_type": device.type, "dtype": dtype}

    @staticmethod
    def _row_array(value, name: str, n: int, needed_by: str, ndim: int | None = None):
        """A per-row input (memory maps stay memory maps; checked by chunks)."""
        if value is None:
            raise ValueError(f"{needed_by} needs the fit parameter {name}")
        arr = value if isinstance(value, np.memmap) else np.asarray(value, dtype=np.float32)
        if arr.ndim not in ((1, 2) if ndim is None else (ndim,)) or arr.shape[0] != n:
            raise ValueError(f"{name} must have one row per sample ({n}); got shape {arr.shape}")
        for s in range(0, n, 1 << 16):
            part = np.asarray(arr[s:s + (1 << 16)], dtype=np.float64)
            if not np.isfinite(part).all():
                raise ValueError(f"{name} contains NaN or infinity")
        return arr

    def _transition(self, teacher_proba, y_enc, calibration_mask, L):
        if calibration_mask is None:
            raise ValueError(f"method={self.method!r} estimates the teacher's transition matrix on labeled rows "
                             "the teacher never saw: pass calibration_mask")
        cm = self._calibration_rows(calibration_mask, y_enc)
        part = teacher_proba[cm]
        proba_v = part.to_dense() if isinstance(part, TopKProba) else \
            check_proba(np.asarray(part), name="teacher_proba (calibration rows)")
        T = estimate_transition(proba_v, y_enc[cm], L, smoothing=float(self.transition_smoothing),
                                hard=self.distillation == "hard")
        if self.method == "backward" and np.linalg.cond(T) > 1e8:
            raise ValueError("the estimated transition matrix is singular, so backward correction is undefined; "
                             "raise transition_smoothing or use method='forward'")
        return T

    # -- prediction -----------------------------------------------------------------
    def _logits(self, X) -> torch.Tensor:
        check_is_fitted(self, "module_")
        X = self._validate_X(X, reset=False)
        try:
            device = resolve_device(self.device)
        except ValueError:  # e.g. a model trained on a GPU, unpickled on a CPU-only machine
            device = torch.device("cpu")
        self.module_.to(device)
        self.module_.eval()
        out = []
        step = max(int(self.batch_size) * 8, 1024)
        store = RowStore(X=X, labels=np.zeros(len(X), dtype=np.int64), alpha=None, k=None)
        with torch.no_grad():
            for s in range(0, len(X), step):
                xb = store._features(np.arange(s, min(s + step, len(X)))).to(device)
                out.append(self.module_(xb).float().cpu())
        return torch.cat(out) if out else torch.zeros(0, self.classes_.shape[0])

    def predict_proba(self, X) -> np.ndarray:
        """Student class probabilities, shape (n_samples, n_classes)."""
        return torch.softmax(self._logits(X), dim=1).double().numpy()

    def predict(self, X) -> np.ndarray:
        """Most probable class of each row."""
        best = self._logits(X).argmax(1).numpy()
        return self.classes_[best]

    def score(self, X, y, sample_weight=None) -> float:
        """Accuracy on the rows with a true label (rows with ``y == -1`` are
        teacher rows and are left out)."""
        y = column_or_1d(y)
        keep = ~(y == UNLABELED) if y.dtype.kind in "iuf" else np.ones(y.shape[0], dtype=bool)
        if not keep.any():
            raise ValueError("score needs rows with true labels; every y is -1")
        X = np.asarray(X)[keep] if not hasattr(X, "iloc") else X.iloc[keep]
        sw = None if sample_weight is None else np.asarray(sample_weight)[keep]
        return super().score(X, y[keep], sample_weight=sw)

    # -- pickling: always CPU tensors so a GPU-trained model loads anywhere ----------
    def __getstate__(self):
        state = dict(super().__getstate__())
        for name in ("module_", "vid_head_"):
            module = state.get(name)
            if module is not None and any(p.device.type != "cpu" for p in module.parameters()):
                state[name] = copy.deepcopy(module).to("cpu")
        return state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = self.random_state is None
        return tags
