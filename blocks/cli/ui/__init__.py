"""``block ui``: a local web page to browse, create and edit blocks, inspect and prune results.

A small Starlette app (Jinja2 templates, plain forms, a few lines of shipped JS; no build step,
no CDN) served by uvicorn on 127.0.0.1. The printed URL signs one browser in, once: its code
is exchanged for a session (an HttpOnly, SameSite=Strict cookie scoped to this server's pages)
and is then spent. Scripts send the access token (``BLOCKS_UI_TOKEN`` or ``--token-file``) as
``Authorization: token T``. Every form POST carries a CSRF token; secret values are never
rendered. Needs the ``ui`` extra: ``pip install 'blocks[ui]'``.

Example (shell):
    $ block ui
    blocks UI: http://127.0.0.1:43817/login?code=Jq3...
"""

from __future__ import annotations

import importlib.util
import ipaddress
import os
import socket
import stat
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from blocks.cli.ui._sessions import Sessions

if TYPE_CHECKING:
    from blocks.cli.ui._security import TokenGate

UI_EXTRA = "pip install 'blocks[ui]'"
#: Import names of the ``ui`` extra, checked before anything is bound.
REQUIREMENTS = ("starlette", "jinja2", "uvicorn", "multipart")
#: Shortest access token accepted (a guessable token would open the registry).
MIN_TOKEN_LENGTH = 16
TOKEN_ENV = "BLOCKS_UI_TOKEN"
#: Host names always served on a loopback bind (besides the bound address itself).
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


def is_loopback(host: str) -> bool:
    """Whether `host` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def url_host(host: str) -> str:
    """`host` as it appears in a URL and in the ``Host`` header (IPv6 in brackets)."""
    bare = host.strip("[]")
    return f"[{bare}]" if ":" in bare else bare


def create_app(
    *,
    token: str | None = None,
    sessions: Sessions | None = None,
    port: int | None = None,
    storage: str | None = None,
    allowed_hosts: frozenset[str] | None = None,
) -> TokenGate:
    """The UI as an ASGI app. Who may use it is `sessions` (by default one for `token`, the
    access token scripts send; None: only one-time login codes, see `Sessions.login_code`).

    Example:
        >>> app = create_app(token="a-long-random-token")
        >>> code = app.sessions.login_code()  # for the URL /login?code=...
    """
    try:
        from blocks.cli.ui._app import build_app
    except ModuleNotFoundError as exc:
        from blocks.errors import MissingDependency

        raise MissingDependency(f"`block ui` needs the {exc.name!r} package: {UI_EXTRA}") from None
    return build_app(
        sessions=sessions or Sessions(token),
        port=port,
        storage=storage,
        allowed_hosts=allowed_hosts,
    )


def read_token(token_file: Path | None) -> str | None:
    """The access token from `token_file`, else from ``BLOCKS_UI_TOKEN`` (then removed from
    this process's environment, so the browser `--open` starts does not inherit it)."""
    if token_file is not None:
        try:
            mode = token_file.stat().st_mode
            token = token_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise click.BadParameter(
                f"cannot read {token_file}: {getattr(exc, 'strerror', None) or exc}",
                param_hint="'--token-file'",
            ) from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            click.echo(f"Warning: {token_file} is readable by other users; chmod 600 it.", err=True)
        where = "'--token-file'"
    else:
        token = os.environ.pop(TOKEN_ENV, "").strip()
        where = TOKEN_ENV
    if not token:
        return None
    if len(token) < MIN_TOKEN_LENGTH:
        raise click.BadParameter(
            f"use an access token of at least {MIN_TOKEN_LENGTH} characters", param_hint=where
        )
    return token


def _refuse_token_option(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    # Refused, not deprecated: by the time a warning could be printed the token is already in
    # the process list (`ps`, /proc/PID/cmdline) for the server's whole life.
    if value is not None:
        raise click.UsageError(
            "--token puts the access token in the process list (ps, /proc/PID/cmdline): "
            f"set {TOKEN_ENV} or pass --token-file PATH instead."
        )


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
    "--token-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help=f"Read the access token from this file (else from {TOKEN_ENV}). Scripts send it as "
    "'Authorization: token T'; the sign-in page takes it too. A non-loopback --host needs "
    "one of the two.",
)
@click.option(
    "--token",
    hidden=True,
    default=None,
    expose_value=False,
    callback=_refuse_token_option,
)
def ui(
    host: str, port: int, open_browser: bool, storage: str | None, token_file: Path | None
) -> None:
    """Serve a local web page to browse, create and edit blocks and to prune results.

    Prints a URL that signs one browser in, once (a second visit of it is refused). For
    scripts and more browsers, give an access token in BLOCKS_UI_TOKEN or --token-file.

    \b
    block ui                  # http://127.0.0.1:PORT/login?code=...
    block ui --open --port 8765
    BLOCKS_UI_TOKEN=$(cat ~/.ui-token) block ui --host 0.0.0.0
    """
    access = read_token(token_file)
    if not is_loopback(host) and access is None:
        raise click.UsageError(
            f"Refusing to listen on {host}, which other machines can reach, without an access "
            f"token: set {TOKEN_ENV} or pass --token-file with a long random value (or keep the "
            "default --host 127.0.0.1)."
        )
    missing = [name for name in REQUIREMENTS if importlib.util.find_spec(name) is None]
    if missing:
        from blocks.errors import MissingDependency

        raise MissingDependency(f"`block ui` needs the {missing[0]!r} package: {UI_EXTRA}")
    sock = _listen(host, port)
    bound = sock.getsockname()[1]
    base = f"http://{url_host(host)}:{bound}"
    sessions = Sessions(access)
    # The socket listens already: print now; a browser (or --open) connecting early waits in
    # the backlog until the app below is ready.
    click.echo(f"blocks UI: {base}/login?code={sessions.login_code()}")
    click.echo("The link signs one browser in, once. Press Ctrl+C to stop.")
    sys.stdout.flush()
    launch = None
    if open_browser:
        from blocks.cli.ui._launch import OPEN_TTL, LaunchFile

        holder: list[LaunchFile] = []
        code = sessions.login_code(ttl=OPEN_TTL, on_redeem=lambda: holder[0].remove())
        launch = LaunchFile(f"{base}/login?code={code}")
        holder.append(launch)
        launch.open()
    import uvicorn

    # On loopback, the Host header must name this machine: the bound address or a loopback
    # name (DNS rebinding is refused). Elsewhere any name that reaches the address is served.
    allowed = LOOPBACK_NAMES | {url_host(host)} if is_loopback(host) else None
    app = create_app(sessions=sessions, port=bound, storage=storage, allowed_hosts=allowed)
    # No access log: request lines would carry the sign-in code of the first visit.
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        if launch is not None:
            launch.remove()


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


__all__ = ["create_app", "is_loopback", "read_token", "ui", "url_host"]
