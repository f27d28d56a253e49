"""Figures for the experiment (matplotlib, installed with the ``plots`` extra).

* :func:`plot_accuracy_vs_labeled` -- Figure 2 of the paper: student accuracy
  against the labeled-set size, one line per method, error bars over trials.
* :func:`plot_calibration` -- Figure 1: the isotonic alpha(margin) curve over
  the validation points, next to a reliability diagram of alpha against the
  teacher's observed accuracy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .margins import label_rank, top1_margin

__all__ = ["plot_accuracy_vs_labeled", "plot_calibration"]


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("plots need matplotlib: pip install 'slamlearn[plots]'") from None
    return plt


def plot_accuracy_vs_labeled(table: dict, path, *, title: str = "") -> Path:
    """Accuracy (mean +- std over trials) against labeled examples, per method."""
    plt = _pyplot()
    sizes = table["sizes"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, cells in table["rows"].items():
        pts = [(s, c) for s, c in zip(sizes, cells) if c is not None]
        if not pts:
            continue
        xs = [s for s, _ in pts]
        ax.errorbar(xs, [100 * c[0] for _, c in pts], yerr=[100 * c[1] for _, c in pts], capsize=3,
                    marker="o" if name != "Teacher" else "s", linestyle="--" if name == "Teacher" else "-",
                    linewidth=2.5 if name == "slam" else 1.2, label=name)
    ax.set_xlabel("labeled examples (size of A)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_xscale("log")
    ax.set_xticks(sizes)
    ax.set_xticklabels([str(s) for s in sizes])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    ax.set_title(title or "Student accuracy vs labeled examples")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _out_of_fold_alpha(calibrator, proba: np.ndarray, y: np.ndarray, n_splits: int = 5) -> np.ndarray:
    """alpha for each validation row from a calibrator fitted without it, so
    the reliability diagram is not judged on the points it was fitted on."""
    from sklearn.base import clone
    from sklearn.model_selection import KFold

    alpha = np.empty(proba.shape[0])
    for fit_rows, held in KFold(n_splits, shuffle=True, random_state=0).split(proba):
        alpha[held] = clone(calibrator).fit(proba[fit_rows], y[fit_rows]).predict(proba[held])
    return alpha


def plot_calibration(calibrator, proba: np.ndarray, y: np.ndarray, path, *, title: str = "", n_bins: int = 10) -> Path:
    """Figure 1 style: alpha(margin) over the validation points, and a
    reliability diagram of out-of-fold alpha (5-fold) against the observed
    top-1 accuracy per bin."""
    plt = _pyplot()
    margin = top1_margin(proba)
    correct = (label_rank(proba, y) == 0).astype(float)
    alpha = _out_of_fold_alpha(calibrator, proba, y)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    jitter = np.random.default_rng(0).uniform(-0.03, 0.03, correct.shape[0])
    ax1.scatter(margin, correct + jitter, s=6, color="0.6", alpha=0.5, label="validation (margin, correct)")
    grid = np.linspace(0, 1, 501)
    ax1.step(grid, calibrator.alpha_steps_.predict(grid), where="post", color="C0", linewidth=2,
             label=f"isotonic alpha (lb={calibrator.lower_bound})")
    ax1.set_xlabel("teacher top-1 margin")
    ax1.set_ylabel("alpha / correctness")
    ax1.set_ylim(-0.08, 1.08)
    ax1.legend(fontsize=8, loc="lower right")
    ax1.set_title("alpha(x) by isotonic regression")
    bins = np.quantile(alpha, np.linspace(0, 1, n_bins + 1))
    which = np.clip(np.searchsorted(bins, alpha, side="right") - 1, 0, n_bins - 1)
    pred = [alpha[which == b].mean() for b in range(n_bins) if (which == b).any()]
    obs = [correct[which == b].mean() for b in range(n_bins) if (which == b).any()]
    ax2.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
    ax2.plot(pred, obs, "o-", color="C1", label="out-of-fold alpha vs observed accuracy")
    ax2.set_xlabel("mean predicted alpha (bin)")
    ax2.set_ylabel("observed teacher accuracy (bin)")
    ax2.set_xlim(0, 1.02)
    ax2.set_ylim(0, 1.02)
    ax2.legend(fontsize=8, loc="upper left")
    ax2.set_title("reliability diagram (validation set, 5-fold)")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
