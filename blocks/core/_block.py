"""The `Block` model: typed configuration that saves to and loads from the registry.

A Block is a pydantic v2 model with a type slug (kebab-case of the class name unless set),
a JSON schema with a checksum, and save/load/delete/list. Secret fields (`SecretStr`,
`SecretBytes`, `SecretDict`) are encrypted at rest; nested blocks that were saved are stored
by reference, so a later update of the child is seen through the parent.

Example:
    >>> class Warehouse(Block):
    ...     host: str
    ...     password: SecretStr
    >>> Warehouse(host="db", password="hunter2").save("prod")
    >>> Warehouse.load("prod").password.get_secret_value()
    'hunter2'
    >>> Block.load("warehouse/prod").host
    'db'
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import re
import sys
import types
import typing
import uuid
import warnings
from collections.abc import Iterable, Iterator
from functools import lru_cache
from typing import Any, ClassVar, Self

import pydantic
import pydantic_core
from pydantic import (
    BaseModel,
    ConfigDict,
    PrivateAttr,
    SecretBytes,
    SecretStr,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    ValidationError,
    ValidatorFunctionWrapHandler,
    model_serializer,
    model_validator,
)

from blocks import settings
from blocks.core._document_bytes import document_message, loads_compact
from blocks.core._documents import (
    SECRET_TYPES,
    field_problems,
    join_path,
    mask_userinfo,
    pull_secrets,
    refuse_hidden_secrets,
    secret_aad,
    secret_plaintext,
    secret_value,
    set_path,
    without_inputs,
)
from blocks.core._masking import note as note_secret
from blocks.core._references import SecretRef, as_field_kind, is_reference
from blocks.errors import (
    BlockNotFound,
    ConfigurationError,
    DecryptionFailed,
    IncompatibleSchema,
    InvalidBlockData,
    InvalidName,
    TamperedDocument,
    UnknownBlockType,
)

if typing.TYPE_CHECKING:
    from blocks.core._encryption import KeyManager, Keyset
    from blocks.core._registry import DocumentRow, Registry


class SecretDict(pydantic.Secret[dict[str, Any]]):
    """A dict whose whole value is secret: masked in repr, encrypted at rest. It may be a
    `SecretRef` to a JSON object instead (read when asked for, never at validation)."""

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: pydantic.GetCoreSchemaHandler
    ) -> pydantic_core.core_schema.CoreSchema:
        schema = super().__get_pydantic_core_schema__(source, handler)

        def keep_reference(value: Any, validate: ValidatorFunctionWrapHandler) -> Any:
            # pydantic's own validator would read the value (resolving the reference) now.
            if is_reference(value):
                return value.as_kind("dict")
            return validate(value)

        return pydantic_core.core_schema.no_info_wrap_validator_function(
            keep_reference, schema, serialization=schema.get("serialization")
        )


_NAME = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
_ANONYMOUS = re.compile(r"^anonymous-[0-9a-f]{32}$")

SLUG_KEY = "block_type_slug"
"""The key that names a block's type in its dumped data (as in Prefect): parsing a dict with it
from a base class builds the named subclass."""
_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*$")

SECRET_MASK = "**********"
"""What a secret value looks like wherever it is shown."""

# Blocks that ship with the package, importable on demand by `Block.load("slug/name")`.
BUILTIN_BLOCK_MODULES: dict[str, str] = {
    "secret": "blocks.system",
    "json": "blocks.system",
    "string": "blocks.system",
    "date-time": "blocks.system",
    "webhook": "blocks.system",
    # The defining modules: `blocks.filesystems` itself imports its names lazily.
    "local-file-system": "blocks.filesystems.local",
    "remote-file-system": "blocks.filesystems.remote",
    "s3": "blocks.filesystems.aws",
    "gcs": "blocks.filesystems.gcp",
    "aws-credentials": "blocks.filesystems.aws",
    "gcp-credentials": "blocks.filesystems.gcp",
    "aws-secret": "blocks.filesystems.aws",
    "azure-blob-storage-container": "blocks.filesystems.azure",
    "azure-blob-storage-credentials": "blocks.filesystems.azure",
    "database-credentials": "blocks.databases",
    "sql-alchemy-connector": "blocks.databases",
    "slack-webhook": "blocks.notifications",
    "ms-teams-webhook": "blocks.notifications",
    "discord-webhook": "blocks.notifications",
    "custom-webhook": "blocks.notifications",
    "smtp-email": "blocks.notifications",
    "apprise-notification": "blocks.notifications",
}

_BLOCK_CLASSES: dict[str, type[Block]] = {}
# Slugs two installed plugins (or a plugin and a built-in type) claim, with who claims them:
# filled by `_discovery.load_plugins`, checked by `block_class_for`.
_PLUGIN_CONFLICTS: dict[str, list[str]] = {}


def record_plugin_conflict(slug: str, holders: list[str]) -> None:
    """Remember that `holders` (package labels) all define block type `slug`."""
    _PLUGIN_CONFLICTS[slug] = list(holders)


_SCHEMAS: dict[type[Block], tuple[dict[str, Any], str]] = {}


# Names seen valid (bounded): every load checks its type slug and name.
_VALID_NAMES: set[str] = set()


# Modules whose Block classes keep `defer_build` (see `Block.model_config`).
_BUILT_ON_FIRST_USE = frozenset({"blocks.system"})


def validate_name(name: str, *, what: str = "block name") -> str:
    """Return `name` if it is lowercase letters, digits and single dashes; else `InvalidName`."""
    if type(name) is str and name in _VALID_NAMES:
        return name
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidName(
            f"Invalid {what} {name!r}: use lowercase letters, digits and dashes "
            "(e.g. 'my-api-key'), starting and ending with a letter or digit."
        )
    if type(name) is str:
        if len(_VALID_NAMES) >= 4096:
            _VALID_NAMES.clear()
        _VALID_NAMES.add(name)
    return name


@lru_cache(maxsize=1024)  # on every load (via the type slug): two regex passes each time
def kebab_case(name: str) -> str:
    """``AwsCredentials`` -> ``aws-credentials``, ``S3`` -> ``s3``, ``GCS`` -> ``gcs``."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "-", name)
    return re.sub(r"[^a-z0-9]+", "-", spaced.lower()).strip("-")


def block_class_for(slug: str, *, import_registered: bool = False) -> type[Block]:
    """The Block class registered under `slug` (importing built-in blocks on demand).

    With `import_registered`, a type recorded by `register_type_and_schema` is imported from
    the module or file it was registered from, only if this user registered that module or file
    on this machine (`block register`) or an installed plugin names it. A module name or path
    read from the registry alone is never imported: whoever can write a shared registry must
    not choose the code another user's CLI runs.
    """
    if _PLUGIN_CONFLICTS and slug in _PLUGIN_CONFLICTS:
        _raise_conflict(slug)
    cls = _BLOCK_CLASSES.get(slug)
    if cls is None and slug in BUILTIN_BLOCK_MODULES:
        importlib.import_module(BUILTIN_BLOCK_MODULES[slug])
        cls = _BLOCK_CLASSES.get(slug)
    if cls is None:
        # Installed plugins (`blocks.types` entry points), imported on this first need only.
        from blocks.core._discovery import load_plugins

        load_plugins()
        if slug in _PLUGIN_CONFLICTS:
            _raise_conflict(slug)
        cls = _BLOCK_CLASSES.get(slug)
    if cls is None:
        hint = ""
        from blocks.core._registry import Registry

        row = Registry.default().get_type(slug)
        if row is not None and row.module:
            from blocks.core._discovery import load_block_module, may_import

            if import_registered and may_import(row.module):
                try:
                    load_block_module(row.module)
                except ConfigurationError as exc:
                    raise UnknownBlockType(
                        f"Block type {slug!r} was registered from {row.module!r}, which cannot "
                        f"be imported now. {exc}"
                    ) from exc
                cls = _BLOCK_CLASSES.get(slug)
                hint = f" Module {row.module!r}, where it was registered, no longer defines it."
            elif not _MODULE.match(row.module):
                hint = (
                    f" It was registered from the file {row.module!r}, which is never run from "
                    "the registry: register it in this shell first (`block register -f FILE`), "
                    "or move it into an installed module (`block register -m MODULE`)."
                )
            elif row.module == "__main__":
                hint = (
                    " It was defined in a script (__main__): move it into a module and "
                    "register that (`block register -m MODULE`)."
                )
            else:
                hint = (
                    f" It was registered from module {row.module!r}, which is never imported "
                    "from the registry: register it on this machine first (`block register -m "
                    f"{row.module}`), or install it as a plugin (a 'blocks.types' entry point)."
                )
        elif row is None:
            hint = " Register its module first: `block register -m MODULE` or `-f FILE`."
    if cls is None:
        raise UnknownBlockType(f"No Block class with type slug {slug!r} is imported.{hint}")
    return cls


def _raise_conflict(slug: str) -> None:
    from blocks.errors import PluginConflict

    holders = _PLUGIN_CONFLICTS[slug]
    raise PluginConflict(
        f"Block type {slug!r} is defined by {' and by '.join(holders)}: uninstall one of them, "
        "or give one class another _block_type_slug."
    )


def _dispatch_class(base: type[Block], slug: Any) -> type[Block]:
    """The subclass of `base` named by a ``block_type_slug`` value; never imports user code
    (built-in blocks only), so parsed data cannot choose what is imported."""
    cls = _BLOCK_CLASSES.get(slug) if isinstance(slug, str) else None
    if cls is None and isinstance(slug, str) and slug in BUILTIN_BLOCK_MODULES:
        importlib.import_module(BUILTIN_BLOCK_MODULES[slug])
        cls = _BLOCK_CLASSES.get(slug)
    if cls is None or not issubclass(cls, base):
        shown = repr(slug) if isinstance(slug, str) and len(slug) < 80 else "(invalid)"
        raise ValueError(
            f"block_type_slug {shown} does not name an imported {base.__name__} type "
            f"(expected {base.get_block_type_slug()!r} or one of its imported subclasses)"
        )
    return cls


def is_anonymous_name(name: str) -> bool:
    """Whether `name` was generated by ``save(is_anonymous=True)``."""
    return name.startswith("anonymous-") and bool(_ANONYMOUS.match(name))


def block_classes() -> dict[str, type[Block]]:
    """Every Block class imported so far, by slug."""
    return dict(_BLOCK_CLASSES)


def split_slug(slug: str) -> tuple[str, str]:
    """``"secret/my-key"`` -> ``("secret", "my-key")``, both validated."""
    type_slug, sep, name = slug.partition("/")
    if not sep:
        raise InvalidName(f"Expected TYPE/NAME such as 'secret/my-api-key', got {slug!r}.")
    return validate_name(type_slug, what="block type slug"), validate_name(name)


def _is_secret_annotation(annotation: Any) -> bool:
    if annotation in (SecretStr, SecretBytes):
        return True
    origin = typing.get_origin(annotation)
    if isinstance(annotation, type) and issubclass(annotation, pydantic.Secret):
        return True
    if origin is not None and isinstance(origin, type) and issubclass(origin, pydantic.Secret):
        return True
    if origin in (typing.Union, types.UnionType, typing.Annotated):
        return any(_is_secret_annotation(arg) for arg in typing.get_args(annotation))
    return False


def _references_as_field_kinds(cls: type[Block], data: dict[str, Any]) -> dict[str, Any]:
    """`data` with each `SecretRef` given to a `SecretBytes` field made a `SecretBytesRef`
    (a `SecretDict` field converts its own)."""
    fields = cls.model_fields
    return {
        key: as_field_kind(value, fields[key].annotation) if key in fields else value
        for key, value in data.items()
    }


def _block_annotation(annotation: Any) -> list[type[Block]]:
    if isinstance(annotation, type) and issubclass(annotation, Block):
        return [annotation]
    found: list[type[Block]] = []
    if typing.get_origin(annotation) in (typing.Union, types.UnionType, typing.Annotated):
        for arg in typing.get_args(annotation):
            found.extend(_block_annotation(arg))
    return found


class Block(BaseModel):
    """Base class of every block: subclass it, declare typed fields, then save and load.

    Class options: ``_block_type_slug`` (default: kebab-case class name),
    ``_block_type_name``, ``_block_schema_version`` (default ``"1"``), ``_description``.
    """

    # Errors never repeat an input value: it may be a secret.
    # A field with an alias is stored under its field name and accepted under either name
    # (Prefect's documents use the alias; ours are keyed like secret paths and `--set`).
    model_config = ConfigDict(
        extra="forbid",
        validate_assignment=True,
        frozen=False,
        hide_input_in_errors=True,
        populate_by_name=True,
        # Block's and the system blocks' validators and serializers are built on their first
        # validation or dump, not at definition: importing `blocks.system` built six (~70M
        # instructions, ~25 ms of a cold `Secret.load`), and a load of a plain class builds
        # none (`_construct`). Other subclasses are built at definition as before
        # (`__pydantic_init_subclass__`), so a field type pydantic cannot handle is still an
        # error where the class is defined.
        defer_build=True,
    )

    _block_type_slug: ClassVar[str | None] = None
    _block_type_name: ClassVar[str | None] = None
    _block_schema_version: ClassVar[str] = "1"
    _description: ClassVar[str | None] = None
    _block_is_abstract: ClassVar[bool] = True

    _block_document_id: str | None = PrivateAttr(default=None)
    _block_document_name: str | None = PrivateAttr(default=None)
    _is_anonymous: bool = PrivateAttr(default=False)
    #: Prefect's block type id, set after a save or a load: here the type's slug (types are
    #: keyed by slug in the registry).
    _block_type_id: str | None = PrivateAttr(default=None)

    @pydantic.model_validator(mode="wrap")
    @classmethod
    def _errors_without_inputs(cls, data: Any, handler: Any) -> Any:
        # hide_input_in_errors covers str() only: .errors() and .json() still carry the input,
        # which may be a secret (construction, model_validate, assignment all pass here).
        if type(data) is dict and any(type(value) is SecretRef for value in data.values()):
            data = _references_as_field_kinds(cls, data)
        try:
            return handler(data)
        except ValidationError as exc:
            raise without_inputs(exc) from None

    def __setattr__(self, name: str, value: Any) -> None:
        # Assignment validation sees the model, not the new value: convert a reference here.
        if type(value) is SecretRef and name in type(self).model_fields:
            value = as_field_kind(value, type(self).model_fields[name].annotation)
        super().__setattr__(name, value)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "_block_is_abstract" not in cls.__dict__:
            cls._block_is_abstract = inspect.isabstract(cls)
        if not cls._block_is_abstract:
            _BLOCK_CLASSES[cls.get_block_type_slug()] = cls

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        if cls.__module__ not in _BUILT_ON_FIRST_USE:
            # What pydantic does at definition without `defer_build`: an annotation not
            # defined yet leaves the class to be built on first use, any other error raises.
            cls.model_rebuild(raise_errors=False, _parent_namespace_depth=0)

    # -- polymorphic parsing by block_type_slug (Prefect's dispatch) --------------------------

    def __new__(cls, *args: Any, **kwargs: Any) -> Self:
        if args:  # pydantic's own message ("takes 1 positional argument") names no field
            fields = ", ".join(f"{name}=..." for name in list(cls.model_fields)[:3])
            raise TypeError(
                f"{cls.__name__} takes its fields by name, e.g. {cls.__name__}({fields}), "
                f"not {len(args)} positional argument(s)."
            )
        # ``Base(block_type_slug="child", ...)`` builds a Child; its __init__ then runs.
        slug = kwargs.get(SLUG_KEY)
        if slug is not None and (cls._block_is_abstract or slug != cls.get_block_type_slug()):
            return super().__new__(_dispatch_class(cls, slug))  # type: ignore[return-value]
        return super().__new__(cls)

    @model_validator(mode="wrap")
    @classmethod
    def _dispatch_by_slug(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        if type(data) is dict and SLUG_KEY in data:
            data = dict(data)
            slug = data.pop(SLUG_KEY)
            if cls._block_is_abstract or slug != cls.get_block_type_slug():
                target = _dispatch_class(cls, slug)
                if target is not cls:
                    return target.model_validate(data)
        return handler(data)

    @model_serializer(mode="wrap")
    def _dump_with_slug(
        self, handler: SerializerFunctionWrapHandler, info: SerializationInfo
    ) -> Any:
        dumped = handler(self)
        include, exclude = info.include, info.exclude
        own = type(self)
        if (
            isinstance(dumped, dict)
            and len(dumped) < len(own.model_fields)
            and include is None
            and exclude is None
            and not (info.exclude_unset or info.exclude_defaults or info.exclude_none)
        ):
            # Dumped through a field typed with a base class (pydantic serializes by the
            # declared type): dump all of this subclass's fields, so parsing gets it back.
            dumped = own.__pydantic_serializer__.to_python(
                self,
                mode=info.mode,
                by_alias=info.by_alias,
                round_trip=info.round_trip,
                context=info.context,
            )
        if (
            isinstance(dumped, dict)
            and (include is None or SLUG_KEY in include)
            and (exclude is None or SLUG_KEY not in exclude)
        ):
            dumped[SLUG_KEY] = type(self).get_block_type_slug()
        return dumped

    # -- type metadata ----------------------------------------------------------------------

    @classmethod
    def get_block_type_slug(cls) -> str:
        slug = cls.__dict__.get("_block_type_slug") or kebab_case(cls.__name__)
        return validate_name(slug, what="block type slug")

    @classmethod
    def get_block_type_name(cls) -> str:
        return cls.__dict__.get("_block_type_name") or cls.__name__

    @classmethod
    def get_description(cls) -> str:
        # The class's own docstring: inspect.getdoc would inherit Block's.
        own = cls.__dict__.get("__doc__")
        described = cls.__dict__.get("_description") or (inspect.cleandoc(own) if own else "")
        return described.strip().split("\n\n")[0].replace("\n", " ")

    @classmethod
    def secret_fields(cls) -> list[str]:
        """Names of fields whose values are encrypted at rest and masked on display."""
        return [
            name
            for name, field in cls.model_fields.items()
            if _is_secret_annotation(field.annotation)
        ]

    @classmethod
    def block_fields(cls) -> dict[str, list[str]]:
        """Fields that hold other blocks, with the slugs they may hold."""
        found = {}
        for name, field in cls.model_fields.items():
            classes = _block_annotation(field.annotation)
            if classes:
                found[name] = [c.get_block_type_slug() for c in classes if not c._block_is_abstract]
        return found

    @classmethod
    def get_block_schema(cls) -> dict[str, Any]:
        """JSON Schema of the fields, plus which are secret and which hold blocks."""
        cached = _SCHEMAS.get(cls)
        if cached is None:
            schema = cls.model_json_schema(by_alias=False)  # documents are keyed by field name
            schema["block_type_slug"] = cls.get_block_type_slug()
            schema["secret_fields"] = cls.secret_fields()
            schema["block_schema_references"] = cls.block_fields()
            canonical = json.dumps(schema, sort_keys=True, separators=(",", ":"))
            cached = _SCHEMAS[cls] = (
                schema,
                "sha256:" + hashlib.sha256(canonical.encode()).hexdigest(),
            )
        return cached[0]

    @classmethod
    def get_schema_checksum(cls) -> str:
        """``sha256:`` of the canonical schema: changes whenever the fields change."""
        cls.get_block_schema()
        return _SCHEMAS[cls][1]

    @classmethod
    def register_type_and_schema(cls, registry: Registry | None = None) -> None:
        """Record this type and its current schema in the registry without saving a document."""
        if cls._block_is_abstract:
            raise UnknownBlockType(f"{cls.__name__} is abstract and cannot be registered.")
        registry = registry or _registry()
        if registry.knows_schema(cls.get_schema_checksum()):
            return  # every save calls this: skip building the description (inspect.cleandoc)
        registry.register_type(
            slug=cls.get_block_type_slug(),
            name=cls.get_block_type_name(),
            description=cls.get_description(),
            # A module loaded from a file (`block register -f`) is recorded by its path.
            module=getattr(sys.modules.get(cls.__module__), "__blocks_file__", cls.__module__),
            checksum=cls.get_schema_checksum(),
            version=cls._block_schema_version,
            fields=cls.get_block_schema(),
        )

    # -- documents --------------------------------------------------------------------------

    @property
    def block_document_name(self) -> str | None:
        """The name this block was saved or loaded under, if any."""
        return self._block_document_name

    def save(
        self, name: str | None = None, overwrite: bool = False, *, is_anonymous: bool = False
    ) -> str:
        """Save under `name` (unique per type); return the document id.

        Without `name`, a block that was loaded or saved is saved again under its name.
        ``is_anonymous=True`` (Prefect's anonymous save) saves under a generated name
        ``anonymous-<hex>``, a new document each time, left out of `list()`.

        Example:
            >>> Secret(value="s3cr3t").save("my-api-key")
            >>> Secret(value="s3cr3t").save(is_anonymous=True)  # name in .block_document_name
        """
        cls = type(self)
        if is_anonymous:
            if name is not None:
                raise InvalidName(
                    f"An anonymous save takes no name (got {name!r}): its name is generated. "
                    "Drop the name, or save without is_anonymous=True."
                )
            name = f"anonymous-{uuid.uuid4().hex}"
        elif name is None:
            name = self._block_document_name
            if name is None:
                raise InvalidName(
                    f"This {cls.__name__} was never saved or loaded: save it with a name, "
                    "e.g. .save('my-block'), or with .save(is_anonymous=True)."
                )
        validate_name(name)
        registry, manager = _context()
        cls.register_type_and_schema(registry)
        slug = cls.get_block_type_slug()
        data, secrets, refs = self._to_document(registry)
        document_id = _seal_and_save(
            registry, cls, slug, name, data, secrets, refs, overwrite, manager
        )
        _set_document(self, document_id, name)
        return document_id

    async def asave(
        self, name: str | None = None, overwrite: bool = False, *, is_anonymous: bool = False
    ) -> str:
        """`save` for async code (Prefect 3's name): the same call, run in a worker thread so
        the event loop is not blocked by the registry."""
        import asyncio  # not at module level: ~20 ms of a cold `Secret.load`

        return await asyncio.to_thread(self.save, name, overwrite, is_anonymous=is_anonymous)

    def _to_document(
        self, registry: Registry, prefix: str = ""
    ) -> tuple[dict[str, Any], dict[str, bytes], dict[str, str]]:
        """Split into plain JSON data, secret plaintexts and references (by dotted path)."""
        special: set[str] = set()
        nested: dict[str, Any] = {}
        secrets: dict[str, bytes] = {}
        refs: dict[str, str] = {}
        fields = type(self).model_fields
        for name, info in fields.items():
            value = getattr(self, name)
            path = join_path(prefix, name)
            if isinstance(value, SECRET_TYPES):
                special.add(name)
                secrets[path] = secret_plaintext(value)
            elif isinstance(value, Block):
                special.add(name)
                if value._block_document_id is not None:
                    refs[path] = value._block_document_id
                else:
                    type(value).register_type_and_schema(registry)
                    child, child_secrets, child_refs = value._to_document(registry, path)
                    if _block_annotation(info.annotation) != [type(value)]:
                        # The field takes a base class or a union: say which type this is.
                        child[SLUG_KEY] = type(value).get_block_type_slug()
                    nested[name] = child
                    secrets.update(child_secrets)
                    refs.update(child_refs)
        # Python mode keeps secrets nested in containers as secret objects (JSON mode would
        # mask them, losing the value): pull them out. Fields without secrets are dumped in
        # JSON mode, so a custom type's own serializer (e.g. a SemanticVersion) is used.
        special.add(SLUG_KEY)
        raw = (
            {}  # every field is a secret or a block (a Secret): nothing left to dump
            if special.issuperset(fields) and not type(self).model_computed_fields
            else self.model_dump(mode="python", exclude=special, round_trip=True)
        )
        with_secrets: dict[str, Any] = {}
        for key, value in raw.items():
            before = len(secrets)
            path = join_path(prefix, key)
            pulled = pull_secrets(value, path, secrets)
            refuse_hidden_secrets(pulled, path)
            if len(secrets) != before:
                with_secrets[key] = pydantic_core.to_jsonable_python(pulled)
        plain = set(raw) - set(with_secrets)
        as_json = (
            self.model_dump(mode="json", include=plain, exclude={SLUG_KEY}, round_trip=True)
            if plain
            else {}
        )
        data: dict[str, Any] = {
            key: with_secrets[key] if key in with_secrets else as_json[key] for key in raw
        }
        data.update(nested)
        return data, secrets, refs

    @classmethod
    def load(cls, name: str, validate: bool = True) -> Self:
        """Load a saved block by name; on `Block` itself use ``"type-slug/name"``.

        A base class loads any of its subclasses by ``"type-slug/name"``. With
        ``validate=False`` a document the current class cannot validate (e.g. a required field
        was added since it was saved) still loads, with a warning naming the fields: valid
        fields are set, missing ones are None, invalid ones keep their stored value (secret
        ones are None). Set them and save again before using the block.

        Example:
            >>> Secret.load("my-api-key").get()
            's3cr3t'
            >>> Block.load("secret/my-api-key")
            Secret(value=SecretStr('**********'))
        """
        slug, name = cls._resolve_name(name)
        registry, manager = _context()
        keyset = manager.cached_keyset()
        kept = None if keyset is None else keyset.opened.get((slug, name))
        stamp = None
        if kept is not None:  # built before: no SELECT while the registry is unchanged
            stamp = registry.documents_stamp()
            if stamp is not None and stamp == kept[6]:
                block = _rebuild(slug, kept)
                if block is not None:
                    return cls._loaded(block, slug, name)
        columns = registry.load_columns(slug, name)
        if columns is None:
            target = block_class_for(slug)  # an unknown type is the clearer error
            existing = registry.document_names(slug)
            known = ", ".join(existing[:20]) if existing else "none yet"
            raise BlockNotFound(
                f"No {slug} block named '{name}'. Saved {slug} blocks: {known}. "
                f"Create it with {target.__name__}(...).save('{name}') "
                f"or `block create {slug} {name}`."
            )
        block = None
        if kept is not None and kept[0] == columns and manager.cached_keyset() is keyset:
            block = _rebuild(slug, kept)
            if block is not None and stamp is not None and keyset is not None:
                # These bytes were read after `stamp` was taken: while it holds, they hold.
                keyset.opened[(slug, name)] = (*kept[:6], stamp)
        if block is None:
            keyset = manager.cached_keyset()
            if keyset is not None:
                block = _first_load(keyset, slug, name, columns)
        if block is None:
            row = registry.loaded_document(slug, name, columns)
            block = _load_rereading(registry, row, validate, manager, columns)
        return cls._loaded(block, slug, name)

    @classmethod
    def _loaded(cls, block: Block, slug: str, name: str) -> Self:
        """`block`, if it is one of this class's (a base class loads its subclasses)."""
        if not isinstance(block, cls):
            raise UnknownBlockType(
                f"{slug}/{name} is a {type(block).__name__}, not a {cls.__name__}."
            )
        return block

    @classmethod
    async def aload(cls, name: str, validate: bool = True) -> Self:
        """`load` for async code (Prefect 3's name): the same call, run in a worker thread."""
        import asyncio

        return await asyncio.to_thread(cls.load, name, validate)

    @classmethod
    def load_from_ref(cls, ref: str | uuid.UUID | dict[str, Any], validate: bool = True) -> Self:
        """Load a saved block by reference, as Prefect does: a document id (a string or a
        `uuid.UUID`), ``{"block_document_id": ...}``, ``{"block_document_slug": "type/name"}``
        or ``{"block_type_slug": ..., "block_document_name": ...}``.

        Example:
            >>> document_id = Secret(value="s3cr3t").save("my-api-key")
            >>> Secret.load_from_ref({"block_document_id": document_id}).get()
            's3cr3t'
        """
        if isinstance(ref, dict):
            if ref.get("block_document_id"):
                return cls._load_by_id(ref["block_document_id"], validate)
            slug = ref.get("block_document_slug")
            if isinstance(slug, str) and slug:
                return cls.load(slug, validate)
            name, type_slug = ref.get("block_document_name"), ref.get("block_type_slug")
            if isinstance(name, str) and name and (type_slug is None or isinstance(type_slug, str)):
                return cls.load(f"{type_slug}/{name}" if type_slug else name, validate)
        elif isinstance(ref, str | uuid.UUID):
            return cls._load_by_id(ref, validate)
        raise InvalidName(
            f"Invalid reference format {_short_ref(ref)}: give a document id, "
            '{"block_document_id": ID}, {"block_document_slug": "TYPE/NAME"} or '
            '{"block_type_slug": TYPE, "block_document_name": NAME}.'
        )

    @classmethod
    async def aload_from_ref(
        cls, ref: str | uuid.UUID | dict[str, Any], validate: bool = True
    ) -> Self:
        """`load_from_ref` for async code: the same call, run in a worker thread."""
        import asyncio

        return await asyncio.to_thread(cls.load_from_ref, ref, validate)

    @classmethod
    def _load_by_id(cls, document_id: Any, validate: bool) -> Self:
        key = _document_key(document_id)
        registry, manager = _context()
        row = None if key is None else registry.get_document_by_id(key)
        if row is None:
            raise BlockNotFound(
                f"No block document has the id {_short_ref(document_id)}: it was deleted, or "
                "the id belongs to another registry (BLOCKS_REGISTRY_URL)."
            )
        block = _load_rereading(registry, row, validate, manager)
        if not isinstance(block, cls):
            raise UnknownBlockType(f"{row.slug} is a {type(block).__name__}, not a {cls.__name__}.")
        return block

    @classmethod
    def _resolve_name(cls, name: str) -> tuple[str, str]:
        if cls._block_is_abstract or "/" in name:
            type_slug, name = split_slug(name)
            if (
                not cls._block_is_abstract
                and type_slug != cls.get_block_type_slug()
                and not issubclass(block_class_for(type_slug), cls)
            ):
                raise InvalidName(
                    f"{name!r} names a {type_slug} block; {cls.__name__} loads "
                    f"{cls.get_block_type_slug()} blocks (and its subclasses' by TYPE/NAME)."
                )
            return type_slug, name
        return cls.get_block_type_slug(), validate_name(name)

    @staticmethod
    def _from_document(
        registry: Registry,
        row: DocumentRow,
        validate: bool = True,
        _parents: frozenset[str] = frozenset(),
        manager: KeyManager | None = None,
        columns: tuple[Any, ...] | None = None,
    ) -> Block:
        target = block_class_for(row.type_slug)
        data = row.data  # a fresh dict per read: safe to fill in place
        for path, value in open_secrets(registry, row, manager).items():
            _set_field(row, data, path, value)
        for path, child_id in row.refs.items():
            if child_id in _parents or child_id == row.id:
                raise InvalidBlockData(
                    f"{row.slug} refers back to itself through field '{path}' (a reference "
                    "cycle). Re-save one of the blocks without the reference."
                )
            child = registry.get_document_by_id(child_id)
            if child is None:
                raise BlockNotFound(
                    f"{row.slug} references a block (field '{path}') that no longer exists."
                )
            child_block = Block._from_document(
                registry, child, validate, _parents | {row.id}, manager
            )
            _set_field(row, data, path, child_block)
        fast = _construct_plan(target)
        if fast is not None and _fits(fast, data):
            block = _construct(target, fast, data, row)
            if columns is not None and manager is not None and not row.refs:
                _keep(manager, row, columns, block)
            return block
        try:
            block = target.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(field_problems(exc))
            if not validate:
                block = _partial_block(target, data, exc, row.slug)
                _set_document(block, row.id, row.name)
                return block
            if row.schema_checksum != target.get_schema_checksum():
                raise IncompatibleSchema(
                    f"{row.slug} was saved under an older {target.__name__} schema that the "
                    f"current class cannot read: {problems}. Re-save it with the current class "
                    "(save(..., overwrite=True)) or give the new field a default."
                ) from None
            raise InvalidBlockData(f"{row.slug} does not validate: {problems}") from None
        _set_document(block, row.id, row.name)
        return block

    @classmethod
    def delete(cls, name: str) -> None:
        """Delete a saved block; refused while another block references it."""
        slug, name = cls._resolve_name(name)
        _registry().delete_document(slug, name)

    @classmethod
    async def adelete(cls, name: str) -> None:
        """`delete` for async code (Prefect 3's name): the same call, in a worker thread."""
        import asyncio

        await asyncio.to_thread(cls.delete, name)

    @classmethod
    def list(cls) -> list[str]:
        """Names of the saved blocks of this type (or ``type/name`` of every block on `Block`)."""
        registry = _registry()
        if cls._block_is_abstract:
            rows = registry.list_documents()
            return [row.slug for row in rows if not is_anonymous_name(row.name)]
        names = registry.document_names(cls.get_block_type_slug())
        return [name for name in names if not is_anonymous_name(name)]

    def masked_items(self) -> Iterator[tuple[str, Any]]:
        """Field values with secrets (and URL passwords) masked: what CLI output and logs may
        show."""
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SECRET_TYPES):
                value = SECRET_MASK
            elif isinstance(value, str):
                value = mask_userinfo(value)
            yield name, value

    def __repr_args__(self) -> Any:
        # A URL field may carry user:password@ (an S3 endpoint, a basepath): never in repr.
        for name, value in super().__repr_args__():
            yield name, mask_userinfo(value) if isinstance(value, str) else value


# -- loading without re-validating what validation would return unchanged -------------------
#
# A loaded document's fields are JSON values plus the opened secrets. For a field typed `str`,
# `int`, `float`, `bool`, `SecretStr`, `SecretBytes`, `Any` (or a union of them with None)
# holding a value of exactly that type, pydantic's validation returns the value unchanged; what
# it costs on a load is the model's Python hooks (our two wrap validators, private-attribute
# set-up). So a class whose fields are all such, with no validators, constraints or config of
# its own, is built directly from a document whose values all have those exact types; anything
# else (a datetime stored as text, a nested model, a missing field, a wrong type) takes
# `model_validate` and gets its conversions and errors.

_ANY = object()
_EXACT_TYPES: frozenset[type] = frozenset({str, int, float, bool, SecretStr, SecretBytes})
_PLANS: dict[type[Block], dict[str, Any] | None] = {}


def _construct_plan(cls: type[Block]) -> dict[str, Any] | None:
    """Per field, the exact value types that validate unchanged (or `_ANY`); None when the class
    must always be validated."""
    try:
        return _PLANS[cls]
    except KeyError:
        pass
    plan: dict[str, Any] | None = {}
    decorators = cls.__pydantic_decorators__
    if (
        cls.model_config != Block.model_config
        or set(decorators.model_validators) != {"_errors_without_inputs", "_dispatch_by_slug"}
        or decorators.field_validators
        or decorators.validators
        or decorators.root_validators
        or set(cls.__private_attributes__) != set(Block.__private_attributes__)
        or any(_own_post_init(c) for c in cls.__mro__[: cls.__mro__.index(Block)])
    ):
        plan = None
    else:
        for name, info in cls.model_fields.items():
            accepted = _exact_types(info.annotation)
            if accepted is None or info.metadata or info.alias not in (None, name):
                plan = None
                break
            plan[name] = accepted  # type: ignore[index]
    _PLANS[cls] = plan
    return plan


def _own_post_init(cls: type) -> bool:
    """Whether `cls` defines a `model_post_init` (pydantic's private-attribute set-up, which it
    installs on every class with private attributes, does not count)."""
    hook = cls.__dict__.get("model_post_init")
    return hook is not None and (
        getattr(hook, "__qualname__", "") != "init_private_attributes"
        or getattr(hook, "__module__", "") != "pydantic._internal._model_construction"
    )


def _exact_types(annotation: Any) -> Any:
    if annotation is Any:
        return _ANY
    if annotation in _EXACT_TYPES:
        return frozenset({annotation})
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        accepted: set[type] = set()
        for arg in typing.get_args(annotation):
            if arg is type(None) or arg in _EXACT_TYPES:
                accepted.add(arg)
            elif not (
                isinstance(typing.get_origin(arg) or arg, type)
                and issubclass(typing.get_origin(arg) or arg, pydantic.Secret)
            ):
                return None  # a member that might claim an exact value first
        if len(accepted & {int, float, bool}) > 1:
            return None  # numbers cross-validate (1 -> 1.0): leave those to pydantic
        return frozenset(accepted)
    return None


def _fits(plan: dict[str, Any], data: dict[str, Any]) -> bool:
    if len(data) != len(plan):
        return False
    for name, accepted in plan.items():
        if name not in data:
            return False
        if accepted is not _ANY and type(data[name]) not in accepted:
            return False
    return True


def _construct(
    cls: type[Block], plan: dict[str, Any], data: dict[str, Any], row: DocumentRow
) -> Block:
    """The block `model_validate(data)` would return (see above), built directly."""
    block = object.__new__(cls)
    object.__setattr__(block, "__dict__", {name: data[name] for name in plan})
    object.__setattr__(block, "__pydantic_fields_set__", set(plan))
    object.__setattr__(block, "__pydantic_extra__", None)
    object.__setattr__(
        block,
        "__pydantic_private__",
        {
            "_block_document_id": row.id,
            "_block_document_name": row.name,
            "_is_anonymous": is_anonymous_name(row.name),
            "_block_type_id": row.type_slug,
        },
    )
    return block


def _partial_block(
    cls: type[Block], data: dict[str, Any], exc: ValidationError, slug: str
) -> Block:
    """What ``load(..., validate=False)`` returns: each field validated on its own (its type
    and constraints; field and model validators do not run)."""
    values: dict[str, Any] = {}
    for name, info in cls.model_fields.items():
        key = name if name in data else info.alias if info.alias in data else None
        if key is None:
            required = info.is_required()
            values[name] = None if required else info.get_default(call_default_factory=True)
            continue
        annotated: Any = (
            typing.Annotated[info.annotation, *info.metadata] if info.metadata else info.annotation
        )
        adapter: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(annotated)
        try:
            values[name] = adapter.validate_python(data[key])
        except ValidationError:
            # Keep what was stored (as Prefect does), except a secret: never a plain value.
            values[name] = (
                _secret_as(adapter, data[key])
                if _is_secret_annotation(info.annotation)
                else data[key]
            )
    warnings.warn(
        f"Could not fully load {slug}: {'; '.join(field_problems(exc))}. Those fields are "
        "None or hold their stored value: set them, then save(..., overwrite=True) before "
        "using the block.",
        UserWarning,
        stacklevel=4,
    )
    return cls.model_construct(**values)


def _secret_as(adapter: pydantic.TypeAdapter[Any], value: Any) -> Any:
    """A stored secret (opened as a secret object) validated as another secret type (say
    `SecretStr` into `SecretBytes`); None if it does not fit."""
    try:
        return adapter.validate_python(value.get_secret_value())
    except (AttributeError, ValidationError):
        return None


# The configured registry and its key manager by the environment that chose them
# (`settings.registry_stamp`): a load finds both with four dict reads, not by parsing
# five environment variables. Entries are re-checked against the registry's and the key
# manager's own caches, so `Registry.dispose_all()` or a cleared manager cache is honoured.
_CONTEXTS: dict[tuple[object, ...], tuple[Registry, KeyManager]] = {}


def _context() -> tuple[Registry, KeyManager]:
    """The configured registry and the key manager for it."""
    snapshot = settings.registry_stamp()
    found = _CONTEXTS.get(snapshot)
    if found is not None and found[0].is_shared() and found[1].is_shared():
        return found
    from blocks.core._encryption import KeyManager
    from blocks.core._registry import Registry

    registry = Registry.default()
    found = (registry, KeyManager.for_registry(registry.url))
    if len(_CONTEXTS) >= 16:  # tests switch homes often; a process normally has one entry
        _CONTEXTS.clear()
    _CONTEXTS[snapshot] = found
    return found


def _registry() -> Registry:
    return _context()[0]


def _keyset(manager: KeyManager, tokens: Iterable[str] = (), seal: str = "") -> Keyset:
    """The registry's keyset, read again from its source when a token or the seal names a key
    the cached keyset lacks (another process rotated the key meanwhile)."""
    from blocks.core._encryption import token_parts

    needed = {token_parts(t, what="a secret")[1] for t in tokens}
    parts = seal.split(":", 2)
    if len(parts) == 3 and parts[0] == "bm1":  # a malformed seal fails verify, not here
        needed.add(parts[1])
    return manager.keyset_holding(needed)


def _load_rereading(
    registry: Registry,
    row: DocumentRow,
    validate: bool = True,
    manager: KeyManager | None = None,
    columns: tuple[Any, ...] | None = None,
) -> Block:
    """Build the block; if a key it names is gone because a rotation re-sealed the document
    after we read it (and retired the old key), read the document again. `columns`: what
    `Registry.load_columns` read for `row`, kept with the block built from it (`_keep`)."""
    for _ in range(5):
        try:
            return Block._from_document(registry, row, validate, manager=manager, columns=columns)
        except TamperedDocument:
            raise
        except DecryptionFailed:
            again = registry.get_document(row.type_slug, row.name)
            if again is None or (again.seal, again.secrets) == (row.seal, row.secrets):
                raise
            row, columns = again, None
    return Block._from_document(registry, row, validate, manager=manager)


# -- a load of bytes already verified and built -------------------------------------------
#
# `Block.load` reads the columns the seal covers (`Registry.load_columns`). When they are
# exactly the ones this keyset verified and built a block from before, the block is built again
# from what was kept then, without parsing, verifying or decrypting anything: all three are
# deterministic on the same bytes and keys, so the answer is the same. Kept only for blocks
# `_construct` built (no validation would change a value) whose plain values are all immutable
# (str, int, float, bool, None: shared between loads) and whose secrets are top-level
# `SecretStr` / `SecretBytes` (a new object around the kept value each load, as `_open`'s memo
# does), and with no references (a referenced block may change without this row changing).
# Kept on the keyset, in `Keyset.opened` beside `_open`'s entries (keyed by (type slug, name)
# where those are keyed by bytes; one bound, one `clear()`, gone with the keyset): the
# plaintexts are the same objects `_open` keeps, for no longer. Any changed byte (a save, a
# rotation, tampering) is a miss: verified and decrypted in full. The class is looked up again
# on every load: a slug registered anew to another class is a miss too.
#
# An entry also keeps the registry's stamp (`Registry.documents_stamp`) taken before the
# SELECT that last found these same bytes: while the registry's stamp is still that one, no
# commit of any connection, in any process, has happened since, so the row is those bytes and
# the SELECT is skipped. A first load keeps no stamp (it would cost a first read the stamp's
# query); the next load takes one, compares the row as above and keeps it.
_KEPT_TYPES = frozenset({str, int, float, bool, type(None)})


def _rebuild(slug: str, kept: tuple[Any, ...]) -> Block | None:
    """The block a `_keep` entry makes, if `slug` still names the class it was built as."""
    _, cls, plain, secrets, fields, private, _ = kept
    if block_class_for(slug) is not cls:
        return None
    values = plain.copy()
    for path, make, value in secrets:
        values[path] = make(value)
    block = object.__new__(cls)
    object.__setattr__(block, "__dict__", values)
    object.__setattr__(block, "__pydantic_fields_set__", set(fields))
    object.__setattr__(block, "__pydantic_extra__", None)
    object.__setattr__(block, "__pydantic_private__", private.copy())
    return block


def _keep(manager: KeyManager, row: DocumentRow, columns: tuple[Any, ...], block: Block) -> None:
    """Keep what `_rebuild` needs to build `block` again from the same `columns`, if the
    cached keyset verified exactly these bytes (`_open`'s entry for them is there)."""
    keyset = manager.cached_keyset()
    if keyset is None:
        return
    memo = keyset.opened
    seen = memo.get(row.message)
    if seen is None or seen[0] != row.seal:
        return  # verified by another keyset, or too large to keep
    secrets = seen[1]
    plain = dict(block.__dict__)
    for path, make, _ in secrets:
        if make is None or path not in plain:
            return  # a JSON secret, or one nested in a field
        plain[path] = None
    if not all(type(value) in _KEPT_TYPES for value in plain.values()):
        return
    if len(memo) >= _OPENED_MAX:
        memo.clear()
    memo[(row.type_slug, row.name)] = (
        columns,
        type(block),
        plain,
        secrets,
        frozenset(block.__pydantic_fields_set__),
        dict(block.__pydantic_private__ or {}),
        None,  # no stamp yet (see above)
    )


def _first_load(keyset: Keyset, slug: str, name: str, columns: tuple[Any, ...]) -> Block | None:
    """The block `_from_document` would build from `columns` (a first read of these bytes), in
    one pass for the common case: a class `_construct` builds, no references, secrets that are
    top-level `SecretStr` / `SecretBytes` fields. The seal is checked first, on the exact bytes
    read, before anything is parsed, decrypted or built; the entries `_open` and `_keep` would
    make are made. None for anything else (another shape, a seal or token that does not open
    with this keyset, a value of another type): the caller then loads in full, which verifies
    again and raises the error that names the document and field."""
    document_id, checksum, data_text, secrets_text, refs_text, version, seal = columns
    if refs_text != "{}" or (_PLUGIN_CONFLICTS and slug in _PLUGIN_CONFLICTS):
        return None
    cls = _BLOCK_CLASSES.get(slug)
    plan = None if cls is None else _construct_plan(cls)
    if cls is None or plan is None:
        return None
    try:
        message = document_message(
            slug, name, document_id, version, checksum, data_text, secrets_text, refs_text
        )
    except TypeError:  # a column of another type than ours (altered outside blocks)
        return None
    if len(message) > _OPENED_MAX_BYTES or not keyset.verifies(message, seal):
        return None
    # Verified: these are the bytes a save by these keys wrote.
    try:
        data = {} if data_text == "{}" else loads_compact(data_text)
        tokens = {} if secrets_text == "{}" else loads_compact(secrets_text)
    except ValueError:
        return None
    if type(data) is not dict or type(tokens) is not dict:
        return None
    kept = []
    for path, token in tokens.items():
        if type(path) is not str or "." in path or "~" in path or path not in plan:
            return None
        try:
            plain = keyset.decrypt(token, aad=secret_aad(slug, name, path))
            secret = secret_value(plain)
        except DecryptionFailed:
            return None
        make = type(secret)
        if make not in _REBUILT:
            return None
        value = secret.get_secret_value()
        data[path] = secret
        kept.append((path, make, value))
    if not _fits(plan, data):
        return None
    for _, _, value in kept:
        note_secret(value)  # masked in run logs from now on, as `_open` does
    block = object.__new__(cls)
    values = {field: data[field] for field in plan}
    private = {
        "_block_document_id": document_id,
        "_block_document_name": name,
        "_is_anonymous": name.startswith("anonymous-") and is_anonymous_name(name),
        "_block_type_id": slug,
    }
    setattr = object.__setattr__
    setattr(block, "__dict__", values)
    setattr(block, "__pydantic_fields_set__", set(plan))
    setattr(block, "__pydantic_extra__", None)
    setattr(block, "__pydantic_private__", private)
    memo = keyset.opened
    if len(memo) >= _OPENED_MAX - 1:
        memo.clear()
    secrets = tuple(kept)
    memo[message] = (seal, secrets)
    plain_values = values.copy()
    for path, _, _ in kept:
        plain_values[path] = None
    if _KEPT_TYPES.issuperset(map(type, plain_values.values())):
        memo[(slug, name)] = (
            columns,
            cls,
            plain_values,
            secrets,
            frozenset(plan),
            private.copy(),
            None,  # no stamp yet (see `_rebuild`)
        )
    return block


def open_secrets(
    registry: Registry, row: DocumentRow, manager: KeyManager | None = None
) -> dict[str, Any]:
    """Check a document's seal and decrypt its secrets (by path, as secret objects).

    `TamperedDocument` if the seal does not match, or is missing where seals are required;
    `DecryptionFailed` for a token that does not open.
    """
    if not row.seal:
        # Unconditional: whether seals are required is not read from the registry, where
        # whoever can blank a seal can also delete any "documents are sealed" marker.
        raise TamperedDocument(row.missing_seal())
    if manager is None:
        from blocks.core._encryption import KeyManager

        manager = KeyManager.for_registry(registry.url)
    keyset = manager.cached_keyset()
    if keyset is not None:
        try:
            return _open(keyset, row)
        except DecryptionFailed:
            pass  # a key the cached keyset lacks (rotated elsewhere?): ask the sources below
    return _open(_keyset(manager, row.secrets.values(), row.seal), row)


# Documents a keyset has verified and opened, kept on that keyset (`Keyset.opened`) by the
# exact bytes its seal covers: a load that reads the same bytes and seal again gets the same
# answer without the HMAC and AES-GCM (both are deterministic on the same bytes and key), a
# third of a warm load. Any change to any column (another process's save, a rotation,
# tampering) makes other bytes, so a miss, which verifies and decrypts in full. A keyset
# replaced (rotation, `forget`) takes its entries with it. The plaintexts held here are no more
# exposed than the keys beside them, which open every secret anyway. Every load gets its own
# secret objects, never one another load holds (a caller may mutate one in place: pydantic
# keeps the value in a plain attribute): a `SecretStr` / `SecretBytes` is built again around
# the kept (immutable) str or bytes, which costs a fraction of decoding the plaintext; a JSON
# secret (a dict or list) is decoded from its plaintext each time.
# Bounds: entries, and the size of one document's bytes (a larger one is verified in full each
# time, where hashing it would cost about what the HMAC does): at most ~4 MiB per keyset.
_OPENED_MAX = 1024
_OPENED_MAX_BYTES = 4096


def _open(keyset: Keyset, row: DocumentRow) -> dict[str, Any]:
    """Verify the seal and decrypt; the error names the document and field. The names are
    built only on failure (by running the failed steps again with them): on a load they cost
    more than the seal check."""
    memo = keyset.opened
    kept = len(row.message) <= _OPENED_MAX_BYTES
    seen = memo.get(row.message) if kept else None
    if seen is not None and seen[0] == row.seal:
        return {
            path: secret_value(plain) if make is None else make(plain)
            for path, make, plain in seen[1]
        }
    try:
        opened = _open_named(keyset, row, named=False)
    except (TamperedDocument, DecryptionFailed):
        opened = _open_named(keyset, row, named=True)  # fails again, the same way, with names
    # Masked in run logs from now on. Only here, on first opening: a memo hit below serves
    # bytes this process opened (and recorded) before.
    for _, secret, _ in opened:
        # A SecretStr / SecretBytes by its value: the masker's fast check of a known str.
        note_secret(secret.get_secret_value() if type(secret) in _REBUILT else secret)
    if kept:
        if len(memo) >= _OPENED_MAX:
            memo.clear()
        memo[row.message] = (
            row.seal,
            tuple(
                (path, type(secret), secret.get_secret_value())
                if type(secret) in _REBUILT
                else (path, None, plain)
                for path, secret, plain in opened
            ),
        )
    return {path: secret for path, secret, _ in opened}


def _open_named(keyset: Keyset, row: DocumentRow, *, named: bool) -> list[tuple[str, Any, bytes]]:
    """`_open`'s checks: each secret's path, value and plaintext. With `named`, any error
    names the document and field."""
    if row.seal:
        keyset.verify(
            row.message, row.seal, what=f"{row.slug} (version {row.version})" if named else ""
        )
    opened = []
    for path, token in row.secrets.items():
        field = f"field '{path}' of {row.slug}" if named else ""
        plain = keyset.decrypt(token, aad=secret_aad(row.type_slug, row.name, path), what=field)
        opened.append((path, secret_value(plain, what=field), plain))
    return opened


_REBUILT = (SecretStr, SecretBytes)
"""Secret types a warm load builds again around their kept value (immutable str / bytes)."""


def _document_key(document_id: Any) -> str | None:
    """A document id as the registry stores it (32 hex digits), from a `uuid.UUID` or any
    spelling of one; None for what cannot be an id."""
    if isinstance(document_id, uuid.UUID):
        return document_id.hex
    if not isinstance(document_id, str):
        return None
    try:
        return uuid.UUID(document_id).hex
    except ValueError:
        return None


def _short_ref(ref: object) -> str:
    """repr() of a reference, cut short: it is user input, shown in one error line."""
    text = repr(ref)
    return text if len(text) <= 100 else text[:97] + "..."


def _set_document(block: Block, document_id: str, name: str) -> None:
    """Record the document a block was loaded from or saved as (its private attributes, set
    in one step rather than through pydantic's __setattr__ three times)."""
    private = block.__pydantic_private__
    if private is None:  # pragma: no cover - Block declares private attributes
        block._block_document_id = document_id
        block._block_document_name = name
        block._is_anonymous = is_anonymous_name(name)
        block._block_type_id = type(block).get_block_type_slug()
        return
    private["_block_document_id"] = document_id
    private["_block_document_name"] = name
    private["_is_anonymous"] = is_anonymous_name(name)
    private["_block_type_id"] = type(block).get_block_type_slug()


def _set_field(row: DocumentRow, data: dict[str, Any], path: str, value: Any) -> None:
    if "." not in path and "~" not in path and type(data) is dict:
        data[path] = value  # a top-level field: what `set_path` would do, without parsing
        return
    try:
        set_path(data, path, value)
    except (LookupError, ValueError, TypeError, AttributeError):
        raise TamperedDocument(
            f"{row.slug} has a secret or reference at '{path}', where its data has no place for "
            "one (altered outside blocks). Delete and re-create it."
        ) from None


# A save that races a rotation re-seals under the new key; this many tries is far more than
# any real contention needs, yet bounded.
_SAVE_ATTEMPTS = 50


def _seal_and_save(
    registry: Registry,
    cls: type[Block],
    slug: str,
    name: str,
    data: dict[str, Any],
    secrets: dict[str, bytes],
    refs: dict[str, str],
    overwrite: bool,
    manager: KeyManager | None = None,
) -> str:
    """Encrypt secrets and save under the registry's active key, retrying after a rotation."""
    # Imports only where needed: an import statement costs ~1 µs of every save.
    if manager is None:
        from blocks.core._encryption import KeyManager

        manager = KeyManager.for_registry(registry.url)
    for _ in range(_SAVE_ATTEMPTS):
        keyset = manager.sealing_keyset(registry)
        sealed = {
            path: keyset.encrypt(plain, aad=secret_aad(slug, name, path))
            for path, plain in secrets.items()
        }
        try:
            return registry.save_document(
                type_slug=slug,
                name=name,
                schema_checksum=cls.get_schema_checksum(),
                data=data,
                secrets=sealed,
                refs=refs,
                overwrite=overwrite,
                key_id=keyset.active_id,
                seal=keyset.seal,
            )
        except Exception as exc:
            from blocks.core._registry import StaleKey

            if not isinstance(exc, StaleKey):
                raise
            manager.forget()  # the key was rotated meanwhile: re-read it and seal again
    from blocks.errors import KeyManagementError

    raise KeyManagementError(
        f"Could not save {slug}/{name}: the master key kept changing (rotations running?). "
        "Retry when `block key rotate` has finished."
    )
