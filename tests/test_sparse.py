"""TopKProba: construction, the missing-mass rule, sparse functions against
the dense ones on to_dense(), and the calibrator on sparse input."""

import numpy as np
import pytest
from conftest import noisy_teacher
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from slamlearn import TeacherCalibrator, TopKProba, label_rank, top1_margin, topj_margins, topk_mask
from slamlearn import sparse

# -- strategies -----------------------------------------------------------------------
# Small integer grids make ties frequent: among listed values, among the
# unlisted classes, and between listed values and the missing-mass share r.


@st.composite
def from_dense_rows(draw):
    """Top-m of rows q / sum(q), q in {0..4}^L: ties at the cut, and r within
    rounding of the m-th value (sometimes above it, sometimes equal)."""
    n, L = draw(st.integers(1, 12)), draw(st.integers(2, 10))
    q = draw(hnp.arrays(np.int64, (n, L), elements=st.integers(0, 4)))
    q[q.sum(1) == 0, 0] = 1
    p = q / q.sum(1, keepdims=True)
    if draw(st.booleans()):
        p = p.astype(np.float32)
    return TopKProba.from_dense(p, draw(st.integers(1, L)))


@st.composite
def dyadic_rows(draw):
    """Rows built from dyadic values (exact sums), so that r equals listed
    values exactly; optionally the smallest listed value is lowered a little
    below r (within the accepted tolerance). Unsorted rows, random class ids."""
    n, L = draw(st.integers(1, 10)), draw(st.integers(2, 10))
    m = draw(st.integers(1, L))
    U, T = L - m, 256
    idx = np.empty((n, m), dtype=np.int64)
    val = np.empty((n, m))
    for i in range(n):
        rq = draw(st.integers(0, 3))
        q = [rq + draw(st.integers(0, 2)) for _ in range(m - 1)]
        q.append(T - U * rq - sum(q))  # listed + U * r = 1 exactly
        v = np.array(q, dtype=float) / T
        if U and draw(st.booleans()):
            j = int(np.argmin(v))
            v[j] = max(v[j] - 2.0**-14, 0.0)  # now below r, by < 1e-3 / (U + 1)
        order = draw(st.permutations(range(m)))
        val[i] = v[order]
        idx[i] = draw(st.permutations(range(L)))[:m]
    if draw(st.booleans()):
        val = val.astype(np.float32)
    return TopKProba(idx, val, L)


sparse_inputs = st.one_of(from_dense_rows(), dyadic_rows())


def _stable_order(d):
    return np.argsort(-d, axis=1, kind="stable")


# -- construction ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "indices, values, L, match",
    [
        ([[0, 1]], [[0.5]], 3, "indices and values must have the same shape"),
        ([0, 1], [0.5, 0.2], 3, "indices must be a 2-D array"),
        ([[0.0, 1.0]], [[0.5, 0.2]], 3, "indices must hold integer class ids"),
        ([[0, 1]], [["a", "b"]], 3, "values must hold real probabilities"),
        ([[0, 1]], [[0.5, 0.2]], 1, r"between 1 and n_classes \(1\) columns"),
        ([[0, 1]], [[0.5, 0.2]], 2.0, "n_classes must be a positive integer"),
        ([[0, 1]], [[0.5, 0.2]], 0, "n_classes must be a positive integer"),
        (np.empty((0, 2), int), np.empty((0, 2)), 3, "at least one row"),
        ([[0, 3]], [[0.5, 0.2]], 3, r"indices must hold class ids in \[0, n_classes\) = \[0, 3\); got 3 at row 0"),
        ([[0, -1]], [[0.5, 0.2]], 3, r"indices must hold class ids .* got -1"),
        ([[0, 1], [2, 2]], [[0.5, 0.2], [0.5, 0.2]], 4, "indices must list distinct classes .* row 1 lists class 2"),
        ([[0, 1]], [[0.5, np.nan]], 3, r"values contains NaN or infinity \(row 0, column 1\)"),
        ([[0, 1]], [[0.5, -0.1]], 3, "values must be non-negative"),
        ([[0, 1]], [[0.7, 0.4]], 3, "values of a row must sum to at most 1"),
        ([[0, 1]], [[0.6, 0.2]], 2, r"values must sum to 1 .* \(m = n_classes = 2\)"),
        # 0.05 listed, but the 3 unlisted classes get 0.25 each: not a top-2
        ([[0, 1]], [[0.2, 0.05]], 5, "values must be each row's top-m probabilities: row 0 lists 0.05"),
    ],
)
def test_construction_errors_are_named(indices, values, L, match):
    with pytest.raises(ValueError, match=match):
        TopKProba(np.asarray(indices), np.asarray(values), L)


def test_construction_tolerance_order_and_views(tmp_path):
    # r = 0.20004 > 0.19996, within 1e-3 / (L - m): accepted
    tp = TopKProba([[2, 1]], [[0.6, 0.19996]], 3)
    assert tp.to_dense()[0, 0] > tp.values[0, 1]
    with pytest.raises(ValueError, match="top-m"):
        TopKProba([[2, 1]], [[0.6, 0.19]], 3)
    # unsorted in-memory rows are put in canonical order (ties by class id)
    tp = TopKProba(np.array([[3, 0, 1], [1, 2, 0]], np.int32), np.array([[0.2, 0.2, 0.5], [0.1, 0.3, 0.6]]), 4)
    assert tp.is_sorted
    np.testing.assert_array_equal(tp.indices, [[1, 0, 3], [0, 2, 1]])
    np.testing.assert_array_equal(tp.values, [[0.5, 0.2, 0.2], [0.6, 0.3, 0.1]])
    assert len(tp) == 2 and tp.shape == (2, 4) and tp.m == 3 and tp.nbytes == 2 * 3 * (4 + 8)
    assert tp.dtype == np.float64 and "m=3" in repr(tp)
    view = tp[1:]
    assert isinstance(view, TopKProba) and np.shares_memory(view.values, tp.values)
    np.testing.assert_array_equal(view.to_dense(), tp.to_dense()[1:])
    np.testing.assert_array_equal(tp.to_dense(slice(1, 2)), tp.to_dense()[1:])
    with pytest.raises(TypeError, match="selected by a slice or a 1-D integer or boolean array"):
        tp[0]
    # integer and boolean row selections copy those rows
    np.testing.assert_array_equal(tp[np.array([1, 0])].to_dense(), tp.to_dense()[[1, 0]])
    np.testing.assert_array_equal(tp.to_dense(np.array([1])), tp.to_dense()[1:])
    np.testing.assert_array_equal(tp[np.array([False, True])].to_dense(), tp.to_dense()[1:])
    # memory-mapped input is neither copied nor reordered in place
    path = tmp_path / "vals.f16"
    mm = np.memmap(path, dtype=np.float16, mode="w+", shape=(2, 3))
    mm[:] = [[0.25, 0.5, 0.125], [0.5, 0.25, 0.125]]
    mtp = TopKProba(np.array([[0, 1, 2], [1, 2, 3]]), mm, 5)
    assert not mtp.is_sorted and mtp.values is mm and mtp.dtype == np.float64
    assert isinstance(mtp[1:].values, np.memmap)
    np.testing.assert_array_equal(mtp.to_dense(), [[0.25, 0.5, 0.125, 0.0625, 0.0625],
                                                   [0.0625, 0.5, 0.25, 0.125, 0.0625]])
    np.testing.assert_array_equal(mtp.copy().indices, [[1, 0, 2], [1, 2, 3]])


def test_from_dense_to_dense_round_trip():
    p, _ = noisy_teacher(50, 7, seed=1)
    L = 7
    full = TopKProba.from_dense(p, L)
    np.testing.assert_array_equal(full.to_dense(), p)  # m = L: exact
    for m in (1, 3, 6):
        tp = TopKProba.from_dense(p, m)
        d = tp.to_dense()
        order = _stable_order(p)[:, :m]
        np.testing.assert_array_equal(np.sort(tp.indices, 1), np.sort(order, 1))
        np.testing.assert_array_equal(np.take_along_axis(d, order, 1), np.take_along_axis(p, order, 1))
        np.testing.assert_allclose(d.sum(1), 1.0)
        rest = np.ones_like(p, dtype=bool)
        np.put_along_axis(rest, order, False, 1)
        r = (1 - np.take_along_axis(p, order, 1).sum(1)) / (L - m)
        np.testing.assert_allclose(d[rest].reshape(50, L - m), np.repeat(r[:, None], L - m, 1))
        back = TopKProba.from_dense(d, m)  # listed values are strictly above r here
        np.testing.assert_array_equal(back.indices, tp.indices)
        np.testing.assert_array_equal(back.values, tp.values)
    f32 = TopKProba.from_dense(p.astype(np.float32), 3)
    assert f32.dtype == np.float32 and f32.to_dense().dtype == np.float32
    with pytest.raises(ValueError, match=r"m must be an integer between 1 and the number of classes \(7\)"):
        TopKProba.from_dense(p, 8)
    with pytest.raises(ValueError, match="rows of proba must sum to 1"):
        TopKProba.from_dense(p * 2, 3)


def test_uniform_rows_tie_everything():
    # each listed value equals r exactly: the order is by class id throughout
    tp = TopKProba([[5, 2, 7]], [[0.125] * 3], 8)
    d = tp.to_dense()
    np.testing.assert_array_equal(d, np.full((1, 8), 0.125))
    np.testing.assert_array_equal(sparse.topk_classes(tp, 8), [np.arange(8)])
    np.testing.assert_array_equal([label_rank(tp, [c])[0] for c in range(8)], np.arange(8))
    np.testing.assert_array_equal(topj_margins(tp), topj_margins(d))


# -- sparse functions == dense functions on to_dense() ---------------------------------
@given(sparse_inputs, st.data())
def test_sparse_functions_equal_dense_on_to_dense(tp, data):
    d = tp.to_dense()
    n, L = d.shape
    assert d.dtype == tp.dtype
    np.testing.assert_array_equal(top1_margin(tp), top1_margin(d))
    mj = topj_margins(d)
    np.testing.assert_array_equal(topj_margins(tp), mj)
    max_j = data.draw(st.integers(1, L - 1))
    np.testing.assert_array_equal(sparse.topj_margins(tp, max_j=max_j), mj[:, :max_j])
    y = data.draw(hnp.arrays(np.int64, n, elements=st.integers(0, L - 1)))
    np.testing.assert_array_equal(label_rank(tp, y), label_rank(d, y))
    k = data.draw(st.one_of(st.integers(1, L), hnp.arrays(np.int64, n, elements=st.integers(1, L))))
    np.testing.assert_array_equal(topk_mask(tp, k), topk_mask(d, k))
    kk = np.broadcast_to(k, (n,))
    ref = _stable_order(d)[:, : kk.max()].copy()
    ref[np.arange(kk.max()) >= kk[:, None]] = -1
    np.testing.assert_array_equal(sparse.topk_classes(tp, k), ref)
    # the same rows read lazily from unsorted storage, in small blocks
    a = data.draw(st.integers(0, n - 1))
    np.testing.assert_array_equal(top1_margin(tp[a:]), top1_margin(d[a:]))


def test_blocks_threads_and_unsorted_storage_agree(monkeypatch, tmp_path):
    p, y = noisy_teacher(3000, 9, seed=2)
    tp = TopKProba.from_dense(np.round(p, 2) / np.round(p, 2).sum(1, keepdims=True), 4)  # ties
    d = tp.to_dense()
    rng = np.random.default_rng(0)
    perm = np.argsort(rng.random(tp.indices.shape), axis=1)
    path = tmp_path / "v.f64"
    mm = np.memmap(path, dtype=np.float64, mode="w+", shape=tp.values.shape)
    mm[:] = np.take_along_axis(tp.values, perm, 1)
    lazy = TopKProba(np.take_along_axis(tp.indices, perm, 1), mm, 9)
    assert not lazy.is_sorted
    monkeypatch.setattr(sparse, "_BLOCK_ENTRIES", 64)  # ~16-row blocks, 2 threads
    np.testing.assert_array_equal(sparse.top1_margin(lazy, n_jobs=2), top1_margin(d))
    np.testing.assert_array_equal(sparse.topj_margins(lazy, n_jobs=2), topj_margins(d))
    np.testing.assert_array_equal(sparse.label_rank(lazy, y, n_jobs=2), label_rank(d, y))
    np.testing.assert_array_equal(sparse.topk_mask(lazy, 5, n_jobs=2), topk_mask(d, 5))


def test_function_errors_are_named():
    tp = TopKProba([[0, 1]], [[0.5, 0.3]], 3)
    with pytest.raises(ValueError, match="y must hold class labels in"):
        label_rank(tp, [3])
    with pytest.raises(ValueError, match="k must be between 1 and the number of classes"):
        topk_mask(tp, 4)
    with pytest.raises(ValueError, match="max_j must be an integer between 1 and n_classes - 1"):
        sparse.topj_margins(tp, max_j=3)
    with pytest.raises(ValueError, match="at least 2 columns"):
        top1_margin(TopKProba([[0]], [[1.0]], 1))


# -- the calibrator -------------------------------------------------------------------
@pytest.mark.parametrize("k", ["auto", "global", 3])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_calibrator_sparse_equals_dense_when_m_is_L(k, dtype):
    p, y = noisy_teacher(400, 6, seed=3, dtype=dtype)
    q, yq = noisy_teacher(700, 6, seed=4, dtype=dtype)
    w = np.random.default_rng(0).random(400)
    dense = TeacherCalibrator(k=k, threshold=0.85).fit(p, y, sample_weight=w)
    sp = TeacherCalibrator(k=k, threshold=0.85).fit(TopKProba.from_dense(p, 6), y, sample_weight=w)
    assert sp.n_features_in_ == 6
    np.testing.assert_array_equal(sp.topk_accuracy_, dense.topk_accuracy_)
    np.testing.assert_array_equal(sp.alpha_steps_.knots, dense.alpha_steps_.knots)
    np.testing.assert_array_equal(sp.alpha_steps_.values, dense.alpha_steps_.values)
    tq = TopKProba.from_dense(q, 6)
    np.testing.assert_array_equal(sp.predict(tq), dense.predict(q))
    np.testing.assert_array_equal(sp.predict_k(tq), dense.predict_k(q))
    np.testing.assert_array_equal(sp.transform(tq), dense.transform(q))
    assert sp.score(tq, yq) == dense.score(q, yq)


@pytest.mark.parametrize("k", ["auto", "global"])
def test_calibrator_top_m_follows_the_missing_mass_rule(k):
    p, y = noisy_teacher(500, 8, seed=5)
    q, yq = noisy_teacher(600, 8, seed=6)
    tp, tq = TopKProba.from_dense(p, 3), TopKProba.from_dense(q, 3)
    sp = TeacherCalibrator(k=k).fit(tp, y)
    ref = TeacherCalibrator(k=k).fit(tp.to_dense(), y)
    np.testing.assert_array_equal(sp.transform(tq), ref.transform(tq.to_dense()))
    assert sp.score(tq, yq) == ref.score(tq.to_dense(), yq)
    # and close to what the full probabilities give, as top-3 keep most of the signal
    full = TeacherCalibrator(k=k).fit(p, y)
    assert np.mean(np.abs(sp.predict(tq) - full.predict(q))) < 0.1


def test_calibrator_chunks_memmap_backed_topk(tmp_path):
    p, y = noisy_teacher(400, 6, seed=7, dtype=np.float32)
    q, _ = noisy_teacher(20_000, 6, seed=8, dtype=np.float32)
    tq = TopKProba.from_dense(q, 4)
    rng = np.random.default_rng(1)
    perm = np.argsort(rng.random(tq.indices.shape), axis=1)  # rows stored unsorted
    ipath, vpath = tmp_path / "idx.i32", tmp_path / "val.f32"
    mi = np.memmap(ipath, dtype=np.int32, mode="w+", shape=tq.indices.shape)
    mv = np.memmap(vpath, dtype=np.float32, mode="w+", shape=tq.values.shape)
    mi[:], mv[:] = np.take_along_axis(tq.indices, perm, 1), np.take_along_axis(tq.values, perm, 1)
    mi.flush(), mv.flush()
    ro = TopKProba(np.memmap(ipath, dtype=np.int32, mode="r", shape=mi.shape),
                   np.memmap(vpath, dtype=np.float32, mode="r", shape=mv.shape), 6)
    assert not ro.is_sorted and isinstance(ro.values, np.memmap)
    whole = TeacherCalibrator(k="auto").fit(p, y)
    # 1 KiB of temporaries forces hundreds of chunks, on every core
    tiny = TeacherCalibrator(k="auto", max_memory=1024, n_jobs=-1).fit(p, y)
    np.testing.assert_array_equal(tiny.transform(ro), whole.transform(tq))
    np.testing.assert_array_equal(tiny.transform(ro), whole.transform(tq.to_dense()))
    np.testing.assert_array_equal(tiny.predict_k(ro), whole.predict_k(tq))


def test_calibrator_sparse_errors():
    p, y = noisy_teacher(100, 5)
    tp = TopKProba.from_dense(p, 2)
    with pytest.raises(ValueError, match="input='logits' cannot be used with a TopKProba"):
        TeacherCalibrator(input="logits").fit(tp, y)
    cal = TeacherCalibrator().fit(p, y)
    with pytest.raises(ValueError, match="input='logits' cannot be used"):
        TeacherCalibrator(input="logits").fit(p, y).predict(tp)
    with pytest.raises(ValueError, match="X has 6 features, but TeacherCalibrator is expecting 5"):
        cal.predict(TopKProba.from_dense(np.full((3, 6), 1 / 6), 2))
    with pytest.raises(ValueError, match=r"y must hold class labels in \[0, 5\)"):
        TeacherCalibrator().fit(tp, np.full(100, 5))
    with pytest.raises(ValueError, match="minimum of 2 is required"):
        TeacherCalibrator().fit(TopKProba([[0]], [[1.0]], 1), [0])
