"""Built-in datasets for the experiments, read from files on this machine.

Nothing is downloaded at run time. ``digits`` ships with scikit-learn;
``fashion-mnist`` and ``letter`` come from Debian packages (see
:data:`INSTALL_HINTS`); ``synthetic`` is generated; users' own data come from
an ``.npz`` or ``.csv`` file.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

__all__ = ["DATASETS", "Dataset", "DatasetNotInstalled", "load_dataset", "load_file"]

DATASETS = ("digits", "fashion-mnist", "letter", "synthetic")

INSTALL_HINTS = {
    "fashion-mnist": (
        "Fashion-MNIST is read from Debian's dataset-fashion-mnist package. Install it with\n"
        "    sudo apt-get install dataset-fashion-mnist\n"
        "(files in /usr/share/datasets/fashion-mnist), or put the four *-idx*-ubyte.gz files in a folder\n"
        "and pass --data-dir FOLDER (or set SLAMLEARN_DATA_DIR)."
    ),
    "letter": (
        "UCI Letter Recognition is read from LetterRecognition.rda in Debian's r-cran-mlbench package,\n"
        "with the 'rdata' Python package (pip install rdata; no R needed). Either\n"
        "    sudo apt-get install r-cran-mlbench\n"
        "or, without installing R:\n"
        "    apt-get download r-cran-mlbench && dpkg -x r-cran-mlbench_*.deb FOLDER\n"
        "and pass --data-dir FOLDER (or set SLAMLEARN_DATA_DIR)."
    ),
}


class DatasetNotInstalled(FileNotFoundError):
    """A built-in dataset's files are not on this machine (the message says
    how to install them)."""


@dataclass
class Dataset:
    """Features and labels split into a training pool and a test set.

    ``image_shape`` is the shape of one example as an image (for
    convolutional students), or None.
    """

    name: str
    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    class_names: list
    image_shape: tuple | None = None

    @property
    def n_classes(self) -> int:
        return len(self.class_names)


def _search_dirs(data_dir) -> list[Path]:
    dirs = []
    for d in (data_dir, os.environ.get("SLAMLEARN_DATA_DIR")):
        if d:
            dirs.append(Path(d))
    dirs.append(Path("/"))
    return dirs


def _find(data_dir, candidates: list[str]) -> Path | None:
    for base in _search_dirs(data_dir):
        for rel in candidates:
            p = base / rel.lstrip("/")
            if p.exists():
                return p
    return None


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        raw = fh.read()
    if raw[:2] != b"\x00\x00" or raw[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte idx file")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    return data.reshape(dims)


def _fashion(data_dir):
    names = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
             "t10k-labels-idx1-ubyte.gz"]
    folder = None
    for rel in ("usr/share/datasets/fashion-mnist", "fashion-mnist", "."):
        p = _find(data_dir, [f"{rel}/{names[0]}"])
        if p is not None:
            folder = p.parent
            break
    if folder is None:
        raise DatasetNotInstalled(INSTALL_HINTS["fashion-mnist"])
    Xtr, ytr, Xte, yte = (_read_idx(folder / n) for n in names)
    X = np.concatenate([Xtr, Xte]).reshape(-1, 784).astype(np.float32) / 255.0
    y = np.concatenate([ytr, yte]).astype(np.int64)
    classes = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
               "Ankle boot"]
    return X, y, classes, (1, 28, 28)


def _letter(data_dir):
    rel = "usr/lib/R/site-library/mlbench/data/LetterRecognition.rda"
    path = _find(data_dir, [rel, "LetterRecognition.rda", "mlbench/data/LetterRecognition.rda"])
    if path is None:
        raise DatasetNotInstalled(INSTALL_HINTS["letter"])
    try:
        import rdata
    except ImportError:
        raise DatasetNotInstalled("reading LetterRecognition.rda needs the 'rdata' package: pip install rdata\n"
                                  + INSTALL_HINTS["letter"]) from None
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rdata warns about the (ASCII) encoding of this file
        frame = rdata.read_rda(str(path))["LetterRecognition"]
    letters = np.asarray(frame.iloc[:, 0]).astype(str)
    classes = sorted(set(letters))
    y = np.searchsorted(classes, letters).astype(np.int64)
    X = np.asarray(frame.iloc[:, 1:], dtype=np.float32) / 15.0  # integer features in 0..15
    return X, y, classes, None


def _digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.data.astype(np.float32) / 16.0, d.target.astype(np.int64), [str(c) for c in range(10)], (1, 8, 8)


def _synthetic(random_state):
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=20000, n_features=40, n_informative=20, n_redundant=10, n_classes=10,
                               n_clusters_per_class=2, class_sep=1.0, flip_y=0.0, random_state=random_state)
    return X.astype(np.float32), y.astype(np.int64), [str(c) for c in range(10)], None


def load_dataset(name: str, *, data_dir=None, subsample: int | None = None, test_size: float = 0.2,
                 random_state: int = 0) -> Dataset:
    """Load a built-in dataset and hold out a stratified random test set.

    Parameters
    ----------
    name : {"digits", "fashion-mnist", "letter", "synthetic"}
    data_dir : str or Path, optional
        Extra folder to look for the files in (before the system paths).
    subsample : int, optional
        Keep this many rows (stratified) before splitting.
    test_size : float, default=0.2
    random_state : int, default=0

    Raises
    ------
    DatasetNotInstalled
        When the files are missing; the message says how to install them.
    """
    if name == "digits":
        X, y, classes, shape = _digits()
    elif name == "fashion-mnist":
        X, y, classes, shape = _fashion(data_dir)
    elif name == "letter":
        X, y, classes, shape = _letter(data_dir)
    elif name == "synthetic":
        X, y, classes, shape = _synthetic(random_state)
    else:
        raise ValueError(f"unknown dataset {name!r}; built-in datasets are {DATASETS} (or pass --data FILE)")
    return _split(name, X, y, classes, shape, subsample, test_size, random_state)


def _split(name, X, y, classes, shape, subsample, test_size, random_state) -> Dataset:
    if subsample is not None and subsample < X.shape[0]:
        X, _, y, _ = train_test_split(X, y, train_size=int(subsample), stratify=y, random_state=random_state)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=test_size, stratify=y, random_state=random_state)
    return Dataset(name, Xtr, ytr, Xte, yte, list(classes), shape)


def load_file(path, *, subsample: int | None = None, test_size: float = 0.2, random_state: int = 0) -> Dataset:
    """Load users' data.

    ``.npz``: arrays ``X`` and ``y`` (optionally ``X_test``/``y_test``, used
    as the test set instead of a random hold-out). ``.csv``: numeric
    features with the label in the last column (a header row is skipped
    when it is not numeric). Labels may be any values; they are encoded as
    0..L-1 in sorted order.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"--data file {path} does not exist")
    X_test = y_test = None
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            if "X" not in z or "y" not in z:
                raise ValueError(f"{path} must hold arrays named 'X' and 'y'; it has {sorted(z.files)}")
            X, y = z["X"], z["y"]
            if "X_test" in z and "y_test" in z:
                X_test, y_test = z["X_test"], z["y_test"]
    elif path.suffix == ".csv":
        with open(path) as fh:
            first = fh.readline()
        try:
            [float(v) for v in first.strip().split(",")[:-1]]
            skip = 0
        except ValueError:
            skip = 1
        raw = np.genfromtxt(path, delimiter=",", skip_header=skip, dtype=str)
        X, y = raw[:, :-1].astype(np.float32), raw[:, -1]
    else:
        raise ValueError(f"--data must be a .npz or .csv file; got {path.name}")
    X = np.asarray(X, dtype=np.float32).reshape(len(X), -1)
    if not np.isfinite(X).all():
        raise ValueError(f"{path}: X contains NaN or infinity")
    classes, y_enc = np.unique(np.concatenate([y, y_test]) if y_test is not None else y, return_inverse=True)
    if y_test is not None:
        y, y_t = y_enc[: len(y)], y_enc[len(y):]
        X_t = np.asarray(X_test, dtype=np.float32).reshape(len(X_test), -1)
        return Dataset(path.stem, X, y.astype(np.int64), X_t, y_t.astype(np.int64), [str(c) for c in classes])
    return _split(path.stem, X, y_enc.astype(np.int64), [str(c) for c in classes], None, subsample, test_size,
                  random_state)
