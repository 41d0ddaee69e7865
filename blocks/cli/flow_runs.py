"""``block flow-run ls | inspect | logs | cancel``: runs of deployments and their history.

Example (shell):
    $ block flow-run ls --deployment my-etl-flow/daily-etl --state Failed
    $ block flow-run inspect 3f2a9c01
    $ block flow-run cancel 3f2a9c01
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import click

from blocks.cli._output import (
    echo_json,
    echo_json_array,
    iso,
    local_time,
    note,
    print_pairs,
    print_table,
)

#: Seconds between two reads of a followed run's log.
FOLLOW_POLL_SECONDS = 0.25

if TYPE_CHECKING:
    from blocks.deployments._store import FlowRun, RunStore


def _store() -> RunStore:
    from blocks.deployments._store import RunStore

    return RunStore.default()


def _json(
    run: FlowRun, deployment: str, parameters: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "id": run.id,
        "flow": run.flow_name,
        "deployment": deployment,
        "state": run.state.value,
        "message": run.message,
        "worker": run.worker,
        "attempt": run.attempt,
        "slot": iso(run.slot) if run.slot else None,
        "due": iso(run.due),
        "started": iso(run.started) if run.started else None,
        "ended": iso(run.ended) if run.ended else None,
        "parameters": run.parameters if parameters is None else parameters,
        "parent_run_id": run.parent_run_id,
    }


class _Masker:
    """Makes runs' parameters fit to show: those their flow types as secrets, and any value
    that holds a saved or known secret, become ``***`` (reads the saved secrets once)."""

    def __init__(self, store: RunStore) -> None:
        from blocks.cli.ui._run_parameters import saved_secret_values

        self.secrets = saved_secret_values()
        self.hidden = {
            d.id: frozenset(d.document.get("secret_parameters", []))
            for d in store.list_deployments(skip_invalid=True)
        }

    def __call__(self, run: FlowRun) -> dict[str, Any]:
        from blocks.cli.ui._run_parameters import shown_parameters
        from blocks.core._masking import MASK, mask

        hidden = self.hidden.get(run.deployment_id, frozenset())
        return {
            name: MASK if masked else (run.parameters[name] if mask(text) == text else mask(text))
            for name, text, masked in shown_parameters(run.parameters, self.secrets, hidden)
        }


def _names(store: RunStore) -> dict[str, str]:
    return {d.id: d.full_name for d in store.list_deployments()}


@click.group("flow-run")
def flow_run() -> None:
    """Flow runs of deployments: list, inspect, read logs, cancel."""


@flow_run.command("ls")
@click.option("--deployment", "deployment", metavar="FLOW/DEPLOYMENT", help="Only this one's.")
@click.option("--state", "states", multiple=True, help="Only runs in this state (repeatable).")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="JSON for scripts.")
def ls(deployment: str | None, states: tuple[str, ...], limit: int, as_json: bool) -> None:
    """List flow runs, the latest due first."""
    from blocks.deployments._states import RunState

    store = _store()
    deployment_id = store.get_deployment(deployment).id if deployment else None
    by_name = {s.value.lower(): s for s in RunState}
    wanted = []
    for text in states:
        if text.lower() not in by_name:
            raise click.BadParameter(
                f"{text!r} is not a state: {', '.join(s.value for s in RunState)}",
                param_hint="'--state'",
            )
        wanted.append(by_name[text.lower()])
    runs = store.list_runs(deployment_id=deployment_id, states=wanted or None, limit=limit)
    names = _names(store)
    if as_json:
        masked = _Masker(store)
        echo_json_array(_json(r, names.get(r.deployment_id, ""), masked(r)) for r in runs)
        return
    rows = [
        (
            r.id[:12],
            names.get(r.deployment_id, ""),
            r.state.value,
            local_time(r.due),
            r.worker or "",
            str(r.attempt),
        )
        for r in runs
    ]
    if not print_table(("id", "deployment", "state", "due", "worker", "attempt"), rows):
        note("No flow runs.")


@flow_run.command()
@click.argument("run_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="JSON for scripts.")
def inspect(run_id: str, as_json: bool) -> None:
    """Show a run (an id or a unique prefix of 6+ characters) and every state it went through."""
    store = _store()
    run = store.get_run(run_id)
    names = _names(store)
    deployment = names.get(run.deployment_id, "")
    history = store.history(run.id)
    parameters = _Masker(store)(run)
    if as_json:
        echo_json(
            {
                **_json(run, deployment, parameters),
                "history": [
                    {
                        "state": c.state.value,
                        "at": iso(c.at),
                        "attempt": c.attempt,
                        "worker": c.worker,
                        "message": c.message,
                    }
                    for c in history
                ],
                **_task_runs_json(store, run.id),
                "subflow_runs": [c.id for c in store.child_runs(run.id)],
            }
        )
        return
    print_pairs(
        [
            ("deployment", deployment),
            ("state", run.state.value + (f": {run.message}" if run.message else "")),
            ("attempt", f"{run.attempt} of {run.max_attempts}"),
            ("worker", run.worker or ""),
            ("due", local_time(run.due)),
            ("parameters", parameters),
            *((("parent run", run.parent_run_id),) if run.parent_run_id else ()),
            *(
                (
                    f"subflow run {c.id}",
                    c.state.value + (f" ({_names(store).get(c.deployment_id, '')})"),
                )
                for c in store.child_runs(run.id)
            ),
            *(
                (
                    f"  {local_time(c.at)}",
                    f"{c.state.value} (attempt {c.attempt})"
                    + (f" on {c.worker}" if c.worker else "")
                    + (f": {c.message}" if c.message else ""),
                )
                for c in history
            ),
            *_task_run_pairs(store, run.id),
        ],
        title=f"flow run {run.id}",
    )


def _task_runs_json(store: RunStore, run_id: str) -> dict[str, Any]:
    tasks, total = store.task_runs(run_id)
    return {
        "task_runs": [
            {
                "name": task.name,
                "task": task.task_name,
                "state": task.state,
                "cached": task.cached,
                "started": iso(task.started),
                "ended": iso(task.ended),
                "attempt": task.attempt,
                "message": task.message,
            }
            for task in tasks
        ],
        "task_runs_total": total,
    }


def _task_run_pairs(store: RunStore, run_id: str) -> list[tuple[str, Any]]:
    """The run's task runs as ``inspect`` lines (run history: see README "Run history")."""
    tasks, total = store.task_runs(run_id)
    if not total:
        return []
    left_out = (
        f", {total - len(tasks)} more not kept (BLOCKS_RUN_TASK_RUNS)" if total > len(tasks) else ""
    )
    return [
        ("task runs", f"{total}{left_out}"),
        *(
            (
                f"  {local_time(task.started)}",
                f"{task.name} {task.state}{' (cached)' if task.cached else ''} in "
                f"{task.duration:.3f} s" + (f": {task.message}" if task.message else ""),
            )
            for task in tasks
        ),
    ]


@flow_run.command()
@click.argument("run_id", metavar="ID")
@click.option(
    "--follow", "-f", is_flag=True, help="Keep printing new lines until the run has ended."
)
def logs(run_id: str, follow: bool) -> None:
    """Print a run's kept log: its run-logger lines (get_run_logger, log_prints) and what its
    process printed otherwise, each with its time and level."""
    from blocks.deployments._states import FINAL

    store = _store()
    run = store.get_run(run_id)
    after = 0
    while True:
        # Read the state first: lines written before it ended are all read below.
        ended = not follow or store.get_run(run.id).state in FINAL
        for line_id, at, level, message in store.logs(run.id, after=after):
            click.echo(f"{local_time(at)} | {level:<7} | {message}")
            after = line_id
        if ended:
            return
        time.sleep(FOLLOW_POLL_SECONDS)


@flow_run.command()
@click.argument("run_id", metavar="ID")
def cancel(run_id: str) -> None:
    """Cancel a run: not started yet -> Cancelled; running -> its worker ends its processes."""
    store = _store()
    run = store.get_run(run_id)
    state = store.cancel(run.id)
    click.echo(f"Flow run {run.id} is {state.value}.")
