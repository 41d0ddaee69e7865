"""`ResultStore`: write, read, list and prune result records on any filesystem block.

Guarantees:

- **Atomic**: a record becomes visible whole or not at all (the storage's
  ``open_atomic_write``: temp file + fsync + rename locally, one PUT on object stores).
- **Signed, verified before decoded**: every record is signed with the results key
  (`blocks.results._signing`); ``read`` checks magic, version, the header signature, the payload
  size and its signature before one byte reaches a deserializer. A forged record, or one
  signed with another key, is a miss whose warning says "signature".
- **Bounded**: a payload or decoded size over ``BLOCKS_RESULTS_MAX_BYTES`` is a miss;
  compressed payloads are decoded under the size their header declares (a bomb stops there).
- **No secrets at rest**: secret values (``SecretStr``...) inside a result are sealed with
  AES-GCM under a key derived from the results key, and opened again on read.
- **Versions**: a pickle written under another Python or cloudpickle minor version is a miss
  that says so, never a crash inside unpickling.
- **No overwriting a team's records with a new key**: while this home's results key is new
  (`ResultsKeys.unadopted`), a storage holding records of another key raises
  `ResultsKeyMissing` on a miss or a write (see `blocks.results._signing`).
- **Misses, not wrong values**: absent, expired, corrupt or truncated records read as ``None``;
  corrupt ones also emit a `CorruptRecordWarning` and a log line.
- **No extra copies in memory**: payloads stream between the serializer and the storage; a
  256 MB ``bytes`` result is written with no second 256 MB buffer.
- **Decoded as verified**: a payload is copied as it is verified (into memory up to 16 MiB,
  else into a private unlinked temp file; for serializers that decode in place, npy and
  Parquet, into private memory at any size, which the array then views) and decoded from that
  copy, never re-read from the storage: rewriting the record in place between the check and
  the decode changes nothing. A large local file only our own user can write
  (`Storage.only_we_write`) is the exception: verified, then decoded from the same descriptor
  (nobody else can rewrite it).
- **Closed list of decoders**: the serializer is rebuilt only from the header's spec through
  `serializers.resolve_serializer`'s allow-list. A store whose own serializer does not pickle
  refuses pickle records, so writing to storage cannot make a JSON reader unpickle.

Example:
    >>> store = ResultStore.resolve("~/results", serializer="json")
    >>> store.write("etl/extract-3f2a", {"records": [1, 2, 3]}, expires=None, task="extract")
    >>> store.read("etl/extract-3f2a").value
    {'records': [1, 2, 3]}
    >>> store.exists("etl/missing")
    False
"""

from __future__ import annotations

import io
import itertools
import json
import os
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, BinaryIO, NoReturn

from blocks import settings
from blocks.errors import (
    BlocksError,
    ConfigurationError,
    CorruptRecord,
    ResultsKeyMissing,
    StorageError,
)
from blocks.filesystems._exclusive import exclusive_writer
from blocks.filesystems._keys import TempFile, checked_key, validate_key
from blocks.results import _streams as streams
from blocks.results._foreign import refuse_overwrite
from blocks.results._payload import Payload
from blocks.results._record import (
    FIRST_READ,
    MAX_HEADER_SIZE,
    PREFIX_SIZE,
    RecordHeader,
    checksum_string,
    claimed_signer,
    decode_header,
    decode_header_once,
    encode_prefix,
    header_from,
    header_length,
    parse_time,
    verified_fields,
)
from blocks.results._signing import PayloadTag, ResultsKey, ResultsKeys, adopt, results_keys
from blocks.results._storage import resolve_storage
from serializers import context as codec
from serializers.context import codec_context
from serializers.errors import SerializationError

if TYPE_CHECKING:
    import logging

    from blocks.filesystems._protocol import Storage
    from blocks.filesystems._stamps import Stamp
    from blocks.filesystems.base import WritableFileSystem
    from serializers.base import Serializer


def _logger() -> logging.Logger:
    # Imported on first use: logging (~5 ms) is not needed to list or prune a clean store.
    import logging

    return logging.getLogger("blocks.results")


_SERIALIZERS: dict[str, Serializer] = {}

_ABSENT = (FileNotFoundError, IsADirectoryError, NotADirectoryError)

#: The first read of a record asks for this much: prefix, header and, for most cached
#: results, the whole payload in one ``read()``; a larger record streams from there.
HEAD_READ = 64 * 1024

#: How old a temp file must be before `prune` removes it (unless its writer, on this host,
#: is gone): longer than any write takes.
TEMP_GRACE = timedelta(hours=1)


class CorruptRecordWarning(UserWarning):
    """A record could not be trusted and was treated as a miss (see the message for why)."""


@dataclass(frozen=True)
class Hit:
    """A record that was found, verified and deserialized."""

    header: RecordHeader
    value: Any

    @property
    def result(self) -> Any:
        """The value, by the name Prefect's ``ResultRecord`` gives it (``txn.read().result``)."""
        return self.value


class ResultStore:
    """Result records under one storage, written with one serializer.

    `serializer` may be a `Serializer`, a shorthand (``"json"``, ``"pickle"``,
    ``"compressed/json"``, ``"compressed/pickle"``), a spec dict, or None for the
    ``BLOCKS_RESULTS_SERIALIZER`` setting. It decides how *new* records are written; each
    record is read back with the serializer its header names.

    Example:
        >>> from blocks.filesystems import LocalFileSystem
        >>> store = ResultStore(LocalFileSystem(basepath="/tmp/results"), "pickle")
        >>> header = store.write("k1", b"x" * 10, task="extract")
        >>> header.payload_size > 10
        True
    """

    def __init__(
        self,
        storage: Storage,
        serializer: Serializer | str | dict[str, Any] | None = None,
        *,
        keys: ResultsKeys | None = None,
    ) -> None:
        self.storage = storage
        self.serializer = _serializer(serializer)
        self._own_spec = self.serializer.to_spec()
        self._reads_pickle = _uses_pickle(self._own_spec)
        self._keys = keys
        self._compatible_versions: dict[int, dict[str, str]] = {}
        #: Verified small records by key, with their file's stamp (`_keep`).
        self._kept: dict[str, _Kept] = {}
        #: Keys known to hold a record (read but no hit: expired, corrupt, another key's; or
        #: written by this store): their next write checks, then writes, as a create-only
        #: write would be refused.
        self._there: dict[str, bool] = {}

    @property
    def keys(self) -> ResultsKeys:
        """The results keys: given to the constructor, else from the settings (see
        `blocks.results._signing`), looked up on each use so a changed setting takes effect."""
        return self._keys if self._keys is not None else results_keys(self.storage)

    @classmethod
    def resolve(
        cls,
        storage: WritableFileSystem | str | os.PathLike[str] | None = None,
        serializer: Serializer | str | dict[str, Any] | None = None,
        *,
        plain_local: bool = False,
    ) -> ResultStore:
        """A store over any storage spec (see `resolve_storage`) and serializer spec;
        `plain_local` as there (a local path as a `LocalFolder`, no Block).

        Example:
            >>> ResultStore.resolve("s3/prod", "compressed/json")
        """
        return cls(resolve_storage(storage, plain_local=plain_local), serializer)

    def __repr__(self) -> str:
        return f"ResultStore({self.storage.describe()!r}, {self.serializer!r})"

    # -- writing --------------------------------------------------------------------------

    def write(
        self,
        key: str,
        value: Any,
        *,
        expires: datetime | None = None,
        task: str | None = None,
        components: dict[str, str] | None = None,
        flow: str | None = None,
    ) -> RecordHeader:
        """Serialize `value` into one atomic record under `key`; return its header.

        `components` (the cache key's digests) and `flow` are kept in the header for
        explanations and ``block results ls/rm --task/--flow``; each digest is keyed under
        the signing key first, and a secret's is replaced by a marker
        (`ResultsKey.keyed_components`): the header is no guessing oracle.
        A naive `expires` is taken as local time. Raises `SerializationError` if the value
        cannot be serialized (nothing is written) and `StorageError` if the storage fails.
        """
        key = validate_key(key)
        self._kept.pop(key, None)  # replaced by a new file: a new stamp in any case
        there = self._there.pop(key, False)
        keys = self.keys
        exclusive = can_create = None
        if keys.unadopted:
            self._refuse_foreign(keys, key, *self._keys_to_check())
        else:  # never over another key's record (`blocks.results._foreign`)
            # Checked now if the storage cannot create exclusively, or if a record is known to
            # be there; else only if the create-only write is refused (one request).
            can_create = exclusive_writer(self.storage)
            exclusive = None if there else can_create
            if exclusive is None:
                refuse_overwrite(self.storage, keys, key)
        signer = keys.active
        # A serializer that chooses per value ("auto") hands over the one it chose: the
        # header names that one, so the record says what it holds.
        serializer = self.serializer.for_value(value)
        draft = RecordHeader.new(
            key,
            serializer.to_spec(),
            expires=expires,
            task=task,
            signer=signer.key_id,
            versions=serializer.versions(),
            components=signer.keyed_components(components) if components else None,
            flow=flow,
        )
        width = draft.width()
        if width > MAX_HEADER_SIZE:
            raise ConfigurationError(
                f"The header of result {key[:80]!r}... would take {width} bytes (limit "
                f"{MAX_HEADER_SIZE}): shorten the key or the task name."
            )
        try:
            opened = (
                self.storage.open_atomic_write(key)
                if exclusive is None
                else exclusive.open_exclusive_write(
                    key, lambda: refuse_overwrite(self.storage, keys, key)
                )
            )
            with opened as out:
                if streams.can_seek(out):
                    header = self._write_in_place(out, draft, width, value, signer, serializer)
                else:
                    header = self._write_spooled(out, draft, width, value, signer, serializer)
        except (BlocksError, SerializationError):
            raise
        except OSError as exc:
            raise StorageError(
                f"Could not write result {key!r} to {self.storage.describe()}: {exc}"
            ) from exc
        if keys.unadopted:
            adopt(keys)
        if can_create is not None:
            # Written here: a create-only write of it again would be refused (a 3rd request).
            self._found(key)
        return header

    def _dump(
        self,
        value: Any,
        sink: streams.HashingWriter,
        signer: ResultsKey,
        serializer: Serializer,
    ) -> int | None:
        """Serialize into `sink` with secrets sealed; return the decoded size if compressed."""
        with codec_context(sealer=signer) as context:
            serializer.dump(value, sink)  # type: ignore[arg-type]
        return context.decoded_size

    def _write_in_place(
        self,
        out: BinaryIO,
        draft: RecordHeader,
        width: int,
        value: Any,
        signer: ResultsKey,
        serializer: Serializer,
    ) -> RecordHeader:
        # Reserve the header, stream the payload, then seek back to fill it in. The reserved
        # bytes are never read: the file is renamed into place only once it is whole.
        start = out.tell()
        out.write(bytes(PREFIX_SIZE + width))
        sink = streams.HashingWriter(out, signer.payload_hasher())
        decoded = self._dump(value, sink, signer, serializer)
        header = draft.finish(sink.size, checksum_string(sink.hasher), decoded)
        end = out.tell()
        out.seek(start)
        out.write(encode_prefix(header, width=width, signer=signer))
        out.seek(end)
        return header

    def _write_spooled(
        self,
        out: BinaryIO,
        draft: RecordHeader,
        width: int,
        value: Any,
        signer: ResultsKey,
        serializer: Serializer,
    ) -> RecordHeader:
        # The writer cannot seek (object stores): stage the payload, then header + payload.
        import shutil
        import tempfile

        with tempfile.SpooledTemporaryFile(max_size=streams.SPOOL_MAX_SIZE) as spool:
            sink = streams.HashingWriter(spool, signer.payload_hasher())
            decoded = self._dump(value, sink, signer, serializer)
            header = draft.finish(sink.size, checksum_string(sink.hasher), decoded)
            out.write(encode_prefix(header, width=width, signer=signer))
            spool.seek(0)
            shutil.copyfileobj(spool, out, streams.CHUNK_SIZE)
        return header

    # -- reading --------------------------------------------------------------------------

    def read(self, key: str) -> Hit | None:
        """The verified value under `key`, or None if absent, expired or corrupt.

        Corrupt or truncated records also warn (`CorruptRecordWarning`) and log.
        """
        return self.read_with(key, self.keys)

    def read_with(self, key: str, keys: ResultsKeys) -> Hit | None:
        """`read` with the results keys the caller already holds for the current settings
        (the runtime's cache hit reads them once: `known_results_keys`). Only for a store
        built without its own keys (`keys` then wins over nothing)."""
        key = checked_key(key)
        if self._keys is not None:
            keys = self._keys
        looked = time.time_ns()
        stamp = self.storage.stamp(key)
        try:
            if stamp is not None:
                kept = self._kept.get(key)
                if kept is not None and kept[0] == stamp and kept[1] is keys:
                    # The bytes that verified when the file had this stamp (see `_keep`).
                    _, _, header, serializer, payload, signer, expires = kept
                    if expires is not None and looked >= expires:
                        self._found(key)
                        return None
                    value = _decode(
                        serializer, io.BytesIO(payload), header, signer, _decode_limit(header)
                    )
                    return Hit(header, value)
            # One read brings prefix, header and (for a small record) the whole payload;
            # `stream` is None when that was all of it.
            data, stream = self.storage.open_head(key, HEAD_READ)
            try:
                end = PREFIX_SIZE + header_length(data, key=key)
                if len(data) < end and stream is not None:
                    data += streams.read_exactly(stream, end - len(data), key)
                header = decode_header_once(data[:end], key=key, keys=keys)
                if header.is_expired():
                    self._found(key)
                    return None
                serializer = self._serializer_for(header)
                limit = _decode_limit(header)
                if stream is None:
                    payload = data[end:]
                    value = self._load_small(payload, header, serializer, keys, limit)
                    if stamp is not None:
                        self._keep(key, stamp, looked, keys, header, serializer, payload)
                else:
                    stream.seek(end)
                    value = self._load_verified(stream, header, serializer, keys, limit, key)
            finally:
                if stream is not None:
                    stream.close()
        except _ABSENT:
            if keys.unadopted:  # before the caller computes a value it may not write
                self._refuse_foreign(keys, *self._keys_to_check())
            return None
        except CorruptRecord as exc:
            if keys.unadopted:
                self._refuse_foreign(keys, key)
            self._warn(exc)
            self._found(key)
            return None
        except BlocksError:
            raise
        except OSError as exc:
            self._storage_failed("read", key, exc)
        return Hit(header, value)

    def _found(self, key: str) -> None:
        """Note that `key` holds a record (read but no hit, or written here)."""
        if len(self._there) >= 4096:
            self._there.clear()
        self._there[key] = True

    def _keep(
        self,
        key: str,
        stamp: Stamp,
        looked: int,
        keys: ResultsKeys,
        header: RecordHeader,
        serializer: Serializer,
        payload: bytes,
    ) -> None:
        """Remember a small record's verified payload under the stamp its file had before it
        was opened, if the file still has it now (nothing changed it while it was read) and
        the stamp stands for its bytes from now on (`Storage.settled`: settled, on a local
        filesystem, writable only by our user). A later read with the same stamp decodes
        these bytes without opening the file; any change to the file changes its stamp
        (`blocks.filesystems._stamps` says why), and another results key verifies again."""
        if len(payload) > _KEPT_PAYLOAD:
            return
        storage = self.storage
        if storage.stamp(key) != stamp or not storage.settled(key, stamp, looked):
            return
        kept = self._kept
        if len(kept) >= _KEPT_RECORDS:
            kept.clear()
        expires = header.expires
        kept[key] = (
            stamp,
            keys,
            header,
            serializer,
            payload,
            _signer(keys, header),
            None if expires is None else int(expires.timestamp() * 1e9),
        )

    def open_payload(self, key: str) -> Payload:
        """The payload under `key` as a verified, read-only binary file with its header.

        The whole payload is checked against its signature before this returns: a large
        local file only our own user can write in one pass over the file (then read from the
        same descriptor), anything else through the private copy that verified. Nothing is
        deserialized, so any record (expired ones too) opens; the bytes are the serializer's,
        e.g. a plain Parquet or ``.npy`` file. Raises `FileNotFoundError` if absent,
        `CorruptRecord` if it does not verify.

        Example:
            >>> with store.open_payload("etl/sales") as payload:
            ...     import pyarrow.parquet as pq
            ...     table = pq.read_table(payload)
        """
        key = checked_key(key)
        keys = self.keys
        try:
            data, stream = self.storage.open_head(key, HEAD_READ)
            try:
                end = PREFIX_SIZE + header_length(data, key=key)
                if len(data) < end and stream is not None:
                    data += streams.read_exactly(stream, end - len(data), key)
                header = decode_header(data[:end], key=key, keys=keys)
                hasher = keys.by_id[header.signer].payload_hasher(header.checksum)
                if stream is None:
                    payload = data[end:]
                    hasher.update(payload)
                    streams.verify((len(payload), checksum_string(hasher)), header)
                    return Payload(header, io.BytesIO(payload), 0)
                stream.seek(end)
                if self._verified_in_place(key, stream, header, hasher):
                    # Handed over itself, open (closing the Payload closes it).
                    payload_file, stream = stream, None
                    return Payload(header, payload_file, end)
                import tempfile

                # The caller reads the copy that verified, never the storage's file again (whoever
                # can rewrite it in place could swap bytes after the check). Handed to the caller
                # open (closing the Payload closes it).
                spool = tempfile.SpooledTemporaryFile(max_size=streams.SPOOL_MAX_SIZE)  # noqa: SIM115
                try:
                    measured = streams.hash_stream(
                        stream, header.payload_size, hasher, copy_to=spool
                    )
                    streams.verify(measured, header)
                except BaseException:
                    spool.close()
                    raise
                return Payload(header, spool, 0)  # type: ignore[arg-type]
            finally:
                if stream is not None:
                    stream.close()
        except (BlocksError, *_ABSENT):
            raise
        except OSError as exc:
            self._storage_failed("read", key, exc)

    def exists(self, key: str) -> bool:
        """Whether a valid, unexpired record is stored under `key`.

        Reads only the header (a small range read) and the object size; the payload is never
        read or deserialized.
        """
        key = validate_key(key)
        try:
            header, offset = self._fetch_header(key)
            if header.is_expired():
                return False
            actual = self.storage.size(key)
            if actual != offset + header.payload_size:
                raise CorruptRecord(
                    f"result record {key!r} is {actual} bytes, its header announces "
                    f"{offset + header.payload_size}: truncated or padded"
                )
        except _ABSENT:
            return False
        except CorruptRecord as exc:
            self._warn(exc)
            return False
        except BlocksError:
            raise
        except OSError as exc:
            self._storage_failed("read", key, exc)
        return True

    def header(self, key: str) -> RecordHeader | None:
        """The header of the record under `key` (expired or not), or None if absent/corrupt."""
        try:
            return self.load_header(key)
        except _ABSENT:
            return None
        except CorruptRecord as exc:
            self._warn(exc)
            return None

    def load_header(self, key: str) -> RecordHeader:
        """Like `header`, but raises: `FileNotFoundError` if absent, `CorruptRecord` if invalid.

        Example:
            >>> store.load_header("etl/extract-3f2a").task
            'extract'
        """
        key = validate_key(key)
        try:
            return self._fetch_header(key)[0]
        except (BlocksError, *_ABSENT):
            raise
        except OSError as exc:
            self._storage_failed("read", key, exc)

    def records(self, prefix: str = "") -> Iterator[tuple[str, RecordHeader | None]]:
        """Every key at or below `prefix` with its header; None for unreadable objects.

        Objects that are not records (a stray temp file, a foreign file) come back as None
        too, and never produce a warning here.
        """
        return self._records(prefix)

    def _records(
        self, prefix: str, wanted: Callable[[dict[str, Any]], bool] | None = None
    ) -> Iterator[tuple[str, RecordHeader | None]]:
        """`records`; where the storage scans, `wanted` may turn down verified headers before
        they are built (see `_records_from`)."""
        prefix = validate_key(prefix, allow_empty=True)
        heads = self.storage.read_heads(FIRST_READ) if not prefix else None
        try:
            if heads is not None:
                yield from self._records_from(heads, wanted)
                return
            for key in self.storage.walk_keys(prefix):
                try:
                    yield key, self._fetch_header(validate_key(key))[0]
                except (BlocksError, OSError):  # CorruptRecord, UnsafePath, absent, ...
                    yield key, None
        except BlocksError:
            raise
        except OSError as exc:
            self._storage_failed("list", prefix or "(all)", exc)

    def _records_from(
        self,
        heads: Iterator[tuple[str, bytes | None]],
        wanted: Callable[[dict[str, Any]], bool] | None = None,
    ) -> Iterator[tuple[str, RecordHeader | None]]:
        """`records` from a scan's heads; with `wanted`, a verified header it turns down is
        skipped before it is built (its key is not yielded at all)."""
        keys = self.keys
        for key, head in heads:
            try:
                key = validate_key(key)
                if head is None or (
                    len(head) == FIRST_READ
                    and PREFIX_SIZE + header_length(head, key=key) > FIRST_READ
                ):
                    yield key, self._fetch_header(key)[0]  # a symlink, or a header past the head
                    continue
                raw = verified_fields(head, key=key, keys=keys)
                if wanted is not None and not _asks_for(wanted, raw):
                    continue
                yield key, header_from(raw, key=key)
            except (BlocksError, OSError):  # CorruptRecord, UnsafePath, absent, ...
                yield key, None

    # -- deleting -------------------------------------------------------------------------

    def delete(self, key: str) -> None:
        """Remove the record under `key`; a missing record is not an error."""
        key = validate_key(key)
        try:
            self.storage.delete(key)
        except _ABSENT:
            pass
        except BlocksError:
            raise
        except OSError as exc:
            self._storage_failed("delete", key, exc)

    def delete_keys(self, keys: Iterable[str]) -> Iterator[str]:
        """Delete the records under `keys`, yielding each key once it is gone (or was already);
        a key behind a symlink is skipped with a logged warning, never followed.

        Lazy: nothing is deleted until iterated. Local storage deletes a folder's keys through
        one descriptor of that folder (`LocalFolder.delete_keys`).

        Example:
            >>> list(store.delete_keys(["etl/a", "etl/b"]))
            ['etl/a', 'etl/b']
        """
        try:
            for key, refused in self.storage.delete_keys(validate_key(k) for k in keys):
                if refused is not None:
                    _logger().warning("prune skipped %r: %s", key, refused)
                    continue
                yield key
        except BlocksError:
            raise
        except OSError as exc:
            raise StorageError(
                f"Could not delete results in {self.storage.describe()}: {exc}"
            ) from exc

    def prunable(
        self,
        *,
        expired: bool = True,
        older_than: timedelta | None = None,
        now: datetime | None = None,
    ) -> Iterator[tuple[str, RecordHeader]]:
        """Records `prune` would delete, with their headers (see `prune` for the rule)."""
        moment = now.astimezone(UTC) if now is not None else datetime.now(UTC)
        cutoff = moment - older_than if older_than is not None else None
        everything = not expired and cutoff is None

        def wanted(raw: dict[str, Any]) -> bool:
            # The two times, from a verified header not yet built: most records of a scan
            # are kept, and building their headers was a third of its time.
            if expired and raw["expires"] is not None and moment >= parse_time(raw["expires"]):
                return True
            return cutoff is not None and parse_time(raw["created"]) < cutoff

        for key, header in self._records("", None if everything else wanted):
            if header is None:
                continue
            if (
                everything
                or (expired and header.is_expired(moment))
                or (cutoff is not None and header.created < cutoff)
            ):
                yield key, header

    def prune(
        self,
        *,
        expired: bool = True,
        older_than: timedelta | None = None,
        dry_run: bool = False,
        on_delete: Callable[[str, RecordHeader], None] | None = None,
        temp_grace: timedelta | None = TEMP_GRACE,
    ) -> list[str]:
        """Delete expired records and/or records older than `older_than`, and stale temp files;
        return their keys.

        A record goes if ``expired`` and it has expired, **or** it was created more than
        `older_than` ago. With ``expired=False`` and no `older_than`, every record goes.
        Objects that are not readable records are never deleted (they may be someone
        else's files). Temp files of interrupted writes go when older than `temp_grace`, or
        at once if the process that wrote them (on this host) is gone; None keeps them.
        With `dry_run`, nothing is deleted. A key behind a symlink is skipped (logged).

        Example:
            >>> store.prune(older_than=timedelta(days=7), dry_run=True)
            ['etl/extract-3f2a']
        """
        chosen: dict[str, RecordHeader] = {}

        def pick() -> Iterator[str]:
            for key, header in self.prunable(expired=expired, older_than=older_than):
                chosen[key] = header
                yield key

        # Deleted as the scan finds them (the scan lists each folder before reading it, so
        # unlinking behind it is safe): one pass, no list of 10,000 headers held first.
        done = list(pick()) if dry_run else []
        if not dry_run:
            for key in self.delete_keys(pick()):
                header = chosen.pop(key)
                if on_delete is not None:
                    on_delete(key, header)
                done.append(key)
        if temp_grace is not None:
            done.extend(t.key for t in self.prune_temp(temp_grace, dry_run=dry_run))
        return done

    def temp_files(self) -> list[TempFile]:
        """Temp files of writes in flight or interrupted (local storage; none on object stores)."""
        try:
            return sorted(self.storage.temp_files(), key=lambda t: t.key)
        except OSError as exc:
            self._storage_failed("list", "(temp files)", exc)

    def prune_temp(self, grace: timedelta = TEMP_GRACE, *, dry_run: bool = False) -> list[TempFile]:
        """Delete temp files older than `grace` (or whose writer on this host is gone)."""
        try:
            return self.storage.remove_temp_files(grace, dry_run=dry_run)
        except OSError as exc:
            self._storage_failed("delete", "(temp files)", exc)

    # -- a new key beside someone else's records ---------------------------------------------

    #: How many other keys a new key's first write looks at for records of another key.
    ADOPTION_SCAN = 64

    def _keys_to_check(self) -> list[str]:
        try:
            return list(itertools.islice(self.storage.walk_keys(""), self.ADOPTION_SCAN))
        except (BlocksError, OSError):
            return []  # the write itself says what is wrong with the storage

    def _refuse_foreign(self, keys: ResultsKeys, *candidates: str) -> None:
        """Raise `ResultsKeyMissing` if one of `candidates` is a record signed by a key
        outside `keys` (unadopted: new to this home), rather than let it be overwritten."""
        for key in dict.fromkeys(candidates):
            try:
                head = self.storage.read_range(key, 0, FIRST_READ)
            except (BlocksError, OSError):
                continue
            foreign = claimed_signer(head, key=key)
            if foreign is not None and foreign not in keys.by_id:
                raise ResultsKeyMissing(
                    f"Result storage {self.storage.describe()} holds records signed by results "
                    f"key {foreign!r} (e.g. {key!r}), which this process does not have; its own "
                    f"results key {keys.active.key_id!r} is new (made in "
                    f"{settings.blocks_home()}, where no key existed). Writing would overwrite "
                    "records the other workers cannot read. Set BLOCKS_RESULTS_KEY to the "
                    "results key those workers use (or share their registry or master key); "
                    "to start this storage over under a key of your own, set "
                    "BLOCKS_RESULTS_KEY to one from `block key generate`."
                )

    # -- internals ------------------------------------------------------------------------

    def _fetch_header(self, key: str) -> tuple[RecordHeader, int]:
        """The verified header and the payload offset, from one or two range reads."""
        data = self.storage.read_range(key, 0, FIRST_READ)
        length = header_length(data, key=key)
        end = PREFIX_SIZE + length
        if len(data) < end and len(data) == FIRST_READ:
            data += self.storage.read_range(key, FIRST_READ, end)
        return decode_header(data, key=key, keys=self.keys), end

    def _serializer_for(self, header: RecordHeader) -> Serializer:
        spec = header.serializer
        if spec == self._own_spec:
            # Our own serializer: it may hold options a spec cannot carry (JSON `types`).
            # Headers of repeat hits are shared objects (`decode_header_once`): their versions
            # dict, once found compatible, is remembered (kept alive, so its id stays its own).
            versions = header.versions
            if self._compatible_versions.get(id(versions)) is versions:
                return self.serializer
            own = _compatible(self.serializer, header)
            if len(self._compatible_versions) >= 256:
                self._compatible_versions.clear()
            self._compatible_versions[id(versions)] = versions
            return own
        if _uses_pickle(spec) and not self._reads_pickle:
            raise CorruptRecord(
                f"result record {header.key!r} is pickled, but this store's serializer "
                f"({self._own_spec.get('type')}) does not unpickle: refused. "
                "Read it with a pickle-based store if you trust the storage."
            )
        # Serializers are stateless and rebuilt from their spec alone: reuse them (hot path).
        cache_key = json.dumps(spec, sort_keys=True)
        serializer = _SERIALIZERS.get(cache_key)
        if serializer is None:
            from serializers import resolve_serializer

            try:
                serializer = resolve_serializer(spec)
            except (SerializationError, ValueError, TypeError, KeyError) as exc:
                raise CorruptRecord(
                    f"result record {header.key!r} names a serializer that is not on the "
                    f"allow-list: {exc}"
                ) from None
            if len(_SERIALIZERS) < 256:
                _SERIALIZERS[cache_key] = serializer
        return _compatible(serializer, header)

    def _verified_in_place(
        self, key: str, stream: BinaryIO, header: RecordHeader, hasher: PayloadTag
    ) -> bool:
        """Verify a large payload straight from `stream` when only our own user can write the
        file (`Storage.only_we_write`: nobody else can rewrite it after the check), leaving the
        stream at the payload's start; False, with nothing read, when it must be copied."""
        if header.payload_size <= streams.SPOOL_MAX_SIZE or not self.storage.only_we_write(
            key, stream
        ):
            return False
        start = stream.tell()
        streams.verify(streams.hash_stream(stream, header.payload_size, hasher), header)
        stream.seek(start)
        return True

    def _load_verified(
        self,
        stream: BinaryIO,
        header: RecordHeader,
        serializer: Serializer,
        keys: ResultsKeys,
        limit: int,
        key: str,
    ) -> Any:
        # Decode exactly the bytes that verified: they are copied as they are hashed, into
        # memory up to `SPOOL_MAX_SIZE`, past it into a private unlinked temp file (mode 0600,
        # no name: nobody else can open or rewrite it), and decoded from that copy. Reading the
        # storage's file a second time instead (verify, seek back, decode) lets whoever can
        # rewrite that file in place swap the bytes between the two reads (issue 20) -- unless
        # that is nobody but us: a large local file that only our user can write (and the
        # folders down to it) is verified, then decoded from the same descriptor, no copy.
        import tempfile

        signer = _signer(keys, header)
        hasher = signer.payload_hasher(header.checksum)
        if serializer.loads_in_place:
            # Read straight into private memory, verified as it lands; the value keeps it.
            view, measured = streams.read_into_memory(stream, header.payload_size, hasher)
            streams.verify(measured, header)
            return _decode(serializer, view, header, signer, limit)
        if self._verified_in_place(key, stream, header, hasher):
            return _decode(serializer, stream, header, signer, limit)
        # Chosen by the signed size: a large payload goes straight to the file, without a
        # first 16 MiB in memory to copy over when it rolls (the read's peak stays ~1.0x).
        copy: BinaryIO = (
            io.BytesIO()
            if header.payload_size <= streams.SPOOL_MAX_SIZE
            else tempfile.TemporaryFile()  # noqa: SIM115 (closed by the with below); O_TMPFILE: no name
        )
        with copy:
            measured = streams.hash_stream(stream, header.payload_size, hasher, copy_to=copy)
            streams.verify(measured, header)
            copy.seek(0)
            return _decode(serializer, copy, header, signer, limit)

    def _load_small(
        self,
        payload: bytes,
        header: RecordHeader,
        serializer: Serializer,
        keys: ResultsKeys,
        limit: int,
    ) -> Any:
        # The whole payload is in memory (the storage said so): verify it there, then decode
        # from it. Truncated or padded shows as a size mismatch.
        signer = _signer(keys, header)
        seen = _verified_payloads.get(header.checksum)
        if (
            seen is None
            or seen[0] is not signer
            or seen[1] != payload
            or len(payload) != header.payload_size
        ):
            hasher = signer.payload_hasher(header.checksum)
            hasher.update(payload)
            streams.verify((len(payload), checksum_string(hasher)), header)
            _remember_payload(header.checksum, signer, payload)
        return _decode(serializer, io.BytesIO(payload), header, signer, limit)

    def _warn(self, exc: CorruptRecord) -> None:
        message = f"{exc}; treated as a cache miss (storage {self.storage.describe()})"
        _logger().warning(message)
        warnings.warn(message, CorruptRecordWarning, stacklevel=3)

    def _storage_failed(self, action: str, key: str, exc: OSError) -> NoReturn:
        raise StorageError(
            f"Could not {action} result {key!r} in {self.storage.describe()}: {exc}"
        ) from exc


def _signer(keys: ResultsKeys, header: RecordHeader) -> ResultsKey:
    """The key that signs `header`'s payload: the one its ``signer`` names. A header that
    verifies under our keys but names an id outside them was not written by this code: a
    miss (`CorruptRecord`), never a `KeyError`."""
    signer = keys.by_id.get(header.signer)
    if signer is None:
        raise CorruptRecord(
            f"result record {header.key!r} names signer {header.signer[:64]!r}, which is not "
            f"one of this process's results keys ({', '.join(keys.by_id)}): not trusted"
        )
    return signer


def _asks_for(wanted: Callable[[dict[str, Any]], bool], raw: dict[str, Any]) -> bool:
    """`wanted(raw)`; a header it cannot read is asked for, so that building it says why
    (a verified header is our writer's: that does not happen)."""
    try:
        return wanted(raw)
    except (KeyError, TypeError, ValueError, AttributeError):
        return True


def _serializer(spec: Serializer | str | dict[str, Any] | None) -> Serializer:
    from serializers import resolve_serializer
    from serializers.base import Serializer

    if isinstance(spec, Serializer):
        return spec
    resolved: Serializer = resolve_serializer(
        spec if spec is not None else settings.results_serializer()
    )
    return resolved


#: A record kept verified: its file's stamp, the keys, header, serializer, payload and signer
#: it verified with, and when it expires (ns since the epoch, or None).
_Kept = tuple["Stamp", ResultsKeys, RecordHeader, "Serializer", bytes, ResultsKey, int | None]

#: Records a store keeps verified (`ResultStore._keep`): at most 512 of at most 16 KiB.
_KEPT_RECORDS = 512
_KEPT_PAYLOAD = 16 * 1024

#: Small payloads whose tag verified, by tag: the same bytes under the same key give the same
#: tag, so a repeat hit compares bytes instead of computing the MAC again. At most
#: 1024 x 4 KiB.
_verified_payloads: dict[str, tuple[ResultsKey, bytes]] = {}
_REMEMBERED_PAYLOAD = 4096


def _remember_payload(checksum: str, signer: ResultsKey, payload: bytes) -> None:
    if len(payload) <= _REMEMBERED_PAYLOAD:
        if len(_verified_payloads) >= 1024:
            _verified_payloads.clear()
        _verified_payloads[checksum] = (signer, payload)


def _decode(
    serializer: Serializer,
    stream: BinaryIO | memoryview,
    header: RecordHeader,
    signer: ResultsKey,
    limit: int,
) -> Any:
    """Deserialize a verified payload from `stream`: decoded size bounded by `limit`, sealed
    secrets opened with `signer` (the key the record verified under)."""
    token = codec.enter(codec.CodecContext(max_bytes=limit, sealer=signer))
    try:
        return streams.deserialize(serializer, stream, header)
    finally:
        codec.leave(token)


def _compatible(serializer: Serializer, header: RecordHeader) -> Serializer:
    why = serializer.incompatible(header.versions)
    if why is not None:
        raise CorruptRecord(f"result record {header.key!r} cannot be read here: {why}")
    return serializer


def _decode_limit(header: RecordHeader) -> int:
    """The most bytes decoding this record may produce; a record over the ceiling is a miss."""
    ceiling = settings.results_max_bytes()
    declared = header.payload_size if header.decoded_size is None else header.decoded_size
    if header.payload_size > ceiling or declared > ceiling:
        raise CorruptRecord(
            f"result record {header.key!r} holds {max(header.payload_size, declared)} bytes, "
            f"over BLOCKS_RESULTS_MAX_BYTES={ceiling}: not read (raise the setting to read it)"
        )
    return declared


def _uses_pickle(spec: Any) -> bool:
    if isinstance(spec, dict):
        kind = spec.get("type")
        return (isinstance(kind, str) and "pickle" in kind) or any(
            _uses_pickle(v) for v in spec.values()
        )
    if isinstance(spec, list):
        return any(_uses_pickle(v) for v in spec)
    return False
