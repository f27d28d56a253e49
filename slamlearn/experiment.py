"""The paper's comparison (Section 4.1 protocol) as a reusable experiment.

For each labeled fraction and trial: draw the labeled set A, a validation set
V the teacher never sees and the unlabeled rest U from the training pool;
train the teacher on A; pre-train the student on A; label U with the teacher;
calibrate alpha(x), k(x) on V with the calibrator's hyper-parameters chosen by
cross-validation on V (never on the test set); then train the student with
every method on A + V + U, starting from the pre-trained weights, and record
test accuracy.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import GridSearchCV, KFold, train_test_split
from sklearn.preprocessing import StandardScaler

from .calibration import TeacherCalibrator
from .classifier import SLaMClassifier
from .data import Dataset

__all__ = ["METHODS", "ExperimentConfig", "Record", "run_experiment", "summarize"]

#: The methods the experiment can compare, as SLaMClassifier parameters.
METHODS: dict[str, dict] = {
    "vanilla": dict(method="vanilla"),
    "taylor-ce": dict(method="vanilla", base_loss="taylor", taylor_degree=2),
    "poly1": dict(method="vanilla", base_loss="poly1", poly_epsilon=2.0),
    "forward": dict(method="forward"),
    "backward": dict(method="backward"),
    "weighted": dict(method="weighted"),
    "fidelity": dict(method="vanilla", fidelity_beta=1.0, fidelity_normalize="mean"),
    "ups": dict(method="ups"),
    "vid": dict(method="vanilla", vid_weight=1.0),
    "slam+fidelity": dict(method="slam", fidelity_beta=1.0, fidelity_normalize="mean"),
    "slam": dict(method="slam"),
}


@dataclass
class ExperimentConfig:
    """Settings of :func:`run_experiment` (defaults follow the reference runs)."""

    fractions: tuple = (0.05, 0.1)
    sizes: tuple | None = None  # labeled-set sizes; overrides fractions when given
    trials: int = 3
    methods: tuple = tuple(METHODS)
    n_val: int = 500
    max_unlabeled: int | None = None
    teacher_hidden: tuple = (512,)
    teacher_dropout: float = 0.0
    teacher_epochs: int = 300
    standardize: bool = True
    student: str = "mlp"
    student_hidden: tuple = (128,)
    student_epochs: int = 60
    pretrain_epochs: int = 20
    distillation: str = "soft"
    batch_size: int = 256
    lr: float = 1e-3
    mc_passes: int = 10
    mc_noise: float = 0.1
    # The paper's ranges: lower bounds 0.5-0.7 (Appendix D.1) and high top-k
    # thresholds ("larger thresholds ... 90% or 95%, is better", Appendix B.1).
    calibration_grid: dict = field(default_factory=lambda: {
        "lower_bound": [0.5, 0.6, 0.7], "threshold": [0.95, 0.99], "k": ["auto", "global"]})
    seed: int = 0
    device: str = "auto"


@dataclass
class Record:
    dataset: str
    fraction: float
    n_labeled: int
    trial: int
    method: str
    accuracy: float
    teacher_accuracy: float
    lower_bound: float
    threshold: float
    k_mode: str
    mean_k: float
    seconds: float


def _teacher_outputs(teacher: SLaMClassifier, X: np.ndarray, passes: int, noise: float, seed: int):
    """Probabilities, per-class variance under random input perturbations
    (Gaussian noise of scale ``noise``, and dropout if the teacher has any:
    the "random augmentations" of the paper's Appendix D.4) and embeddings."""
    proba = teacher.predict_proba(X)
    module = teacher.module_
    device = next(module.parameters()).device
    xs = torch.as_tensor(X, dtype=torch.float32)
    draws = []
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module.train()
        with torch.no_grad():
            for _ in range(passes):
                out = []
                for s in range(0, len(X), 4096):
                    xb = xs[s:s + 4096]
                    xb = xb + noise * torch.randn(xb.shape, generator=gen)
                    out.append(torch.softmax(module(xb.to(device)), 1).cpu())
                draws.append(torch.cat(out))
        module.eval()
    variance = torch.stack(draws).var(0).double().numpy() if passes > 1 else np.zeros_like(proba)
    with torch.no_grad():
        feats = torch.cat([module.embed(xs[s:s + 4096].to(device)).cpu() for s in range(0, len(X), 4096)]).numpy()
    return proba, variance, feats


def run_experiment(data: Dataset, config: ExperimentConfig, progress=None) -> tuple[list[Record], dict]:
    """Run the comparison; returns the records and, per labeled-set size, the
    first trial's fitted calibrator with its validation data (for the plots).

    ``progress`` is an optional callable receiving a short status string.
    """
    unknown = [m for m in config.methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; choose from {list(METHODS)}")
    L = data.n_classes
    X_pool, X_test = data.X_train, data.X_test
    if config.standardize:
        # Features only (no labels): the unlabeled pool is available to everyone.
        scaler = StandardScaler().fit(X_pool)
        X_pool, X_test = scaler.transform(X_pool).astype(np.float32), scaler.transform(X_test).astype(np.float32)
    records: list[Record] = []
    calibrations = {}
    n_pool = data.X_train.shape[0]
    fractions = config.fractions if config.sizes is None else tuple(s / n_pool for s in config.sizes)
    for frac in fractions:
        for trial in range(config.trials):
            seed = config.seed + 1000 * trial + int(round(frac * 1e4))
            rng = np.random.default_rng(seed)
            n_a = max(L, int(round(frac * n_pool)))
            idx_a, rest = train_test_split(np.arange(n_pool), train_size=n_a, stratify=data.y_train,
                                           random_state=seed)
            idx_v, idx_u = train_test_split(rest, train_size=config.n_val, random_state=seed)
            if config.max_unlabeled is not None and len(idx_u) > config.max_unlabeled:
                idx_u = rng.choice(idx_u, config.max_unlabeled, replace=False)
            X_a, y_a = X_pool[idx_a], data.y_train[idx_a]
            if progress:
                progress(f"{data.name} frac={frac} trial={trial}: teacher")
            teacher = SLaMClassifier(method="vanilla", student="mlp", module__hidden_layer_sizes=config.teacher_hidden,
                                     module__dropout=config.teacher_dropout, max_epochs=config.teacher_epochs,
                                     batch_size=min(config.batch_size, 64), lr=config.lr, weight_decay=1e-4,
                                     random_state=seed, device=config.device, classes=np.arange(L))
            teacher.fit(X_a, y_a)
            rows = np.concatenate([idx_a, idx_v, idx_u])
            X_tr = X_pool[rows]
            proba, variance, feats = _teacher_outputs(teacher, X_tr, config.mc_passes, config.mc_noise, seed)
            teacher_acc = float((teacher.predict(X_test) == data.y_test).mean())
            y_tr = data.y_train[rows].copy()
            n_lab = len(idx_a) + len(idx_v)
            y_tr[n_lab:] = -1
            cal_mask = np.zeros(len(rows), dtype=bool)
            cal_mask[len(idx_a):n_lab] = True

            # Calibrator hyper-parameters by cross-validation on V only.
            if progress:
                progress(f"{data.name} frac={frac} trial={trial}: calibration")
            P_v, y_v = proba[cal_mask], y_tr[cal_mask]
            cv = KFold(n_splits=5, shuffle=True, random_state=seed)
            search = GridSearchCV(TeacherCalibrator(), config.calibration_grid, cv=cv).fit(P_v, y_v)
            calibrator = search.best_estimator_
            if trial == 0:
                calibrations[n_a] = (calibrator, P_v, y_v)
            frozen = FrozenEstimator(calibrator)
            mean_k = float(calibrator.predict_k(proba[n_lab:]).mean()) if n_lab < len(rows) else float("nan")

            # Student pre-trained on A; every method starts from these weights.
            pre = SLaMClassifier(method="vanilla", student=config.student, max_epochs=config.pretrain_epochs,
                                 batch_size=min(config.batch_size, 64), lr=config.lr, random_state=seed,
                                 device=config.device, classes=np.arange(L), **_student_params(config))
            pre.fit(X_a, y_a)
            fit_params = dict(teacher_proba=proba, calibration_mask=cal_mask, teacher_uncertainty=variance,
                              teacher_features=feats)
            for name in config.methods:
                if progress:
                    progress(f"{data.name} frac={frac} trial={trial}: {name}")
                start = time.perf_counter()
                student = copy.deepcopy(pre)
                student.set_params(**{**dict(calibrator=frozen, warm_start=True, max_epochs=config.student_epochs,
                                             batch_size=config.batch_size, pretrain_epochs=0,
                                             distillation=config.distillation,
                                             method="slam", base_loss="ce", fidelity_beta=None, vid_weight=0.0),
                                      **METHODS[name]})
                student.fit(X_tr, y_tr, **fit_params)
                acc = float((student.predict(X_test) == data.y_test).mean())
                records.append(Record(data.name, frac, n_a, trial, name, acc, teacher_acc,
                                      float(calibrator.lower_bound), float(calibrator.threshold), str(calibrator.k),
                                      mean_k, time.perf_counter() - start))
    return records, calibrations


def _student_params(config: ExperimentConfig) -> dict:
    if config.student == "mlp":
        return {"module__hidden_layer_sizes": config.student_hidden}
    return {}


def summarize(records: list[Record]) -> dict:
    """Mean and standard deviation of accuracy per (method, labeled size),
    plus the teacher's row, in the paper's table layout."""
    sizes = sorted({r.n_labeled for r in records})
    methods = list(dict.fromkeys(r.method for r in records))
    table = {"sizes": sizes, "rows": {}}
    teacher = []
    for n in sizes:
        acc = {(r.trial, r.n_labeled): r.teacher_accuracy for r in records if r.n_labeled == n}
        teacher.append((float(np.mean(list(acc.values()))), float(np.std(list(acc.values())))))
    table["rows"]["Teacher"] = teacher
    for m in methods:
        table["rows"][m] = [
            (float(np.mean(v)), float(np.std(v))) if (v := [r.accuracy for r in records
                                                             if r.method == m and r.n_labeled == n]) else None
            for n in sizes
        ]
    return table


def markdown_table(table: dict) -> str:
    """Render :func:`summarize`'s table (accuracy in %, mean +- std)."""
    head = "| Labeled examples | " + " | ".join(str(s) for s in table["sizes"]) + " |"
    sep = "|---|" + "---|" * len(table["sizes"])
    lines = [head, sep]
    for name, cells in table["rows"].items():
        txt = ["-" if c is None else f"{100 * c[0]:.2f} ± {100 * c[1]:.2f}" for c in cells]
        lines.append(f"| {name} | " + " | ".join(txt) + " |")
    return "\n".join(lines)


def records_to_rows(records: list[Record]) -> list[dict]:
    return [asdict(r) for r in records]
