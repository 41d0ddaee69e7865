"""Create and edit forms generated from a block type's JSON schema, and back to field values.

Each schema property becomes one `FormField`: text, number, checkbox, a select for enums,
date and date-time pickers, a fieldset for a nested object, a JSON text area for lists, dicts
and anything else, a select of saved blocks for a field that holds a block, and a write-only
password input for anything secret (a secret field, or any field whose schema or stored value
holds a secret inside). A password input is never filled: left empty, the stored secret is
kept; its "clear" box sets an optional one to None. Beside it, a text input takes a reference
instead of a value (``env:NAME``, ``file:PATH``, ``aws-sm:NAME#key``) and shows the stored one:
a reference says where a value lives, not the value. What is typed into a field shown as secret
is stored as a secret: a field whose *type* is not secret (``Any``, ``dict[str, Any]``, a
``JSON`` block's value) but whose stored value holds one is marked `sealed`, and its new value
is wrapped in `SecretStr` / `pydantic.Secret` before the class validates it.

`parse_form` turns the posted text back into values (a secret left empty keeps the stored
value object, never its plaintext); the block class validates them, and `errors_by_field` puts
each problem next to its input without the input value (it may be a secret).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import pydantic
from pydantic import SecretStr, ValidationError

from blocks.core._block import Block
from blocks.core._documents import join_path
from blocks.core._references import SecretRef
from blocks.errors import BlockNotFound, InvalidName, SecretReferenceError, UnknownBlockType

#: The ``<select>`` value that keeps a nested block stored inline (not a saved reference).
INLINE = "__inline__"
#: Prefix of the checkbox that clears an optional secret.
CLEAR = "__clear__."
#: Prefix of the text input that holds a secret field's reference (``env:NAME``, ...).
REF = "__ref__."
MASK = "••••••"
_MISSING = object()


@dataclass
class FormField:
    """One input of a generated form; `value` is display text, never a secret's."""

    name: str  # dotted path, also the input's name
    label: str
    kind: str  # text number integer checkbox enum date datetime json secret reference object
    required: bool = False
    nullable: bool = False
    description: str = ""
    options: list[tuple[str, str]] = field(default_factory=list)  # (value, label)
    children: list[FormField] = field(default_factory=list)
    value: str = ""
    checked: bool = False
    stored: bool = False  # a secret is stored (edit form)
    secret_json: bool = False  # a secret that may be a JSON object
    sealed: bool = False  # secret only by its stored value, not its type: seal what is typed
    accepts_reference: bool = False  # a secret field that may hold a `SecretRef` instead
    reference: str = ""  # the stored reference (``env:NAME``), shown: it is not a secret
    error: str = ""


def build_fields(
    cls: type[Block],
    *,
    values: Mapping[str, Any] | None = None,
    secret_paths: frozenset[str] = frozenset(),
    ref_paths: frozenset[str] = frozenset(),
    choices: Mapping[str, list[str]] | None = None,
) -> list[FormField]:
    """The form of `cls`: `values` are a saved block's masked values (`inspect_block`),
    `secret_paths` / `ref_paths` its stored secrets and references, `choices` the saved
    ``type/name`` a reference field may pick, by field name."""
    schema = cls.get_block_schema()
    references = schema.get("block_schema_references", {})
    secrets = set(schema.get("secret_fields", []))
    builder = _Builder(schema, secret_paths, ref_paths)
    fields = []
    for name, prop in schema.get("properties", {}).items():
        required = name in schema.get("required", [])
        current = (values or {}).get(name, _MISSING)
        if name in references:
            fields.append(
                builder.reference(name, prop, required, current, (choices or {}).get(name, []))
            )
        else:
            fields.append(builder.build(name, prop, required, current, secret=name in secrets))
    return fields


class _Builder:
    def __init__(
        self, schema: dict[str, Any], secret_paths: frozenset[str], ref_paths: frozenset[str]
    ) -> None:
        self.defs = schema.get("$defs", {})
        self.secret_paths = secret_paths
        self.ref_paths = ref_paths

    def resolve(self, prop: dict[str, Any]) -> dict[str, Any]:
        for _ in range(16):
            if "$ref" in prop:
                target = self.defs.get(str(prop["$ref"]).rsplit("/", 1)[-1], {})
                prop = {**target, **{k: v for k, v in prop.items() if k != "$ref"}}
            elif "allOf" in prop and len(prop["allOf"]) == 1:
                prop = {**prop["allOf"][0], **{k: v for k, v in prop.items() if k != "allOf"}}
            else:
                break
        return prop

    def has_password(self, prop: Any, depth: int = 0) -> bool:
        if depth > 12:
            return False
        if isinstance(prop, dict):
            if prop.get("writeOnly") or prop.get("format") == "password":
                return True
            if "$ref" in prop:
                return self.has_password(self.resolve(prop), depth + 1)
            return any(self.has_password(v, depth + 1) for v in prop.values())
        if isinstance(prop, list):
            return any(self.has_password(v, depth + 1) for v in prop)
        return False

    def holds_secret(self, path: str) -> bool:
        return path in self.secret_paths or any(p.startswith(path + ".") for p in self.secret_paths)

    def build(
        self, path: str, prop: dict[str, Any], required: bool, current: Any, *, secret: bool
    ) -> FormField:
        prop = self.resolve(prop)
        label = prop.get("title") or path.rsplit(".", 1)[-1].replace("_", " ").capitalize()
        nullable, inner = _nullable(prop)
        inner = self.resolve(inner)
        made = FormField(
            name=path,
            label=str(label),
            kind="text",
            required=required,
            nullable=nullable,
            description=str(prop.get("description", inner.get("description", "")) or ""),
        )
        structured = inner.get("type") == "object" and "properties" in inner
        if secret or (not structured and (self.holds_secret(path) or self.has_password(inner))):
            made.kind = "secret"
            made.stored = self.holds_secret(path)
            # Shown as secret only because the stored value holds one (the type says nothing,
            # e.g. `Any`): what is typed must be sealed by us, or it would be stored in clear.
            made.sealed = not secret and not self.has_password(inner)
            made.secret_json = made.sealed or _allows_object(inner)
            made.accepts_reference = not made.sealed
            made.reference = reference_of(current)
            return made
        present = current is not _MISSING and current is not None
        if "enum" in inner or "const" in inner:
            made.kind = "enum"
            options = inner.get("enum", [inner.get("const")])
            made.options = [(json.dumps(o), str(o)) for o in options]
            made.value = json.dumps(current) if present else _default_json(prop)
            return made
        kind = inner.get("type")
        if structured:
            made.kind = "object"
            nested = current if isinstance(current, dict) else {}
            for name, child in inner["properties"].items():
                made.children.append(
                    self.build(
                        join_path(path, name),
                        child,
                        name in inner.get("required", []),
                        nested.get(name, _MISSING),
                        secret=False,
                    )
                )
            return made
        if kind == "boolean":
            made.kind = "checkbox"
            made.checked = bool(current) if present else bool(prop.get("default", False))
            return made
        if kind in ("integer", "number"):
            made.kind = str(kind)
            made.value = str(current) if present else _default_text(prop)
            return made
        if kind == "string" and inner.get("format") in ("date", "date-time"):
            made.kind = "date" if inner["format"] == "date" else "datetime"
            made.value = _date_text(current if present else prop.get("default"), made.kind)
            return made
        if kind == "string":
            made.value = str(current) if present else _default_text(prop)
            return made
        made.kind = "json"
        if present:
            made.value = json.dumps(current, indent=2, ensure_ascii=False)
        elif "default" in prop and prop["default"] is not None:
            made.value = json.dumps(prop["default"], indent=2, ensure_ascii=False)
        return made

    def reference(
        self, path: str, prop: dict[str, Any], required: bool, current: Any, saved: list[str]
    ) -> FormField:
        nullable, _ = _nullable(self.resolve(prop))
        made = FormField(
            name=path,
            label=path.replace("_", " ").capitalize(),
            kind="reference",
            required=required,
            nullable=nullable,
            description=str(prop.get("description", "")),
            options=[(slug, slug) for slug in saved],
        )
        if current is not _MISSING and current is not None:
            if path in self.ref_paths and isinstance(current, str):
                made.value = current
                if current not in saved:
                    made.options.append((current, current))
            else:
                made.value = INLINE
                made.options.insert(0, (INLINE, "(kept inline, as saved)"))
        return made


def reference_of(shown: Any) -> str:
    """The reference in what `inspect_block` shows for a secret (``ref env:NAME``), or ""."""
    if not isinstance(shown, str) or not shown.startswith("ref "):
        return ""
    return shown[4:].split(" (aws-credentials/", 1)[0]


def _nullable(prop: dict[str, Any]) -> tuple[bool, dict[str, Any]]:
    """(None allowed, the schema of the other values)."""
    options = prop.get("anyOf") or prop.get("oneOf")
    if not options:
        return prop.get("type") == "null", prop
    rest = [o for o in options if o.get("type") != "null"]
    nullable = len(rest) < len(options)
    if len(rest) == 1:
        return nullable, rest[0]
    return nullable, {"anyOf": rest}


def _allows_object(prop: dict[str, Any]) -> bool:
    options = prop.get("anyOf") or prop.get("oneOf") or [prop]
    return any(o.get("type") == "object" for o in options if isinstance(o, dict))


def _json_or_text(text: str) -> Any:
    """A JSON value if `text` is one, else the text (as a JSON field reads its input)."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _sealed(value: Any) -> Any:
    """`value` with every leaf a secret: `SecretStr` for text, `pydantic.Secret` for numbers
    and booleans. Dicts and lists keep their shape (a ``dict[str, Any]`` field needs one, and
    code reading ``value["password"]`` keeps working), as the library stores a dict of secrets:
    its keys in clear, each value encrypted."""
    if value is None:
        return None
    if isinstance(value, str):
        return SecretStr(value)
    if isinstance(value, dict):
        return {key: _sealed(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_sealed(item) for item in value]
    return pydantic.Secret(value)


def _default_text(prop: dict[str, Any]) -> str:
    default = prop.get("default")
    return "" if default is None else str(default)


def _default_json(prop: dict[str, Any]) -> str:
    return json.dumps(prop["default"]) if prop.get("default") is not None else ""


def _date_text(value: Any, kind: str) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime | date):
        value = value.isoformat()
    text = str(value)
    if kind == "datetime":
        # datetime-local shows local wall time without zone: keep what was stored, minus zone.
        text = text.replace("Z", "")[:19]
    return text


# -- posted form -> values -------------------------------------------------------------------


def parse_form(
    fields: list[FormField], form: Mapping[str, str], existing: Block | None
) -> tuple[dict[str, Any], dict[str, str]]:
    """Field values from posted text, and errors by field (never quoting a secret's input).

    Also refills each non-secret field's `value` with what was posted, to show the form again.
    """
    data: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for item in fields:
        value = _parse_one(item, form, existing, errors)
        if value is not _MISSING:
            data[item.name.rsplit(".", 1)[-1]] = value
    return data, errors


def _parse_one(
    item: FormField, form: Mapping[str, str], existing: Block | None, errors: dict[str, str]
) -> Any:
    text = form.get(item.name, "")
    if item.kind == "secret":
        ref_text = form.get(REF + item.name, "").strip() if item.accepts_reference else ""
        new_ref = ref_text != "" and ref_text != item.reference
        if new_ref and text != "":
            errors[item.name] = "give a value or a reference, not both"
            return _MISSING
        if new_ref:
            try:
                return SecretRef(ref_text)  # read as bytes or a dict by the field's type
            except SecretReferenceError as exc:
                errors[item.name] = str(exc)  # names the reference, which is not a secret
                return _MISSING
        if text == "":
            if form.get(CLEAR + item.name) and item.nullable:
                return None
            kept = _value_at(existing, item.name)
            return kept if kept is not _MISSING else _MISSING
        if item.sealed:
            return _sealed(_json_or_text(text))
        if item.secret_json and text.lstrip().startswith("{"):
            try:
                return json.loads(text)
            except ValueError:
                errors[item.name] = "is not a valid JSON object (the value is not shown)"
                return _MISSING
        return text
    if item.kind == "object":
        if item.nullable and not any(form.get(name, "") for name in _leaves(item)):
            return None  # an optional nested model left entirely empty
        nested = {}
        for child in item.children:
            value = _parse_one(child, form, existing, errors)
            if value is not _MISSING:
                nested[child.name.rsplit(".", 1)[-1]] = value
        return nested
    if item.kind == "checkbox":
        item.checked = item.name in form
        return item.checked
    item.value = text
    if item.kind == "reference":
        if text == "":
            return None if item.nullable else _MISSING
        if text == INLINE:
            return _value_at(existing, item.name)
        try:
            return Block.load(text)
        except (BlockNotFound, InvalidName, UnknownBlockType) as exc:
            errors[item.name] = str(exc)
            return _MISSING
    if text.strip() == "":
        return None if item.nullable else _MISSING
    if item.kind in ("enum", "json"):
        try:
            return json.loads(text)
        except ValueError:
            if item.kind == "json" and text.strip()[:1] not in ("[", "{", '"'):
                return text  # plain text for a field of any type; the class validates it
            errors[item.name] = "is not valid JSON"
            return _MISSING
    if item.kind == "integer":
        try:
            return int(text)
        except ValueError:
            errors[item.name] = "expects a whole number"
            return _MISSING
    if item.kind == "number":
        try:
            return float(text)
        except ValueError:
            errors[item.name] = "expects a number"
            return _MISSING
    return text


def _leaves(item: FormField) -> list[str]:
    if not item.children:
        return [item.name]
    return [name for child in item.children for name in _leaves(child)]


def _value_at(block: Block | None, path: str) -> Any:
    value: Any = block
    for part in path.split("."):
        if value is None:
            return _MISSING
        if isinstance(value, dict):
            value = value.get(part, _MISSING)
        else:
            value = getattr(value, part, _MISSING)
        if value is _MISSING:
            return _MISSING
    return value


def validate(cls: type[Block], data: dict[str, Any], errors: dict[str, str]) -> Block | None:
    """The block, or None with `errors` filled by field (from pydantic, inputs left out)."""
    try:
        block = cls.model_validate(data)
    except ValidationError as exc:
        for path, message in errors_by_field(exc).items():
            errors.setdefault(path, message)  # a parse error says more than "required"
        return None
    return None if errors else block


def errors_by_field(exc: ValidationError) -> dict[str, str]:
    """``{"dotted.path": "what is expected"}``; never the input (it may be a secret)."""
    found: dict[str, list[str]] = {}
    for err in exc.errors(include_url=False, include_input=False):
        parts: list[str] = []
        for part in err["loc"]:
            if isinstance(part, str) and ("[" in part or "(" in part):
                break  # a union member's tag, e.g. 'function-after[SecretStr(), str]'
            parts.append(str(part))
        messages = found.setdefault(".".join(parts), [])
        if err["msg"] not in messages:
            messages.append(err["msg"])
    return {path: " or ".join(messages) for path, messages in found.items()}


def attach_errors(fields: list[FormField], errors: dict[str, str]) -> list[str]:
    """Put each error on its field (or the nearest parent); return those left over."""
    left = dict(errors)

    def walk(items: list[FormField]) -> None:
        for item in items:
            walk(item.children)
            for path in list(left):
                if path == item.name or (path.startswith(item.name + ".") and not item.children):
                    item.error = "; ".join(filter(None, [item.error, left.pop(path)]))

    walk(fields)
    return [f"{path}: {message}" if path else message for path, message in left.items()]
