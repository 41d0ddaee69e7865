"""``block ui``: a local web page to browse, create and edit blocks, inspect and prune results.

A small Starlette app (Jinja2 templates, plain forms, a few lines of shipped JS; no build step,
no CDN) served by uvicorn on 127.0.0.1. Every request needs the random token of the printed
URL (kept afterwards as an HttpOnly, SameSite=Strict cookie); every form POST carries a CSRF
token; secret values are never rendered. Needs the ``ui`` extra: ``pip install 'blocks[ui]'``.

Example (shell):
    $ block ui
    blocks UI: http://127.0.0.1:43817/?token=Jq3...
"""

from __future__ import annotations

import importlib.util
import ipaddress
import secrets
import socket
import sys
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from starlette.types import ASGIApp

UI_EXTRA = "pip install 'blocks[ui]'"
#: Import names of the ``ui`` extra, checked before anything is bound.
REQUIREMENTS = ("starlette", "jinja2", "uvicorn", "multipart")
#: Shortest token accepted from ``--token`` (a guessable token would open the registry).
MIN_TOKEN_LENGTH = 16


def is_loopback(host: str) -> bool:
    """Whether `host` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def create_app(
    *,
    token: str,
    port: int | None = None,
    storage: str | None = None,
    allowed_hosts: frozenset[str] | None = None,
) -> ASGIApp:
    """The UI as an ASGI app: every request must carry `token` (see `blocks.cli.ui._security`).

    Example:
        >>> app = create_app(token="a-long-random-token")
    """
    try:
        from blocks.cli.ui._app import build_app
    except ModuleNotFoundError as exc:
        from blocks.errors import MissingDependency

        raise MissingDependency(f"`block ui` needs the {exc.name!r} package: {UI_EXTRA}") from None
    return build_app(token=token, port=port, storage=storage, allowed_hosts=allowed_hosts)


@click.command("ui")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=0, type=click.IntRange(0, 65535), help="Port (0: a free one).")
@click.option("--open", "open_browser", is_flag=True, help="Open the page in a web browser.")
@click.option(
    "--storage",
    metavar="STORAGE",
    default=None,
    help="Result storage the results page opens on: a path, a URL or TYPE/NAME of a saved "
    "filesystem block. Default: BLOCKS_RESULTS_STORAGE.",
)
@click.option(
    "--token",
    metavar="TOKEN",
    default=None,
    help="Use this access token instead of a random one (required with a non-loopback --host).",
)
def ui(host: str, port: int, open_browser: bool, storage: str | None, token: str | None) -> None:
    """Serve a local web page to browse, create and edit blocks and to prune results.

    Prints the URL to open; it carries a random token that every request needs.

    \b
    block ui                  # http://127.0.0.1:PORT/?token=...
    block ui --open --port 8765
    """
    if not is_loopback(host) and token is None:
        raise click.UsageError(
            f"Refusing to listen on {host}, which other machines can reach, without --token: "
            "pass --token with a long random value (or keep the default --host 127.0.0.1)."
        )
    if token is not None and len(token) < MIN_TOKEN_LENGTH:
        raise click.BadParameter(
            f"use at least {MIN_TOKEN_LENGTH} characters", param_hint="'--token'"
        )
    access = token or secrets.token_urlsafe(24)
    missing = [name for name in REQUIREMENTS if importlib.util.find_spec(name) is None]
    if missing:
        from blocks.errors import MissingDependency

        raise MissingDependency(f"`block ui` needs the {missing[0]!r} package: {UI_EXTRA}")
    sock = _listen(host, port)
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{bound}/?token={access}"
    # The socket listens already: print now; a browser (or --open) connecting early waits in
    # the backlog until the app below is ready.
    click.echo(f"blocks UI: {url}\nPress Ctrl+C to stop.")
    sys.stdout.flush()
    if open_browser:
        import webbrowser

        webbrowser.open(url)
    import uvicorn

    loopback = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
    app = create_app(
        token=access,
        port=bound,
        storage=storage,
        allowed_hosts=loopback if is_loopback(host) else None,
    )
    # No access log: request lines would carry the token of the first visit.
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    uvicorn.Server(config).run(sockets=[sock])


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    # IPPROTO_TCP named explicitly: asyncio sets TCP_NODELAY only on sockets whose proto says
    # TCP, and without it every response waits ~40 ms on Nagle's algorithm + delayed ACKs.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise click.ClickException(f"Cannot listen on {host}:{port}: {exc.strerror}.") from None
    sock.listen(128)
    sock.setblocking(False)
    return sock


__all__ = ["create_app", "is_loopback", "ui"]
