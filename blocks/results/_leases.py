"""Compute once across machines: a lease per cache key, held where the results live.

The machine lock (`blocks.results._locks`) makes the threads and processes of one
``BLOCKS_HOME`` compute a key once; two machines sharing a bucket each have their own. The
lease closes that gap. Whoever holds a key's machine lock also takes the key's lease before it
computes:

- **Where.** A small object ``.blocks-leases/<lock name>`` at the storage's root, created
  only if absent (S3 ``If-None-Match: *``, GCS ``ifGenerationMatch=0``, Azure
  ``If-None-Match: *``, a ``link()`` on a local or NFS folder: see
  `blocks.filesystems._conditional`). It names its owner (host, pid, a random id), the key
  and when it expires. Or, with ``BLOCKS_RESULTS_LEASES=postgres``, a session advisory lock
  on the PostgreSQL registry, which the server drops when the holder's connection dies. A
  local or NFS folder whose mount keeps or forwards record locks (Linux) takes no file per
  key: one byte of a record lock in ``.blocks-leases/.keys.lock``, which the kernel drops
  when its holder dies (`blocks.results._range_leases`; an older version's lease file is
  honoured there).
- **Heartbeat.** A daemon thread renews each held lease every third of
  ``BLOCKS_RESULTS_LEASE_SECONDS`` (replace-if-unchanged), so a long task keeps it and a
  crashed (or stopped) holder stops renewing: the lease is stale once its expiry has passed
  or its version has not changed for a whole lease length as the waiter's own clock counts
  (clock skew between machines does not delay a takeover by more than one lease).
- **Waiters** say so once on the ``blocks.results`` logger (debug: the key and its holder),
  try again after a jittered pause (50 ms doubling to a second), take a stale
  lease over with replace-if-unchanged (one of them wins), and read the record the holder
  wrote once its lease is gone. After ``BLOCKS_RESULTS_LEASE_WAIT`` seconds they compute
  anyway, with a warning. Records are written atomically, so the worst case of any race
  here is a second computation, never a wrong value.
- **Release.** When the task finishes or fails, the lease is deleted if it is still this
  holder's (delete-if-unchanged).
- **A storage that cannot create conditionally** (an fsspec URL, the GCS emulator, which
  accepts ``ifGenerationMatch=0`` and overwrites anyway) is found out once per process by a
  probe: a warning says so and the key may be computed once per machine.

``BLOCKS_RESULTS_LEASES=auto`` (the default) leases keys in object stores and in local
folders outside ``BLOCKS_HOME``; the default storage inside the home is one machine's, which
its lock covers. ``storage`` leases every storage, ``off`` none.

Example:
    >>> lock = SharedKeyLock(store, "etl/extract-3f2a")
    >>> lock.acquire()
    True
    >>> lock.release()
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import threading
import time
import uuid
from contextlib import suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from blocks import settings
from blocks.errors import ConfigurationError
from blocks.filesystems._conditional import (
    ConditionalObjects,
    LocalObjects,
    conditional_objects,
)
from blocks.filesystems._exclusive import PROBE_PREFIX, probe_create
from blocks.results._locks import KeyLock, lock_name, storage_identity
from blocks.results._range_leases import (
    RangeFolder,
    beats_of,
    held_leases,
    offset_of,
    range_folder,
    trusted,
)

if TYPE_CHECKING:
    from blocks.results._store import ResultStore

__all__ = ["LeaseInfo", "SharedKeyLock", "leases_for", "live_leases"]

_logger = logging.getLogger("blocks.results")

_FIRST_PAUSE, _LAST_PAUSE = 0.05, 1.0


def _new_owner() -> str:
    return f"{os.uname().nodename}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def _machine_id() -> str:
    """What names this machine in a lease: ``BLOCKS_MACHINE_ID``, else (Linux) the boot id
    and the PID namespace, so containers on one host are different machines; empty
    elsewhere (then no same-machine shortcut)."""
    given = os.environ.get("BLOCKS_MACHINE_ID")
    if given:
        return given
    global _machine
    if _machine is None:  # a process's boot and PID namespace never change: read them once
        try:
            with open("/proc/sys/kernel/random/boot_id") as source:
                boot = source.read().strip()
            _machine = f"{boot}/{os.stat('/proc/self/ns/pid').st_ino}"
        except OSError:
            _machine = ""
    return _machine


_machine: str | None = None


def _dead_here(info: LeaseInfo) -> bool:
    """Whether `info`'s owner is a process of this machine that no longer exists: its lease
    is stale at once (a holder killed on this machine does not keep it for a lease length)."""
    here = _machine_id()
    if not here or info.boot != here:
        return False
    try:
        pid = int(info.owner.split(":")[-2])
        os.kill(pid, 0)
    except (ValueError, IndexError):
        return False
    except ProcessLookupError:
        return True
    except OSError:
        return False  # alive, another user's
    return False


_owner = _new_owner()


@dataclass(frozen=True)
class LeaseInfo:
    """What a lease object says: who holds which key, until when (Unix time)."""

    name: str
    owner: str
    key: str
    expires: float
    seconds: float
    boot: str = ""  # the holder's machine (`_machine_id`)

    def encode(self) -> bytes:
        fields = {"owner": self.owner, "key": self.key, "expires": self.expires}
        return json.dumps({**fields, "seconds": self.seconds, "boot": self.boot}).encode()

    @classmethod
    def decode(cls, name: str, data: bytes) -> LeaseInfo | None:
        try:
            fields = json.loads(data)
            return cls(
                name,
                str(fields["owner"]),
                str(fields["key"]),
                float(fields["expires"]),
                float(fields["seconds"]),
                str(fields.get("boot", "")),
            )
        except (ValueError, KeyError, TypeError):
            return None  # half-written or foreign: treated as stale


# -- which leases a store gets ----------------------------------------------------------------


class _ObjectLeases:
    """Leases as conditional objects in one storage."""

    def __init__(self, objects: ConditionalObjects) -> None:
        self.objects = objects

    def waiter(self, name: str, key: str) -> _Waiter:
        return _ObjectWaiter(self.objects, name, key)


_backends: dict[tuple[Any, ...], Any] = {}
_backends_guard = threading.Lock()
_warned: set[str] = set()


def leases_for(store: ResultStore) -> Any:
    """The lease backend for `store` under the settings (None: the machine lock only).

    Looked up on every cache miss: keyed on the storage and one raw stamp of the settings it
    depends on (the mode, the home and registry, HOME for a ``~``), parsed only when new."""
    described = store.storage.describe()
    ident = (_LEASES_STAMP(), described)
    found = _backends.get(ident, _backends)
    if found is _backends:
        mode = settings.results_leases()  # an invalid mode raises here, every time
        with _backends_guard:
            found = _backends.get(ident, _backends)
            if found is _backends:
                backend = None if mode == "off" else _backend(mode, store.storage, described)
                if len(_backends) >= 256:
                    _backends.clear()
                found = _backends[ident] = backend
    return found


#: What `leases_for`'s answer depends on besides the storage.
_LEASES_STAMP = settings.EnvStamp(
    "BLOCKS_RESULTS_LEASES", "BLOCKS_HOME", "BLOCKS_REGISTRY_URL", "HOME"
)


def _backend(mode: str, storage: Any, described: str) -> Any:
    if mode == "postgres":
        return _postgres(settings.registry_url())
    identity = storage_identity(described)
    if identity.startswith("memory://"):
        return None  # one process's memory: nobody else can share it
    if mode == "auto" and not identity.startswith(("s3://", "gs://", "az://", "abfs://")):
        home = os.path.realpath(settings.blocks_home())
        path = identity.removeprefix("file://")
        if os.path.isabs(path) and (path == home or path.startswith(home.rstrip("/") + "/")):
            return None  # this machine's own storage: its lock covers it
    objects = conditional_objects(storage)
    if objects is None:
        _warn_once(described, "it has no conditional create")
        return None
    if isinstance(objects, LocalObjects) and trusted(os.path.dirname(objects.folder)):
        leases = _RangeLeases(objects)  # byte-range locks: no file per miss
        try:  # as the probe below does: a folder that cannot be made takes no lease
            os.makedirs(leases.folder.folder, mode=0o700, exist_ok=True)
        except OSError as exc:
            _warn_once(described, f"its lease folder cannot be made ({type(exc).__name__})")
            return None
        return leases
    why = probe_create(objects)
    if why is not None:
        _warn_once(described, why)
        return None
    return _ObjectLeases(objects)


def _warn_once(described: str, why: str) -> None:
    if described in _warned:
        return
    _warned.add(described)
    _logger.warning(
        "Result storage %s cannot hold compute-once leases: %s. Concurrent runs of one cached "
        "task on several machines may each compute it (every value stays right). Set "
        "BLOCKS_RESULTS_LEASES=postgres to use the PostgreSQL registry's advisory locks instead.",
        described,
        why,
    )


# -- waiting for and holding one lease ---------------------------------------------------------


class _Waiter:
    """Takes one key's lease (polled or blocking), holds it, lets it go."""

    def __init__(self, name: str, key: str) -> None:
        self.name, self.key = name, key
        self.held = False
        self._since: float | None = None
        self._pause = _FIRST_PAUSE
        self._next_try = 0.0

    def try_take(self) -> bool:
        raise NotImplementedError

    def holder(self) -> str:
        return "another run"

    def let_go(self) -> None:
        raise NotImplementedError

    def acquire(self, blocking: bool) -> bool:
        """Whether to go on: the lease is held, or the wait is over (computing without it)."""
        while True:
            now = time.monotonic()
            if self._since is None:
                self._since = now
            if now >= self._next_try:
                if self.try_take():
                    self.held = True
                    return True
                wait = settings.results_lease_wait()
                if self._pause == _FIRST_PAUSE:  # the first try: say once whom this waits on
                    _logger.debug(
                        "Waiting for the compute-once lease of key %r, held by %s (at most %s s: "
                        "BLOCKS_RESULTS_LEASE_WAIT).",
                        self.key,
                        self.holder(),
                        wait,
                    )
                if now - self._since >= wait:
                    _logger.warning(
                        "Waited %.1f s for the compute-once lease of key %r, held by %s: "
                        "computing it here too (BLOCKS_RESULTS_LEASE_WAIT=%s s). The record is "
                        "written atomically.",
                        now - self._since,
                        self.key,
                        self.holder(),
                        wait,
                    )
                    return True
                self._next_try = now + self._pause * random.uniform(0.5, 1.0)
                self._pause = min(self._pause * 2, _LAST_PAUSE)
            if not blocking:
                return False
            time.sleep(max(0.0, self._next_try - time.monotonic()))

    def release(self) -> None:
        if self.held:
            self.held = False
            try:
                self.let_go()
            except Exception:  # it expires by itself
                _logger.debug("could not release the lease of %r", self.key, exc_info=True)


class _ObjectWaiter(_Waiter):
    def __init__(self, objects: ConditionalObjects, name: str, key: str) -> None:
        super().__init__(name, key)
        self.objects = objects
        self.version: str | None = None
        self.seconds = settings.results_lease_seconds()
        self._seen: tuple[str, float] | None = None  # a version and when we first saw it
        self._holder = "another run"
        self.lost = False

    def body(self) -> bytes:
        expires = time.time() + self.seconds
        machine = _machine_id()
        return LeaseInfo(self.name, _owner, self.key, expires, self.seconds, machine).encode()

    def holder(self) -> str:
        return self._holder

    def try_take(self) -> bool:
        version = self.objects.create(self.name, self.body())
        if version is None:
            found = self.objects.read(self.name)
            if found is None:
                return False  # released just now: the next try creates it
            seen = found[1]
            info, length, stale = _judged(self, found)
            if not stale:
                return False
            version = self.objects.replace(self.name, self.body(), seen)
            if version is None:
                return False  # renewed, or another waiter took it over first
            _logger.warning(
                "Took over the compute-once lease of key %r in %s from %s: it was not renewed "
                "for a lease length (%s s), or its holder on this machine is gone.",
                self.key,
                self.objects.describe(),
                info.owner if info is not None else "an unreadable lease",
                length,
            )
        self.version = version
        _heartbeat.hold(self)
        return True

    def renew(self) -> None:
        version = self.version
        if version is None:
            return
        renewed = self.objects.replace(self.name, self.body(), version)
        if renewed is None:
            self.lost, self.version = True, None
            _heartbeat.drop(self)
            _logger.warning(
                "Lost the compute-once lease of key %r in %s (taken over after it went "
                "unrenewed): another machine may compute it too.",
                self.key,
                self.objects.describe(),
            )
        else:
            self.version = renewed

    def let_go(self) -> None:
        _heartbeat.drop(self)
        version, self.version = self.version, None
        if version is not None:
            self.objects.delete(self.name, version)


class _RangeLeases:
    """Leases of a local or NFS folder as byte-range locks (`blocks.results._range_leases`)."""

    def __init__(self, objects: LocalObjects) -> None:
        self.objects = objects
        self.folder = range_folder(os.path.dirname(objects.folder))

    def waiter(self, name: str, key: str) -> _Waiter:
        return _RangeWaiter(self, name, key)


class _RangeWaiter(_Waiter):
    """One byte of the folder's lock file; a live lease file of an older version honoured.

    The holder's heartbeat counts up in its holder file while it computes: a holder that
    stops counting for a lease length (stopped, hung) is given up on, and the waiters queue
    on the key's second byte instead (one computes, the others read its record)."""

    def __init__(self, leases: _RangeLeases, name: str, key: str) -> None:
        super().__init__(name, key)
        self.objects = leases.objects
        self.folder: RangeFolder = leases.folder
        self.generation = 0
        self.fd = -1  # the lock file's descriptor the byte is held through
        self.offset = offset_of(name)
        self.seconds = settings.results_lease_seconds()
        self._seen: tuple[str, float] | None = None  # a lease file's version, when first seen
        self._beats: tuple[Any, float] | None = None  # the holder's beats, when first seen
        self._holder = "another run"
        self.lost = False

    def holder(self) -> str:
        return self._holder

    def try_take(self) -> bool:
        self.fd = self.folder.try_lock(self.offset)
        if self.fd < 0:
            self._holder = self.folder.holder(self.offset)
            if self._stalled():
                self._give_up_on_holder()
            return False
        try:
            older = self.objects.read(self.name)  # a lease file (an older version's)?
            if older is not None and not self._stale(older):
                self.folder.unlock(self.fd, self.offset)
                return False
            fields = {"name": self.name, "owner": _owner, "key": self.key}
            self.folder.hold(self.name, {**fields, "seconds": self.seconds, "beat": 0})
        except BaseException:
            self.folder.unlock(self.fd, self.offset)
            raise
        _heartbeat.hold(self)
        return True

    def _stalled(self) -> bool:
        """Whether the byte's holder has not beaten for a lease length (its holder file's
        count for this key, as this waiter's clock counts; looked at while waiting only)."""
        now = time.monotonic()
        beats = beats_of(self.folder, self.name)
        if self._beats is None or self._beats[0] != beats:
            self._beats = (beats, now)
        return now - self._beats[1] > self.seconds

    def _give_up_on_holder(self) -> None:
        if self.generation >= 1:
            return  # the second byte's holder stalled too: the lease wait ends it
        _logger.warning(
            "The holder of the compute-once lease of key %r in %s (%s) has not renewed it for "
            "a lease length (%s s): stopped or hung? Taking the key over.",
            self.key,
            self.objects.describe(),
            self._holder,
            self.seconds,
        )
        self.generation, self._beats, self._since = 1, None, time.monotonic()
        self.offset = offset_of(
            hashlib.blake2b(f"{self.name}/1".encode(), digest_size=16).hexdigest()
        )

    def _stale(self, found: tuple[bytes, str]) -> bool:
        """Whether an older version's lease file is stale (as `_ObjectWaiter` judges it)."""
        return _judged(self, found)[2]

    def renew(self) -> None:
        self.folder.beat(self.name)

    def let_go(self) -> None:
        _heartbeat.drop(self)
        self.folder.drop(self.name)
        self.folder.unlock(self.fd, self.offset)


def _judged(
    waiter: _ObjectWaiter | _RangeWaiter, found: tuple[bytes, str]
) -> tuple[LeaseInfo | None, float, bool]:
    """What a lease file found by `waiter` says: its fields (None if unreadable), its length,
    and whether it is stale (expired, unreadable, unchanged for a lease length as this waiter's
    clock counts, or held by a process of this machine that is gone). Notes when this waiter
    first saw this version of it, and names its holder for a log line."""
    data, seen = found
    info = LeaseInfo.decode(waiter.name, data)
    now = time.monotonic()
    if waiter._seen is None or waiter._seen[0] != seen:
        waiter._seen = (seen, now)
    if info is not None:
        waiter._holder = f"{info.owner} (expires in {info.expires - time.time():.1f} s)"
    length = info.seconds if info is not None else waiter.seconds
    stale = (
        info is None
        or info.expires < time.time()
        or now - waiter._seen[1] > length
        or _dead_here(info)
    )
    return info, length, stale


class _Heartbeat:
    """One daemon thread per process renewing every held lease a third of a lease apart."""

    def __init__(self) -> None:
        self.guard = threading.Lock()
        self.held: set[_ObjectWaiter | _RangeWaiter] = set()
        self.wake = threading.Event()
        self.thread: threading.Thread | None = None

    def hold(self, lease: _ObjectWaiter | _RangeWaiter) -> None:
        with self.guard:
            self.held.add(lease)
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(
                    target=self._run, name="blocks-lease-heartbeat", daemon=True
                )
                self.thread.start()
                return
        # A running thread sleeps at most `_LINGER` between looks: it sees this lease in time
        # (first renewal a third of a lease in) unless the lease is that short. Waking it
        # anyway hands it the GIL on every cache miss.
        if lease.seconds / 3 < _LINGER:
            self.wake.set()

    def drop(self, lease: _ObjectWaiter | _RangeWaiter) -> None:
        with self.guard:
            self.held.discard(lease)

    def _run(self) -> None:
        due: dict[_ObjectWaiter | _RangeWaiter, float] = {}
        idle_since: float | None = None
        while True:
            with self.guard:
                held = list(self.held)
                if not held:
                    # Lingers a little with none held: a run of cache misses would otherwise
                    # start a thread per miss (~60 µs each).
                    idle_since = idle_since if idle_since is not None else time.monotonic()
                    if time.monotonic() - idle_since >= _LINGER:
                        self.thread = None  # the next lease held starts another
                        return
                else:
                    idle_since = None
            now = time.monotonic()
            for lease in held:
                when = due.setdefault(lease, now + lease.seconds / 3)
                if now >= when:
                    try:
                        lease.renew()
                    except Exception:  # a blip: the next beat tries again
                        _logger.debug("lease renewal of %r failed", lease.key, exc_info=True)
                    due[lease] = now + lease.seconds / 3
            for lease in [lease for lease in due if lease not in held]:
                del due[lease]
            self.wake.clear()
            self.wake.wait(min([when - now for when in due.values()] + [_LINGER]))


_heartbeat = _Heartbeat()

#: How long the heartbeat thread waits with no lease held before it ends.
_LINGER = 1.0


def _after_fork() -> None:
    # A child holds none of its parent's leases (nor its connection, nor its thread).
    global _heartbeat, _owner, _backends_guard, _machine
    _heartbeat, _owner, _backends_guard = _Heartbeat(), _new_owner(), threading.Lock()
    _machine = None  # read again: a child may be in another PID namespace
    _backends.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


# -- PostgreSQL advisory locks ----------------------------------------------------------------


class _PostgresLeases:
    """Session advisory locks on one connection per process: the server drops them with it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.guard = threading.Lock()
        self.connection: Any = None

    def run(self, sql: str, number: int) -> bool:
        import sqlalchemy as sa

        with self.guard:
            if self.connection is None:
                from blocks.core._registry import Registry

                engine = Registry.for_url(self.url).engine
                self.connection = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            try:
                return bool(self.connection.execute(sa.text(sql), {"n": number}).scalar())
            except Exception:
                with suppress(Exception):
                    self.connection.close()
                self.connection = None  # its locks went with it
                raise

    def waiter(self, name: str, key: str) -> _Waiter:
        return _PostgresWaiter(self, name, key)


class _PostgresWaiter(_Waiter):
    def __init__(self, leases: _PostgresLeases, name: str, key: str) -> None:
        super().__init__(name, key)
        self.leases = leases
        self.number = int.from_bytes(
            hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True
        )

    def holder(self) -> str:
        return "another session of the PostgreSQL registry"

    def try_take(self) -> bool:
        return self.leases.run("SELECT pg_try_advisory_lock(:n)", self.number)

    def let_go(self) -> None:
        self.leases.run("SELECT pg_advisory_unlock(:n)", self.number)


def _postgres(url: str) -> _PostgresLeases:
    if not url.startswith(("postgresql", "postgres:")):
        raise ConfigurationError(
            "BLOCKS_RESULTS_LEASES=postgres needs a PostgreSQL registry (BLOCKS_REGISTRY_URL="
            "postgresql+psycopg://...); this registry is "
            f"{url.split(':', 1)[0]}. Use auto (leases in the result storage) instead."
        )
    return _PostgresLeases(url)


# -- the lock the runtime takes -----------------------------------------------------------------


class SharedKeyLock(KeyLock):
    """`KeyLock` (one computation per machine) and then the key's lease (one across machines,
    see the module docs); `acquire(blocking=False)` polls both without waiting."""

    __slots__ = ("_local", "_store", "_waiter")

    def __init__(self, store: ResultStore, key: str) -> None:
        super().__init__(store, key)
        self._store = store
        self._local = False
        self._waiter: _Waiter | None = None

    def acquire(self, blocking: bool = True) -> bool:
        if not self._local:
            if not super().acquire(blocking):
                return False
            self._local = True
        try:
            if self._waiter is None:
                backend = leases_for(self._store)
                if backend is None:
                    return True
                self._waiter = backend.waiter(self.name, self.key)
            return self._waiter.acquire(blocking)
        except Exception:
            self.release()
            raise

    def release(self) -> None:
        waiter, self._waiter = self._waiter, None
        try:
            if waiter is not None:
                waiter.release()
        finally:
            self._local = False
            super().release()


def live_leases(storage: Any) -> list[LeaseInfo]:
    """The leases held in `storage` now (expired ones left behind by a crash included)."""
    objects = conditional_objects(storage)
    if objects is None:
        return []
    found = []
    if isinstance(objects, LocalObjects):  # byte-range leases, from their holder files
        for fields in held_leases(os.path.dirname(objects.folder)):
            with suppress(KeyError, TypeError, ValueError):
                seconds = float(fields["seconds"])
                owner, key = str(fields["owner"]), str(fields["key"])
                found.append(LeaseInfo(str(fields["name"]), owner, key, fields["expires"], seconds))
    for name in objects.names():
        if name.startswith(PROBE_PREFIX):
            continue
        read = objects.read(name)
        info = LeaseInfo.decode(name, read[0]) if read is not None else None
        if info is not None:
            found.append(info)
    return found


def lease_name(store: ResultStore, key: str) -> str:
    """The lease object's name for `key` in `store` (its machine lock's name)."""
    return lock_name(store.storage.describe(), key)
