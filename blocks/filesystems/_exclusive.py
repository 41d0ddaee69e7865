"""Create-only writes: publish an object only if none has its name, and ask before replacing one.

The result store must not replace a record signed by another results key
(`blocks.results._foreign`). Reading every target before writing it costs one request per
write; an object store can instead refuse the write itself when the object exists (S3
``If-None-Match: *`` on PutObject, GCS ``ifGenerationMatch=0``, Azure ``If-None-Match: *`` on
Put Blob or Put Block List). So a first write is one request, and only a refused one reads what
is there (`publish`):

1. create-only upload; done if accepted;
2. refused: ``before_overwrite()`` reads the existing object and raises to refuse replacing
   it; it returns False if the object is gone by then (go back to 1, at most `ATTEMPTS` times),
   True to replace it;
3. a plain upload over it (the check and the write are apart, exactly as a read-then-write).

Whether a storage's server really refuses a second create is probed once per process
(`probe_create`: the GCS emulator and some S3-compatible stores accept the precondition and
ignore it); where it does not, or the storage has no conditional writes, `exclusive_writer`
gives None and the caller reads before it writes.

Example:
    >>> writer = exclusive_writer(storage)
    >>> with writer.open_exclusive_write("etl/extract-3f2a", check) as out:
    ...     out.write(record)
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager, suppress
from typing import Any, BinaryIO, Protocol

from blocks.filesystems._conditional import ConditionalObjects, Unsupported, conditional_objects
from blocks.filesystems._keys import KeyLike

__all__ = [
    "ATTEMPTS",
    "PROBE_PREFIX",
    "RESEND_MAX",
    "ExclusiveWriter",
    "exclusive_writer",
    "probe_create",
    "publish",
]

#: Create-only tries when the object that refused a create is gone when read (then a plain
#: write, after a check that found nothing).
ATTEMPTS = 3

PROBE_PREFIX = "probe-"


class ExclusiveWriter(Protocol):
    """A storage that can write create-only (`blocks.filesystems.remote.FsspecFileSystem`)."""

    def open_exclusive_write(
        self, path: KeyLike, before_overwrite: Callable[[], bool]
    ) -> AbstractContextManager[BinaryIO]:
        """`open_atomic_write`, published create-only; if an object is there,
        `before_overwrite()` decides (see `publish`)."""


#: A refused create-only upload that would send more than this again is not tried: the
#: check comes first (one small read beside such an upload), then one plain upload.
RESEND_MAX = 256 * 1024


def publish(
    upload: Callable[[bool], bool],
    before_overwrite: Callable[[], bool] | None,
    resend: int = 0,
) -> None:
    """Publish with ``upload(create_only)`` (False: a create-only upload found an object
    there); with `before_overwrite`, create-only first, and a refused create asks it before
    replacing what is there (see the module docstring). `resend`: the bytes a refused
    create-only upload would have to send again (over `RESEND_MAX`: checked first)."""
    if before_overwrite is None:
        upload(False)
        return
    if resend > RESEND_MAX:
        before_overwrite()
        upload(False)
        return
    for _ in range(ATTEMPTS):
        if upload(True):
            return
        if before_overwrite():
            break
    upload(False)


def probe_create(objects: ConditionalObjects) -> str | None:
    """Why `objects` cannot create exclusively (a second create of one name must be refused),
    or None if it can."""
    name = f"{PROBE_PREFIX}{uuid.uuid4().hex}"
    try:
        first = objects.create(name, b"probe")
        second = objects.create(name, b"probe again") if first is not None else None
    except Unsupported as exc:
        return f"it does not implement conditional writes ({exc})"
    except Exception as exc:  # unreachable now: the read or write itself will say so
        return f"the probe failed ({type(exc).__name__})"
    finally:
        with suppress(Exception):
            found = objects.read(name)
            if found is not None:
                objects.delete(name, found[1])
    if first is None or second is not None:
        return "it accepted a second create-if-absent of one object (the precondition is ignored)"
    return None


#: Probe answers per storage (type and description): True if its creates are exclusive.
_exclusive: dict[tuple[str, str], bool] = {}


def exclusive_writer(storage: Any) -> ExclusiveWriter | None:
    """`storage` if it writes create-only and its server refuses a second create (probed once
    per process); None: the caller checks before it writes."""
    if not callable(getattr(storage, "open_exclusive_write", None)):
        return None
    ident = (type(storage).__name__, str(storage.describe()))
    known = _exclusive.get(ident)
    if known is None:
        objects = conditional_objects(storage)
        why = "no conditional writes" if objects is None else probe_create(objects)
        known = why is None
        if why is None or not why.startswith("the probe failed"):
            _exclusive[ident] = known  # a failed probe (unreachable) is asked again next time
    return storage if known else None
