"""Input checks shared by the array functions and the estimators.

Every check raises a ``ValueError`` (``TypeError`` for wrong kinds of object)
whose message names the offending argument and says what was wrong, so that
bad input never reaches a native kernel or torch.
"""

from __future__ import annotations

import numbers

import numpy as np
import scipy.sparse as sp

#: Rows of a probability matrix must sum to one within this absolute tolerance.
#: Loose enough for float16/float32 storage of a teacher's softmax output,
#: tight enough to catch logits or unnormalised scores.
PROBA_SUM_ATOL = 1e-3

FLOAT_DTYPES = (np.float64, np.float32)


def as_float_array(a, *, name: str, ndim: int, dtype=FLOAT_DTYPES) -> np.ndarray:
    """Return ``a`` as a C-contiguous float32/float64 array of ``ndim`` dims.

    float32 input stays float32 (no silent upcast); anything else becomes
    float64. Raises if the shape is wrong, the array is empty or it holds
    NaN or infinity.
    """
    if hasattr(a, "detach") and hasattr(a, "cpu"):  # a torch tensor
        a = a.detach().cpu().numpy()
    if sp.issparse(a):
        raise TypeError(f"{name} must be a dense array; sparse input is not supported")
    try:
        arr = np.asarray(a)
    except Exception as exc:  # ragged lists and the like
        raise ValueError(f"{name} could not be converted to an array: {exc}") from exc
    if arr.dtype.kind not in "fiub":
        raise ValueError(f"{name} must be numeric; got dtype {arr.dtype}")
    if arr.ndim != ndim:
        shape = "(n_samples,)" if ndim == 1 else "(n_samples, n_classes)"
        raise ValueError(f"{name} must be a {ndim}-D array of shape {shape}; got shape {arr.shape}")
    if arr.size == 0 or arr.shape[0] == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape}); at least one row is required")
    target = arr.dtype if arr.dtype in dtype else np.dtype(dtype[0])
    arr = np.ascontiguousarray(arr, dtype=target)
    # A sum is finite when every term is (and is cheaper than isfinite().all());
    # only when it is not do we look for the culprit, which may be an overflow.
    if not np.isfinite(arr.sum()) and not np.isfinite(arr).all():
        bad = np.argwhere(~np.isfinite(arr))[0]
        where = f"at index {tuple(int(i) for i in bad)}" if ndim > 1 else f"at index {int(bad[0])}"
        raise ValueError(f"{name} contains NaN or infinity ({where})")
    return arr


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, computed stably in the input's float dtype."""
    z = logits - logits.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def check_proba(p, *, name: str = "teacher_proba", input: str = "proba", min_classes: int = 2) -> np.ndarray:
    """Validate a matrix of class probabilities, one row per example.

    Parameters
    ----------
    p : array-like of shape (n_samples, n_classes)
        Probabilities (``input="proba"``) or unnormalised log-probabilities
        (``input="logits"``, turned into probabilities by a softmax).
    name : str
        Argument name used in error messages.
    input : {"proba", "logits"}
        What ``p`` holds.
    min_classes : int
        Smallest number of columns accepted.

    Returns
    -------
    ndarray of shape (n_samples, n_classes), float32 or float64, C-contiguous.
    """
    if input not in ("proba", "logits"):
        raise ValueError(f"input must be 'proba' or 'logits'; got {input!r}")
    arr = as_float_array(p, name=name, ndim=2)
    if arr.shape[1] < min_classes:
        raise ValueError(
            f"{name} must have at least {min_classes} columns (one per class); got {arr.shape[1]}"
        )
    if input == "logits":
        return softmax(arr)
    if (arr < 0).any():
        i, j = np.argwhere(arr < 0)[0]
        raise ValueError(
            f"Negative values in data passed to {name} (row {i}, column {j}: {arr[i, j]:.4g}); "
            "probabilities must be in [0, 1]. If these are logits, pass input='logits'."
        )
    sums = arr.sum(axis=1, dtype=np.float64)
    off = np.abs(sums - 1.0) > PROBA_SUM_ATOL
    if off.any():
        i = int(np.argmax(off))
        raise ValueError(
            f"rows of {name} must sum to 1 (row {i} sums to {sums[i]:.6g}). If these are logits or "
            "unnormalised scores, pass input='logits' to apply a softmax."
        )
    return arr


def check_labels(y, *, n_classes: int, n_samples: int | None = None, name: str = "y") -> np.ndarray:
    """Validate integer class labels in ``[0, n_classes)`` and return them as intp."""
    if hasattr(y, "detach") and hasattr(y, "cpu"):
        y = y.detach().cpu().numpy()
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of class labels; got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty; at least one label is required")
    if n_samples is not None and arr.shape[0] != n_samples:
        raise ValueError(f"{name} has {arr.shape[0]} entries but the probabilities have {n_samples} rows")
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all() or not (arr == np.round(arr)).all():
            raise ValueError(f"{name} must hold integer class labels; got non-integer values")
    elif arr.dtype.kind not in "iub":
        raise ValueError(
            f"Unknown label type: {name} must hold integer class labels in [0, {n_classes}); got dtype {arr.dtype}"
        )
    out = arr.astype(np.intp, copy=False)
    bad = (out < 0) | (out >= n_classes)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(
            f"{name} must hold class labels in [0, {n_classes}) (one per column of the probabilities); "
            f"got {out[i]} at index {i}"
        )
    return np.ascontiguousarray(out)


def check_sample_weight(sample_weight, n_samples: int, *, name: str = "sample_weight") -> np.ndarray | None:
    """Validate non-negative, finite weights with a positive sum (or ``None``)."""
    if sample_weight is None:
        return None
    if isinstance(sample_weight, numbers.Number):
        sample_weight = np.full(n_samples, float(sample_weight))
    w = as_float_array(sample_weight, name=name, ndim=1, dtype=(np.float64,))
    if w.shape[0] != n_samples:
        raise ValueError(f"{name} has {w.shape[0]} entries; expected {n_samples}")
    if (w < 0).any():
        raise ValueError(f"{name} must be non-negative")
    if not w.sum() > 0:
        raise ValueError(f"{name} must not be all zero: the weights need a positive sum")
    return w


def check_unit_interval(value, *, name: str) -> float:
    """Validate a real number in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1]; got {value!r}")
    return float(value)
