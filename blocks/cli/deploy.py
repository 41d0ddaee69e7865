"""``block init`` and ``block deploy``: deployments from a project file, or one flow without one.

Example (shell):
    $ block init                                  # writes a commented blocks.yaml
    $ block deploy --name daily-etl               # from blocks.yaml (or the seed's prefect.yaml)
    $ block deploy --all -f prefect.yaml
    $ block deploy flows/etl.py:my_etl_flow --name daily --pool my-pool --cron "0 6 * * *"
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from blocks.cli._output import echo_json
from blocks.cli.deployments import parse_param


@click.command()
@click.option("--name", "project_name", help="The project's name (default: the folder's).")
@click.option("--force", is_flag=True, help="Overwrite an existing blocks.yaml.")
def init(project_name: str | None, force: bool) -> None:
    """Write a commented blocks.yaml in this folder (edit it, then `block deploy`)."""
    from blocks.deployments._project import INIT_TEXT
    from blocks.errors import ConfigurationError

    path = Path.cwd() / "blocks.yaml"
    if path.exists() and not force:
        raise ConfigurationError(f"{path} exists: edit it, or pass --force to overwrite it.")
    path.write_text(INIT_TEXT.format(name=project_name or Path.cwd().name), encoding="utf-8")
    click.echo(f"Wrote {path}: edit its deployments, then run: block deploy --name daily-etl")


@click.command()
@click.argument("entrypoint", required=False)
@click.option("--name", "-n", "names", multiple=True, help="Deployment name; repeatable.")
@click.option("--all", "every", is_flag=True, help="Every deployment of the project file.")
@click.option("-f", "--file", "file", type=click.Path(dir_okay=False), help="The project file.")
@click.option("--pool", "-p", help="Work pool (with ENTRYPOINT).")
@click.option("--cron", help="Cron schedule (with ENTRYPOINT).")
@click.option("--interval", type=float, help="Interval schedule in seconds (with ENTRYPOINT).")
@click.option("--rrule", help="RRule schedule (with ENTRYPOINT).")
@click.option("--timezone", help="The schedule's IANA zone (with ENTRYPOINT).")
@click.option("--param", "params", multiple=True, help="NAME=VALUE (JSON or text); repeatable.")
@click.option("--json", "as_json", is_flag=True, help="JSON for scripts.")
def deploy(
    entrypoint: str | None,
    names: tuple[str, ...],
    every: bool,
    file: str | None,
    pool: str | None,
    cron: str | None,
    interval: float | None,
    rrule: str | None,
    timezone: str | None,
    params: tuple[str, ...],
    as_json: bool,
) -> None:
    """Apply deployments from blocks.yaml (or the seed's prefect.yaml), or one flow.

    Without ENTRYPOINT: the deployments named by --name (or --all) of the project file. With
    ENTRYPOINT (path/file.py:flow): one deployment, --name and --pool given, at most one of
    --cron, --interval, --rrule.
    """
    from blocks.deployments import _project as project_file
    from blocks.errors import ConfigurationError

    folder = Path.cwd()
    if entrypoint is None:
        if pool or cron or interval is not None or rrule or timezone or params:
            raise ConfigurationError(
                "--pool, --cron, --interval, --rrule, --timezone and --param go with an "
                "ENTRYPOINT (block deploy path/file.py:flow --name N --pool P ...); a project "
                "file says them itself."
            )
        path = Path(file).resolve() if file else project_file.find_project_file(folder)
        project = project_file.read_project(path)
        specs = project_file.select(project, names, every)
        unknown = project_file.unknown_message(project)
        if unknown:
            click.echo(f"Warning: {unknown}", err=True)
        folder = path.parent
    else:
        if file or every or len(names) != 1 or not pool:
            raise ConfigurationError(
                "block deploy ENTRYPOINT takes one --name and a --pool (no -f or --all): "
                "block deploy path/file.py:flow --name N --pool P [--cron C]"
            )
        kinds = [kind for kind in (cron, interval, rrule) if kind is not None]
        if len(kinds) > 1:
            raise ConfigurationError("Give at most one of --cron, --interval, --rrule.")
        schedules = []
        if kinds:
            fields: dict[str, Any] = {"timezone": timezone}
            if cron is not None:
                fields["cron"] = cron
            elif interval is not None:
                fields["interval"] = interval
            else:
                fields["rrule"] = rrule
            schedules.append(project_file.schedule_from_fields(fields, "the command line"))
        specs = [
            project_file.DeploymentSpec(
                name=names[0],
                entrypoint=entrypoint,
                pool=pool,
                schedules=schedules,
                parameters=dict(parse_param(p) for p in params),
            )
        ]
    applied = []
    for spec in specs:
        full_name, deployment_id = project_file.apply_spec(spec, folder)
        applied.append({"name": full_name, "id": deployment_id, "pool": spec.pool})
        if not as_json:
            click.echo(
                f"Applied deployment {full_name} (pool {spec.pool}): start a worker with "
                f"`block worker start --pool {spec.pool}`, run it now with "
                f"`block deployment run {full_name}`."
            )
    if as_json:
        echo_json(applied)
