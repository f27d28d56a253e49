"""Sparse teacher outputs: each row's top-m class probabilities.

Bulk inference often keeps only the ``m`` largest probabilities of each row
(their class ids and values). :class:`TopKProba` holds them, in memory or
memory-mapped, and the functions here compute margins, label ranks and top-k
masks from the lists directly, block by block, without building the
``(n_samples, n_classes)`` matrix. :mod:`slamlearn.margins` dispatches to
them when given a :class:`TopKProba`, and
:class:`~slamlearn.TeacherCalibrator` accepts one wherever it accepts ``X``.

Missing-mass rule
-----------------
A row lists ``m`` of the ``L`` classes with probabilities ``v_1 >= ... >=
v_m``. The mass it does not list, ``R = max(0, 1 - (v_1 + ... + v_m))``, is
spread uniformly over the ``L - m`` unlisted classes: each gets ``r = R / (L -
m)``, computed in double precision and stored in the values' float dtype.
With ``m = L`` no class is unlisted, so (as for dense probabilities) the
listed mass must be 1 within ``1e-3``. A :class:`TopKProba` thus stands for
exactly one dense matrix, :meth:`TopKProba.to_dense`, and every function here
returns exactly what the dense function of :mod:`slamlearn.margins` returns
on that matrix.

Beyond the listed classes
-------------------------
Sorted in decreasing order, the implied row is ``v_1 .. v_h, r (L - m
times), v_(h+1) .. v_m``, where ``h`` counts the listed values ``>= r``. The
listed values are the teacher's top-m, so ``h = m`` except when rounding puts
a listed value a hair below ``r`` (accepted at construction within
``1e-3 / (L - m)``). With ``h = m`` and ``S_m = v_1 + ... + v_m``:

* top-1 margin: ``v_1 - v_2``, or ``v_1 - r`` when ``m = 1``;
* top-j margin: ``v_1 + ... + v_j - v_(j+1)`` for ``j < m``, and
  ``S_m + (j - m - 1) r`` for ``m <= j <= L - 1``.

The sums are accumulated one term at a time in double precision by the same
kernel as the dense path, so the results are bit for bit the dense ones.

Ties
----
The tie rule of :mod:`slamlearn.margins` applies to the implied row: classes
rank by decreasing probability and, among equal ones, by increasing class
index. The ``L - m`` unlisted classes tie with each other (and with any listed
class whose value equals ``r``), so among themselves they rank by class id.
"""

from __future__ import annotations

import mmap
import numbers
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numpy as np

from ._ext import _rows
from ._parallel import n_threads
from ._validation import PROBA_SUM_ATOL, check_labels, check_proba

__all__ = ["TopKProba", "label_rank", "top1_margin", "topj_margins", "topk_classes", "topk_mask"]

#: Rows are processed in blocks of about this many list entries (or output
#: columns), so temporaries stay a few tens of MiB whatever the input size.
_BLOCK_ENTRIES = 1 << 20


def _is_memory_mapped(a) -> bool:
    """Whether ``a`` is, or is a view of, a memory-mapped buffer."""
    while isinstance(a, np.ndarray):
        if isinstance(a, np.memmap):
            return True
        a = a.base
    return isinstance(a, mmap.mmap)


def _as_matrix(a, *, name: str, kinds: str, what: str) -> np.ndarray:
    """``a`` as a 2-D ndarray; ndarrays (memmaps included) are not copied."""
    if hasattr(a, "detach") and hasattr(a, "cpu"):  # a torch tensor
        a = a.detach().cpu().numpy()
    arr = a if isinstance(a, np.ndarray) else np.asarray(a)
    if arr.dtype.kind not in kinds:
        raise ValueError(f"{name} must hold {what}; got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array of shape (n_samples, m); got shape {arr.shape}")
    return arr


def _canonical_order(idx: np.ndarray, val: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort each row by decreasing value, ties by increasing class id."""
    order = np.lexsort((idx, -val), axis=1)
    return np.take_along_axis(idx, order, axis=1), np.take_along_axis(val, order, axis=1)


def _is_canonical(idx: np.ndarray, val: np.ndarray) -> bool:
    if idx.shape[1] < 2:
        return True
    hi, lo = val[:, :-1], val[:, 1:]
    return bool(((hi > lo) | ((hi == lo) & (idx[:, :-1] < idx[:, 1:]))).all())


def _row_blocks(n: int, width: int) -> list[slice]:
    step = max(1, _BLOCK_ENTRIES // max(1, width))
    return [slice(a, min(a + step, n)) for a in range(0, n, step)]


def _map_blocks(fn: Callable[[slice], object], n: int, width: int, n_jobs) -> None:
    """Call ``fn(rows)`` on row blocks of about :data:`_BLOCK_ENTRIES`
    entries, on several threads for large inputs (the kernels and most NumPy
    calls release the GIL)."""
    blocks = _row_blocks(n, width)
    threads = min(n_threads(n_jobs, n * width), len(blocks))
    if threads <= 1:
        for rows in blocks:
            fn(rows)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(fn, blocks))


class TopKProba:
    """A teacher's top-m class probabilities per row.

    A compact stand-in for an ``(n_samples, n_classes)`` probability matrix
    when only each row's ``m`` largest entries were kept. The classes not
    listed share the missing mass uniformly (module docstring), which defines
    the dense matrix this object stands for (:meth:`to_dense`).

    Parameters
    ----------
    indices : array-like of int, shape (n_samples, m)
        Class ids in ``[0, n_classes)``, distinct within each row.
    values : array-like of float, shape (n_samples, m)
        Their probabilities: finite, non-negative, at most ``1 + 1e-3`` per
        row, and each at least the share ``r`` of the missing mass that every
        unlisted class gets (they are the teacher's top-m), within
        ``1e-3 / (n_classes - m)``. With ``m = n_classes`` each row must sum
        to 1 within ``1e-3``.
    n_classes : int
        Number of classes ``L``; ``1 <= m <= L``.

    Attributes
    ----------
    indices : ndarray of shape (n_samples, m)
        The class ids as stored (no copy of an ndarray or memmap whose rows
        are already in canonical order).
    values : ndarray of shape (n_samples, m)
        Their probabilities, as stored.
    n_classes : int
        Number of classes ``L``.
    is_sorted : bool
        Whether the stored rows are in canonical order: decreasing value, ties
        by increasing class id (the tie rule of :mod:`slamlearn.margins`).
        In-memory input is put in that order at construction (a copy only
        when needed); memory-mapped input is never copied, and its rows are
        ordered block by block as they are read.

    Notes
    -----
    Row slices ``tp[a:b]`` are views (of the memmap, for memory-mapped
    input). Every check runs once at construction, block by block, so a
    memory-mapped file is read through once but never loaded whole.

    Examples
    --------
    >>> import numpy as np
    >>> from slamlearn import TopKProba, top1_margin
    >>> tp = TopKProba([[2, 0]], [[0.6, 0.3]], n_classes=4)
    >>> tp.to_dense()
    array([[0.3 , 0.05, 0.6 , 0.05]])
    >>> top1_margin(tp)
    array([0.3])
    """

    def __init__(self, indices, values, n_classes):
        idx = _as_matrix(indices, name="indices", kinds="iu", what="integer class ids")
        val = _as_matrix(values, name="values", kinds="fiub", what="real probabilities")
        if isinstance(n_classes, bool) or not isinstance(n_classes, numbers.Integral) or n_classes < 1:
            raise ValueError(f"n_classes must be a positive integer; got {n_classes!r}")
        if idx.shape != val.shape:
            raise ValueError(f"indices and values must have the same shape; got {idx.shape} and {val.shape}")
        n, m = idx.shape
        if n == 0:
            raise ValueError("indices and values are empty (0 rows); at least one row is required")
        if not 1 <= m <= n_classes:
            raise ValueError(
                f"indices and values must have between 1 and n_classes ({n_classes}) columns; got m = {m}"
            )
        self._set(idx, val, int(n_classes), is_sorted=False)
        in_order = self._validate()
        if in_order:
            self.is_sorted = True
        elif not (_is_memory_mapped(idx) or _is_memory_mapped(val)):
            # Sorting once here saves every later call from doing it.
            if val.dtype.kind != "f":
                val = val.astype(self.dtype)
            self._set(*_canonical_order(idx, val), self.n_classes, is_sorted=True)

    def _set(self, idx: np.ndarray, val: np.ndarray, n_classes: int, *, is_sorted: bool) -> None:
        self.indices = idx
        self.values = val
        self.n_classes = n_classes
        self.is_sorted = is_sorted

    @classmethod
    def _view(cls, idx, val, n_classes: int, is_sorted: bool) -> "TopKProba":
        """An instance over already validated arrays (no checks, no copy)."""
        tp = cls.__new__(cls)
        tp._set(idx, val, n_classes, is_sorted=is_sorted)
        return tp

    # -- description ----------------------------------------------------------------
    @property
    def m(self) -> int:
        """Number of classes listed per row."""
        return self.indices.shape[1]

    @property
    def shape(self) -> tuple[int, int]:
        """``(n_samples, n_classes)``: the shape of the matrix stood for."""
        return (self.indices.shape[0], self.n_classes)

    @property
    def dtype(self) -> np.dtype:
        """Float dtype of computations: float32 values stay float32, any other
        storage (float16 included) is computed in float64."""
        return np.dtype(np.float32 if self.values.dtype == np.float32 else np.float64)

    @property
    def nbytes(self) -> int:
        """Bytes of the stored indices and values."""
        return int(self.indices.nbytes + self.values.nbytes)

    def __len__(self) -> int:
        return self.indices.shape[0]

    def __getitem__(self, rows) -> "TopKProba":
        """Rows ``tp[a:b]`` (a view) or ``tp[ids]`` for an integer or boolean
        array of rows (a copy of those rows)."""
        if isinstance(rows, slice):
            return self._view(self.indices[rows], self.values[rows], self.n_classes, self.is_sorted)
        ids = np.asarray(rows)
        if ids.dtype == bool:
            if ids.shape != (len(self),):
                raise IndexError(f"a boolean row mask must have {len(self)} entries; got shape {ids.shape}")
            ids = np.flatnonzero(ids)
        if ids.ndim != 1 or ids.dtype.kind not in "iu":
            raise TypeError("TopKProba rows are selected by a slice or a 1-D integer or boolean array")
        return self._view(np.asarray(self.indices[ids]), np.asarray(self.values[ids]), self.n_classes,
                          self.is_sorted)

    def __repr__(self) -> str:
        return f"TopKProba(n_samples={len(self)}, m={self.m}, n_classes={self.n_classes}, dtype={self.dtype})"

    # -- validation -----------------------------------------------------------------
    def _validate(self) -> bool:
        """Check every row (block by block); return whether all are in
        canonical order."""
        in_order = True
        for rows in _row_blocks(len(self), self.m):
            idx = np.asarray(self.indices[rows])
            val = np.asarray(self.values[rows]).astype(self.dtype, copy=False)
            self._check_block(idx, val, rows.start)
            in_order = in_order and _is_canonical(idx, val)
        return in_order

    def _check_block(self, idx: np.ndarray, val: np.ndarray, offset: int) -> None:
        L, m = self.n_classes, self.m
        bad = (idx < 0) | (idx >= L)
        if bad.any():
            i, j = np.argwhere(bad)[0]
            raise ValueError(
                f"indices must hold class ids in [0, n_classes) = [0, {L}); got {idx[i, j]} at row {offset + i}, "
                f"column {j}"
            )
        if m > 1:
            s = np.sort(idx, axis=1)
            dup = s[:, 1:] == s[:, :-1]
            if dup.any():
                i, j = np.argwhere(dup)[0]
                raise ValueError(f"indices must list distinct classes in each row; row {offset + i} lists "
                                 f"class {s[i, j]} twice")
        if not np.isfinite(val).all():
            i, j = np.argwhere(~np.isfinite(val))[0]
            raise ValueError(f"values contains NaN or infinity (row {offset + i}, column {j})")
        if (val < 0).any():
            i, j = np.argwhere(val < 0)[0]
            raise ValueError(f"values must be non-negative probabilities; got {val[i, j]:.4g} at row "
                             f"{offset + i}, column {j}")
        mass = val.sum(axis=1, dtype=np.float64)
        if m == L:
            off = np.abs(mass - 1.0) > PROBA_SUM_ATOL
            if off.any():
                i = int(np.argmax(off))
                raise ValueError(
                    f"values must sum to 1 in each row when every class is listed (m = n_classes = {L}); "
                    f"row {offset + i} sums to {mass[i]:.6g}"
                )
            return
        over = mass > 1.0 + PROBA_SUM_ATOL
        if over.any():
            i = int(np.argmax(over))
            raise ValueError(f"values of a row must sum to at most 1 (+{PROBA_SUM_ATOL:g}); row {offset + i} sums "
                             f"to {mass[i]:.6g}")
        # A dense row summing to 1 within PROBA_SUM_ATOL puts at most that
        # much extra missing mass, spread over L - m classes, above its
        # smallest listed value; anything further means these are not the top-m.
        U = L - m
        share = np.maximum(1.0 - mass, 0.0) / U
        low = val.min(axis=1) < share - PROBA_SUM_ATOL / U - np.finfo(val.dtype).eps
        if low.any():
            i = int(np.argmax(low))
            raise ValueError(
                f"values must be each row's top-m probabilities: row {offset + i} lists {val[i].min():.6g}, less "
                f"than the {share[i]:.6g} that each of its {U} unlisted classes gets from the missing mass "
                "(1 - sum(values)) / (n_classes - m)"
            )

    # -- reading --------------------------------------------------------------------
    def _read(self, rows: slice) -> tuple[np.ndarray, np.ndarray]:
        """Rows in canonical order as C-contiguous intp ids and float values
        (views of the storage when nothing needs converting: do not modify)."""
        idx = np.ascontiguousarray(np.asarray(self.indices[rows]), dtype=np.intp)
        val = np.ascontiguousarray(np.asarray(self.values[rows]), dtype=self.dtype)
        if not self.is_sorted:
            idx, val = _canonical_order(idx, val)
        return idx, val

    def _share(self, val: np.ndarray) -> np.ndarray | None:
        """Missing-mass share ``r`` of each unlisted class (None when m = L),
        from canonically ordered values, so that it is the same value
        whichever call or block computes it."""
        U = self.n_classes - self.m
        if U == 0:
            return None
        mass = np.ascontiguousarray(val, dtype=np.float64).sum(axis=1)
        return (np.maximum(1.0 - mass, 0.0) / U).astype(val.dtype)

    def copy(self) -> "TopKProba":
        """In-memory copy with rows in canonical order, intp ids and float values."""
        idx, val = self._read(slice(None))
        return self._view(idx.copy(), val.copy(), self.n_classes, True)

    def to_dense(self, rows: slice = slice(None)) -> np.ndarray:
        """The dense probabilities these rows stand for.

        Parameters
        ----------
        rows : slice or array of row ids, default=slice(None)
            Rows to expand. The result has ``n_classes`` columns per row, so
            keep the selection small for large inputs.

        Returns
        -------
        ndarray of shape (n_rows, n_classes), in :attr:`dtype`
            Listed classes keep their values; each unlisted class gets the
            missing-mass share ``r`` (module docstring).
        """
        if not isinstance(rows, slice):
            return self[rows].to_dense()
        idx, val = self._read(rows)
        out = np.empty((idx.shape[0], self.n_classes), dtype=self.dtype)
        r = self._share(val)
        if r is not None:
            out[:] = r[:, None]
        np.put_along_axis(out, idx, val, axis=1)
        return out

    @classmethod
    def from_dense(cls, proba, m: int) -> "TopKProba":
        """Keep the top-m classes of each row of a probability matrix.

        Parameters
        ----------
        proba : array-like of shape (n_samples, n_classes)
            Probabilities (rows sum to 1 within ``1e-3``); a memmap is read
            block by block.
        m : int
            Classes to keep per row, ``1 <= m <= n_classes``. Ties at the
            cut follow the tie rule (the smaller class id is kept).

        Returns
        -------
        TopKProba
            In canonical row order, with int32 ids when they fit; float32
            input keeps float32 values, any other float64.
        """
        from .margins import topk_mask  # margins imports this module

        if hasattr(proba, "detach") and hasattr(proba, "cpu"):
            proba = proba.detach().cpu().numpy()
        p = proba if isinstance(proba, np.ndarray) else np.asarray(proba)
        if p.ndim != 2 or p.shape[0] == 0 or p.shape[1] == 0:
            raise ValueError(f"proba must be a non-empty 2-D array of shape (n_samples, n_classes); got shape "
                             f"{p.shape}")
        n, L = p.shape
        if isinstance(m, bool) or not isinstance(m, numbers.Integral) or not 1 <= m <= L:
            raise ValueError(f"m must be an integer between 1 and the number of classes ({L}); got {m!r}")
        indices = np.empty((n, m), dtype=np.int32 if L <= np.iinfo(np.int32).max else np.int64)
        values = np.empty((n, m), dtype=np.float32 if p.dtype == np.float32 else np.float64)
        for rows in _row_blocks(n, L):
            try:
                block = check_proba(p[rows], name="proba", min_classes=1)
            except ValueError as exc:
                if rows.start == 0:
                    raise
                raise ValueError(f"{exc} [row numbers counted from row {rows.start}]") from None
            cols = np.nonzero(topk_mask(block, m))[1].reshape(-1, m)
            idx, val = _canonical_order(cols, np.take_along_axis(block, cols, axis=1))
            indices[rows], values[rows] = idx, val
        return cls(indices, values, L)


# -- order statistics of the implied dense rows ----------------------------------------
# The helpers below take a block of canonically ordered rows (ids ``idx``,
# values ``val``) and the share ``r`` of each unlisted class (None when
# m = L), and describe the implied dense rows in the tie-rule order, so the
# margin formulas can be applied by the dense kernels unchanged.


def _heads(val: np.ndarray, r: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Per row, how many listed values are ``> r`` (``a``) and ``>= r`` (``h``):
    as the values are sorted these are prefixes of the row."""
    if r is None:
        full = np.full(val.shape[0], val.shape[1], dtype=np.intp)
        return full, full
    return (val > r[:, None]).sum(axis=1), (val >= r[:, None]).sum(axis=1)


def _sorted_values(val, r, h, n_unlisted: int, J: int, *, ascending: bool) -> np.ndarray:
    """The ``J`` largest values of each implied row, in decreasing order (or
    those same values in increasing order), C-contiguous in ``val``'s dtype."""
    c, m = val.shape
    out = np.empty((c, J), dtype=val.dtype)
    desc = out[:, ::-1] if ascending else out
    if r is None or bool((h == m).all()):
        # The usual case: all listed values >= r, then the unlisted block.
        t = min(J, m)
        desc[:, :t] = val[:, :t]
        if J > m:
            desc[:, m:] = r[:, None]
        return out
    p = np.arange(J)
    src = np.where(p < h[:, None], p, p - n_unlisted)
    np.clip(src, 0, m - 1, out=src)
    in_block = (p >= h[:, None]) & (p < (h + n_unlisted)[:, None])
    desc[...] = np.where(in_block, r[:, None], np.take_along_axis(val, src, axis=1))
    return out


def _sorted_classes(idx, val, r, a, h, n_classes: int, J: int) -> np.ndarray:
    """Class ids of the ``J`` first classes of each implied row in tie-rule
    order (a new array)."""
    c, m = idx.shape
    if r is None or bool((a >= J).all()):
        return idx[:, :J].copy()
    U = n_classes - m
    p = np.arange(J)
    src = np.where(p < a[:, None], p, p - U)
    np.clip(src, 0, m - 1, out=src)
    listed = np.take_along_axis(idx, src, axis=1)
    # Positions a .. h+U-1 hold the classes valued exactly r -- all but the
    # listed classes valued otherwise -- in increasing class id. The i-th
    # smallest id outside a sorted set {s_0 < s_1 < ...} is i plus the count
    # of j with s_j - j <= i; one searchsorted over all rows (each row's keys
    # offset by row * (L + 1)) counts them.
    others = np.sort(np.where(val != r[:, None], idx, n_classes), axis=1)
    gaps = np.where(others < n_classes, others - np.arange(m), n_classes).astype(np.int64)
    offset = np.arange(c, dtype=np.int64)[:, None] * (n_classes + 1)
    i = np.clip(p - a[:, None], 0, n_classes - 1)
    below = np.searchsorted((gaps + offset).ravel(), (i + offset).ravel(), side="right").reshape(c, J)
    tied = i + below - np.arange(c)[:, None] * m
    in_block = (p >= a[:, None]) & (p < (h + U)[:, None])
    return np.where(in_block, tied, listed)


def _check_nonempty(tp: TopKProba, name: str) -> None:
    if len(tp) == 0:
        raise ValueError(f"{name} is empty (0 rows); at least one row is required")


def _check_margin_classes(tp: TopKProba) -> None:
    if not isinstance(tp, TopKProba):
        raise TypeError(f"proba must be a TopKProba; got {type(tp).__name__}")
    _check_nonempty(tp, "proba")
    if tp.n_classes < 2:
        raise ValueError("proba must have at least 2 columns to define a margin")


# -- the array functions ---------------------------------------------------------------
def top1_margin(tp: TopKProba, *, n_jobs=None) -> np.ndarray:
    """Largest minus second-largest probability of each implied row.

    Parameters
    ----------
    tp : TopKProba
    n_jobs : int or None, default=None
        Threads (see :func:`slamlearn.margins.top1_margin`).

    Returns
    -------
    ndarray of shape (n_samples,), in ``tp.dtype``
        Equal to ``slamlearn.margins.top1_margin(tp.to_dense())``.
    """
    _check_margin_classes(tp)
    out = np.empty(len(tp), dtype=tp.dtype)

    def work(rows: slice) -> None:
        idx, val = tp._read(rows)
        r = tp._share(val)
        _, h = _heads(val, r)
        # The dense kernel on the two largest values: same formula, same rounding.
        _rows.top1_margin(_sorted_values(val, r, h, tp.n_classes - tp.m, 2, ascending=False), out[rows])

    _map_blocks(work, len(tp), tp.m, n_jobs)
    return out


def topj_margins(tp: TopKProba, *, max_j: int | None = None, n_jobs=None) -> np.ndarray:
    """Top-j margins of each implied row, for ``j = 1 .. max_j``.

    Parameters
    ----------
    tp : TopKProba
    max_j : int or None, default=None
        Largest ``j`` computed, in ``[1, n_classes - 1]``; None means
        ``n_classes - 1`` (all of them). Work and memory grow with ``max_j``.
    n_jobs : int or None, default=None
        Threads (see :func:`slamlearn.margins.topj_margins`).

    Returns
    -------
    ndarray of shape (n_samples, max_j), in ``tp.dtype``
        Column ``j - 1`` holds the top-j margin; equal to the first ``max_j``
        columns of ``slamlearn.margins.topj_margins(tp.to_dense())``.
    """
    _check_margin_classes(tp)
    L = tp.n_classes
    if max_j is None:
        max_j = L - 1
    if isinstance(max_j, bool) or not isinstance(max_j, numbers.Integral) or not 1 <= max_j <= L - 1:
        raise ValueError(f"max_j must be an integer between 1 and n_classes - 1 ({L - 1}); got {max_j!r}")
    out = np.empty((len(tp), int(max_j)), dtype=tp.dtype)

    def work(rows: slice) -> None:
        idx, val = tp._read(rows)
        r = tp._share(val)
        _, h = _heads(val, r)
        # The dense kernel on the max_j + 1 largest values, in the increasing
        # order it expects: it accumulates from the largest, one at a time.
        asc = _sorted_values(val, r, h, L - tp.m, int(max_j) + 1, ascending=True)
        _rows.topj_margins_sorted(asc, out[rows])

    _map_blocks(work, len(tp), max(tp.m, int(max_j) + 1), n_jobs)
    return out


def label_rank(tp: TopKProba, y, *, n_jobs=None) -> np.ndarray:
    """0-based rank of each row's label in its implied row (0 = top-1).

    Parameters
    ----------
    tp : TopKProba
    y : array-like of shape (n_samples,)
        Labels in ``[0, n_classes)``.
    n_jobs : int or None, default=None
        Threads.

    Returns
    -------
    ndarray of intp, shape (n_samples,)
        Equal to ``slamlearn.margins.label_rank(tp.to_dense(), y)``.
    """
    if not isinstance(tp, TopKProba):
        raise TypeError(f"proba must be a TopKProba; got {type(tp).__name__}")
    _check_nonempty(tp, "proba")
    labels = check_labels(y, n_classes=tp.n_classes, n_samples=len(tp))
    out = np.empty(len(tp), dtype=np.intp)
    U = tp.n_classes - tp.m

    def work(rows: slice) -> None:
        idx, val = tp._read(rows)
        r = tp._share(val)
        lab = labels[rows]
        # The tie rule counted as the dense kernel counts it (classes valued
        # above the label's, or equal with a smaller id), except that the
        # unlisted classes, all valued r, are counted in closed form: going
        # through them one by one is the n x L work this form avoids.
        hit = idx == lab[:, None]
        t = val[np.arange(len(lab)), hit.argmax(axis=1)]
        if r is not None:
            t = np.where(hit.any(axis=1), t, r)
        rank = ((val > t[:, None]) | ((val == t[:, None]) & (idx < lab[:, None]))).sum(axis=1)
        if r is not None:
            unlisted_below = lab - (idx < lab[:, None]).sum(axis=1)
            rank += np.where(r > t, U, np.where(r == t, unlisted_below, 0))
        out[rows] = rank

    _map_blocks(work, len(tp), tp.m, n_jobs)
    return out


def _top_classes(tp: TopKProba, kk: np.ndarray, fill: Callable[[slice, np.ndarray, np.ndarray], None], n_jobs):
    """Call ``fill(rows, classes, keep)`` per block with the first ``max(k)``
    classes of each implied row in tie-rule order and which of them are
    within the row's ``k``."""
    J = int(kk.max())
    p = np.arange(J)

    def work(rows: slice) -> None:
        idx, val = tp._read(rows)
        r = tp._share(val)
        a, h = _heads(val, r)
        fill(rows, _sorted_classes(idx, val, r, a, h, tp.n_classes, J), p < kk[rows, None])

    _map_blocks(work, len(tp), max(tp.m, J), n_jobs)


def _checked_k(tp: TopKProba, k) -> np.ndarray:
    from .margins import _check_k  # margins imports this module

    if not isinstance(tp, TopKProba):
        raise TypeError(f"scores must be a TopKProba; got {type(tp).__name__}")
    _check_nonempty(tp, "scores")
    return _check_k(k, len(tp), tp.n_classes)


def topk_classes(tp: TopKProba, k, *, n_jobs=None) -> np.ndarray:
    """Class ids of each implied row's ``k`` largest entries, best first.

    The compact form of :func:`topk_mask`: ``n_samples x max(k)`` ids rather
    than ``n_samples x n_classes`` booleans.

    Parameters
    ----------
    tp : TopKProba
    k : int or array-like of shape (n_samples,)
        How many classes per row, or for all rows; ``1 <= k <= n_classes``.
    n_jobs : int or None, default=None
        Threads.

    Returns
    -------
    ndarray of intp, shape (n_samples, max(k))
        Row ``i`` holds the first ``k[i]`` classes of the tie-rule order
        (``np.argsort(-tp.to_dense(), axis=1, kind="stable")``), then -1.
    """
    kk = _checked_k(tp, k)
    out = np.empty((len(tp), int(kk.max())), dtype=np.intp)

    def fill(rows, classes, keep):
        classes[~keep] = -1
        out[rows] = classes

    _top_classes(tp, kk, fill, n_jobs)
    return out


def topk_mask(tp: TopKProba, k, *, n_jobs=None) -> np.ndarray:
    """Boolean mask of each implied row's ``k`` largest entries.

    Parameters
    ----------
    tp : TopKProba
    k : int or array-like of shape (n_samples,)
        How many entries to mark, per row or for all rows; ``1 <= k <= L``.
    n_jobs : int or None, default=None
        Threads.

    Returns
    -------
    ndarray of bool, shape (n_samples, n_classes)
        Equal to ``slamlearn.margins.topk_mask(tp.to_dense(), k)``. Dense,
        so meant for a block of rows; :func:`topk_classes` is compact.
    """
    kk = _checked_k(tp, k)
    out = np.zeros(tp.shape, dtype=np.bool_)

    def fill(rows, classes, keep):
        i, j = np.nonzero(keep)
        out[rows][i, classes[i, j]] = True

    _top_classes(tp, kk, fill, n_jobs)
    return out
