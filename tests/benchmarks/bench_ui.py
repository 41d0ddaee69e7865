"""Benchmark: `block ui` cold start to the first served page, and the blocks list at 10,000.

Run: ``.venv/bin/python tests/benchmarks/bench_ui.py [--blocks 10000] [--runs 5]``

Every command runs as an installed package runs: with its bytecode cached (``pip install``
writes it, and so does any first run), so ``PYTHONDONTWRITEBYTECODE`` is not passed on and each
series starts with one untimed run. A line "no bytecode" shows the cold start
with nothing cached (``PYTHONPYCACHEPREFIX`` an empty folder, ``PYTHONDONTWRITEBYTECODE=1``):
every module compiled from source on every start, the worst case (what this benchmark partly
measured before it dropped the variable). CPU times (user + system of the child) are printed
beside wall times: a machine shared by other work inflates them less.

1. **Cold start**: spawn ``block ui --port 0``, read the printed URL, fetch it (the one-time
   sign-in, then ``/blocks`` under the session's path); the clock stops when the page has
   arrived. Baselines in the
   same run: ``python -c pass``, ``block --version`` (the CLI's own cold start) and
   ``block ls --json`` (the CLI listing the same registry: the same imports minus the web
   server).
2. **List of N blocks**: the same server over a registry of N saved blocks; the first,
   a middle and the last page of 50, and a name search, fetched with the access token
   (``BLOCKS_UI_TOKEN``) as a script does. *Server time* is the app's own
   ``Server-Timing`` header (token check to response start); wall time is what the client
   waited. Baseline in the same run: the raw ``sqlite3`` page query plus ``COUNT(*)``
   on the same file, which any paginated list must at least run. The same pages over a
   registry of 10 blocks show whether the cost stays flat.

Targets (issue #11): cold start ≤ 1 s; the 10,000-block list ≤ 200 ms server time.
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import httpx

BLOCK = str(Path(sys.executable).with_name("block"))


def _env(home: Path) -> dict[str, str]:
    # As installed: bytecode cached (see the module doc), no forced terminal size.
    drop = {"PYTHONDONTWRITEBYTECODE", "COLUMNS", "LINES"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["BLOCKS_HOME"] = str(home)
    env.pop("BLOCKS_REGISTRY_URL", None)
    env["BLOCKS_MASTER_KEY"] = base64.urlsafe_b64encode(os.urandom(32)).decode()
    env["BLOCKS_UI_TOKEN"] = base64.urlsafe_b64encode(os.urandom(24)).decode()
    return env


def _spawn(env: dict[str, str]) -> tuple[subprocess.Popen[str], str, str]:
    """`block ui`, its base URL and the one-time code of the sign-in URL it printed."""
    proc = subprocess.Popen(
        [BLOCK, "ui", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    found = re.search(r"(http://127\.0\.0\.1:\d+)/login\?code=([\w-]+)", line)
    if not found:
        proc.kill()
        raise SystemExit(f"block ui printed no URL: {line!r}")
    return proc, found.group(1), found.group(2)


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    proc.wait(timeout=30)


class Sample(NamedTuple):
    wall: float  # seconds the caller waited
    cpu: float  # user + system seconds the child used (less inflated by a busy machine)


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cold_start(env: dict[str, str], runs: int, *, warm_up: bool = True) -> list[Sample]:
    """Spawn to first page; the CPU time includes the server's shutdown after it."""
    samples = []
    for _ in range(runs + warm_up):  # a first, untimed run leaves the bytecode cached
        cpu, start = _cpu(), time.perf_counter()
        proc, base, code = _spawn(env)
        try:
            with httpx.Client(base_url=base, timeout=30) as browser:
                signed_in = browser.get(f"/login?code={code}")  # sets the session cookie
                found = re.search(r'url=([^"]+)"', signed_in.text)  # its refresh to the blocks
                assert found, signed_in.status_code
                page = browser.get(found.group(1))
            elapsed = time.perf_counter() - start
            assert page.status_code == 200 and "Blocks" in page.text, page.status_code
        finally:
            _stop(proc)
        samples.append(Sample(elapsed, _cpu() - cpu))
    return samples[warm_up:]


def command(args: list[str], env: dict[str, str], runs: int) -> list[Sample]:
    samples = []
    subprocess.run(args, env=env, check=True, capture_output=True)  # untimed: bytecode cached
    for _ in range(runs):
        cpu, start = _cpu(), time.perf_counter()
        subprocess.run(args, env=env, check=True, capture_output=True)
        samples.append(Sample(time.perf_counter() - start, _cpu() - cpu))
    return samples


def populate(env: dict[str, str], count: int) -> None:
    """Save `count` String blocks (and a few secrets) through the library, in a subprocess
    that uses the benchmark's BLOCKS_HOME."""
    code = (
        "import sys\n"
        "from blocks.system import Secret, String\n"
        "n = int(sys.argv[1])\n"
        "for i in range(n):\n"
        "    String(value=f'v{i}').save(f'item-{i:05d}')\n"
        "for i in range(min(n, 10)):\n"
        "    Secret(value=f's{i}').save(f'key-{i}')\n"
    )
    subprocess.run([sys.executable, "-c", code, str(count)], env=env, check=True)


def list_pages(env: dict[str, str], total: int, repeat: int) -> dict[str, tuple[float, float]]:
    """{page: (median server ms, median wall ms)} for the blocks list."""
    last = max(1, -(-total // 50))
    queries = {
        "first page": "/blocks",
        "middle page": f"/blocks?page={max(1, last // 2)}",
        "last page": f"/blocks?page={last}",
        "search": "/blocks?q=item-0009",
    }
    proc, base, _ = _spawn(env)
    token = env["BLOCKS_UI_TOKEN"]
    results = {}
    try:
        with httpx.Client(base_url=base, headers={"Authorization": f"token {token}"}) as client:
            client.get("/blocks")  # first request: imports and connections, measured above
            for label, path in queries.items():
                server, wall = [], []
                for _ in range(repeat):
                    start = time.perf_counter()
                    response = client.get(path)
                    wall.append((time.perf_counter() - start) * 1000)
                    assert response.status_code == 200, (path, response.status_code)
                    server.append(float(response.headers["server-timing"].split("dur=")[1]))
                results[label] = (statistics.median(server), statistics.median(wall))
    finally:
        _stop(proc)
    return results


def raw_page(home: Path, total: int, repeat: int) -> dict[str, float]:
    """The floor: the same page queries in raw sqlite3 (median ms)."""
    last = max(1, -(-total // 50))
    offsets = {
        "first page": 0,
        "middle page": (max(1, last // 2) - 1) * 50,
        "last page": (last - 1) * 50,
    }
    conn = sqlite3.connect(home / "registry.db")
    out = {}
    for label, offset in offsets.items():
        samples = []
        for _ in range(repeat):
            start = time.perf_counter()
            conn.execute("SELECT count(*) FROM block_documents").fetchone()
            conn.execute(
                "SELECT * FROM block_documents ORDER BY type_slug, name LIMIT 50 OFFSET ?",
                (offset,),
            ).fetchall()
            samples.append((time.perf_counter() - start) * 1000)
        out[label] = statistics.median(samples)
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        where = "WHERE name LIKE '%item-0009%'"
        conn.execute(f"SELECT count(*) FROM block_documents {where}").fetchone()
        conn.execute(
            "SELECT * FROM block_documents WHERE name LIKE '%item-0009%' "
            "ORDER BY type_slug, name LIMIT 50"
        ).fetchall()
        samples.append((time.perf_counter() - start) * 1000)
    out["search"] = statistics.median(samples)
    conn.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--blocks", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5, help="cold starts to time")
    parser.add_argument("--repeat", type=int, default=20, help="requests per list page")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        small_home, big_home = Path(scratch) / "small", Path(scratch) / "big"
        small, big = _env(small_home), _env(big_home)
        populate(small, 10)
        print(f"cold start ({args.runs} runs; wall median / min, CPU median):")
        python = command([sys.executable, "-c", "pass"], small, args.runs)
        version = command([BLOCK, "--version"], small, args.runs)
        listing = command([BLOCK, "ls", "--json"], small, args.runs)
        ui = cold_start(small, args.runs)
        with tempfile.TemporaryDirectory() as empty:
            # Nothing cached, nothing written: every module compiled from source each time.
            uncached = cold_start(
                {**small, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPYCACHEPREFIX": empty},
                args.runs,
                warm_up=False,
            )
        for label, samples in (
            ("python -c pass", python),
            ("block --version", version),
            ("block ls --json", listing),
            ("block ui -> first page", ui),
            ("  the same, no bytecode", uncached),
        ):
            walls = [sample.wall for sample in samples]
            cpu = statistics.median(sample.cpu for sample in samples)
            print(
                f"  {label:<24} {statistics.median(walls) * 1000:7.0f} ms"
                f"  / {min(walls) * 1000:5.0f} ms   CPU {cpu * 1000:5.0f} ms"
            )
        median = statistics.median(sample.wall for sample in ui)
        ratio = median / statistics.median(sample.wall for sample in listing)
        verdict = "ok" if median <= 1.0 else "OVER the 1 s target"
        print(f"  block ui first page = {ratio:.1f}x block ls --json; target <= 1 s: {verdict}")
        print(f"  load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")

        start = time.perf_counter()
        populate(big, args.blocks)
        print(f"\nsaved {args.blocks} blocks in {time.perf_counter() - start:.1f} s")
        for home, env, total in ((small_home, small, 10), (big_home, big, args.blocks)):
            pages = list_pages(env, total + 10, args.repeat)
            floor = raw_page(home, total + 10, args.repeat)
            print(f"blocks list over {total + 10} blocks (median of {args.repeat}):")
            print(
                f"  {'page':<12} {'server ms':>10} {'wall ms':>9} {'raw sqlite ms':>14} "
                f"{'server/raw':>11}"
            )
            for label, (server, wall) in pages.items():
                print(
                    f"  {label:<12} {server:10.2f} {wall:9.2f} {floor[label]:14.2f} "
                    f"{server / floor[label]:10.1f}x"
                )
            worst = max(server for server, _ in pages.values())
            if total == args.blocks:
                verdict = "ok" if worst <= 200 else "OVER the 200 ms target"
                print(f"  slowest page {worst:.1f} ms server time; target <= 200 ms: {verdict}")


if __name__ == "__main__":
    main()
