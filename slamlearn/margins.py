"""Margins, label ranks and top-k masks of a teacher's probabilities.

This module is the one home of these formulas; the calibrator, the losses,
the estimators and the benchmarks all call it.

Definitions (SLaM paper, Appendix A), for a probability row ``p`` sorted in
decreasing order ``p_(1) >= p_(2) >= ...``:

* top-1 margin: ``p_(1) - p_(2)``;
* top-j margin: ``p_(1) + ... + p_(j) - p_(j+1)``, for ``j = 1 .. L-1``
  (the top-1 margin is the case ``j = 1``);
* ``top(p; k)``: the 0/1 vector marking the ``k`` largest entries.

Tie rule (identical in the NumPy and torch versions): classes are ranked by
decreasing score and, among equal scores, by increasing class index -- the
order of a stable sort by decreasing score. It decides which of several tied
classes enter a top-k mask and the rank of a label tied with others.

Sparse input: :func:`top1_margin`, :func:`topj_margins`, :func:`label_rank`
and :func:`topk_mask` also accept a :class:`~slamlearn.sparse.TopKProba`
(each row's top-m probabilities) and hand it to :mod:`slamlearn.sparse`,
which builds the needed part of each implied dense row (its missing-mass
rule) and applies the kernels used here to it, so the results equal those on
``TopKProba.to_dense()``.
"""

from __future__ import annotations

import numbers

import numpy as np
import torch

from . import sparse as _sparse
from ._ext import _rows
from ._parallel import map_row_chunks, n_threads
from ._validation import as_float_array, check_labels
from .sparse import TopKProba

__all__ = ["label_rank", "top1_margin", "topj_margins", "topk_mask", "topk_mask_torch"]


def _by_row_chunks(fn, n_rows: int, n_entries: int, n_jobs=None) -> None:
    """Run a row-wise kernel call ``fn(rows)`` over all rows, threaded when
    large (or as ``n_jobs`` says; see :func:`slamlearn._parallel.n_threads`)."""
    map_row_chunks(fn, n_rows, n_threads(n_jobs, n_entries))


def _scores(p, name):
    arr = as_float_array(p, name=name, ndim=2)
    if arr.shape[1] < 1:
        raise ValueError(f"{name} must have at least one column")
    return arr


def top1_margin(proba, *, n_jobs=None) -> np.ndarray:
    """Largest minus second-largest probability of each row.

    Parameters
    ----------
    proba : array-like of shape (n_samples, n_classes) or TopKProba
    n_jobs : int or None, default=None
        Threads; None uses every core for inputs of 2**18 entries or more.

    Returns
    -------
    ndarray of shape (n_samples,), in the input's float dtype.
    """
    if isinstance(proba, TopKProba):
        return _sparse.top1_margin(proba, n_jobs=n_jobs)
    p = _scores(proba, "proba")
    if p.shape[1] < 2:
        raise ValueError("proba must have at least 2 columns to define a margin")
    out = np.empty(p.shape[0], dtype=p.dtype)
    _by_row_chunks(lambda r: _rows.top1_margin(p[r], out[r]), p.shape[0], p.size, n_jobs)
    return out


def topj_margins(proba, *, n_jobs=None) -> np.ndarray:
    """All top-j margins at once.

    Parameters
    ----------
    proba : array-like of shape (n_samples, n_classes) or TopKProba
    n_jobs : int or None, default=None
        Threads; None uses every core for inputs of 2**18 entries or more.

    Returns
    -------
    ndarray of shape (n_samples, n_classes - 1)
        Column ``j - 1`` holds the top-j margin. Sums are accumulated in
        double precision and stored in the input's float dtype.
    """
    if isinstance(proba, TopKProba):
        return _sparse.topj_margins(proba, n_jobs=n_jobs)
    p = _scores(proba, "proba")
    if p.shape[1] < 2:
        raise ValueError("proba must have at least 2 columns to define a margin")
    out = np.empty((p.shape[0], p.shape[1] - 1), dtype=p.dtype)
    _by_row_chunks(lambda r: _rows.topj_margins_sorted(np.sort(p[r], axis=1), out[r]), p.shape[0], p.size, n_jobs)
    return out


def label_rank(proba, y, *, n_jobs=None) -> np.ndarray:
    """0-based rank of each row's label among its classes (0 = top-1).

    The label is in the teacher's top-j exactly when its rank is ``< j``.
    Ties follow the module's tie rule.
    """
    if isinstance(proba, TopKProba):
        return _sparse.label_rank(proba, y, n_jobs=n_jobs)
    p = _scores(proba, "proba")
    labels = check_labels(y, n_classes=p.shape[1], n_samples=p.shape[0])
    out = np.empty(p.shape[0], dtype=np.intp)
    _by_row_chunks(lambda r: _rows.label_rank(p[r], labels[r], out[r]), p.shape[0], p.size, n_jobs)
    return out


def _check_k(k, n: int, n_classes: int) -> np.ndarray:
    if isinstance(k, numbers.Integral) and not isinstance(k, bool):
        kk = np.full(n, int(k), dtype=np.intp)
    else:
        if isinstance(k, torch.Tensor):
            k = k.detach().cpu().numpy()
        kk = np.asarray(k)
        if kk.ndim != 1 or kk.shape[0] != n:
            raise ValueError(f"k must be an int or an array of shape ({n},); got shape {kk.shape}")
        if kk.dtype.kind not in "iu":
            raise ValueError(f"k must hold integers; got dtype {kk.dtype}")
        kk = np.ascontiguousarray(kk, dtype=np.intp)
    if n and (kk.min() < 1 or kk.max() > n_classes):
        raise ValueError(f"k must be between 1 and the number of classes ({n_classes}); got values in "
                         f"[{kk.min()}, {kk.max()}]")
    return kk


def topk_mask(scores, k) -> np.ndarray:
    """Boolean mask of the ``k`` largest entries of each row.

    Parameters
    ----------
    scores : array-like of shape (n_samples, n_classes) or TopKProba
    k : int or array-like of shape (n_samples,)
        How many entries to mark, per row or for all rows; ``1 <= k <= L``.

    Returns
    -------
    ndarray of bool, shape (n_samples, n_classes)
        Exactly ``k[i]`` entries of row ``i`` are True (tie rule in the
        module docstring).
    """
    if isinstance(scores, TopKProba):
        return _sparse.topk_mask(scores, k)
    s = _scores(scores, "scores")
    kk = _check_k(k, s.shape[0], s.shape[1])
    return _topk_mask_kernel(s, kk)


def _topk_mask_kernel(s: np.ndarray, kk: np.ndarray) -> np.ndarray:
    out = np.empty(s.shape, dtype=np.bool_)
    u8 = out.view(np.uint8)
    _by_row_chunks(lambda r: _rows.topk_mask(s[r], kk[r], u8[r]), s.shape[0], s.size)
    return out


def topk_mask_torch(scores: torch.Tensor, k) -> torch.Tensor:
    """Torch version of :func:`topk_mask`, on the device of ``scores``.

    CPU tensors go through the native kernel; other devices use
    ``torch.topk`` plus a scatter, and re-rank with a stable sort only the
    rows whose k-th and (k+1)-th scores tie, so both paths give the same mask.
    """
    if not isinstance(scores, torch.Tensor):
        raise TypeError(f"scores must be a torch.Tensor; got {type(scores).__name__}")
    if scores.ndim != 2 or scores.shape[0] == 0 or scores.shape[1] == 0:
        raise ValueError(f"scores must be a non-empty 2-D tensor; got shape {tuple(scores.shape)}")
    if not torch.isfinite(scores.sum()) and not torch.isfinite(scores).all():
        raise ValueError("scores contains NaN or infinity")
    kk = _check_k(k, scores.shape[0], scores.shape[1])
    if scores.device.type == "cpu":
        s = scores.detach()
        if s.dtype not in (torch.float32, torch.float64):
            s = s.float()
        return torch.from_numpy(_topk_mask_kernel(s.contiguous().numpy(), kk))
    return _topk_mask_torch_ops(scores.detach(), torch.as_tensor(kk, device=scores.device))


def _topk_mask_torch_ops(scores: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Device-generic top-k mask with the module's tie rule (``k`` checked)."""
    n, L = scores.shape
    m = min(int(k.max()) + 1, L)
    vals, idx = scores.topk(m, dim=1, largest=True, sorted=True)
    take = torch.arange(m, device=scores.device)[None, :] < k[:, None]
    mask = torch.zeros(scores.shape, dtype=torch.bool, device=scores.device).scatter_(1, idx, take)
    # The top-k set is unique unless the k-th and (k+1)-th scores are equal;
    # only then does the tie rule pick, which topk does not promise to follow.
    kth = vals.gather(1, (k - 1)[:, None]).squeeze(1)
    nxt = vals.gather(1, k.clamp(max=m - 1)[:, None]).squeeze(1)
    tied = (k < L) & (kth == nxt)
    if bool(tied.any()):
        rows = tied.nonzero().squeeze(1)
        order = torch.sort(scores[rows], dim=1, descending=True, stable=True).indices
        ranks_ok = torch.arange(L, device=scores.device)[None, :] < k[rows, None]
        mask[rows] = torch.zeros_like(mask[rows]).scatter_(1, order, ranks_ok)
    return mask
