"""Samples to reach test error eps on gamma-margin halfspaces with noisy labels.

Section 5 of the SLaM paper: Algorithm 3 (SLaM with a linear student and the
adaptive step of Lemma E.3) finds a halfspace with error <= eps after
``T = O(1 / (beta^2 gamma^2 eps^2))`` samples (Theorem 5.1), against the
``O~(1 / (gamma^4 eps^2))`` known for backward loss adjustment (Remark 5.2).
This script measures, for each method, the number of online samples until the
test error against the *clean* labels first drops to eps ("there exists an
iteration t <= T", as the theorem states), over a grid of margins gamma and
several seeds, and fits the log-log slope of that count against 1 / gamma.

All methods run on the same data streams (common random numbers) and every
method is run on all seeds at once by the estimator's own online loop
(:func:`slamlearn.halfspace._online_updates`, vectorised over seeds).

The ground truth is ``w* = e_1``: every method starts at ``w = 0`` and its
updates commute with rotations, so the choice of ``w*`` does not matter and
one test set serves all seeds.

Outputs (under ``--out``): ``samples_to_eps.csv`` (one row per method, gamma
and seed), ``error_curves.csv`` (median and quartiles of the test error at each
checkpoint), ``results.md`` (settings, exact command, summary table, fitted
slopes), ``error_vs_samples.png`` and ``samples_vs_gamma.png``.

Example::

    python benchmarks/halfspace_sample_complexity.py --out benchmarks/results/halfspace
"""

from __future__ import annotations

import argparse
import csv
import math
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from slamlearn.datasets import margin_halfspace_stream
from slamlearn.halfspace import SLaMHalfspaceClassifier, _online_updates

#: The methods, as parameters of SLaMHalfspaceClassifier, and how plots name them.
METHODS: dict[str, dict] = {
    "slam": dict(
        params=dict(method="slam", loss="log_loss", learning_rate="adaptive"),
        label="SLaM, Algorithm 3 (adaptive step 1/r)",
    ),
    "backward-perceptron": dict(
        params=dict(method="backward", loss="perceptron", learning_rate="adaptive"),
        label="backward-adjusted perceptron (Bylander)",
    ),
    "backward-log": dict(
        params=dict(method="backward", loss="log_loss", learning_rate="constant", eta0=1.0),
        label="backward-adjusted logistic, step 1",
    ),
    "sgd-log": dict(
        params=dict(method="sgd", loss="log_loss", learning_rate="constant", eta0=1.0),
        label="SGD on noisy labels, logistic, step 1",
    ),
    "sgd-perceptron": dict(
        params=dict(method="sgd", loss="perceptron", learning_rate="constant", eta0=1.0),
        label="perceptron on noisy labels",
    ),
}
DEFAULT_METHODS = ("slam", "backward-perceptron", "backward-log", "sgd-log")


@dataclass
class GammaRun:
    """Test-error curves of every method and seed for one gamma."""

    gamma: float
    dim: int
    budget: int
    checkpoints: np.ndarray
    errors: dict[str, np.ndarray] = field(default_factory=dict)  # (n_checkpoints, n_seeds)

    def hits(self, method: str, eps: float) -> np.ndarray:
        """Samples until the test error first reaches ``eps``, per seed (inf: not within the budget)."""
        below = self.errors[method] <= eps
        first = np.argmax(below, axis=0)
        return np.where(below.any(axis=0), self.checkpoints[first].astype(np.float64), np.inf)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument(
        "--gammas", type=float, nargs="+", default=[0.4, 0.28, 0.2, 0.14, 0.1, 0.07, 0.05, 0.035], help="margins"
    )
    p.add_argument(
        "--fit-max-gamma",
        type=float,
        default=0.1,
        help="also fit the slope on gamma <= this only (Theorem 5.1 is a statement about small gamma)",
    )
    p.add_argument("--seeds", type=int, default=16, help="independent runs per gamma")
    p.add_argument("--eps", type=float, nargs="+", default=[0.05, 0.02], help="target test errors")
    p.add_argument("--noise", type=float, default=0.2, help="RCN flip rate 1 - alpha")
    p.add_argument(
        "--noise-high",
        type=float,
        default=None,
        help="if set, instance-dependent flip rate in [noise, noise-high] (see make_margin_halfspace)",
    )
    p.add_argument("--distribution", choices=["margin", "ball"], default="margin")
    p.add_argument(
        "--dim",
        default="scaled",
        help="'scaled' for d = ceil(dim-factor / gamma^2), or a fixed dimension",
    )
    p.add_argument("--dim-factor", type=float, default=1.0)
    p.add_argument(
        "--budget-factor",
        type=float,
        default=250.0,
        help="samples per run: budget-factor / gamma^2 (runs that miss eps are censored)",
    )
    p.add_argument("--max-budget", type=int, default=250_000, help="cap on samples per run")
    p.add_argument("--n-test", type=int, default=20_000, help="test points (clean labels)")
    p.add_argument("--checkpoints-per-decade", type=int, default=30)
    p.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS), choices=sorted(METHODS))
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples of the seeds for slope CIs")
    p.add_argument("--seed", type=int, default=0, help="base seed")
    args = p.parse_args(argv)
    if args.dim != "scaled":
        try:
            args.dim = int(args.dim)
        except ValueError:
            p.error(f"--dim must be 'scaled' or an integer; got {args.dim!r}")
    if not all(0 < e < 0.5 for e in args.eps):
        p.error("--eps values must be in (0, 1/2)")
    args.eps = sorted(args.eps, reverse=True)
    return args


def dimension(gamma: float, args) -> int:
    if args.dim == "scaled":
        return max(2, math.ceil(args.dim_factor / gamma**2))
    return int(args.dim)


def method_kwargs(name: str) -> dict:
    """The estimator's validated parameters for ``name``, as keywords of the loop."""
    est = SLaMHalfspaceClassifier(**METHODS[name]["params"])
    est._check_params()
    keys = ("method", "loss", "learning_rate", "eta0", "power_t", "max_step")
    return {k: getattr(est, k) for k in keys}


def run_gamma(gamma: float, args) -> GammaRun:
    d = dimension(gamma, args)
    budget = int(min(args.max_budget, math.ceil(args.budget_factor / gamma**2)))
    n_ck = max(2, int(round(args.checkpoints_per_decade * math.log10(budget))))
    checkpoints = np.unique(np.round(np.geomspace(1, budget, n_ck)).astype(np.int64))
    noise = args.noise if args.noise_high is None else (args.noise, args.noise_high)
    coef = np.zeros(d)
    coef[0] = 1.0
    gamma_id = int(round(gamma * 1e6))

    def stream(key: int, size: int):
        return margin_halfspace_stream(
            d,
            gamma=gamma,
            noise=noise,
            distribution=args.distribution,
            chunk_size=size,
            coef=coef,
            random_state=np.random.RandomState([args.seed, gamma_id, key]),
        )

    test = next(stream(10**6, args.n_test))
    chunk = max(256, min(4096, 4_000_000 // (args.seeds * d)))
    streams = [stream(s, chunk) for s in range(args.seeds)]
    # alpha(x) comes with the data, one value per step, as fit(X, y, alpha=...) takes it.
    kwargs = {m: method_kwargs(m) for m in args.methods}
    W = {m: np.zeros((args.seeds, d)) for m in args.methods}
    run = GammaRun(gamma=gamma, dim=d, budget=budget, checkpoints=checkpoints)
    for m in args.methods:
        run.errors[m] = np.empty((checkpoints.shape[0], args.seeds))
    y_test = test.y.astype(bool)
    t = 0
    X = Y0 = A = None
    pos = chunk
    for j, target in enumerate(checkpoints):
        while t < target:
            if pos == chunk:
                parts = [next(s) for s in streams]
                X = np.stack([q.X for q in parts], axis=1)
                Y0 = np.stack([q.y_noisy for q in parts], axis=1).astype(np.float64)
                A = np.stack([q.alpha for q in parts], axis=1)
                pos = 0
            n = int(min(target - t, chunk - pos))
            for m in args.methods:
                _online_updates(W[m], X[pos : pos + n], Y0[pos : pos + n], A[pos : pos + n], t0=t, **kwargs[m])
            pos += n
            t += n
        # The estimator's prediction rule (positive class where w . x > 0), all
        # methods and seeds in one product.
        scores = test.X @ np.concatenate([W[m] for m in args.methods]).T
        errs = ((scores > 0) != y_test[:, None]).mean(axis=0).reshape(len(args.methods), args.seeds)
        for m, err in zip(args.methods, errs):
            run.errors[m][j] = err
    return run


def median_or_inf(hits: np.ndarray) -> float:
    """Median of first-hit times, censored runs counted as +inf: finite iff most runs hit."""
    return float(np.median(hits))


#: Fewest gammas with a finite median for which a slope is reported.
MIN_POINTS_FOR_SLOPE = 3


def fit_slope(gammas: np.ndarray, medians: np.ndarray) -> tuple[float, float, int]:
    """Least-squares slope and intercept of log(median) on log(1/gamma), on finite medians
    (nan with fewer than :data:`MIN_POINTS_FOR_SLOPE` of them)."""
    ok = np.isfinite(medians)
    if ok.sum() < MIN_POINTS_FOR_SLOPE:
        return float("nan"), float("nan"), int(ok.sum())
    slope, intercept = np.polyfit(np.log(1.0 / gammas[ok]), np.log(medians[ok]), 1)
    return float(slope), float(intercept), int(ok.sum())


def bootstrap_slope(gammas: np.ndarray, hits: list[np.ndarray], n_boot: int, rng) -> tuple[float, float]:
    """5%-95% interval of the slope when the seeds of every gamma are resampled."""
    slopes = []
    for _ in range(n_boot):
        med = np.array([median_or_inf(h[rng.integers(0, h.shape[0], h.shape[0])]) for h in hits])
        s, _, _ = fit_slope(gammas, med)
        if np.isfinite(s):
            slopes.append(s)
    if not slopes:
        return float("nan"), float("nan")
    return float(np.percentile(slopes, 5)), float(np.percentile(slopes, 95))


def compute_fits(runs: list[GammaRun], args) -> dict:
    """Per eps and method: medians per gamma, and slope fits on all gammas and on small gammas."""
    rng = np.random.default_rng(args.seed)
    subsets = {"all": runs, "small": [r for r in runs if r.gamma <= args.fit_max_gamma + 1e-12]}
    fits: dict = {}
    for eps in args.eps:
        for m in args.methods:
            f = {"medians": np.array([median_or_inf(r.hits(m, eps)) for r in runs])}
            for key, subset in subsets.items():
                g = np.array([r.gamma for r in subset])
                hits = [r.hits(m, eps) for r in subset]
                slope, icpt, n_used = fit_slope(g, np.array([median_or_inf(h) for h in hits]))
                ci = bootstrap_slope(g, hits, args.bootstrap, rng)
                f[key] = dict(slope=slope, intercept=icpt, n_used=n_used, n=len(subset), ci=ci, gammas=g)
            fits[eps, m] = f
    return fits


def fmt_count(v: float) -> str:
    return "not reached" if not np.isfinite(v) else f"{v:,.0f}"


def write_outputs(runs: list[GammaRun], args, command: str, elapsed: float) -> dict:
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "samples_to_eps.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["eps", "method", "gamma", "dim", "seed", "samples_to_eps", "budget"])
        for eps in args.eps:
            for r in runs:
                for m in args.methods:
                    for s, h in enumerate(r.hits(m, eps)):
                        w.writerow([eps, m, r.gamma, r.dim, s, "" if np.isinf(h) else int(h), r.budget])
    with open(out / "error_curves.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["method", "gamma", "dim", "samples", "median_error", "q25_error", "q75_error"])
        for r in runs:
            for m in args.methods:
                q = np.percentile(r.errors[m], [50, 25, 75], axis=1)
                for j, c in enumerate(r.checkpoints):
                    w.writerow([m, r.gamma, r.dim, int(c), f"{q[0, j]:.5f}", f"{q[1, j]:.5f}", f"{q[2, j]:.5f}"])

    fits = compute_fits(runs, args)
    beta = 0.5 - (args.noise if args.noise_high is None else args.noise_high)
    noise_desc = (
        f"RCN, flip rate {args.noise}"
        if args.noise_high is None
        else f"instance-dependent flip rate in [{args.noise}, {args.noise_high}]"
    )
    lines = [
        "# Samples to test error eps: gamma-margin halfspaces with noisy labels",
        "",
        "Generated by `benchmarks/halfspace_sample_complexity.py`. Command:",
        "",
        "```",
        command,
        "```",
        "",
        f"- data: `make_margin_halfspace(distribution={args.distribution!r})`, {noise_desc} "
        f"(beta = |1/2 - alpha| >= {beta:g}); ground truth w* = e_1",
        "- dimension: "
        + (f"d = ceil({args.dim_factor:g} / gamma^2)" if args.dim == "scaled" else f"d = {args.dim}"),
        f"- test error against clean labels on {args.n_test:,} fresh points, "
        f"at {args.checkpoints_per_decade} log-spaced checkpoints per decade",
        f"- samples to eps = first checkpoint with test error <= eps; {args.seeds} seeds per gamma; "
        f"budget min({args.budget_factor:g} / gamma^2, {args.max_budget:,}) samples (censored beyond)",
        "- slope: least squares of log(median samples to eps) on log(1/gamma), on the gammas whose "
        f"median was reached (nan if fewer than {MIN_POINTS_FOR_SLOPE}); 90% interval from "
        f"{args.bootstrap} bootstrap resamples of the seeds",
        "- methods: " + "; ".join(f"`{m}` = {METHODS[m]['label']} {METHODS[m]['params']}" for m in args.methods),
        f"- wall time: {elapsed:.0f} s",
        "",
    ]
    for eps in args.eps:
        lines += [f"## eps = {eps:g}: median samples to eps (interquartile range; seeds reached)", ""]
        header = "| gamma | d | budget | 1/(beta^2 gamma^2 eps^2) | " + " | ".join(args.methods) + " |"
        lines += [header, "|" + "---|" * (4 + len(args.methods))]
        for i, r in enumerate(runs):
            cells = []
            for m in args.methods:
                h = r.hits(m, eps)
                q25, q75 = np.percentile(h, [25, 75])
                reached = int(np.isfinite(h).sum())
                med = fits[eps, m]["medians"][i]
                cells.append(f"{fmt_count(med)} ({fmt_count(q25)}-{fmt_count(q75)}; {reached}/{h.shape[0]})")
            theory = 1.0 / (beta**2 * r.gamma**2 * eps**2)
            lines.append(f"| {r.gamma:g} | {r.dim} | {r.budget:,} | {theory:,.0f} | " + " | ".join(cells) + " |")
        lines += [
            "",
            f"Fitted log-log slope of samples to eps = {eps:g} against 1/gamma:",
            "",
            f"| method | slope, all gammas | 90% interval | slope, gamma <= {args.fit_max_gamma:g} | 90% interval |",
            "|---|---|---|---|---|",
        ]
        for m in args.methods:
            a, b = fits[eps, m]["all"], fits[eps, m]["small"]
            lines.append(
                f"| {m} | {a['slope']:.2f} ({a['n_used']}/{a['n']} gammas) | [{a['ci'][0]:.2f}, {a['ci'][1]:.2f}] | "
                f"{b['slope']:.2f} ({b['n_used']}/{b['n']} gammas) | [{b['ci'][0]:.2f}, {b['ci'][1]:.2f}] |"
            )
        lines.append("")
    lines += [
        "Theorem 5.1 bounds SLaM by a slope of at most 2; Remark 5.2 cites slope 4 for backward "
        "adjustment (an upper bound from its analysis, not a measured rate).",
        "",
    ]
    (out / "results.md").write_text("\n".join(lines))
    plot(runs, args, fits, out)
    return fits


def plot(runs: list[GammaRun], args, fits: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_m = len(args.methods)
    ncols = min(n_m, 2)
    nrows = math.ceil(n_m / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(6 * ncols, 4.2 * nrows), squeeze=False, sharey=True)
    cmap = plt.get_cmap("viridis")
    for ax, m in zip(axes.flat, args.methods):
        for i, r in enumerate(runs):
            q = np.percentile(r.errors[m], [50, 25, 75], axis=1)
            color = cmap(i / max(1, len(runs) - 1))
            ax.plot(r.checkpoints, q[0], color=color, label=f"gamma={r.gamma:g} (d={r.dim})")
            ax.fill_between(r.checkpoints, q[1], q[2], color=color, alpha=0.15, linewidth=0)
        for eps in args.eps:
            ax.axhline(eps, color="k", linestyle=":", linewidth=1)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_ylim(1e-3, 0.6)
        ax.set_title(METHODS[m]["label"], fontsize=10)
        ax.set_xlabel("samples (online steps)")
        ax.set_ylabel("test error (clean labels)")
        ax.grid(True, which="both", alpha=0.3)
    for ax in list(axes.flat)[n_m:]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7, loc="lower left")
    eps_txt = ", ".join(f"{e:g}" for e in args.eps)
    fig.suptitle(
        f"Median test error of the last iterate vs samples (band: quartiles over {args.seeds} seeds); "
        f"dotted: eps = {eps_txt}",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(out / "error_vs_samples.png", dpi=120)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(args.eps), figsize=(7 * len(args.eps), 5.2), squeeze=False)
    inv = np.array([1.0 / r.gamma for r in runs])
    markers = "osD^vP"
    for ax, eps in zip(axes.flat, args.eps):
        for k, m in enumerate(args.methods):
            f = fits[eps, m]
            med = f["medians"]
            hits = [r.hits(m, eps) for r in runs]
            lo = np.array([np.percentile(h, 25) for h in hits])
            hi = np.array([np.percentile(h, 75) for h in hits])
            ok = np.isfinite(med)
            a, b = f["all"], f["small"]
            line = ax.errorbar(
                inv[ok],
                med[ok],
                yerr=[med[ok] - lo[ok], np.where(np.isfinite(hi[ok]), hi[ok], med[ok]) - med[ok]],
                fmt=markers[k % len(markers)],
                capsize=3,
                label=f"{m}: {a['slope']:.2f} all; {b['slope']:.2f} [{b['ci'][0]:.2f}, {b['ci'][1]:.2f}] small gamma",
            )
            color = line[0].get_color()
            for fit, style in ((a, ":"), (b, "-")):
                used = fit["gammas"][np.isin(fit["gammas"], [r.gamma for r, o in zip(runs, ok) if o])]
                if np.isfinite(fit["slope"]) and used.size >= 2:
                    xs = np.geomspace(1.0 / used.max(), 1.0 / used.min(), 50)
                    ax.plot(xs, np.exp(fit["intercept"]) * xs ** fit["slope"], style, color=color, linewidth=1)
        # Guide lines through the first method's median at the largest gamma <= fit-max-gamma.
        ref = fits[eps, args.methods[0]]["medians"]
        anchor = [i for i, r in enumerate(runs) if r.gamma <= args.fit_max_gamma + 1e-12 and np.isfinite(ref[i])]
        if anchor:
            x0, y0 = inv[anchor[0]], ref[anchor[0]]
            xs = np.geomspace(inv.min(), inv.max(), 50)
            ax.plot(xs, y0 * (xs / x0) ** 2, color="0.4", linestyle="--", linewidth=0.8, label="guide: slope 2")
            ax.plot(xs, y0 * (xs / x0) ** 4, color="0.4", linestyle="-.", linewidth=0.8, label="guide: slope 4")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("1 / gamma")
        ax.set_ylabel(f"samples to test error <= {eps:g} (median, quartiles)")
        ax.set_title(
            f"eps = {eps:g}: slopes fitted on all gammas (dotted), gamma <= {args.fit_max_gamma:g} (solid)",
            fontsize=10,
        )
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, title="log-log slope (90% CI)", title_fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "samples_vs_gamma.png", dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    args = parse_args(argv)
    shown = argv if argv is not None else sys.argv[1:]
    command = "python " + " ".join(shlex.quote(a) for a in ["benchmarks/halfspace_sample_complexity.py", *shown])
    start = time.perf_counter()
    runs = []
    for gamma in sorted(args.gammas, reverse=True):
        t0 = time.perf_counter()
        r = run_gamma(gamma, args)
        runs.append(r)
        summary = ", ".join(f"{m} {fmt_count(median_or_inf(r.hits(m, args.eps[0])))}" for m in args.methods)
        print(
            f"gamma={gamma:g} d={r.dim} budget={r.budget:,}: median samples to eps={args.eps[0]:g}: {summary} "
            f"[{time.perf_counter() - t0:.1f} s]",
            flush=True,
        )
    fits = write_outputs(runs, args, command, time.perf_counter() - start)
    for eps in args.eps:
        for m in args.methods:
            a, b = fits[eps, m]["all"], fits[eps, m]["small"]
            print(
                f"eps={eps:g} {m}: slope {a['slope']:.2f} on all gammas, {b['slope']:.2f} "
                f"(90% CI {b['ci'][0]:.2f}-{b['ci'][1]:.2f}) on gamma <= {args.fit_max_gamma:g}"
            )
    print(f"wrote {args.out}/ in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
