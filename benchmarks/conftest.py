"""pytest configuration of the speed benchmarks (not part of the test suite).

* collects ``bench_*.py`` files in this folder;
* with SLAMLEARN_BENCH_PASSES=N (set by report.py), parametrizes every
  benchmark with ``bench_pass`` in ``0..N-1`` and orders the items so that the
  contenders of one group run in interleaved passes: A B C, then C B A, then
  A B C, ... Drift in the machine's load then hits every contender alike;
* frees a group's input pools once its last item has run.

Run: ``python -m pytest benchmarks --benchmark-only`` (timings) or
``SLAMLEARN_BENCH_QUICK=1 python -m pytest benchmarks --benchmark-disable -q``
(smoke run). ``python benchmarks/report.py`` prints the ratio tables.
"""

from __future__ import annotations

import json
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

import _common  # noqa: E402


def pytest_collect_file(file_path, parent):
    # Files named on the command line are collected by pytest itself.
    if file_path.suffix == ".py" and file_path.name.startswith("bench_") and not parent.session.isinitpath(file_path):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


def pytest_report_header(config):
    return (
        f"slamlearn benchmarks: quick={_common.QUICK} passes={_common.PASSES} "
        f"budget/contender/pass={_common.BUDGET}s cpus={os.cpu_count()}"
    )


@pytest.fixture
def bench_pass():
    """Index of the interleaved pass (0 when there is only one)."""
    return 0


def pytest_generate_tests(metafunc):
    if "bench_pass" in metafunc.fixturenames and _common.PASSES > 1:
        metafunc.parametrize("bench_pass", range(_common.PASSES), ids=lambda p: f"pass{p}")


def _group_key(item):
    params = getattr(getattr(item, "callspec", None), "params", {})
    rest = tuple(sorted((k, repr(v)) for k, v in params.items() if k not in ("variant", "bench_pass")))
    return (str(item.path), getattr(item, "originalname", item.name), rest)


def _param(item, name, default=None):
    return getattr(getattr(item, "callspec", None), "params", {}).get(name, default)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session, config, items):
    groups: dict = {}
    for item in items:
        groups.setdefault(_group_key(item), []).append(item)
    ordered = []
    for members in groups.values():
        variants = list(dict.fromkeys(_param(it, "variant") for it in members))
        rank = {v: i for i, v in enumerate(variants)}

        def order(it):
            p = _param(it, "bench_pass", 0)
            r = rank[_param(it, "variant")]
            return (p, r if p % 2 == 0 else -r)

        ordered.extend(sorted(members, key=order))
    items[:] = ordered
    listing = os.environ.get("SLAMLEARN_BENCH_LIST")
    if listing:  # report.py --separately: which items make up each group
        with open(listing, "w") as f:
            json.dump([[repr(_group_key(it)), it.nodeid] for it in items], f)


def pytest_runtest_teardown(item, nextitem):
    if nextitem is None or _group_key(nextitem) != _group_key(item):
        _common.clear_pools()
