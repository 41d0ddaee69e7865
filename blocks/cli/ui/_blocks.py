"""Block pages: types and documents (search, pages), one document, create, edit, delete."""

from __future__ import annotations

import copy
import json
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from blocks.cli._text_fields import inspect_block
from blocks.cli.block_types import known_types
from blocks.cli.ui._app import pages
from blocks.cli.ui._forms import (
    MASK,
    FormField,
    attach_errors,
    build_fields,
    parse_form,
    reference_of,
    validate,
)
from blocks.core._block import (
    Block,
    block_class_for,
    split_slug,
    validate_name,
)
from blocks.core._documents import set_path
from blocks.core._registry import DocumentRow, Registry
from blocks.errors import BlockAlreadyExists, BlockInUse, InvalidName

#: Documents per page of the list.
PAGE_SIZE = 50
NAME_FIELD = "_name"


def _display(row: DocumentRow, values: dict[str, Any]) -> list[dict[str, Any]]:
    """One entry per field: secrets as `MASK` (or their reference, ``ref env:NAME``: where
    the value lives, never the value), saved blocks as links, the rest as text."""
    shown = copy.deepcopy(values)
    for path in row.secrets:
        if "." in path and not reference_of(values_at(values, path)):
            set_path(shown, path, MASK)
    out = []
    for field, value in shown.items():
        entry: dict[str, Any] = {"field": field, "kind": "text", "text": ""}
        if field in row.secrets:
            reference = reference_of(value)
            entry.update(
                kind="secret-ref" if reference else "secret", text=value if reference else MASK
            )
        elif field in row.refs:
            entry.update(kind="ref", text=value or "(deleted)", href=value and f"/blocks/{value}")
        elif value is None:
            entry.update(kind="none", text="None")
        elif isinstance(value, str):
            entry["text"] = value
        else:
            entry.update(kind="json", text=json.dumps(value, indent=2, ensure_ascii=False))
        out.append(entry)
    return out


def block_page(request: Request) -> Response:
    slug = f"{request.path_params['type_slug']}/{request.path_params['name']}"
    return _block_page(request, slug)


def _block_page(request: Request, slug: str, *, error: str = "", status: int = 200) -> Response:
    row, values = inspect_block(slug)
    nested = sorted(path for path in row.refs if "." in path)
    return pages(request).render(
        request,
        "block.html",
        status=status,
        title=row.slug,
        nav="blocks",
        row=row,
        fields=_display(row, values),
        nested_refs=[(path, values_at(values, path)) for path in nested],
        error=error,
        saved=request.query_params.get("saved") == "1",
    )


def values_at(values: dict[str, Any], path: str) -> Any:
    current: Any = values
    for part in path.split("."):
        current = current[int(part)] if isinstance(current, list) else current.get(part)
    return current


def new_chooser(request: Request) -> Response:
    types = [(t["slug"], t["name"], t["description"], t["source"]) for t in known_types()]
    return pages(request).render(request, "new.html", title="New block", nav="new", types=types)


def _choices(cls: type[Block], exclude: str | None = None) -> dict[str, list[str]]:
    registry = Registry.default()
    found: dict[str, list[str]] = {}
    for field, allowed in cls.block_fields().items():
        found[field] = [
            f"{slug}/{name}"
            for slug in allowed
            for name in registry.document_names(slug)
            if f"{slug}/{name}" != exclude
        ]
    return found


def _form(
    request: Request,
    cls: type[Block],
    fields: list[FormField],
    *,
    name: str,
    editing: bool,
    errors: dict[str, str] | None = None,
) -> Response:
    errors = dict(errors or {})
    name_error = errors.pop(NAME_FIELD, "")
    general = attach_errors(fields, errors)
    slug = cls.get_block_type_slug()
    return pages(request).render(
        request,
        "form.html",
        status=400 if (general or name_error or any(_has_error(f) for f in fields)) else 200,
        title=f"Edit {slug}/{name}" if editing else f"New {slug} block",
        nav="new" if not editing else "blocks",
        type_slug=slug,
        type_name=cls.get_block_type_name(),
        description=cls.get_description(),
        fields=fields,
        name=name,
        name_field=NAME_FIELD,
        name_error=name_error,
        general=general,
        editing=editing,
        action=f"/blocks/{slug}/{name}/edit" if editing else f"/blocks/new/{slug}",
    )


def _has_error(item: FormField) -> bool:
    return bool(item.error) or any(_has_error(c) for c in item.children)


async def _posted(request: Request) -> dict[str, str]:
    form = await request.form()
    return {key: value for key, value in form.items() if isinstance(value, str)}


async def new_block(request: Request) -> Response:
    type_slug = validate_name(request.path_params["type_slug"], what="block type slug")
    cls = block_class_for(type_slug, import_registered=True)
    fields = build_fields(cls, choices=_choices(cls))
    if request.method == "GET":
        return _form(request, cls, fields, name="", editing=False)
    posted = await _posted(request)
    name = posted.get(NAME_FIELD, "").strip()
    data, errors = parse_form(fields, posted, existing=None)
    try:
        validate_name(name)
    except InvalidName as exc:
        errors[NAME_FIELD] = str(exc)
    block = validate(cls, data, errors)
    if block is not None:
        try:
            block.save(name)
        except BlockAlreadyExists as exc:
            errors[NAME_FIELD] = str(exc).split(". Pass")[0] + "."
        else:
            return RedirectResponse(f"/blocks/{type_slug}/{name}?saved=1", status_code=303)
    return _form(request, cls, fields, name=name, editing=False, errors=errors)


async def edit_block(request: Request) -> Response:
    type_slug, name = split_slug(
        f"{request.path_params['type_slug']}/{request.path_params['name']}"
    )
    slug = f"{type_slug}/{name}"
    row, values = inspect_block(slug)
    cls = block_class_for(type_slug, import_registered=True)
    fields = build_fields(
        cls,
        values=values,
        secret_paths=frozenset(row.secrets),
        ref_paths=frozenset(row.refs),
        choices=_choices(cls, exclude=slug),
    )
    if request.method == "GET":
        return _form(request, cls, fields, name=name, editing=True)
    posted = await _posted(request)
    existing = Block.load(slug)  # secrets left empty keep these values (never shown)
    data, errors = parse_form(fields, posted, existing=existing)
    block = validate(cls, data, errors)
    if block is not None:
        block.save(name, overwrite=True)
        return RedirectResponse(f"/blocks/{slug}?saved=1", status_code=303)
    return _form(request, cls, fields, name=name, editing=True, errors=errors)


async def delete_block(request: Request) -> Response:
    type_slug, name = split_slug(
        f"{request.path_params['type_slug']}/{request.path_params['name']}"
    )
    slug = f"{type_slug}/{name}"
    if request.method == "GET":
        row, _ = inspect_block(slug)
        return pages(request).render(
            request, "delete.html", title=f"Delete {slug}", nav="blocks", row=row
        )
    try:
        Block.delete(slug)
    except BlockInUse as exc:
        return _block_page(request, slug, error=str(exc), status=409)
    return RedirectResponse(f"/blocks?deleted={slug}", status_code=303)
