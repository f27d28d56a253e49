"""Shared machinery of the slamlearn speed benchmarks.

Every benchmark group compares slamlearn with the reference it must beat, in
the same pytest run. Each contender is timed with ``benchmark.pedantic`` and a
setup function that hands it the next input of a pool of pre-generated,
different inputs, so no input repeats back to back (a repeated small input
lets the branch predictor learn it and flatters the timing).

The contender that carries the targets records them in
``benchmark.extra_info["targets"]``; ``benchmarks/report.py`` reads them back
from the JSON and turns the timings of one run into ratios.

Environment variables
---------------------
SLAMLEARN_BENCH_QUICK=1
    Tiny sizes and few rounds: a smoke run of every benchmark in seconds.
SLAMLEARN_BENCH_PASSES=N
    Run each group N times in interleaved passes (A B C, C B A, A B C, ...);
    ``report.py`` sets it. Default 1.
SLAMLEARN_BENCH_BUDGET=seconds
    Approximate time per contender per pass (default 0.6, quick 0.02).
"""

from __future__ import annotations

import gc
import math
import os
import time

import numpy as np

QUICK = os.environ.get("SLAMLEARN_BENCH_QUICK", "") not in ("", "0")
PASSES = max(1, int(os.environ.get("SLAMLEARN_BENCH_PASSES", "1")))
BUDGET = float(os.environ.get("SLAMLEARN_BENCH_BUDGET", "0.02" if QUICK else "0.6"))
MIN_ROUNDS = 1 if QUICK else 3
MAX_ROUNDS = 20 if QUICK else 400


def size(full, quick):
    """``full`` normally, ``quick`` under SLAMLEARN_BENCH_QUICK=1."""
    return quick if QUICK else full


def faster(ref: str, factor: float) -> dict:
    """Target: the reference takes at least ``factor`` times as long."""
    return {"ref": ref, "kind": "faster", "value": float(factor)}


def slower_at_most(ref: str, factor: float) -> dict:
    """Target: this takes at most ``factor`` times as long as the reference."""
    return {"ref": ref, "kind": "slower_at_most", "value": float(factor)}


def info(ref: str, as_speedup: bool = True) -> dict:
    """No target; report.py still prints the ratio to ``ref`` (as a speed-up,
    or as a time ratio with ``as_speedup=False``)."""
    return {"ref": ref, "kind": "info", "value": None, "show": "faster" if as_speedup else "slower_at_most"}


# -- input pools --------------------------------------------------------------------

_POOLS: dict = {}


def pool(key, build):
    """The pool stored under ``key``, built by ``build()`` on first use.

    Pools live until the benchmark group changes (see conftest.py), so the
    contenders of one group share the same inputs and large pools do not pile
    up in memory.
    """
    if key not in _POOLS:
        _POOLS[key] = build()
    return _POOLS[key]


def clear_pools() -> None:
    _POOLS.clear()
    gc.collect()


class Cycle:
    """``setup`` for ``benchmark.pedantic``: the next input of a pool each call.

    ``make_args(item)`` turns one pool item into the target's positional
    arguments. The position is kept per (group, variant) across passes, so
    later passes continue through the pool instead of restarting it.
    """

    _positions: dict = {}

    def __init__(self, items, key, make_args=None):
        self.items = items
        self.key = key
        self.make_args = make_args or (lambda item: item if isinstance(item, tuple) else (item,))

    def __call__(self):
        i = Cycle._positions.get(self.key, 0)
        Cycle._positions[self.key] = i + 1
        return self.make_args(self.items[i % len(self.items)]), {}


def _busy_seconds() -> float | None:
    """CPU seconds spent outside idle by all processes since boot (Linux)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class OtherLoad:
    """CPU time used by other processes while the block runs: all busy CPU
    time (from /proc/stat, in clock ticks) minus this process's own.
    ``other_s / wall_s`` is the number of cores they kept busy: near 0 means
    the timing had the machine to itself; on 2 cores, 1 means another job
    took a whole core. Tick granularity (10 ms) makes short blocks coarse, so
    report.py sums over a group."""

    def __enter__(self):
        self.busy, self.own, self.wall = _busy_seconds(), _own_seconds(), time.perf_counter()
        return self

    def __exit__(self, *exc):
        busy, own, wall = _busy_seconds(), _own_seconds(), time.perf_counter()
        self.wall_s = wall - self.wall
        self.other_s = None
        if busy is not None and self.busy is not None:
            self.other_s = (busy - self.busy) - (own - self.own)
        return False


def _own_seconds() -> float:
    t = os.times()
    return t.user + t.system


def _timed_call(target, setup, teardown) -> float:
    args, kwargs = setup()
    t0 = time.perf_counter()
    out = target(*args, **kwargs)
    dt = time.perf_counter() - t0
    if teardown is not None:
        teardown(*args, **kwargs)
    del out
    return dt


def _plan(target, setup, teardown) -> tuple[int, int]:
    """Warm the target up, then size (rounds, warmup rounds) to the budget.

    Slow targets (over a quarter second a call) get one untimed call and at
    least two rounds per pass; the rest two untimed calls, one warmup round
    and at least MIN_ROUNDS rounds.
    """
    dt = _timed_call(target, setup, teardown)
    if dt > 0.25 and not QUICK:
        return max(2, math.ceil(BUDGET / dt)), 0
    dt = _timed_call(target, setup, teardown)
    return int(min(MAX_ROUNDS, max(MIN_ROUNDS, math.ceil(BUDGET / max(dt, 1e-7))))), 1


def run(benchmark, *, group, variant, target, items, make_args=None, bench_pass=0, targets=(), teardown=None,
        extra=None):
    """Time ``target`` on the inputs of ``items`` with ``benchmark.pedantic``.

    ``group`` names the comparison, ``variant`` the contender in it (``targets``
    refer to other variants of the same group by name).
    """
    benchmark.group = group
    benchmark.extra_info.update(
        group=group, variant=variant, bench_pass=int(bench_pass), targets=list(targets), quick=QUICK, **(extra or {})
    )
    setup = Cycle(items, (group, variant), make_args)
    if benchmark.disabled:
        return benchmark.pedantic(target, setup=setup, teardown=teardown, rounds=1)
    rounds, warmup = _plan(target, setup, teardown)
    benchmark.extra_info["rounds_per_pass"] = rounds
    with OtherLoad() as load:
        result = benchmark.pedantic(target, setup=setup, teardown=teardown, rounds=rounds, warmup_rounds=warmup)
    benchmark.extra_info["other_cpu_s"] = load.other_s
    benchmark.extra_info["wall_s"] = load.wall_s
    return result


def fmt_n(n: int) -> str:
    """1000000 -> '1e6' (for group names)."""
    e = int(round(math.log10(n))) if n > 0 else 0
    return f"1e{e}" if 10**e == n else str(n)


def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def noisy_teacher(n: int, L: int, seed: int, dtype=np.float64, shift: float = 2.0):
    """Teacher probabilities and true labels: random logits with the true
    class boosted by a random amount, so the teacher is right more often
    when it is confident (top-1 accuracy ~0.4-0.8 depending on L)."""
    g = rng(seed)
    y = g.integers(0, L, n)
    z = g.normal(size=(n, L)).astype(np.float32 if dtype == np.float32 else np.float64) * 1.5
    z[np.arange(n), y] += g.normal(shift, 1.5, n).astype(z.dtype)
    z -= z.max(1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(1, keepdims=True)
    return z.astype(dtype, copy=False), y
