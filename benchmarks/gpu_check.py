"""One prepared script for a machine with a CUDA GPU (the "Scale" issue).

Exercises the CUDA path end to end and records timings:

1. a CNN student (slamlearn's ConvNet) trained with SLaM on synthetic 28x28
   images on ``device="cuda"``, in memory (every row, mask and the loss on
   the device), in float32 and with bf16 autocast;
2. the same from memory-mapped files (pinned-memory batches);
3. the training step time of plain cross entropy vs SLaM (masks
   precomputed) for the same CNN, batch 256, as the ratio of medians;
4. a GPU-trained model pickled and loaded back on the CPU.

Writes ``gpu.json`` and ``gpu.md`` to ``--out``. Without CUDA it says so and
exits with status 0 (nothing to measure). Usage::

    python benchmarks/gpu_check.py --out benchmarks/results/gpu
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _images(n: int, seed: int = 0):
    from slamlearn.datasets import make_noisy_teacher

    d = make_noisy_teacher(n, 28 * 28, 10, random_state=seed)
    X = d.X.reshape(n, 1, 28, 28).astype(np.float32)
    y = d.y.copy()
    y[n // 10:] = -1
    cal = np.zeros(n, dtype=bool)
    cal[n // 20: n // 10] = True
    return X, y, d.teacher_proba.astype(np.float32), cal, d.y


def _step_times(device: torch.device, steps: int = 60):
    """Median step time (forward, loss, backward, Adam) of CE and of SLaM."""
    from slamlearn.losses import slam_loss
    from slamlearn.students import ConvNet

    torch.manual_seed(0)
    model = ConvNet(1, 10).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    B = 256
    xs = torch.randn(8, B, 1, 28, 28, device=device)
    ts = torch.softmax(torch.randn(8, B, 10, device=device) * 2, -1)
    alpha = torch.rand(8, B, device=device) * 0.5 + 0.5
    mask = torch.zeros(8, B, 10, dtype=torch.bool, device=device)
    mask[..., :3] = True

    def ce(i):
        return torch.nn.functional.cross_entropy(model(xs[i]), ts[i])

    def slam(i):
        return slam_loss(model(xs[i]), ts[i], alpha[i], mask[i])

    times = {"ce": [], "slam": []}
    for rnd in range(steps):
        for name, fn in (("ce", ce), ("slam", slam)) if rnd % 2 == 0 else (("slam", slam), ("ce", ce)):
            torch.cuda.synchronize(device)
            start = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            fn(rnd % 8).backward()
            opt.step()
            torch.cuda.synchronize(device)
            if rnd >= 5:  # warm-up excluded
                times[name].append(time.perf_counter() - start)
    med = {k: float(np.median(v)) for k, v in times.items()}
    return {"ce_ms": 1e3 * med["ce"], "slam_ms": 1e3 * med["slam"], "ratio": med["slam"] / med["ce"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/gpu")
    parser.add_argument("--rows", type=int, default=20000)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA device here: nothing to measure (run this on a GPU machine)")
        return 0
    from slamlearn import SLaMClassifier

    device = torch.device("cuda")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {"device": torch.cuda.get_device_name(device), "torch": torch.__version__}
    X, y, P, cal, truth = _images(args.rows)
    common = dict(student="cnn", max_epochs=3, batch_size=256, random_state=0, device="cuda")
    for name, kw in {"in-memory float32": {}, "in-memory bf16": {"precision": "bfloat16"}}.items():
        start = time.perf_counter()
        clf = SLaMClassifier(**common, **kw).fit(X, y, teacher_proba=P, calibration_mask=cal)
        results[name] = {"fit_seconds": time.perf_counter() - start,
                         "epoch_seconds": [h["seconds"] for h in clf.history_],
                         "train_accuracy": float((clf.predict(X) == truth).mean())}
    with tempfile.TemporaryDirectory() as tmp:
        Xm = np.memmap(Path(tmp) / "X.f32", dtype=np.float32, mode="w+", shape=X.shape)
        Xm[:] = X
        Pm = np.memmap(Path(tmp) / "P.f32", dtype=np.float32, mode="w+", shape=P.shape)
        Pm[:] = P
        start = time.perf_counter()
        clf = SLaMClassifier(**common, num_workers=2).fit(Xm, y, teacher_proba=Pm, calibration_mask=cal)
        results["memmap pinned"] = {"fit_seconds": time.perf_counter() - start,
                                    "epoch_seconds": [h["seconds"] for h in clf.history_]}
    cpu_copy = pickle.loads(pickle.dumps(clf))
    results["pickle_to_cpu"] = all(p.device.type == "cpu" for p in cpu_copy.module_.parameters())
    results["step_times"] = _step_times(device)
    (out / "gpu.json").write_text(json.dumps(results, indent=2))
    st = results["step_times"]
    md = [f"# CUDA check on {results['device']} (torch {results['torch']})", "",
          f"Training step, ConvNet on 28x28, batch 256: CE {st['ce_ms']:.2f} ms, SLaM {st['slam_ms']:.2f} ms "
          f"(ratio {st['ratio']:.3f}).", ""]
    for name in ("in-memory float32", "in-memory bf16", "memmap pinned"):
        r = results[name]
        md.append(f"- {name}: fit {r['fit_seconds']:.1f} s, epochs {', '.join(f'{s:.2f}' for s in r['epoch_seconds'])} s")
    md.append(f"- GPU-trained model unpickled with CPU tensors: {results['pickle_to_cpu']}")
    (out / "gpu.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
