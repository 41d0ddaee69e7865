"""``block worker start --pool NAME``: run a work pool's flow runs on this machine.

Example (shell):
    $ block work-pool create my-pool --type process
    $ block worker start --pool my-pool --limit 4
"""

from __future__ import annotations

import signal

import click


@click.group()
def worker() -> None:
    """Workers: claim a work pool's runs and run each in its own process (here, or on a dask
    pool's cluster)."""


@worker.command()
@click.option("--pool", "-p", "pool", required=True, help="The work pool to serve.")
@click.option("--limit", type=click.IntRange(min=1), help="Runs at once (default: no limit).")
@click.option(
    "--run-once", is_flag=True, help="Run every run due now that can be claimed, then exit."
)
@click.option(
    "--path",
    "paths",
    multiple=True,
    type=click.Path(file_okay=False),
    help="A folder whose flows this worker may run (repeatable; default: the current folder).",
)
def start(pool: str, limit: int | None, run_once: bool, paths: tuple[str, ...]) -> None:
    """Claim the pool's due runs and run them until stopped (Ctrl-C or SIGTERM).

    A run's process is stopped with its worker; only entrypoints under the served folders run.
    A missing pool is created as a process pool. A dask pool's runs go to its Dask cluster.
    """
    from blocks.deployments._dask_worker import worker_for

    runner = worker_for(pool, limit=limit, run_once=run_once, paths=paths)
    signal.signal(signal.SIGTERM, runner.stop)
    signal.signal(signal.SIGINT, runner.stop)
    click.echo(
        f"Worker {runner.name} serving pool {pool!r}; folders: "
        + ", ".join(map(str, runner.roots)),
        err=True,
    )
    finished = runner.run()
    click.echo(f"Worker {runner.name} stopped after {finished} run(s).", err=True)
