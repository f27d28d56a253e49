"""Command line: ``slamlearn demo`` and ``slamlearn benchmark`` (also ``python -m slamlearn``)."""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

from .data import DATASETS, DatasetNotInstalled, load_dataset, load_file
from .experiment import METHODS, ExperimentConfig, markdown_table, records_to_rows, run_experiment, summarize


def _floats(text: str) -> tuple:
    try:
        vals = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not all(0 < v < 1 for v in vals):
        raise argparse.ArgumentTypeError("fractions must be in (0, 1)")
    return vals


def _ints(text: str) -> tuple:
    try:
        vals = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not all(v > 0 for v in vals):
        raise argparse.ArgumentTypeError("sizes must be positive")
    return vals


def _methods(text: str) -> tuple:
    names = tuple(m.strip() for m in text.split(",") if m.strip())
    unknown = [m for m in names if m not in METHODS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown methods {unknown}; choose from {', '.join(METHODS)}")
    return names


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="slamlearn", description="SLaM distillation experiments")
    sub = p.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="quick comparison on scikit-learn's digits (a couple of minutes)")
    demo.add_argument("--out", default="slamlearn-output/demo", help="output folder (default: %(default)s)")
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    b = sub.add_parser("benchmark", help="the paper's comparison on a dataset")
    src = b.add_mutually_exclusive_group()
    src.add_argument("--dataset", default="digits", choices=DATASETS, help="built-in dataset (default: digits)")
    src.add_argument("--data", help="your own data: .npz with X, y (optional X_test, y_test) or .csv, label last")
    b.add_argument("--data-dir", help="extra folder with dataset files (see the install hints)")
    b.add_argument("--subsample", type=int, help="keep this many rows before splitting")
    b.add_argument("--fractions", type=_floats, default=(0.01, 0.02, 0.05, 0.1),
                   help="labeled fractions of the training pool (default: 0.01,0.02,0.05,0.1)")
    b.add_argument("--sizes", type=_ints, help="labeled-set sizes instead of fractions, e.g. 300,1000")
    b.add_argument("--trials", type=int, default=3)
    b.add_argument("--methods", type=_methods, default=tuple(METHODS),
                   help=f"comma-separated, from: {', '.join(METHODS)}")
    b.add_argument("--n-val", type=int, default=500, help="validation rows the teacher never sees")
    b.add_argument("--max-unlabeled", type=int, help="cap on unlabeled rows per trial")
    b.add_argument("--teacher-hidden", type=int, nargs="+", default=[512])
    b.add_argument("--teacher-epochs", type=int, default=100)
    b.add_argument("--student", default="mlp", choices=("mlp", "linear", "cnn"))
    b.add_argument("--student-hidden", type=int, nargs="+", default=[128])
    b.add_argument("--student-epochs", type=int, default=60)
    b.add_argument("--pretrain-epochs", type=int, default=20)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--device", default="auto")
    b.add_argument("--out", default="slamlearn-output/benchmark")
    b.add_argument("--quiet", action="store_true")
    return p


def _write_outputs(out: Path, data_name: str, records, calibrations, config, command: str) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    table = summarize(records)
    md = markdown_table(table)
    rows = records_to_rows(records)
    with open(out / "results.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    chosen = sorted({(r.n_labeled, r.trial, r.lower_bound, r.threshold, r.k_mode, round(r.mean_k, 2))
                     for r in records})
    calib_lines = "\n".join(f"| {n} | {t} | {lb} | {th} | {km} | {mk} |" for n, t, lb, th, km, mk in chosen)
    (out / "table.md").write_text(
        f"# {data_name}: test accuracy (%), mean ± std over trials\n\n"
        f"Command: `{command}`\n\n{md}\n\n"
        "## Calibrator settings chosen by 5-fold cross-validation on V (never on the test set)\n\n"
        "| labeled | trial | lower_bound | threshold | k | mean k(x) on U |\n|---|---|---|---|---|---|\n"
        f"{calib_lines}\n"
    )
    (out / "config.json").write_text(json.dumps({k: (list(v) if isinstance(v, tuple) else v)
                                                 for k, v in vars(config).items()}, indent=2, default=str))
    files = [out / "results.csv", out / "table.md", out / "config.json"]
    try:
        from .plots import plot_accuracy_vs_labeled, plot_calibration

        files.append(plot_accuracy_vs_labeled(table, out / "accuracy_vs_labeled.png", title=data_name))
        for n_a, (cal, P_v, y_v) in calibrations.items():
            files.append(plot_calibration(cal, P_v, y_v, out / f"calibration_A{n_a}.png",
                                          title=f"{data_name}, {n_a} labeled examples (first trial)"))
    except ImportError as exc:
        print(f"(plots skipped: {exc})", file=sys.stderr)
    return {"table": md, "files": files}


def _progress(quiet: bool, total: int):
    if quiet:
        return None, None
    from tqdm.auto import tqdm

    bar = tqdm(total=total, unit="fit", file=sys.stderr)

    def update(msg: str):
        bar.set_description(msg[:60])
        if not msg.endswith((": teacher", ": calibration")):
            bar.update(1)

    return update, bar


def _run(data, config: ExperimentConfig, out: Path, quiet: bool, command: str) -> int:
    total = len(config.sizes or config.fractions) * config.trials * len(config.methods)
    update, bar = _progress(quiet, total)
    start = time.perf_counter()
    records, calibrations = run_experiment(data, config, progress=update)
    if bar is not None:
        bar.close()
    res = _write_outputs(out, data.name, records, calibrations, config, command)
    print(f"\n{data.name}: test accuracy (%), mean ± std over {config.trials} trials "
          f"({time.perf_counter() - start:.0f} s)\n")
    print(res["table"])
    print("\nwrote: " + ", ".join(str(f) for f in res["files"]))
    return 0


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    command = "slamlearn " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.command == "demo":
        data = load_dataset("digits", random_state=0)
        config = ExperimentConfig(fractions=(0.05, 0.1), trials=2, n_val=200, teacher_epochs=100,
                                  student_epochs=40, pretrain_epochs=20)
        return _run(data, config, Path(args.out), args.quiet, command)
    try:
        if args.data:
            data = load_file(args.data, subsample=args.subsample, random_state=args.seed)
        else:
            data = load_dataset(args.dataset, data_dir=args.data_dir, subsample=args.subsample,
                                random_state=args.seed)
    except DatasetNotInstalled as exc:
        print(f"slamlearn: dataset {args.dataset!r} is not installed.\n{exc}", file=sys.stderr)
        return 2
    config = ExperimentConfig(fractions=args.fractions, sizes=args.sizes, trials=args.trials, methods=args.methods, n_val=args.n_val,
                              max_unlabeled=args.max_unlabeled, teacher_hidden=tuple(args.teacher_hidden),
                              teacher_epochs=args.teacher_epochs, student=args.student,
                              student_hidden=tuple(args.student_hidden), student_epochs=args.student_epochs,
                              pretrain_epochs=args.pretrain_epochs, seed=args.seed, device=args.device)
    return _run(data, config, Path(args.out), args.quiet, command)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
