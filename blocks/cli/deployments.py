"""``block deployment ls | inspect | run | pause | resume | delete``: deployments in the registry.

Example (shell):
    $ block deployment ls
    $ block deployment run my-etl-flow/daily-etl --param date=2024-01-01 --start-in 10m
    $ block deployment pause my-etl-flow/daily-etl
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import click

from blocks.cli._output import echo_json, echo_json_array, iso, note, print_pairs, print_table

if TYPE_CHECKING:
    from blocks.deployments._store import DeploymentRecord, RunStore

#: Next runs shown by `inspect` (and the first of them by `ls`).
NEXT_RUNS = 5


def _store() -> RunStore:
    from blocks.deployments._store import RunStore

    return RunStore.default()


def parse_param(text: str) -> tuple[str, Any]:
    """``k=v``: v as JSON when it parses (``n=3`` is 3, ``x=null`` None), else the text."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise click.BadParameter("expected NAME=VALUE", param_hint="'--param'")
    try:
        return key.strip(), json.loads(value)
    except ValueError:
        return key.strip(), value


def next_runs(deployment: DeploymentRecord, count: int = NEXT_RUNS) -> list[datetime]:
    """The deployment's next slots from its active schedules, each in its schedule's zone."""
    from blocks.deployments.schedules import schedule_from_json

    if deployment.paused:
        return []
    dates: list[datetime] = []
    for entry in deployment.document.get("schedules", []):
        if entry.get("active", True):
            dates += schedule_from_json(entry["schedule"]).get_dates(n=count)
    return sorted(dates)[:count]


def _schedules_text(deployment: DeploymentRecord) -> str:
    parts = []
    for entry in deployment.document.get("schedules", []):
        schedule = entry["schedule"]
        kind = next(k for k in ("cron", "interval", "rrule") if k in schedule)
        zone = f" {schedule['timezone']}" if schedule.get("timezone") else ""
        off = "" if entry.get("active", True) else " (inactive)"
        parts.append(f"{kind} {schedule[kind]}{zone}{off}")
    return "; ".join(parts) or "none"


def _json(deployment: DeploymentRecord) -> dict[str, Any]:
    return {
        "name": deployment.full_name,
        "id": deployment.id,
        "version": deployment.version,
        "work_pool": deployment.pool_name,
        "paused": deployment.paused,
        "created": iso(deployment.created),
        "updated": iso(deployment.updated),
        **deployment.document,
        "next_runs": [iso(d) for d in next_runs(deployment)],
    }


@click.group()
def deployment() -> None:
    """Deployments: flows with a work pool, parameters and schedules."""


@deployment.command("ls")
@click.option("--json", "as_json", is_flag=True, help="JSON for scripts.")
def ls(as_json: bool) -> None:
    """List deployments with their schedules and next run."""
    deployments = _store().list_deployments()
    if as_json:
        echo_json_array(_json(d) for d in deployments)
        return
    rows = []
    for d in deployments:
        upcoming = next_runs(d, 1)
        rows.append(
            (
                d.full_name,
                d.version or "",
                d.pool_name,
                _schedules_text(d),
                "paused" if d.paused else "active",
                upcoming[0].isoformat(" ", "seconds") if upcoming else "",
            )
        )
    if not print_table(("name", "version", "pool", "schedules", "status", "next run"), rows):
        note("No deployments yet: Deployment.build_from_flow(...).apply() makes one.")


@deployment.command()
@click.argument("name", metavar="FLOW/DEPLOYMENT")
@click.option("--json", "as_json", is_flag=True, help="JSON for scripts.")
def inspect(name: str, as_json: bool) -> None:
    """Show one deployment: entrypoint, folder, parameters, schedules, next runs."""
    d = _store().get_deployment(name)
    if as_json:
        echo_json(_json(d))
        return
    doc = d.document
    upcoming = next_runs(d)
    print_pairs(
        [
            ("id", d.id),
            ("version", d.version or ""),
            ("work pool", d.pool_name),
            ("status", "paused" if d.paused else "active"),
            ("entrypoint", doc.get("entrypoint", "")),
            ("path", doc.get("path", "")),
            ("parameters", doc.get("parameters", {})),
            ("tags", ", ".join(doc.get("tags", []))),
            ("schedules", _schedules_text(d)),
            ("catch-up", doc.get("catchup", "latest")),
            ("retries", doc.get("retries", 0)),
            ("next runs", ", ".join(x.isoformat(" ", "seconds") for x in upcoming) or "none"),
        ],
        title=d.full_name,
    )


@deployment.command()
@click.argument("name", metavar="FLOW/DEPLOYMENT")
@click.option("--param", "params", multiple=True, help="NAME=VALUE (JSON or text); repeatable.")
@click.option("--start-in", help="Start later: 30s, 10m, 2h, 1d.")
@click.option(
    "--watch", is_flag=True, help="Follow its states until it ends; exit 1 unless it completes."
)
@click.option(
    "--watch-timeout",
    type=click.FloatRange(min=0),
    help="With --watch: stop following after this many seconds (exit 1).",
)
@click.option("--json", "as_json", is_flag=True, help="JSON for scripts.")
def run(
    name: str,
    params: tuple[str, ...],
    start_in: str | None,
    watch: bool,
    watch_timeout: float | None,
    as_json: bool,
) -> int:
    """Make a run of a deployment now (or --start-in later); a worker of its pool runs it."""
    from blocks.deployments._deployment import check_parameters_by_name
    from blocks.deployments._run_deployment import find_deployment
    from blocks.deployments._store import utcnow

    store = _store()
    d = find_deployment(store, name)
    given = dict(parse_param(text) for text in params)
    check_parameters_by_name(d, given)
    due = utcnow()
    if start_in is not None:
        from blocks.cli.results import parse_duration

        due += parse_duration(start_in)
    flow_run = store.create_run(d, parameters=given, due=due)
    if as_json and not watch:
        echo_json({"id": flow_run.id, "deployment": d.full_name, "due": iso(flow_run.due)})
        return 0
    when = "now" if due - utcnow() < timedelta(seconds=1) else f"at {due:%Y-%m-%d %H:%M:%S} UTC"
    message = f"Created flow run {flow_run.id} of {d.full_name}, due {when} (pool {d.pool_name})."
    if not watch:
        click.echo(message)
        return 0
    click.echo(message, err=True)
    return watch_run(store, flow_run.id, watch_timeout, as_json=as_json)


def watch_run(store: RunStore, run_id: str, timeout: float | None, *, as_json: bool) -> int:
    """Print each state the run goes through (from its state history, so none is missed) until
    it ends; 0 when it completed, else 1."""
    from blocks.cli._output import local_time
    from blocks.deployments._run_deployment import follow_run
    from blocks.deployments._states import FINAL, RunState

    last = None
    shown = 0
    for last in follow_run(store, run_id, timeout=timeout):  # noqa: B007 (read after)
        changes = store.history(run_id)
        for change in changes[shown:]:
            if as_json:
                click.echo(
                    json.dumps(
                        {
                            "id": run_id,
                            "state": change.state.value,
                            "at": iso(change.at),
                            "attempt": change.attempt,
                            "worker": change.worker,
                            "message": change.message,
                        }
                    )
                )
            else:
                click.echo(
                    f"{local_time(change.at)} {change.state.value} (attempt {change.attempt})"
                    + (f" on {change.worker}" if change.worker else "")
                    + (f": {change.message}" if change.message else "")
                )
        shown = len(changes)
    if last is None or last.state not in FINAL:
        click.echo(
            f"Stopped watching flow run {run_id} after {timeout or 0:g} s: it is still "
            f"{last.state.value if last else 'unknown'}.",
            err=True,
        )
        return 1
    return 0 if last.state is RunState.COMPLETED else 1


@deployment.command()
@click.argument("name", metavar="FLOW/DEPLOYMENT")
def pause(name: str) -> None:
    """Stop making runs (its runs still Scheduled are deleted; runs in progress go on)."""
    removed = _store().set_deployment_paused(name, True)
    click.echo(f"Paused {name} ({removed} scheduled run(s) removed).")


@deployment.command()
@click.argument("name", metavar="FLOW/DEPLOYMENT")
def resume(name: str) -> None:
    """Make runs again from now on."""
    from blocks.deployments._scheduler import schedule_deployment

    store = _store()
    store.set_deployment_paused(name, False)
    made = schedule_deployment(store, store.get_deployment(name))
    click.echo(f"Resumed {name} ({made} run(s) scheduled).")


@deployment.command()
@click.argument("name", metavar="FLOW/DEPLOYMENT")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def delete(name: str, yes: bool) -> None:
    """Delete a deployment and its run history (refused while a run is in progress)."""
    import sys

    store = _store()
    store.get_deployment(name)
    if not yes:
        if not sys.stdin.isatty():
            raise click.UsageError(f"Pass --yes to delete {name} without a terminal to confirm.")
        click.confirm(f"Delete {name} and its run history?", abort=True)
    store.delete_deployment(name)
    click.echo(f"Deleted {name}.")
