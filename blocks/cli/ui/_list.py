"""The blocks list: types with counts, one page of documents, a name search.

Kept apart from the other block pages and light on imports (the registry only, no pydantic):
it is the first page a cold `block ui` serves.
"""

from __future__ import annotations

import math
import re

from starlette.requests import Request
from starlette.responses import Response

from blocks.cli.ui._app import pages
from blocks.core._registry import Registry

#: Documents per page of the list.
PAGE_SIZE = 50
_SLUG = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*/[a-z0-9]+(?:-[a-z0-9]+)*$")


def _page_number(request: Request) -> int:
    try:
        return max(1, int(request.query_params.get("page", "1")))
    except ValueError:
        return 1


def blocks_list(request: Request) -> Response:
    search = request.query_params.get("q", "").strip()[:200]
    type_slug = request.query_params.get("type") or None  # a bound parameter: no harm
    page = _page_number(request)
    registry = Registry.default()
    rows, total = registry.page_documents(
        type_slug, search=search, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE
    )
    counts = registry.document_counts()
    types = [(t.slug, t.name, counts.get(t.slug, 0)) for t in registry.list_types()]
    deleted = request.query_params.get("deleted", "")
    deleted = deleted if _SLUG.match(deleted) else ""
    return pages(request).render(
        request,
        "blocks.html",
        title="Blocks",
        nav="blocks",
        rows=rows,
        total=total,
        types=types,
        type_slug=type_slug,
        search=search,
        page=page,
        pages=max(1, math.ceil(total / PAGE_SIZE)),
        deleted=deleted,
    )
