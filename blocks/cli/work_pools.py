"""``block work-pool create | ls | inspect | pause | resume | delete``: where runs wait for workers.

Example (shell):
    $ block work-pool create my-pool --type process --concurrency-limit 4
    $ block worker start --pool my-pool
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import click

from blocks.cli._output import echo_json, echo_json_array, iso, note, print_pairs, print_table

if TYPE_CHECKING:
    from blocks.deployments._store import RunStore, WorkPool


def _store() -> RunStore:
    from blocks.deployments._store import RunStore

    return RunStore.default()


def _json(pool: WorkPool) -> dict[str, Any]:
    return {
        "name": pool.name,
        "type": pool.type,
        "concurrency_limit": pool.concurrency_limit,
        "paused": pool.paused,
        "created": iso(pool.created),
        "base_job_template": pool.base_job_template,
    }


@click.group("work-pool")
def work_pool() -> None:
    """Work pools: the queues workers serve (this version runs the process and dask types)."""


@work_pool.command()
@click.argument("name")
@click.option(
    "--type", "kind", default="process", show_default=True, help="The pool's type: process, dask."
)
@click.option("--concurrency-limit", type=click.IntRange(min=1), help="Runs at once, pool-wide.")
@click.option("--address", help="A dask pool's Dask scheduler, e.g. tcp://10.0.0.5:8786.")
@click.option(
    "--base-job-template",
    "template_file",
    type=click.File("r"),
    help="A JSON file of the type's settings: {\"address\": ...} (or Prefect's "
    "job_configuration / variables defaults).",
)
def create(
    name: str,
    kind: str,
    concurrency_limit: int | None,
    address: str | None,
    template_file: Any,
) -> None:
    """Create a work pool (docker and kubernetes are not run by this version)."""
    template = read_template(template_file) if template_file is not None else {}
    if address is not None:
        template["address"] = address
    pool = _store().create_pool(
        name, kind, concurrency_limit=concurrency_limit, base_job_template=template
    )
    limit = f", at most {pool.concurrency_limit} run(s) at once" if pool.concurrency_limit else ""
    where = f", Dask scheduler {pool.address}" if pool.address else ""
    click.echo(f"Created work pool {pool.name!r} of type {pool.type}{where}{limit}.")


def read_template(stream: Any) -> dict[str, Any]:
    """The settings a base job template file gives: its top-level keys, or Prefect's shape
    (``job_configuration``, then each ``variables.properties`` default)."""
    try:
        data = json.load(stream)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="'--base-job-template'") from None
    if not isinstance(data, dict):
        raise click.BadParameter("expected a JSON object", param_hint="'--base-job-template'")
    if "job_configuration" not in data and "variables" not in data:
        return data
    found: dict[str, Any] = {}
    properties = (data.get("variables") or {}).get("properties") or {}
    for key, spec in properties.items():
        if isinstance(spec, dict) and "default" in spec:
            found[key] = spec["default"]
    for key, value in (data.get("job_configuration") or {}).items():
        if not (isinstance(value, str) and value.startswith("{{")):  # a placeholder
            found[key] = value
    return found


@work_pool.command("ls")
@click.option("--json", "as_json", is_flag=True, help="JSON for scripts.")
def ls(as_json: bool) -> None:
    """List work pools."""
    pools = _store().list_pools()
    if as_json:
        echo_json_array(_json(p) for p in pools)
        return
    rows = [
        (
            p.name,
            p.type,
            "" if p.concurrency_limit is None else str(p.concurrency_limit),
            "paused" if p.paused else "ready",
        )
        for p in pools
    ]
    if not print_table(("name", "type", "concurrency limit", "status"), rows):
        note("No work pools yet: block work-pool create my-pool --type process")


@work_pool.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="JSON for scripts.")
def inspect(name: str, as_json: bool) -> None:
    """Show one work pool and how many of its runs are waiting or in progress."""
    from blocks.deployments._states import CLAIMABLE, LEASED

    store = _store()
    pool = store.get_pool(name)
    scheduled = len(store.list_runs(pool_name=name, states=CLAIMABLE))
    busy = len(store.list_runs(pool_name=name, states=LEASED))
    deployments = [d.full_name for d in store.list_deployments(pool_name=name)]
    if as_json:
        echo_json(
            {**_json(pool), "scheduled": scheduled, "in_progress": busy, "deployments": deployments}
        )
        return
    print_pairs(
        [
            ("type", pool.type),
            *((("dask scheduler", pool.address),) if pool.address else ()),
            ("concurrency limit", pool.concurrency_limit or "none"),
            ("status", "paused" if pool.paused else "ready"),
            ("runs scheduled", scheduled),
            ("runs in progress", busy),
            ("deployments", ", ".join(deployments) or "none"),
        ],
        title=pool.name,
    )


@work_pool.command()
@click.argument("name")
def pause(name: str) -> None:
    """Stop handing out runs (workers keep what they run)."""
    _store().set_pool_paused(name, True)
    click.echo(f"Paused work pool {name!r}.")


@work_pool.command()
@click.argument("name")
def resume(name: str) -> None:
    """Hand out runs again."""
    _store().set_pool_paused(name, False)
    click.echo(f"Resumed work pool {name!r}.")


@work_pool.command()
@click.argument("name")
def delete(name: str) -> None:
    """Delete a work pool no deployment uses."""
    _store().delete_pool(name)
    click.echo(f"Deleted work pool {name!r}.")
