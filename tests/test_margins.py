"""Margins, label ranks and top-k masks against loop references."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from slamlearn import label_rank, top1_margin, topj_margins, topk_mask, topk_mask_torch
from slamlearn.margins import _topk_mask_torch_ops

# Small value sets make ties frequent, which is where the tie rule matters.
score_rows = st.tuples(st.integers(1, 30), st.integers(2, 40)).flatmap(
    lambda s: hnp.arrays(np.float64, s, elements=st.sampled_from([0.0, 0.1, 0.25, 0.25, 0.5, 0.7, 1.0]))
)


def _stable_order(scores):
    """Reference order: decreasing score, ties by increasing class index."""
    return np.argsort(-scores, axis=1, kind="stable")


@given(score_rows)
def test_margins_match_sorted_reference(p):
    s = -np.sort(-p, axis=1)
    np.testing.assert_allclose(top1_margin(p), s[:, 0] - s[:, 1])
    ref = np.cumsum(s, axis=1)[:, :-1] - s[:, 1:]
    np.testing.assert_allclose(topj_margins(p), ref, atol=1e-12)
    np.testing.assert_allclose(topj_margins(p)[:, 0], top1_margin(p))


@given(score_rows, st.data())
def test_label_rank_matches_stable_order(p, data):
    y = data.draw(hnp.arrays(np.int64, p.shape[0], elements=st.integers(0, p.shape[1] - 1)))
    order = _stable_order(p)
    ref = np.array([int(np.flatnonzero(order[i] == y[i])[0]) for i in range(p.shape[0])])
    np.testing.assert_array_equal(label_rank(p, y), ref)


@given(score_rows, st.data())
def test_topk_mask_matches_loop_and_torch(p, data):
    n, L = p.shape
    k = data.draw(hnp.arrays(np.int64, n, elements=st.integers(1, L)))
    order = _stable_order(p)
    ref = np.zeros_like(p, dtype=bool)
    for i in range(n):
        ref[i, order[i, : k[i]]] = True
    got = topk_mask(p, k)
    np.testing.assert_array_equal(got, ref)
    assert got.sum(1).tolist() == k.tolist()
    t = torch.from_numpy(p)
    np.testing.assert_array_equal(topk_mask_torch(t, torch.from_numpy(k)).numpy(), ref)
    # the device-generic path (used on GPUs) follows the same tie rule
    np.testing.assert_array_equal(_topk_mask_torch_ops(t, torch.from_numpy(k)).numpy(), ref)


@pytest.mark.parametrize("k", [1, 3, 16, 17, 100, 499, 500])
def test_topk_mask_both_kernel_paths(k):
    rng = np.random.default_rng(k)
    p = np.round(rng.random((50, 500)), 2).astype(np.float32)  # many ties
    ref = np.zeros_like(p, dtype=bool)
    order = _stable_order(p)
    ref[np.arange(50)[:, None], order[:, :k]] = True
    np.testing.assert_array_equal(topk_mask(p, k), ref)


def test_large_inputs_use_threads_consistently():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(50), size=20_000)
    k = rng.integers(1, 50, 20_000)
    order = _stable_order(p)
    ref = np.zeros_like(p, dtype=bool)
    for i in range(0, 20_000, 997):
        ref[i, order[i, : k[i]]] = True
        assert (topk_mask(p, k)[i] == ref[i]).all()
    y = rng.integers(0, 50, 20_000)
    ranks = label_rank(p, y)
    assert all(int(np.flatnonzero(order[i] == y[i])[0]) == ranks[i] for i in range(0, 20_000, 997))


def test_bad_input_is_named():
    p = np.full((3, 4), 0.25)
    with pytest.raises(ValueError, match="k must be between 1 and the number of classes"):
        topk_mask(p, 5)
    with pytest.raises(ValueError, match="k must be between 1"):
        topk_mask(p, np.array([0, 1, 2]))
    with pytest.raises(ValueError, match=r"k must be an int or an array of shape \(3,\)"):
        topk_mask(p, np.array([1, 2]))
    with pytest.raises(ValueError, match="scores contains NaN"):
        topk_mask(np.array([[np.nan, 1.0]]), 1)
    with pytest.raises(ValueError, match="scores contains NaN"):
        topk_mask_torch(torch.tensor([[float("nan"), 1.0]]), 1)
    with pytest.raises(ValueError, match="y must hold class labels in"):
        label_rank(p, [0, 1, 4])
    with pytest.raises(ValueError, match="at least 2 columns"):
        top1_margin(np.ones((3, 1)))
    with pytest.raises(TypeError, match="torch.Tensor"):
        topk_mask_torch(p, 1)
