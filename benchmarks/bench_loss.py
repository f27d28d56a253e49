"""The SLaM loss, a full training step, and top-k masks in torch (CPU, 2 threads).

Targets (issue 3):

* ``slam_loss`` forward + backward at most 1.6x the time of
  ``F.cross_entropy`` with soft targets (batch 256, L = 10 and 100);
* a training step (forward, loss, backward, Adam) of an MLP with the SLaM loss
  at most 1.05x a plain cross-entropy step with the mask precomputed, and at
  most 1.10x with the mask built inside the step from the batch's teacher
  probabilities (784-256-10 and 3072-512-100, batch 256);
* ``topk_mask_torch(T, K)`` at 1e5 x 1000 (float32, per-row k in 2..8) no
  slower than ``torch.zeros(...).scatter_(1, T.topk(kmax, dim=1).indices, True)``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from _common import fmt_n, pool, run, size, slower_at_most
from slamlearn.losses import slam_loss
from slamlearn.margins import topk_mask_torch

BATCH = 256


@pytest.fixture(autouse=True, scope="module")
def _two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def teacher_torch(n: int, L: int, seed: int):
    """Noisy teacher probabilities (float32): random logits, true class boosted."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, L, generator=g) * 1.5
    y = torch.randint(0, L, (n,), generator=g)
    z[torch.arange(n), y] += 2.0 + 1.5 * torch.randn(n, generator=g)
    return torch.softmax(z, dim=1)


def per_row_k(n: int, L: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(2, min(8, L) + 1, (n,), generator=g)


# -- the loss alone -------------------------------------------------------------------------


def _loss_inputs(L: int, count: int = 64):
    items = []
    for s in range(count):
        g = torch.Generator().manual_seed(s)
        logits = torch.randn(BATCH, L, generator=g).requires_grad_()
        target = teacher_torch(BATCH, L, 10_000 + s)
        alpha = 0.5 + 0.5 * torch.rand(BATCH, generator=g)
        mask = topk_mask_torch(target, per_row_k(BATCH, L, s))
        items.append((logits, target, alpha, mask))
    return items


def _slam_fwd_bwd(logits, target, alpha, mask):
    slam_loss(logits, target, alpha, mask).backward()


def _ce_fwd_bwd(logits, target, alpha, mask):
    F.cross_entropy(logits, target).backward()


def _drop_grad(logits, *rest):
    logits.grad = None


@pytest.mark.parametrize("L", [10, 100], ids=lambda L: f"L{L}")
@pytest.mark.parametrize("variant", ["slam_loss", "cross_entropy"])
def test_loss_forward_backward(benchmark, variant, L, bench_pass):
    items = pool(("loss", L), lambda: _loss_inputs(L))
    run(
        benchmark,
        group=f"loss forward+backward, batch {BATCH}, L={L}",
        variant=variant,
        target=_slam_fwd_bwd if variant == "slam_loss" else _ce_fwd_bwd,
        items=items,
        teardown=_drop_grad,
        bench_pass=bench_pass,
        targets=[slower_at_most("cross_entropy", 1.6)] if variant == "slam_loss" else (),
    )


# -- a full training step ------------------------------------------------------------------

MLPS = [(784, 256, 10), (3072, 512, 100)]


class _Trainer:
    """Data of one training problem and one model + Adam per variant."""

    def __init__(self, d_in: int, hidden: int, L: int):
        n = BATCH * size(32, 4)
        g = torch.Generator().manual_seed(d_in)
        self.X = torch.randn(n, d_in, generator=g)
        self.T = teacher_torch(n, L, d_in + 1)
        self.A = 0.5 + 0.5 * torch.rand(n, generator=g)
        self.K = per_row_k(n, L, d_in + 2)
        self.MASK = topk_mask_torch(self.T, self.K)
        self.batches = [torch.randperm(n, generator=g)[i : i + BATCH] for _ in range(2) for i in range(0, n, BATCH)]
        self.models = {}
        for variant in VARIANTS:
            torch.manual_seed(0)
            model = torch.nn.Sequential(torch.nn.Linear(d_in, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, L))
            self.models[variant] = (model, torch.optim.Adam(model.parameters(), lr=1e-3))

    def ce_step(self, idx):
        model, opt = self.models["CE step"]
        xb, tb = self.X[idx], self.T[idx]
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(xb), tb)
        loss.backward()
        opt.step()

    def slam_step(self, idx):
        model, opt = self.models["SLaM step, mask precomputed"]
        xb, tb, ab, mb = self.X[idx], self.T[idx], self.A[idx], self.MASK[idx]
        opt.zero_grad(set_to_none=True)
        loss = slam_loss(model(xb), tb, ab, mb)
        loss.backward()
        opt.step()

    def slam_step_mask_in_step(self, idx):
        model, opt = self.models["SLaM step, mask built in step"]
        xb, tb, ab, kb = self.X[idx], self.T[idx], self.A[idx], self.K[idx]
        mb = topk_mask_torch(tb, kb)
        opt.zero_grad(set_to_none=True)
        loss = slam_loss(model(xb), tb, ab, mb)
        loss.backward()
        opt.step()


VARIANTS = {
    "CE step": ("ce_step", ()),
    "SLaM step, mask precomputed": ("slam_step", (slower_at_most("CE step", 1.05),)),
    "SLaM step, mask built in step": ("slam_step_mask_in_step", (slower_at_most("CE step", 1.10),)),
}


@pytest.mark.parametrize("mlp", MLPS, ids=lambda m: "-".join(map(str, m)))
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_training_step(benchmark, variant, mlp, bench_pass):
    trainer = pool(("trainer", mlp), lambda: _Trainer(*mlp))
    method, targets = VARIANTS[variant]
    run(
        benchmark,
        group=f"training step (fwd, loss, bwd, Adam), MLP {'-'.join(map(str, mlp))}, batch {BATCH}",
        variant=variant,
        target=getattr(trainer, method),
        items=trainer.batches,
        bench_pass=bench_pass,
        targets=targets,
    )


# -- top-k masks at scale ---------------------------------------------------------------------

MASK_N, MASK_L, KMAX = size(100_000, 2_000), size(1_000, 100), 8


def _mask_inputs():
    items = []
    for s in range(2):
        T = teacher_torch(MASK_N, MASK_L, 20_000 + s)
        K = torch.randint(2, KMAX + 1, (MASK_N,), generator=torch.Generator().manual_seed(s))
        items.append((T, K))
    T, K = items[0]
    assert (topk_mask_torch(T, K).sum(1) == K).all()
    return items


def _topk_scatter(T, K):
    return torch.zeros(T.shape, dtype=torch.bool).scatter_(1, T.topk(KMAX, dim=1).indices, True)


@pytest.mark.parametrize("variant", ["topk_mask_torch", "torch topk + scatter"])
def test_mask_construction(benchmark, variant, bench_pass):
    items = pool("masks", _mask_inputs)
    run(
        benchmark,
        group=f"top-k masks, {fmt_n(MASK_N)} x {MASK_L} float32, k in 2..{KMAX}",
        variant=variant,
        target=topk_mask_torch if variant == "topk_mask_torch" else _topk_scatter,
        items=items,
        bench_pass=bench_pass,
        targets=[slower_at_most("torch topk + scatter", 1.0)] if variant == "topk_mask_torch" else (),
    )
