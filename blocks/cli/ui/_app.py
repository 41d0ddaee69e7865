"""The Starlette app behind `block ui`: routes, templates, error pages.

Pages call the library (registry, `Block`, `inspect_block`, `ResultStore`, rotation) exactly as
the CLI commands do; this module only wires them to HTTP. Handlers are plain functions run in
Starlette's thread pool, since the library is synchronous.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import jinja2
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from blocks.cli.ui._security import CSRF_FIELD, TokenGate
from blocks.cli.ui._sessions import Sessions
from blocks.errors import (
    BlockNotFound,
    BlocksError,
    ConfigurationError,
    InvalidName,
    UnknownBlockType,
)

HERE = Path(__file__).parent
logger = logging.getLogger("blocks.ui")


class Pages:
    """Renders templates with what every page needs (CSRF token, navigation)."""

    def __init__(self, storage: str | None) -> None:
        self.default_storage = storage
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )

    def render(
        self, request: Request, template: str, *, status: int = 200, **context: Any
    ) -> HTMLResponse:
        context.setdefault("nav", "")
        state = request.scope.get("state", {})
        html = self.env.get_template(template).render(
            csrf=state.get("csrf", ""),
            root=state.get("root", ""),  # the path prefix the browser's cookie is scoped to
            csrf_field=CSRF_FIELD,
            request=request,
            **context,
        )
        return HTMLResponse(html, status_code=status)


def pages(request: Request) -> Pages:
    found: Pages = request.app.state.pages
    return found


def _status_of(exc: BlocksError) -> int:
    if isinstance(exc, BlockNotFound | UnknownBlockType):
        return 404
    if isinstance(exc, InvalidName | ConfigurationError):
        return 400
    return 409


async def _blocks_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, BlocksError)
    return pages(request).render(
        request, "error.html", status=_status_of(exc), title="Error", message=str(exc)
    )


async def _unexpected(request: Request, exc: Exception) -> Response:
    # The message may come from anywhere: log the type only on the page, the rest on stderr.
    logger.error("unexpected %s while serving %s", type(exc).__name__, request.url.path)
    return pages(request).render(
        request,
        "error.html",
        status=500,
        title="Unexpected error",
        message=f"Unexpected {type(exc).__name__}; see the terminal running `block ui`.",
    )


def home(request: Request) -> Response:
    return RedirectResponse("/blocks", status_code=303)


# path -> ("module:function", methods). Modules are imported on their first request, so a
# cold `block ui` serves its first page without loading the results store or the key code.
ROUTES: dict[str, tuple[str, list[str]]] = {
    "/blocks": ("_list:blocks_list", ["GET"]),
    "/blocks/new": ("_blocks:new_chooser", ["GET"]),
    "/blocks/new/{type_slug}": ("_blocks:new_block", ["GET", "POST"]),
    "/blocks/{type_slug}/{name}": ("_blocks:block_page", ["GET"]),
    "/blocks/{type_slug}/{name}/edit": ("_blocks:edit_block", ["GET", "POST"]),
    "/blocks/{type_slug}/{name}/delete": ("_blocks:delete_block", ["GET", "POST"]),
    "/results": ("_results:results_page", ["GET"]),
    "/results/record": ("_results:record_page", ["GET"]),
    "/results/prune": ("_results:prune", ["GET", "POST"]),
    "/keys": ("_keys:keys_page", ["GET"]),
    "/keys/rotate": ("_keys:rotate", ["POST"]),
    "/keys/rotation": ("_keys:rotation_status", ["GET"]),
    "/deployments": ("_deployments:deployments_page", ["GET"]),
    "/deployments/{flow}/{name}": ("_deployments:deployment_page", ["GET"]),
    "/deployments/{flow}/{name}/pause": ("_deployments:pause", ["POST"]),
    "/deployments/{flow}/{name}/resume": ("_deployments:resume", ["POST"]),
    "/deployments/{flow}/{name}/run": ("_deployments:run", ["POST"]),
    "/flow-runs": ("_flow_runs:flow_runs_page", ["GET"]),
    "/flow-runs/{run_id}": ("_flow_runs:flow_run_page", ["GET"]),
    "/flow-runs/{run_id}/cancel": ("_flow_runs:cancel", ["POST"]),
}


def lazy(target: str) -> Callable[[Request], Awaitable[Response]]:
    """An endpoint that imports ``blocks.cli.ui.<module>:<function>`` when first called.

    Plain functions run in the thread pool (the library is synchronous)."""
    module, _, name = target.partition(":")

    async def endpoint(request: Request) -> Response:
        handler = getattr(importlib.import_module(f"blocks.cli.ui.{module}"), name)
        if inspect.iscoroutinefunction(handler):
            response: Response = await handler(request)
            return response
        return await run_in_threadpool(handler, request)

    return endpoint


def build_app(
    *,
    sessions: Sessions,
    port: int | None = None,
    storage: str | None = None,
    allowed_hosts: frozenset[str] | None = None,
) -> TokenGate:
    """The app wrapped in its `TokenGate` (see `blocks.cli.ui.create_app`)."""
    routes: list[BaseRoute] = [Route("/", home)]
    for path, (target, methods) in ROUTES.items():
        routes.append(Route(path, lazy(target), methods=methods))
    routes.append(Mount("/static", StaticFiles(directory=HERE / "static"), name="static"))
    app = Starlette(
        routes=routes,
        exception_handlers={BlocksError: _blocks_error, Exception: _unexpected},
    )
    app.state.pages = Pages(storage)
    # Cookies ignore ports: one cookie name per port lets two `block ui` run side by side (the
    # gate also scopes each to its own path, so neither is ever sent to the other).
    cookie = f"blocks-ui-{port}" if port else "blocks-ui"
    return TokenGate(app, sessions=sessions, cookie_name=cookie, allowed_hosts=allowed_hosts)
