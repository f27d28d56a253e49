"""Shared fixtures and helpers for the test suite."""

import numpy as np
import pytest
import torch
from hypothesis import settings

settings.register_profile("ci", max_examples=60, deadline=None)
settings.load_profile("ci")


@pytest.fixture(autouse=True)
def _small_torch():
    # Tests use small models; two threads keep them quick and repeatable.
    torch.set_num_threads(2)
    yield


def noisy_teacher(n, L, *, accuracy_shift=2.0, seed=0, dtype=np.float64):
    """Teacher probabilities whose top-1 is right more often when confident."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, L, n)
    logits = rng.normal(size=(n, L)) * 1.5
    logits[np.arange(n), y] += rng.normal(accuracy_shift, 1.5, n)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    return p.astype(dtype), y
