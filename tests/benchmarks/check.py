"""Report: every hot-path benchmark run briefly, each ratio printed beside its target (#27).

Run: ``.venv/bin/python tests/benchmarks/check.py [--rounds 1] [--baseline /path/to/old/tree]``

A report for people, not a CI gate: timings on a shared machine are noisy, so each figure is a
ratio measured inside one run of its script (ours against a floor or a peer in the same
process), the median over ``--rounds`` runs. With ``--baseline`` each script also runs on that
tree's code (its ``blocks`` first on ``PYTHONPATH``, the same script), interleaved run by run
with ours, so the old and new columns saw the same load. The load average is printed with
every run. Scripts are run with brief arguments; run one alone for its full table.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Row:
    """One figure: where it is printed (`pattern`'s first group) and what it should be."""

    path: str
    script: str
    pattern: str
    target: float
    unit: str = "x"
    at_most: bool = True  # False: the figure should be at least `target`

    def verdict(self, value: float) -> str:
        met = value <= self.target if self.at_most else value >= self.target
        return "met" if met else "MISSED"

    def goal(self) -> str:
        return f"{'<=' if self.at_most else '>='} {self.target:g}{self.unit}"


#: Each script with the brief arguments it runs with here.
SCRIPTS = {
    "bench_runtime.py": ["--ops", "4000", "--cached-ops", "1000", "--repeats", "1"],
    "bench_secrets.py": ["--no-prefect", "--ops", "500"],
    "bench_scale.py": ["--sizes", "10,10000", "--samples", "30"],
    "bench_persist.py": ["--mb", "128", "--repeat", "1"],
}

ROWS = [
    Row("cached hit, local, pickle / diskcache", "bench_runtime.py",
        r"ours / diskcache \(hit\)\s+([\d.]+) x", 0.7),
    Row("cached miss, fsync=False / diskcache", "bench_runtime.py",
        r"ours \(fsync=False\) / diskcache\s+([\d.]+) x", 1.2),
    Row("warm Secret.load().get() / floor", "bench_secrets.py",
        r"floor: raw sqlite3 \+ AES-GCM.*?ours = ([\d.]+)x", 1.5),
    Row("first read of a document not verified / floor", "bench_secrets.py",
        r"first read of these bytes.*?ours = ([\d.]+)x", 2.0),
    Row("save / floor", "bench_secrets.py", r"raw sqlite3 UPDATE.*?ours = ([\d.]+)x", 2.5),
    Row("300 .submit() on threads / bare ThreadPoolExecutor", "bench_runtime.py",
        r"threads / bare ThreadPoolExecutor\s+([\d.]+) x", 0.8),
    Row("plain task overhead in a flow", "bench_runtime.py",
        r"overhead over bare call\s+([\d.]+) µs", 0.7, " µs"),
    Row("block ls, 10,000 rows / floor", "bench_scale.py",
        r"^\s*block ls \(piped\)\s+([\d.]+)x wall", 1.3),
    Row("block results ls, 10,000 rows / floor", "bench_scale.py",
        r"^\s*block results ls \(piped\)\s+([\d.]+)x wall", 1.3),
    Row("block results prune, 10,000 rows / floor", "bench_scale.py",
        r"^\s*block results prune \(half expired\)\s+([\d.]+)x wall", 1.3),
    Row("block results prune, 10,000 rows", "bench_scale.py",
        r"^\s*block results prune \(half expired\)\s+([\d.]+) s \(", 0.3, " s"),
    Row("cold python -c import + first load, over dependencies", "bench_secrets.py",
        r"ours = dependencies \+ (-?[\d.]+) s", 0.015, " s"),
    Row("read a large record / raw open().read()", "bench_persist.py",
        r"read throughput vs raw open\(\)\.read\(\):\s+([\d.]+)x", 0.7, "x", at_most=False),
]  # fmt: skip


def run(script: str, code: Path | None) -> tuple[str, float]:
    """The output of `script` (from this folder) on our code, or on the tree at `code`, and
    the one-minute load average when it finished."""
    env = dict(os.environ)
    if code is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(code), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, str(HERE / script), *SCRIPTS[script]],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        print(f"  {script} failed ({done.returncode}): {' | '.join(tail)}", file=sys.stderr)
    return done.stdout, os.getloadavg()[0]


def figure(row: Row, output: str) -> float | None:
    found = re.search(row.pattern, output, re.MULTILINE)
    return float(found.group(1)) if found else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1, help="runs of each script (median)")
    parser.add_argument("--baseline", type=Path, help="an older tree, run interleaved with ours")
    parser.add_argument("--only", nargs="*", choices=sorted(SCRIPTS), help="these scripts only")
    args = parser.parse_args()
    scripts = args.only or list(SCRIPTS)
    trees: list[tuple[str, Path | None]] = [("ours", None)]
    if args.baseline is not None:
        trees.append(("baseline", args.baseline.resolve()))
    values: dict[tuple[str, str], list[float]] = {}
    loads: list[float] = []
    started = time.perf_counter()
    for script in scripts:
        for round_ in range(args.rounds):
            for tree, code in trees:
                output, load = run(script, code)
                loads.append(load)
                print(f"  {script} on {tree} code, round {round_ + 1}: load average {load:.1f}")
                for row in ROWS:
                    if row.script == script:
                        value = figure(row, output)
                        if value is not None:
                            values.setdefault((row.path, tree), []).append(value)
    print(
        f"\ncheck: Python {sys.version.split()[0]}, median of {args.rounds} run(s) per script, "
        f"{time.perf_counter() - started:.0f} s; load average {min(loads):.1f}-{max(loads):.1f} "
        f"on {os.cpu_count()} CPUs (a report, not a gate: rerun on a quiet machine)"
    )
    width = max(len(row.path) for row in ROWS)
    header = f"{'path':<{width}}  {'ours':>9}  {'target':>10}  verdict"
    if args.baseline is not None:
        header += f"  {'baseline':>9}"
    print(header + "  script")
    print("-" * (len(header) + 20))
    for row in ROWS:
        if row.script not in scripts:
            continue
        cells = []
        for tree, _ in trees:
            measured = values.get((row.path, tree))
            cells.append(statistics.median(measured) if measured else None)
        ours = cells[0]
        shown = "not found" if ours is None else f"{ours:.3g}{row.unit}"
        line = f"{row.path:<{width}}  {shown:>9}  {row.goal():>10}  "
        line += f"{'' if ours is None else row.verdict(ours):<7}"
        if args.baseline is not None:
            old = cells[1]
            line += f"  {'n/a' if old is None else f'{old:.3g}{row.unit}':>9}"
        print(f"{line}  {row.script}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
