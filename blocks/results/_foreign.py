"""Never overwrite a team's records with another key's (issue 20): the two refusals that need
no key of this process's own.

- **No key yet.** A worker that shares the team's storage but has no results key at all (no
  ``BLOCKS_RESULTS_KEY``, no ``results-key`` block, no master key) would make a registry and a
  key of its own on its first cache key or read, then overwrite the team's records one miss
  at a time. `refuse_new_key` runs *before* anything is created (`blocks.results._signing`
  calls it when it is about to make a key) and raises `ResultsKeyMissing` if the storage holds
  a signed record: nothing is written to the home or the registry.
- **Another key.** A worker with a key of its own that is not the team's: a record at the path
  it is about to write, signed by a key outside its keyset, is refused with the same error
  (`refuse_overwrite`), unless ``BLOCKS_RESULTS_OVERWRITE_FOREIGN=1`` says to overwrite
  (after retiring a key for good, say). Reading such a record stays a miss. On an object
  store whose server refuses a second create, the write is create-only and this check runs
  only when it is refused (`blocks.filesystems._exclusive`): a first write is one request.

Example:
    >>> refuse_overwrite(storage, keys, "etl/extract-3f2a")   # raises if another key signed it
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

from blocks import settings
from blocks.errors import BlocksError, ResultsKeyMissing
from blocks.results._record import FIRST_READ, claimed_signer

if TYPE_CHECKING:
    from blocks.results._signing import ResultsKeys

__all__ = ["SCAN", "refuse_new_key", "refuse_overwrite"]

#: How many keys of a storage are looked at for a signed record before making a new key.
SCAN = 64

_FIX = (
    "Set BLOCKS_RESULTS_KEY to the results key the other workers use (or share their "
    "registry or master key)"
)


def _signer(storage: Any, key: str) -> str | None:
    try:
        head = storage.read_range(key, 0, FIRST_READ)
    except (BlocksError, OSError):
        return None
    return claimed_signer(head, key=key)


def refuse_new_key(storage: Any) -> None:
    """Raise `ResultsKeyMissing` if `storage` holds a signed record (this process, which has
    no results key, must not make one and overwrite it); called before anything is created."""
    try:
        keys = list(itertools.islice(storage.walk_keys(""), SCAN))
    except (BlocksError, OSError):
        return  # the read or write itself says what is wrong with the storage
    for key in keys:
        signer = _signer(storage, key)
        if signer is not None:
            raise ResultsKeyMissing(
                f"Result storage {storage.describe()} holds records signed by results key "
                f"{signer!r} (e.g. {key!r}), and this process has no results key: no "
                "BLOCKS_RESULTS_KEY, no 'results-key' secret block and no master key for "
                f"BLOCKS_HOME={settings.blocks_home()}. Making a key of its own would "
                f"overwrite records the other workers cannot read. {_FIX}; nothing was "
                "created. To start this storage over under a key of your own, set "
                "BLOCKS_RESULTS_KEY to one from `block key generate`."
            )


def refuse_overwrite(storage: Any, keys: ResultsKeys, key: str) -> bool:
    """Raise `ResultsKeyMissing` if the record at `key` is signed by a key outside `keys`
    (unless ``BLOCKS_RESULTS_OVERWRITE_FOREIGN`` is set); else whether an object is there
    (False: none, so a create-only write may be tried again: `blocks.filesystems._exclusive`)."""
    try:
        head = storage.read_range(key, 0, FIRST_READ)
    except FileNotFoundError:
        return False
    except (BlocksError, OSError):
        return True  # unreadable: not known to be another key's (the write says the rest)
    signer = claimed_signer(head, key=key)
    if signer is None or signer in keys.by_id or settings.flag("BLOCKS_RESULTS_OVERWRITE_FOREIGN"):
        return True
    raise ResultsKeyMissing(
        f"Refusing to overwrite result {key!r} in {storage.describe()}: it is signed by results "
        f"key {signer!r}, which this process does not have (its key is "
        f"{keys.active.key_id!r}), so the workers that wrote it could not read what replaces "
        f"it. {_FIX}; or, to overwrite records of a key retired for good, set "
        "BLOCKS_RESULTS_OVERWRITE_FOREIGN=1."
    )
