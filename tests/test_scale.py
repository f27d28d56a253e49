"""Scale: memory maps and torch Datasets read batch by batch, DDP on CPU,
resumable checkpoints, mixed precision."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from slamlearn import SLaMClassifier
from slamlearn.datasets import make_noisy_teacher

HERE = Path(__file__).parent


def _problem(n=1500, seed=0):
    d = make_noisy_teacher(n, 10, 5, random_state=seed)
    y = d.y.copy()
    y[500:] = -1
    cal = np.zeros(n, dtype=bool)
    cal[100:500] = True
    return d, y, cal


def _memmap(path, array):
    mm = np.memmap(path, dtype=np.float32, mode="w+", shape=array.shape)
    mm[:] = array
    mm.flush()
    return np.memmap(path, dtype=np.float32, mode="r", shape=array.shape)


class _Rows(torch.utils.data.Dataset):
    def __init__(self, X):
        self.X = X

    def __len__(self):
        return len(self.X)

    def __getitem__(self, i):
        return torch.as_tensor(self.X[i]), i  # tuples: the features come first


@pytest.mark.parametrize("method", ["slam", "weighted", "ups"])
def test_memmaps_and_datasets_match_in_memory(tmp_path, method):
    d, y, cal = _problem()
    X32, P32 = d.X.astype(np.float32), d.teacher_proba.astype(np.float32)
    kw = dict(method=method, max_epochs=3, random_state=0, device="cpu",
              pretrain_epochs=2 if method == "weighted" else 0)
    fit = dict(calibration_mask=cal, teacher_uncertainty=P32 * (1 - P32) * 0.1)
    ref = SLaMClassifier(**kw).fit(X32, y, teacher_proba=P32, **fit)
    X_mm, P_mm = _memmap(tmp_path / "X.f32", X32), _memmap(tmp_path / "P.f32", P32)
    streamed = SLaMClassifier(**kw).fit(X_mm, y, teacher_proba=P_mm, **fit)
    np.testing.assert_allclose(streamed.predict_proba(X32), ref.predict_proba(X32), rtol=1e-5, atol=1e-6)
    from_dataset = SLaMClassifier(**kw).fit(_Rows(X32), y, teacher_proba=P_mm, **fit)
    np.testing.assert_allclose(from_dataset.predict_proba(_Rows(X32)), ref.predict_proba(X32), rtol=1e-5,
                               atol=1e-6)
    # loader worker processes give the same batches
    workers = SLaMClassifier(num_workers=2, **kw).fit(X_mm, y, teacher_proba=P_mm, **fit)
    np.testing.assert_allclose(workers.predict_proba(X_mm), ref.predict_proba(X32), rtol=1e-5, atol=1e-6)


def test_teacher_rows_are_the_only_rows_read(tmp_path):
    d, y, cal = _problem()
    P = d.teacher_proba.astype(np.float32).copy()
    P[:100] = np.nan  # labeled rows outside V: never read
    P_mm = _memmap(tmp_path / "P.f32", P)
    clf = SLaMClassifier(max_epochs=1, random_state=0, in_memory=False).fit(d.X, y, teacher_proba=P_mm,
                                                                           calibration_mask=cal)
    assert np.isfinite(clf.predict_proba(d.X)).all()
    P[700, 0] = 5.0
    with pytest.raises(ValueError, match="teacher_proba \\(teacher rows\\)"):
        SLaMClassifier(max_epochs=1, in_memory=False).fit(d.X, y, teacher_proba=_memmap(tmp_path / "Q.f32", P),
                                                          calibration_mask=cal)


def test_checkpoint_resume_equals_uninterrupted_run(tmp_path):
    d, y, cal = _problem()
    kw = dict(random_state=0, device="cpu", pretrain_epochs=2, early_stopping=True, n_iter_no_change=50)
    full = SLaMClassifier(max_epochs=4, **kw).fit(d.X, y, teacher_proba=d.teacher_proba, calibration_mask=cal)
    ckpt = tmp_path / "run" / "state.pt"
    SLaMClassifier(max_epochs=2, checkpoint_path=str(ckpt), **kw).fit(d.X, y, teacher_proba=d.teacher_proba,
                                                                      calibration_mask=cal)
    assert ckpt.exists()
    resumed = SLaMClassifier(max_epochs=4, checkpoint_path=str(ckpt), resume=True, **kw)
    resumed.fit(d.X, y, teacher_proba=d.teacher_proba, calibration_mask=cal)
    np.testing.assert_array_equal(resumed.predict_proba(d.X), full.predict_proba(d.X))
    assert [h["epoch"] for h in resumed.history_] == [h["epoch"] for h in full.history_]


def test_bfloat16_autocast_keeps_the_loss_in_float32(monkeypatch):
    import slamlearn._objective as objective

    d, y, cal = _problem()
    module_dtypes, loss_dtypes = set(), set()

    class Spy(torch.nn.Module):
        def __init__(self, n_features, n_classes):
            super().__init__()
            self.lin = torch.nn.Linear(n_features, n_classes)

        def forward(self, x):
            out = self.lin(x)
            module_dtypes.add(out.dtype)
            return out

    real = objective.slam_loss

    def spy_loss(z, *args, **kw):
        loss_dtypes.add(z.dtype)
        return real(z, *args, **kw)

    monkeypatch.setattr(objective, "slam_loss", spy_loss)
    kw = dict(student=Spy, max_epochs=20, lr=1e-2, random_state=0, device="cpu")
    clf = SLaMClassifier(precision="bfloat16", **kw).fit(d.X, y, teacher_proba=d.teacher_proba, calibration_mask=cal)
    assert module_dtypes == {torch.bfloat16} and loss_dtypes == {torch.float32}
    assert all(np.isfinite(h["train_loss"]) for h in clf.history_)
    full = SLaMClassifier(**kw).fit(d.X, y, teacher_proba=d.teacher_proba, calibration_mask=cal)
    assert abs(clf.score(d.X[:500], d.y[:500]) - full.score(d.X[:500], d.y[:500])) < 0.05
    with pytest.raises(ValueError, match="precision must be"):
        SLaMClassifier(precision="int8").fit(d.X, y, teacher_proba=d.teacher_proba, calibration_mask=cal)


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_matches_a_single_process(tmp_path):
    sys.path.insert(0, str(HERE))
    from _ddp_worker import estimator, problem

    d, y, cal = problem()
    single = estimator(distributed=False).fit(d.X, y, teacher_proba=d.teacher_proba, calibration_mask=cal)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parent)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29531",
           str(HERE / "_ddp_worker.py"), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = np.load(tmp_path / "rank0.npy"), np.load(tmp_path / "rank1.npy")
    np.testing.assert_array_equal(r0, r1)  # identical on every rank
    np.testing.assert_allclose(r0, single.predict_proba(d.X), rtol=1e-4, atol=1e-5)
    assert (tmp_path / "ckpt.pt").exists()  # written by rank 0


def test_sparse_teacher_outputs_train_like_dense(tmp_path):
    from slamlearn import TopKProba

    d, y, cal = _problem()
    P = d.teacher_proba
    kw = dict(max_epochs=3, random_state=0, device="cpu")
    dense = SLaMClassifier(**kw).fit(d.X, y, teacher_proba=P, calibration_mask=cal)
    full = SLaMClassifier(**kw).fit(d.X, y, teacher_proba=TopKProba.from_dense(P, 5), calibration_mask=cal)
    np.testing.assert_allclose(full.predict_proba(d.X), dense.predict_proba(d.X), rtol=1e-5, atol=1e-6)
    # top-2 only: the same as training on the dense matrix the missing-mass rule defines
    top2 = TopKProba.from_dense(P, 2)
    a = SLaMClassifier(**kw).fit(d.X, y, teacher_proba=top2, calibration_mask=cal)
    b = SLaMClassifier(**kw).fit(d.X, y, teacher_proba=top2.to_dense(), calibration_mask=cal)
    np.testing.assert_allclose(a.predict_proba(d.X), b.predict_proba(d.X), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a.teacher_alpha_, b.teacher_alpha_)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_cuda_training_keeps_rows_on_the_device(precision, tmp_path):
    d, y, cal = _problem()
    clf = SLaMClassifier(device="cuda", precision=precision, max_epochs=2, random_state=0)
    clf.fit(d.X, y, teacher_proba=d.teacher_proba, calibration_mask=cal)
    assert next(clf.module_.parameters()).device.type == "cuda"
    X_mm = _memmap(tmp_path / "X.f32", d.X.astype(np.float32))
    streamed = SLaMClassifier(device="cuda", max_epochs=2, random_state=0).fit(
        X_mm, y, teacher_proba=d.teacher_proba, calibration_mask=cal)
    assert streamed.score(d.X[:500], d.y[:500]) > 0.3
