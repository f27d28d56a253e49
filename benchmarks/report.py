"""Run the speed benchmarks and print one markdown table per group, with ratios.

    python benchmarks/report.py                      # full run, 5 interleaved passes
    python benchmarks/report.py -k "alpha_fit"       # one family of groups alone
    python benchmarks/report.py --quick --passes 2   # seconds-long smoke run
    python benchmarks/report.py --from-json a.json b.json   # re-render saved runs

The benchmarks run once under pytest-benchmark with ``--benchmark-json``;
SLAMLEARN_BENCH_PASSES makes every group run in interleaved passes (A B C,
C B A, A B C, ...; see conftest.py), so the contenders of a comparison are
timed side by side and drift in the machine's load hits them alike. Every
ratio below comes from the timings of one run.

For each comparison the table gives

* the ratio of the medians over all rounds (the verdict),
* the range of the per-pass ratios (how much the verdict moves with the load),
* the ratio of the minimums (the least-disturbed rounds), and
* the target and PASS/FAIL; ``(noisy)`` marks a verdict that the per-pass
  range straddles, ``(loaded)`` one measured while other processes kept more
  than a quarter of a core busy on average (read from /proc/stat around each
  benchmark); both are worth re-running alone (``-k``) on a quiet machine.

With several ``--from-json`` files, a group found in a later file replaces
the same group of an earlier one (re-runs of single groups).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections import OrderedDict
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_OUT = HERE / "results" / "speed"


# -- formatting -----------------------------------------------------------------------------


def fmt_time(seconds: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def fmt_ratio(r: float) -> str:
    return f"{r:.3g}"


def target_text(t: dict) -> str:
    if t["kind"] == "faster":
        return f"≥ {t['value']:g}× faster"
    if t["kind"] == "slower_at_most":
        return "no slower" if t["value"] == 1.0 else f"≤ {t['value']:g}× the time"
    return "— (reported only)"


# -- statistics -----------------------------------------------------------------------------


class Variant:
    def __init__(self, name: str):
        self.name = name
        self.by_pass: dict[int, list[float]] = {}
        self.targets: list[dict] = []
        self.extra: dict = {}
        self.other_load: list[tuple[float, float]] = []  # (other processes' CPU s, wall s)

    def add(self, bench: dict):
        info = bench["extra_info"]
        data = bench["stats"].get("data") or [bench["stats"]["median"]]
        self.by_pass.setdefault(int(info.get("bench_pass", 0)), []).extend(data)
        if info.get("targets"):
            self.targets = info["targets"]
        if info.get("other_cpu_s") is not None and info.get("wall_s"):
            self.other_load.append((float(info["other_cpu_s"]), float(info["wall_s"])))
        for key, value in info.items():
            if key not in ("group", "variant", "bench_pass", "targets", "rounds_per_pass", "other_cpu_s",
                           "wall_s"):
                self.extra[key] = value

    @property
    def rounds(self) -> list[float]:
        return [t for p in sorted(self.by_pass) for t in self.by_pass[p]]

    @property
    def median(self) -> float:
        return statistics.median(self.rounds)

    @property
    def minimum(self) -> float:
        return min(self.rounds)

    def quartiles(self) -> tuple[float, float]:
        r = self.rounds
        if len(r) < 2:
            return r[0], r[0]
        q = statistics.quantiles(r, n=4)
        return q[0], q[2]

    def pass_median(self, p: int) -> float:
        return statistics.median(self.by_pass[p])


def ratio(kind: str, mine: float, ref: float) -> float:
    """The ratio in the direction of the target: speed-up for 'faster',
    time ratio otherwise."""
    return ref / mine if kind == "faster" else mine / ref


def passes(kind: str, value: float | None, r: float) -> bool | None:
    if kind == "faster":
        return r >= value
    if kind == "slower_at_most":
        return r <= value
    return None


def load_groups(paths: list[Path]) -> tuple["OrderedDict[str, OrderedDict[str, Variant]]", list[dict]]:
    groups: OrderedDict = OrderedDict()
    metas = []
    for path in paths:
        doc = json.loads(Path(path).read_text())
        metas.append({"file": str(path), "datetime": doc.get("datetime"), "machine": doc.get("machine_info", {}),
                      "extra": doc.get("slamlearn_report", {})})
        fresh: OrderedDict = OrderedDict()
        for bench in doc["benchmarks"]:
            info = bench.get("extra_info", {})
            group = info.get("group") or bench.get("group") or bench["name"]
            variant = info.get("variant") or bench["name"]
            fresh.setdefault(group, OrderedDict()).setdefault(variant, Variant(variant)).add(bench)
        for group, variants in fresh.items():
            groups[group] = variants  # a later file replaces the group (in place)
    return groups, metas


def other_load(variants) -> tuple[float, float | None] | None:
    """Cores kept busy by other processes while the group ran: over the whole
    group, and the largest over its benchmarks that ran at least a second
    (shorter windows are too coarse for /proc/stat's 10 ms ticks)."""
    loads = [x for v in variants.values() for x in v.other_load]
    if not loads:
        return None
    wall = sum(w for _, w in loads)
    mean = max(0.0, sum(o for o, _ in loads) / wall) if wall > 0 else 0.0
    long = [max(0.0, o / w) for o, w in loads if w >= 1.0]
    return mean, (max(long) if long else None)


def load_text(variants) -> str:
    load = other_load(variants)
    if load is None:
        return "n/a"
    return f"{load[0]:.2f} / " + ("–" if load[1] is None else f"{load[1]:.2f}")


def comparisons(variants: "OrderedDict[str, Variant]"):
    """(variant, target, ratio of medians, per-pass (lo, hi), ratio of mins, verdict)."""
    rows = []
    for v in variants.values():
        for t in v.targets:
            ref = variants.get(t["ref"])
            if ref is None:
                continue
            kind = t["kind"] if t["kind"] != "info" else t.get("show", "faster")
            r = ratio(kind, v.median, ref.median)
            common = sorted(set(v.by_pass) & set(ref.by_pass))
            per_pass = [ratio(kind, v.pass_median(p), ref.pass_median(p)) for p in common] or [r]
            r_min = ratio(kind, v.minimum, ref.minimum)
            verdict = passes(t["kind"], t["value"], r)
            noisy = verdict is not None and any(passes(t["kind"], t["value"], x) != verdict for x in per_pass)
            rows.append((v, ref, t, kind, r, (min(per_pass), max(per_pass)), r_min, verdict, noisy))
    return rows


def ratio_text(kind: str, r: float) -> str:
    return f"{fmt_ratio(r)}× faster" if kind == "faster" else f"{fmt_ratio(r)}× the time"


#: Mean cores used by other processes above which a group's verdict is marked "(loaded)".
LOADED = 0.25


def verdict_text(verdict, noisy, loaded=False) -> str:
    if verdict is None:
        return "—"
    notes = [n for n, on in (("noisy", noisy), ("loaded", loaded)) if on]
    return ("PASS" if verdict else "**FAIL**") + (f" ({', '.join(notes)})" if notes else "")


def render(groups, metas) -> str:
    out = []
    for meta in metas:
        m = meta["machine"]
        cpu = m.get("cpu", {}).get("brand_raw", "?")
        extra = meta["extra"]
        line = (f"Run {meta['datetime']} ({Path(meta['file']).name}): {cpu}, {extra.get('cpus', '?')} cores, "
                f"Python {m.get('python_version', '?')}")
        if extra.get("separately"):
            reruns = sum(len(a["loads"]) - 1 for a in extra.get("attempts", []))
            line += (f"; passes={extra.get('passes')}, quick={extra.get('quick')}; each group run on its own after "
                     f"waiting for a quiet machine, {reruns} re-run(s) of loaded groups, least-loaded attempt kept")
        elif extra:
            line += (f"; passes={extra.get('passes')}, quick={extra.get('quick')}, "
                     f"load average before/after: {extra.get('load_before')} / {extra.get('load_after')}")
        out.append(line + "  ")
    out.append("")
    summary = []
    for group, variants in groups.items():
        load = other_load(variants)
        loaded = load is not None and load[0] > LOADED
        out.append(f"### {group}\n")
        out.append(f"Cores used by other processes while this group ran (whole group / worst benchmark of ≥ 1 s): "
                   f"{load_text(variants)}\n")
        out.append("| variant | median | min | q1–q3 | rounds (passes) |")
        out.append("|---|---|---|---|---|")
        for v in variants.values():
            q1, q3 = v.quartiles()
            out.append(f"| {v.name} | {fmt_time(v.median)} | {fmt_time(v.minimum)} | "
                       f"{fmt_time(q1)}–{fmt_time(q3)} | {len(v.rounds)} ({len(v.by_pass)}) |")
        rows = comparisons(variants)
        if rows:
            out.append("")
            out.append("| comparison | ratio of medians | per-pass range | ratio of mins | target | result |")
            out.append("|---|---|---|---|---|---|")
            for v, ref, t, kind, r, (lo, hi), r_min, verdict, noisy in rows:
                out.append(f"| {v.name} vs {ref.name} | {ratio_text(kind, r)} | {fmt_ratio(lo)}–{fmt_ratio(hi)} | "
                           f"{fmt_ratio(r_min)} | {target_text(t)} | {verdict_text(verdict, noisy, loaded)} |")
                summary.append((group, v, ref, t, kind, r, lo, hi, verdict, noisy, loaded, load_text(variants)))
        out.append("")
    if summary:
        out.append("### Summary\n")
        out.append("| group | comparison | median | reference median | ratio | per-pass range | target | result "
                   "| other load (cores: group / worst) |")
        out.append("|---|---|---|---|---|---|---|---|---|")
        for group, v, ref, t, kind, r, lo, hi, verdict, noisy, loaded, load in summary:
            out.append(f"| {group} | {v.name} vs {ref.name} | {fmt_time(v.median)} | {fmt_time(ref.median)} | "
                       f"{ratio_text(kind, r)} | {fmt_ratio(lo)}–{fmt_ratio(hi)} | {target_text(t)} | "
                       f"{verdict_text(verdict, noisy, loaded)} | {load} |")
        out.append("")
    return "\n".join(out)


# -- running --------------------------------------------------------------------------------


def busy_cores(window: float = 3.0) -> float | None:
    """Cores busy (all processes) over ``window`` seconds, from /proc/stat."""

    def sample():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return sum(v[:8]) - v[3] - v[4]

    try:
        a = sample()
        time.sleep(window)
        b = sample()
    except (OSError, ValueError, IndexError):
        return None
    return (b - a) / os.sysconf("SC_CLK_TCK") / window


def wait_quiet(threshold: float, max_wait: float) -> float | None:
    """Wait (at most ``max_wait`` s) until other processes keep fewer than
    ``threshold`` cores busy; returns the last reading."""
    start = time.time()
    said = -1.0
    while True:
        busy = busy_cores()
        if busy is None or busy < threshold or time.time() - start > max_wait:
            return busy
        if time.time() - said > 30:
            said = time.time()
            print(f"  waiting for a quiet machine ({busy:.2f} cores busy)", file=sys.stderr, flush=True)


def run_pytest(args, out_dir: Path, tag: str, nodeids=None) -> Path:
    """One pytest-benchmark run; returns its JSON (with the run's settings)."""
    json_path = out_dir / f"run-{tag}.json"
    log_path = out_dir / f"run-{tag}.log"
    env = dict(os.environ)
    env["SLAMLEARN_BENCH_PASSES"] = str(args.passes)
    if args.quick:
        env["SLAMLEARN_BENCH_QUICK"] = "1"
    if args.budget is not None:
        env["SLAMLEARN_BENCH_BUDGET"] = str(args.budget)
    cmd = [sys.executable, "-m", "pytest", *(nodeids or [str(HERE)]), "--benchmark-only",
           f"--benchmark-json={json_path}", "-p", "no:cacheprovider", "-q",
           "--benchmark-columns=min,median,rounds", "--benchmark-sort=name"]
    if args.k and not nodeids:
        cmd += ["-k", args.k]
    cmd += args.pytest_args
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    shown = cmd if not nodeids else cmd[:3] + [f"<{len(nodeids)} benchmarks>"] + cmd[3 + len(nodeids):]
    print(f"running: {' '.join(shown)}\n  log: {log_path}", file=sys.stderr, flush=True)
    with open(log_path, "w") as log:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    load_after = " ".join(f"{x:.2f}" for x in os.getloadavg())
    tail = log_path.read_text().strip().splitlines()[-1:] or ["(no output)"]
    print(f"  pytest: {tail[0]}", file=sys.stderr, flush=True)
    if proc.returncode != 0 or not json_path.exists():
        sys.exit(f"pytest failed (exit {proc.returncode}); see {log_path}")
    doc = json.loads(json_path.read_text())
    doc["slamlearn_report"] = {"passes": args.passes, "quick": bool(args.quick), "cpus": os.cpu_count(),
                               "load_before": load_before, "load_after": load_after, "k": args.k}
    json_path.write_text(json.dumps(doc))
    return json_path


def collect_groups(args) -> list[list[str]]:
    """Node ids of the benchmarks, one list per group, in run order."""
    listing = Path(args.out_dir) / ".groups.json"
    env = dict(os.environ, SLAMLEARN_BENCH_PASSES=str(args.passes), SLAMLEARN_BENCH_LIST=str(listing))
    if args.quick:
        env["SLAMLEARN_BENCH_QUICK"] = "1"
    cmd = [sys.executable, "-m", "pytest", str(HERE), "--collect-only", "-q", "-p", "no:cacheprovider"]
    if args.k:
        cmd += ["-k", args.k]
    subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, check=True)
    groups: OrderedDict = OrderedDict()
    for key, nodeid in json.loads(listing.read_text()):
        groups.setdefault(key, []).append(nodeid)
    listing.unlink()
    return list(groups.values())


def group_load(path: Path) -> float:
    groups, _ = load_groups([path])
    loads = [other_load(v) for v in groups.values()]
    return max((x[0] for x in loads if x is not None), default=0.0)


def run_separately(args, out_dir: Path, stamp: str) -> Path:
    """Each group in its own pytest run, after waiting for a quiet machine;
    a group measured under load is re-run (up to --retries times) and the
    least-loaded attempt is kept, whatever its timings. Returns one merged JSON."""
    chosen, attempts_log = [], []
    for i, nodeids in enumerate(collect_groups(args)):
        attempts = []
        for attempt in range(1 + args.retries):
            quiet = wait_quiet(args.quiet_below, args.max_wait)
            path = run_pytest(args, out_dir, f"{stamp}-g{i:02d}-a{attempt}", nodeids)
            load = group_load(path)
            attempts.append((load, attempt, path))
            print(f"  group {i}: other load {load:.2f} cores (machine before start: {quiet})", file=sys.stderr)
            if load <= LOADED:
                break
        load, attempt, path = min(attempts)
        chosen.append(path)
        attempts_log.append({"group": i, "kept_attempt": attempt, "loads": [round(a[0], 3) for a in attempts]})
    merged = json.loads(chosen[0].read_text())
    merged["benchmarks"] = [b for p in chosen for b in json.loads(p.read_text())["benchmarks"]]
    merged["slamlearn_report"].update(separately=True, attempts=attempts_log, load_before=None, load_after=None)
    out = out_dir / f"run-{stamp}.json"
    out.write_text(json.dumps(merged))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--passes", type=int, default=5, help="interleaved passes per group (default 5)")
    p.add_argument("--quick", action="store_true", help="tiny sizes (SLAMLEARN_BENCH_QUICK=1)")
    p.add_argument("--budget", type=float, default=None, help="seconds per contender per pass (default 0.6)")
    p.add_argument("-k", default=None, help="pytest -k expression: run only some benchmarks")
    p.add_argument("--out-dir", default=str(DEFAULT_OUT), help="where the JSON and the log go")
    p.add_argument("--from-json", nargs="+", type=Path, default=None, help="render saved runs, do not run")
    p.add_argument("--markdown", type=Path, default=None, help="also write the tables to this file")
    p.add_argument("--separately", action="store_true",
                   help="run each group in its own pytest run, after waiting for a quiet machine, and re-run "
                        "groups measured under load (shared machines)")
    p.add_argument("--retries", type=int, default=2, help="with --separately: re-runs of a loaded group")
    p.add_argument("--quiet-below", type=float, default=0.15,
                   help="with --separately: cores busy that count as quiet (default 0.15)")
    p.add_argument("--max-wait", type=float, default=300.0,
                   help="with --separately: seconds to wait for quiet before running anyway")
    p.add_argument("--strict", action="store_true", help="exit with status 1 when a target is missed")
    p.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = p.parse_args(argv)

    if args.from_json:
        paths = args.from_json
    else:
        out_dir = Path(args.out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = run_separately(args, out_dir, stamp) if args.separately else run_pytest(args, out_dir, stamp)
        (out_dir / "latest.json").write_text(path.read_text())
        paths = [path]
    groups, metas = load_groups(paths)
    text = render(groups, metas)
    print(text)
    if args.markdown:
        args.markdown.write_text(text)
    failed = [row for g in groups.values() for row in comparisons(g) if row[7] is False]
    return 1 if failed and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
