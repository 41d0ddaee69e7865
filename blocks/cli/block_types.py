"""``block type ls | inspect``: registered block types and their schemas.

Read from the registry's stored schemas, so a type shows even where its module is not installed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from blocks.cli._complete import block_types
from blocks.cli._output import echo_json, iso, local_time, print_pairs, print_table

if TYPE_CHECKING:
    from blocks.core._registry import TypeRow


@click.group("type")
def type_group() -> None:
    """Registered block types."""


@type_group.command("ls")
@click.option("--json", "as_json", is_flag=True, help="JSON for scripts.")
def type_ls(as_json: bool) -> None:
    """List block types (registered, built in and from installed plugins), where each comes
    from and how many blocks each has."""
    rows = known_types()
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo("No block types registered yet. Register yours with `block register -m MODULE`.")
        return
    print_table(
        ("type", "class", "blocks", "source", "description"),
        ((r["slug"], r["name"], r["documents"], r["source"], r["description"] or "") for r in rows),
    )


def known_types() -> list[dict[str, Any]]:
    """Every block type this machine knows, by slug: registered ones, every built-in type and
    those of installed plugins (saved or not), each with where it comes from and its one-line
    description (the class's own where it is importable, else as registered)."""
    from blocks.core._block import BUILTIN_BLOCK_MODULES, block_class_for
    from blocks.core._discovery import load_plugins
    from blocks.core._registry import Registry
    from blocks.errors import BlocksError

    registry = Registry.default()
    counts = registry.document_counts()
    rows = {row.slug: _type_json(row, counts.get(row.slug, 0)) for row in registry.list_types()}
    sources = {slug: "built in" for slug in BUILTIN_BLOCK_MODULES}
    sources.update(load_plugins())
    for slug in sources:
        try:
            cls = block_class_for(slug)
        except (BlocksError, ImportError):
            continue  # a plugin that failed to load was named in its one warning
        row = rows.setdefault(
            slug,
            {
                "slug": slug,
                "name": cls.get_block_type_name(),
                "module": cls.__module__,
                "documents": 0,
                "created": None,
                "updated": None,
            },
        )
        row["description"] = cls.get_description() or row.get("description") or ""
    for row in rows.values():
        row["source"] = sources.get(row["slug"]) or f"registered {row['module']}"
    return sorted(rows.values(), key=lambda row: row["slug"])


@type_group.command("inspect")
@click.argument("slug", metavar="TYPE", shell_complete=block_types)
@click.option("--json", "as_json", is_flag=True, help="JSON for scripts.")
def type_inspect(slug: str, as_json: bool) -> None:
    """Show a block type: description, fields and their types, secret fields, schemas."""
    from blocks.core._block import validate_name
    from blocks.core._registry import Registry
    from blocks.errors import UnknownBlockType

    validate_name(slug, what="block type slug")
    registry = Registry.default()
    row = registry.get_type(slug)
    if row is None:
        known = ", ".join(t.slug for t in registry.list_types()) or "none yet"
        raise UnknownBlockType(
            f"No block type {slug!r} is registered (registered: {known}). "
            "Register it with `block register -m MODULE`."
        )
    schemas = registry.list_schemas(slug)  # newest first
    documents = registry.document_counts().get(slug, 0)
    latest = schemas[0].fields if schemas else {}
    fields = describe_fields(latest)
    if as_json:
        echo_json(
            {
                **_type_json(row, documents),
                "fields": fields,
                "schemas": [
                    {"checksum": s.checksum, "version": s.version, "created": iso(s.created)}
                    for s in schemas
                ],
            }
        )
        return
    pairs: list[tuple[str, Any]] = [
        ("class", row.name),
        ("description", row.description),
        ("module", row.module),
        ("blocks", documents),
    ]
    pairs += [(f"schema v{s.version}", f"{s.checksum}  ({local_time(s.created)})") for s in schemas]
    print_pairs(pairs, title=row.slug)
    print_table(
        ("field", "type", "required", "secret", "default", "description"),
        (
            (
                f["name"],
                f["type"],
                "yes" if f["required"] else "",
                "yes" if f["secret"] else "",
                f.get("default", ""),
                f["description"],
            )
            for f in fields
        ),
    )


def describe_fields(schema: dict[str, Any]) -> list[dict[str, Any]]:
    """One entry per field of a stored block schema: name, type, required, secret, default."""
    required = set(schema.get("required", []))
    secret = set(schema.get("secret_fields", []))
    references = schema.get("block_schema_references", {})
    described = []
    for name, prop in schema.get("properties", {}).items():
        entry: dict[str, Any] = {
            "name": name,
            "type": _type_of(prop),
            "required": name in required,
            "secret": name in secret,
            "description": prop.get("description", ""),
        }
        if name in references:
            entry["blocks"] = references[name]
        if "default" in prop and name not in secret:
            entry["default"] = prop["default"]
        described.append(entry)
    return described


def _type_of(prop: dict[str, Any]) -> str:
    """A short, readable type from a JSON Schema property."""
    if "$ref" in prop:
        return str(prop["$ref"]).rsplit("/", 1)[-1]
    for key in ("anyOf", "oneOf"):
        if key in prop:
            return " | ".join(_type_of(option) for option in prop[key])
    if "const" in prop:
        return repr(prop["const"])
    if "enum" in prop:
        return " | ".join(repr(value) for value in prop["enum"])
    kind = prop.get("type")
    if kind == "string" and prop.get("format") == "password":
        return "secret str"
    if kind == "string" and prop.get("format") == "binary":
        return "bytes"
    if kind == "string" and "format" in prop:
        return str(prop["format"])
    if kind == "array":
        return f"list[{_type_of(prop.get('items', {}))}]"
    if kind == "object":
        return "dict"
    names = {
        "string": "str",
        "integer": "int",
        "number": "float",
        "boolean": "bool",
        "null": "None",
    }
    if isinstance(kind, list):
        return " | ".join(names.get(k, str(k)) for k in kind)
    return names.get(str(kind), "any") if kind else "any"


def _type_json(row: TypeRow, documents: int) -> dict[str, Any]:
    """What `type ls --json` and `type inspect --json` say of a type."""
    return {
        "slug": row.slug,
        "name": row.name,
        "description": row.description,
        "module": row.module,
        "documents": documents,
        "created": iso(row.created),
        "updated": iso(row.updated),
    }
