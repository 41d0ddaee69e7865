"""Flow runs pages: runs of deployments (filtered by deployment and state), one run with its
state history, duration, worker, parameters (secrets masked), task runs where recorded, its
logs, and a cancel button.

Reads and the cancel go through the run store's public functions, as ``block flow-run`` does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from blocks.cli._output import local_time
from blocks.cli.ui._app import pages
from blocks.cli.ui._run_parameters import (
    saved_secret_values,
    scrub,
    secret_names,
    shown_parameters,
)
from blocks.errors import DeploymentNotFound, FlowRunNotFound

if TYPE_CHECKING:
    from blocks.deployments._store import FlowRun, RunStore

#: Runs listed on the page.
PAGE_SIZE = 100


def _store() -> RunStore:
    from blocks.deployments._store import RunStore

    return RunStore.default()


def duration_text(run: FlowRun, now: datetime | None = None) -> str:
    """How long the run ran (so far, while it runs): ``1.2 s``, ``3 min 4 s``, ``2 h 5 min``."""
    from blocks.deployments._records import utcnow
    from blocks.deployments._states import FINAL

    if run.started is None:
        return ""
    end = run.ended if run.ended is not None else (None if run.state in FINAL else now or utcnow())
    if end is None:
        return ""
    seconds = max(0.0, (end - run.started) / timedelta(seconds=1))
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def run_rows(runs: Iterable[FlowRun], names: dict[str, str]) -> list[dict[str, Any]]:
    """What a table of runs shows per run."""
    from blocks.cli.ui._deployments import deployment_href

    rows = []
    for run in runs:
        name = names.get(run.deployment_id, "")
        rows.append(
            {
                "id": run.id,
                "short": run.id[:12],
                "deployment": name,
                "deployment_href": deployment_href(name) if name else "",
                "state": run.state.value,
                "due": local_time(run.due),
                "duration": duration_text(run),
                "worker": run.worker or "",
                "attempt": run.attempt,
            }
        )
    return rows


def flow_runs_page(request: Request) -> Response:
    from blocks.deployments._states import RunState

    store = _store()
    deployments = {d.id: d.full_name for d in store.list_deployments()}
    wanted = request.query_params.get("deployment", "")
    deployment_id = next((i for i, n in deployments.items() if n == wanted), None)
    if wanted and deployment_id is None:
        exc = DeploymentNotFound(f"No deployment named {wanted!r}.")
        return pages(request).render(
            request, "error.html", status=404, title="Not found", message=str(exc)
        )
    by_name = {s.value: s for s in RunState}
    state = request.query_params.get("state", "")
    state = state if state in by_name else ""
    runs = store.list_runs(
        deployment_id=deployment_id,
        states=[by_name[state]] if state else None,
        limit=PAGE_SIZE,
    )
    return pages(request).render(
        request,
        "flow_runs.html",
        title="Flow runs",
        nav="flow-runs",
        rows=run_rows(runs, deployments),
        deployments=sorted(deployments.values()),
        deployment=wanted,
        states=list(by_name),
        state=state,
        limit=PAGE_SIZE,
    )


def task_runs(store: RunStore, run_id: str, secrets: list[str]) -> tuple[list[Any], int]:
    """What the page shows of the run's task runs (run history), and how many it had."""
    kept, total = store.task_runs(run_id)
    rows = [
        {
            "name": scrub(task.name, secrets),
            "task": task.task_name,
            "state": task.state,
            "cached": task.cached,
            "started": local_time(task.started),
            "duration": f"{task.duration:.3f} s",
            "attempt": task.attempt,
            "message": scrub(task.message, secrets),
        }
        for task in kept
    ]
    return rows, total


def flow_run_page(request: Request) -> Response:
    from blocks.deployments._states import FINAL, RunState

    store = _store()
    try:
        run = store.get_run(request.path_params["run_id"])
    except FlowRunNotFound as exc:
        return pages(request).render(
            request, "error.html", status=404, title="Not found", message=str(exc)
        )
    secrets = saved_secret_values()
    try:
        deployment = store.get_deployment_by_id(run.deployment_id)
    except DeploymentNotFound:
        name, hidden = "", frozenset[str]()
    else:
        name = deployment.full_name
        hidden = secret_names(deployment.document.get("parameters", {}), secrets)
    # A value typed for a secret parameter is scrubbed from the logs too.
    typed = [run.parameters.get(n) for n in hidden]
    secrets = sorted(
        {*secrets, *(v for v in typed if isinstance(v, str) and len(v) >= 6)},
        key=len,
        reverse=True,
    )
    logs = [
        (local_time(at), level, scrub(message, secrets))
        for _, at, level, message in store.logs(run.id)
    ]
    history = [
        {
            "state": change.state.value,
            "at": local_time(change.at),
            "attempt": change.attempt,
            "worker": change.worker or "",
            "message": scrub(change.message, secrets),
        }
        for change in store.history(run.id)
    ]
    tasks, tasks_total = task_runs(store, run.id, secrets)
    names = {run.deployment_id: name}
    children = store.child_runs(run.id)
    for child in children:
        if child.deployment_id not in names:
            with contextlib.suppress(DeploymentNotFound):
                names[child.deployment_id] = store.get_deployment_by_id(
                    child.deployment_id
                ).full_name
    notice = ""
    if request.query_params.get("created") == "1":
        notice = "Run created: a worker of its pool runs it when it is due."
    elif request.query_params.get("cancelled") in {s.value for s in RunState}:
        notice = f"Cancel asked: the run is {request.query_params['cancelled']}."
    return pages(request).render(
        request,
        "flow_run.html",
        title=f"Flow run {run.id[:12]}",
        nav="flow-runs",
        run=run_rows([run], names)[0],
        parent_run_id=run.parent_run_id or "",
        subflow_runs=run_rows(children, names),
        message=scrub(run.message, secrets),
        max_attempts=run.max_attempts,
        started=local_time(run.started) if run.started else "",
        ended=local_time(run.ended) if run.ended else "",
        parameters=shown_parameters(run.parameters, secrets, hidden),
        history=history,
        logs=logs,
        log_lines=run.log_lines,
        tasks=tasks,
        tasks_total=tasks_total,
        cancellable=run.state not in FINAL,
        notice=notice,
    )


def cancel(request: Request) -> Response:
    store = _store()
    try:
        run = store.get_run(request.path_params["run_id"])
    except FlowRunNotFound as exc:
        return pages(request).render(
            request, "error.html", status=404, title="Not found", message=str(exc)
        )
    state = store.cancel(run.id)  # a final run: ConfigurationError, shown as an error page
    return RedirectResponse(f"/flow-runs/{run.id}?cancelled={state.value}", status_code=303)
