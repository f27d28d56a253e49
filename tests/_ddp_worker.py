"""Run by tests/test_scale.py under ``torchrun --nproc_per_node=2``: fit the
same SLaMClassifier as the single-process reference and save each rank's
predictions."""

import sys
from pathlib import Path

import numpy as np
import torch

from slamlearn import SLaMClassifier
from slamlearn.datasets import make_noisy_teacher


def problem():
    d = make_noisy_teacher(1200, 10, 5, random_state=0)
    y = d.y.copy()
    y[400:] = -1
    cal = np.zeros(1200, dtype=bool)
    cal[100:400] = True
    return d, y, cal


def estimator(**kw):
    return SLaMClassifier(max_epochs=3, batch_size=100, random_state=0, device="cpu",
                          module__hidden_layer_sizes=(16,), **kw)


if __name__ == "__main__":
    out = Path(sys.argv[1])
    torch.set_num_threads(1)
    d, y, cal = problem()
    clf = estimator(checkpoint_path=str(out / "ckpt.pt")).fit(d.X, y, teacher_proba=d.teacher_proba,
                                                              calibration_mask=cal)
    rank = torch.distributed.get_rank()
    np.save(out / f"rank{rank}.npy", clf.predict_proba(d.X))
    torch.distributed.destroy_process_group()
