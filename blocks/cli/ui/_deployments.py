"""Deployments pages: every deployment with its schedules, next runs and state; one deployment
with pause / resume and a "run" form generated from its flow's parameters.

Everything goes through the run store's public functions, as ``block deployment`` does: pause
and resume are `RunStore.set_deployment_paused` (+ a scheduler pass on resume), a run is
`RunStore.create_run` after `check_parameters_by_name`.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from blocks.cli.deployments import NEXT_RUNS, next_runs
from blocks.cli.ui._app import pages
from blocks.cli.ui._run_parameters import (
    ParameterInput,
    parse_run_form,
    run_form,
    saved_secret_values,
)
from blocks.errors import ConfigurationError, DeploymentNotFound, ParameterTypeError

if TYPE_CHECKING:
    from blocks.deployments._records import DeploymentRecord
    from blocks.deployments._store import RunStore

#: Recent runs listed on a deployment's page.
RECENT_RUNS = 10
_NOTICES = {
    "paused": "Paused: its scheduled runs were removed; runs in progress go on.",
    "resumed": "Resumed: its next runs are scheduled.",
}


def _store() -> RunStore:
    from blocks.deployments._store import RunStore

    return RunStore.default()


def deployment_href(full_name: str) -> str:
    """The page of a deployment, each part of its name quoted."""
    flow, _, name = full_name.partition("/")
    return f"/deployments/{quote(flow, safe='')}/{quote(name, safe='')}"


def when(moment: datetime) -> str:
    """A next run in its schedule's zone: ``2026-12-08 06:00:00 CET``."""
    zone = moment.tzname() or ""
    return f"{moment:%Y-%m-%d %H:%M:%S} {zone}".strip()


def schedules_of(deployment: DeploymentRecord) -> list[dict[str, Any]]:
    """One entry per schedule: its kind, expression, zone and whether it is active."""
    out = []
    for entry in deployment.document.get("schedules", []):
        schedule = entry.get("schedule", {})
        kind = next((k for k in ("cron", "interval", "rrule") if k in schedule), "")
        out.append(
            {
                "slug": entry.get("slug", ""),
                "kind": kind,
                "expression": str(schedule.get(kind, "")),
                "timezone": schedule.get("timezone") or "UTC",
                "active": entry.get("active", True),
            }
        )
    return out


def _summary(deployment: DeploymentRecord, count: int) -> dict[str, Any]:
    return {
        "name": deployment.full_name,
        "href": deployment_href(deployment.full_name),
        "version": deployment.version or "",
        "pool": deployment.pool_name,
        "paused": deployment.paused,
        "schedules": schedules_of(deployment),
        "next_runs": [when(d) for d in next_runs(deployment, count)],
    }


def deployments_page(request: Request) -> Response:
    deployments = _store().list_deployments()
    return pages(request).render(
        request,
        "deployments.html",
        title="Deployments",
        nav="deployments",
        deployments=[_summary(d, 3) for d in deployments],
    )


def _full_name(request: Request) -> str:
    return f"{request.path_params['flow']}/{request.path_params['name']}"


def _not_found(request: Request, exc: DeploymentNotFound) -> Response:
    return pages(request).render(
        request, "error.html", status=404, title="Not found", message=str(exc)
    )


def deployment_page(request: Request) -> Response:
    try:
        deployment = _store().get_deployment(_full_name(request))
    except DeploymentNotFound as exc:
        return _not_found(request, exc)
    notice = _NOTICES.get(request.query_params.get("done", ""), "")
    return _render(request, deployment, notice=notice)


def _render(
    request: Request,
    deployment: DeploymentRecord,
    *,
    inputs: list[ParameterInput] | None = None,
    errors: dict[str, str] | None = None,
    error: str = "",
    start_in: str = "",
    notice: str = "",
    status: int = 200,
) -> Response:
    from blocks.cli.ui._flow_runs import run_rows

    store = _store()
    doc = deployment.document
    secrets = saved_secret_values()
    if inputs is None:
        inputs = run_form(doc.get("parameter_names", []), doc.get("parameters", {}), secrets)
    recent = store.list_runs(deployment_id=deployment.id, limit=RECENT_RUNS)
    return pages(request).render(
        request,
        "deployment.html",
        status=status,
        title=deployment.full_name,
        nav="deployments",
        d=_summary(deployment, NEXT_RUNS),
        record=deployment,
        entrypoint=doc.get("entrypoint", ""),
        path=doc.get("path", ""),
        tags=", ".join(doc.get("tags", [])),
        catchup=doc.get("catchup", "latest"),
        retries=doc.get("retries", 0),
        inputs=inputs,
        errors=errors or {},
        error=error,
        start_in=start_in,
        notice=notice,
        runs=run_rows(recent, {deployment.id: deployment.full_name}),
    )


def _set_paused(request: Request, paused: bool) -> Response:
    from blocks.deployments._scheduler import schedule_deployment

    store = _store()
    name = _full_name(request)
    try:
        store.set_deployment_paused(name, paused)
        if not paused:
            schedule_deployment(store, store.get_deployment(name))
    except DeploymentNotFound as exc:
        return _not_found(request, exc)
    done = "paused" if paused else "resumed"
    return RedirectResponse(f"{deployment_href(name)}?done={done}", status_code=303)


def pause(request: Request) -> Response:
    return _set_paused(request, True)


def resume(request: Request) -> Response:
    return _set_paused(request, False)


async def run(request: Request) -> Response:
    from starlette.concurrency import run_in_threadpool

    form = await request.form()
    posted = {key: value for key, value in form.items() if isinstance(value, str)}
    return await run_in_threadpool(_run, request, posted)


def _run(request: Request, posted: dict[str, str]) -> Response:
    from blocks.cli.results import parse_duration
    from blocks.deployments._deployment import check_parameters_by_name
    from blocks.deployments._store import utcnow

    store = _store()
    try:
        deployment = store.get_deployment(_full_name(request))
    except DeploymentNotFound as exc:
        return _not_found(request, exc)
    doc = deployment.document
    inputs = run_form(
        doc.get("parameter_names", []), doc.get("parameters", {}), saved_secret_values()
    )
    given, errors = parse_run_form(inputs, posted)
    start_in = posted.get("start_in", "").strip()
    due = utcnow()
    error = ""
    if start_in:
        try:
            due += parse_duration(start_in)
        except ValueError as exc:
            errors["start_in"] = str(exc)
    if not errors:
        try:
            check_parameters_by_name(deployment, given)
        except (ParameterTypeError, ConfigurationError) as exc:
            error = str(exc)
    if errors or error:
        return _render(
            request,
            deployment,
            inputs=inputs,
            errors=errors,
            error=error,
            start_in=start_in,
            status=400,
        )
    flow_run = store.create_run(deployment, parameters=given, due=due)
    return RedirectResponse(f"/flow-runs/{flow_run.id}?created=1", status_code=303)
