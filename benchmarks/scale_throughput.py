"""Throughput and peak memory at scale (the "Scale" issue).

Measures, each case in a fresh process so that peak memory is its own:

* ``TeacherCalibrator.transform`` on 1e7 x 10 teacher probabilities (float32),
  from an in-memory array and from a memory-mapped file;
* one training epoch of ``SLaMClassifier`` (MLP student) on 2e6 rows, with
  the rows in memory and read batch by batch from memory-mapped files.

Peak memory is the largest anonymous resident memory (``RssAnon``: heap, not
the page cache of mapped files) seen by a sampler thread every 2 ms, minus the
value after imports. Usage::

    python benchmarks/scale_throughput.py --out benchmarks/results/scale [--rows 10000000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def _rss_anon_kb() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    return 0


class PeakMemory:
    """Sample RssAnon in a thread; ``peak_mb`` is the growth over the start."""

    def __init__(self):
        self.base = _rss_anon_kb()
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_anon_kb())
            time.sleep(0.002)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_anon_kb())

    @property
    def peak_mb(self) -> float:
        return (self.peak - self.base) / 1024


def _case(name: str, workdir: str, rows: int, train_rows: int) -> dict:
    """Run one measurement in this process (called in a child process)."""
    import numpy as np
    import torch

    from slamlearn import SLaMClassifier, TeacherCalibrator
    from slamlearn.datasets import make_noisy_teacher

    torch.set_num_threads(2)
    work = Path(workdir)
    if name.startswith("transform"):
        d = make_noisy_teacher(5000, 10, 10, random_state=0)
        cal = TeacherCalibrator(k="auto").fit(d.teacher_proba.astype(np.float32), d.y)
        path = work / "proba.f32"
        shape = (rows, 10)
        if name == "transform-memory":
            data = np.fromfile(path, dtype=np.float32).reshape(shape)
        else:
            data = np.memmap(path, dtype=np.float32, mode="r", shape=shape)
        cal.transform(data[:1000])  # warm up
        with PeakMemory() as mem:
            start = time.perf_counter()
            out = cal.transform(data)
            seconds = time.perf_counter() - start
        return {"case": name, "rows": rows, "seconds": seconds, "rows_per_s": rows / seconds,
                "peak_extra_mb": mem.peak_mb, "output_mb": out.nbytes / 2**20}
    # one training epoch
    n, d_feat, L = train_rows, 32, 10
    X_path, P_path = work / "X.f32", work / "P.f32"
    y = np.load(work / "y.npy")
    if name == "epoch-memory":
        X = np.fromfile(X_path, dtype=np.float32).reshape(n, d_feat)
        P = np.fromfile(P_path, dtype=np.float32).reshape(n, L)
    else:
        X = np.memmap(X_path, dtype=np.float32, mode="r", shape=(n, d_feat))
        P = np.memmap(P_path, dtype=np.float32, mode="r", shape=(n, L))
    alpha = np.full((y == -1).sum(), 0.7)
    clf = SLaMClassifier(max_epochs=1, batch_size=1024, random_state=0, device="cpu",
                         module__hidden_layer_sizes=(128,), in_memory=name == "epoch-memory")
    with PeakMemory() as mem:
        start = time.perf_counter()
        clf.fit(X, y, teacher_proba=P, alpha=alpha, k=3)
        seconds = time.perf_counter() - start
    return {"case": name, "rows": n, "seconds": seconds, "rows_per_s": n / seconds,
            "epoch_seconds": clf.history_[-1]["seconds"], "epoch_rows_per_s": n / clf.history_[-1]["seconds"],
            "peak_extra_mb": mem.peak_mb}


def _prepare(workdir: Path, rows: int, train_rows: int) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    with open(workdir / "proba.f32", "wb") as fh:
        for s in range(0, rows, 1_000_000):
            p = rng.dirichlet(np.ones(10) * 0.3, size=min(1_000_000, rows - s)).astype(np.float32)
            p /= p.sum(1, keepdims=True)
            p.tofile(fh)
    n = train_rows
    with open(workdir / "X.f32", "wb") as fh:
        for s in range(0, n, 1_000_000):
            rng.normal(size=(min(1_000_000, n - s), 32)).astype(np.float32).tofile(fh)
    with open(workdir / "P.f32", "wb") as fh:
        for s in range(0, n, 1_000_000):
            p = rng.dirichlet(np.ones(10), size=min(1_000_000, n - s)).astype(np.float32)
            p /= p.sum(1, keepdims=True)
            p.tofile(fh)
    y = np.full(n, -1, dtype=np.int64)
    y[: n // 20] = rng.integers(0, 10, n // 20)
    np.save(workdir / "y.npy", y)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/scale")
    parser.add_argument("--rows", type=int, default=10_000_000, help="rows for the calibrator transform")
    parser.add_argument("--train-rows", type=int, default=2_000_000, help="rows for the training epoch")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.case:  # child process
        print(json.dumps(_case(args.case, args.workdir, args.rows, args.train_rows)))
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        _prepare(Path(tmp), args.rows, args.train_rows)
        for case in ("transform-memory", "transform-memmap", "epoch-memory", "epoch-memmap"):
            cmd = [sys.executable, __file__, "--case", case, "--workdir", tmp, "--rows", str(args.rows),
                   "--train-rows", str(args.train_rows)]
            res = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
            print(res, flush=True)
            results.append(res)
    (out / "scale.json").write_text(json.dumps(results, indent=2))
    lines = ["| case | rows | seconds | rows/s | peak extra memory (MB) |", "|---|---|---|---|---|"]
    for r in results:
        rate = r.get("epoch_rows_per_s", r["rows_per_s"])
        secs = r.get("epoch_seconds", r["seconds"])
        lines.append(f"| {r['case']} | {r['rows']:,} | {secs:.2f} | {rate:,.0f} | {r['peak_extra_mb']:.0f} |")
    table = "\n".join(lines)
    (out / "scale.md").write_text(
        f"# Throughput and peak memory at scale\n\nCommand: `python benchmarks/scale_throughput.py --out {args.out} "
        f"--rows {args.rows} --train-rows {args.train_rows}`\n\n{table}\n\n"
        "Peak extra memory: largest anonymous RSS during the call above its value just before it, so an "
        "in-memory input (1e7 x 10 float32 is 381 MB; 2e6 x 32 features plus 2e6 x 10 probabilities are 320 MB) "
        "is not counted, and a memory-mapped one never is (page cache). "
        "The transform output (n x 2 float64) is part of the peak. Epoch rows/s is one epoch of SLaM training "
        "(MLP 32-128-10, batch 1024, 2 threads), from the history record.\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
