"""Every error `blocks` raises on purpose: one short, typed hierarchy.

Each message says what happened and what to do next, and never carries a secret value.
Most are also a builtin (`ValueError`, `LookupError`, `OSError`, ...), so code written for
Prefect or for the standard library still catches them.

    BlocksError                  root (defined in `serializers.errors`, re-exported here)
    ├── SerializationError       ValueError; `serializers` raises it, imports nothing of ours
    ├── ConfigurationError       ValueError; a setting, variable or option we cannot use
    │   ├── OptionTypeError      TypeError too; an option of the wrong kind
    │   │   └── ReservedArgumentError  a parameter named return_state or wait_for
    │   └── PluginConflict       two installed plugins claim one block type
    ├── InvalidName              ValueError
    │   └── InvalidNameError     a flow name with a character Prefect refuses (/ % & < >)
    ├── BlockNotFound            LookupError, ValueError
    ├── BlockAlreadyExists       ValueError
    ├── BlockInUse
    ├── UnknownBlockType         LookupError
    ├── IncompatibleSchema
    ├── InvalidBlockData         ValueError
    ├── InvalidBlocksFile        ValueError; a blocks file that `block apply` cannot apply
    ├── DecryptionFailed
    │   └── TamperedDocument
    ├── SecretReferenceError     LookupError; a malformed or unresolvable secret reference
    ├── KeyManagementError
    │   ├── KeyMismatch
    │   └── ResultsKeyMissing
    ├── UnsafePath               ValueError
    ├── StorageError             OSError
    ├── DatabaseError            a database call failed (its message masks the password)
    ├── WebhookError             OSError; a webhook call failed (names the method and host only)
    ├── NotificationError        OSError; a notification was not delivered (names no secret)
    ├── MissingDependency        ImportError
    ├── CorruptRecord
    ├── TaskTimeout              TimeoutError
    ├── UpstreamFailed
    ├── ParameterTypeError       TypeError
    ├── ScheduleError            ValueError; a cron, interval, rrule or time zone we cannot use
    ├── RemoteTaskError
    ├── MissingResult
    ├── RegistryCorrupt
    ├── RegistryReadOnly         PermissionError
    ├── DeploymentNotFound       LookupError
    ├── WorkPoolNotFound         LookupError
    └── FlowRunNotFound          LookupError

`tests/test_exported_members.py` checks that this drawing names every class of the module.

Example:
    >>> from blocks.errors import BlockNotFound
    >>> try:
    ...     Secret.load("missing")
    ... except BlockNotFound as exc:
    ...     print(exc)
"""

from __future__ import annotations

# `serializers` must not import `blocks`: the root and its error live there (same objects).
from serializers.errors import BlocksError, SerializationError


class ConfigurationError(BlocksError, ValueError):
    """A setting, environment variable or option has a value we cannot use."""


class OptionTypeError(ConfigurationError, TypeError):
    """An option is of the wrong kind (a function where a list of hooks goes, ...).

    Also a `TypeError`, which is what this raised before the error tree had it.
    """


class PluginConflict(ConfigurationError):
    """Two installed packages (or a package and `blocks` itself) define one block type slug.

    The message names both; uninstall one, or have one of them set another ``_block_type_slug``.
    """


class InvalidName(BlocksError, ValueError):
    """A block name or type slug is not lowercase letters, digits and dashes."""


class InvalidNameError(InvalidName):
    """A flow name holds a character Prefect refuses in names: ``/ % & < >`` (Prefect's name)."""


class ReservedArgumentError(OptionTypeError):
    """A task or flow function has a parameter named ``return_state`` or ``wait_for``: those
    keywords belong to the call itself (Prefect's name; a `TypeError` as there)."""


class BlockNotFound(BlocksError, LookupError, ValueError):
    """No saved block document (or no registered type) has that name.

    Also a `ValueError`: Prefect raises one there, and code written for it catches that.
    """


class BlockAlreadyExists(BlocksError, ValueError):
    """A document with that name exists and `overwrite=True` was not given (a `ValueError`
    too, as in Prefect)."""


class BlockInUse(BlocksError):
    """The block is referenced by other blocks and cannot be deleted."""


class UnknownBlockType(BlocksError, LookupError):
    """No registered Block class has that type slug."""


class IncompatibleSchema(BlocksError):
    """A saved document cannot be loaded into the current class of its type."""


class InvalidBlockData(BlocksError, ValueError):
    """Field values do not validate against the block's schema."""


class InvalidBlocksFile(BlocksError, ValueError):
    """A blocks file (``block apply -f``, ``block diff -f``) cannot be applied: bad YAML, an
    unknown key, a missing variable, an unfilled secret, a field that does not validate.

    The message names the file, line, document and field, never a value.
    """


class DecryptionFailed(BlocksError):
    """A secret could not be decrypted: wrong or missing master key, or tampered data."""


class SecretReferenceError(BlocksError, LookupError):
    """A secret reference (``env:``, ``file:``, ``aws-sm:``) is malformed or cannot be resolved.

    The message names the reference, never a value.
    """


class KeyManagementError(BlocksError):
    """The master key could not be found, created, stored or rotated."""


class UnsafePath(BlocksError, ValueError):
    """A storage key would escape its base path (``..``, absolute path, NUL byte, symlink)."""


class StorageError(BlocksError, OSError):
    """A storage backend could not read or write (unreachable store, missing bucket, ...)."""


class DatabaseError(BlocksError):
    """A database call failed and the driver's message named a secret (now masked)."""


class WebhookError(BlocksError, OSError):
    """A webhook call failed: unreachable, too slow or answered with an error status."""

    status_code: int | None = None
    """The HTTP status the server answered with, when it answered (None: no answer)."""


class NotificationError(BlocksError, OSError):
    """A notification block could not deliver its message (after its retries); the message
    names the block type, the service's host and why, never the URL or a password."""


class MissingDependency(BlocksError, ImportError):
    """An optional package is needed; the message names the extra to install."""


class CorruptRecord(BlocksError):
    """A result record is truncated, tampered with or not a record at all."""


class TaskTimeout(BlocksError, TimeoutError):
    """A task or flow ran longer than its ``timeout_seconds``."""


class UpstreamFailed(BlocksError):
    """A result was requested from a run that did not complete."""


class ParameterTypeError(BlocksError, TypeError):
    """A flow's parameter does not validate against its type hint; the flow did not start.

    The message names each bad parameter and what was expected, never the value given (it may
    be a secret).
    """


class ScheduleError(BlocksError, ValueError):
    """A schedule cannot be built: a bad cron string, time zone, interval or rrule.

    The message says what was wrong and shows a value that works.
    """


class RemoteTaskError(BlocksError):
    """Stands in for an exception raised on a Dask worker that could not be sent back."""


class MissingResult(BlocksError):
    """A run's result is not held in memory (``cache_result_in_memory=False``) and its record
    is no longer in result storage."""


class RegistryCorrupt(BlocksError):
    """The registry file is not a SQLite database, or it is damaged (truncated, overwritten)."""


class RegistryReadOnly(BlocksError, PermissionError):
    """The registry can be read but not written (read-only file, folder or mount)."""


class DeploymentNotFound(BlocksError, LookupError):
    """No deployment has that name (``flow-name/deployment-name``)."""


class WorkPoolNotFound(BlocksError, LookupError):
    """No work pool has that name."""


class FlowRunNotFound(BlocksError, LookupError):
    """No flow run has that id (or that id prefix)."""


class KeyMismatch(KeyManagementError):
    """This process's key source holds a key other than the one the registry records."""


class ResultsKeyMissing(KeyManagementError):
    """Result storage holds records signed by a results key this process does not have, and
    its own key is new: set ``BLOCKS_RESULTS_KEY`` to the team's key instead of overwriting."""


class TamperedDocument(DecryptionFailed):
    """A saved document's seal does not match: it was changed outside blocks."""


__all__ = [
    "BlockAlreadyExists",
    "BlockInUse",
    "BlockNotFound",
    "BlocksError",
    "ConfigurationError",
    "CorruptRecord",
    "DatabaseError",
    "DecryptionFailed",
    "DeploymentNotFound",
    "FlowRunNotFound",
    "IncompatibleSchema",
    "InvalidBlockData",
    "InvalidBlocksFile",
    "InvalidName",
    "InvalidNameError",
    "KeyManagementError",
    "KeyMismatch",
    "MissingDependency",
    "MissingResult",
    "NotificationError",
    "OptionTypeError",
    "ParameterTypeError",
    "PluginConflict",
    "RegistryCorrupt",
    "RegistryReadOnly",
    "RemoteTaskError",
    "ReservedArgumentError",
    "ResultsKeyMissing",
    "ScheduleError",
    "SecretReferenceError",
    "SerializationError",
    "StorageError",
    "TamperedDocument",
    "TaskTimeout",
    "UnknownBlockType",
    "UnsafePath",
    "UpstreamFailed",
    "WebhookError",
    "WorkPoolNotFound",
]
