"""Keys page: the active master key's id and source, key ids still used by secrets, rotation.

A rotation runs in a background thread (`rotate_master_key` with a progress hook); the page
polls ``/keys/rotation`` for a progress bar. Only key ids are ever shown, never key material.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from blocks.cli.ui._app import pages


@dataclass
class RotationProgress:
    """The latest rotation run by this server (one at a time)."""

    state: str = "idle"  # idle, running, done, failed
    done: int = 0
    total: int = 0
    message: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def public(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "done": self.done,
            "total": self.total,
            "message": self.message,
        }


def _registry() -> Any:
    from blocks.core._registry import Registry

    return Registry.default()


def key_usage() -> Counter[str]:
    """How many secret fields each key id seals."""
    from blocks.core._encryption import token_parts

    used: Counter[str] = Counter()
    for document in _registry().list_documents():
        for token in document.secrets.values():
            used[token_parts(token, what="a secret")[1]] += 1
    return used


def keys_page(request: Request) -> Response:
    from blocks.core._encryption import KeyManager
    from blocks.errors import KeyManagementError

    registry = _registry()
    manager = KeyManager.for_registry(registry.url)
    manager.forget()
    source: str | None = None
    active: str | None = None
    ids: list[str] = []
    mismatch: str | None = None
    record = registry.key_record()
    try:
        # Never creates a key; with a recorded key, only that key will do (as `block key info`).
        keyset = manager.keyset() if record is None else manager.recorded_keyset(record)
    except KeyManagementError as exc:
        where = manager.writable_source().describe()
        if record is not None:
            mismatch = str(exc)  # KeyMismatch: key ids and sources only, never key material
    else:
        source, active, ids, where = keyset.source, keyset.active_id, keyset.ids, keyset.source
    usage = key_usage()
    rotation = _progress(request)
    return pages(request).render(
        request,
        "keys.html",
        title="Keys",
        nav="keys",
        source=source,
        where=where,
        active=active,
        mismatch=mismatch,
        keys=[(k, usage.get(k, 0)) for k in ids],
        unknown=[(k, n) for k, n in sorted(usage.items()) if k not in ids],
        rotation=rotation.public(),
    )


def _rotate(progress: RotationProgress) -> None:
    from blocks.core._rotation import rotate_master_key

    def step(done: int, total: int) -> None:
        progress.done, progress.total = done, max(progress.total, total)

    try:
        report = rotate_master_key(progress=step)
    except Exception as exc:  # shown on the page; our errors never carry key material
        progress.state, progress.message = "failed", f"{type(exc).__name__}: {exc}"
        return
    progress.done = progress.total = max(progress.total, report.reencrypted)
    done = f"{report.counted()} re-encrypted under key {report.new_key_id}"
    old = ", ".join(report.old_key_ids)
    if not report.old_key_ids:
        tail = (
            f"{report.source} holds a single key, so there was no new key to rotate to: set it "
            "to NEW,OLD (NEW from `block key generate`) and rotate again."
        )
    elif report.retired:
        tail = f"retired key(s) {old}."
    else:
        tail = f"old key(s) {old} are no longer needed: drop them from {report.source}."
    progress.message = f"{done} ({report.source}); {tail}"
    progress.state = "done"


_STATE_LOCK = threading.Lock()


def _progress(request: Request) -> RotationProgress:
    """The server's rotation state, made on first use."""
    state = request.app.state
    with _STATE_LOCK:
        if not hasattr(state, "rotation"):
            state.rotation = RotationProgress()
    progress: RotationProgress = state.rotation
    return progress


def rotate(request: Request) -> Response:
    progress = _progress(request)
    with progress.lock:
        if progress.state != "running":
            progress.state, progress.done, progress.message = "running", 0, ""
            progress.total = sum(1 for d in _registry().list_documents() if d.secrets)
            threading.Thread(target=_rotate, args=(progress,), daemon=True).start()
    return RedirectResponse("/keys", status_code=303)


def rotation_status(request: Request) -> Response:
    progress = _progress(request)
    return JSONResponse(progress.public())
