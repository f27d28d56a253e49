"""The command line and the dataset loaders."""

import csv
import os
from pathlib import Path

import numpy as np
import pytest

from slamlearn.cli import main
from slamlearn.data import DatasetNotInstalled, load_dataset, load_file


def test_benchmark_cli_end_to_end_on_digits(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["benchmark", "--dataset", "digits", "--fractions", "0.1", "--trials", "1", "--methods",
               "vanilla,slam,forward", "--n-val", "200", "--teacher-epochs", "30", "--student-epochs", "10",
               "--pretrain-epochs", "5", "--out", str(out), "--quiet"])
    assert rc == 0
    for name in ("results.csv", "table.md", "config.json", "accuracy_vs_labeled.png", "calibration_A144.png"):
        assert (out / name).stat().st_size > 0, name
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert {r["method"] for r in rows} == {"vanilla", "slam", "forward"}
    for r in rows:
        assert 0.6 < float(r["accuracy"]) <= 1.0  # digits with ~140 labels: far above chance (0.1)
        assert 0.0 <= float(r["lower_bound"]) <= 1.0
    table = (out / "table.md").read_text()
    assert "| Teacher |" in table and "| slam |" in table and "cross-validation on V" in table
    printed = capsys.readouterr().out
    assert "| slam |" in printed and "wrote:" in printed


def test_cli_errors(capsys, monkeypatch):
    with pytest.raises(SystemExit):
        main(["benchmark", "--methods", "vanilla,magic"])
    assert "unknown methods ['magic']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["benchmark", "--fractions", "0.1,2"])
    monkeypatch.setattr("slamlearn.data._find", lambda *a, **k: None)
    assert main(["benchmark", "--dataset", "fashion-mnist"]) == 2
    assert "apt-get install dataset-fashion-mnist" in capsys.readouterr().err


def test_user_files(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 4))
    y = np.where(X[:, 0] > 0, "pos", "neg")
    np.savez(tmp_path / "d.npz", X=X, y=y)
    d = load_file(tmp_path / "d.npz")
    assert d.class_names == ["neg", "pos"] and d.X_train.shape[1] == 4 and len(d.y_test) == 60
    with open(tmp_path / "d.csv", "w") as fh:
        fh.write("a,b,c,d,label\n")
        for row, lab in zip(X, y):
            fh.write(",".join(f"{v:.5f}" for v in row) + f",{lab}\n")
    d2 = load_file(tmp_path / "d.csv")
    assert d2.X_train.shape == (240, 4) and d2.n_classes == 2
    with pytest.raises(ValueError, match="must hold arrays named 'X' and 'y'"):
        np.savez(tmp_path / "bad.npz", A=X)
        load_file(tmp_path / "bad.npz")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_file(tmp_path / "missing.npz")


def test_builtin_loaders():
    d = load_dataset("digits")
    assert d.n_classes == 10 and d.X_train.shape[1] == 64 and 0 <= d.X_train.min() and d.X_train.max() <= 1
    s = load_dataset("synthetic", subsample=2000)
    assert s.X_train.shape == (1600, 40)
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("cifar")


def _installed(name):
    try:
        return load_dataset(name, subsample=3000)
    except DatasetNotInstalled:
        return None


@pytest.mark.skipif(_installed("fashion-mnist") is None, reason="dataset-fashion-mnist is not installed")
def test_fashion_mnist_files():
    d = _installed("fashion-mnist")
    assert d.X_train.shape == (2400, 784) and d.n_classes == 10 and d.image_shape == (1, 28, 28)
    assert 0.0 <= d.X_train.min() and d.X_train.max() <= 1.0
    assert np.bincount(d.y_train).min() > 200  # stratified


@pytest.mark.skipif(_installed("letter") is None, reason="r-cran-mlbench's LetterRecognition.rda is not available")
def test_letter_files():
    d = load_dataset("letter")
    assert d.X_train.shape == (16000, 16) and d.n_classes == 26 and d.class_names[0] == "A"
    assert len(d.y_test) == 4000


def test_missing_dataset_says_how_to_install(monkeypatch):
    monkeypatch.setattr("slamlearn.data._find", lambda *a, **k: None)
    with pytest.raises(DatasetNotInstalled, match="apt-get download r-cran-mlbench"):
        load_dataset("letter")
