"""Result pages: records of a storage (sortable, paged), one record's header, prune expired.

Only headers are read (a small range read per record); values are never deserialized here.
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from blocks.cli.ui._app import pages
from blocks.errors import ConfigurationError, CorruptRecord
from blocks.results import RecordHeader, ResultStore

PAGE_SIZE = 100
SORTS = ("key", "task", "serializer", "size", "created", "expires")


def _storage(request: Request, source: dict[str, str] | None = None) -> str | None:
    """The storage asked for: the default (``--storage``, else BLOCKS_RESULTS_STORAGE) or a
    saved filesystem block, nothing else. A path or URL typed into the query would let the
    page walk any folder or host the server can reach: `ConfigurationError` (400)."""
    given = (source if source is not None else request.query_params).get("storage", "").strip()
    default: str | None = pages(request).default_storage
    if not given or given == default:
        return default
    if given not in filesystem_blocks():
        raise ConfigurationError(  # the text is not repeated: a URL may carry credentials
            "The storage asked for is neither the default storage nor a saved filesystem "
            "block: the results page opens only those (pick one from its list, or save the storage "
            "as a block first, e.g. `block create local-file-system NAME`)."
        )
    return given


def _store(storage: str | None) -> ResultStore:
    # As `block results`: only headers are read, so the serializer never decodes anything.
    return ResultStore.resolve(storage, "pickle")


def _older_than(text: str) -> timedelta | None:
    from blocks.cli.results import parse_duration

    if not text.strip():
        return None
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None


def size_text(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000:
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"


def _row(key: str, header: RecordHeader | None) -> dict[str, Any]:
    if header is None:
        return {
            "key": key,
            "readable": False,
            "task": "",
            "serializer": "",
            "size": -1,
            "created": "",
            "expires": "",
            "expired": False,
        }
    return {
        "key": key,
        "readable": True,
        "task": header.task or "",
        "serializer": str(header.serializer.get("type", "")),
        "size": header.payload_size,
        "size_text": size_text(header.payload_size),
        "created": header.created.astimezone().strftime("%Y-%m-%d %H:%M:%S"),
        "expires": header.expires.astimezone().strftime("%Y-%m-%d %H:%M:%S")
        if header.expires
        else "never",
        "expired": header.is_expired(),
    }


def filesystem_blocks() -> list[str]:
    """``type/name`` of every saved block that can hold results."""
    import importlib

    from blocks.filesystems import BLOCK_MODULES

    for module in BLOCK_MODULES:  # registers the built-in storage classes
        importlib.import_module(module)
    from blocks.core._block import block_classes
    from blocks.core._registry import Registry
    from blocks.filesystems.base import WritableFileSystem

    registry = Registry.default()
    return [
        f"{slug}/{name}"
        for slug, cls in sorted(block_classes().items())
        if issubclass(cls, WritableFileSystem)
        for name in registry.document_names(slug)
    ]


def results_page(request: Request) -> Response:
    storage = _storage(request)
    store = _store(storage)
    rows = [_row(key, header) for key, header in store.records()]
    sort = request.query_params.get("sort", "created")
    sort = sort if sort in SORTS else "created"
    descending = request.query_params.get("desc", "1" if sort == "created" else "0") == "1"
    rows.sort(key=lambda r: (r[sort] is None, r[sort]), reverse=descending)
    by_task: dict[str, list[int]] = {}
    for r in rows:
        if r["readable"]:
            total = by_task.setdefault(r["task"] or "(no task)", [0, 0])
            total[0] += 1
            total[1] += r["size"]
    try:
        page = max(1, int(request.query_params.get("page", "1")))
    except ValueError:
        page = 1
    pruned = request.query_params.get("pruned", "")
    return pages(request).render(
        request,
        "results.html",
        title="Results",
        nav="results",
        storage=storage or "",
        where=store.storage.describe(),
        rows=rows[(page - 1) * PAGE_SIZE : page * PAGE_SIZE],
        count=len(rows),
        expired=sum(1 for r in rows if r["expired"]),
        tasks=sorted((task, n, size_text(size)) for task, (n, size) in by_task.items()),
        total_size=size_text(sum(n for _, n in by_task.values())),
        sort=sort,
        descending=descending,
        page=page,
        pages=max(1, math.ceil(len(rows) / PAGE_SIZE)),
        choices=filesystem_blocks(),
        pruned=int(pruned) if pruned.isdigit() else None,
        query=lambda **kw: urlencode({"storage": storage or "", **kw}),
    )


def record_page(request: Request) -> Response:
    storage = _storage(request)
    store = _store(storage)
    key = request.query_params.get("key", "")
    error = ""
    header: dict[str, Any] = {}
    try:
        header = store.load_header(key).as_dict()
        status = 200
    except FileNotFoundError:
        error, status = f"No result record under {key!r} in {store.storage.describe()}.", 404
    except CorruptRecord as exc:
        error, status = str(exc), 422
    return pages(request).render(
        request,
        "record.html",
        status=status,
        title=key or "Record",
        nav="results",
        key=key,
        storage=storage or "",
        where=store.storage.describe(),
        header=header,
        error=error,
    )


async def prune(request: Request) -> Response:
    if request.method == "POST":
        posted = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
        storage = _storage(request, posted)
        older = posted.get("older_than", "")
        deleted = _store(storage).prune(expired=True, older_than=_older_than(older))
        target = urlencode({"storage": storage or "", "pruned": len(deleted)})
        return RedirectResponse(f"/results?{target}", status_code=303)
    storage = _storage(request)
    store = _store(storage)
    older = request.query_params.get("older_than", "")
    selected = [
        _row(key, header)
        for key, header in store.prunable(expired=True, older_than=_older_than(older))
    ]
    return pages(request).render(
        request,
        "prune.html",
        title="Prune results",
        nav="results",
        storage=storage or "",
        where=store.storage.describe(),
        older_than=older,
        rows=selected,
        total=size_text(sum(r["size"] for r in selected)),
    )
